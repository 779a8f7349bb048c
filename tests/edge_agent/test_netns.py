"""edge_agent.netns without containers: the helper (netns_bind.py) run in this test's own namespace through a
plain `env` instead of nsenter — the fd passing, per-request failures and the checks on what comes back. The real
namespaces (rootful and rootless Podman) are in test_netns_podman.py."""

from __future__ import annotations

import socket

import pytest

from edge_agent import netns
from edge_agent.netns import BindSpec, bind_in_netns, check, entry_commands


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(("spec", "why"), [
    (BindSpec("127.0.0.1", 53, "udp"), None),
    (BindSpec("::1", 80, "tcp"), None),
    (BindSpec("localhost", 53, "udp"), "ip: not an IP address"),
    (BindSpec("127.0.0.1", 0, "tcp"), "port: expected 1-65535"),
    (BindSpec("127.0.0.1", 70000, "tcp"), "port: expected 1-65535"),
    (BindSpec("127.0.0.1", 53, "sctp"), "proto: expected tcp or udp"),  # type: ignore[arg-type]
], ids=["udp", "v6", "name", "port0", "port-big", "proto"])
def test_check(spec: BindSpec, why: str | None) -> None:
    got = check(spec)
    assert (got is None) if why is None else (got is not None and got.startswith(why))


def test_entry_commands_root_and_rootless() -> None:
    assert entry_commands(42, as_root=True) == [["nsenter", "--target=42", "--net"]]
    rootless = entry_commands(42, as_root=False)
    assert rootless[0] == ["nsenter", "--target=42", "--user", "--net", "--preserve-credentials"]
    assert rootless[1][:2] == ["podman", "unshare"]


async def test_helper_passes_bound_sockets_back_and_reports_each_failure() -> None:
    tcp_port, udp_port = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    specs = [BindSpec("127.0.0.1", tcp_port, "tcp"), BindSpec("127.0.0.1", udp_port, "udp"),
             BindSpec("127.0.0.1", taken.getsockname()[1], "tcp"), BindSpec("nope", 1, "udp")]
    try:
        # `env` stands in for nsenter: the helper binds in this namespace, so we can connect to what it bound
        got = await _via_env(specs)
        tcp, udp, busy, bad = got
        assert isinstance(tcp, socket.socket) and tcp.type == socket.SOCK_STREAM
        assert tcp.getsockname() == ("127.0.0.1", tcp_port)
        assert isinstance(udp, socket.socket) and udp.type == socket.SOCK_DGRAM
        assert isinstance(busy, str) and "in use" in busy.lower()
        assert isinstance(bad, str) and bad.startswith("ip:")
        with socket.create_connection(("127.0.0.1", tcp_port), timeout=5):
            pass  # the helper listened before it passed the socket on and exited: the backlog takes it
        tcp.close()
        udp.close()
    finally:
        taken.close()


async def _via_env(specs: list[BindSpec]) -> list[netns.Bound]:
    answer = await netns._run_helper(["env"], [s for s in specs if check(s) is None], timeout_s=10,
                                     python=_python())
    assert not isinstance(answer, str), answer
    it = iter(answer)
    return [next(it) if check(s) is None else str(check(s)) for s in specs]


def _python() -> str:
    import sys

    return sys.executable


async def test_a_way_in_that_fails_is_a_reason_not_an_exception() -> None:
    got = await netns._run_helper(["false"], [BindSpec("127.0.0.1", 1, "tcp")], timeout_s=10, python=_python())
    assert isinstance(got, str) and "exit status 1" in got


async def test_a_helper_that_hangs_is_killed_within_the_timeout() -> None:
    got = await netns._run_helper(["sh", "-c", "sleep 30", "x"], [BindSpec("127.0.0.1", 1, "tcp")], timeout_s=0.5,
                                  python=_python())
    assert isinstance(got, str) and "no answer within" in got


async def test_bad_pid_fails_every_request() -> None:
    got = await bind_in_netns(1, [BindSpec("127.0.0.1", 53, "udp")] * 3)
    assert got == ["pid: expected a container's process id, got 1"] * 3

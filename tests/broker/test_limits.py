"""broker.limits (pure) and broker.listeners (the gated server over loopback): issue 16, High 3 and Low."""

from __future__ import annotations

import asyncio
import logging
import resource
import subprocess
import sys

import pytest

from broker.limits import ConnectionGate, ListenerLimits, LogThrottle, connection_budget, nofile_target, safe_topic
from broker.listeners import ThrottledLog, start_gated_server, throttle_accept_errors

INF = resource.RLIM_INFINITY


@pytest.mark.parametrize(("soft", "hard", "want"), [
    (1024, 524288, 524288), (1024, 1024, 1024), (1024, INF, 65536), (100000, INF, 100000), (INF, INF, INF),
], ids=["to-hard", "already", "unlimited-hard", "above-wanted", "all-unlimited"])
def test_nofile_target(soft: int, hard: int, want: int) -> None:
    assert nofile_target(soft, hard, infinity=INF) == want


def test_a_daemon_raises_its_soft_limit_to_the_hard_one() -> None:
    code = ("import resource; from broker.listeners import raise_nofile_limit; "
            "resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1])); "
            "print(raise_nofile_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[1])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    soft, hard = int(out[0]), int(out[1])
    assert soft == (hard if hard != INF else 65536)


def test_budget_leaves_descriptors_for_the_rest_of_the_process() -> None:
    limits = ListenerLimits(max_connections=4096)
    assert connection_budget(limits, 1024) == (1024 - 128) // 2
    assert connection_budget(limits, 1 << 20) == 4096


def test_the_gate_caps_per_address_and_in_total() -> None:
    gate = ConnectionGate(max_connections=5, max_per_address=2)
    assert [gate.admit("a") for _ in range(3)] == [True, True, False]
    assert [gate.admit(f"b{i}") for i in range(4)] == [True, True, True, False]
    assert gate.open == 5 and gate.refused == 2
    gate.release("a")
    assert gate.admit("c") and not gate.admit("a")
    gate.release("nobody")  # never admitted: no effect
    assert gate.open == 5


def test_the_throttle_writes_one_line_per_interval_with_a_count() -> None:
    t = LogThrottle(10.0)
    got = [t.note("k", now) for now in (0.0, 1.0, 2.0, 9.9, 10.0, 10.5, 30.0)]
    assert got == [1, None, None, None, 4, None, 2]
    assert t.note("other", 10.5) == 1  # keys are independent


def test_the_throttle_holds_a_bounded_number_of_keys() -> None:
    t = LogThrottle(10.0, max_keys=3)
    for i in range(100):
        t.note(f"k{i}", float(i))
    assert len(t._last) == 3


def test_a_topic_in_a_log_line_cannot_forge_another_line() -> None:
    assert "\n" not in safe_topic("cloudless/v1/x\n2026-01-01 ERROR forged")
    assert safe_topic("a" * 500).endswith("…") and len(safe_topic("a" * 500)) < 210


def test_5000_malformed_messages_make_one_line_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = iter(float(i) / 1000 for i in range(5001))
    out = ThrottledLog(logging.getLogger("t"), LogThrottle(10.0), clock=lambda: next(clock))
    with caplog.at_level(logging.WARNING):
        for _ in range(5000):
            out.log(logging.WARNING, "malformed:A", "ignored a malformed message from %s", "A")
    assert len(caplog.records) == 1


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


async def test_the_gated_server_refuses_past_the_per_address_cap_and_drops_the_silent() -> None:
    gate = ConnectionGate(max_connections=100, max_per_address=3)
    server = await start_gated_server(Echo, gate, ssl_context=None, handshake_timeout_s=0.3, what="test",
                                      host="127.0.0.1", port=0)
    port = server.sockets[0].getsockname()[1]
    try:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        r, w = await asyncio.open_connection("127.0.0.1", port)  # the fourth from one address: closed at once
        assert await asyncio.wait_for(r.read(), 2) == b""
        assert gate.refused == 1
        other_r, other_w = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
        other_w.write(b"hi")  # another address still gets in, and speaking in time keeps it
        assert await asyncio.wait_for(other_r.readexactly(2), 2) == b"hi"
        for reader, _ in held:  # the silent ones are dropped after the handshake timeout, and their slots freed
            assert await asyncio.wait_for(reader.read(), 2) == b""
        await asyncio.sleep(0.05)
        assert gate.held_by("127.0.0.1") == 0 and gate.held_by("127.0.0.2") == 1
        await asyncio.sleep(0.5)
        other_w.write(b"yo")
        assert await asyncio.wait_for(other_r.readexactly(2), 2) == b"yo"
        for _, writer in [*held, (r, w), (other_r, other_w)]:
            writer.close()
    finally:
        server.close()


async def test_accept_errors_are_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    try:
        throttle_accept_errors(loop)
        throttle_accept_errors(loop)  # idempotent
        with caplog.at_level(logging.ERROR):
            for _ in range(1000):
                loop.call_exception_handler({"message": "socket.accept() out of system resource",
                                             "exception": OSError(24, "Too many open files")})
        assert len(caplog.records) == 1 and caplog.records[0].exc_info is None
    finally:
        loop.set_exception_handler(previous)

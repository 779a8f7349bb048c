"""The network lab itself: real namespaces, NATs that behave as their kind says, bad links, clean teardown.

The hole-punching grid here uses plain UDP sockets (tests/lab/udp_probe.py), so it checks the lab's NATs, not the
overlay: the overlay's own grid builds on these NAT kinds and must do at least as well as this table says a
simultaneous punch can.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.netlab import Host, Lab, NatKind, NetemUnavailable

pytestmark = pytest.mark.integration

PROBE = str(Path(__file__).with_name("udp_probe.py"))
STUN_PORT = 3478


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab() as lab:
        yield lab


def probe(host: Host, *args: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return host.run(sys.executable, PROBE, *args, check=False, timeout=timeout)


def reflexive(host: Host, local_port: int, server: Host) -> tuple[str, int]:
    out = probe(host, "ask", str(local_port), server.addr, str(STUN_PORT))
    assert out.returncode == 0, out.stderr
    addr, port = out.stdout.strip().rsplit(":", 1)
    return addr, int(port)


def test_a_device_behind_a_nat_reaches_the_internet_under_the_nats_address(lab: Lab) -> None:
    internet = lab.network("inet")
    vps = lab.host("vps", internet)
    home = lab.nat("home", internet)
    pi = lab.host("pi", home.lan_net)
    vps.popen(sys.executable, PROBE, "echo", str(STUN_PORT))
    assert pi.addr.rsplit(".", 1)[0] != vps.addr.rsplit(".", 1)[0], "the device must be on its own LAN"
    pi.run("ping", "-c1", "-W2", vps.addr)
    seen, port = reflexive(pi, 40000, vps)
    assert seen == home.addr  # the NAT's WAN address, not the device's
    assert port == 40000  # MASQUERADE keeps a free source port: endpoint-independent mapping


def test_nothing_reaches_a_device_behind_a_nat_unasked(lab: Lab) -> None:
    internet = lab.network("inet")
    vps = lab.host("vps", internet)
    home = lab.nat("home", internet)
    pi = lab.host("pi", home.lan_net)
    pi.popen(sys.executable, PROBE, "echo", "40000")
    vps.run("ip", "route", "add", f"{home.lan_net.subnet}.0/24", "via", home.addr)  # even routed to the LAN
    assert pi.run("sleep", "0.3").returncode == 0  # the echo server binds
    for target in (home.addr, pi.addr):
        assert probe(vps, "ask", "40001", target, "40000").returncode != 0, target
    assert probe(pi, "ask", "40003", "127.0.0.1", "40000").returncode == 0


def test_two_devices_on_one_lan_reach_each_other_directly(lab: Lab) -> None:
    internet = lab.network("inet")
    home = lab.nat("home", internet)
    pi = lab.host("pi", home.lan_net)
    laptop = lab.host("laptop", home.lan_net)
    out = laptop.run("ping", "-c1", "-W2", pi.addr)
    assert "1 received" in out.stdout


# Whether a simultaneous punch between two devices behind NATs of these kinds connects them directly.
GRID = [
    (NatKind.PORT_RESTRICTED, NatKind.PORT_RESTRICTED, True),
    (NatKind.FULL_CONE, NatKind.SYMMETRIC, True),
    (NatKind.ADDRESS_RESTRICTED, NatKind.SYMMETRIC, True),
    (NatKind.PORT_RESTRICTED, NatKind.SYMMETRIC, False),  # needs port prediction or a relay
    (NatKind.SYMMETRIC, NatKind.SYMMETRIC, False),
    (NatKind.UDP_BLOCKED, NatKind.FULL_CONE, False),
]


@pytest.mark.parametrize(("kind_a", "kind_b", "direct"), GRID, ids=[f"{a}+{b}" for a, b, _ in GRID])
def test_hole_punching_follows_the_nat_kinds(lab: Lab, kind_a: NatKind, kind_b: NatKind, direct: bool) -> None:
    internet = lab.network("inet")
    vps = lab.host("vps", internet)
    vps.popen(sys.executable, PROBE, "echo", str(STUN_PORT))
    nat_a, nat_b = lab.nat("a", internet, kind_a), lab.nat("b", internet, kind_b)
    dev_a, dev_b = lab.host("dev-a", nat_a.lan_net), lab.host("dev-b", nat_b.lan_net)
    vps.run("sleep", "0.2")  # the echo server binds
    ask_a = probe(dev_a, "ask", "41000", vps.addr, str(STUN_PORT), timeout=5)
    ask_b = probe(dev_b, "ask", "42000", vps.addr, str(STUN_PORT), timeout=5)
    if kind_a is NatKind.UDP_BLOCKED:
        assert ask_a.returncode != 0  # no UDP at all: not even the rendezvous answers
        ask_a = subprocess.CompletedProcess([], 0, f"{nat_a.addr}:41000", "")
    peer_a, peer_b = ask_a.stdout.strip().rsplit(":", 1), ask_b.stdout.strip().rsplit(":", 1)
    seconds = "4" if direct else "2"
    punch_a = dev_a.popen(sys.executable, PROBE, "punch", "41000", peer_b[0], peer_b[1], seconds,
                          stdout=subprocess.PIPE, text=True)
    punch_b = dev_b.popen(sys.executable, PROBE, "punch", "42000", peer_a[0], peer_a[1], seconds,
                          stdout=subprocess.PIPE, text=True)
    rc_a, rc_b = punch_a.wait(timeout=15), punch_b.wait(timeout=15)
    assert punch_a.stdout is not None and punch_b.stdout is not None
    out_a, out_b = punch_a.stdout.read(), punch_b.stdout.read()
    assert ((rc_a, rc_b) == (0, 0)) is direct, (out_a, out_b)
    if direct:  # each heard the other from the other NAT's public address
        assert re.fullmatch(rf"got {re.escape(nat_b.addr)}:\d+\n", out_a), out_a
        assert re.fullmatch(rf"got {re.escape(nat_a.addr)}:\d+\n", out_b), out_b


def test_loss_drops_packets_on_a_link(lab: Lab) -> None:
    internet = lab.network("inet")
    a, b = lab.host("a", internet), lab.host("b", internet)
    a.lose(100)
    assert a.run("ping", "-c1", "-W1", b.addr, check=False).returncode != 0
    c = lab.host("c", internet)
    c.lose(50)
    out = c.run("ping", "-c40", "-i0.01", "-W1", b.addr, check=False)
    received = int(re.search(r"(\d+) received", out.stdout).group(1))  # type: ignore[union-attr]
    assert 0 < received < 40, out.stdout  # chance of all or none of 40 through at 50 % each way: < 1e-6


def test_a_rate_limit_or_a_delay_is_accepted_or_refused_clearly(lab: Lab) -> None:
    internet = lab.network("inet")
    a = lab.host("a", internet)
    a.rate("8mbit")
    assert "tbf" in a.run("tc", "qdisc", "show", "dev", "eth0").stdout
    try:
        a.delay(20)
    except NetemUnavailable as exc:
        assert "netem" in str(exc)
    else:
        assert "netem" in a.run("tc", "qdisc", "show", "dev", "eth0").stdout


def test_close_removes_every_namespace_and_process() -> None:
    with Lab() as lab:
        internet = lab.network("inet")
        home = lab.nat("home", internet)
        pi = lab.host("pi", home.lan_net)
        proc = pi.popen("sleep", "60")
        # a process in the namespace that the lab did not start (a process runtime's replica: its own session,
        # reparented to init when its agent dies) must not outlive the lab either
        out = pi.run("sh", "-c", "setsid sleep 61 > /dev/null 2>&1 < /dev/null & echo $!").stdout
        stray = int(out.split()[-1])
        names = list(lab.namespaces)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert not [n for n in names if n in listed]
    assert proc.poll() is not None
    for _ in range(50):  # SIGKILL is delivered at once; reaping by init may take a moment
        if not alive(stray):
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"process {stray} outlived the lab's namespace")


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for init to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"

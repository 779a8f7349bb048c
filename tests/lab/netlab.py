"""A network lab of real, separate network stacks on one host: every machine is a Linux network namespace, joined by
veth pairs to bridges ("the internet", a home LAN), behind Linux NAT routers of a chosen type, with loss (iptables'
`statistic` match), rate limits (tc tbf) and, where the kernel has netem, delay on links a test wants bad. It is the
one harness for multi-machine tests (joins over a LAN, NAT traversal, relays, services across devices, storage
repair); nothing here is loopback.

Topology model:

    internet = lab.network("inet")                 # a bridge in its own namespace, 198.19.<k>.0/24
    vps      = lab.host("vps", internet)           # a public machine
    home     = lab.nat("home", internet, NatKind.EASY)   # a NAT router: WAN on the internet, a LAN bridge inside
    pi       = lab.host("pi", home.lan)            # a device behind it, default route via the NAT
    pi.run("ping", "-c1", vps.addr)

NAT kinds (`NatKind`, PLATFORM-NOTES "A NAT lab in network namespaces"): every NAT masquerades (keeping the source
port when it is free, so the mapping is endpoint-independent), forwards only ESTABLISHED/RELATED traffic inbound,
and drops unsolicited inbound NEW packets addressed to itself — without that last rule the first punch packet to
arrive creates a conntrack entry that makes the NAT remap the device's own outbound packet to another port. Linux
conntrack filters inbound UDP by remote address and port: PORT_RESTRICTED, the common home router. SYMMETRIC adds
`--random-fully` (a port per destination: punching between two of them must fail). FULL_CONE and
ADDRESS_RESTRICTED forward unsolicited inbound UDP on high ports to the NAT's first device (port kept) — from
anyone, or only from addresses that device has sent to (the `recent` match remembers them). UDP_BLOCKED drops all
forwarded UDP (a network that lets only TCP out).

Addresses come from the benchmarking range 198.18.0.0/15 (RFC 2544) and live only inside the lab's namespaces.
Every namespace, veth and process the lab made is removed by `close()` (the lab is a context manager).
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.integration.conftest import require_binary
from tests.need import require_root

_LAB_IDS = itertools.count(1)


class NatKind(enum.StrEnum):
    """RFC 4787 behaviour of a NAT: mapping (endpoint-independent or per destination) and inbound filtering."""

    FULL_CONE = "full-cone"  # endpoint-independent mapping and filtering
    ADDRESS_RESTRICTED = "address-restricted"  # EIM; inbound from addresses the device has sent to
    PORT_RESTRICTED = "port-restricted"  # EIM; inbound only from address:port pairs sent to (the Linux default)
    SYMMETRIC = "symmetric"  # a new mapping per destination, random ports (--random-fully): "hard"
    UDP_BLOCKED = "udp-blocked"  # no UDP through it at all

    @property
    def easy(self) -> bool:
        """Endpoint-independent mapping: the address a rendezvous server sees is the one every peer can use."""
        return self in (NatKind.FULL_CONE, NatKind.ADDRESS_RESTRICTED, NatKind.PORT_RESTRICTED)


class NetemUnavailable(RuntimeError):
    """The kernel has no netem qdisc (sch_netem): delay cannot be emulated; loss and rate limits still can."""


@dataclass
class Network:
    """A layer-2 segment: a bridge in some namespace, with a /24 of its own."""

    lab: Lab
    name: str
    ns: str  # the namespace that holds the bridge
    bridge: str
    subnet: str  # "198.19.1" (a /24)
    gateway: str | None = None  # the router on this segment (a NAT's LAN address), None for the internet
    _next: Iterator[int] = field(default_factory=lambda: itertools.count(10))

    def allocate(self) -> str:
        return f"{self.subnet}.{next(self._next)}"


@dataclass
class Host:
    """A machine: one network namespace with one interface `eth0` on a network (a NAT router has two)."""

    lab: Lab
    name: str
    ns: str
    addr: str
    iface: str = "eth0"

    def enter(self, *, host_mounts: bool = False) -> list[str]:
        """argv prefix that runs a command in this machine's network stack. `ip netns exec` also gives the command
        a mount namespace with /sys remounted for the network namespace, which hides the host's cgroup mounts:
        runc (rootful Podman) then fails with "no cgroup mount found in mountinfo". `host_mounts=True` enters the
        network namespace only (nsenter --net) and keeps the host's mounts."""
        if host_mounts:
            return ["nsenter", f"--net=/run/netns/{self.ns}", "--"]
        return ["ip", "netns", "exec", self.ns]

    def run(self, *cmd: str, check: bool = True, timeout: float = 30, input: str | None = None,
            env: dict[str, str] | None = None, host_mounts: bool = False) -> subprocess.CompletedProcess[str]:
        """Run a command inside this machine's network stack and wait for it (bounded by `timeout`)."""
        return subprocess.run([*self.enter(host_mounts=host_mounts), *cmd], check=check, capture_output=True,
                              text=True, timeout=timeout, input=input, env=env)

    def popen(self, *cmd: str, host_mounts: bool = False, **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a long-running command inside this machine; the lab kills it (its whole group) on close."""
        proc = subprocess.Popen([*self.enter(host_mounts=host_mounts), *cmd], start_new_session=True, **kwargs)
        self.lab.processes.append(proc)
        return proc

    def lose(self, percent: float, *, iface: str | None = None) -> None:
        """Drop `percent` % of the packets this machine sends and receives on its interface, at random."""
        dev = iface or self.iface
        for direction in (["-A", "OUTPUT", "-o", dev], ["-A", "INPUT", "-i", dev]):
            self.iptables(*direction, "-m", "statistic", "--mode", "random", "--probability",
                          f"{percent / 100:.4f}", "-j", "DROP")
        if isinstance(self, Nat):
            self.iptables("-I", "FORWARD", "-m", "statistic", "--mode", "random", "--probability",
                          f"{percent / 100:.4f}", "-j", "DROP")

    def rate(self, rate: str, *, iface: str | None = None) -> None:
        """Limit what this machine sends on its interface to `rate` (tc's notation: "8mbit"), with a token bucket."""
        self.run("tc", "qdisc", "replace", "dev", iface or self.iface, "root", "tbf", "rate", rate, "burst", "64kb",
                 "latency", "200ms")

    def delay(self, ms: float, *, iface: str | None = None) -> None:
        """Delay what this machine sends by `ms` (tc netem). Kernels built without netem (this project's CI VM
        among them) refuse it: `NetemUnavailable` says so, and a test that needs delay skips on it."""
        out = self.run("tc", "qdisc", "replace", "dev", iface or self.iface, "root", "netem", "delay", f"{ms}ms",
                       check=False)
        if out.returncode != 0:
            raise NetemUnavailable(f"tc netem is not available on this kernel: {out.stderr.strip()}")

    def iptables(self, *rule: str) -> None:
        self.run("iptables", "-w", *rule)


@dataclass
class Nat(Host):
    """A NAT router: WAN interface `wan` on an upstream network, a LAN bridge `lan0` with its own /24 inside."""

    kind: NatKind = NatKind.PORT_RESTRICTED
    lan: Network | None = None
    devices: list[str] = field(default_factory=list)  # LAN addresses, in order of attachment

    @property
    def lan_net(self) -> Network:
        assert self.lan is not None
        return self.lan


class Lab:
    """Builds machines and links; remove everything with `close()` (or use it as a context manager)."""

    def __init__(self) -> None:
        require_root("the network lab creates network namespaces")
        for binary in ("ip", "iptables", "tc"):
            require_binary(binary)
        self.tag = f"cl{os.getpid() % 100000}x{next(_LAB_IDS)}"
        self.namespaces: list[str] = []
        self.processes: list[subprocess.Popen[Any]] = []
        self._links = itertools.count(1)
        self._subnets = itertools.count(1)
        self._nats: dict[str, Nat] = {}

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- building -------------------------------------------------------------------------------------------

    def network(self, name: str) -> Network:
        """A switch of its own (the internet, or a LAN without a router)."""
        ns = self._namespace(f"sw-{name}")
        _ip("netns", "exec", ns, "ip", "link", "add", "br0", "type", "bridge")
        _ip("netns", "exec", ns, "ip", "link", "set", "br0", "up")
        return Network(self, name, ns, "br0", self._subnet())

    def host(self, name: str, net: Network) -> Host:
        ns = self._namespace(name)
        addr = net.allocate()
        self._plug(ns, "eth0", net, addr)
        if net.gateway:
            _exec(ns, "ip", "route", "add", "default", "via", net.gateway)
        nat = self._nats.get(net.ns)
        if nat is not None and not nat.devices:
            for rule in _cone_rules(nat.kind, addr):
                nat.iptables(*rule)
        if nat is not None:
            nat.devices.append(addr)
        return Host(self, name, ns, addr)

    def nat(self, name: str, upstream: Network, kind: NatKind = NatKind.PORT_RESTRICTED) -> Nat:
        """A NAT router on `upstream` (its WAN) with a fresh LAN behind it; attach devices with host(..., nat.lan)."""
        ns = self._namespace(name)
        wan = upstream.allocate()
        self._plug(ns, "wan", upstream, wan)
        if upstream.gateway:
            _exec(ns, "ip", "route", "add", "default", "via", upstream.gateway)
        subnet = self._subnet()
        _exec(ns, "ip", "link", "add", "lan0", "type", "bridge")
        _exec(ns, "ip", "addr", "add", f"{subnet}.1/24", "dev", "lan0")
        _exec(ns, "ip", "link", "set", "lan0", "up")
        _exec(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        lan = Network(self, f"{name}-lan", ns, "lan0", subnet, gateway=f"{subnet}.1")
        nat = Nat(self, name, ns, wan, iface="wan", kind=kind, lan=lan)
        for rule in _nat_rules(kind):
            nat.iptables(*rule)
        self._nats[ns] = nat
        return nat

    # ---- teardown -------------------------------------------------------------------------------------------

    def close(self) -> None:
        for proc in self.processes:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.processes.clear()
        for ns in self.namespaces:  # what outlived its starter: a process runtime's replicas (own session, by design)
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False).stdout
            for pid in pids.split():
                with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        for ns in reversed(self.namespaces):  # deleting a namespace deletes the veth ends inside it
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)
        self.namespaces.clear()

    # ---- plumbing -------------------------------------------------------------------------------------------

    def _namespace(self, name: str) -> str:
        ns = f"{self.tag}-{name}"
        _ip("netns", "add", ns)
        self.namespaces.append(ns)
        _exec(ns, "ip", "link", "set", "lo", "up")
        return ns

    def _subnet(self) -> str:
        k = next(self._subnets)
        if k > 250:
            raise RuntimeError("the lab ran out of /24s in 198.19.0.0/16")
        return f"198.19.{k}"

    def _plug(self, ns: str, iface: str, net: Network, addr: str) -> None:
        """A veth pair: one end `iface` in `ns` with `addr`/24, the other enslaved to the network's bridge."""
        n = next(self._links)
        inner, outer = f"{self.tag[:7]}i{n}", f"{self.tag[:7]}o{n}"  # interface names: at most 15 bytes
        _ip("link", "add", inner, "type", "veth", "peer", "name", outer)
        _ip("link", "set", inner, "netns", ns)
        _ip("link", "set", outer, "netns", net.ns)
        _exec(ns, "ip", "link", "set", inner, "name", iface)
        _exec(ns, "ip", "addr", "add", f"{addr}/24", "dev", iface)
        _exec(ns, "ip", "link", "set", iface, "up")
        _exec(net.ns, "ip", "link", "set", outer, "master", net.bridge)
        _exec(net.ns, "ip", "link", "set", outer, "up")


def _nat_rules(kind: NatKind) -> list[Sequence[str]]:
    masquerade = ["-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE"]
    if kind is NatKind.SYMMETRIC:
        masquerade.append("--random-fully")
    rules: list[Sequence[str]] = [
        masquerade,
        ["-A", "FORWARD", "-i", "wan", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED,DNAT", "-j", "ACCEPT"],
        ["-A", "FORWARD", "-i", "wan", "-j", "DROP"],
        ["-A", "INPUT", "-i", "wan", "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP"],
    ]
    if kind is NatKind.UDP_BLOCKED:
        rules.insert(0, ["-I", "FORWARD", "-p", "udp", "-j", "DROP"])
    return rules


def _cone_rules(kind: NatKind, device: str) -> list[Sequence[str]]:
    """Unsolicited inbound UDP to a high port goes to `device` (same port): from anyone (full cone) or from the
    addresses it has sent to (address-restricted). The mapping itself stays MASQUERADE's, which keeps ports."""
    forward = ["-t", "nat", "-A", "PREROUTING", "-i", "wan", "-p", "udp", "--dport", "1024:65535"]
    dnat = ["-j", "DNAT", "--to-destination", device]
    if kind is NatKind.FULL_CONE:
        return [[*forward, *dnat]]
    if kind is NatKind.ADDRESS_RESTRICTED:
        return [
            ["-t", "mangle", "-A", "FORWARD", "-i", "lan0", "-o", "wan", "-p", "udp", "-m", "recent", "--name",
             "contacted", "--rdest", "--set"],
            [*forward, "-m", "recent", "--name", "contacted", "--rsource", "--rcheck", "--seconds", "300", *dnat],
        ]
    return []


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


def _exec(ns: str, *cmd: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, *cmd], check=True, capture_output=True, text=True, timeout=30)


def python_argv() -> list[str]:
    """argv prefix that runs this project's Python (the test's own interpreter, unbuffered) inside a lab machine."""
    return [sys.executable, "-u"]

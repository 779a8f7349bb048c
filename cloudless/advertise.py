"""Where `cloudless up` serves other machines: the addresses it advertises and what it binds.

Devices reach the coordinator's API, the broker and the relay at the *advertised* addresses: IPv4 addresses and
host names, in the order a device tries them. The certificates of the API and the broker name every one of them (IP
SANs for addresses, DNS SANs for names, RFC 5280 §4.2.1.6) plus 127.0.0.1/localhost; enrolment tokens carry them all.

- `--advertise A,B`: exactly those.
- no flag: this host's IPv4 addresses on interfaces that are up, except loopback, link-local (169.254/16) and
  container/VM bridges recognisable by name (Podman's cni-podman0/podman*, docker*, veth*, br-*, virbr*, lxcbr*,
  ...: addresses no other machine reaches), private (LAN) ones first, then public ones, then the rest (e.g. a
  VPN's 100.64/10), then the host name when it has one (the last resort: names resolve on
  some networks only). IPv6 is left out: the listeners bind the IPv4 wildcard (see below).
- `--local-only`: nothing is advertised; everything listens on 127.0.0.1 only (the behaviour before this module).

Binding: when anything is advertised the API, the broker and the relay listen on 0.0.0.0 (every IPv4 address, so
loopback too: the local CLI and agent keep using 127.0.0.1). One wildcard instead of one socket per address because
a host name may resolve to an address that changes (DHCP), and the coordinator binds one host.

`parse_advertise` and `default_addresses` are pure (they take the interface table and the host name);
`host_addresses` is the psutil adapter.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

WILDCARD = "0.0.0.0"  # binding every address is the point of advertising
LOOPBACK = "127.0.0.1"
LOCAL_NAMES = (LOOPBACK, "localhost")
MAX_ADDRESSES = 16  # what a token carries (coordinator.enroll.MAX_URLS)
# interface name prefixes of container and VM bridges: their addresses are private to this host
BRIDGES = ("lo", "cni", "podman", "docker", "veth", "br-", "virbr", "lxcbr", "lxdbr", "flannel", "cali", "cilium",
           "kube", "weave", "vnet")
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


class AdvertiseError(ValueError):
    """An --advertise value is unusable; the message names the flag and the value."""


@dataclass(frozen=True, slots=True)
class Exposure:
    """What `up` serves: the advertised addresses (in the order devices try them) and the address it binds."""

    advertised: tuple[str, ...]
    bind: str

    @property
    def local_only(self) -> bool:
        return not self.advertised

    def urls(self, scheme: str, port: int) -> list[str]:
        """Every advertised address as a URL (loopback when nothing is advertised)."""
        return [f"{scheme}://{a}:{port}" for a in (self.advertised or (LOOPBACK,))]

    def san_hosts(self, *extra: str) -> list[str]:
        """The names a server certificate carries: the advertised ones, `extra`, loopback (no wildcard)."""
        return [h for h in dict.fromkeys((*self.advertised, *extra, *LOCAL_NAMES)) if h and h != WILDCARD]

    def ips(self) -> list[str]:
        return [a for a in self.advertised if is_ip(a)]

    def dialable(self, resolve: Callable[[str], list[str]] | None = None) -> list[str]:
        """The advertised addresses as IPv4 addresses, in order: names resolved (what a relay is dialled by; a name
        that resolves to nothing, or only to loopback, is left out)."""
        out: list[str] = []
        for a in self.advertised:
            for ip in [a] if is_ip(a) else (resolve or resolve_ipv4)(a):
                if ip not in out and not ipaddress.ip_address(ip).is_loopback:
                    out.append(ip)
        return out


def resolve_ipv4(name: str) -> list[str]:
    try:
        infos = socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def valid_hostname(name: str) -> bool:
    """A DNS name (RFC 1123 labels, at most 253 characters), not an all-numeric one (it would read as an address)."""
    labels = name.rstrip(".").split(".")
    return (0 < len(name) <= 253 and all(_LABEL.fullmatch(label) for label in labels)
            and not labels[-1].isdigit())


def parse_advertise(text: str) -> list[str]:
    """`ADDR[,ADDR...]` -> the addresses, in order, without duplicates; AdvertiseError says which item is wrong."""
    return parse_hosts(text, flag="--advertise", ipv6=False)


def parse_hosts(text: str, *, flag: str, ipv6: bool = True) -> list[str]:
    """A comma-separated list of IP addresses and DNS names (what a server certificate names, what devices dial), in
    order and without duplicates; AdvertiseError names `flag` and the item that is wrong."""
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise AdvertiseError(f"{flag}: give at least one IP address or host name, e.g. 192.168.1.10,nas.lan")
    out: list[str] = []
    for item in items:
        if not item:
            raise AdvertiseError(f"{flag}: an empty item in {text!r} (ADDR[,ADDR...], no spaces needed)")
        if is_ip(item):
            ip = ipaddress.ip_address(item)
            if ip.version == 6 and not ipv6:
                raise AdvertiseError(f"{flag}: {item!r} is an IPv6 address; `cloudless up` serves IPv4 only "
                                     "(binds 0.0.0.0): give an IPv4 address or a host name")
            if ip.is_unspecified or ip.is_multicast:
                raise AdvertiseError(f"{flag}: {item!r} is not an address devices can dial; give this host's "
                                     "address (e.g. 192.168.1.10) or name")
            out.append(str(ip))
        elif valid_hostname(item):
            out.append(item.rstrip(".").lower())
        else:
            kind = "an IP address" if ipv6 else "an IPv4 address"
            raise AdvertiseError(f"{flag}: {item[:80]!r} is neither {kind} nor a host name "
                                 "(letters, digits, '-' and '.')")
    unique = list(dict.fromkeys(out))
    if len(unique) > MAX_ADDRESSES:
        raise AdvertiseError(f"{flag}: at most {MAX_ADDRESSES} addresses (an enrolment token carries them all)")
    return unique


def default_addresses(interfaces: Mapping[str, Sequence[tuple[str, str]]], up: Mapping[str, bool],
                      hostname: str) -> list[str]:
    """This host's addresses devices can reach (see the module docstring), from {interface: [(family, address)]}
    (family "AF_INET", "AF_INET6", ...), {interface: is up} and the host name."""
    ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for name in sorted(interfaces):
        if name.startswith(BRIDGES) or not up.get(name, False):
            continue
        for family, address in interfaces[name]:
            if family != "AF_INET":
                continue
            ip = ipaddress.ip_address(address)
            if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified):
                ips.append(ip)
    # the LAN first (where devices usually are), then public addresses, then the rest (VPN/CGNAT 100.64/10)
    found = [str(ip) for ip in sorted(ips, key=lambda ip: 0 if ip.is_private else 1 if ip.is_global else 2)]
    name = hostname.strip().rstrip(".").lower()
    if name and name != "localhost" and valid_hostname(name) and not name.startswith("localhost."):
        found.append(name)
    return list(dict.fromkeys(found))[:MAX_ADDRESSES]


def host_addresses() -> list[str]:
    """`default_addresses` for this host (psutil, socket)."""
    import socket

    import psutil

    table = {name: [(a.family.name, a.address) for a in addrs if a.family.name in ("AF_INET", "AF_INET6")]
             for name, addrs in psutil.net_if_addrs().items()}
    up = {name: stats.isup for name, stats in psutil.net_if_stats().items()}
    return default_addresses(table, up, socket.gethostname())


def exposure(advertise: str | None, *, local_only: bool, detect: Sequence[str] | None = None) -> Exposure:
    """The Exposure for `up`'s flags; `detect` is this host's addresses (computed when None and needed)."""
    if local_only:
        return Exposure((), LOOPBACK)
    if advertise is not None:
        return Exposure(tuple(parse_advertise(advertise)), WILDCARD)
    found = tuple(host_addresses() if detect is None else detect)
    return Exposure(found, WILDCARD if found else LOOPBACK)

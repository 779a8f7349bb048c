"""The small authoritative resolver workloads ask for service names (pure core: bytes in, bytes or a verdict out).

RFC 1035 §4 message format, only what a stub resolver sends: one question, no answer/authority records, at most one
additional record and that an EDNS OPT (RFC 6891 §6). Parsing is strict and bounded — a packet that is not such a
query becomes `Malformed` (with a FORMERR/NOTIMP reply when its ID could be read), never an exception.

Names (case-insensitive, RFC 4343; a trailing dot or not):

- `<svc>.<ns>.svc.cloudless` — A: the service's virtual IP; AAAA and other types of a known service: empty NOERROR
  (the name exists, it has no such record); unknown service or namespace under `svc.cloudless`: NXDOMAIN.
- `_<port>._<tcp|udp>.<svc>.<ns>.svc.cloudless` — SRV: one record per service port with that name and protocol,
  target `<svc>.<ns>.svc.cloudless.` (its A record in the additional section), only while the service has a ready
  endpoint (Consul answers only healthy instances). One record per port, not one per endpoint: every endpoint sits
  behind the same virtual address, the proxy does the weighting per connection, and records that differ in nothing
  would be duplicates in one RRset (RFC 2181 §5), so priority is 0 and weight 100.
- `<svc>.<ns>` and `<svc>` (the asking workload's namespace), also with the `_<port>._<proto>.` prefix — answered
  as above when such a service exists, otherwise forwarded (they could be real names: `web.com`).
- Everything else: `Forward` — the adapter relays the query to the upstream resolvers.

Negative answers carry no SOA, so resolvers do not cache them (RFC 2308 §5): a service created a moment ago
resolves at once. A records live `A_TTL` s (the virtual IP never changes while the service exists), SRV `SRV_TTL` s.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from broker.wire import ServiceRecord

DOMAIN = ("svc", "cloudless")
MAX_PACKET = 4096  # a stub's query is far smaller; anything longer is not one
MAX_NAME = 255  # RFC 1035 §2.3.4, wire octets
UDP_DEFAULT = 512  # RFC 1035 §4.2.1
UDP_MAX = 4096
EDNS_SIZE = 1232  # what we advertise (the DNS flag day 2020 value)
A_TTL = 30
SRV_TTL = 5

QR, AA, TC, RD, RA = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080
CLASS_IN, CLASS_ANY = 1, 255


class QType(IntEnum):
    A = 1
    AAAA = 28
    SRV = 33
    OPT = 41
    ANY = 255


class RCode(IntEnum):
    NOERROR = 0
    FORMERR = 1
    SERVFAIL = 2
    NXDOMAIN = 3
    NOTIMP = 4


@dataclass(frozen=True, slots=True)
class Query:
    id: int
    flags: int
    labels: tuple[str, ...]  # lower-cased (ASCII only, RFC 4343), no root label
    qtype: int
    qclass: int
    question: bytes  # the question section as sent (echoed in the reply, the client's case kept)
    edns: bool = False
    udp_size: int = UDP_DEFAULT  # how large a UDP reply may be

    @property
    def name(self) -> str:
        return ".".join(self.labels)


@dataclass(frozen=True, slots=True)
class Malformed:
    """Not a query we answer; `reply` is what to send back (None: nothing, e.g. the packet was a response)."""

    reason: str
    reply: bytes | None


@dataclass(frozen=True, slots=True)
class Reply:
    packet: bytes
    rcode: RCode


@dataclass(frozen=True, slots=True)
class Forward:
    """Not ours: relay the original packet to an upstream resolver and its answer back."""

    name: str


# ---- parsing -----------------------------------------------------------------------------------------------------

class _Bad(Exception):
    """Internal: a parse failure (never leaves this module)."""


def parse_query(packet: bytes) -> Query | Malformed:
    """The query in `packet` (see the module docstring for what is accepted)."""
    if len(packet) < 12:
        return Malformed(f"{len(packet)} bytes: shorter than a DNS header", None)
    ident, flags, qdcount, ancount, nscount, arcount = struct.unpack_from("!6H", packet)
    if flags & QR:
        return Malformed("a response, not a query", None)
    if (flags >> 11) & 0xF != 0:
        return Malformed(f"opcode {(flags >> 11) & 0xF} (only QUERY)", _error(ident, flags, RCode.NOTIMP))
    try:
        if len(packet) > MAX_PACKET:
            raise _Bad(f"{len(packet)} bytes (at most {MAX_PACKET})")
        if qdcount != 1 or ancount or nscount or arcount > 1:
            raise _Bad(f"sections {qdcount}/{ancount}/{nscount}/{arcount} (one question, at most one OPT)")
        labels, offset = _read_name(packet, 12)
        if offset + 4 > len(packet):
            raise _Bad("question ends early")
        qtype, qclass = struct.unpack_from("!HH", packet, offset)
        question = packet[12:offset + 4]
        offset += 4
        edns, udp_size = False, UDP_DEFAULT
        if arcount:
            udp_size, offset = _read_opt(packet, offset)
            edns = True
        if offset != len(packet):
            raise _Bad(f"{len(packet) - offset} bytes after the last record")
    except _Bad as exc:
        return Malformed(str(exc), _error(ident, flags, RCode.FORMERR))
    return Query(ident, flags, labels, qtype, qclass, question, edns, udp_size)


def _read_name(packet: bytes, offset: int) -> tuple[tuple[str, ...], int]:
    labels: list[str] = []
    start = offset
    while True:
        if offset >= len(packet):
            raise _Bad("name runs past the end")
        length = packet[offset]
        if length & 0xC0:
            raise _Bad("compressed or extended label in the question")
        offset += 1
        if length == 0:
            break
        if offset + length > len(packet):
            raise _Bad("label runs past the end")
        labels.append(packet[offset:offset + length].lower().decode("latin-1"))
        offset += length
        if offset - start > MAX_NAME:
            raise _Bad(f"name longer than {MAX_NAME} octets")
    return tuple(labels), offset


def _read_opt(packet: bytes, offset: int) -> tuple[int, int]:
    """An OPT pseudo-record (RFC 6891 §6.1.2): root name, type 41, CLASS = the sender's UDP payload size."""
    if offset + 11 > len(packet) or packet[offset] != 0:
        raise _Bad("the additional record is not an OPT")
    rtype, size, _ttl, rdlen = struct.unpack_from("!HHIH", packet, offset + 1)
    if rtype != QType.OPT:
        raise _Bad(f"additional record of type {rtype} (only OPT)")
    end = offset + 11 + rdlen
    if end > len(packet):
        raise _Bad("OPT data runs past the end")
    return min(max(size, UDP_DEFAULT), UDP_MAX), end


# ---- answering ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Target:
    service: ServiceRecord | None  # None: under svc.cloudless but no such service (NXDOMAIN)
    srv: tuple[str, str] | None = None  # (port name, protocol label) of an _port._proto name
    node_only: bool = False  # svc.cloudless or <ns>.svc.cloudless itself: exists, holds no records


def resolve(query: Query, *, services: Sequence[ServiceRecord], namespace: str,
            max_size: int | None = None) -> Reply | Forward:
    """The answer to `query` from a workload in `namespace` that may see `services`. `max_size`: the largest reply
    (None: the query's UDP size; a TCP server passes 65535); a larger one is sent truncated (TC) instead."""
    target = _locate(query.labels, services, namespace)
    if target is None:
        return Forward(query.name)
    limit = max_size if max_size is not None else query.udp_size
    if target.service is None:
        return _reply(query, RCode.NXDOMAIN if not target.node_only else RCode.NOERROR, [], [], limit)
    service = target.service
    fqdn = (service.name, service.namespace, *DOMAIN)
    answers: list[bytes] = []
    extra: list[bytes] = []
    in_class = query.qclass in (CLASS_IN, CLASS_ANY)
    if target.srv is None:
        if in_class and query.qtype in (QType.A, QType.ANY):
            answers.append(_rr(b"\xc0\x0c", QType.A, A_TTL, ipaddress.IPv4Address(service.vip).packed))
        return _reply(query, RCode.NOERROR, answers, extra, limit)
    port_name, proto = target.srv
    ports = [p for p in service.ports if p.name == port_name and p.protocol.lower() == proto]
    if not ports:
        return _reply(query, RCode.NXDOMAIN, [], [], limit)
    if in_class and query.qtype in (QType.SRV, QType.ANY) and service.endpoints:
        for port in ports:
            answers.append(_rr(b"\xc0\x0c", QType.SRV, SRV_TTL, struct.pack("!HHH", 0, 100, port.port)
                               + _encode_name(fqdn)))
        extra.append(_rr(_encode_name(fqdn), QType.A, A_TTL, ipaddress.IPv4Address(service.vip).packed))
    return _reply(query, RCode.NOERROR, answers, extra, limit)


def _locate(labels: tuple[str, ...], services: Sequence[ServiceRecord], namespace: str) -> _Target | None:
    """Which service (port) a name means; None when the name is not ours to answer."""
    by_name = {(s.name.lower(), s.namespace.lower()): s for s in services if vip_problem(s.vip) is None}
    srv: tuple[str, str] | None = None
    rest = labels
    if len(rest) >= 2 and rest[0].startswith("_") and rest[1] in ("_tcp", "_udp"):
        srv, rest = (rest[0][1:], rest[1][1:]), rest[2:]
    if labels[-2:] == DOMAIN:
        base = rest[:-2]
        if len(base) == 2:
            return _Target(by_name.get((base[0], base[1])), srv)
        known_ns = len(base) == 1 and any(s.namespace.lower() == base[0] for s in services)
        return _Target(None, node_only=srv is None and (not base or known_ns))
    if len(rest) == 2 and (found := by_name.get((rest[0], rest[1]))) is not None:
        return _Target(found, srv)
    if len(rest) == 1 and (found := by_name.get((rest[0], namespace.lower()))) is not None:
        return _Target(found, srv)
    return None


def _reply(query: Query, rcode: RCode, answers: list[bytes], extra: list[bytes], limit: int) -> Reply:
    flags = QR | AA | RA | (query.flags & RD) | rcode
    opt = [struct.pack("!BHHIH", 0, QType.OPT, EDNS_SIZE, 0, 0)] if query.edns else []
    body = query.question + b"".join(answers) + b"".join(extra) + b"".join(opt)
    packet = struct.pack("!6H", query.id, flags, 1, len(answers), 0, len(extra) + len(opt)) + body
    if len(packet) > limit:  # RFC 1035 §4.1.1 TC: the client asks again over TCP
        packet = struct.pack("!6H", query.id, flags | TC, 1, 0, 0, len(opt)) + query.question + b"".join(opt)
    return Reply(packet, rcode)


def _error(ident: int, flags: int, rcode: RCode) -> bytes:
    return struct.pack("!6H", ident, QR | RA | (flags & RD) | (flags & 0x7800) | rcode, 0, 0, 0, 0)


def servfail(query: Query) -> bytes:
    """SERVFAIL for `query` (the adapter's answer when no upstream resolver answered a forwarded one)."""
    return _reply(query, RCode.SERVFAIL, [], [], 65535).packet


def _rr(name: bytes, rtype: int, ttl: int, rdata: bytes) -> bytes:
    return name + struct.pack("!HHIH", rtype, CLASS_IN, ttl, len(rdata)) + rdata


def _encode_name(labels: Sequence[str]) -> bytes:
    return b"".join(bytes([len(raw)]) + raw for raw in (label.encode() for label in labels)) + b"\x00"


def vip_problem(vip: str) -> str | None:
    """Why `vip` cannot be a service's virtual address (None: it can): dotted IPv4 inside 127.0.0.0/8, where a
    workload's own network namespace routes every address to its loopback without root."""
    try:
        address = ipaddress.IPv4Address(vip)
    except ValueError:
        return f"vip {vip[:20]!r}: not a dotted IPv4 address"
    if not address.is_loopback or address == ipaddress.IPv4Address("127.0.0.1"):
        return f"vip {vip}: not in 127.0.0.0/8 (or it is 127.0.0.1, the workload's own loopback)"
    return None


__all__ = ["A_TTL", "DOMAIN", "SRV_TTL", "Forward", "Malformed", "QType", "Query", "RCode", "Reply", "parse_query",
           "resolve", "servfail", "vip_problem"]

"""DNS packets built and read by hand for the resolver's tests (independent of dataplane.dns's own code): a stub's
query as `dig` sends it, and a reader for the replies that follows compression pointers (RFC 1035 §4.1.4)."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field


def query(name: str, qtype: int = 1, *, ident: int = 0x1234, rd: bool = True, edns: int | None = None,
          qclass: int = 1) -> bytes:
    """A query as `dig` sends it (`edns`: the OPT record's UDP size, as `dig +bufsize=N`)."""
    flags = 0x0100 if rd else 0
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".") if p) + b"\x00"
    packet = struct.pack("!6H", ident, flags, 1, 0, 0, 1 if edns else 0) + qname + struct.pack("!HH", qtype, qclass)
    if edns:
        cookie = struct.pack("!HH", 10, 8) + b"\x01" * 8  # dig adds a client COOKIE option (RFC 7873)
        packet += b"\x00" + struct.pack("!HHIH", 41, edns, 0, len(cookie)) + cookie
    return packet


@dataclass
class Record:
    name: str
    rtype: int
    ttl: int
    data: object  # A: the address; SRV: (priority, weight, port, target); else the raw bytes


@dataclass
class Answer:
    ident: int
    flags: int
    question: str
    answers: list[Record] = field(default_factory=list)
    additional: list[Record] = field(default_factory=list)

    @property
    def rcode(self) -> int:
        return self.flags & 0xF

    @property
    def truncated(self) -> bool:
        return bool(self.flags & 0x0200)

    @property
    def authoritative(self) -> bool:
        return bool(self.flags & 0x0400)


def _name(packet: bytes, offset: int) -> tuple[str, int]:
    labels, end, hops = [], -1, 0
    while True:
        length = packet[offset]
        if length & 0xC0 == 0xC0:
            if end < 0:
                end = offset + 2
            offset = struct.unpack_from("!H", packet, offset)[0] & 0x3FFF
            hops += 1
            assert hops < 20, "pointer loop"
            continue
        offset += 1
        if length == 0:
            break
        labels.append(packet[offset:offset + length].decode())
        offset += length
    return ".".join(labels), end if end >= 0 else offset


def read(packet: bytes) -> Answer:
    ident, flags, qd, an, ns, ar = struct.unpack_from("!6H", packet)
    offset, question = 12, ""
    for _ in range(qd):
        question, offset = _name(packet, offset)
        offset += 4
    answer = Answer(ident, flags, question)
    for count, into in ((an, answer.answers), (ns, []), (ar, answer.additional)):
        for _ in range(count):
            name, offset = _name(packet, offset)
            rtype, _cls, ttl, rdlen = struct.unpack_from("!HHIH", packet, offset)
            offset += 10
            rdata = packet[offset:offset + rdlen]
            data: object = rdata
            if rtype == 1:
                data = str(ipaddress.IPv4Address(rdata))
            elif rtype == 33:
                prio, weight, port = struct.unpack_from("!HHH", packet, offset)
                data = (prio, weight, port, _name(packet, offset + 6)[0])
            into.append(Record(name, rtype, ttl, data))
            offset += rdlen
    assert offset == len(packet), "trailing bytes in the reply"
    return answer

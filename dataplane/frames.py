"""The overlay's own bytes on the wire (pure): probes on the shared UDP socket, and what rides in QUIC DATAGRAM frames
(RFC 9221) between a node and a relay and between two peers. QUIC itself is aioquic's.

On the overlay socket a datagram whose first byte has the QUIC fixed bit (0x40, RFC 9000 §17.2/§17.3) is QUIC;
our probes use first bytes below 0x40, so the two never collide. A probe is authenticated: it carries an HMAC with
the sender's probe key, which the sender gave its peer inside their (encrypted, authenticated) QUIC connection, so
nobody else can make a path look alive or learn that one is.

    PROBE      0x01 txid:u64 sender-id:str8 mac:16      "can you hear me on this path?"
    PROBE_ACK  0x02 txid:u64 sender-id:str8 mac:16      "yes" (mac with the answering side's key)

Relay datagrams (inside the node<->relay QUIC connection):

    FORWARD    0x11 node-id:str8 packet:rest            node->relay: to node-id; relay->node: from node-id
    OBSERVED   0x12 port:u16 ip:rest                    relay->node: your address as I see it (reflexive)
    NO_ROUTE   0x13 node-id:str8                        relay->node: node-id is not connected here

Peer datagrams (inside the peer<->peer QUIC connection):

    PROBE_KEY  0x21 key:16                              my probe key
    CANDIDATES 0x22 (kind:u8 port:u16 ip:str8)*         my addresses (kind: 0 lan, 1 reflexive)
    APP        0x23 service:str8 payload:rest           an application datagram for `service` (UDP traffic,
                                                        dataplane.overlay); at most MAX_APP_DATAGRAM bytes of payload

`decode_*` raise `FrameError` (one type) for anything malformed; the adapters drop such datagrams and count them.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct
from dataclasses import dataclass

PROBE, PROBE_ACK = 0x01, 0x02
FORWARD, OBSERVED, NO_ROUTE = 0x11, 0x12, 0x13
PROBE_KEY, CANDIDATES, APP = 0x21, 0x22, 0x23
MAC_LEN = 16
KEY_LEN = 16
MAX_ID = 63  # broker.wire's identifier limit
MAX_CANDIDATES = 16
# A forwarded peer packet is at most QUIC's minimum datagram size (peers are configured for exactly that), so the
# relay can always re-frame it with the longest sender id inside one DATAGRAM frame of its node connections.
MAX_FORWARDED_PACKET = 1200
# An application datagram must fit in one peer packet (1200 bytes less QUIC's header, AEAD tag and frame header):
# aioquic keeps a DATAGRAM frame too large for a packet at the head of its queue for ever, blocking every later one
# (probe keys and candidates too), so a larger one is refused before it is queued. With the longest service name the
# frame is 1089 bytes.
MAX_APP_DATAGRAM = 1024


class FrameError(ValueError):
    """A malformed overlay frame."""


def is_quic(datagram: bytes) -> bool:
    return bool(datagram) and datagram[0] & 0x40 != 0


@dataclass(frozen=True, slots=True)
class Probe:
    ack: bool
    txid: int
    sender: str
    mac: bytes


def _str8(value: str) -> bytes:
    raw = value.encode()
    if not 0 < len(raw) <= MAX_ID:
        raise FrameError(f"identifier of {len(raw)} bytes (1-{MAX_ID})")
    return bytes([len(raw)]) + raw


def _pull_str8(data: bytes, at: int) -> tuple[str, int]:
    if at >= len(data):
        raise FrameError("truncated identifier")
    n = data[at]
    raw = data[at + 1: at + 1 + n]
    if n == 0 or n > MAX_ID or len(raw) != n:
        raise FrameError("bad identifier length")
    try:
        return raw.decode(), at + 1 + n
    except UnicodeDecodeError as exc:
        raise FrameError("identifier is not UTF-8") from exc


def probe_mac(key: bytes, *, ack: bool, txid: int, sender: str) -> bytes:
    msg = struct.pack("!BQ", PROBE_ACK if ack else PROBE, txid) + sender.encode()
    return hmac.new(key, msg, hashlib.sha256).digest()[:MAC_LEN]


def encode_probe(key: bytes, *, ack: bool, txid: int, sender: str) -> bytes:
    head = struct.pack("!BQ", PROBE_ACK if ack else PROBE, txid) + _str8(sender)
    return head + probe_mac(key, ack=ack, txid=txid, sender=sender)


def decode_probe(data: bytes) -> Probe:
    if len(data) < 10 or data[0] not in (PROBE, PROBE_ACK):
        raise FrameError("not a probe")
    (txid,) = struct.unpack_from("!Q", data, 1)
    sender, at = _pull_str8(data, 9)
    mac = data[at:]
    if len(mac) != MAC_LEN:
        raise FrameError("bad probe MAC length")
    return Probe(data[0] == PROBE_ACK, txid, sender, mac)


def probe_is_authentic(probe: Probe, key: bytes) -> bool:
    expected = probe_mac(key, ack=probe.ack, txid=probe.txid, sender=probe.sender)
    return hmac.compare_digest(expected, probe.mac)


def encode_forward(node_id: str, packet: bytes) -> bytes:
    return bytes([FORWARD]) + _str8(node_id) + packet


def encode_observed(addr: tuple[str, int]) -> bytes:
    return struct.pack("!BH", OBSERVED, addr[1]) + addr[0].encode()


def encode_no_route(node_id: str) -> bytes:
    return bytes([NO_ROUTE]) + _str8(node_id)


def decode_relay(data: bytes) -> tuple[int, str, bytes] | tuple[int, tuple[str, int]]:
    """(FORWARD, node id, packet) | (NO_ROUTE, node id, b"") | (OBSERVED, (ip, port))."""
    if not data:
        raise FrameError("empty relay datagram")
    kind = data[0]
    if kind in (FORWARD, NO_ROUTE):
        node_id, at = _pull_str8(data, 1)
        packet = data[at:]
        if kind == FORWARD and not is_quic(packet):
            raise FrameError("a forwarded datagram must be a QUIC packet")
        if len(packet) > MAX_FORWARDED_PACKET:
            raise FrameError(f"a forwarded packet of {len(packet)} bytes (at most {MAX_FORWARDED_PACKET})")
        return kind, node_id, packet if kind == FORWARD else b""
    if kind == OBSERVED and len(data) > 3:
        (port,) = struct.unpack_from("!H", data, 1)
        return kind, (_ip(data[3:]), port)
    raise FrameError(f"unknown relay datagram type {kind:#x}")


def encode_probe_key(key: bytes) -> bytes:
    if len(key) != KEY_LEN:
        raise FrameError("probe key must be 16 bytes")
    return bytes([PROBE_KEY]) + key


def encode_candidates(candidates: list[tuple[int, tuple[str, int]]]) -> bytes:
    out = bytearray([CANDIDATES])
    for kind, (ip, port) in candidates[:MAX_CANDIDATES]:
        raw = ip.encode()
        out += struct.pack("!BHB", kind, port, len(raw)) + raw
    return bytes(out)


def decode_peer(data: bytes) -> tuple[int, bytes] | tuple[int, list[tuple[int, tuple[str, int]]]]:
    """(PROBE_KEY, key) | (CANDIDATES, [(kind, (ip, port)), ...])."""
    if not data:
        raise FrameError("empty peer datagram")
    if data[0] == PROBE_KEY:
        if len(data) != 1 + KEY_LEN:
            raise FrameError("bad probe key length")
        return PROBE_KEY, data[1:]
    if data[0] == CANDIDATES:
        found: list[tuple[int, tuple[str, int]]] = []
        at = 1
        while at < len(data):
            if at + 4 > len(data) or len(found) >= MAX_CANDIDATES:
                raise FrameError("truncated or too many candidates")
            kind, port, n = struct.unpack_from("!BHB", data, at)
            if kind not in (0, 1):
                raise FrameError(f"unknown candidate kind {kind}")
            found.append((kind, (_ip(data[at + 4: at + 4 + n]), port)))
            at += 4 + n
        return CANDIDATES, found
    raise FrameError(f"unknown peer datagram type {data[0]:#x}")


def encode_app(service: str, payload: bytes) -> bytes:
    if len(payload) > MAX_APP_DATAGRAM:
        raise FrameError(f"a datagram of {len(payload)} bytes (at most {MAX_APP_DATAGRAM})")
    return bytes([APP]) + _str8(service) + payload


def decode_app(data: bytes) -> tuple[str, bytes]:
    """(service, payload) of an APP datagram."""
    if not data or data[0] != APP:
        raise FrameError("not an application datagram")
    service, at = _pull_str8(data, 1)
    payload = data[at:]
    if len(payload) > MAX_APP_DATAGRAM:
        raise FrameError(f"a datagram of {len(payload)} bytes (at most {MAX_APP_DATAGRAM})")
    return service, payload


def _ip(raw: bytes) -> str:
    try:
        return str(ipaddress.ip_address(raw.decode()))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FrameError("bad IP address") from exc

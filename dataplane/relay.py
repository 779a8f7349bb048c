"""The overlay relay (adapter): forwards opaque QUIC packets between authenticated nodes, never decrypting them.

Runs on a machine every node can reach (the anchor VPS). Each node keeps one QUIC connection to the relay (or,
where no UDP gets out, a TCP+TLS link to the same port: dataplane.relay_tls), authenticated both ways with cluster
certificates (the relay's is a `relay` certificate), and sends its peer-to-peer packets inside DATAGRAM frames
addressed to a node id; the relay hands them to that node's link, whichever transport, with the sender's id.
What it forwards is the peers' own end-to-end QUIC: ciphertext to the relay. On connect the relay tells the node
its address as seen from here (its reflexive candidate for hole punching).

A node may send at most `rate_bytes_s` (with a burst of `burst_bytes`) through the relay: past that, packets are
dropped (QUIC's congestion control backs off), so one node cannot take the relay from everyone else.

Floods (issue 16): a new QUIC connection is admitted through a `ConnectionGate` (broker.limits: `max_per_address`
connections from one address, handshaking or authenticated, and `max_connections` in all), so one address cannot
fill the endpoint's 256 handshake slots; a handshake not finished within `handshake_timeout_s` is dropped.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, cast

from aioquic.buffer import Buffer  # type: ignore[attr-defined]
from aioquic.quic.packet import pull_quic_header

from broker.limits import ConnectionGate, ListenerLimits
from broker.listeners import ThrottledLog
from dataplane import frames
from dataplane.endpoint import Endpoint
from dataplane.frames import FrameError
from dataplane.identity import Refused
from dataplane.quic import CID_LENGTH, RELAY_DATAGRAM_SIZE, Peer
from dataplane.relay_tls import TlsChannel, close_server, serve

log = logging.getLogger(__name__)


@dataclass
class TokenBucket:
    """Bytes a node may still send now (pure: takes `now`)."""

    rate: float
    burst: float
    tokens: float
    at: float

    def take(self, n: int, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if n > self.tokens:
            return False
        self.tokens -= n
        return True


class RelayServer(Endpoint):
    accepts_datagram_size = RELAY_DATAGRAM_SIZE  # node connections carry the peers' 1200-byte packets

    def __init__(self, *args: Any, rate_bytes_s: float = 12.5e6, burst_bytes: float = 4e6,
                 limits: ListenerLimits | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits or ListenerLimits()
        self.gate = ConnectionGate(max_connections=self.limits.max_connections,
                                   max_per_address=self.limits.max_per_address)
        self._born: dict[Peer, tuple[float, str]] = {}  # server-side QUIC connections: since when, from where
        self._throttled = ThrottledLog(log)
        self.rate_bytes_s = rate_bytes_s
        self.burst_bytes = burst_bytes
        self._buckets: dict[str, TokenBucket] = {}
        self.forwarded = 0  # packets
        self.forwarded_bytes = 0
        self.limited = 0  # packets dropped by a node's rate limit
        self.unroutable = 0
        self._tls_server: asyncio.Server | None = None
        self._channels: set[TlsChannel] = set()
        self.sessions: dict[str, Peer | TlsChannel] = {}  # the newest link of each node, whichever transport

    async def listen_tls(self, host: str, port: int) -> None:
        """Also accept nodes over TCP+TLS on `port` (the same number as the UDP one: firewalls see one service)."""
        self._tls_server = await serve(host, port, self._tls(), judge=self._judge_chain, on_channel=self._channel,
                                       on_datagram=self.peer_datagram, on_closed=self._channel_closed)

    def _channel(self, channel: TlsChannel) -> None:
        self._channels.add(channel)
        self.accepted(channel)

    def _channel_closed(self, channel: TlsChannel) -> None:
        self._channels.discard(channel)
        if channel.identity is not None and self.sessions.get(channel.identity.identity) is channel:
            del self.sessions[channel.identity.identity]

    def enforce(self) -> list[str]:
        """Judge every link again, QUIC and TLS ones: a revoked or expired node is cut from the relay at once."""
        cut = set(super().enforce())
        for channel in list(self._channels):
            verdict = self._judge_link(channel)
            if isinstance(verdict, Refused):
                log.warning("relay: cut the TLS link of %s: %s", channel.node_id, verdict)
                channel.close(str(verdict))
                cut.add(channel.node_id)
        return sorted(cut)

    # ---- admission (issue 16) -----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._spawn(self._expire_loop())

    def _peer_for(self, data: bytes, addr: Any, *, relayed_from: tuple[str, str] | None) -> Peer | None:
        if relayed_from is not None or not isinstance(addr, tuple) or not self._opens_connection(data):
            return super()._peer_for(data, addr, relayed_from=relayed_from)
        source = str(addr[0])
        if not self.gate.admit(source):
            self.dropped += 1
            self._throttled.log(logging.WARNING, f"refused:{source}",
                                "relay: refused a connection from %s (connection limit reached)", source)
            return None
        peer = super()._peer_for(data, addr, relayed_from=None)
        if peer is None:  # not an acceptable Initial, or every handshake slot taken
            self.gate.release(source)
        else:
            self._born[peer] = (self.clock(), source)
        return peer

    def _opens_connection(self, data: bytes) -> bool:
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=CID_LENGTH)
        except ValueError:
            return False
        return header.destination_cid not in self._cids

    def expire_handshakes(self) -> int:
        """Drop server-side connections still unauthenticated after the handshake timeout; returns how many."""
        now = self.clock()
        stale = [p for p, (at, _) in self._born.items()
                 if p.identity is None and now - at > self.limits.handshake_timeout_s]
        for peer in stale:
            peer.close("handshake timed out")
            self.forget(peer)
        return len(stale)

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.limits.handshake_timeout_s / 2))
            try:
                self.expire_handshakes()
            except Exception:  # one bad connection must not end the expiry of every other
                log.exception("relay: expiring handshakes failed; going on")

    def forget(self, peer: Peer) -> None:
        born = self._born.pop(peer, None)
        if born is not None:
            self.gate.release(born[1])
        super().forget(peer)
        if peer.identity is not None and self.sessions.get(peer.identity.identity) is peer:
            del self.sessions[peer.identity.identity]

    def close(self) -> None:
        for channel in list(self._channels):
            channel.close("relay closed")
        if self._tls_server is not None:
            asyncio.get_running_loop().create_task(close_server(self._tls_server))
        super().close()

    def accepted(self, peer: Peer | TlsChannel) -> None:  # type: ignore[override]
        assert peer.identity is not None
        self.sessions[peer.identity.identity] = peer
        if peer.identity.identity not in self._buckets:  # a reconnect does not refill the bucket
            self._buckets[peer.identity.identity] = TokenBucket(self.rate_bytes_s, self.burst_bytes,
                                                                self.burst_bytes, self.clock())
        if isinstance(peer.addr, tuple) and isinstance(peer.addr[0], str):
            peer.send_datagram(frames.encode_observed(cast(tuple[str, int], tuple(peer.addr[:2]))))

    def peer_datagram(self, peer: Peer | TlsChannel, data: bytes) -> None:  # type: ignore[override]
        assert peer.identity is not None
        source = peer.identity.identity
        try:
            decoded = frames.decode_relay(data)
        except FrameError:
            self.dropped += 1
            return
        if decoded[0] != frames.FORWARD:
            self.dropped += 1
            return
        _kind, dest, packet = cast(tuple[int, str, bytes], decoded)
        bucket = self._buckets.get(source)
        if bucket is None or not bucket.take(len(packet), self.clock()):  # NO_ROUTE answers are charged too
            self.limited += 1
            return
        target = self.sessions.get(dest)
        if target is None or target.closed.is_set():
            self.unroutable += 1
            peer.send_datagram(frames.encode_no_route(dest))
            return
        if target.send_datagram(frames.encode_forward(source, packet)):
            self.forwarded += 1
            self.forwarded_bytes += len(packet)
        else:
            self.dropped += 1  # the destination's queue is full (it is slow or gone): QUIC resends


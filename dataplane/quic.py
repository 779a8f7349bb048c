"""One overlay connection (adapter over aioquic's QuicConnection): mutual authentication, streams, datagrams.

Both sides present the node certificate the cluster CA issued; the server asks the client for its certificate,
which aioquic has no public switch for (`_MutualConnection`), and neither side lets aioquic verify anything: the
endpoint's `judge` (dataplane.identity.check_peer) decides after the TLS handshake has proven that the peer holds
the certificate's key. A peer that fails is closed with the refusal as the reason and never reaches the caller; the
refused side learns why from the CONNECTION_CLOSE. A client counts as connected only once the server's
HANDSHAKE_DONE (RFC 9000 §19.20) shows that the server accepted *its* certificate too.

A `Peer` never touches the socket: it hands every datagram to its `Host` (the endpoint), which decides the path
(direct, or through a relay). Streams are asyncio reader/writer pairs; a writer's drain() waits while more than
HIGH_WATER bytes of its stream are unacknowledged (aioquic itself buffers without limit: PLATFORM-NOTES).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, SupportsIndex

from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import MAX_STREAM_DATA_FRAME_CAPACITY, NetworkAddress, QuicConnection
from aioquic.quic.packet import QuicFrameType
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.stream import QuicStream
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from dataplane.errors import ConnectionLost, PeerRefused
from dataplane.frames import MAX_FORWARDED_PACKET
from dataplane.identity import PeerIdentity, Refused, TrustAnchor

log = logging.getLogger(__name__)

ALPN = "cloudless-overlay/1"
REFUSED = 0x1C1  # application error code of a connection closed because the peer's identity was refused
CID_LENGTH = 8
# A peer-to-peer packet must fit, with the relay's framing, inside one DATAGRAM frame of a node<->relay packet:
# peers use QUIC's minimum (1200, RFC 9000 §14), relay connections a larger one (a LAN/Internet MTU of 1500 allows it)
PEER_DATAGRAM_SIZE = MAX_FORWARDED_PACKET
RELAY_DATAGRAM_SIZE = 1350
MAX_PENDING_DATAGRAMS = 512  # DATAGRAM frames queued in one connection (aioquic's queue has no bound): drop past it
# Back-pressure: a writer's drain() waits while more than HIGH_WATER bytes of its stream are sent but not yet
# acknowledged (aioquic itself buffers without limit: PLATFORM-NOTES), and goes on below LOW_WATER.
HIGH_WATER = 1 << 20
LOW_WATER = 256 << 10
RECEIVE_WINDOW = 1 << 20  # per stream: bytes a peer may send beyond what the reader has read
StreamHandler = Callable[["Peer", asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class NodeCredential:
    """This node's identity on the overlay: its certificate and key (PEM) and the cluster CA it trusts."""

    identity: str
    cert_pem: bytes
    key_pem: bytes
    trust: TrustAnchor

    @classmethod
    def from_files(cls, identity: str, *, cert: Path, key: Path, ca: Path) -> NodeCredential:
        return cls(identity, cert.read_bytes(), key.read_bytes(), TrustAnchor.from_pem(ca.read_bytes()))

    def configuration(self, *, is_client: bool, idle_timeout_s: float,
                      max_datagram_size: int = PEER_DATAGRAM_SIZE) -> QuicConfiguration:
        config = QuicConfiguration(is_client=is_client, alpn_protocols=[ALPN], verify_mode=ssl.CERT_NONE,
                                   idle_timeout=idle_timeout_s, connection_id_length=CID_LENGTH,
                                   max_datagram_frame_size=65536, max_datagram_size=max_datagram_size)
        config.certificate = x509.load_pem_x509_certificate(self.cert_pem)
        config.private_key = serialization.load_pem_private_key(self.key_pem, password=None)
        return config


class _MutualConnection(QuicConnection):
    """aioquic's connection, with two changes:

    - the server requests the client's certificate (CertificateRequest, RFC 8446 §4.3.2); aioquic checks the client's
      CertificateVerify signature itself, the chain is ours to judge;
    - a stream's receive window follows what the application has *read* (`consumed`), not what has arrived: aioquic
      doubles MAX_STREAM_DATA as data arrives, so a reader that does not read would buffer without limit. Here a
      peer may send at most RECEIVE_WINDOW bytes beyond what the reader took (RFC 9000 §4.1)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.consumed: dict[int, int] = {}

    def _write_stream_limits(self, builder: QuicPacketBuilder, space: Any, stream: QuicStream) -> None:
        stream_id = stream.stream_id
        if not stream.max_stream_data_local or stream_id is None:
            return  # a stream we only send on
        wanted = self.consumed.get(stream_id, 0) + RECEIVE_WINDOW
        if wanted - stream.max_stream_data_local >= RECEIVE_WINDOW // 4:  # batched: not a frame per read
            stream.max_stream_data_local = wanted
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            buf = builder.start_frame(QuicFrameType.MAX_STREAM_DATA, capacity=MAX_STREAM_DATA_FRAME_CAPACITY,
                                      handler=self._on_max_stream_data_delivery, handler_args=(stream,))
            buf.push_uint_var(stream_id)
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        if not self._is_client:
            self.tls._request_client_certificate = True

    def peer_chain(self) -> list[x509.Certificate]:
        leaf = self.tls._peer_certificate
        return [leaf, *self.tls._peer_certificate_chain] if leaf is not None else []


class Host(Protocol):
    """What a connection needs from the endpoint that owns the socket."""

    def judge(self, peer: Peer) -> PeerIdentity | Refused: ...

    def cid_issued(self, peer: Peer, cid: bytes) -> None: ...

    def cid_retired(self, cid: bytes) -> None: ...

    def accepted(self, peer: Peer) -> None: ...

    def serve_stream(self, peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None: ...

    def peer_datagram(self, peer: Peer, data: bytes) -> None: ...

    def send(self, peer: Peer, data: bytes, addr: NetworkAddress) -> None: ...

    def forget(self, peer: Peer) -> None: ...


class Peer:
    """One connection to another node (or a relay); `identity` is set once it is authenticated."""

    def __init__(self, endpoint: Host, quic: _MutualConnection, addr: NetworkAddress) -> None:
        self.endpoint = endpoint
        self.quic = quic
        self.addr = addr
        self.identity: PeerIdentity | None = None
        self.ready: asyncio.Future[PeerIdentity] = asyncio.get_running_loop().create_future()
        self.closed = asyncio.Event()
        self.close_reason = ""
        self._readers: dict[int, asyncio.StreamReader] = {}
        self._paused: dict[int, asyncio.StreamReaderProtocol] = {}  # streams whose writers wait in drain()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    @property
    def node_id(self) -> str:
        return self.identity.identity if self.identity else "?"

    @property
    def streams_open(self) -> int:
        """Streams whose incoming side has not ended yet (a request waiting for its answer, a spliced connection)."""
        return len(self._readers)

    async def open_stream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.closed.is_set():
            raise ConnectionLost(f"connection to {self.node_id} is closed: {self.close_reason}")
        stream_id = self.quic.get_next_available_stream_id()
        return self._stream(stream_id)

    def close(self, reason: str = "", *, error_code: int = 0) -> None:
        self.quic.close(error_code=error_code, reason_phrase=reason[:200])
        self.transmit()

    def send_datagram(self, data: bytes) -> bool:
        """An unreliable message inside this connection (RFC 9221): encrypted, never retransmitted. False when it
        was dropped: the connection is closed, or MAX_PENDING_DATAGRAMS are already waiting for congestion room."""
        if self.closed.is_set() or len(self.quic._datagrams_pending) >= MAX_PENDING_DATAGRAMS:
            return False
        self.quic.send_datagram_frame(data)
        self.transmit()
        return True

    def stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None

    # ---- driving the connection (the endpoint calls these) ----------------------------------------------------

    def _stream(self, stream_id: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader = _Reader(lambda n: self._consumed(stream_id, n))
        self._readers[stream_id] = reader
        protocol = asyncio.StreamReaderProtocol(reader)
        transport = _StreamTransport(self, stream_id, protocol)
        return reader, asyncio.StreamWriter(transport, protocol, reader, asyncio.get_running_loop())

    def _consumed(self, stream_id: int, total: int) -> None:
        """The reader of `stream_id` has taken `total` bytes so far: the peer may send RECEIVE_WINDOW more."""
        before = self.quic.consumed.get(stream_id, 0)
        self.quic.consumed[stream_id] = total
        if total - before and not self.closed.is_set():
            self.transmit()  # a MAX_STREAM_DATA frame, when the window moved enough

    def unacked(self, stream_id: int) -> int:
        """Bytes written to the stream that the peer has not acknowledged yet."""
        stream = self.quic._streams.get(stream_id)
        return len(stream.sender._buffer) if stream is not None else 0

    def _pause_if_full(self, stream_id: int, protocol: asyncio.StreamReaderProtocol) -> None:
        if stream_id not in self._paused and self.unacked(stream_id) > HIGH_WATER:
            self._paused[stream_id] = protocol
            protocol.pause_writing()

    def _resume_drained(self) -> None:
        for stream_id, protocol in list(self._paused.items()):
            if self.unacked(stream_id) < LOW_WATER or self.closed.is_set():
                del self._paused[stream_id]
                protocol.resume_writing()

    def receive(self, data: bytes, addr: NetworkAddress, now: float) -> None:
        self.quic.receive_datagram(data, addr, now=now)
        self.process()

    def process(self) -> None:
        event = self.quic.next_event()
        while event is not None:
            self._handle(event)
            event = self.quic.next_event()
        if self.identity is not None and not self.ready.done() and self.quic._handshake_confirmed:
            self.ready.set_result(self.identity)
        self.transmit()
        self._resume_drained()

    def _handle(self, event: events.QuicEvent) -> None:
        match event:
            case events.HandshakeCompleted():
                self._authenticate()
            case events.StreamDataReceived(stream_id=sid, data=data, end_stream=end):
                self._on_stream_data(sid, data, end)
            case events.StreamReset(stream_id=sid):
                reader = self._readers.pop(sid, None)
                if reader is not None:
                    reader.set_exception(ConnectionLost(f"stream {sid} reset by {self.node_id}"))
            case events.DatagramFrameReceived(data=data):
                if self.identity is not None:
                    self.endpoint.peer_datagram(self, data)
            case events.ConnectionIdIssued(connection_id=cid):
                self.endpoint.cid_issued(self, cid)
            case events.ConnectionIdRetired(connection_id=cid):
                self.endpoint.cid_retired(cid)
            case events.ConnectionTerminated(error_code=code, reason_phrase=why):
                self._terminated(code, why)

    def _authenticate(self) -> None:
        verdict = self.endpoint.judge(self)
        if isinstance(verdict, Refused):
            log.warning("overlay: refused a connection from %s: %s", self.addr, verdict)
            self.quic.close(error_code=REFUSED, reason_phrase=str(verdict)[:200])
            if not self.ready.done():
                self.ready.set_exception(PeerRefused(verdict))
            return
        self.identity = verdict
        self.endpoint.accepted(self)
        if not self.quic._is_client:
            self.ready.set_result(verdict)
        # a client is ready once the server has judged *its* certificate too: the server's HANDSHAKE_DONE (RFC 9000
        # §19.20) leaves only after that check, a refusal arrives as CONNECTION_CLOSE instead (see process())

    def _on_stream_data(self, stream_id: int, data: bytes, end: bool) -> None:
        if self.identity is None:
            return  # nothing flows before the peer is known (aioquic could deliver 0.5-RTT data)
        reader = self._readers.get(stream_id)
        if reader is None:
            reader, writer = self._stream(stream_id)
            self.endpoint.serve_stream(self, reader, writer)
        if data:
            reader.feed_data(data)
        if end:
            reader.feed_eof()
            self._readers.pop(stream_id, None)

    def _terminated(self, code: int, why: str) -> None:
        self.close_reason = why or f"error {code}"
        if not self.ready.done():
            refused = code == REFUSED
            self.ready.set_exception(PeerRefused(why, by_peer=True) if refused else ConnectionLost(self.close_reason))
        for reader in self._readers.values():
            reader.set_exception(ConnectionLost(f"connection to {self.node_id} closed: {self.close_reason}"))
        self._readers.clear()
        self.closed.set()
        for protocol in self._paused.values():
            protocol.connection_lost(ConnectionLost(self.close_reason))  # a waiting drain() raises
        self._paused.clear()
        self.endpoint.forget(self)

    def transmit(self) -> None:
        loop = asyncio.get_running_loop()
        for data, addr in self.quic.datagrams_to_send(now=loop.time()):
            self.endpoint.send(self, data, addr)
        timer_at = self.quic.get_timer()
        if self._timer is not None and self._timer_at != timer_at:
            self._timer.cancel()
            self._timer = None
        if self._timer is None and timer_at is not None:
            self._timer = loop.call_at(timer_at, self._on_timer)
        self._timer_at = timer_at

    def _on_timer(self) -> None:
        now = max(self._timer_at or 0.0, asyncio.get_running_loop().time())
        self._timer = self._timer_at = None
        self.quic.handle_timer(now=now)
        self.process()


class _Reader(asyncio.StreamReader):
    """asyncio's StreamReader, reporting how many bytes the application has taken (for the receive window)."""

    def __init__(self, on_consumed: Callable[[int], None]) -> None:
        super().__init__(limit=RECEIVE_WINDOW)
        self._on_consumed = on_consumed
        self._fed = 0
        self._reported = 0

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        chunk = bytes(data)
        self._fed += len(chunk)
        super().feed_data(chunk)

    def _maybe_resume_transport(self) -> None:  # asyncio calls it after every read from the buffer
        taken = self._fed - len(self._buffer)  # type: ignore[attr-defined]
        if taken > self._reported:
            self._reported = taken
            self._on_consumed(taken)


class _StreamTransport(asyncio.Transport):
    """The write side of one QUIC stream, shaped as an asyncio transport so asyncio.StreamWriter can drive it."""

    def __init__(self, peer: Peer, stream_id: int, protocol: asyncio.StreamReaderProtocol) -> None:
        super().__init__()
        self.peer = peer
        self.stream_id = stream_id
        self.protocol = protocol
        self._closing = False
        self._eof = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.peer.closed.is_set():
            raise ConnectionLost(f"connection to {self.peer.node_id} is closed: {self.peer.close_reason}")
        self.peer.quic.send_stream_data(self.stream_id, bytes(data), end_stream=False)
        self.peer.transmit()
        self.peer._pause_if_full(self.stream_id, self.protocol)

    def write_eof(self) -> None:
        if self._eof or self.peer.closed.is_set():
            return
        self._eof = True
        self.peer.quic.send_stream_data(self.stream_id, b"", end_stream=True)
        self.peer.transmit()

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self.write_eof()

    def is_closing(self) -> bool:
        return self._closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"stream_id": self.stream_id, "peer": self.peer}.get(name, default)

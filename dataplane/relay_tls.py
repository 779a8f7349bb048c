"""The relay over TCP + TLS (adapter): the fallback for networks that let no UDP out.

The same relay datagrams (dataplane.frames: FORWARD, OBSERVED, NO_ROUTE) travel as length-prefixed frames
(u16 big-endian length, then the datagram) in a TLS 1.3 connection, authenticated both ways with the cluster
certificates: the relay requires a client certificate rooted in the cluster CA (OpenSSL checks the chain) and then
judges it like every overlay peer (dataplane.identity: the subject, the role, revocation); the node checks the
relay's certificate the same way. Peer packets inside are still the peers' own QUIC, end to end: the relay sees
ciphertext only.

A `TlsChannel` offers what the endpoint and the relay use of a QUIC connection to a relay (`send_datagram`,
`identity`, `closed`, `close`), so either transport can carry a relay link. Like UDP it drops rather than queues
without bound: past MAX_BUFFER bytes waiting in the socket, a datagram is dropped and QUIC's loss recovery resends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509

from broker.limits import ConnectionGate, ListenerLimits
from broker.listeners import mark_authenticated, nofile_soft, start_gated_server
from dataplane.errors import PeerRefused, Unreachable
from dataplane.identity import PeerIdentity, Refused
from dataplane.quic import NodeCredential

log = logging.getLogger(__name__)

MAX_BUFFER = 1 << 20  # bytes queued in the TLS socket before datagrams are dropped
MAX_FRAME = 2048  # a relay datagram is at most a forwarded packet (1200) plus framing
HANDSHAKE_TIMEOUT_S = 5.0
Judge = Callable[[list[x509.Certificate], tuple[str, ...]], PeerIdentity | Refused]


class TlsChannel:
    """One authenticated TCP+TLS relay link (either end)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, identity: PeerIdentity,
                 on_datagram: Callable[[TlsChannel, bytes], None], on_closed: Callable[[TlsChannel], None],
                 *, chain: list[x509.Certificate], roles: tuple[str, ...]) -> None:
        self.chain = chain  # kept to judge the link again (a revocation, an expiry)
        self.roles = roles
        self.reader = reader
        self.writer = writer
        self.identity: PeerIdentity | None = identity
        self.addr: Any = writer.get_extra_info("peername")
        self.closed = asyncio.Event()
        self.close_reason = ""
        self._on_datagram = on_datagram
        self._on_closed = on_closed
        self.task = asyncio.get_running_loop().create_task(self._read())

    @property
    def node_id(self) -> str:
        return self.identity.identity if self.identity else "?"

    def send_datagram(self, data: bytes) -> bool:
        if self.closed.is_set() or len(data) > MAX_FRAME or self.writer.transport.get_write_buffer_size() > MAX_BUFFER:
            return False
        self.writer.write(struct.pack("!H", len(data)) + data)
        return True

    def close(self, reason: str = "", *, error_code: int = 0) -> None:
        if not self.closed.is_set():
            self.close_reason = reason
            self.closed.set()
            self.writer.close()
            self._on_closed(self)

    def stop_timer(self) -> None:
        """(Nothing to stop: TCP has its own timers.)"""

    async def _read(self) -> None:
        try:
            while True:
                (length,) = struct.unpack("!H", await self.reader.readexactly(2))
                if length > MAX_FRAME:
                    raise ValueError(f"a relay frame of {length} bytes")
                self._on_datagram(self, await self.reader.readexactly(length))
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, ValueError, OSError) as exc:
            self.close(f"relay link over TLS ended: {exc!r}"[:200])


class TlsContexts:
    """SSL contexts for both ends, from a node credential (ssl wants files: they go to a private temp dir)."""

    def __init__(self, credential: NodeCredential) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="cloudless-relay-tls-"))
        os.chmod(self._dir, 0o700)
        cert, key = self._dir / "cert.pem", self._dir / "key.pem"
        cert.write_bytes(credential.cert_pem)
        key.touch(mode=0o600)
        key.write_bytes(credential.key_pem)
        ca_pem = credential.trust.ca.public_bytes(encoding=_pem())
        self.server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server.minimum_version = ssl.TLSVersion.TLSv1_3
        self.server.load_cert_chain(cert, key)
        self.server.verify_mode = ssl.CERT_REQUIRED  # the chain is checked by OpenSSL, the identity by us
        self.server.load_verify_locations(cadata=ca_pem.decode())
        self.client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.client.minimum_version = ssl.TLSVersion.TLSv1_3
        self.client.check_hostname = False
        self.client.verify_mode = ssl.CERT_NONE  # judged by dataplane.identity right after the handshake
        self.client.load_cert_chain(cert, key)
        for path in (cert, key):
            path.unlink()
        self._dir.rmdir()


def _pem() -> Any:
    from cryptography.hazmat.primitives.serialization import Encoding

    return Encoding.PEM


def peer_chain(writer: asyncio.StreamWriter) -> list[x509.Certificate]:
    obj = writer.get_extra_info("ssl_object")
    der = obj.getpeercert(binary_form=True) if obj is not None else None
    return [x509.load_der_x509_certificate(der)] if der else []


async def dial(addr: tuple[str, int], contexts: TlsContexts, *, judge: Judge, relay_id: str,
               on_datagram: Callable[[TlsChannel, bytes], None], on_closed: Callable[[TlsChannel], None],
               timeout_s: float = HANDSHAKE_TIMEOUT_S) -> TlsChannel:
    """A node's TLS link to the relay at `addr`, which must present the relay certificate `relay_id`."""
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(addr[0], addr[1], ssl=contexts.client)
    except (TimeoutError, OSError) as exc:
        raise Unreachable(f"{addr[0]}:{addr[1]} over TCP/TLS ({exc!r})", timeout_s) from None
    chain = peer_chain(writer)
    verdict = judge(chain, ("relay",))
    if isinstance(verdict, Refused) or verdict.identity != relay_id:
        writer.close()
        raise PeerRefused(verdict if isinstance(verdict, Refused) else f"expected {relay_id}, met {verdict.identity}")
    return TlsChannel(reader, writer, verdict, on_datagram, on_closed, chain=chain, roles=("relay",))


async def serve(host: str, port: int, contexts: TlsContexts, *, judge: Judge,
                on_channel: Callable[[TlsChannel], None], on_datagram: Callable[[TlsChannel, bytes], None],
                on_closed: Callable[[TlsChannel], None]) -> asyncio.Server:
    """The relay's TLS listener: each authenticated node becomes a channel (`on_channel`)."""

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        chain = peer_chain(writer)
        verdict = judge(chain, ("node",))
        if isinstance(verdict, Refused):
            log.warning("relay: refused a TLS link from %s: %s", writer.get_extra_info("peername"), verdict)
            writer.close()
            return
        mark_authenticated(writer.transport)  # a device: no longer bound by the per-address cap (many behind a NAT)
        on_channel(TlsChannel(reader, writer, verdict, on_datagram, on_closed, chain=chain, roles=("node",)))

    def protocol() -> asyncio.BaseProtocol:
        return asyncio.StreamReaderProtocol(asyncio.StreamReader(limit=MAX_FRAME * 4), accept)

    # behind the listeners' gate (broker.listeners): total and per-address caps before any TLS work, handshake
    # timeout, throttled accept-error logging — a flood of idle TCP connections cannot lock devices out
    gate = ConnectionGate.for_listener(ListenerLimits(handshake_timeout_s=HANDSHAKE_TIMEOUT_S), nofile_soft())
    return await start_gated_server(protocol, gate, ssl_context=contexts.server,
                                    handshake_timeout_s=HANDSHAKE_TIMEOUT_S, what="relay TLS", host=host, port=port,
                                    client_speaks_first=False)  # the relay speaks first; a node may stay quiet


async def close_server(server: asyncio.Server) -> None:
    server.close()
    with contextlib.suppress(Exception):
        await server.wait_closed()

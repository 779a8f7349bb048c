"""The overlay as upper layers use it (adapter): one `Overlay` per node over one `Endpoint` (one UDP socket).

- **Directory in** (`apply`): the relays to hold links to, the peers to reach (and which of them this node dials),
  the revoked certificate serials. The facade attaches to every relay (its addresses in order; UDP, then TCP/TLS:
  `Endpoint.attach_relay`), keeps a connection to every peer it dials (through a relay both hold, else any relay it
  holds), re-attaches and reconnects with a bounded exponential back-off when a link drops, closes connections to
  peers no longer listed, and re-judges live connections when the revocations change, so a revoked peer is cut at
  once. Idle links are kept alive with QUIC PINGs (aioquic sends none of its own; an idle connection ends after
  `idle_timeout_s`). Peers the `eager` predicate leaves out are reached on demand instead: connected when a stream
  or a ping needs them, never pinged, gone `idle_timeout_s` after their last use (a node's link to the coordinator's
  S3 gateway: a keep-alive every 10 s to a peer few workloads use cost ~1 MiB a day, a metered node's month).
- **Streams to (node, service)**: `open_stream` connects if needed and sends the service name first (one length
  byte, the name); the other side answers one byte — accepted, or refused with the reason (`ServiceRefused`). The
  reader/writer are the Endpoint's own, so back-pressure is real both ways (dataplane.quic). `serve` registers a
  handler; a built-in `echo` service answers `ping`.
- **Datagrams to (node, service)**: QUIC DATAGRAM frames (RFC 9221) on the peer connection (dataplane.frames APP),
  unreliable, at most `MAX_DATAGRAM` bytes each.
- **Report out** (`report(now)`): candidates, relay links, every peer's path and counters, as the wire's
  OverlayReport; `changed` is set whenever something in it moved (a path, a link, a peer), for a prompt publish.

Decisions (retries, relay choice, which peers to drop, path names, counters) are in dataplane.overlay_plan.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import struct
from collections.abc import Awaitable, Callable, Iterable
from typing import cast

from broker.wire import (
    CandidateKind,
    OverlayCandidate,
    OverlayPingResult,
    OverlayReport,
    PathKind,
    PeerEntry,
    PeerPath,
    RelayInfo,
    is_service_member,
)
from dataplane import frames
from dataplane.endpoint import Endpoint, Link
from dataplane.errors import ConnectionLost, DataPlaneError, Unreachable
from dataplane.identity import Revocations
from dataplane.overlay_plan import (
    ACCEPTED,
    DEFAULT_PORT,
    MAX_REASON,
    REFUSED,
    Address,
    Directory,
    PathCounters,
    Retry,
    RetryPolicy,
    choose_relay,
    classify,
    format_hostport,
    peer_local_addresses,
    read_directory,
    refusal,
    removed_peers,
    service_header,
    service_problem,
)
from dataplane.paths import PathChanged, Relay, Timers
from dataplane.quic import NodeCredential, Peer

log = logging.getLogger(__name__)

ECHO = "echo"  # the built-in service `ping` uses
MAX_DATAGRAM = frames.MAX_APP_DATAGRAM
HEADER_TIMEOUT_S = 10.0  # a stream must name its service within this
ENFORCE_EVERY_S = 60.0  # live connections are judged again this often (a certificate that expired meanwhile)
MAX_PING_COUNT = 100
ServiceHandler = Callable[[str, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
DatagramHandler = Callable[[str, bytes], None]


class OverlayUnavailable(DataPlaneError):
    """The overlay cannot run here (its UDP port is taken, ...); the message says what to do."""


class ServiceRefused(DataPlaneError):
    """The peer refused a stream to `service` (no such service there, or a bad name)."""

    def __init__(self, node_id: str, service: str, reason: str) -> None:
        self.node_id = node_id
        self.service = service
        self.reason = reason
        super().__init__(f"{node_id} refused a stream to {service!r}: {reason}")


async def _echo(_node: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while chunk := await reader.read(65536):
        writer.write(chunk)
        await writer.drain()


def is_node(peer: str) -> bool:
    """Whether a peer is an enrolled device (node ids cannot hold '@'), not a member a coordinator runs (`s3@<id>`)."""
    return not is_service_member(peer)


class Overlay:
    """This node's overlay. `await start()`, then `apply(...)` every peer directory; `await stop()` at the end."""

    def __init__(self, credential: NodeCredential, *, clock: Callable[[], float],
                 local_addresses: Callable[[], list[str]] = list, timers: Timers | None = None, direct: bool = True,
                 idle_timeout_s: float = 30.0, retry: RetryPolicy | None = None, relay_udp_timeout_s: float = 3.0,
                 connect_timeout_s: float = 10.0, tick_s: float = 0.5,
                 eager: Callable[[str], bool] | None = None) -> None:
        """`eager(peer)`: whether a listed peer is dialled at once and its connection kept alive (the default: every
        peer). Any other listed peer is reached on demand: `open_stream`/`connect` connect it (through a relay, as
        every connection starts), nothing pings it, and its connection ends `idle_timeout_s` after its last use."""
        self._credential = credential
        self.eager: Callable[[str], bool] = eager or (lambda _peer: True)
        self.clock = clock
        self.local_addresses = local_addresses
        self.timers = timers
        self.direct = direct
        self.idle_timeout_s = idle_timeout_s
        self.retry = retry or RetryPolicy()
        self.relay_udp_timeout_s = relay_udp_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.tick_s = tick_s
        self.endpoint: Endpoint | None = None
        self.directory = Directory()
        self.counters = PathCounters()
        self.changed = asyncio.Event()  # something in report() moved: publish it
        self.datagrams_dropped = 0  # datagrams for a service nobody handles here
        self._revocations = Revocations()
        self._services: dict[str, ServiceHandler] = {ECHO: _echo}
        self._datagram_handlers: dict[str, DatagramHandler] = {}
        self._relay_retry: dict[str, Retry] = {}
        self._peer_retry: dict[str, Retry] = {}
        self._attaching: dict[str, asyncio.Task[None]] = {}
        self._connecting: dict[str, asyncio.Task[Peer]] = {}
        self._relay_addr: dict[str, Address] = {}  # where each attached relay answered
        self._links_seen: dict[str, Link] = {}
        self._relay_bytes_gone = 0  # relay bytes of links that ended
        self._last_shape: object = None
        self._next_enforce = 0.0
        self._next_keepalive = 0.0
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ---- lifecycle -----------------------------------------------------------------------------------------

    @property
    def identity(self) -> str:
        return self._credential.identity

    @property
    def port(self) -> int:
        return self._endpoint().address[1]

    async def start(self, host: str = "0.0.0.0", port: int = DEFAULT_PORT) -> None:
        try:
            self.endpoint = await Endpoint.open(
                self._credential, host, port, clock=self.clock, on_stream=self._on_stream,
                revocations=lambda: self._revocations, local_addresses=self.local_addresses,
                idle_timeout_s=self.idle_timeout_s, timers=self.timers, on_path=self._on_path, direct=self.direct,
                on_datagram=self._on_datagram)
        except OSError as exc:
            raise OverlayUnavailable(f"cannot open UDP port {port} for the overlay: {exc.strerror or exc} (is "
                                     "another agent running? choose another port)") from exc
        self._task = asyncio.get_running_loop().create_task(self._run())
        log.info("overlay: %s listening on UDP %s:%d", self.identity, host, self.port)

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._attaching.values(), *self._connecting.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        if self.endpoint is not None:
            self.endpoint.close()
            self.endpoint = None

    def set_credential(self, credential: NodeCredential) -> None:
        """A renewed certificate: used for every connection made from now on (live ones keep theirs until they end;
        a renewal comes at 2/3 of the old one's life, so they have time to)."""
        self._credential = credential
        if self.endpoint is not None:
            self.endpoint.set_credential(credential)

    # ---- the directory -------------------------------------------------------------------------------------

    def apply(self, relays: Iterable[RelayInfo], peers: Iterable[PeerEntry], revoked: Iterable[str]) -> Directory:
        """Make the overlay what a peer directory says (see the module docstring); returns the directory as read
        (its `problems` name what was left out)."""
        new = read_directory(relays, peers, revoked, me=self.identity)
        for problem in new.problems:
            log.warning("overlay: peer directory: %s", problem)
        old, self.directory = self.directory, new
        endpoint = self._endpoint()
        for node in sorted(removed_peers(old, new)):
            self._peer_retry.pop(node, None)
            self.counters.forget(node)
            if (task := self._connecting.pop(node, None)) is not None:
                task.cancel()  # a dial still running must not register the peer again
            peer = endpoint.peers.pop(node, None)
            if peer is not None:
                log.info("overlay: %s is no longer in the directory: closing its connection", node)
                peer.close("no longer a peer")
        for relay_id in [r for r in self._attaching if r not in new.relays]:
            self._attaching.pop(relay_id).cancel()
        for relay_id in [r for r in endpoint.relays if r not in new.relays]:
            link = endpoint.relays.pop(relay_id)
            log.info("overlay: relay %s is no longer in the directory: detaching", relay_id)
            link.close("relay no longer listed")
        for relay_id, addrs in new.relays.items():
            if old.relays.get(relay_id) != addrs:
                self._relay_retry.pop(relay_id, None)  # new addresses: try them now
        if new.revoked != old.revoked:
            self._revocations = Revocations(serials=new.revoked)
            cut = endpoint.enforce()
            if cut:
                log.warning("overlay: revocation cut the connections of %s", ", ".join(cut))
        self.changed.set()
        self._round(self.clock())  # start attaching now: a connect right after this waits for the relay
        return new

    # ---- streams -------------------------------------------------------------------------------------------

    def serve(self, service: str, handler: ServiceHandler) -> None:
        """Streams to `service` on this node go to `handler(node_id, reader, writer)`."""
        problem = service_problem(service)
        if problem is not None:
            raise ValueError(problem)
        self._services[service] = handler

    async def open_stream(self, node_id: str, service: str, *, timeout_s: float = 10.0,
                          early: bytes = b"") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A stream to `service` on `node_id` (connecting first if needed). `early` goes out right behind the
        service name, before the answer (the service's own first message: one round trip less; a refusal discards
        it). Raises ServiceRefused, PeerRefused, Unreachable, ConnectionLost; ValueError for a bad service name."""
        header = service_header(service)
        peer = await self.connect(node_id)
        reader, writer = await peer.open_stream()
        writer.write(header + early)
        try:
            async with asyncio.timeout(timeout_s):
                await writer.drain()
                status = (await reader.readexactly(1))[0]
                if status == REFUSED:
                    reason = (await reader.read(MAX_REASON)).decode(errors="replace")
                    raise ServiceRefused(node_id, service, reason or "refused")
        except asyncio.IncompleteReadError:
            raise ConnectionLost(f"{node_id} closed the stream to {service!r} without an answer") from None
        except TimeoutError:
            writer.close()
            raise ConnectionLost(f"{node_id} did not answer a stream to {service!r} within {timeout_s:g}s") from None
        if status != ACCEPTED:
            writer.close()
            raise ConnectionLost(f"{node_id} answered a stream to {service!r} with {status:#x}")
        return reader, writer

    async def _on_stream(self, peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(HEADER_TIMEOUT_S):
                length = (await reader.readexactly(1))[0]
                raw = await reader.readexactly(length) if length else b""
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionLost):
            writer.close()
            return
        service = raw.decode(errors="replace")
        problem = service_problem(service)
        handler = self._services.get(service) if problem is None else None
        if handler is None:
            reason = problem or f"no service {service!r} on {self.identity}"
            log.info("overlay: refused a stream from %s: %s", peer.node_id, reason)
            with contextlib.suppress(ConnectionLost):
                writer.write(refusal(reason))
                writer.close()
            return
        try:
            writer.write(bytes([ACCEPTED]))
            await handler(peer.node_id, reader, writer)
        except (ConnectionLost, ConnectionError, asyncio.IncompleteReadError) as exc:
            log.debug("overlay: stream %s from %s ended: %s", service, peer.node_id, exc)
        except Exception:
            log.exception("overlay: the handler of %s failed (stream from %s)", service, peer.node_id)
        finally:
            with contextlib.suppress(ConnectionLost):
                writer.close()

    # ---- datagrams -----------------------------------------------------------------------------------------

    def on_datagram(self, service: str, handler: DatagramHandler) -> None:
        """Datagrams to `service` on this node go to `handler(node_id, payload)`."""
        problem = service_problem(service)
        if problem is not None:
            raise ValueError(problem)
        self._datagram_handlers[service] = handler

    def send_datagram(self, node_id: str, service: str, data: bytes) -> bool:
        """Send one datagram to `service` on `node_id`: True if it was queued (delivery is not assured, as with
        UDP); False when there is no connection to the node right now (one is made if the directory lists it, an
        on-demand peer included: send again once it is up) or
        the connection's queue is full. ValueError for a bad service name or more than MAX_DATAGRAM bytes."""
        problem = service_problem(service)
        if problem is not None:
            raise ValueError(problem)
        if len(data) > MAX_DATAGRAM:
            raise ValueError(f"a datagram of {len(data)} bytes (at most {MAX_DATAGRAM})")
        peer = self._connected(node_id)
        if peer is None:
            if node_id in self.directory.peers and not self.eager(node_id):
                self._connect_task(node_id)  # on demand: the round dials only eager peers
            self._kick.set()
            return False
        return peer.send_datagram(frames.encode_app(service, data))

    def _on_datagram(self, node_id: str, service: str, payload: bytes) -> None:
        handler = self._datagram_handlers.get(service)
        if handler is None:
            self.datagrams_dropped += 1
            return
        handler(node_id, payload)

    # ---- connections ---------------------------------------------------------------------------------------

    async def connect(self, node_id: str) -> Peer:
        """The connection to `node_id`: the live one, or a new one through a relay (shared with the background
        reconnects, so two callers never race two handshakes). Raises PeerRefused, Unreachable, ConnectionLost."""
        peer = self._connected(node_id)
        if peer is not None:
            return peer
        return await asyncio.shield(self._connect_task(node_id))

    def _connected(self, node_id: str) -> Peer | None:
        peer = self._endpoint().peers.get(node_id)
        return peer if peer is not None and not peer.closed.is_set() else None

    def _connect_task(self, node_id: str) -> asyncio.Task[Peer]:
        task = self._connecting.get(node_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._dial(node_id))
            self._connecting[node_id] = task
            task.add_done_callback(lambda t: self._connected_or_not(node_id, t))
        return task

    async def _dial(self, node_id: str) -> Peer:
        endpoint = self._endpoint()
        while True:
            held = [r for r, link in endpoint.relays.items() if not link.closed.is_set()]
            via = choose_relay(held, self.directory.peers.get(node_id), list(self.directory.relays))
            if via is not None or not self._attaching:
                break
            await asyncio.wait(list(self._attaching.values()), return_when=asyncio.FIRST_COMPLETED)
        if via is None:
            raise ConnectionLost(f"no relay link to reach {node_id} through (none attached)")
        return await endpoint.connect(node_id, via=via, timeout_s=self.connect_timeout_s)

    def _connected_or_not(self, node_id: str, task: asyncio.Task[Peer]) -> None:
        self._connecting.pop(node_id, None)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            self._peer_retry.pop(node_id, None)
            log.info("overlay: connected to %s", node_id)
        else:
            retry = self._peer_retry.get(node_id, Retry()).failed(self.clock(), str(exc), self.retry)
            self._peer_retry[node_id] = retry
            log.info("overlay: no connection to %s (%s); retrying in %.1fs", node_id, exc,
                     retry.not_before - self.clock())
        self.changed.set()

    async def _attach(self, relay_id: str, addrs: tuple[Address, ...]) -> None:
        errors = []
        for addr in addrs:
            try:
                await self._endpoint().attach_relay(addr, relay_id=relay_id, udp_timeout_s=self.relay_udp_timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # refused, unreachable, a TLS or socket error: the next address, then later
                errors.append(f"{format_hostport(addr)}: {exc}")
                continue
            self._relay_addr[relay_id] = addr
            self._relay_retry.pop(relay_id, None)
            log.info("overlay: attached to relay %s at %s", relay_id, format_hostport(addr))
            self.changed.set()
            self._kick.set()  # peers waiting for a relay can be dialled now
            return
        retry = self._relay_retry.get(relay_id, Retry()).failed(self.clock(), "; ".join(errors), self.retry)
        self._relay_retry[relay_id] = retry
        log.warning("overlay: relay %s not attached (%s); retrying in %.1fs", relay_id, retry.last_error,
                    retry.not_before - self.clock())

    # ---- the background round ------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                self._round(self.clock())
            except Exception:  # one bad round must not end reconnecting for good
                log.exception("overlay: maintenance round failed; going on")
            self._kick.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.tick_s):
                    await self._kick.wait()

    def _round(self, now: float) -> None:
        endpoint = self._endpoint()
        for relay_id, addrs in self.directory.relays.items():
            link = endpoint.relays.get(relay_id)
            if (link is None or link.closed.is_set()) and relay_id not in self._attaching \
                    and self._relay_retry.get(relay_id, Retry()).due(now):
                task = asyncio.get_running_loop().create_task(self._attach(relay_id, addrs))
                self._attaching[relay_id] = task
                task.add_done_callback(functools.partial(self._attached_or_not, relay_id))
        if endpoint.relays:
            for node in sorted(self.directory.dial):
                if self._connected(node) is None and node not in self._connecting and self.eager(node) \
                        and self._peer_retry.get(node, Retry()).due(now):
                    self._connect_task(node)
        if now >= self._next_enforce:
            self._next_enforce = now + ENFORCE_EVERY_S
            endpoint.enforce()
        if now >= self._next_keepalive:
            self._next_keepalive = now + self.idle_timeout_s / 3
            self._keepalive(endpoint)
        self._account(endpoint)
        shape = (frozenset(endpoint.relays), frozenset(n for n in endpoint.peers if self._connected(n)),
                 tuple(sorted(endpoint.reflexive.items())))
        if shape != self._last_shape:
            self._last_shape = shape
            self.changed.set()

    def _attached_or_not(self, relay_id: str, _task: asyncio.Task[None]) -> None:
        self._attaching.pop(relay_id, None)

    def _keepalive(self, endpoint: Endpoint) -> None:
        """A QUIC PING on every listed relay's link and every connection to an eager directory peer (RFC 9000
        §19.2): an idle link stays up; a connection nobody lists (an inbound one whose pair was dropped) idles out.
        An on-demand peer is pinged while a stream to it is open (a request whose answer takes longer than the idle
        timeout, a CopyObject of hundreds of MiB) and left to idle out once none is."""
        listed = set(self.directory.relays)
        for conn in {*(c for r, c in endpoint.relays.items() if r in listed),
                     *(c for n, c in endpoint.peers.items() if n in self.directory.peers
                       and (self.eager(n) or (isinstance(c, Peer) and c.streams_open)))}:
            if isinstance(conn, Peer) and not conn.closed.is_set():
                conn.quic.send_ping(0)
                conn.transmit()

    def _account(self, endpoint: Endpoint) -> None:
        """Punch attempts of the links that have candidates, relay bytes of the links that ended."""
        for node, link in list(self._links_seen.items()):
            if endpoint.links.get(node) is not link:
                self._relay_bytes_gone += link.bytes_in["relay"] + link.bytes_out["relay"]
                del self._links_seen[node]
        for node, link in endpoint.links.items():
            if self._links_seen.get(node) is not link:
                self._links_seen[node] = link
                self.counters.new_link(node)
            if self.direct and link.peer_key is not None and link.state.candidates \
                    and isinstance(link.state.path(), Relay):
                self.counters.punching(node)

    def _on_path(self, node: str, event: PathChanged) -> None:
        self.counters.path_changed(node, event)
        self.changed.set()

    # ---- ping and report -----------------------------------------------------------------------------------

    async def ping(self, node_id: str, count: int = 5, *, timeout_s: float = 10.0) -> OverlayPingResult:
        """`count` round trips to `node_id`'s echo service over one stream (connecting first if needed): the RTTs
        in ms and the path at the end. A failure is the result's `error`, never an exception."""
        if not 1 <= count <= MAX_PING_COUNT:
            raise ValueError(f"count: 1-{MAX_PING_COUNT}, got {count}")
        loop = asyncio.get_running_loop()
        started = loop.time()
        connect_ms: float | None = None
        rtts: list[float] = []
        try:
            async with asyncio.timeout(timeout_s):
                await self._connect_until(node_id)
                connect_ms = (loop.time() - started) * 1000
                reader, writer = await self.open_stream(node_id, ECHO)
                for seq in range(count):
                    message = struct.pack("!QQ", seq, int(loop.time() * 1e6))
                    sent = loop.time()
                    writer.write(message)
                    await writer.drain()
                    if await reader.readexactly(len(message)) != message:
                        raise ConnectionLost("the echo answered other bytes than were sent")
                    rtts.append(round((loop.time() - sent) * 1000, 3))
                writer.close()
        except (DataPlaneError, TimeoutError, asyncio.IncompleteReadError, OSError) as exc:
            error = f"timed out after {timeout_s:g}s" if isinstance(exc, TimeoutError) else str(exc)
            kind, relay, address = self._path_of(node_id)
            if kind is PathKind.CONNECTING:
                kind = PathKind.DOWN  # not reached within the ping's time
            return OverlayPingResult(peer=node_id, path=kind, relay=relay, address=address, rtts_ms=tuple(rtts),
                                     connect_ms=_ms(connect_ms), error=error[:512] or type(exc).__name__)
        kind, relay, address = self._path_of(node_id)
        return OverlayPingResult(peer=node_id, path=kind, relay=relay, address=address, rtts_ms=tuple(rtts),
                                 connect_ms=_ms(connect_ms))

    async def _connect_until(self, node_id: str) -> Peer:
        """Connect, trying again after a failure that may pass (the peer not on the relay yet: its directory may
        arrive after ours) until the caller's timeout; a refusal ends it at once."""
        while True:
            try:
                return await self.connect(node_id)
            except (ConnectionLost, Unreachable) as exc:
                log.debug("overlay: %s not reached yet (%s); trying again", node_id, exc)
                await asyncio.sleep(self.retry.initial_s)

    def _path_of(self, node_id: str) -> tuple[PathKind, str, str]:
        endpoint = self._endpoint()
        peer = self._connected(node_id)
        link = endpoint.links.get(node_id)
        if peer is not None and link is not None:
            return classify(link.state.path(), peer_local_addresses(self.directory.peers.get(node_id)))
        if peer is not None:  # a connection straight to an address, without a relay (not made by the facade)
            addr = cast(Address, peer.addr)
            return PathKind.DIRECT, "", format_hostport(addr) if isinstance(addr[0], str) else ""
        return (PathKind.CONNECTING if node_id in self._connecting else PathKind.DOWN), "", ""

    def report(self, now: float) -> OverlayReport:
        """The overlay as it is now, as the wire's OverlayReport (clears `changed`)."""
        self.changed.clear()
        endpoint = self._endpoint()
        attached = sorted(r for r, link in endpoint.relays.items() if not link.closed.is_set())
        port = self.port
        candidates = [OverlayCandidate(CandidateKind.LOCAL, format_hostport((ip, port)))
                      for ip in dict.fromkeys(self.local_addresses())]
        candidates += [OverlayCandidate(CandidateKind.REFLEXIVE, format_hostport(addr), via=relay)
                       for relay, addr in sorted(endpoint.reflexive.items()) if relay in attached]
        candidates += [OverlayCandidate(CandidateKind.RELAY, format_hostport(self._relay_addr[relay]), via=relay)
                       for relay in attached if relay in self._relay_addr]
        # a peer reached on demand is reported while connected: unconnected, it is idle, not down
        nodes = sorted({n for n in self.directory.peers if self.eager(n)}
                       | {n for n in endpoint.peers if self._connected(n)})
        relay_bytes = self._relay_bytes_gone + sum(link.bytes_in["relay"] + link.bytes_out["relay"]
                                                   for link in endpoint.links.values())
        return OverlayReport(
            node_id=self.identity, ts=now, enabled=True, port=port, candidates=tuple(candidates[:32]),
            relays=tuple(attached[:16]), peers=tuple(self._peer_path(n) for n in nodes[:1024]),
            punch_attempts=self.counters.attempts, punch_successes=self.counters.successes,
            fallbacks=self.counters.fallbacks, relay_bytes=relay_bytes)

    def _peer_path(self, node_id: str) -> PeerPath:
        endpoint = self._endpoint()
        kind, relay, address = self._path_of(node_id)
        peer, link = self._connected(node_id), endpoint.links.get(node_id)
        if peer is None or link is None:
            error = "" if kind is PathKind.CONNECTING else self._why_down(node_id)
            return PeerPath(node_id=node_id, path=kind, last_error=error[:512])
        rtt_s = link.state.rtt_s()
        if rtt_s is None and peer.quic._loss._rtt_initialized:  # relayed: QUIC's own smoothed RTT (RFC 9002 §5.3)
            rtt_s = peer.quic._loss._rtt_smoothed
        return PeerPath(node_id=node_id, path=kind, relay=relay, address=address, rtt_ms=_ms(rtt_s and rtt_s * 1000),
                        bytes_out=sum(link.bytes_out.values()), bytes_in=sum(link.bytes_in.values()),
                        since=link.since, changes=self.counters.changes.get(node_id, 0))

    def _why_down(self, node_id: str) -> str:
        retry = self._peer_retry.get(node_id)
        if retry is not None:
            return retry.last_error or "connection failed"
        entry = self.directory.peers.get(node_id)
        if entry is not None and not entry.dial:
            return f"waiting for {node_id} to connect (it dials this node)"
        if not self._endpoint().relays:
            return "no relay link yet"
        return "not connected yet"

    def _endpoint(self) -> Endpoint:
        if self.endpoint is None:
            raise OverlayUnavailable("the overlay is not started")
        return self.endpoint


def _ms(value: float | None) -> float | None:
    return None if value is None else min(max(round(value, 3), 0.0), 600_000.0)


__all__ = ["DEFAULT_PORT", "ECHO", "MAX_DATAGRAM", "DatagramHandler", "Overlay", "OverlayUnavailable",
           "ServiceHandler", "ServiceRefused"]

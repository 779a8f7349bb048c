"""A node's overlay endpoint (adapter): one UDP socket for every overlay connection, relay links, probes, and the
path each peer's packets take.

- **Demultiplexing.** A datagram whose first byte has QUIC's fixed bit goes to the connection that owns its
  destination connection ID (RFC 9000 §5.2), as aioquic's own server does; anything else is one of our probes
  (dataplane.frames). An unknown Initial starts a server-side connection.
- **Relays.** `attach_relay()` opens an authenticated QUIC connection to a relay — or, when no UDP gets through,
  a TCP+TLS link to the same port (dataplane.relay_tls); peer packets then travel inside its DATAGRAM frames (or
  length-prefixed frames) as FORWARD with the destination or source node id, ciphertext only: the relay never holds
  a key of a peer-to-peer connection. The relay also says which address it sees us at (OBSERVED).
- **Paths.** A connection to a node starts through a relay at once (`connect(node, via=relay)`). Its QuicConnection
  is given a *stable virtual address* for the peer, so aioquic never sees the path change and open streams never
  break; every outgoing packet goes where the peer's `PathState` (dataplane.paths) says: the relay, or a direct
  address found by punching. After the handshake the two sides swap probe keys and candidates inside their
  connection (DATAGRAM frames), and authenticated probes on the shared socket find and hold direct paths.
- **Birthday punching** (dataplane.birthday decides when and how much): when ordinary punching finds no direct path
  for a while, the endpoint opens many *extra sockets*, each probing the peer's reflexive addresses, and sprays probes
  from the main socket at random ports of the peer's public IP. Extra sockets feed the same demultiplexer (QUIC of
  the link's own connections and its probes only; everything validated as on the main socket). A probe heard on an
  extra socket binds that socket to the sender (dataplane.paths); a path proven through it is `Direct(via_socket=)`,
  and the peer's traffic then leaves through that socket. It is kept while a path uses it; the others close when the
  attempt ends, and it closes when its path dies.
- **Judging.** Every connection's peer is checked with dataplane.identity (relays must be relay certificates,
  everyone else node certificates); `enforce()` re-checks live ones, so a revocation cuts them.

Decisions live in the cores (identity, paths, frames); this module moves bytes and timers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, Self, cast

from aioquic.buffer import Buffer  # type: ignore[attr-defined]
from aioquic.quic.connection import NetworkAddress
from aioquic.quic.packet import QuicPacketType, pull_quic_header
from cryptography import x509

from dataplane import frames, relay_tls
from dataplane.birthday import Birthday, BirthdayConfig, CloseSockets, OpenSockets, Spray
from dataplane.errors import Unreachable
from dataplane.frames import FrameError
from dataplane.identity import PeerIdentity, Reason, Refused, Revocations, check_peer
from dataplane.paths import Candidate, CandidateKind, Direct, PathChanged, PathState, Relay, SendProbe, Timers
from dataplane.quic import (
    CID_LENGTH,
    PEER_DATAGRAM_SIZE,
    REFUSED,
    RELAY_DATAGRAM_SIZE,
    NodeCredential,
    Peer,
    StreamHandler,
    _MutualConnection,
)

log = logging.getLogger(__name__)

RELAY_ROLE = "relay"
MAX_HANDSHAKES = 256  # server-side connections not yet authenticated: past this, new Initials are dropped
DEFAULT_BIRTHDAY = BirthdayConfig()
MAX_READS = 64  # datagrams read from an extra socket per readiness callback (the loop gets its turn back)
Address = tuple[str, int]


class RelayLink(Protocol):
    """A link to a relay: a QUIC connection (dataplane.quic.Peer) or a TCP/TLS channel (dataplane.relay_tls)."""

    identity: PeerIdentity | None
    closed: asyncio.Event

    @property
    def node_id(self) -> str: ...

    def send_datagram(self, data: bytes) -> bool: ...

    def close(self, reason: str = "", *, error_code: int = 0) -> None: ...

    def stop_timer(self) -> None: ...


@dataclass
class Link:
    """What this endpoint knows about one peer node reached through the overlay."""

    node_id: str
    state: PathState
    my_key: bytes = field(default_factory=lambda: os.urandom(frames.KEY_LEN))
    peer_key: bytes | None = None
    bytes_out: dict[str, int] = field(default_factory=lambda: {"direct": 0, "relay": 0})
    bytes_in: dict[str, int] = field(default_factory=lambda: {"direct": 0, "relay": 0})
    since: float = 0.0  # when the current path was chosen
    last_probe: int = 0  # the highest probe txid accepted from the peer: an older or repeated one is a replay
    birthday: Birthday | None = None  # birthday punching (None: off)
    sockets: dict[int, ExtraSocket] = field(default_factory=dict)  # extra sockets of this link, by id


class ExtraSocket:
    """One extra UDP socket of a link (birthday punching), read by the event loop into the endpoint's demultiplexer.
    A plain non-blocking socket: hundreds are opened at once, synchronously, from the path loop."""

    def __init__(self, endpoint: Endpoint, sid: int, link: Link, host: str) -> None:
        self.endpoint, self.sid, self.link = endpoint, sid, link
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.setblocking(False)
            self.sock.bind((host, 0))
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(self.sock.fileno(), self._readable)
        except BaseException:
            self.sock.close()
            raise

    def _readable(self) -> None:
        for _ in range(MAX_READS):
            try:
                data, addr = self.sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # an ICMP error for a probe that went nowhere: the probe's timers handle it
                log.debug("overlay extra socket %d: %s", self.sid, exc)
                return
            self.endpoint.received(data, addr, via=self)

    def sendto(self, data: bytes, addr: Address) -> None:
        with contextlib.suppress(OSError):  # a full buffer or an unreachable address: like any lost datagram
            self.sock.sendto(data, addr)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()


class Endpoint(asyncio.DatagramProtocol):
    """One UDP socket, every overlay connection of this node. Open with `await Endpoint.open(...)`."""

    accepts_datagram_size = PEER_DATAGRAM_SIZE

    def __init__(self, credential: NodeCredential, *, clock: Callable[[], float],
                 on_stream: StreamHandler | None = None, revocations: Callable[[], Revocations] = Revocations,
                 local_addresses: Callable[[], list[str]] = lambda: [], idle_timeout_s: float = 30.0,
                 timers: Timers | None = None, on_path: Callable[[str, PathChanged], None] | None = None,
                 direct: bool = True, on_datagram: Callable[[str, str, bytes], None] | None = None,
                 birthday: BirthdayConfig | None = DEFAULT_BIRTHDAY, rng: random.Random | None = None) -> None:
        self.credential = credential
        self.clock = clock
        self.revocations = revocations
        self.local_addresses = local_addresses
        self.idle_timeout_s = idle_timeout_s
        self.timers = timers or Timers()
        self.direct = direct  # False: keep every peer on the relay (no candidates offered, no punching)
        self._on_stream = on_stream
        self._on_path = on_path
        self._on_datagram = on_datagram  # (node id, service, payload) of an application datagram from a peer
        self.birthday = birthday  # None: no birthday punching
        self._rng = rng or random.Random()
        self._extra: dict[int, ExtraSocket] = {}  # every link's extra sockets, by id
        self._extra_ids = 0
        # what this endpoint accepts: peer connections (whose packets must fit a relay's DATAGRAM frame), or for a
        # relay, node connections (larger packets: they carry the peers' packets)
        self._server_config = credential.configuration(is_client=False, idle_timeout_s=idle_timeout_s,
                                                       max_datagram_size=self.accepts_datagram_size)
        self._transport: asyncio.DatagramTransport | None = None
        self._cids: dict[bytes, Peer] = {}
        self._expect: dict[Peer, tuple[str | None, tuple[str, ...]]] = {}  # peer -> (identity, roles)
        self._tasks: set[asyncio.Task[None]] = set()
        self._links_by_peer: dict[Peer, Link] = {}
        self._routes: dict[Peer, str] = {}  # a relayed caller not yet authenticated -> the relay its answers take
        self._wake = asyncio.Event()
        self.peers: dict[str, Peer] = {}  # authenticated node connections, by node id (the newest wins)
        self.links: dict[str, Link] = {}  # by node id
        self.relays: dict[str, RelayLink] = {}  # authenticated relay links (QUIC or TCP/TLS), by relay id
        self._tls_contexts: relay_tls.TlsContexts | None = None
        self.reflexive: dict[str, Address] = {}  # our address as each relay sees it
        self.dropped = 0  # malformed, unauthenticated or unroutable datagrams

    @classmethod
    async def open(cls, credential: NodeCredential, host: str = "0.0.0.0", port: int = 0,
                   **kwargs: Any) -> Self:
        loop = asyncio.get_running_loop()
        endpoint = cls(credential, **kwargs)
        await loop.create_datagram_endpoint(lambda: endpoint, local_addr=(host, port))
        endpoint._spawn(endpoint._path_loop())
        return endpoint

    @property
    def identity(self) -> str:
        return self.credential.identity

    @property
    def address(self) -> Address:
        assert self._transport is not None
        return cast(Address, self._transport.get_extra_info("sockname")[:2])

    # ---- opening connections ----------------------------------------------------------------------------------

    async def attach_relay(self, addr: Address, *, relay_id: str, udp_timeout_s: float = 3.0,
                           tcp: bool = True) -> RelayLink:
        """Connect to a relay (it must present the relay certificate `relay_id`): over QUIC, or when that gets no
        answer within `udp_timeout_s` (a network that blocks UDP), over TCP+TLS to the same port."""
        link: RelayLink
        try:
            link = await self._dial(addr, addr, expect=relay_id, roles=(RELAY_ROLE,), timeout_s=udp_timeout_s,
                                    datagram_size=RELAY_DATAGRAM_SIZE)
        except Unreachable:
            if not tcp:
                raise
            log.warning("overlay: no UDP answer from relay %s at %s:%d; using TCP/TLS", relay_id, *addr)
            link = await relay_tls.dial(addr, self._tls(), judge=self._judge_chain, relay_id=relay_id,
                                        on_datagram=self._relay_datagram, on_closed=self._relay_closed)
        self.relays[relay_id] = link
        return link

    def set_credential(self, credential: NodeCredential) -> None:
        """Use `credential` (a renewed certificate, the same identity) for every connection made from now on, both
        ways; connections already made keep the certificate they were made with until they end."""
        if credential.identity != self.credential.identity:
            raise ValueError(f"a credential for {credential.identity!r}, this endpoint is {self.identity!r}")
        self.credential = credential
        self._server_config = credential.configuration(is_client=False, idle_timeout_s=self.idle_timeout_s,
                                                       max_datagram_size=self.accepts_datagram_size)
        self._tls_contexts = None

    def _tls(self) -> relay_tls.TlsContexts:
        if self._tls_contexts is None:
            self._tls_contexts = relay_tls.TlsContexts(self.credential)
        return self._tls_contexts

    def _judge_chain(self, chain: list[x509.Certificate], roles: tuple[str, ...]) -> PeerIdentity | Refused:
        return check_peer(chain, trust=self.credential.trust, now=self.clock(), roles=roles,
                          revoked=self.revocations())

    def _relay_closed(self, link: RelayLink) -> None:
        if link.identity is not None and self.relays.get(link.identity.identity) is link:
            del self.relays[link.identity.identity]

    async def connect(self, node_id: str, *, via: str | None = None, addr: Address | None = None,
                      timeout_s: float = 10.0) -> Peer:
        """A connection to node `node_id`: through relay `via` at first (upgrading to a direct path when punching
        finds one), or straight to `addr` when there is no relay. Raises PeerRefused, Unreachable."""
        if via is None:
            if addr is None:
                raise ValueError("connect needs a relay (via=) or an address (addr=)")
            return await self._dial(addr, addr, expect=node_id, roles=("node",), timeout_s=timeout_s)
        if via not in self.relays:
            raise Unreachable(f"relay {via} (not attached)", 0)
        vaddr = ("relay-peer", node_id)
        link = self._link(node_id, via)
        return await self._dial(vaddr, None, expect=node_id, roles=("node",), timeout_s=timeout_s, link=link)

    async def _dial(self, vaddr: Any, addr: Address | None, *, expect: str, roles: tuple[str, ...],
                    timeout_s: float, datagram_size: int = PEER_DATAGRAM_SIZE, link: Link | None = None) -> Peer:
        config = self.credential.configuration(is_client=True, idle_timeout_s=self.idle_timeout_s,
                                               max_datagram_size=datagram_size)
        peer = Peer(self, _MutualConnection(configuration=config), vaddr)
        self._expect[peer] = (expect, roles)
        if link is not None:
            self._links_by_peer[peer] = link
        for cid in peer.quic._host_cids:
            self._cids[cid.cid] = peer
        peer.quic.connect(vaddr, now=asyncio.get_running_loop().time())
        peer.transmit()
        try:
            async with asyncio.timeout(timeout_s):
                await peer.ready
        except TimeoutError:
            peer.close("handshake timed out")
            self.forget(peer)
            raise Unreachable(addr or f"{expect} via {link.state.relay if link else '?'}", timeout_s) from None
        return peer

    def _link(self, node_id: str, relay_id: str) -> Link:
        """The link to `node_id`, shared by every connection with it (made once; it keeps its first relay)."""
        link = self.links.get(node_id)
        if link is None:
            now = self.clock()
            link = Link(node_id, PathState(relay=relay_id, now=now, timers=self.timers), since=now)
            if self.birthday is not None:
                link.birthday = Birthday(self.birthday, self._rng)
            self.links[node_id] = link
        return link

    # ---- judging, enforcing, closing --------------------------------------------------------------------------

    def judge(self, peer: Peer) -> PeerIdentity | Refused:
        expect, roles = self._expect.get(peer, (None, ("node",)))
        return check_peer(peer.quic.peer_chain(), trust=self.credential.trust, now=self.clock(), expect=expect,
                          roles=roles, revoked=self.revocations())

    def _judge_link(self, link: RelayLink | Peer) -> PeerIdentity | Refused:
        if isinstance(link, relay_tls.TlsChannel):
            verdict = self._judge_chain(link.chain, link.roles)
            if not isinstance(verdict, Refused) and link.identity and verdict.identity != link.identity.identity:
                return Refused(Reason.WRONG_NODE, f"{verdict.identity} is not {link.identity.identity}")
            return verdict
        return self.judge(cast(Peer, link))

    def enforce(self) -> list[str]:
        """Judge every live connection again (after the revocations or the clock moved on): one that no longer
        passes is closed with the reason, at once. Returns the identities cut."""
        cut = set()
        live: set[RelayLink | Peer] = {p for p in (*self._cids.values(), *self.peers.values(), *self.relays.values())
                                       if p.identity is not None and not p.closed.is_set()}  # older ones too
        for peer in sorted(live, key=lambda p: p.node_id):
            verdict = self._judge_link(peer)
            if isinstance(verdict, Refused):
                log.warning("overlay: cut the connection to %s: %s", peer.node_id, verdict)
                peer.close(str(verdict), error_code=REFUSED)
                cut.add(peer.node_id)
        return sorted(cut)

    def close(self) -> None:
        """Close every connection (CONNECTION_CLOSE sent once), stop timers and tasks, release the socket."""
        for peer in {*self._cids.values(), *self.peers.values(), *self.relays.values()}:
            with contextlib.suppress(Exception):  # closing must not fail on a peer already gone
                peer.close("endpoint closed")
            peer.stop_timer()
        for extra in self._extra.values():
            extra.close()
        self._extra.clear()
        for task in self._tasks:
            task.cancel()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        for table in (self._cids, self._expect, self._links_by_peer, self._routes, self.peers, self.links,
                      self.relays):
            table.clear()

    # ---- the socket -------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: NetworkAddress) -> None:
        self.received(data, addr, via=None)

    def received(self, data: bytes, addr: NetworkAddress, *, via: ExtraSocket | None) -> None:
        """A datagram on the main socket (`via` None) or on one of a link's extra sockets, which carry only that
        link's connections and probes (no new connection starts there)."""
        if not frames.is_quic(data):
            self._probe_received(data, addr, via)
            return
        if via is None:
            peer = self._peer_for(data, addr, relayed_from=None)
        else:
            peer = self._cid_owner(data)
            if peer is not None and self._links_by_peer.get(peer) is not via.link:
                peer = None
            if peer is None:
                self.dropped += 1
        if peer is None:
            return
        link = self._links_by_peer.get(peer)
        if link is not None:
            link.bytes_in["direct"] += len(data)
        peer.receive(data, peer.addr if link is not None else addr, asyncio.get_running_loop().time())

    def error_received(self, exc: Exception) -> None:
        log.debug("overlay socket: %s", exc)  # ICMP errors for a path that went away: its timers handle it

    def _cid_owner(self, data: bytes) -> Peer | None:
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=CID_LENGTH)
        except ValueError:
            return None
        return self._cids.get(header.destination_cid)

    def _peer_for(self, data: bytes, addr: Any, *, relayed_from: tuple[str, str] | None) -> Peer | None:
        """The connection a QUIC packet belongs to; an Initial for no connection starts a server-side one."""
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=CID_LENGTH)
        except ValueError:
            self.dropped += 1
            return None
        peer = self._cids.get(header.destination_cid)
        if peer is not None:
            return peer
        if header.packet_type != QuicPacketType.INITIAL or len(data) < 1200 or self._handshakes() >= MAX_HANDSHAKES:
            self.dropped += 1
            return None
        quic = _MutualConnection(configuration=self._server_config,
                                 original_destination_connection_id=header.destination_cid)
        if relayed_from is not None:  # a node calling through a relay: a stable virtual address; its answers go
            node_id, relay_id = relayed_from  # back through that relay until it is authenticated and has a link
            addr = ("relay-peer", node_id)
            peer = Peer(self, quic, addr)
            self._routes[peer] = relay_id
            self._expect[peer] = (node_id, ("node",))  # the relay names the caller; its certificate must agree
        else:
            peer = Peer(self, quic, addr)
        self._cids[header.destination_cid] = peer
        for cid in quic._host_cids:
            self._cids[cid.cid] = peer
        return peer

    def _handshakes(self) -> int:
        return sum(1 for p in set(self._cids.values()) if p.identity is None and not p.quic._is_client)

    # ---- Host (dataplane.quic) --------------------------------------------------------------------------------

    def send(self, peer: Peer, data: bytes, addr: NetworkAddress) -> None:
        link = self._links_by_peer.get(peer)
        if link is None:
            via = self._routes.get(peer)
            if via is None:
                self._sendto(data, addr)
            elif (relay := self.relays.get(via)) is not None and (caller := self._expect[peer][0]) is not None:
                relay.send_datagram(frames.encode_forward(caller, data))
            return
        path = link.state.path()
        if isinstance(path, Direct):
            link.bytes_out["direct"] += len(data)
            self._sendto(data, path.addr, via=path.via_socket)
            return
        relay = self.relays.get(path.via)
        if relay is None or relay.closed.is_set():
            self.dropped += 1  # no way to the peer right now: QUIC's loss recovery resends when there is
            return
        link.bytes_out["relay"] += len(data)
        relay.send_datagram(frames.encode_forward(link.node_id, data))

    def cid_issued(self, peer: Peer, cid: bytes) -> None:
        self._cids[cid] = peer

    def cid_retired(self, cid: bytes) -> None:
        self._cids.pop(cid, None)

    def accepted(self, peer: Peer) -> None:
        assert peer.identity is not None
        if peer.identity.role == RELAY_ROLE:
            return
        self.peers[peer.identity.identity] = peer
        via = self._routes.pop(peer, None)
        if via is not None:  # an authenticated caller through a relay: now it gets a link (paths, probes)
            self._links_by_peer[peer] = self._link(peer.identity.identity, via)
        link = self._links_by_peer.get(peer)
        if link is not None:  # give the peer what it needs to find and check direct paths to us
            peer.send_datagram(frames.encode_probe_key(link.my_key))
            if self.direct:
                peer.send_datagram(frames.encode_candidates(self._my_candidates()))

    def serve_stream(self, peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._on_stream is None:
            writer.close()
            return
        self._spawn(self._on_stream(peer, reader, writer))

    def peer_datagram(self, peer: Peer, data: bytes) -> None:
        assert peer.identity is not None
        try:
            if peer.identity.role == RELAY_ROLE:
                self._relay_datagram(peer, data)
            else:
                self._node_datagram(peer, data)
        except FrameError as exc:
            self.dropped += 1
            log.debug("overlay: dropped a datagram from %s: %s", peer.identity.identity, exc)

    def forget(self, peer: Peer) -> None:
        for cid in [c for c, p in self._cids.items() if p is peer]:
            del self._cids[cid]
        self._expect.pop(peer, None)
        self._routes.pop(peer, None)
        peer.stop_timer()
        link = self._links_by_peer.pop(peer, None)
        if link is not None and link not in self._links_by_peer.values():  # its last connection: stop probing
            self.links.pop(link.node_id, None)
            for sid in list(link.sockets):
                self._close_extra(link, sid, self.clock())
        if peer.identity is not None:
            for table in (self.peers, self.relays):
                if table.get(peer.identity.identity) is peer:
                    del table[peer.identity.identity]

    # ---- datagrams inside connections -------------------------------------------------------------------------

    def _relay_datagram(self, relay: RelayLink, data: bytes) -> None:
        assert relay.identity is not None
        try:
            decoded = frames.decode_relay(data)
        except FrameError:
            self.dropped += 1
            return
        if decoded[0] == frames.OBSERVED:
            seen = cast(Address, decoded[1])
            if self.reflexive.get(relay.identity.identity) != seen:
                self.reflexive[relay.identity.identity] = seen
                for peer in self.peers.values():  # our NAT mapping moved: tell the peers we talk to
                    if peer in self._links_by_peer:
                        peer.send_datagram(frames.encode_candidates(self._my_candidates()))
            return
        kind, node_id, packet = cast(tuple[int, str, bytes], decoded)
        if kind == frames.NO_ROUTE:
            log.info("overlay: relay %s has no route to %s", relay.identity.identity, node_id)
            return
        target = self._peer_for(packet, None, relayed_from=(node_id, relay.identity.identity))
        if target is None:
            return
        if self._expect.get(target, (None,))[0] != node_id and target.node_id != node_id:
            self.dropped += 1  # a relay may not speak for another node's connection
            return
        link = self._links_by_peer.get(target)
        if link is not None:
            link.bytes_in["relay"] += len(packet)
        target.receive(packet, target.addr, asyncio.get_running_loop().time())

    def _node_datagram(self, peer: Peer, data: bytes) -> None:
        if data[:1] == bytes([frames.APP]):  # an application's datagram: for the overlay's datagram handlers
            service, payload = frames.decode_app(data)
            if self._on_datagram is not None:
                try:
                    self._on_datagram(peer.node_id, service, payload)
                except Exception:
                    log.exception("overlay: the datagram handler failed")
            return
        link = self._links_by_peer.get(peer)
        if link is None:
            return
        decoded = frames.decode_peer(data)
        if decoded[0] == frames.PROBE_KEY:
            link.peer_key = cast(bytes, decoded[1])
        else:
            kinds = {0: CandidateKind.LAN, 1: CandidateKind.REFLEXIVE}
            found = cast(list[tuple[int, Address]], decoded[1])
            link.state.set_candidates(tuple(Candidate(addr, kinds[k]) for k, addr in found), self.clock())
            self._wake.set()

    def _my_candidates(self) -> list[tuple[int, Address]]:
        port = self.address[1]
        lan = [(0, (ip, port)) for ip in self.local_addresses()]
        reflexive = [(1, addr) for addr in self.reflexive.values() if (0, addr) not in lan]
        return list(dict.fromkeys(lan + reflexive))

    # ---- probes -----------------------------------------------------------------------------------------------

    def _probe_received(self, data: bytes, addr: NetworkAddress, via: ExtraSocket | None = None) -> None:
        try:
            probe = frames.decode_probe(data)
        except FrameError:
            self.dropped += 1
            return
        link = self.links.get(probe.sender)
        if link is None or link.peer_key is None or not frames.probe_is_authentic(probe, link.peer_key) \
                or (via is not None and via.link is not link):
            self.dropped += 1  # unknown sender, a forgery, or another link's socket: no answer, nothing learned
            return
        now = self.clock()
        sid = None if via is None else via.sid
        if probe.ack:
            link.state.answered(probe.txid, now, from_addr=cast(Address, tuple(addr[:2])), via_socket=sid)
        elif probe.txid > link.last_probe:  # the peer's txids only grow: an old or repeated probe is a replay
            link.last_probe = probe.txid
            self._sendto(frames.encode_probe(link.my_key, ack=True, txid=probe.txid, sender=self.identity), addr,
                         via=sid)
            link.state.heard(cast(Address, tuple(addr[:2])), now, via_socket=sid)
            self._wake.set()  # a socket bound to a new address: probe it now
        else:
            self.dropped += 1
            return
        self._path_events(link)

    async def _path_loop(self) -> None:
        """Drive every link's path core: probes and heartbeats out, silent paths expired, events reported. A failure
        in one round is logged and the loop goes on: without it no path would ever fall back."""
        while True:
            deadline = self.clock() + 1.0
            try:
                deadline = min(deadline, self._drive_paths())
            except Exception:
                log.exception("overlay: path round failed; going on")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(deadline - self.clock(), 0.01)):
                    await self._wake.wait()

    def _drive_paths(self) -> float:
        now = self.clock()
        deadline = now + 1.0
        for link in list(self.links.values()):
            if link.peer_key is None or not self.direct:
                continue
            for probe in link.state.poll(now):
                self._send_probe(link, probe)
            self._path_events(link)
            deadline = min(deadline, link.state.next_deadline(), self._drive_birthday(link, now))
        return deadline

    def _send_probe(self, link: Link, probe: SendProbe) -> None:
        self._sendto(frames.encode_probe(link.my_key, ack=False, txid=probe.txid, sender=self.identity), probe.addr,
                     via=probe.via_socket)

    # ---- birthday punching ------------------------------------------------------------------------------------

    def _drive_birthday(self, link: Link, now: float) -> float:
        """Run the link's birthday core; returns when it wants to run again."""
        if link.birthday is None:
            return float("inf")
        busy = any(other.birthday is not None and other.birthday.running for other in self.links.values()
                   if other is not link)
        eligible = bool(self.reflexive) and bool(self._peer_reflexive(link)) and not busy
        for action in link.birthday.poll(now, direct=isinstance(link.state.path(), Direct), eligible=eligible):
            match action:
                case OpenSockets(count=count):
                    self._open_extra(link, count, now)
                case Spray(ports=ports):
                    ips = dict.fromkeys(addr[0] for addr in self._peer_reflexive(link))
                    for ip in list(ips)[:1]:  # the peer's public IP (several relays see the same one)
                        for port in ports:
                            self._send_probe(link, link.state.probe((ip, port), now))
                case CloseSockets(found=found):
                    log.info("overlay: %s: birthday punching %s (%d sockets)", link.node_id,
                             "found a path" if found else "found nothing", len(link.sockets))
                    self._close_unused(link, now)
        return link.birthday.next_deadline()

    def _peer_reflexive(self, link: Link) -> list[Address]:
        """The peer's reflexive addresses worth spraying at (never a loopback one: that is this machine)."""
        return [c.addr for c in link.state.candidates
                if c.kind is CandidateKind.REFLEXIVE and not c.addr[0].startswith("127.") and c.addr[0] != "::1"][:4]

    def _open_extra(self, link: Link, count: int, now: float) -> None:
        host = self.address[0]
        targets = self._peer_reflexive(link)
        for _ in range(count):
            self._extra_ids += 1
            try:
                extra = ExtraSocket(self, self._extra_ids, link, host)
            except OSError as exc:  # out of descriptors or ports: go on with what we have
                log.warning("overlay: %s: opened %d of %d extra sockets: %s", link.node_id, len(link.sockets),
                            count, exc)
                break
            self._extra[extra.sid] = link.sockets[extra.sid] = extra
            for addr in targets:
                self._send_probe(link, link.state.probe(addr, now, via_socket=extra.sid))
        log.info("overlay: %s: birthday punching: %d extra sockets towards %s", link.node_id, len(link.sockets),
                 targets)

    def _close_unused(self, link: Link, now: float) -> None:
        """Close the link's extra sockets no path goes through (all but at most one)."""
        path = link.state.path()
        keep = path.via_socket if isinstance(path, Direct) else None
        for sid in [s for s in link.sockets if s != keep]:
            self._close_extra(link, sid, now)

    def _close_extra(self, link: Link, sid: int, now: float) -> None:
        extra = link.sockets.pop(sid, None)
        self._extra.pop(sid, None)
        if extra is not None:
            extra.close()
            link.state.release(sid, now)

    def _path_events(self, link: Link) -> None:
        for event in link.state.events():
            if isinstance(event.old, Direct) and event.old.via_socket is not None \
                    and not (link.birthday is not None and link.birthday.running) \
                    and getattr(event.new, "via_socket", None) != event.old.via_socket:
                self._close_extra(link, event.old.via_socket, self.clock())  # its path died: so does its socket
            link.since = self.clock()
            log.info("overlay: %s: %s -> %s (%s)", link.node_id, event.old, event.new, event.reason)
            if self._on_path is not None:
                try:
                    self._on_path(link.node_id, event)
                except Exception:
                    log.exception("overlay: the path-change callback failed")
            if isinstance(event.new, Relay):
                self._wake.set()  # punch again on schedule

    # ---- plumbing ---------------------------------------------------------------------------------------------

    def _sendto(self, data: bytes, addr: Any, *, via: int | None = None) -> None:
        if not (isinstance(addr, tuple) and isinstance(addr[0], str)):
            return
        if via is not None:
            extra = self._extra.get(via)
            if extra is not None:
                extra.sendto(data, addr)
        elif self._transport is not None:
            self._transport.sendto(data, addr)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

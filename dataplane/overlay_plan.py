"""What the overlay facade decides (pure core: values and `now` in, values out; dataplane.overlay carries it out).

- **The directory**, read once: relay addresses parsed (`host:port`, `[v6]:port`), revoked serials (hex) turned into
  numbers, peer entries by node id. Anything malformed is left out and named in `problems`, never an exception
  (the directory comes from the control plane: outside input).
- **Retries** (`Retry`, `RetryPolicy`): a relay link or a peer connection that failed or dropped is tried again after
  a bounded exponential back-off (0.5 s doubling to 30 s); a success resets it.
- **Which relay** carries a connection to a peer: the first relay this node holds that the peer holds too (in the
  directory's order), else any relay this node holds (the peer may attach to it later; the relay says NO_ROUTE
  meanwhile and the connect times out and is retried).
- **What a path is called** on the wire (`classify`): `lan` for a direct path to one of the peer's own-network
  addresses, `direct` for any other direct path (punched), `relayed` (with the relay) otherwise.
- **Counters** (`PathCounters`): punch attempts, successes and fallbacks, from the path core's events.
- **Service names** on streams and datagrams: the wire's identifier syntax; a stream opens with a one-byte length
  and the name, and the accepting side answers one byte (accepted, or refused followed by the reason).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

from broker.wire import CandidateKind as WireCandidateKind
from broker.wire import PathKind, PeerEntry, RelayInfo, valid_id
from dataplane.paths import CandidateKind, Direct, Path, PathChanged, Relay

Address = tuple[str, int]
DEFAULT_PORT = 41641
MAX_SERVICE = 63
ACCEPTED, REFUSED = 0x00, 0x01
MAX_REASON = 200  # bytes of a refusal's reason on a stream


# ---- retries ------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RetryPolicy:
    initial_s: float = 0.5
    max_s: float = 30.0
    factor: float = 2.0


@dataclass(frozen=True, slots=True)
class Retry:
    """When a relay link or a peer connection may be tried again, and why the last try failed."""

    failures: int = 0
    not_before: float = 0.0
    last_error: str = ""

    def due(self, now: float) -> bool:
        return now >= self.not_before

    def failed(self, now: float, error: str, policy: RetryPolicy) -> Retry:
        delay = min(policy.max_s, policy.initial_s * policy.factor ** self.failures)
        return Retry(self.failures + 1, now + delay, error)


# ---- the directory ------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Directory:
    """A peer directory as the facade uses it: relay addresses in order, peers by id, revoked serials."""

    relays: dict[str, tuple[Address, ...]] = field(default_factory=dict)
    peers: dict[str, PeerEntry] = field(default_factory=dict)
    revoked: frozenset[int] = frozenset()
    problems: tuple[str, ...] = ()

    @property
    def dial(self) -> frozenset[str]:
        """The peers this node opens connections to (the other side of each pair accepts)."""
        return frozenset(node for node, entry in self.peers.items() if entry.dial)


def parse_hostport(text: str) -> Address | None:
    """`host:port` or `[v6]:port` -> (host, port); None when it is neither (or the port is out of range)."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
        if ":" in host:
            return None  # an IPv6 address must be bracketed
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def format_hostport(addr: Address) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def read_directory(relays: Iterable[RelayInfo], peers: Iterable[PeerEntry], revoked: Iterable[str],
                   *, me: str) -> Directory:
    problems: list[str] = []
    by_relay: dict[str, tuple[Address, ...]] = {}
    for info in relays:
        addrs = []
        for text in info.addresses:
            addr = parse_hostport(text)
            if addr is None:
                problems.append(f"relay {info.relay_id}: address {text!r} is not HOST:PORT")
            else:
                addrs.append(addr)
        if addrs:
            by_relay[info.relay_id] = tuple(addrs)
        else:
            problems.append(f"relay {info.relay_id}: no usable address")
    by_peer = {}
    for entry in peers:
        if entry.node_id == me:
            problems.append("the directory lists this node as its own peer")
        else:
            by_peer[entry.node_id] = entry
    serials = set()
    for text in revoked:
        try:
            serials.add(int(text, 16))
        except ValueError:
            problems.append(f"revoked serial {text[:40]!r} is not hexadecimal")
    return Directory(by_relay, by_peer, frozenset(serials), tuple(problems))


def removed_peers(before: Directory, after: Directory) -> frozenset[str]:
    """Peers the previous directory listed and this one does not: their connections are closed."""
    return frozenset(before.peers) - frozenset(after.peers)


def choose_relay(held: Collection[str], peer: PeerEntry | None, order: Sequence[str]) -> str | None:
    """The relay for a connection to `peer`: one both sides hold (in `order`: the directory's), else any held."""
    ranked = [r for r in order if r in held] + sorted(r for r in held if r not in order)
    if peer is not None:
        shared = [r for r in ranked if r in peer.relays]
        if shared:
            return shared[0]
    return ranked[0] if ranked else None


# ---- paths --------------------------------------------------------------------------------------------------

def peer_local_addresses(entry: PeerEntry | None) -> frozenset[Address]:
    """The peer's own-network addresses, as its directory entry lists them."""
    if entry is None:
        return frozenset()
    found = (parse_hostport(c.address) for c in entry.candidates if c.kind is WireCandidateKind.LOCAL)
    return frozenset(a for a in found if a is not None)


def classify(path: Path, local: Collection[Address] = ()) -> tuple[PathKind, str, str]:
    """(path kind, relay id, direct address) of a connected peer's path."""
    match path:
        case Direct(addr=addr, kind=kind):
            lan = kind is CandidateKind.LAN or addr in local
            return (PathKind.LAN if lan else PathKind.DIRECT), "", format_hostport(addr)
        case Relay(via=via):
            return PathKind.RELAYED, via, ""
    raise AssertionError(f"unknown path {path!r}")  # pragma: no cover - Path is a closed union


@dataclass
class PathCounters:
    """Punch attempts, successes and fallbacks since the start, and path changes per peer.

    An attempt is one round of punching towards a peer: counted once per connection's link that has direct
    candidates while on the relay, and again after each fall back to the relay (punching starts over); a success
    found before anyone looked counts its attempt too. A success is a move from the relay to a direct path; a
    fallback the move back."""

    attempts: int = 0
    successes: int = 0
    fallbacks: int = 0
    changes: dict[str, int] = field(default_factory=dict)
    _round: dict[str, int] = field(default_factory=dict)  # node -> punching round (a new link, a fallback)
    _counted: dict[str, int] = field(default_factory=dict)  # node -> the round already counted as an attempt

    def new_link(self, node: str) -> None:
        self._round[node] = self._round.get(node, 0) + 1

    def punching(self, node: str) -> None:
        """The link to `node` has direct candidates to try and is on the relay."""
        if self._counted.get(node) != self._round.get(node, 0):
            self._counted[node] = self._round.get(node, 0)
            self.attempts += 1

    def path_changed(self, node: str, event: PathChanged) -> None:
        self.changes[node] = self.changes.get(node, 0) + 1
        if isinstance(event.old, Relay) and isinstance(event.new, Direct):
            self.punching(node)
            self.successes += 1
        elif isinstance(event.old, Direct) and isinstance(event.new, Relay):
            self.fallbacks += 1
            self._round[node] = self._round.get(node, 0) + 1

    def forget(self, node: str) -> None:
        for table in (self.changes, self._round, self._counted):
            table.pop(node, None)


# ---- services -----------------------------------------------------------------------------------------------

def service_problem(name: str) -> str | None:
    """Why `name` cannot be a service name (None: it can)."""
    if not valid_id(name) or len(name.encode()) > MAX_SERVICE:
        return f"service name {name[:80]!r}: 1-{MAX_SERVICE} letters, digits, '.', '_', '-'"
    return None


def service_header(name: str) -> bytes:
    """What opens a stream: the service name, one length byte first. Raises ValueError for a bad name."""
    problem = service_problem(name)
    if problem is not None:
        raise ValueError(problem)
    raw = name.encode()
    return bytes([len(raw)]) + raw


def refusal(reason: str) -> bytes:
    return bytes([REFUSED]) + reason.encode()[:MAX_REASON]

"""The overlay as the coordinator keeps it (pure core): which nodes must reach which, what each node reported of its
overlay, the peer directory each node is sent, and what changed between two reports.

Theory of operation.
- **Wanted pairs.** Two nodes need a connection when something asks for one: `cloudless overlay connect A B`
  (kept, in the store, until `disconnect`), or a probe like `overlay ping` (kept for `PROBE_PAIR_S` after it);
  later data-plane features (services, objects, images) add their own. A pair is unordered; exactly one side
  dials (`dial_side`): a member a coordinator runs (`s3@<id>`), else the lexically smaller id; the other side when
  only it has the overlay on.
- **Reports.** Each node's last `OverlayReport` (wire) says whether it runs the overlay, its candidates (local,
  reflexive per relay, relay), the relays it holds links to and its path to every peer.
- **Directories.** A node's `PeerDirectory` lists the relays every node should hold a link to (from the
  coordinator's settings), its wanted peers with their candidates and relays, and the revoked certificate serials.
  A peer without the overlay is left out (the pair is reported as such, not dialled for nothing).
- **NAT class.** From its candidates alone a node is `public` (a relay sees it at its own address), `nat` (one
  mapping for every relay: endpoint-independent), `nat-hard` (a different mapping per relay: port-randomising),
  `nat-unknown` (a single relay cannot tell), `udp-blocked` (it reaches relays over TCP only: no reflexive
  address) or `no-relay`. The metrics count outcomes per NAT pair with it.
- **Changes.** `path_changes(before, after)` lists each peer whose path kind or relay changed, as events: an
  upgrade (relayed -> direct/lan) is Normal, a fallback or a loss is a Warning.

Nothing here does I/O or reads a clock: `now` is passed in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

from broker.wire import CandidateKind, OverlayReport, PathKind, PeerEntry, PeerPath, RelayInfo, is_service_member

PROBE_PAIR_S = 600.0  # a pair wanted only by a probe (overlay ping) is kept this long after it
MAX_PEERS_PER_NODE = 1024  # what one PeerDirectory carries (wire cap)
MAX_REVOKED = 2048  # revoked serials carried (wire cap): the newest are kept
DIRECT_PATHS = (PathKind.LAN, PathKind.DIRECT)

Pair = tuple[str, str]


def pair(a: str, b: str) -> Pair:
    """The unordered pair as a key: (smaller, larger)."""
    if a == b:
        raise ValueError(f"a node cannot be its own peer ({a})")
    return (a, b) if a < b else (b, a)


@dataclass(frozen=True, slots=True)
class Want:
    """Why a pair is wanted: `until` None is kept until undone (connect), else a time (a probe)."""

    until: float | None
    why: str = ""


@dataclass(frozen=True, slots=True)
class PathEvent:
    node_id: str
    peer: str
    old: str  # "" when the peer is new in the report
    new: str  # "" when the peer left the report
    warning: bool
    message: str


@dataclass
class OverlayBook:
    """The coordinator's overlay state. `relays` come from its settings; the rest from the store and the nodes."""

    relays: tuple[RelayInfo, ...] = ()
    reports: dict[str, OverlayReport] = field(default_factory=dict)
    wants: dict[Pair, Want] = field(default_factory=dict)
    revoked: tuple[str, ...] = ()  # hex serials, oldest first
    # nodes that count as present (online, not revoked); None: everyone reported (tests of the book alone)
    present: Callable[[str], bool] | None = None
    # pairs other features need this round (services: a node and the nodes holding its services' endpoints), set
    # whole by the engine each round; never stored (they follow from the cluster)
    derived: dict[Pair, str] = field(default_factory=dict)
    # members served in-process by this coordinator (the S3 gateway "s3@<id>"): present while registered, fed
    # their directory directly (no PeerDirectory is published for them: they have no node topics)
    local: set[str] = field(default_factory=set)
    _peer_index: dict[str, set[str]] | None = field(default=None, repr=False, compare=False)  # from `wants`

    # ---- wanted pairs -------------------------------------------------------------------------------------------

    def want(self, a: str, b: str, *, until: float | None, why: str) -> bool:
        """Ask for a connection between a and b. A kept want is never shortened by a probe. True if it is new."""
        key = pair(a, b)
        old = self.wants.get(key)
        if old is not None and (old.until is None or (until is not None and until <= old.until)):
            return False
        self.wants[key] = Want(until, why)
        self._peer_index = None
        return old is None

    def unwant(self, a: str, b: str) -> bool:
        key = pair(a, b)
        if self.wants.pop(key, None) is None:
            return False
        self._peer_index = None
        return True

    def expire(self, now: float) -> list[Pair]:
        gone = [k for k, w in self.wants.items() if w.until is not None and w.until <= now]
        for k in gone:
            del self.wants[k]
        if gone:
            self._peer_index = None
        return gone

    def forget_node(self, node_id: str) -> None:
        """A deleted node: its report and every pair it was in."""
        self.reports.pop(node_id, None)
        for peer in self._index().get(node_id, ()):
            self.wants.pop(pair(node_id, peer), None)
            self.derived.pop(pair(node_id, peer), None)
        self._peer_index = None

    def peers_of(self, node_id: str) -> list[str]:
        return sorted(self._index().get(node_id, ()))

    def put_want(self, key: Pair, want: Want) -> None:
        """Put back a pair exactly as it was (undoing a change whose store write failed)."""
        self.wants[key] = want
        self._peer_index = None

    def set_wants(self, wants: dict[Pair, Want]) -> None:
        """Replace every pair (a reload from the store); other changes go through want/unwant/expire/forget_node."""
        self.wants = dict(wants)
        self._peer_index = None

    def set_derived(self, pairs: Mapping[Pair, str]) -> bool:
        """Replace the derived pairs (keys ordered as `pair` orders them). True if they changed."""
        if pairs == self.derived:
            return False
        self.derived = dict(pairs)
        self._peer_index = None
        return True

    def is_wanted(self, a: str, b: str) -> bool:
        key = pair(a, b)
        return key in self.wants or key in self.derived

    def nodes(self) -> set[str]:
        """Every node a directory may concern: those that reported, and those in a wanted pair."""
        return {*self.reports, *self._index()}

    def _index(self) -> dict[str, set[str]]:
        """node -> its wanted peers, built once after the pairs change (a round asks for every node's: not a scan of
        every pair each time). Every change of `wants` goes through the methods above, which drop it."""
        if self._peer_index is None:
            index: dict[str, set[str]] = {}
            for a, b in (*self.wants, *self.derived):
                index.setdefault(a, set()).add(b)
                index.setdefault(b, set()).add(a)
            self._peer_index = index
        return self._peer_index

    def enabled(self, node_id: str) -> bool:
        """The node runs the overlay now: its last report says so, and it is present (online, not revoked)."""
        report = self.reports.get(node_id)
        return report is not None and report.enabled and (
            self.present is None or node_id in self.local or self.present(node_id))

    def dial_side(self, a: str, b: str) -> str:
        """Which of the two opens the connection: a member a coordinator runs (`s3@<id>`: nodes reach it on demand,
        it dials the nodes it keeps links to), else the smaller id; either way the other one when only it has the
        overlay on."""
        first, second = pair(a, b)
        if is_service_member(second) and not is_service_member(first):
            first, second = second, first  # the member first
        if not self.enabled(first) and self.enabled(second):
            return second
        return first

    # ---- directories --------------------------------------------------------------------------------------------

    def directory(self, node_id: str, *, first: Collection[str] = ()) -> tuple[tuple[RelayInfo, ...],
                                                                             tuple[PeerEntry, ...], tuple[str, ...]]:
        """(relays, peers, revoked) for `node_id`'s PeerDirectory. Peers without the overlay are left out; past
        MAX_PEERS_PER_NODE the rest is cut, the peers in `first` kept before any other (the S3 gateway's storage
        nodes, among every node paired with it for s3.cloudless)."""
        entries = []
        for peer in sorted(self.peers_of(node_id), key=lambda p: p not in first) if first else self.peers_of(node_id):
            report = self.reports.get(peer)
            if report is None or not self.enabled(peer):
                continue
            entries.append(PeerEntry(node_id=peer, candidates=report.candidates, relays=report.relays,
                                     dial=self.dial_side(node_id, peer) == node_id))
            if len(entries) >= MAX_PEERS_PER_NODE:
                break
        return self.relays, tuple(entries), self.revoked[-MAX_REVOKED:]

    def wants_directory(self, node_id: str) -> bool:
        """Every node that runs the overlay gets a directory (its relays at least), and every node in a pair; an
        in-process member (`local`) reads its own from the book."""
        return node_id not in self.local and (self.enabled(node_id) or node_id in self._index())

    # ---- reports ------------------------------------------------------------------------------------------------

    def on_report(self, report: OverlayReport) -> tuple[list[PathEvent], bool]:
        """Take a node's report: (path events, whether peers' directories must change: candidates, relays or the
        overlay being on or off differ from the last report)."""
        before = self.reports.get(report.node_id)
        self.reports[report.node_id] = report
        changed = before is None or ((before.enabled, before.candidates, before.relays)
                                     != (report.enabled, report.candidates, report.relays))
        return path_changes(before, report), changed

    # ---- what people see ----------------------------------------------------------------------------------------

    def peer_rows(self, node_id: str | None = None) -> list[dict[str, object]]:
        """Every (node, peer) path as the REST API shows it, for one node or all."""
        rows: list[dict[str, object]] = []
        nodes = [node_id] if node_id is not None else sorted(self.reports)
        for n in nodes:
            report = self.reports.get(n)
            seen = set()
            for p in report.peers if report is not None else ():
                seen.add(p.node_id)
                rows.append(peer_row(n, p, wanted=self.is_wanted(n, p.node_id) if n != p.node_id else False))
            for peer in self.peers_of(n):  # wanted but not in the node's report (yet)
                if peer not in seen:
                    why = ("the node runs no overlay" + (f": {report.disabled}" if report.disabled else "")
                           if report is not None and not report.enabled
                           else "no overlay report from the node yet" if report is None
                           else f"{peer} runs no overlay" if not self.enabled(peer) else "not connected yet")
                    # a link to or from a coordinator's member (the S3 gateway) is made on demand: unreported, it is
                    # idle, not down
                    idle = why == "not connected yet" and on_demand(n, peer)
                    rows.append({"node": n, "peer": peer, "path": "idle" if idle else PathKind.DOWN.value,
                                 "relay": "", "address": "", "rttMs": None, "bytesIn": 0, "bytesOut": 0,
                                 "since": None, "changes": 0,
                                 "error": "reached on demand: connected while in use" if idle else why,
                                 "wanted": True})
        return rows

    def nat_classes(self) -> dict[str, str]:
        return {n: nat_class(r) for n, r in self.reports.items()}

    def live_reports(self) -> dict[str, OverlayReport]:
        """The reports of nodes present now (an offline node's last report is history, not a path in use)."""
        return {n: r for n, r in self.reports.items() if self.present is None or self.present(n)}

    def outcomes_by_nat_pair(self) -> Counter[tuple[str, str]]:
        """(nat pair "a/b", path kind) -> how many node->peer paths are in that state now."""
        nat = self.nat_classes()
        tally: Counter[tuple[str, str]] = Counter()
        for n, report in self.live_reports().items():
            for p in report.peers:
                a, b = sorted((nat.get(n, "unknown"), nat.get(p.node_id, "unknown")))
                tally[(f"{a}/{b}", p.path.value)] += 1
        return tally


def peer_row(node_id: str, p: PeerPath, *, wanted: bool) -> dict[str, object]:
    return {"node": node_id, "peer": p.node_id, "path": p.path.value, "relay": p.relay, "address": p.address,
            "rttMs": p.rtt_ms, "bytesIn": p.bytes_in, "bytesOut": p.bytes_out, "since": p.since,
            "changes": p.changes, "error": p.last_error, "wanted": wanted}


def nat_class(report: OverlayReport) -> str:
    if not report.enabled:
        return "no-overlay"
    local = {_host(c.address) for c in report.candidates if c.kind is CandidateKind.LOCAL}
    reflexive: dict[str, str] = {c.via: c.address for c in report.candidates if c.kind is CandidateKind.REFLEXIVE}
    if not reflexive:
        return "udp-blocked" if report.relays else "no-relay"
    if any(_host(a) in local for a in reflexive.values()):
        return "public"
    if len(reflexive) < 2:
        return "nat-unknown"
    return "nat" if len(set(reflexive.values())) == 1 else "nat-hard"


def _host(address: str) -> str:
    host = address.rsplit(":", 1)[0]
    return host[1:-1] if host.startswith("[") else host


def on_demand(a: str, b: str) -> bool:
    """Whether the link between two overlay members is made on demand: one of them is a member a coordinator runs
    (`s3@<id>`; node ids cannot hold '@'), which nodes reach only while they use it (dataplane.overlay `eager`)."""
    return is_service_member(a) != is_service_member(b)


def path_changes(before: OverlayReport | None, after: OverlayReport) -> list[PathEvent]:
    """Each peer whose path kind or relay changed between two reports of the same node."""
    old = {p.node_id: p for p in before.peers} if before is not None else {}
    new = {p.node_id: p for p in after.peers}
    events = []
    for peer in sorted(set(old) | set(new)):
        o, n = old.get(peer), new.get(peer)
        if o is not None and n is not None and (o.path, o.relay) == (n.path, n.relay):
            continue
        if (o is None or n is None) and on_demand(after.node_id, peer):
            continue  # an on-demand link (to the S3 gateway) opening with a request or idling out after: not news
        if n is None:
            assert o is not None
            events.append(PathEvent(after.node_id, peer, describe(o), "", False, f"{after.node_id} -> {peer}: "
                                    f"connection closed (was {describe(o)})"))
            continue
        if o is None and n.path in (PathKind.CONNECTING, PathKind.RELAYED):
            continue  # the first steps of every connection (through a relay first): not news; a change from them is
        warning = n.path is PathKind.DOWN or (o is not None and o.path in DIRECT_PATHS
                                                and n.path not in DIRECT_PATHS)
        was = f" (was {describe(o)})" if o is not None else ""
        why = f": {n.last_error}" if n.last_error else ""
        events.append(PathEvent(after.node_id, peer, describe(o) if o else "", describe(n), warning,
                                f"{after.node_id} -> {peer}: {describe(n)}{was}{why}"))
    return events


def describe(p: PeerPath) -> str:
    if p.path is PathKind.RELAYED:
        return f"relayed via {p.relay}" if p.relay else "relayed"
    if p.path in DIRECT_PATHS and p.address:
        return f"{p.path.value} {p.address}"
    return p.path.value


def direct_share(reports: Iterable[OverlayReport]) -> float | None:
    """The share of live node->peer paths that are direct (LAN or punched); None with no live path."""
    live = [p for r in reports for p in r.peers if p.path in (*DIRECT_PATHS, PathKind.RELAYED)]
    return sum(p.path in DIRECT_PATHS for p in live) / len(live) if live else None


def parse_relay(text: str) -> RelayInfo:
    """`relay@NAME=HOST:PORT[,HOST:PORT...]` (the coordinator's --relay) -> RelayInfo; ValueError says what is wrong."""
    ident, sep, addrs = text.partition("=")
    if not sep or not ident.startswith("relay@") or len(ident) <= len("relay@"):
        raise ValueError(f"--relay {text[:80]!r}: expected relay@NAME=HOST:PORT[,HOST:PORT...]")
    addresses = tuple(a.strip() for a in addrs.split(",") if a.strip())
    if not addresses:
        raise ValueError(f"--relay {text[:80]!r}: no address after '='")
    for a in addresses:
        host, colon, port = a.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--relay {text[:80]!r}: {a[:80]!r} is not HOST:PORT")
    return RelayInfo(relay_id=ident, addresses=addresses[:8])


def counters(reports: Mapping[str, OverlayReport], nat: Mapping[str, str]) -> dict[str, Counter[str]]:
    """Per NAT class: punch attempts, successes, fallbacks; relay bytes (sums over the nodes' reports)."""
    out: dict[str, Counter[str]] = {"attempts": Counter(), "successes": Counter(), "fallbacks": Counter(),
                                    "relay_bytes": Counter()}
    for n, r in reports.items():
        cls = nat.get(n, "unknown")
        out["attempts"][cls] += r.punch_attempts
        out["successes"][cls] += r.punch_successes
        out["fallbacks"][cls] += r.fallbacks
        out["relay_bytes"][cls] += r.relay_bytes
    return out

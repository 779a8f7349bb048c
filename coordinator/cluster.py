"""The cluster view (pure core): what the coordinator knows, and what follows from it for one round.

`Cluster` holds the in-memory picture — workloads, replicas, node administration, membership, revoked nodes —
that the engine (coordinator.service) fills from the store and from MQTT and mutates under its lock. The
decisions made from that picture live here, without I/O:

- which workload document a replica runs (`spec_of`: the current one when its spec hash matches, else the history
  entry with the replica's hash: an old replica during a rollout keeps its old spec), parsed once (`SpecCache`);
- how a node looks to the scheduler (`snapshot`): capacity, the profile's reservations (loaded by the adapter and
  passed in as `Reservations`), what its replicas already use, host ports, workload counts;
- how a replica's node looks to the lifecycle core (`replica_views`): a revoked node is LOST whatever it says,
  and a node nobody has heard of since this coordinator started counts as LOST once the coordinator has had a
  broker link for longer than the grace period (the broker lost its retained status, or the node was deleted);
- what a node is told to run (`desired_for`), with the sealed secrets its replicas consume (the lookup is passed
  in), and which (node, namespace, secret) triples must be sealed at all (`secret_wants`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from broker.wire import ReplicaObserved, ReplicaSpec, SealedSecret, WireError
from coordinator import lifecycle
from coordinator.membership import MembershipConfig, NodeInfo, NodeState
from coordinator.model import NodeAdmin, ReplicaPhase, ReplicaRecord, WorkloadRecord
from coordinator.replica_table import Changes, ReplicaTable
from coordinator.scheduler import NodeView, Snapshot
from coordinator.spec import Workload, parse_workload
from coordinator.translate import node_view, replica_spec, replica_wire_bytes, secret_names

SPEC_CACHE_LIMIT = 4096  # parsed documents kept; past it the cache starts over (documents are small)

SealedLookup = Callable[[str, str, Iterable[str]], tuple[SealedSecret, ...]]  # (node, namespace, names) -> boxes
Want = tuple[str, str, str]  # (node, namespace, secret name)


@dataclass(frozen=True, slots=True)
class Reservations:
    """What a node's firmware profile holds back and adds (unknown or custom profile: nothing)."""

    reserved_cpu: int = 0
    reserved_memory: int = 0
    max_workloads: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    metered: bool = False


NO_RESERVATIONS = Reservations()


@dataclass(frozen=True, slots=True)
class _Parsed:
    doc: dict[str, Any]
    workload: Workload


class SpecCache:
    """Parsed workload documents, keyed by (workload key, spec hash).

    A spec hash alone does not name a document: replicas and placement may differ under one hash (a scale keeps
    the hash), and a history entry may share its hash with the current document while its replica count differs.
    So each entry keeps the document it was parsed from and is used only for that same document: the identity
    check hits every round on the leader (records are replaced, never edited, so an unchanged record keeps its
    dict), and an equality check — no serialisation — covers a follower that re-read the store. A changed
    document under the same key replaces the entry."""

    def __init__(self, limit: int = SPEC_CACHE_LIMIT) -> None:
        self._entries: dict[tuple[str, str], _Parsed] = {}
        self._limit = limit

    def get(self, workload_key: str, spec_hash: str, doc: dict[str, Any]) -> Workload:
        key = (workload_key, spec_hash)
        hit = self._entries.get(key)
        if hit is not None and (hit.doc is doc or hit.doc == doc):
            return hit.workload
        if hit is None and len(self._entries) >= self._limit:
            self._entries.clear()
        parsed = parse_workload(doc)
        self._entries[key] = _Parsed(doc, parsed)
        return parsed

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True, slots=True)
class _CachedView:
    """A node's scheduler view and what it was built from."""

    seen: tuple[object, ...]  # (status, state, memory used, memory total): what node_view reads of the record
    admin: NodeAdmin
    prof: Reservations
    held: tuple[ReplicaRecord, ...]
    view: NodeView


@dataclass(slots=True)
class _Snap:
    """The scheduler's view of every node, kept between snapshots: the nodes whose inputs changed since the last
    one (member and replica change sets) are rebuilt, the others reused; every VIEWS_REFRESH_S all of them."""

    members: set[str]
    replicas: Changes
    views: dict[str, NodeView] = field(default_factory=dict)
    order: tuple[str, ...] | None = None  # node ids sorted (None: sort again)
    todo: set[str] = field(default_factory=set)  # nodes whose view may be stale
    full: bool = True  # every node is to be looked at
    refreshed_at: float = float("-inf")
    reservations: dict[str, Reservations] = field(default_factory=dict)


NO_ADMIN = NodeAdmin()
VIEWS_REFRESH_S = 10.0  # every node's scheduler view is rebuilt at least this often (reliability moves with time)
RELIABILITY_STEP = 1e-3  # a node's view is rebuilt when its reliability moved by this much


@dataclass(slots=True)
class Cluster:
    """The coordinator's picture of the cluster; the engine replaces or edits these maps under its lock."""

    workloads: dict[str, WorkloadRecord] = field(default_factory=dict)
    replicas: ReplicaTable = field(default_factory=ReplicaTable)  # indexed by node and workload
    admin: dict[str, NodeAdmin] = field(default_factory=dict)
    members: dict[str, NodeInfo] = field(default_factory=dict)
    revoked_nodes: set[str] = field(default_factory=set)  # certificates revoked: they stay lost
    specs: SpecCache = field(default_factory=SpecCache)
    _wire_sizes: dict[tuple[str, str], tuple[Workload, int]] = field(default_factory=dict)
    _secretful: dict[str, tuple[WorkloadRecord, bool]] = field(default_factory=dict)
    _views: dict[str, _CachedView] = field(default_factory=dict)  # node -> its last scheduler view
    # object ("node/ID", "workload/NS/NAME") -> why the last round's step for it failed: the round goes on for
    # every other object, and the API shows this as a condition on that one
    problems: dict[str, str] = field(default_factory=dict)

    _node_watchers: list[set[str]] = field(default_factory=list)
    _member_watchers: list[set[str]] = field(default_factory=list)

    _snap: _Snap = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.replicas, ReplicaTable):  # a plain mapping (tests, builders): indexed from now on
            self.replicas = ReplicaTable(self.replicas)
        self._snap = _Snap(members=self.watch_members(), replicas=self.replicas.watch())

    # ---- what changed --------------------------------------------------------------------------------------

    def watch_nodes(self) -> set[str]:
        """A set that collects, from now on, every node `touch_node` names (the consumer empties it)."""
        changes: set[str] = set()
        self._node_watchers.append(changes)
        return changes

    def watch_members(self) -> set[str]:
        """A set that collects every node `touch_node` or `touch_member` names (what is shown of it may differ)."""
        changes: set[str] = set()
        self._member_watchers.append(changes)
        return changes

    def touch_node(self, node_id: str) -> None:
        """Something a round decides from changed on this node: its membership state, its observed state, its
        administration (cordon, drain), its revocation. The replicas on it get looked at again."""
        for changes in self._node_watchers:
            changes.add(node_id)
        self.touch_member(node_id)

    def touch_member(self, node_id: str) -> None:
        """Something shown of this node changed (a heartbeat's usage figures) that no decision reads."""
        for changes in self._member_watchers:
            changes.add(node_id)

    # ---- documents -----------------------------------------------------------------------------------------

    def parsed(self, w: WorkloadRecord) -> Workload:
        """The workload's current document, parsed (once)."""
        return self.specs.get(w.key, w.spec_hash, w.doc)

    def spec_of(self, r: ReplicaRecord) -> Workload | None:
        """The workload document a replica was created from: the current one if its spec hash matches, else the
        history entry with the replica's hash (an old replica during a rollout keeps its old spec)."""
        key = f"{r.namespace}/{r.workload}"
        w = self.workloads.get(key)
        if w is None:
            return None
        if w.spec_hash == r.spec_hash:
            return self.parsed(w)
        for rev in reversed(w.history):
            if rev.get("spec_hash") == r.spec_hash:
                return self.specs.get(key, r.spec_hash, rev["doc"])
        return None

    def wire_bytes(self, w: Workload, spec_hash: str) -> int:
        """One replica's encoded size in its node's desired state (cached per parsed document); raises WireError
        for a spec the wire cannot carry."""
        key = (w.key, spec_hash)
        hit = self._wire_sizes.get(key)
        if hit is not None and hit[0] is w:
            return hit[1]
        if len(self._wire_sizes) >= SPEC_CACHE_LIMIT:
            self._wire_sizes.clear()
        size = replica_wire_bytes(w, spec_hash)
        self._wire_sizes[key] = (w, size)
        return size

    def observed_of(self, r: ReplicaRecord) -> ReplicaObserved | None:
        info = self.members.get(r.node) if r.node else None
        if info is None or info.observed is None:
            return None
        rid = r.replica_id  # a plain loop: the dashboard asks this of every replica in one step
        for o in info.observed.replicas:
            if o.replica_id == rid:
                return o
        return None

    def spec_hashes_in_use(self) -> set[str]:
        return {r.spec_hash for r in self.replicas.values()}

    # ---- the lifecycle core's input ------------------------------------------------------------------------

    def node_state(self, node: str | None, *, heard_for_s: float, lost_after_s: float) -> NodeState | None:
        """A replica's node as the lifecycle core sees it: revoked ⇒ LOST; unknown (never heard of since this
        coordinator started) ⇒ LOST once it has heard the broker longer than `lost_after_s`; else its state."""
        if node is None:
            return None
        if node in self.revoked_nodes:
            return NodeState.LOST
        info = self.members.get(node)
        if info is not None:
            return info.state
        return NodeState.LOST if heard_for_s > lost_after_s else None

    def replica_views(self, w: WorkloadRecord, *, heard_for_s: float,
                      lost_after_s: float) -> list[lifecycle.ReplicaView]:
        """Each replica of `w` with its node as `node_state` sees it, whether the node drains, and what the node
        last reported of the replica. `node_state` and `observed_of` inlined, the lookups hoisted: it runs in one
        step of the loop for every replica of the workload (2,500 took 7-15 ms of CPU; now ~3 ms)."""
        members, admin, revoked, view = self.members, self.admin, self.revoked_nodes, lifecycle.ReplicaView
        unknown = NodeState.LOST if heard_for_s > lost_after_s else None
        views = []
        for r in self.replicas.of_workload(w.key):
            node = r.node
            if node is None:
                views.append(view(r, None, False, None))
                continue
            info = members.get(node)
            if node in revoked:
                state: NodeState | None = NodeState.LOST
            else:
                state = info.state if info is not None else unknown
            node_admin = admin.get(node)
            observed = None
            if info is not None and info.observed is not None:
                rid = r.replica_id
                for o in info.observed.replicas:
                    if o.replica_id == rid:
                        observed = o
                        break
            views.append(view(r, state, node_admin is not None and node_admin.draining, observed))
        return views

    # ---- the scheduler's input -----------------------------------------------------------------------------

    def profile_names(self) -> set[str]:
        """The firmware profiles the members run (whose reservations `snapshot` needs)."""
        return {_profile(info) for info in self.members.values()}

    def snapshot(self, now: float, *, reservations: Mapping[str, Reservations], membership: MembershipConfig,
                 revision: int) -> Snapshot:
        """Every member as the scheduler sees it. Each node's view is kept between snapshots and rebuilt only when
        its inputs changed (its record, administration, profile, replicas, or its reliability by more than
        RELIABILITY_STEP): a snapshot of 5,000 nodes costs what changed, not 5,000 views."""
        self.prepare_views(now, reservations=reservations, membership=membership)
        s = self._snap
        if s.order is None:
            s.order = tuple(sorted(s.views))
        return Snapshot(nodes=tuple(s.views[n] for n in s.order), revision=revision)

    def prepare_views(self, now: float, *, reservations: Mapping[str, Reservations], membership: MembershipConfig,
                      limit: int | None = None) -> bool:
        """Bring up to `limit` (None: all) of the nodes whose scheduler view may be stale up to date; returns whether
        none is left (the engine calls it in steps before a snapshot, so no single step rebuilds 5,000 views)."""
        s = self._snap
        s.todo |= s.members
        s.members.clear()
        s.todo |= s.replicas.take()[0]
        if s.full or now - s.refreshed_at >= VIEWS_REFRESH_S or reservations != s.reservations:
            # now and then every node (reliability moves with time; the members map may have been replaced)
            s.todo |= set(self.members) | set(s.views)
            s.full, s.refreshed_at, s.reservations = False, now, dict(reservations)
        for _ in range(len(s.todo) if limit is None else min(limit, len(s.todo))):
            node_id = s.todo.pop()
            info = self.members.get(node_id)
            if info is None:
                if s.views.pop(node_id, None) is not None:
                    s.order = None
                self._views.pop(node_id, None)
                continue
            if node_id not in s.views:
                s.order = None
            prof = reservations.get(_profile(info), NO_RESERVATIONS)
            s.views[node_id] = self._node_view(node_id, info, prof, info.reliability(now, membership))
        return not s.todo

    def invalidate_views(self) -> None:
        """The next snapshot looks at every node again (the maps were re-read from the store)."""
        self._snap.full = True

    def _node_view(self, node_id: str, info: NodeInfo, prof: Reservations, reliability: float) -> NodeView:
        admin = self.admin.get(node_id, NO_ADMIN)
        held = self.replicas.on_node(node_id)  # the same tuple until a replica on the node changes
        hb = info.heartbeat
        seen = (info.status, info.state, hb.memory_used_bytes if hb else None, hb.memory_total_bytes if hb else None)
        hit = self._views.get(node_id)
        if (hit is not None and hit.seen == seen and hit.admin == admin and hit.prof is prof and hit.held is held
                and abs(hit.view.reliability - reliability) < RELIABILITY_STEP):
            return hit.view  # a heartbeat with the same memory figures changes nothing the scheduler sees
        alloc = [0, 0, 0, 0]
        ports: set[str] = set()
        workloads: dict[str, int] = {}
        for r in held:
            w = self.spec_of(r)
            if w is not None:
                if r.phase == ReplicaPhase.ASSIGNED:  # what desired_for sends the node
                    with contextlib.suppress(WireError):  # a spec the wire refuses is never sent: it takes no room
                        alloc[3] += self.wire_bytes(w, r.spec_hash)
                alloc[0] += w.spec.resources.cpu_request_millis
                alloc[1] += w.spec.resources.memory_request_bytes
                ports.update(f"{p.host_port}/{p.protocol}" for p in w.spec.ports if p.host_port)
            alloc[2] += 1
            key = f"{r.namespace}/{r.workload}"
            workloads[key] = workloads.get(key, 0) + 1
        view = node_view(
            info, cordoned=admin.cordoned, draining=admin.draining, reserved_cpu=prof.reserved_cpu,
            reserved_memory=prof.reserved_memory, max_workloads=prof.max_workloads,
            extra_labels=prof.labels, reliability=reliability,
            allocated_cpu=alloc[0], allocated_memory=alloc[1], replicas=alloc[2],
            workloads=workloads, host_ports=frozenset(ports),
            network_penalty=0.5 if prof.metered else 0.0, desired_bytes=alloc[3])
        self._views[node_id] = _CachedView(seen, admin, prof, held, view)
        return view

    def pending(self) -> list[ReplicaRecord]:
        """Replicas waiting for a node, oldest first."""
        return self.replicas.pending()

    # ---- desired state out ---------------------------------------------------------------------------------

    def desired_for(self, node_id: str, sealed: SealedLookup | None = None) -> tuple[ReplicaSpec, ...]:
        """The replicas assigned to a node, in replica id order; with `sealed`, each carries the sealed secrets
        it consumes."""
        specs = []
        for r in self.replicas.on_node(node_id):
            if r.phase != ReplicaPhase.ASSIGNED:
                continue
            parsed = self.spec_of(r)
            if parsed is not None:
                spec = replica_spec(parsed, r.replica_id, r.spec_hash)
                names = secret_names(parsed)
                if names and sealed is not None:
                    spec = replace(spec, secrets=sealed(node_id, r.namespace, names))
                specs.append(spec)
        return tuple(specs)

    def secret_wants(self) -> set[Want]:
        """(node, namespace, secret) for every secret an assigned replica consumes: only those nodes get it. Only
        the replicas of workloads whose documents (current or history) name a secret are looked at."""
        wants = set()
        for key, w in self.workloads.items():
            if not self._names_secrets(w):
                continue
            for r in self.replicas.of_workload(key):
                if r.node and r.phase == ReplicaPhase.ASSIGNED and (parsed := self.spec_of(r)) is not None:
                    wants |= {(r.node, r.namespace, name) for name in secret_names(parsed)}
        return wants

    def _names_secrets(self, w: WorkloadRecord) -> bool:
        """Whether any document of the workload (current or in its history) consumes a secret (cached per record:
        records are replaced, never edited)."""
        hit = self._secretful.get(w.key)
        if hit is not None and hit[0] is w:
            return hit[1]
        try:
            docs = [self.parsed(w)]
            docs += [self.specs.get(w.key, rev["spec_hash"], rev["doc"]) for rev in w.history
                     if rev.get("spec_hash") != w.spec_hash]
            answer = any(secret_names(d) for d in docs)
        except Exception:  # a document that does not parse: look at its replicas (spec_of says what is wrong)
            answer = True
        if len(self._secretful) >= SPEC_CACHE_LIMIT:
            self._secretful.clear()
        self._secretful[w.key] = (w, answer)
        return answer


def _profile(info: NodeInfo) -> str:
    facts = info.status.facts if info.status else None
    return facts.profile if facts else ""

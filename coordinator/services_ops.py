"""The service registry as the engine runs it (adapter, composed into coordinator.service): once a round it reads
the cluster, keeps each service's virtual address in the store (allocated once, released with the service), records
endpoint changes as events, and leaves the round's `ServiceBook` and per-node tables for the outbox (ServiceTable),
the overlay (the pairs services need) and the REST API.

Decisions are coordinator.services'; this module gathers their inputs and queues the store writes and events."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from broker.wire import ReplicaObserved, ServiceRecord
from coordinator import services
from coordinator.cluster import Cluster
from coordinator.errors import SpecError
from coordinator.membership import NodeState
from coordinator.model import ReplicaPhase
from coordinator.operations import Recorder
from coordinator.services import Backing, Builtin, ReplicaFacts, ServiceBook, ServiceKey, ServiceView
from coordinator.store import delete, put

log = logging.getLogger(__name__)

VIPS_PREFIX = "/services/vips/"


def vip_key(key: ServiceKey) -> str:
    return f"{VIPS_PREFIX}{key[0]}/{key[1]}"


def vips_from_store(entries: list[tuple[str, bytes]]) -> dict[ServiceKey, str]:
    """Stored addresses -> {(namespace, name): vip}; an entry that does not parse is skipped (never fails a load)."""
    out: dict[ServiceKey, str] = {}
    for key, value in entries:
        parts = key[len(VIPS_PREFIX):].split("/")
        if len(parts) != 2:
            continue
        try:
            vip = str(json.loads(value).get("vip", ""))
        except (ValueError, AttributeError):
            continue
        if services.valid_vip(vip):
            out[(parts[0], parts[1])] = vip
    return out


class ServiceRegistry:
    def __init__(self, cluster: Cluster, journal: Recorder, *, clock: Callable[[], float]) -> None:
        self.cluster = cluster
        self.journal = journal
        self.clock = clock
        self.vips: dict[ServiceKey, str] = {}  # as stored
        self.book = ServiceBook()
        self._previous: ServiceBook | None = None
        self.tables: dict[str, tuple[ServiceRecord, ...]] = {}  # node -> its records, this round
        # services this coordinator's own members serve (the S3 gateway registers `cloudless/s3` while it runs);
        # the next round allocates their address and puts them into the tables
        self.builtins: dict[ServiceKey, Builtin] = {}
        # node -> the namespaces it runs assigned replicas of, kept up to date from the replica table's changes
        self._namespaces: dict[str, frozenset[str]] = {}
        self._replica_changes = cluster.replicas.watch()
        for node_id in cluster.replicas.nodes():
            self._replica_changes.nodes.add(node_id)

    def load(self, entries: list[tuple[str, bytes]]) -> None:
        self.vips = vips_from_store(entries)

    # ---- one round -----------------------------------------------------------------------------------------------

    def round(self, *, acting: bool) -> list[services.EndpointEvent]:
        """Rebuild the book and every node's table. Acting (the leader): allocate/release addresses (queued store
        writes) and return the endpoint changes, which are also recorded as events. A follower only rebuilds from
        the addresses it read."""
        groups, problems = services.group(self._backings())
        vips = self.vips
        if acting:
            # a built-in's address is kept while it is not registered (the gateway starts after the coordinator's
            # first rounds, and comes back after a restart): s3.cloudless keeps its address (review 6, L6)
            builtin = [k for k in self.vips if k[0] == services.BUILTIN_NAMESPACE]
            vips, new, released = services.allocate([*groups, *self.builtins, *builtin], self.vips)
            now = self.clock()
            for key, vip in new.items():
                self.journal.queue(put(vip_key(key), json.dumps({"vip": vip, "since": now}).encode()))
                self.journal.event("Normal", "ServiceCreated", f"service/{key[0]}/{key[1]}",
                                   f"service {key[1]}.{key[0]}.{services.DOMAIN} has address {vip}")
            for key in released:
                self.journal.queue(delete(vip_key(key)))
                self.journal.event("Normal", "ServiceDeleted", f"service/{key[0]}/{key[1]}",
                                   f"no workload backs service {key[1]}.{key[0]} any more: address "
                                   f"{self.vips.get(key, '?')} released")
            self.vips = vips
        book = services.build(groups, problems, vips, self._replica_facts(groups), zone_of=self.zone_of,
                              ingress_nodes=self._ingress_nodes, builtins=self.builtins)
        events = services.endpoint_changes(self._previous, book) if acting else []
        for ev in events:
            self.journal.event("Warning" if ev.warning else "Normal",
                               "EndpointReady" if ev.ready else "EndpointRemoved",
                               f"service/{ev.namespace}/{ev.service}", ev.message, about=ev.replica)
        self._previous = book
        self.book = book
        self.tables = self._tables(book)
        return events

    def _backings(self) -> list[Backing]:
        out = []
        for w in self.cluster.workloads.values():
            if w.deleting:
                continue
            try:
                parsed = self.cluster.parsed(w)
            except SpecError as exc:  # a document that no longer parses backs nothing (the round says why)
                log.debug("workload %s backs no service: %s", w.key, exc)
                continue
            svc = parsed.spec.service
            if svc is None:
                continue
            out.append(services.backing_of(w.key, w.namespace, w.name, svc,
                                           [(p.container_port, p.name, p.protocol) for p in parsed.spec.ports]))
        return out

    def _replica_facts(self, groups: dict[ServiceKey, list[Backing]]) -> list[ReplicaFacts]:
        wanted = {b.workload for bs in groups.values() for b in bs}
        facts = []
        for r in (r for wkey in sorted(wanted) for r in self.cluster.replicas.of_workload(wkey)):
            key = f"{r.namespace}/{r.workload}"
            w = self.cluster.workloads.get(key)
            info = self.cluster.members.get(r.node) if r.node else None
            online = info is not None and info.state is NodeState.ONLINE and r.node not in self.cluster.revoked_nodes
            obs: ReplicaObserved | None = self.cluster.observed_of(r)
            ready = (r.phase == ReplicaPhase.ASSIGNED and obs is not None and obs.ready
                     and obs.spec_hash == r.spec_hash and w is not None and not w.deleting)
            facts.append(ReplicaFacts(replica=r.replica_id, workload=key, node=r.node, ready=ready, node_online=online))
        return facts

    def zone_of(self, node_id: str) -> str:
        info = self.cluster.members.get(node_id)
        facts = info.status.facts if info is not None and info.status is not None else None
        return facts.zone if facts is not None else ""

    def _ingress_nodes(self, _b: Backing, nodes: tuple[str, ...],
                       selector: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
        """The members an ingress rule selects: named ones, and those whose labels match the selector."""
        out = set()
        for node_id, info in self.cluster.members.items():
            if node_id in self.cluster.revoked_nodes:
                continue
            labels = dict(info.status.facts.labels) if info.status is not None else {}
            if node_id in nodes or (selector and all(labels.get(k) == v for k, v in selector)):
                out.add(node_id)
        return tuple(sorted(out))

    def _tables(self, book: ServiceBook) -> dict[str, tuple[ServiceRecord, ...]]:
        """Every member's records: the namespaces it runs replicas of (from the replica table's index), and its
        ingress. A node without ingress gets the table of its namespaces, built once per distinct set of them."""
        for node_id in self._replica_changes.take()[0]:
            nss = frozenset(r.namespace for r in self.cluster.replicas.on_node(node_id)
                            if r.phase == ReplicaPhase.ASSIGNED)
            if nss:
                self._namespaces[node_id] = nss
            else:
                self._namespaces.pop(node_id, None)
        shared: dict[frozenset[str], tuple[ServiceRecord, ...]] = {}
        tables = {}
        for node_id in self.cluster.members:
            nss = self._namespaces.get(node_id, NO_NAMESPACES)
            if node_id in book.ingress_at:
                tables[node_id] = book.table(node_id, nss)
                continue
            table = shared.get(nss)
            if table is None:
                table = shared[nss] = book.table(node_id, nss)
            tables[node_id] = table
        return tables

    def pairs(self) -> dict[tuple[str, str], str]:
        return services.pairs(self.book, self.tables)

    # ---- what people see -----------------------------------------------------------------------------------------

    def find(self, namespace: str, name: str) -> ServiceView | None:
        return self.book.views.get((namespace, name))

    def rows(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return [service_row(v) for k, v in sorted(self.book.views.items())
                if namespace is None or k[0] == namespace]


NO_NAMESPACES: frozenset[str] = frozenset()


def service_row(v: ServiceView) -> dict[str, Any]:
    """A service as the REST API shows it."""
    ready = v.ready()
    return {
        "namespace": v.namespace, "name": v.name, "fqdn": v.fqdn, "vip": v.vip,
        "ports": [{"port": p.port, "targetPort": p.target_port, "name": p.name, "protocol": p.protocol.value}
                  for p in v.ports],
        "workloads": list(v.workloads),
        "ready": len(ready), "endpointCount": len(v.endpoints),
        "endpoints": [{"node": e.node, "replica": e.replica, "workload": e.workload, "zone": e.zone,
                       "weight": e.weight, "ready": e.ready, "reason": e.reason} for e in v.endpoints],
        "ingress": [{"port": p, "hostPort": h, "nodes": list(ns)} for p, h, ns in v.ingress],
        "problems": list(v.problems),
    }

"""The human-readable MQTT mirror and Home Assistant discovery (pure core).

Mirror (retained JSON under `cloudless/v1/dash/`, readable by the dashboard identity only):
    dash/cluster                     nodes online/total, workloads, replicas ready/desired
    dash/node/<id>                   online, state, profile, cpu/memory/battery/temperature, replicas, storage
    dash/workload/<ns>/<name>        desired, ready, phase, image

Home Assistant MQTT discovery (https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery): each node is a
device with sensors (CPU %, memory %, battery %, temperature °C, replicas, object-store bytes used) and an
`online` binary_sensor; every
entity's availability follows the node's presence through the mirror's `online` field. Config topics are
`homeassistant/<component>/cloudless_<node>/<object>/config`; an empty retained payload removes an entity (the
engine sends one for every topic that is no longer produced).

Pure: the cluster view in (`documents`), (topic, JSON text) out; the engine publishes them (throttled, only what
changed). `Mirror` does the same incrementally (issue 17: encoding every node's mirror and discovery configs every
2 s, changed or not, was 63 % of an idle 5,000-node coordinator's CPU): it recomputes the summaries only of the
nodes and workloads that changed (the cluster's member and replica change sets, replaced workload records, plus a
sweep of `SWEEP_NODES` nodes per call), encodes a topic only when its summary differs from the last one, the
discovery configs only when what they show (profile, agent version) differs, and spreads a full resend (the first
call, and after `forget`) over calls of `RESEND_NODES` nodes each.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from broker.wire import topics
from coordinator.cluster import Cluster
from coordinator.membership import NodeInfo, NodeState
from coordinator.model import WorkloadRecord
from coordinator.replica_table import workload_of

HA_ROOT = topics.HA_DISCOVERY_ROOT
# one call is one step of the engine's loop: a call at the old 500 nodes / 500 topics took 30 ms of CPU with a
# 5,000-node fleet heartbeating, and its topics (QoS 0) are written to the broker in one go after it (issue 17:
# /healthz p99 <= 50 ms); the engine makes several calls a round when there is a backlog (outbox.DASH_CALLS)
SWEEP_NODES = 60  # nodes whose summary is recomputed per call whatever the change sets say
RESEND_NODES = 20  # nodes encoded per call during a full resend (each is 7 topics)
MAX_NODES = 120  # changed nodes whose summary one call recomputes (the rest wait for the next call)...
MAX_TOPICS = 150  # ... and topics one call encodes


@dataclass(frozen=True, slots=True)
class NodeSummary:
    node_id: str
    online: bool
    state: str
    profile: str = ""
    arch: str = ""
    agent_version: str = ""
    cpu_percent: float | None = None
    memory_percent: float | None = None
    battery_percent: float | None = None
    temperature_c: float | None = None
    replicas: int = 0
    schedulable: bool = True
    gates: tuple[str, ...] = ()
    # the object store (None: the node offers no storage, or its agent is too old to say)
    storage_quota_bytes: int | None = None
    storage_used_bytes: int | None = None
    storage_chunks: int | None = None
    storage_corrupt: int = 0


@dataclass(frozen=True, slots=True)
class WorkloadSummary:
    namespace: str
    name: str
    desired: int
    ready: int
    phase: str
    image: str


def _json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def node_topic(node_id: str) -> str:
    return topics.dash("node", node_id)


def workload_topic(namespace: str, name: str) -> str:
    return topics.dash("workload", namespace, name)


def node_json(n: NodeSummary) -> str:
    return _json({
        "node": n.node_id, "online": n.online, "state": n.state, "profile": n.profile, "arch": n.arch,
        "agent_version": n.agent_version, "cpu_percent": _round(n.cpu_percent),
        "memory_percent": _round(n.memory_percent), "battery_percent": _round(n.battery_percent),
        "temperature_c": _round(n.temperature_c), "replicas": n.replicas, "schedulable": n.schedulable,
        "gates": list(n.gates), "storage_quota_bytes": n.storage_quota_bytes,
        "storage_used_bytes": n.storage_used_bytes, "storage_chunks": n.storage_chunks,
        "storage_corrupt": n.storage_corrupt})


def workload_json(w: WorkloadSummary) -> str:
    return _json({"namespace": w.namespace, "name": w.name, "desired": w.desired, "ready": w.ready,
                  "phase": w.phase, "image": w.image})


def cluster_json(nodes: Iterable[NodeSummary], workloads: Iterable[WorkloadSummary]) -> str:
    nodes, workloads = list(nodes), list(workloads)
    return _json({
        "nodes_online": sum(1 for n in nodes if n.online), "nodes_total": len(nodes),
        "workloads": len(workloads), "replicas_desired": sum(w.desired for w in workloads),
        "replicas_ready": sum(w.ready for w in workloads)})


def mirror(nodes: Iterable[NodeSummary], workloads: Iterable[WorkloadSummary]) -> dict[str, str]:
    """Every mirror topic with its JSON payload."""
    nodes, workloads = list(nodes), list(workloads)
    out: dict[str, str] = {}
    for n in nodes:
        out[node_topic(n.node_id)] = node_json(n)
    for w in workloads:
        out[workload_topic(w.namespace, w.name)] = workload_json(w)
    out[topics.dash("cluster")] = cluster_json(nodes, workloads)
    return out


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


# (object id, component, name, field, unit, device_class, state_class)
_SENSORS: tuple[tuple[str, str, str, str, str | None, str | None, str | None], ...] = (
    ("cpu", "sensor", "CPU", "cpu_percent", "%", None, "measurement"),
    ("memory", "sensor", "Memory", "memory_percent", "%", None, "measurement"),
    ("battery", "sensor", "Battery", "battery_percent", "%", "battery", "measurement"),
    ("temperature", "sensor", "Temperature", "temperature_c", "°C", "temperature", "measurement"),
    ("replicas", "sensor", "Replicas", "replicas", None, None, "measurement"),
    ("storage_used", "sensor", "Storage used", "storage_used_bytes", "B", "data_size", "measurement"),
)


def slug(node_id: str) -> str:
    """Home Assistant ids allow [a-z0-9_] (entity ids) and [a-zA-Z0-9_-] (discovery topic levels)."""
    return re.sub(r"[^a-z0-9_]", "_", node_id.lower())


def discovery_topic(component: str, node_id: str, object_id: str) -> str:
    return f"{HA_ROOT}/{component}/cloudless_{slug(node_id)}/{object_id}/config"


def discovery(node: NodeSummary) -> dict[str, str]:
    """Home Assistant discovery configs of one node's entities (topic -> JSON)."""
    state_topic = node_topic(node.node_id)
    device = {"identifiers": [f"cloudless_{node.node_id}"], "name": f"Cloudless {node.node_id}",
              "manufacturer": "Cloudless", "model": node.profile or "node", "sw_version": node.agent_version or None}
    device = {k: v for k, v in device.items() if v is not None}
    availability = [{"topic": state_topic, "value_template": "{{ 'online' if value_json.online else 'offline' }}",
                     "payload_available": "online", "payload_not_available": "offline"}]
    out: dict[str, str] = {}
    for object_id, component, name, fld, unit, device_class, state_class in _SENSORS:
        cfg: dict[str, Any] = {
            "name": name, "unique_id": f"cloudless_{node.node_id}_{object_id}",
            # Home Assistant 2025.10 replaced `object_id` with `default_entity_id` (domain.object_id)
            "default_entity_id": f"{component}.cloudless_{slug(node.node_id)}_{object_id}",
            "state_topic": state_topic,
            "value_template": f"{{{{ value_json.{fld} }}}}", "availability": availability, "device": device,
        }
        if unit:
            cfg["unit_of_measurement"] = unit
        if device_class:
            cfg["device_class"] = device_class
        if state_class:
            cfg["state_class"] = state_class
        out[discovery_topic(component, node.node_id, object_id)] = _json(cfg)
    out[discovery_topic("binary_sensor", node.node_id, "online")] = _json({
        "name": "Online", "unique_id": f"cloudless_{node.node_id}_online",
        "default_entity_id": f"binary_sensor.cloudless_{slug(node.node_id)}_online", "state_topic": state_topic,
        "device_class": "connectivity",
        "value_template": "{{ 'ON' if value_json.online else 'OFF' }}", "payload_on": "ON", "payload_off": "OFF",
        "device": device})
    return out


def cleared_topics(node_id: str) -> list[str]:
    """Every retained topic the mirror and discovery produce for one node (to clear when it is deleted)."""
    return [node_topic(node_id), *discovery(NodeSummary(node_id, online=False, state="deleted"))]


def node_summary(cluster: Cluster, node_id: str, info: NodeInfo) -> NodeSummary:
    """What the mirror shows of one node (its replica count from the table's index)."""
    st, hb = info.status, info.heartbeat
    f = st.facts if st else None
    mem = (100.0 * hb.memory_used_bytes / hb.memory_total_bytes
           if hb and hb.memory_used_bytes is not None and hb.memory_total_bytes else None)
    temps = list(f.temperatures.values()) if f else []
    return NodeSummary(
        node_id=node_id, online=info.state is NodeState.ONLINE, state=info.state.value,
        profile=f.profile if f else "", arch=f.arch if f else "", agent_version=f.agent_version if f else "",
        cpu_percent=hb.cpu_percent if hb else None, memory_percent=mem,
        battery_percent=hb.battery_percent if hb else (f.battery_percent if f else None),
        temperature_c=max(temps) if temps else None, replicas=cluster.replicas.count_on(node_id),
        schedulable=bool(st and st.schedulable), gates=st.gates if st else (),
        storage_quota_bytes=st.storage_quota_bytes if st else None,
        storage_used_bytes=(st.storage_used_bytes or 0) if st and st.storage_quota_bytes is not None else None,
        storage_chunks=(st.storage_chunks or 0) if st and st.storage_quota_bytes is not None else None,
        storage_corrupt=len(st.storage_corrupt) if st else 0)


def workload_summary(cluster: Cluster, w: WorkloadRecord) -> WorkloadSummary:
    """What the mirror shows of one workload: desired, and ready at its current spec (from the table's index)."""
    ready = sum(1 for r in cluster.replicas.of_workload(w.key)
                if (o := cluster.observed_of(r)) is not None and o.ready and o.spec_hash == w.spec_hash)
    spec = w.doc.get("spec", {})
    return WorkloadSummary(w.namespace, w.name, int(spec.get("replicas", 1)), ready, w.rollout_phase,
                           str(spec.get("image", "")))


def summaries(cluster: Cluster) -> tuple[list[NodeSummary], list[WorkloadSummary]]:
    """What the mirror shows of each node and workload."""
    nodes = [node_summary(cluster, node_id, info) for node_id, info in sorted(cluster.members.items())]
    workloads = [workload_summary(cluster, w) for w in cluster.workloads.values()]
    return nodes, workloads


def documents(cluster: Cluster) -> dict[str, str]:
    """Every retained topic of the mirror and of Home Assistant discovery, with its JSON payload."""
    nodes, workloads = summaries(cluster)
    docs = mirror(nodes, workloads)
    for n in nodes:
        docs.update(discovery(n))
    return docs


class Mirror:
    """The mirror kept incrementally (see the module's doc): `changes()` gives the topics to publish since the
    last call (an empty payload clears a topic), `forget()` makes the next calls resend everything (after a
    reconnect, or a publish that failed), `drop(node)` forgets a deleted node whose topics were cleared."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._member_changes = cluster.watch_members()
        self._replica_changes = cluster.replicas.watch()
        self._nodes: dict[str, NodeSummary] = {}
        self._shown: dict[str, tuple[str, str]] = {}  # node -> (profile, agent version) its discovery configs show
        self._workloads: dict[str, tuple[WorkloadRecord, WorkloadSummary]] = {}
        self._cluster_doc = ""
        self._sweep: list[str] = []
        self._resend: list[str] = []
        self._carried: set[str] = set()  # changed nodes left for the next call
        # topics cleared (a deleted node or workload) by the last call, and those to clear again: its publish may
        # have failed partway (forget), and nothing else remembers them
        self._cleared: set[str] = set()
        self._to_clear: set[str] = set()
        self.forget()

    def forget(self) -> None:
        self._nodes.clear()
        self._shown.clear()
        self._workloads.clear()
        self._cluster_doc = ""
        self._resend = sorted(self.cluster.members, reverse=True)
        self._to_clear |= self._cleared

    def drop(self, node_id: str) -> None:
        self._nodes.pop(node_id, None)
        self._shown.pop(node_id, None)

    @property
    def backlog(self) -> int:
        """Nodes still to be looked at (a resend, or more changes than one call takes): call again soon."""
        return len(self._resend) + len(self._carried)

    def changes(self) -> dict[str, str]:
        c = self.cluster
        nodes = set(self._member_changes)
        self._member_changes.clear()
        replica_nodes, workloads = self._replica_changes.take()
        nodes |= replica_nodes
        marked = nodes | self._carried  # changed: their replicas' workloads' ready counts may have changed too
        nodes |= self._carried
        if len(nodes) > MAX_NODES:  # many changed at once (every heartbeat of a fleet): the rest next call
            ordered = sorted(nodes)
            nodes, self._carried = set(ordered[:MAX_NODES]), set(ordered[MAX_NODES:])
        else:
            self._carried = set()
            nodes.update(_take(self._resend, RESEND_NODES))
        if not self._sweep:
            self._sweep = sorted(set(c.members) | set(self._nodes), reverse=True)
        nodes.update(_take(self._sweep, SWEEP_NODES))
        out: dict[str, str] = {}
        ordered = sorted(nodes)
        for i, node_id in enumerate(ordered):
            if len(out) >= MAX_TOPICS:  # the rest next call (new nodes cost 7 topics each)
                self._carried |= set(ordered[i:])
                break
            self._node(node_id, out)
            if node_id in marked:  # an observed state or a node state changes its workloads' ready counts
                workloads.update(workload_of(r) for r in c.replicas.on_node(node_id))
        for key, w in c.workloads.items():  # records are replaced, never edited
            seen = self._workloads.get(key)
            if seen is None or seen[0] is not w or key in workloads:
                summary = workload_summary(c, w)
                if seen is None or seen[1] != summary:
                    out[workload_topic(w.namespace, w.name)] = workload_json(summary)
                self._workloads[key] = (w, summary)
        for key in [k for k in self._workloads if k not in c.workloads]:
            w, _ = self._workloads.pop(key)
            out[workload_topic(w.namespace, w.name)] = ""
        for topic in self._to_clear:  # cleared before by a publish that failed: again, unless shown again
            out.setdefault(topic, "")
        self._to_clear = set()
        self._cleared = {t for t, payload in out.items() if not payload}
        if self._resend or self._carried:  # the totals only once every node is counted again
            return out
        doc = cluster_json(self._nodes.values(), (s for _, s in self._workloads.values()))
        if doc != self._cluster_doc:
            self._cluster_doc = out[topics.dash("cluster")] = doc
        return out

    def _node(self, node_id: str, out: dict[str, str]) -> None:
        info = self.cluster.members.get(node_id)
        if info is None:  # gone (deleted): clear what was shown of it
            shown, summary = self._shown.pop(node_id, None), self._nodes.pop(node_id, None)
            if shown is not None or summary is not None:
                out.update(dict.fromkeys(cleared_topics(node_id), ""))
            return
        summary = node_summary(self.cluster, node_id, info)
        if self._nodes.get(node_id) == summary:
            return
        self._nodes[node_id] = summary
        out[node_topic(node_id)] = node_json(summary)
        shown = (summary.profile, summary.agent_version)
        if self._shown.get(node_id) != shown:
            self._shown[node_id] = shown
            out.update(discovery(summary))


def _take(queue: list[str], n: int) -> list[str]:
    """The last `n` items of a work queue (kept in reverse order), removed from it (n <= 0: none)."""
    cut = max(0, len(queue) - max(0, n))
    taken = queue[cut:]
    del queue[cut:]
    return taken

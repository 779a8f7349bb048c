"""The human-readable MQTT mirror and Home Assistant discovery (pure core).

Mirror (retained JSON under `cloudless/v1/dash/`, readable by the dashboard identity only):
    dash/cluster                     nodes online/total, workloads, replicas ready/desired
    dash/node/<id>                   online, state, profile, cpu/memory/battery/temperature, replicas
    dash/workload/<ns>/<name>        desired, ready, phase, image

Home Assistant MQTT discovery (https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery): each node is a
device with sensors (CPU %, memory %, battery %, temperature °C, replicas) and an `online` binary_sensor; every
entity's availability follows the node's presence through the mirror's `online` field. Config topics are
`homeassistant/<component>/cloudless_<node>/<object>/config`; an empty retained payload removes an entity (the
engine sends one for every topic that is no longer produced).

Pure: the cluster view in (`documents`), (topic, JSON text) out; the engine publishes them (throttled, only what
changed).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from broker.wire import topics
from coordinator.cluster import Cluster
from coordinator.membership import NodeState

HA_ROOT = topics.HA_DISCOVERY_ROOT


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


def mirror(nodes: Iterable[NodeSummary], workloads: Iterable[WorkloadSummary]) -> dict[str, str]:
    """Every mirror topic with its JSON payload."""
    nodes, workloads = list(nodes), list(workloads)
    out: dict[str, str] = {}
    for n in nodes:
        out[node_topic(n.node_id)] = _json({
            "node": n.node_id, "online": n.online, "state": n.state, "profile": n.profile, "arch": n.arch,
            "agent_version": n.agent_version, "cpu_percent": _round(n.cpu_percent),
            "memory_percent": _round(n.memory_percent), "battery_percent": _round(n.battery_percent),
            "temperature_c": _round(n.temperature_c), "replicas": n.replicas, "schedulable": n.schedulable,
            "gates": list(n.gates)})
    for w in workloads:
        out[topics.dash("workload", w.namespace, w.name)] = _json({
            "namespace": w.namespace, "name": w.name, "desired": w.desired, "ready": w.ready, "phase": w.phase,
            "image": w.image})
    out[topics.dash("cluster")] = _json({
        "nodes_online": sum(1 for n in nodes if n.online), "nodes_total": len(nodes),
        "workloads": len(workloads), "replicas_desired": sum(w.desired for w in workloads),
        "replicas_ready": sum(w.ready for w in workloads)})
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


def summaries(cluster: Cluster) -> tuple[list[NodeSummary], list[WorkloadSummary]]:
    """What the mirror shows of each node and workload."""
    nodes = []
    for node_id, info in sorted(cluster.members.items()):
        st, hb = info.status, info.heartbeat
        f = st.facts if st else None
        mem = (100.0 * hb.memory_used_bytes / hb.memory_total_bytes
               if hb and hb.memory_used_bytes is not None and hb.memory_total_bytes else None)
        temps = list(f.temperatures.values()) if f else []
        nodes.append(NodeSummary(
            node_id=node_id, online=info.state is NodeState.ONLINE, state=info.state.value,
            profile=f.profile if f else "", arch=f.arch if f else "", agent_version=f.agent_version if f else "",
            cpu_percent=hb.cpu_percent if hb else None, memory_percent=mem,
            battery_percent=hb.battery_percent if hb else (f.battery_percent if f else None),
            temperature_c=max(temps) if temps else None,
            replicas=cluster.replicas.count_on(node_id),
            schedulable=bool(st and st.schedulable), gates=st.gates if st else ()))
    workloads = []
    for w in cluster.workloads.values():
        ready = sum(1 for r in cluster.replicas.of_workload(w.key)
                    if (o := cluster.observed_of(r)) is not None and o.ready and o.spec_hash == w.spec_hash)
        spec = w.doc.get("spec", {})
        workloads.append(WorkloadSummary(w.namespace, w.name, int(spec.get("replicas", 1)), ready,
                                         w.rollout_phase, str(spec.get("image", ""))))
    return nodes, workloads


def documents(cluster: Cluster) -> dict[str, str]:
    """Every retained topic of the mirror and of Home Assistant discovery, with its JSON payload."""
    nodes, workloads = summaries(cluster)
    docs = mirror(nodes, workloads)
    for n in nodes:
        docs.update(discovery(n))
    return docs

"""Prometheus metrics of the coordinator (adapter): counters updated by the API, gauges read at scrape time."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from coordinator.membership import NodeInfo
from coordinator.model import ReplicaRecord, WorkloadRecord
from coordinator.overlay import OverlayBook, counters, direct_share
from coordinator.services_ops import ServiceRegistry


class LeaderFlag(Protocol):
    @property
    def is_leader(self) -> bool: ...


class MetricsSource(Protocol):
    """What the gauges read from the engine (coordinator.service.Coordinator) at scrape time."""

    @property
    def members(self) -> Mapping[str, NodeInfo]: ...

    @property
    def replicas(self) -> Mapping[str, ReplicaRecord]: ...

    @property
    def workloads(self) -> Mapping[str, WorkloadRecord]: ...

    @property
    def last_round_s(self) -> float: ...

    @property
    def epoch(self) -> int: ...

    @property
    def leadership(self) -> LeaderFlag: ...

    @property
    def metrics_leader_changes(self) -> int: ...

    @property
    def overlay(self) -> OverlayBook: ...

    @property
    def services(self) -> ServiceRegistry: ...


class _StateCollector:
    """Gauges computed from the coordinator's state when Prometheus scrapes."""

    def __init__(self, coord: MetricsSource) -> None:
        self.coord = coord

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        nodes = GaugeMetricFamily("cloudless_nodes", "Nodes by membership state", labels=["state"])
        for state, n in sorted(Tally(i.state.value for i in self.coord.members.values()).items()):
            nodes.add_metric([state], n)
        yield nodes
        replicas = GaugeMetricFamily("cloudless_replicas", "Replicas by phase", labels=["phase"])
        for phase, n in sorted(Tally(str(r.phase) for r in self.coord.replicas.values()).items()):
            replicas.add_metric([phase], n)
        yield replicas
        workloads = GaugeMetricFamily("cloudless_workloads", "Workloads known to the coordinator")
        workloads.add_metric([], len(self.coord.workloads))
        yield workloads
        duration = GaugeMetricFamily("cloudless_reconcile_duration_seconds", "Duration of the last reconcile round")
        duration.add_metric([], self.coord.last_round_s)
        yield duration
        epoch = GaugeMetricFamily("cloudless_leader_epoch", "Leadership epoch of this coordinator")
        epoch.add_metric([], self.coord.epoch)
        yield epoch
        leader = GaugeMetricFamily("cloudless_leader", "1 while this coordinator leads (acts), 0 as a follower")
        leader.add_metric([], 1.0 if self.coord.leadership.is_leader else 0.0)
        yield leader
        changes = CounterMetricFamily("cloudless_leader_changes", "Times this coordinator took over as leader")
        changes.add_metric([], self.coord.metrics_leader_changes)
        yield changes
        yield from self._overlay()
        yield from self._services()

    def _services(self) -> Iterator[GaugeMetricFamily]:
        """Each service's endpoints by health (ready: in the tables the nodes get; not ready: left out)."""
        family = GaugeMetricFamily("cloudless_service_endpoints", "Service endpoints by readiness (only ready ones "
                                   "receive connections)", labels=["namespace", "service", "ready"])
        for (ns, name), view in sorted(self.coord.services.book.views.items()):
            ready = len(view.ready())
            family.add_metric([ns, name, "true"], ready)
            family.add_metric([ns, name, "false"], len(view.endpoints) - ready)
        yield family

    def _overlay(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """The overlay as the nodes last reported it: paths by NAT pair and outcome, the direct share, and the
        nodes' own counters summed per NAT class (they reset when an agent restarts, like any process counter)."""
        book = self.coord.overlay
        paths = GaugeMetricFamily("cloudless_overlay_paths", "Node-to-peer overlay paths by NAT pair and path "
                                  "(lan, direct, relayed, connecting, down)", labels=["nat_pair", "path"])
        for (nat_pair, path), n in sorted(book.outcomes_by_nat_pair().items()):
            paths.add_metric([nat_pair, path], n)
        yield paths
        share = GaugeMetricFamily("cloudless_overlay_direct_ratio", "Share of live overlay paths that are direct "
                                  "(LAN or hole-punched) rather than relayed")
        ratio = direct_share(book.live_reports().values())
        if ratio is not None:
            share.add_metric([], ratio)
        yield share
        sums = counters(book.reports, book.nat_classes())
        for key, help_ in (("attempts", "Direct-path (hole punching) attempts"),
                           ("successes", "Direct-path attempts that found a direct path"),
                           ("fallbacks", "Direct paths lost and replaced by a relay"),
                           ("relay_bytes", "Peer bytes nodes sent and received through relays")):
            family = CounterMetricFamily(f"cloudless_overlay_{key}", f"{help_}, by the node's NAT class "
                                         "(summed from node reports)", labels=["nat"])
            for nat, n in sorted(sums[key].items()):
                family.add_metric([nat], n)
            yield family


class StorageSource(Protocol):
    """What the storage gauges read at scrape time (cloudless.gateway.Gateway.status(): see its docstring)."""

    def status(self) -> dict[str, Any]: ...


class _StorageCollector:
    """The object store's state as the gateway last saw it: per-node capacity, chunks by health, repair totals."""

    def __init__(self, source: StorageSource) -> None:
        self.source = source

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        status = self.source.status()
        quota = GaugeMetricFamily("cloudless_storage_quota_bytes", "Storage a node offers", labels=["node", "zone"])
        used = GaugeMetricFamily("cloudless_storage_used_bytes", "Storage a node's chunks take",
                                 labels=["node", "zone"])
        held = GaugeMetricFamily("cloudless_storage_node_chunks", "Chunks a node holds", labels=["node"])
        online = GaugeMetricFamily("cloudless_storage_node_online", "1 while the node's copies count (not lost)",
                                   labels=["node"])
        for row in status.get("nodes", ()):
            quota.add_metric([row["node"], row["zone"]], row["quotaBytes"])
            used.add_metric([row["node"], row["zone"]], row["usedBytes"])
            held.add_metric([row["node"]], row["chunks"])
            online.add_metric([row["node"]], 1.0 if row["online"] else 0.0)
        yield from (quota, used, held, online)
        for name, key, help_ in (("chunks", "chunks", "Chunks referenced by objects and uploads"),
                                 ("under_replicated_chunks", "underReplicated", "Chunks below their R good copies"),
                                 ("unrecoverable_chunks", "unrecoverable", "Chunks with no good copy online")):
            family = GaugeMetricFamily(f"cloudless_storage_{name}", help_)
            if status.get(key) is not None:
                family.add_metric([], status[key])
            yield family
        repair = status.get("repair", {})
        for name, key, help_ in (("copies", "copied", "Chunk copies made by repair"),
                                 ("bytes", "copiedBytes", "Bytes copied by repair"),
                                 ("deletes", "deleted", "Surplus or corrupt copies deleted by repair"),
                                 ("failures", "failed", "Repair copies or deletes that failed")):
            counter = CounterMetricFamily(f"cloudless_storage_repair_{name}", help_)
            counter.add_metric([], repair.get(key, 0))
            yield counter
        rate = GaugeMetricFamily("cloudless_storage_repair_rate_bytes", "Repair throughput of the last pass (B/s)")
        rate.add_metric([], repair.get("rateBytesPerS", 0.0))
        yield rate
        compression = status.get("compression", {})
        for name, key, help_ in (
                ("written_bytes", "writtenBytes", "Plaintext bytes of chunks written to compressing buckets"),
                ("stored_bytes", "storedBytes", "What those chunks take as stored (one copy, before R or parity)"),
                ("saved_bytes", "savedBytes", "Bytes compression saved on them (one copy)"),
                ("chunks_compressed", "chunksCompressed", "Chunks of compressing buckets stored compressed"),
                ("chunks_raw", "chunksRaw", "Chunks of compressing buckets stored raw (did not shrink by 1/8)")):
            counter = CounterMetricFamily(f"cloudless_storage_compression_{name}", f"{help_}, by this gateway")
            counter.add_metric([], compression.get(key, 0))
            yield counter


class StorageMetrics:
    """The S3 gateway's metrics in the coordinator's registry (served on its /metrics)."""

    def __init__(self, registry: CollectorRegistry, source: StorageSource) -> None:
        self.latency = Histogram("cloudless_s3_request_duration_seconds", "S3 request latency by operation",
                                 ["operation"], registry=registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                                          10.0, 30.0))
        self.requests = Counter("cloudless_s3_requests_total", "S3 requests by operation and status",
                                ["operation", "status"], registry=registry)
        registry.register(_StorageCollector(source))

    def request(self, operation: str, status: int, seconds: float) -> None:
        self.latency.labels(operation).observe(seconds)
        self.requests.labels(operation, str(status)).inc()


class Metrics:
    def __init__(self, coord: MetricsSource) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("cloudless_api_requests_total", "REST requests by route, method and status",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("cloudless_api_request_duration_seconds", "REST request latency by route",
                                 ["route"], registry=self.registry,
                                 buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0))
        self.scheduling = Histogram("cloudless_scheduling_pass_duration_seconds",
                                    "Duration of one scheduling pass (all pending replicas of a round)",
                                    registry=self.registry,
                                    buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0))
        self.decisions = Counter("cloudless_scheduling_decisions_total", "Scheduling decisions by result",
                                 ["result"], registry=self.registry)
        self.unschedulable = Counter("cloudless_unschedulable_total",
                                     "Unschedulable decisions by the most common reason across nodes", ["reason"],
                                     registry=self.registry)
        self.mqtt_messages = Counter("cloudless_mqtt_messages_total", "MQTT messages by direction and channel",
                                     ["direction", "channel"], registry=self.registry)
        self.mqtt_bytes = Counter("cloudless_mqtt_bytes_total", "MQTT payload bytes by direction", ["direction"],
                                  registry=self.registry)
        self._mqtt_children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self.registry.register(_StateCollector(coord))

    def mqtt(self, direction: str, channel: str, size: int) -> None:
        """Count one message (called per MQTT message: the labelled children are looked up once, not per call)."""
        children = self._mqtt_children.get((direction, channel))
        if children is None:
            children = (self.mqtt_messages.labels(direction, channel), self.mqtt_bytes.labels(direction))
            self._mqtt_children[(direction, channel)] = children
        children[0].inc()
        children[1].inc(size)

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def storage(self, source: StorageSource) -> StorageMetrics:
        """Register the object store's metrics (once per process: the gateway calls it when it starts)."""
        return StorageMetrics(self.registry, source)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

"""Prometheus metrics of the coordinator (adapter): counters updated by the API, gauges read at scrape time."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from coordinator.service import Coordinator


class _StateCollector:
    """Gauges computed from the coordinator's state when Prometheus scrapes."""

    def __init__(self, coord: Coordinator) -> None:
        self.coord = coord

    def collect(self) -> Iterator[GaugeMetricFamily]:
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


class Metrics:
    def __init__(self, coord: Coordinator) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("cloudless_api_requests_total", "REST requests by route, method and status",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("cloudless_api_request_duration_seconds", "REST request latency by route",
                                 ["route"], registry=self.registry,
                                 buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0))
        self.registry.register(_StateCollector(coord))

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

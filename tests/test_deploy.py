"""deploy/: the Grafana dashboard queries only metrics the coordinator or the agent exports, and the Prometheus
config scrapes both."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from coordinator.metrics import Metrics
from edge_agent import metrics as agent_metrics

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
METRIC = re.compile(r"\bcloudless_[a-z0-9_]+")
TYPE_LINE = re.compile(r"^# TYPE (\S+) (\S+)$", re.MULTILINE)
SERIES_SUFFIXES = ("_bucket", "_sum", "_count")


def coordinator_metrics() -> set[str]:
    """Names in the coordinator's exposition, read from `# TYPE` lines of a real `Metrics.render()`."""
    from broker import wire
    from coordinator.overlay import OverlayBook
    from coordinator.services import ServiceBook

    book = OverlayBook()  # one report with a path, so every overlay family has a series
    book.on_report(wire.OverlayReport(node_id="a", ts=1.0, enabled=True, punch_attempts=1, peers=(
        wire.PeerPath("b", wire.PathKind.DIRECT),)))
    coord = SimpleNamespace(members={}, replicas={}, workloads={}, last_round_s=0.0, epoch=1,
                            leadership=SimpleNamespace(is_leader=True), metrics_leader_changes=0, overlay=book,
                            services=SimpleNamespace(book=ServiceBook()))
    body, _ = Metrics(coord).render()  # type: ignore[arg-type]  # only the attributes the collector reads
    return {name for name, _kind in TYPE_LINE.findall(body.decode())}


def agent_exposition() -> str:
    """A real `edge_agent.metrics.render()` of a sample with every reading present, so every family has series."""
    counters = agent_metrics.Counters(mqtt_connects=2, state_write_errors=1)
    counters.probe_failed("web-0", "liveness")
    sample = agent_metrics.Sample(
        node_id="pi-1", profile="raspberry-pi-4", runtime="podman", cpu_percent=12.5, memory_used_bytes=1 << 30,
        memory_total_bytes=4 << 30, battery_percent=80.0, charging=True, temperatures_c={"cpu": 51.5},
        schedulable=True, mqtt_connected=True, counters=counters, state_writes=3, desired_generation=4,
        desired_epoch=2, replicas=(agent_metrics.ReplicaSample("web-0", True, True, 1, 3.5, 50 << 20),),
        services=agent_metrics.ServiceSamples(
            per_service=(agent_metrics.ServiceSample("web", "default", {"node": 3, "zone": 1}, active=1,
                                                     bytes_out=10, bytes_in=20, connect_failures=1, served=2,
                                                     udp_flows=1),),
            running=True, dns_queries={"answered": 4}, dns_bind_failures=1, udp_flows_open=1, problems=1),
        storage=agent_metrics.StorageSample(
            quota_bytes=8 << 30, used_bytes=3 << 20, chunks=3, corrupt_listed=1, scrub_passes=1, scrub_checked=3,
            scrub_bytes=3 << 20, scrub_corrupt=1, scrub_progress=0.5, buffered_bytes=1 << 20, busy_refused=1))
    return agent_metrics.render(sample)


def agent_metrics_exported() -> set[str]:
    """Series names in the agent's exposition, as prometheus-client's parser reads them (counters keep `_total`)."""
    text = agent_exposition()
    names = {s.name for family in text_string_to_metric_families(text) for s in family.samples}
    declared = {name for name, _kind in TYPE_LINE.findall(text)}
    assert declared <= names, f"agent families without a series in the test sample: {sorted(declared - names)}"
    return names


def exported_metrics() -> set[str]:
    return coordinator_metrics() | agent_metrics_exported()


def base_name(name: str) -> str:
    for suffix in SERIES_SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    def walk(panels: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
        for panel in panels:
            for target in panel.get("targets", []):
                yield panel["title"], target
            yield from walk(panel.get("panels", []))  # rows may nest panels
    yield from walk(dashboard["panels"])


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    return data


def test_dashboard_has_panels_with_queries(dashboard: dict[str, Any]) -> None:
    found = list(targets(dashboard))
    assert found, "dashboard has no panel targets"
    for title, target in found:
        assert METRIC.search(target.get("expr", "")), f"panel {title!r}: expr names no cloudless metric"


def variable_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            yield f"${var['name']}", query


def test_dashboard_queries_only_exported_metrics(dashboard: dict[str, Any]) -> None:
    exported = exported_metrics()
    assert {"cloudless_nodes", "cloudless_api_requests_total", "cloudless_api_request_duration_seconds"} <= exported
    assert {"cloudless_agent_info", "cloudless_agent_cpu_usage_percent", "cloudless_agent_mqtt_reconnects_total",
            "cloudless_agent_probe_failures_total"} <= exported
    queries = [*((title, target["expr"]) for title, target in targets(dashboard)), *variable_queries(dashboard)]
    unknown = {(where, name) for where, expr in queries
               for name in METRIC.findall(expr) if base_name(name) not in exported}
    assert not unknown, f"metrics neither the coordinator nor the agent exports: {sorted(unknown)}"


def test_dashboard_shows_agent_metrics(dashboard: dict[str, Any]) -> None:
    used = {name for _title, target in targets(dashboard) for name in METRIC.findall(target["expr"])}
    assert {name for name in used if name.startswith("cloudless_agent_")} >= {
        "cloudless_agent_cpu_usage_percent", "cloudless_agent_memory_used_bytes", "cloudless_agent_memory_total_bytes",
        "cloudless_agent_battery_percent", "cloudless_agent_temperature_celsius",
        "cloudless_agent_replica_restarts_total", "cloudless_agent_probe_failures_total",
        "cloudless_agent_mqtt_reconnects_total"}


def test_dashboard_histograms_use_buckets(dashboard: dict[str, Any]) -> None:
    for title, target in targets(dashboard):
        if "histogram_quantile" in target["expr"]:
            assert "_bucket" in target["expr"], f"panel {title!r}: histogram_quantile needs the _bucket series"


def test_prometheus_config_scrapes_coordinator_and_agents() -> None:
    import yaml  # pyyaml: a coordinator dependency make test installs; missing, this must fail, not skip
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert list(jobs) == ["cloudless-coordinator", "cloudless-agent"]
    assert all(job["metrics_path"] == "/metrics" for job in jobs.values())
    coord, agent = jobs["cloudless-coordinator"], jobs["cloudless-agent"]
    assert coord["scheme"] == "https" and coord["tls_config"]["ca_file"]
    assert coord["static_configs"][0]["targets"]
    assert agent["scheme"] == "http" and "tls_config" not in agent  # the agent's listener is plain HTTP
    agent_targets = [t for sc in agent["static_configs"] for t in sc["targets"]]
    assert agent_targets
    assert {int(t.rsplit(":", 1)[1]) for t in agent_targets} == {agent_metrics.DEFAULT_PORT}


def test_mosquitto_example_is_mutual_tls() -> None:
    lines = {line.split(None, 1)[0]: line.split(None, 1)[1] for line in
             (DEPLOY / "mosquitto-example.conf").read_text().splitlines()
             if line.strip() and not line.startswith("#")}
    assert lines["require_certificate"] == "true" and lines["use_identity_as_username"] == "true"
    assert lines["allow_anonymous"] == "false" and "crlfile" in lines and "cafile" in lines

"""deploy/: the Grafana dashboard queries only metrics the coordinator exports, and the Prometheus config parses."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from coordinator.metrics import Metrics

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
METRIC = re.compile(r"\bcloudless_[a-z0-9_]+")
TYPE_LINE = re.compile(r"^# TYPE (\S+) (\S+)$", re.MULTILINE)
SERIES_SUFFIXES = ("_bucket", "_sum", "_count")


def exported_metrics() -> set[str]:
    """Names in the coordinator's exposition, read from `# TYPE` lines of a real `Metrics.render()`."""
    coord = SimpleNamespace(members={}, replicas={}, workloads={}, last_round_s=0.0, epoch=1)
    body, _ = Metrics(coord).render()  # type: ignore[arg-type]  # only the attributes the collector reads
    return {name for name, _kind in TYPE_LINE.findall(body.decode())}


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


def test_dashboard_queries_only_exported_metrics(dashboard: dict[str, Any]) -> None:
    exported = exported_metrics()
    assert {"cloudless_nodes", "cloudless_api_requests_total", "cloudless_api_request_duration_seconds"} <= exported
    unknown = {(title, name) for title, target in targets(dashboard)
               for name in METRIC.findall(target["expr"]) if base_name(name) not in exported}
    assert not unknown, f"metrics the coordinator does not export: {sorted(unknown)}"


def test_dashboard_histograms_use_buckets(dashboard: dict[str, Any]) -> None:
    for title, target in targets(dashboard):
        if "histogram_quantile" in target["expr"]:
            assert "_bucket" in target["expr"], f"panel {title!r}: histogram_quantile needs the _bucket series"


def test_prometheus_config_scrapes_metrics() -> None:
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = config["scrape_configs"]
    assert [job["metrics_path"] for job in jobs] == ["/metrics"]
    assert jobs[0]["scheme"] == "https" and jobs[0]["tls_config"]["ca_file"]
    assert jobs[0]["static_configs"][0]["targets"]


def test_mosquitto_example_is_mutual_tls() -> None:
    lines = {line.split(None, 1)[0]: line.split(None, 1)[1] for line in
             (DEPLOY / "mosquitto-example.conf").read_text().splitlines()
             if line.strip() and not line.startswith("#")}
    assert lines["require_certificate"] == "true" and lines["use_identity_as_username"] == "true"
    assert lines["allow_anonymous"] == "false" and "crlfile" in lines and "cafile" in lines

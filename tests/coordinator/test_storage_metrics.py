"""The object store's gauges and counters on the coordinator's /metrics, read from the gateway's status at scrape
time (coordinator.metrics.StorageMetrics over a StorageSource: here a fake with a fixed status)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from coordinator.metrics import StorageMetrics


class FakeGateway:
    def __init__(self, status: dict[str, Any]) -> None:
        self.state = status

    def status(self) -> dict[str, Any]:
        return self.state


def scrape(status: dict[str, Any]) -> str:
    registry = CollectorRegistry()
    StorageMetrics(registry, FakeGateway(status))
    return generate_latest(registry).decode()


def test_compression_counters_come_from_the_gateway_status() -> None:
    text = scrape({"nodes": [], "compression": {"writtenBytes": 3_000_000, "storedBytes": 800_000,
                                                "savedBytes": 2_200_000, "chunksCompressed": 3, "chunksRaw": 1}})
    assert "cloudless_storage_compression_written_bytes_total 3e+06" in text
    assert "cloudless_storage_compression_stored_bytes_total 800000.0" in text
    assert "cloudless_storage_compression_saved_bytes_total 2.2e+06" in text
    assert "cloudless_storage_compression_chunks_compressed_total 3.0" in text
    assert "cloudless_storage_compression_chunks_raw_total 1.0" in text


def test_a_status_without_compression_reads_as_zero_not_an_error() -> None:
    text = scrape({"nodes": [{"node": "n0", "zone": "z", "quotaBytes": 10, "usedBytes": 4, "chunks": 1,
                              "online": True}]})
    assert "cloudless_storage_compression_saved_bytes_total 0.0" in text
    assert 'cloudless_storage_used_bytes{node="n0",zone="z"} 4.0' in text

"""What the node says of its storage: the status (edge_agent.report) carries the storage facts through the real
codec, and the metrics (edge_agent.metrics) render them, or nothing for a node that offers no storage."""

from __future__ import annotations

import hashlib

from prometheus_client.parser import text_string_to_metric_families

from broker import wire
from broker.wire import NodeFacts, NodeStatus, Presence
from edge_agent import report
from edge_agent.metrics import Counters, Sample, StorageSample, render
from edge_agent.storage_plan import StorageFacts


def cid(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def status(storage: StorageFacts | None) -> NodeStatus:
    msg = report.status(node_id="pi-1", presence=Presence.ONLINE, now=100.0, facts=NodeFacts(), schedulable=True,
                        reasons=(), boot_id="b", storage=storage)
    back = wire.decode(wire.encode(msg))
    assert isinstance(back, NodeStatus)
    return back


def test_the_status_carries_the_storage_facts() -> None:
    st = status(StorageFacts(quota_bytes=64 << 20, used_bytes=3 << 20, chunks=3, corrupt=(cid(1), cid(2))))
    assert (st.storage_quota_bytes, st.storage_used_bytes, st.storage_chunks) == (64 << 20, 3 << 20, 3)
    assert st.storage_corrupt == (cid(1), cid(2))


def test_a_node_offering_none_says_quota_zero_and_no_facts_is_an_older_agent() -> None:
    assert status(StorageFacts(0, 0, 0)).storage_quota_bytes == 0
    old = status(None)
    assert (old.storage_quota_bytes, old.storage_used_bytes, old.storage_chunks, old.storage_corrupt) == \
        (None, None, None, ())


def sample(storage: StorageSample | None) -> Sample:
    return Sample(node_id="pi-1", profile="vps", runtime="process", cpu_percent=None, memory_used_bytes=None,
                  memory_total_bytes=None, battery_percent=None, charging=None, temperatures_c={}, schedulable=True,
                  mqtt_connected=True, replicas=(), counters=Counters(), state_writes=0, desired_generation=None,
                  desired_epoch=None, storage=storage)


def values(text: str) -> dict[str, float]:
    return {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples
            if s.name.startswith("cloudless_agent_storage")}


def test_storage_metrics() -> None:
    m = values(render(sample(StorageSample(
        quota_bytes=64 << 20, used_bytes=3 << 20, chunks=3, corrupt_listed=1, scrub_passes=2, scrub_checked=9,
        scrub_bytes=9 << 20, scrub_corrupt=1, scrub_progress=0.25, buffered_bytes=4 << 20, busy_refused=5))))
    assert m == {
        "cloudless_agent_storage_quota_bytes": 64 << 20, "cloudless_agent_storage_used_bytes": 3 << 20,
        "cloudless_agent_storage_chunks": 3, "cloudless_agent_storage_corrupt_reported": 1,
        "cloudless_agent_storage_scrub_passes_total": 2, "cloudless_agent_storage_scrub_checked_total": 9,
        "cloudless_agent_storage_scrub_read_bytes_total": 9 << 20, "cloudless_agent_storage_scrub_corrupt_total": 1,
        "cloudless_agent_storage_scrub_progress_ratio": 0.25, "cloudless_agent_storage_buffered_bytes": 4 << 20,
        "cloudless_agent_storage_busy_total": 5,
    }


def test_no_storage_no_series() -> None:
    assert values(render(sample(None))) == {}

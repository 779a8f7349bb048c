"""Review 2 L1: a deleted workload's or node's topic is cleared again when the publish that cleared it failed
(`forget`): nothing else remembers it, and the retained topic would stay on the broker for good."""

from __future__ import annotations

from coordinator import dashboard
from coordinator.dashboard import Mirror, workload_topic
from tests.coordinator.test_cluster import make_replica, make_workload
from tests.coordinator.test_incremental_mirror import drain, fleet


def test_a_clear_whose_publish_failed_is_sent_again() -> None:
    c = fleet(3)
    w = make_workload("web", replicas=1)
    c.workloads[w.key] = w
    c.replicas["r1"] = make_replica("r1", w, node="n1")
    mirror, retained = Mirror(c), dict[str, str]()
    drain(mirror, retained)
    del c.workloads[w.key]
    del c.replicas["r1"]
    del c.members["n2"]
    c.touch_node("n2")
    gone = {workload_topic(w.namespace, w.name), dashboard.node_topic("n2")}
    out = mirror.changes()
    assert all(out.get(t) == "" for t in gone)
    mirror.forget()  # that publish failed partway
    calls = drain(mirror, retained)
    assert all(any(call.get(t) == "" for call in calls) for t in gone)
    assert not gone & set(retained)



def test_a_storage_nodes_facts_reach_its_mirror_topic() -> None:
    import dataclasses
    import json

    from tests.coordinator.test_incremental_mirror import member

    c = fleet(3)
    mirror, retained = Mirror(c), {}
    drain(mirror, retained)
    info = member("n1")
    assert info.status is not None
    status = dataclasses.replace(info.status, storage_quota_bytes=8 << 30, storage_used_bytes=3 << 20,
                                 storage_chunks=3, storage_corrupt=("ab" * 32,))
    c.members["n1"] = dataclasses.replace(info, status=status)
    c.touch_node("n1")
    drain(mirror, retained)
    doc = json.loads(retained["cloudless/v1/dash/node/n1"])
    assert (doc["storage_quota_bytes"], doc["storage_used_bytes"], doc["storage_chunks"], doc["storage_corrupt"]) == (
        8 << 30, 3 << 20, 3, 1)
    assert json.loads(retained["cloudless/v1/dash/node/n2"])["storage_quota_bytes"] is None  # offers none

"""Which probe trackers and readiness verdicts a reconcile round keeps (`health.sync_trackers`), as a table."""

from __future__ import annotations

from dataclasses import replace

import pytest

from edge_agent import health
from edge_agent.runtime.base import InstanceState
from tests.edge_agent.builders import NOW, exec_probe, make_instance, make_spec

PROBE = exec_probe("true")
STARTED = NOW - 10
OLD = health.new_tracker(PROBE, STARTED, initially_healthy=True)


@pytest.mark.parametrize(("spec", "instances", "trackers", "ready", "keys", "expected_ready"), [
    (make_spec(), [make_instance()], {}, {}, set(), {"web-0": True}),
    (make_spec(readiness=PROBE), [make_instance()], {}, {"web-0": True}, {("web-0", "readiness")}, {"web-0": False}),
    (make_spec(readiness=PROBE), [make_instance()], {("web-0", "readiness"): replace(OLD, healthy=True)},
     {"web-0": True}, {("web-0", "readiness")}, {"web-0": True}),
    (make_spec(liveness=PROBE), [make_instance(state=InstanceState.EXITED)], {("web-0", "liveness"): OLD}, {},
     set(), {"web-0": False}),
    (make_spec(spec_hash="h2"), [make_instance()], {}, {"web-0": True}, set(), {"web-0": False}),
], ids=["no-probe-ready-while-running", "new-run-not-ready", "same-run-keeps-verdict", "stopped-drops-trackers",
        "old-spec-not-ready"])
def test_sync(spec, instances, trackers, ready, keys, expected_ready) -> None:  # type: ignore[no-untyped-def]
    kept, now_ready = health.sync_trackers((spec,), instances, trackers, ready)
    assert set(kept) == keys and now_ready == expected_ready


def test_a_restart_gets_a_new_tracker_and_gone_replicas_are_forgotten() -> None:
    spec = make_spec(liveness=PROBE)
    restarted = make_instance(started_at=STARTED + 5)
    kept, ready = health.sync_trackers((spec,), [restarted], {("web-0", "liveness"): replace(OLD, failures=2),
                                                               ("old-0", "liveness"): OLD}, {"old-0": True})
    assert kept == {("web-0", "liveness"): health.new_tracker(PROBE, STARTED + 5, initially_healthy=True)}
    assert ready == {"web-0": True}

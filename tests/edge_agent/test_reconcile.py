"""The agent's reconciler: bucket tables, back-off, and the idempotence property."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.wire import ReplicaState, RestartPolicy
from edge_agent.reconcile import (
    ReplicaRecord,
    RestartConfig,
    action_failed,
    backoff_delay,
    observe,
    reconcile,
)
from edge_agent.runtime.base import InstanceState
from edge_agent.runtime.fake import FakeRuntime
from tests.edge_agent.builders import NOW, make_instance, make_spec

CFG = RestartConfig(backoff_initial_s=1.0, backoff_max_s=8.0, reset_after_s=60.0, crash_loop_after=3)
EXITED = InstanceState.EXITED


def buckets(plan) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    out = {name: [a.replica_id for a in getattr(plan, name)] for name in ("create", "start", "restart", "replace",
                                                                         "remove")}
    out["keep"] = list(plan.keep)
    out["waiting"] = [rid for rid, _ in plan.waiting]
    return {k: v for k, v in out.items() if v}


@pytest.mark.parametrize(
    ("specs", "instances", "records", "expected"),
    [
        ([make_spec()], [], {}, {"create": ["web-0"]}),
        ([make_spec()], [make_instance()], {}, {"keep": ["web-0"]}),
        ([], [make_instance()], {}, {"remove": ["web-0"]}),
        ([make_spec(spec_hash="h2")], [make_instance(spec_hash="h1")], {}, {"replace": ["web-0"]}),
        ([make_spec()], [make_instance(state=InstanceState.CREATED)], {}, {"start": ["web-0"]}),
        ([make_spec()], [make_instance(state=EXITED, exit_code=1, finished_at=NOW - 5)], {}, {"start": ["web-0"]}),
        ([make_spec(policy=RestartPolicy.NEVER)], [make_instance(state=EXITED, exit_code=1, finished_at=NOW - 5)],
         {}, {"keep": ["web-0"]}),
        ([make_spec(policy=RestartPolicy.ON_FAILURE)],
         [make_instance(state=EXITED, exit_code=0, finished_at=NOW - 5)], {}, {"keep": ["web-0"]}),
        ([make_spec(policy=RestartPolicy.ON_FAILURE)],
         [make_instance(state=EXITED, exit_code=2, finished_at=NOW - 5)], {}, {"start": ["web-0"]}),
        ([make_spec()], [make_instance(state=EXITED, exit_code=1, finished_at=NOW - 0.5)], {}, {"waiting": ["web-0"]}),
        ([make_spec()], [make_instance()], {"web-0": ReplicaRecord("web-0", liveness_failed=True)},
         {"restart": ["web-0"]}),
        ([make_spec()], [make_instance(iid="a"), make_instance(iid="b", started_at=NOW - 100)], {},
         {"remove": ["web-0"], "keep": ["web-0"]}),
        ([make_spec()], [], {"web-0": ReplicaRecord("web-0", consecutive_failures=2, next_start_at=NOW + 3)},
         {"waiting": ["web-0"]}),
    ],
    ids=["missing->create", "running->keep", "undesired->remove", "new-hash->replace", "created->start",
         "crashed->start", "never->keep", "onfailure-success->keep", "onfailure-failure->start",
         "just-crashed->backoff", "liveness-failed->restart", "duplicate->remove-older", "create-backoff->wait"],
)
def test_buckets(specs, instances, records, expected) -> None:  # type: ignore[no-untyped-def]
    assert buckets(reconcile(specs, instances, records, NOW, CFG)) == expected


def test_restart_counts_and_backoff_grow_with_consecutive_crashes() -> None:
    spec = make_spec()
    records: dict[str, ReplicaRecord] = {}
    now = NOW
    delays = []
    for n in range(1, 6):
        inst = make_instance(state=EXITED, exit_code=1, started_at=now - 1, finished_at=now)
        plan = reconcile([spec], [inst], records, now, CFG)
        records = dict(plan.records)
        rec = records["web-0"]
        assert rec.consecutive_failures == n
        delays.append(rec.next_start_at - now)
        now = rec.next_start_at  # come back exactly when allowed
        plan = reconcile([spec], [inst], records, now, CFG)
        assert buckets(plan) == {"start": ["web-0"]}
        records = dict(plan.records)
        assert records["web-0"].restarts == n
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0]  # capped at backoff_max_s


def test_the_same_exit_is_counted_once() -> None:
    inst = make_instance(state=EXITED, exit_code=1, finished_at=NOW - 0.1)
    first = reconcile([make_spec()], [inst], {}, NOW, CFG)
    second = reconcile([make_spec()], [inst], first.records, NOW + 0.2, CFG)
    assert second.records["web-0"].consecutive_failures == 1


def test_a_long_run_resets_the_failure_count() -> None:
    records = {"web-0": ReplicaRecord("web-0", consecutive_failures=4, handled_exit_at=NOW - 500)}
    inst = make_instance(state=EXITED, exit_code=1, started_at=NOW - 200, finished_at=NOW - 1)
    plan = reconcile([make_spec()], [inst], records, NOW, CFG)
    assert plan.records["web-0"].consecutive_failures == 1


def test_failed_action_backs_off() -> None:
    rec = action_failed(ReplicaRecord("web-0"), "image missing", NOW, CFG)
    assert rec.next_start_at == NOW + 1.0 and rec.last_error == "image missing"
    assert backoff_delay(0, CFG) == 0.0


@pytest.mark.parametrize(
    ("instance", "record", "ready", "expected"),
    [
        (None, ReplicaRecord("web-0"), False, ReplicaState.PENDING),
        (make_instance(), ReplicaRecord("web-0"), True, ReplicaState.RUNNING),
        (make_instance(state=EXITED, exit_code=1, finished_at=NOW), ReplicaRecord("web-0", consecutive_failures=3),
         False, ReplicaState.CRASH_LOOP),
        (make_instance(state=EXITED, exit_code=1, finished_at=NOW), ReplicaRecord("web-0", consecutive_failures=1),
         False, ReplicaState.FAILED),
        (make_instance(spec_hash="old"), ReplicaRecord("web-0"), False, ReplicaState.STARTING),
    ],
    ids=["pending", "running", "crash-loop", "failed", "being-replaced"],
)
def test_observed_state(instance, record, ready, expected) -> None:  # type: ignore[no-untyped-def]
    spec = make_spec()
    rows = observe([spec], [instance] if instance else [], {"web-0": record}, {"web-0": ready}, cfg=CFG)
    assert rows[0].state is expected
    assert rows[0].ready == (expected is ReplicaState.RUNNING and ready)


def test_a_running_replica_that_is_not_ready_says_why_until_it_is() -> None:
    spec = make_spec()
    running = make_instance()
    why = {"web-0": "http connect 127.0.0.1:8080: Connection refused"}
    [row] = observe([spec], [running], {"web-0": ReplicaRecord("web-0")}, {"web-0": False}, cfg=CFG, unready=why)
    assert (row.ready, row.last_error) == (False, "readiness: http connect 127.0.0.1:8080: Connection refused")
    [ok] = observe([spec], [running], {"web-0": ReplicaRecord("web-0")}, {"web-0": True}, cfg=CFG, unready=why)
    assert (ok.ready, ok.last_error) == (True, "")
    crashed = ReplicaRecord("web-0", last_error="exit 1")  # a real error wins
    [other] = observe([spec], [running], {"web-0": crashed}, {"web-0": False}, cfg=CFG, unready=why)
    assert other.last_error == "exit 1"


def test_observed_reports_instances_being_removed_as_stopping() -> None:
    rows = observe([], [make_instance("old-0")], {}, {})
    assert [(r.replica_id, r.state) for r in rows] == [("old-0", ReplicaState.STOPPING)]


async def apply(plan, rt: FakeRuntime) -> None:  # type: ignore[no-untyped-def]
    """What the agent does with a plan, against the fake runtime."""
    for a in plan.remove:
        await rt.stop(a.instance_id, 1)
        await rt.remove(a.instance_id)
    for a in plan.restart:
        await rt.stop(a.instance_id, 1)
        await rt.start(a.instance_id)
    for a in plan.start:
        await rt.start(a.instance_id)
    for a in plan.replace:
        await rt.stop(a.instance_id, 1)
        await rt.remove(a.instance_id)
        inst = await rt.create(a.spec, 1)
        await rt.start(inst.instance_id)
    for a in plan.create:
        inst = await rt.create(a.spec, 1)
        await rt.start(inst.instance_id)


replica_ids = st.sampled_from([f"w-{i}" for i in range(6)])
spec_st = st.builds(make_spec, replica_ids, spec_hash=st.sampled_from(["h1", "h2"]),
                    policy=st.sampled_from(list(RestartPolicy)))
inst_state = st.sampled_from([InstanceState.RUNNING, InstanceState.EXITED, InstanceState.CREATED])


@settings(max_examples=200, deadline=None)
@given(
    specs=st.lists(spec_st, max_size=6, unique_by=lambda s: s.replica_id),
    existing=st.lists(st.tuples(replica_ids, st.sampled_from(["h1", "h2"]), inst_state,
                                st.sampled_from([0, 1, 137])), max_size=8),
    liveness_failed=st.sets(replica_ids),
)
def test_reconcile_is_idempotent(specs, existing, liveness_failed) -> None:  # type: ignore[no-untyped-def]
    """Apply the plan, reconcile again (at a time past any back-off): nothing left to do."""
    clock = [NOW]
    rt = FakeRuntime(node_id="n1", clock=lambda: clock[0])
    for i, (rid, h, state, code) in enumerate(existing):
        iid = f"pre-{i}"
        rt.instances[iid] = make_instance(rid, iid=iid, spec_hash=h, state=state,
                                          exit_code=code if state is EXITED else None,
                                          finished_at=NOW - 100 if state is EXITED else None, started_at=NOW - 200)
    records = {rid: ReplicaRecord(rid, liveness_failed=True) for rid in liveness_failed}

    async def run() -> None:
        plan = reconcile(specs, await rt.list(), records, NOW, CFG)
        await apply(plan, rt)
        again = reconcile(specs, await rt.list(), plan.records, NOW, CFG)
        assert again.empty, buckets(again)
        assert sorted(again.keep) == sorted(set(again.keep))
        # every desired replica has exactly one instance now, with the desired hash
        insts = await rt.list()
        for spec in specs:
            mine = [i for i in insts if i.replica_id == spec.replica_id]
            assert len(mine) == 1 and mine[0].spec_hash == spec.spec_hash
        assert {i.replica_id for i in insts} <= {s.replica_id for s in specs}
        # idempotent records too: a third pass changes nothing
        third = reconcile(specs, insts, again.records, NOW, CFG)
        assert dict(third.records) == dict(again.records)

    asyncio.run(run())


def test_replace_record_clears_failures() -> None:
    records = {"web-0": replace(ReplicaRecord("web-0"), consecutive_failures=5, next_start_at=NOW + 100)}
    plan = reconcile([make_spec(spec_hash="h2")], [make_instance(spec_hash="h1")], records, NOW, CFG)
    assert plan.records["web-0"].consecutive_failures == 0

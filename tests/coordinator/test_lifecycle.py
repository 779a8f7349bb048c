"""The workload lifecycle reconciler (coordinator/lifecycle.py): tables for each rule of its theory of operation,
and hypothesis properties run against `World`, an in-memory stand-in for the engine (buckets partition the
replicas, idempotence, the availability floor, the surge budget, convergence of a rollout)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.lifecycle import ReplicaView, WorkloadPlan
from coordinator.membership import NodeState
from coordinator.model import ReplicaPhase, RolloutPhase
from tests.coordinator.lifecycle_builders import (
    NOW,
    World,
    make_params,
    make_record,
    make_view,
    make_workload,
    pending,
    run,
)

STOPPING = ReplicaPhase.STOPPING
LOST, SUSPECT, OFFLINE = NodeState.LOST, NodeState.SUSPECT, NodeState.OFFLINE
V = make_view


def stopped(p: WorkloadPlan) -> list[str]:
    return [rid for rid, _ in p.stop]


def reasons(p: WorkloadPlan) -> set[str]:
    return {why for _, why in p.stop}


def old(n: int = 3, *, ready: bool = True) -> list[ReplicaView]:
    """n ready replicas of the previous spec (h1) on node A, created at 0, 1, 2 ... (o0 is the oldest)."""
    return [V(f"o{i}", ready=ready, created=float(i)) for i in range(n)]


def cur(*rids: str, ready: bool = True, node: str = "A") -> list[ReplicaView]:
    return [V(rid, node=node, hash="h2", ready=ready, created=float(i)) for i, rid in enumerate(rids)]


# ---- creating and scaling -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("desired", "views", "place"), [
    pytest.param(3, [], 3, id="fresh-3"),
    pytest.param(0, [], 0, id="fresh-0"),
    pytest.param(3, cur("a"), 2, id="one-of-three-running"),
    pytest.param(3, [*cur("a"), pending("p1"), pending("p2")], 0, id="pending-counts-toward-desired"),
    pytest.param(3, cur("a", "b", "c", ready=False), 0, id="unready-current-counts-toward-desired"),
    pytest.param(5, cur("a", "b", "c"), 2, id="scale-up-3-to-5"),
])
def test_create_and_scale_up_place_the_missing_replicas(desired: int, views: list[ReplicaView], place: int) -> None:
    p = run(views, w=make_workload(desired))
    assert (p.place, p.stop, p.forget) == (place, (), ())
    assert set(p.keep) == {v.record.replica_id for v in views}


@pytest.mark.parametrize(("desired", "views", "stops"), [
    pytest.param(2, [V("a", hash="h2"), V("b", hash="h2", created=1.0), pending("p")], ["p"],
                 id="pending-first"),
    pytest.param(2, [V("a", hash="h2", created=5.0), V("b", hash="h2", ready=False),
                     V("c", hash="h2", created=1.0)], ["b"], id="unready-before-ready"),
    pytest.param(2, [V("a", hash="h2"), V("b", hash="h2", observed=False), V("c", hash="h2")], ["b"],
                 id="unreported-counts-as-unready"),
    pytest.param(1, [V("a", hash="h2", created=1.0), V("b", hash="h2", created=5.0),
                     V("c", hash="h2", created=3.0)], ["b", "c"], id="newest-first"),
    pytest.param(1, [V("r1", hash="h2", created=9.0), V("u", hash="h2", ready=False), pending("p"),
                     V("r2", hash="h2", created=1.0)], ["p", "u", "r1"], id="pending-then-unready-then-newest"),
    pytest.param(0, cur("a", "b", "c"), ["c", "b", "a"], id="to-zero"),
])
def test_scale_down_stops_extras_in_order(desired: int, views: list[ReplicaView], stops: list[str]) -> None:
    p = run(views, w=make_workload(desired))
    assert stopped(p) == stops
    assert reasons(p) == {"scaled down"}
    assert p.place == 0
    assert set(p.keep) == {v.record.replica_id for v in views} - set(stops)


# ---- rolling update ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("surge", "unavailable", "min_available", "place", "stops"), [
    pytest.param(1, 0, None, 1, [], id="surge1-unavailable0"),
    # o0's stop frees one slot of the budget: 3 + 0 - (3 - 1) = 1
    pytest.param(0, 1, None, 1, ["o0"], id="surge0-unavailable1"),
    pytest.param(1, 1, None, 2, ["o0"], id="surge1-unavailable1"),  # budget 3 + 1 - (3 - 1) = 2
    pytest.param(2, 0, None, 2, [], id="surge2-unavailable0"),
    # floor 1: o0 and o1 stop; budget 3 + 2 - (3 - 2) = 4, capped by the 3 wanted
    pytest.param(2, 2, None, 3, ["o0", "o1"], id="surge2-unavailable2"),
    pytest.param(3, 3, None, 3, ["o0", "o1", "o2"], id="surge3-unavailable3"),
    pytest.param(0, 3, None, 3, ["o0", "o1", "o2"], id="surge0-unavailable3"),  # budget 3 + 0 - (3 - 3) = 3
    pytest.param(1, 1, 3, 1, [], id="minAvailable3-overrides-unavailable"),
    # floor 2 (not 3 - 2 = 1): only o0 stops; budget 3 + 0 - (3 - 1) = 1
    pytest.param(0, 2, 2, 1, ["o0"], id="minAvailable2-overrides-unavailable"),
    pytest.param(0, 1, 3, 0, [], id="minAvailable3-no-surge-waits-for-the-deadline"),
])
def test_rolling_update_first_step(surge: int, unavailable: int, min_available: int | None, place: int,
                                   stops: list[str]) -> None:
    p = run(old(3), surge=surge, unavailable=unavailable, min_available=min_available)
    assert (p.place, stopped(p)) == (place, stops)
    floor = make_params(3, surge=surge, unavailable=unavailable, min_available=min_available).floor
    assert 3 - len(stops) >= floor  # every old replica is ready: each stop costs one ready replica
    assert 3 - len(stops) + place <= 3 + surge  # the surge budget, counted after this plan's stops
    assert reasons(p) <= {"rolling update"}
    assert p.rollout_phase is RolloutPhase.PROGRESSING


@pytest.mark.parametrize(("desired", "views", "surge", "unavailable", "place", "stops"), [
    pytest.param(3, [*old(3), *cur("n0", ready=False)], 1, 0, 0, [], id="new-unready-holds-every-old"),
    # ready 4 -> 3 (the floor) after o0; budget 3 + 1 - (4 - 1) = 1 of the 2 wanted
    pytest.param(3, [*old(3), *cur("n0")], 1, 0, 1, ["o0"], id="new-ready-frees-one-old"),
    # budget 3 + 1 - (3 - 2) = 3 = wanted; ready stays 1 (already below the floor 3, not lowered)
    pytest.param(3, [V("o0"), V("o1", ready=False), V("o2", ready=False)], 1, 0, 3, ["o1", "o2"],
                 id="unready-retiring-stopped-freely"),
    # budget 2 + 1 - (2 - 1) = 2 = wanted
    pytest.param(2, [V("o0"), V("o1", observed=False)], 1, 0, 2, ["o1"], id="unreported-retiring-stopped-freely"),
    pytest.param(2, [V("o0"), pending("p", hash="h1")], 1, 0, 2, ["p"], id="pending-retiring-stopped-freely"),
    # ready 3 (o1, o2, n0) = floor: only unready o0 stops; budget 3 + 1 - (4 - 1) = 1 of the 2 wanted
    pytest.param(3, [V("o0", state=SUSPECT), V("o1", created=1.0), V("o2", created=2.0), *cur("n0")], 1, 0, 1,
                 ["o0"], id="retiring-on-suspect-node-is-unready"),
    pytest.param(3, [*old(2), *cur("n0", "n1", ready=False)], 1, 1, 0, [], id="at-the-floor-keeps-every-ready-old"),
    # floor 1: b (unready) then c (oldest ready, 2 -> 1) stop, a stays; budget 3 + 0 - (3 - 2) = 2
    pytest.param(3, [V("a", created=5.0), V("b", ready=False, created=9.0), V("c", created=1.0)], 0, 2, 2,
                 ["b", "c"], id="unready-first-then-oldest"),
])
def test_rolling_update_respects_the_floor(desired: int, views: list[ReplicaView], surge: int, unavailable: int,
                                           place: int, stops: list[str]) -> None:
    p = run(views, w=make_workload(desired), surge=surge, unavailable=unavailable)
    assert (p.place, stopped(p)) == (place, stops)
    floor = make_params(desired, surge=surge, unavailable=unavailable).floor
    ready_before = sum(v.ready for v in views)
    ready_after = ready_before - sum(v.ready for v in views if v.record.replica_id in stops)
    assert ready_after >= min(ready_before, floor)
    assert len(views) - len(stops) + place <= max(len(views), desired + surge)


def test_rollback_to_an_earlier_spec_keeps_the_replicas_that_run_it() -> None:
    # the workload goes back to h1: replicas of h1 are current again, the half-rolled h2 ones retire
    p = run([*old(3), *cur("n0")], w=make_workload(3, "h1", revision=3, phase=RolloutPhase.ROLLING_BACK))
    assert (p.place, stopped(p)) == (0, ["n0"])
    assert p.rollout_phase is RolloutPhase.ROLLING_BACK  # n0 is still active this round: settled next round


# ---- recreate ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("views", "place", "stops"), [
    pytest.param([V("o0"), V("o1", ready=False), pending("o2", hash="h1")], 0, {"o0", "o1", "o2"},
                 id="stops-every-old-one-at-once"),
    pytest.param([*cur("c0"), *old(2)], 0, {"o0", "o1"}, id="keeps-current-stops-old"),
    pytest.param([], 3, set(), id="places-when-none-left"),
    pytest.param(cur("c0"), 2, set(), id="places-the-rest-when-only-current-left"),
    pytest.param([V("s", phase=STOPPING, observed=False)], 3, set(), id="places-once-the-last-stop-is-done"),
])
def test_recreate(views: list[ReplicaView], place: int, stops: set[str]) -> None:
    p = run(views, recreate=True, surge=1, unavailable=0)
    assert (p.place, set(stopped(p))) == (place, stops)
    assert reasons(p) <= {"recreate: old revision"}


@pytest.mark.parametrize("views", [
    pytest.param([V("o0", phase=STOPPING)], id="old-stopping-still-reported"),
    pytest.param([*cur("c0"), V("o0", phase=STOPPING), V("o1", phase=STOPPING, state=OFFLINE)],
                 id="current-running-old-stopping"),
])
def test_recreate_waits_until_old_replicas_are_gone(views: list[ReplicaView]) -> None:
    p = run(views, recreate=True)
    assert p.place == 0


def test_recreate_round_two_waits_for_the_old_replicas() -> None:
    world = rollout_world(desired=3, old_count=3, recreate=True)
    world.apply(world.plan())
    assert all(r.phase == STOPPING for r in world.records.values())
    assert world.plan().place == 0


# ---- drain ------------------------------------------------------------------------------------------------------


def on_b(rid: str, *, ready: bool = True, hash: str = "h2") -> ReplicaView:
    return V(rid, node="B", hash=hash, ready=ready, draining=True)


@pytest.mark.parametrize(("views", "surge", "unavailable", "place", "stops"), [
    pytest.param([on_b("a"), *cur("b", "c")], 1, 0, 1, [], id="replacement-placed-before-stop"),
    pytest.param([on_b("a"), *cur("b", "c", "d")], 1, 0, 0, ["a"], id="stopped-once-replacement-ready"),
    pytest.param([on_b("a"), *cur("b", "c"), *cur("d", ready=False)], 1, 0, 0, [],
                 id="waits-for-the-replacement"),
    pytest.param([on_b("a", ready=False), *cur("b", "c")], 1, 0, 1, ["a"], id="unready-stopped-freely"),
    # floor 2: a stops (ready 3 -> 2) and its replacement fits the room it frees: 3 + 0 - (3 - 1) = 1
    pytest.param([on_b("a"), *cur("b", "c")], 0, 1, 1, ["a"], id="no-surge-stops-within-the-floor"),
    pytest.param([on_b("a"), on_b("b"), on_b("c")], 1, 0, 1, [], id="whole-node-draining"),
])
def test_drain(views: list[ReplicaView], surge: int, unavailable: int, place: int, stops: list[str]) -> None:
    p = run(views, surge=surge, unavailable=unavailable, w=make_workload(3, phase=RolloutPhase.COMPLETE))
    assert (p.place, stopped(p)) == (place, stops)
    assert reasons(p) <= {"node draining"}
    ready_before = sum(v.ready for v in views)
    ready_after = ready_before - sum(v.ready for v in views if v.record.replica_id in stops)
    assert ready_after >= min(ready_before, make_params(3, surge=surge, unavailable=unavailable).floor)
    assert len(views) - len(stops) + place <= max(len(views), 3 + surge)


def test_drain_reason_for_an_old_replica_is_the_rollout() -> None:
    p = run([on_b("a", hash="h1", ready=False), *cur("b", "c")])
    assert p.stop == (("a", "rolling update"),)


# ---- lost nodes and stopping replicas ---------------------------------------------------------------------------


@pytest.mark.parametrize(("views", "place", "replace", "stops"), [
    pytest.param([*cur("a"), V("b", node="L", hash="h2", state=LOST), V("c", node="L", hash="h2", state=LOST)],
                 2, ("b", "c"), [], id="replaced"),
    pytest.param([*cur("a", "b"), V("l", node="L", hash="h2", state=LOST)], 1, ("l",), [],
                 id="replacement-counted-once"),
    pytest.param([*cur("a", "b"), pending("p")], 0, (), [], id="pending-is-not-lost"),
    pytest.param([*cur("a", "b"), V("s", node="S", hash="h2", state=SUSPECT)], 0, (), [], id="suspect-is-kept"),
    pytest.param([*cur("a", "b"), V("s", node="S", hash="h2", state=OFFLINE)], 0, (), [], id="offline-is-kept"),
    pytest.param([V("o0"), V("o1", created=1.0), V("o2", node="L", state=LOST)], 2, ("o2",), [],
                 id="lost-during-rollout"),
])
def test_lost_node(views: list[ReplicaView], place: int, replace: tuple[str, ...], stops: list[str]) -> None:
    p = run(views)
    assert (p.place, p.replace, stopped(p)) == (place, replace, stops)
    assert set(replace) <= set(p.forget)
    assert not set(replace) & set(p.keep)


@pytest.mark.parametrize(("view", "forgotten"), [
    pytest.param(V("s", hash="h2", phase=STOPPING), False, id="still-reported"),
    pytest.param(V("s", hash="h2", phase=STOPPING, observed=False), True, id="no-longer-reported"),
    pytest.param(V("s", hash="h2", phase=STOPPING, state=LOST), True, id="node-lost"),
    pytest.param(V("s", node="gone", hash="h2", phase=STOPPING, state=None), True, id="node-unknown"),
    pytest.param(V("s", hash="h2", phase=STOPPING, state=OFFLINE), False, id="node-offline-waits"),
    pytest.param(V("s", hash="h2", phase=STOPPING, state=SUSPECT), False, id="node-suspect-waits"),
])
def test_stopping_replica_forgotten_once_its_node_no_longer_reports_it(view: ReplicaView, forgotten: bool) -> None:
    p = run([*cur("a", "b", "c"), view])
    assert (p.forget == ("s",)) is forgotten
    assert p.place == 0 and p.stop == ()  # a stopping replica is neither active nor kept
    assert p.keep == ("a", "b", "c")


# ---- delete -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("views", "stops", "forget", "done"), [
    pytest.param([V("a", hash="h2"), pending("p")], ["a"], ("p",), False, id="stops-assigned-forgets-pending"),
    pytest.param([V("s", phase=STOPPING)], [], (), False, id="waits-for-stopping"),
    pytest.param([V("s", phase=STOPPING, state=OFFLINE)], [], (), False, id="waits-for-offline-node"),
    pytest.param([], [], (), True, id="done-when-nothing-left"),
    pytest.param([V("s", phase=STOPPING, observed=False)], [], ("s",), True, id="done-when-last-stop-is-done"),
    pytest.param([pending("p")], [], ("p",), True, id="pending-only"),
    pytest.param([V("l", node="L", state=LOST)], [], ("l",), False, id="lost-forgotten-then-done-next-round"),
])
def test_delete(views: list[ReplicaView], stops: list[str], forget: tuple[str, ...], done: bool) -> None:
    p = run(views, w=make_workload(3, deleting=True))
    assert (stopped(p), p.forget, p.delete_workload) == (stops, forget, done)
    assert p.place == 0 and p.keep == ()
    assert reasons(p) <= {"workload deleted"}


# ---- rollout progress -------------------------------------------------------------------------------------------

SETTLED = cur("a", "b", "c")
UNSETTLED = [*cur("a", "b"), *cur("c", ready=False)]
LATE, EARLY = NOW - 601.0, NOW - 10.0
PP, RB, DONE, RBD, FAIL = (RolloutPhase.PROGRESSING, RolloutPhase.ROLLING_BACK, RolloutPhase.COMPLETE,
                           RolloutPhase.ROLLED_BACK, RolloutPhase.FAILED)


@pytest.mark.parametrize(("phase", "views", "started", "auto", "previous", "expect", "rollback", "message"), [
    pytest.param(PP, SETTLED, EARLY, True, True, DONE, False, "revision 2 available", id="progressing-settles"),
    pytest.param(PP, UNSETTLED, EARLY, True, True, PP, False, "m", id="progressing-waits"),
    pytest.param(PP, UNSETTLED, NOW - 600.0, True, True, PP, False, "m", id="deadline-is-exclusive"),
    pytest.param(PP, UNSETTLED, LATE, True, True, PP, True,
                 "revision 2 not ready within 600s (2/3 ready): rolling back", id="late-rolls-back"),
    pytest.param(PP, UNSETTLED, LATE, False, True, FAIL, False, "revision 2 not ready within 600s (2/3 ready)",
                 id="late-without-autoRollback-fails"),
    pytest.param(PP, UNSETTLED, LATE, True, False, FAIL, False, "revision 2 not ready within 600s (2/3 ready)",
                 id="late-without-previous-revision-fails"),
    pytest.param(RB, SETTLED, EARLY, True, True, RBD, False, "rolled back: revision 2 available",
                 id="rolling-back-settles"),
    pytest.param(RB, UNSETTLED, LATE, True, True, FAIL, False, "revision 2 not ready within 600s (2/3 ready)",
                 id="rolling-back-late-fails-without-second-rollback"),
    pytest.param(FAIL, UNSETTLED, LATE, True, True, FAIL, False, "m", id="failed-stays-failed"),
    pytest.param(FAIL, SETTLED, LATE, True, True, DONE, False, "revision 2 available", id="failed-recovers"),
    pytest.param(DONE, UNSETTLED, LATE, True, True, DONE, False, "m", id="complete-stays-complete"),
    pytest.param(RBD, UNSETTLED, LATE, True, True, RBD, False, "m", id="rolled-back-stays"),
])
def test_rollout_phase(phase: RolloutPhase, views: list[ReplicaView], started: float, auto: bool, previous: bool,
                       expect: RolloutPhase, rollback: bool, message: str) -> None:
    w = make_workload(3, phase=phase, started_at=started, message="m")
    p = run(views, w=w, auto_rollback=auto, previous=previous)
    assert (p.rollout_phase, p.rollback, p.rollout_message) == (expect, rollback, message)


@pytest.mark.parametrize("views", [
    pytest.param([*SETTLED, V("o0")], id="an-old-replica-still-active"),
    pytest.param(cur("a", "b"), id="fewer-than-desired"),
    pytest.param([*cur("a", "b"), on_b("c")], id="a-current-replica-on-a-draining-node"),
    pytest.param([*cur("a", "b"), V("c", hash="h2", state=SUSPECT)], id="a-replica-on-a-suspect-node"),
])
def test_not_settled(views: list[ReplicaView]) -> None:
    assert run(views).rollout_phase is RolloutPhase.PROGRESSING


def test_settled_ignores_replicas_still_stopping() -> None:
    assert run([*SETTLED, V("o0", phase=STOPPING)]).rollout_phase is RolloutPhase.COMPLETE


def test_counts() -> None:
    p = run([*old(2), *cur("n0"), *cur("n1", ready=False), V("s", hash="h2", phase=STOPPING)], surge=2)
    assert p.counts == {"desired": 3, "current": 2, "ready": 3, "updated": 2, "available": 3}


# ---- properties -------------------------------------------------------------------------------------------------

NODES = ("A", "B", "C")
sometimes = st.sampled_from([False, False, False, True])


@st.composite
def param_sets(draw: st.DrawFn, desired: int) -> dict[str, Any]:
    surge, unavailable = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    return {"surge": surge, "unavailable": unavailable or (0 if surge else 1),  # as rollout_params: never 0/0
            "min_available": draw(st.none() | st.integers(0, desired + 1)), "recreate": draw(sometimes)}


@st.composite
def worlds(draw: st.DrawFn) -> World:
    """Anything plan() can be handed: replicas of both revisions in every phase, on nodes in every state."""
    desired = draw(st.integers(0, 5))
    w = make_workload(desired, deleting=draw(sometimes), phase=draw(st.sampled_from(list(RolloutPhase))))
    nodes = {n: draw(st.sampled_from(list(NodeState))) for n in NODES}
    draining = set(draw(st.lists(st.sampled_from(NODES), unique=True, max_size=2)))
    world = World(w, make_params(desired, **draw(param_sets(desired))), nodes, draining)
    for i in range(draw(st.integers(0, 8))):
        node = draw(st.sampled_from([None, *NODES, "gone"]))  # "gone": a node membership does not know
        phase = STOPPING if node is not None and draw(sometimes) else None
        record = make_record(f"r{i}", node=node, hash=draw(st.sampled_from(["h1", "h2"])), phase=phase,
                             created=float(draw(st.integers(0, 5))))
        world.add(record, observed=draw(st.sampled_from([None, False, True])) if node else None)
    return world


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_buckets_partition_the_replicas(world: World) -> None:
    views = world.views()
    p = world.plan()
    stops = stopped(p)
    assert len(set(stops)) == len(stops) and len(set(p.forget)) == len(p.forget)
    assert set(p.replace) <= set(p.forget)
    buckets = [set(stops), set(p.keep), set(p.forget)]
    assert all(not (a & b) for i, a in enumerate(buckets) for b in buckets[i + 1:])
    waiting = {v.record.replica_id for v in views if v.record.phase == STOPPING} - set(p.forget)
    assert set().union(*buckets) | waiting == {v.record.replica_id for v in views}
    assert not waiting & set(stops)
    assert p.place >= 0
    if world.w.deleting:
        assert p.place == 0


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_idempotent_after_one_catch_up_round(world: World) -> None:
    """Apply the plan, diff again, get nothing (the world unchanged between rounds: the engine applies the plan,
    nodes have not acted yet):

    - round 2 places nothing, stops nothing and replaces nothing: round 1 already used the surge room its own
      stops freed, and Recreate waits for the old replicas it stopped;
    - round 2 forgets exactly the replicas round 1 stopped that no node reports (unreported, or an unknown node):
      the one catch-up, as the stop of those is already complete;
    - one exception, Recreate: when round 1 stopped old replicas that were already gone (pending: the engine
      deletes them at once; unreported: forgotten in round 2) and no old replica is left after round 2's
      forgets, round 2 places the new revision (only for unreported ones now: a pending old replica no
      longer holds the new revision back, test_recreate_does_not_wait_a_round_for_a_pending_old_replica);
    - round 3 is empty.
    """
    before = {v.record.replica_id: v for v in world.views()}
    first = world.plan()
    world.apply(first)
    if first.delete_workload:
        return
    second = world.plan()
    assert (second.stop, second.replace) == ((), ())
    unreported = {rid for rid in stopped(first) if before[rid].record.node is not None
                  and (before[rid].observed is None or before[rid].node_state is None)}
    assert set(second.forget) == unreported
    if second.place:
        assert world.params.recreate and not world.w.deleting
        old_already_gone = [rid for rid in stopped(first) if before[rid].record.spec_hash != world.w.spec_hash
                            and (before[rid].record.node is None or rid in unreported)]
        old_left = [r for r in world.records.values()
                    if r.spec_hash != world.w.spec_hash and r.replica_id not in second.forget]
        assert old_already_gone and not old_left
    world.apply(second)
    if second.delete_workload:
        return
    third = world.plan()
    assert (third.place, third.stop, third.forget, third.replace) == (0, (), (), ())


def test_second_round_places_nothing() -> None:
    world = rollout_world(desired=3, old_count=3, surge=1, unavailable=1)
    first = world.plan()
    assert stopped(first) == ["o0"]  # ready 3 -> 2, the floor: nothing else may stop
    assert first.place == 2  # o0's stop leaves room for 2 within desired + maxSurge = 4: 3 + 1 - (3 - 1)
    world.apply(first)
    second = world.plan()
    assert (second.place, second.stop, second.forget) == (0, (), ())


def test_recreate_does_not_wait_a_round_for_a_pending_old_replica() -> None:
    world = World(make_workload(3), make_params(3, recreate=True), {"A": NodeState.ONLINE})
    world.add(make_record("o0", node=None))  # never scheduled: no container to wait for
    first = world.plan()
    assert first.stop == (("o0", "recreate: old revision"),) and first.place == 3  # nothing old ever ran
    world.apply(first)
    assert "o0" not in world.records
    assert world.plan().place == 0  # round 2: nothing more


def rollout_world(*, desired: int, old_count: int, draining: frozenset[str] = frozenset(), nodes: int = 3,
                  **params: Any) -> World:
    """A rollout from h1 to h2 that just started: `old_count` ready h1 replicas spread over the nodes."""
    names = NODES[:nodes]
    world = World(make_workload(desired), make_params(desired, **params),
                  {n: NodeState.ONLINE for n in names}, set(draining))
    for i in range(old_count):
        world.add(make_record(f"o{i}", node=names[i % len(names)], created=float(i)), observed=True)
    return world


@st.composite
def rollouts(draw: st.DrawFn) -> World:
    desired = draw(st.integers(1, 5))
    draining = frozenset(draw(st.lists(st.sampled_from(NODES[1:]), unique=True, max_size=1)))
    return rollout_world(desired=desired, old_count=draw(st.integers(0, desired + 2)), draining=draining,
                         **draw(param_sets(desired)))


@settings(max_examples=150, deadline=None)
@given(rollouts(), st.data())
def test_rollout_keeps_the_floor_and_the_surge_budget(world: World, data: st.DataObject) -> None:
    """(b) a plan never takes the ready count below the floor (or below where it already was), and (d) never
    grows the active replicas past desired + maxSurge (or past where they already were); with every old replica
    ready at the start, ready >= floor and active <= desired + maxSurge hold at every step. Recreate has no
    floor by design (every old replica stops first), so for it the floor is 0."""
    ceiling = world.params.desired + world.params.max_surge
    floor = 0 if world.params.recreate else world.params.floor
    within_from_start = world.ready_count() >= floor and len(world.active()) <= ceiling
    for _ in range(30):
        ready, active = world.ready_count(), len(world.active())
        world.apply(world.plan())
        assert world.ready_count() >= min(ready, floor)
        assert len(world.active()) <= max(active, ceiling)
        world.schedule()
        world.node_step(ready=lambda _r: data.draw(st.booleans()), finish_stop=lambda _r: data.draw(st.booleans()))
        world.now += 1.0
        if within_from_start:
            assert world.ready_count() >= floor and len(world.active()) <= ceiling
        if world.w.rollout_phase is RolloutPhase.COMPLETE:
            break


@settings(max_examples=150, deadline=None)
@given(rollouts())
def test_rollout_converges(world: World) -> None:
    """(c) every new replica ready one step after it is placed, stops done at once, nodes healthy: the rollout
    completes with exactly `desired` current replicas, all ready. (floor == desired with maxSurge 0 can never
    progress, see `minAvailable3-no-surge-waits-for-the-deadline`, so it is left out.)"""
    params = world.params
    if params.floor == params.desired and params.max_surge == 0:
        return
    steps = 4 * (params.desired + len(world.records)) + 10
    for _ in range(steps):
        world.apply(world.plan())
        world.schedule()
        world.node_step(ready=lambda r: r.replica_id in world.observed, finish_stop=lambda _r: True)
        world.now += 1.0
        if world.w.rollout_phase is RolloutPhase.COMPLETE:
            break
    assert world.w.rollout_phase is RolloutPhase.COMPLETE, world.w
    current = world.current()
    assert len(current) == len(world.active()) == params.desired
    assert all(v.ready and not v.node_draining for v in current)

"""A replica a node refuses (issue 15, Deliver 4): the lifecycle core names it, the adapter's record change sends it
back to pending with the refusing node remembered, and the scheduler then places it on a node that can run it —
or says, per node, why none can. Pull and start failures become Warning events once per cause."""

from __future__ import annotations

from dataclasses import replace

from broker.wire import NodeFacts, ObservedState, ReplicaObserved, ReplicaState
from coordinator import lifecycle, replica_events
from coordinator.lifecycle import ReplicaView
from coordinator.membership import NodeState
from coordinator.model import ReplicaPhase
from coordinator.scheduler import Placement, PlacementRequest, Snapshot, Unschedulable, schedule_many
from coordinator.spec import parse_workload
from tests.coordinator.builders import make_node
from tests.coordinator.lifecycle_builders import make_record, make_view, make_workload, run

REMAP = NodeFacts.REFUSED + "the process runtime cannot remap ports: hostPort 18081 != containerPort 8080"


def refused_view(rid: str = "web-1", node: str = "phone", hash: str = "h2") -> ReplicaView:
    seen = ReplicaObserved(replica_id=rid, workload="web", state=ReplicaState.FAILED, last_error=REMAP)
    return ReplicaView(record=make_record(rid, node=node, hash=hash), node_state=NodeState.ONLINE, observed=seen)


def test_a_refused_replica_is_named_and_nothing_extra_is_placed() -> None:
    p = run([make_view("web-0", hash="h2"), refused_view(), make_view("web-2", node="B", hash="h2")])
    assert p.refused == (("web-1", "phone", REMAP[len(NodeFacts.REFUSED):]),)
    assert p.place == 0 and p.stop == () and "web-1" in p.keep


def test_a_crash_or_an_offline_node_is_not_a_refusal() -> None:
    crashed = replace(refused_view(), observed=ReplicaObserved(replica_id="web-1", workload="web",
                                                               state=ReplicaState.FAILED, last_error="exit 1"))
    offline = replace(refused_view(), node_state=NodeState.SUSPECT)
    old_spec = refused_view(hash="h1")  # retiring: the rollout replaces it anyway
    for v in (crashed, offline, old_spec):
        assert run([make_view("web-0", hash="h2"), v, make_view("web-2", node="B", hash="h2")]).refused == ()


def test_unassign_remembers_every_refusing_node() -> None:
    r = make_record("web-1", node="phone", hash="h2")
    once = lifecycle.unassign_refused(r, "phone", "cannot remap ports")
    assert (once.node, once.phase, once.assigned_at) == (None, ReplicaPhase.PENDING, None)
    assert once.message == "replica web-1 refused by node phone: cannot remap ports; placing it on another node"
    twice = lifecycle.unassign_refused(replace(once, node="tablet", phase=ReplicaPhase.ASSIGNED), "tablet", "no")
    assert lifecycle.refused_nodes(twice) == {"phone": "cannot remap ports", "tablet": "no"}
    # once pending again, nothing is refused any more: applying the plan and planning again is quiet
    assert run([make_view("web-0", hash="h2"), ReplicaView(twice, None), make_view("web-2", "B", "h2")]).refused == ()


def test_refused_then_placed_elsewhere_or_explained() -> None:
    """Through the pure parts: a node whose abilities are unknown (not filtered up front) refused the replica; it
    goes to the Podman node, and with no other node the reason names the refusing one."""
    w = parse_workload({"apiVersion": "cloudless/v1", "kind": "Workload", "metadata": {"name": "web"},
                        "spec": {"image": "busybox", "command": ["httpd"], "ports": [{"containerPort": 8080}]}})
    nodes = (make_node("phone"), make_node("podman-1", abilities=frozenset({"containers", "images"})))
    r = lifecycle.unassign_refused(make_record("web-1", node="phone", hash="h2"), "phone", "cannot remap ports")
    request = PlacementRequest.for_replica(w, r.replica_id, refused_by=lifecycle.refused_nodes(r))
    [placed] = schedule_many(Snapshot(nodes), [request], seed=1)
    assert isinstance(placed, Placement) and placed.node_id == "podman-1"
    [none] = schedule_many(Snapshot(nodes[:1]), [request], seed=1)
    assert isinstance(none, Unschedulable)
    assert none.detail() == ("0/1 nodes available: 1 refused by the node; phone: refused by the node: cannot remap "
                             "ports")


def test_the_workload_record_is_untouched_by_refusals() -> None:
    w = make_workload()
    assert run([refused_view()], w=w, desired=1).rollout_phase == w.rollout_phase


# ---- Warning events from observed state ----------------------------------------------------------------------

def observed(*replicas: ReplicaObserved) -> ObservedState:
    return ObservedState(node_id="pi-1", generation=1, epoch=1, ts=1.0, replicas=replicas)


def seen(state: ReplicaState, error: str = "", rid: str = "web-0") -> ReplicaObserved:
    return ReplicaObserved(replica_id=rid, workload="web", state=state, last_error=error)


BACKOFF = "ImagePullBackOff: docker.io/library/nosuch: manifest unknown ({}retry in {}s)"


def test_a_failing_pull_is_one_event_however_often_it_retries() -> None:
    first = observed(seen(ReplicaState.PULLING, BACKOFF.format("attempt 1, ", 2)))
    [ev] = replica_events.warnings(observed(seen(ReplicaState.PULLING)), first)
    assert (ev.reason, ev.replica_id, ev.node_id) == ("ErrImagePull", "web-0", "pi-1")
    assert ev.message == "replica web-0 on pi-1 cannot pull its image: docker.io/library/nosuch: manifest unknown"
    retrying = observed(seen(ReplicaState.PULLING, "ErrImagePull: docker.io/library/nosuch: manifest unknown"))
    later = observed(seen(ReplicaState.PULLING, BACKOFF.format("attempt 4, ", 64)))
    assert replica_events.warnings(first, retrying) == () and replica_events.warnings(retrying, later) == ()
    other = observed(seen(ReplicaState.PULLING, "ErrImagePull: registry unreachable"))
    assert [e.reason for e in replica_events.warnings(later, other)] == ["ErrImagePull"]


def test_start_failures_and_crash_loops_are_events_but_refusals_are_the_lifecycles() -> None:
    runc = "cannot start: error setting rlimit type 7: operation not permitted"
    evs = replica_events.warnings(None, observed(seen(ReplicaState.FAILED, runc),
                                                 seen(ReplicaState.CRASH_LOOP, "exited 1", rid="web-1"),
                                                 seen(ReplicaState.FAILED, REMAP, rid="web-2"),
                                                 seen(ReplicaState.RUNNING, rid="web-3")))
    assert [(e.reason, e.replica_id) for e in evs] == [("ReplicaFailed", "web-0"), ("CrashLoopBackOff", "web-1")]
    assert replica_events.warnings(observed(seen(ReplicaState.FAILED, runc)),
                                   observed(seen(ReplicaState.FAILED, runc))) == ()

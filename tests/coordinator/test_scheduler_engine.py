from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from coordinator.errors import ConfigError, SnapshotError
from coordinator.scheduler import (
    NodeView,
    Placement,
    PlacementRequest,
    Reject,
    SchedulerConfig,
    SchedulingPass,
    Unschedulable,
    schedule,
    schedule_many,
)
from coordinator.scheduler.model import DESIRED_MAX_REPLICAS
from coordinator.spec import Operator, PreferredTerm, Scope, Spread, Strategy, parse_workload
from tests.coordinator.builders import make_node, make_request, make_snapshot
from tests.coordinator.documents import example


def placed(result: Placement | Unschedulable) -> str:
    assert isinstance(result, Placement), getattr(result, "summary", result)
    return result.node_id


def replicas(n: int, **kw: object) -> list[PlacementRequest]:
    shape = make_request(**kw)  # type: ignore[arg-type]
    return [dataclasses.replace(shape, replica_id=f"web-{i}") for i in range(n)]


def test_places_on_the_best_node_and_explains_the_score() -> None:
    snap = make_snapshot(make_node("flaky", reliability=0.2), make_node("solid", reliability=1.0))
    result = schedule(snap, make_request(cpu="100m"))
    assert isinstance(result, Placement) and result.node_id == "solid"
    assert result.breakdown["reliability"] == 100.0
    assert set(result.breakdown) == {"locality", "reliability", "cost", "network", "taints", "utilization", "spread"}
    assert 0 < result.score <= 100


def test_summary_counts_reasons_like_kubernetes() -> None:
    snap = make_snapshot(
        make_node("a", mem="1Gi", used_mem="992Mi"),
        make_node("b", mem="1Gi", used_mem="1000Mi"),
        make_node("c", mem="1Gi", used_mem="1Gi"),
        make_node("d", cordoned=True),
        make_node("e", cordoned=True),
    )
    result = schedule(snap, make_request(mem="64Mi"))
    assert isinstance(result, Unschedulable)
    assert result.summary == "0/5 nodes available: 3 insufficient memory, 2 cordoned"
    assert result.reasons["a"] == Reject("insufficient memory: requested 64Mi, free 32Mi", True)
    assert result.reasons["d"] == Reject("cordoned", True)
    assert result.resolvable


def test_unresolvable_when_no_reason_can_go_away() -> None:
    snap = make_snapshot(make_node("a", arch="armv7"), make_node("b", arch="armv7"))
    result = schedule(snap, make_request(archs=("x86_64",)))
    assert isinstance(result, Unschedulable) and not result.resolvable
    assert result.summary == "0/2 nodes available: 2 arch mismatch"


def test_empty_cluster() -> None:
    result = schedule(make_snapshot(), make_request())
    assert result == Unschedulable({}, "0/0 nodes available: no nodes")


def test_one_pass_never_double_books() -> None:
    snap = make_snapshot(make_node("a", cpu="1", mem="1Gi"), make_node("b", cpu="1", mem="1Gi"))
    results = schedule_many(snap, replicas(5, cpu="400m", mem="100Mi"))
    nodes = [r.node_id for r in results if isinstance(r, Placement)]
    assert sorted(nodes) == ["a", "a", "b", "b"]
    last = results[-1]
    assert isinstance(last, Unschedulable)
    assert last.summary == "0/2 nodes available: 2 insufficient cpu"
    assert last.reasons["a"].reason == "insufficient cpu: requested 400m, free 200m"


def test_working_copy_records_placements() -> None:
    sched = SchedulingPass(make_snapshot(make_node("a", cpu="2", host_ports=frozenset({"53/UDP"})), revision=7))
    sched.place(make_request("default/web", cpu="500m", mem="64Mi", host_ports=("80/TCP",)))
    (node,) = sched.nodes
    assert (node.allocated_cpu_millis, node.allocated_memory_bytes, node.replicas) == (500, 64 * 2**20, 1)
    assert node.workloads == {"default/web": 1} and node.host_ports == {"53/UDP", "80/TCP"}
    assert sched.snapshot().revision == 7


def test_spread_strategy_prefers_empty_nodes_and_binpack_full_ones() -> None:
    snap = make_snapshot(make_node("busy", used_cpu="1500m", used_mem="768Mi"), make_node("idle"))
    assert placed(schedule(snap, make_request(strategy=Strategy.SPREAD))) == "idle"
    assert placed(schedule(snap, make_request(strategy=Strategy.BINPACK))) == "busy"


def test_binpack_keeps_filling_the_node_it_chose() -> None:
    snap = make_snapshot(*(make_node(f"n{i}", cpu="2") for i in range(4)))
    results = schedule_many(snap, replicas(4, cpu="500m", strategy=Strategy.BINPACK))
    assert len({placed(r) for r in results}) == 1


def test_zone_spread_uses_every_zone_before_doubling_up() -> None:
    snap = make_snapshot(*(make_node(f"{z}{i}", zone=z, cpu="8") for z in ("a", "b", "c") for i in range(3)))
    results = schedule_many(snap, replicas(6, cpu="100m", spread=Spread.ZONE))
    zones = [placed(r)[0] for r in results]
    assert sorted(zones[:3]) == ["a", "b", "c"] and sorted(zones[3:]) == ["a", "b", "c"]


def test_node_spread_and_self_anti_affinity() -> None:
    snap = make_snapshot(*(make_node(f"n{i}", cpu="8") for i in range(3)))
    spread = schedule_many(snap, replicas(3, spread=Spread.NODE))
    assert len({placed(r) for r in spread}) == 3
    anti = schedule_many(snap, replicas(4, anti_affinity=("default/web",), anti_affinity_scope=Scope.NODE))
    assert len({placed(r) for r in anti[:3]}) == 3
    assert isinstance(anti[3], Unschedulable)
    assert anti[3].summary == "0/3 nodes available: 3 anti-affinity"


def test_zone_anti_affinity_against_another_workload() -> None:
    snap = make_snapshot(
        make_node("home-1", zone="home", workloads={"default/db": 1}),
        make_node("home-2", zone="home"),
        make_node("office-1", zone="office"),
    )
    request = make_request(anti_affinity=("default/db",), anti_affinity_scope=Scope.ZONE)
    assert placed(schedule(snap, request)) == "office-1"


def test_locality_prefers_the_named_zone() -> None:
    snap = make_snapshot(make_node("a", zone="office"), make_node("b", zone="home"))
    request = make_request(preferred=(PreferredTerm(100, "cloudless.io/zone", Operator.IN, ("home",)),))
    assert placed(schedule(snap, request)) == "b"


def test_weights_steer_the_choice() -> None:
    snap = make_snapshot(make_node("cheap-flaky", cost=0.1, reliability=0.5), make_node("dear-solid", cost=5.0))
    request = make_request()
    assert placed(schedule(snap, request, SchedulerConfig(cost_weight=10))) == "cheap-flaky"
    assert placed(schedule(snap, request, SchedulerConfig(reliability_weight=10))) == "dear-solid"


def test_ties_break_by_seed_and_workload_not_by_node_order() -> None:
    snap = make_snapshot(*(make_node(f"n{i}") for i in range(20)))
    request = make_request()
    chosen = {placed(schedule(snap, request, seed=s)) for s in range(10)}
    assert len(chosen) > 1  # the seed matters...
    shuffled = make_snapshot(*reversed(snap.nodes))
    assert placed(schedule(shuffled, request, seed=3)) == placed(schedule(snap, request, seed=3))  # ...order doesn't
    others = {placed(schedule(snap, make_request(f"default/w{i}"), seed=3)) for i in range(10)}
    assert len(others) > 1  # equal workloads do not all pile onto one node


def test_group_cache_eviction_does_not_change_results() -> None:
    snap = make_snapshot(*(make_node(f"n{i}", cpu="2", zone=f"z{i % 3}") for i in range(9)))
    requests = [
        dataclasses.replace(make_request(f"default/w{i % 5}", cpu="300m", spread=Spread.ZONE), replica_id=f"r{i}")
        for i in range(30)
    ]
    assert schedule_many(snap, requests, SchedulerConfig(max_cached_groups=1)) == schedule_many(snap, requests)


def test_repeated_unschedulable_results_stay_current() -> None:
    snap = make_snapshot(make_node("a", cpu="1"), make_node("b", cpu="1"))
    big = make_request("default/big", cpu="2")
    small = make_request("default/small", cpu="600m")
    results = schedule_many(snap, [big, small, big])
    first, last = results[0], results[2]
    assert isinstance(first, Unschedulable) and isinstance(last, Unschedulable)
    assert first.reasons["a"].reason == "insufficient cpu: requested 2, allocatable 1"
    assert last == first  # the small one landed somewhere, but "allocatable" does not change


def test_workload_to_request_to_placement() -> None:
    workload = parse_workload(example())
    nodes = [
        make_node("pi", arch="aarch64", zone="home", region="eu", labels={"disk": "ssd", "class": "pi"}),
        make_node("phone", arch="aarch64", zone="home", region="eu", labels={"disk": "ssd", "class": "phone"}),
        make_node("vps", arch="x86_64", zone="cloud", region="eu", labels={"disk": "ssd"}),
    ]
    result = schedule(make_snapshot(*nodes), PlacementRequest.for_replica(workload, "web-0"))
    assert placed(result) == "pi"


def test_duplicate_node_ids_are_a_bug_in_the_caller() -> None:
    with pytest.raises(SnapshotError):
        schedule(make_snapshot(make_node("a"), make_node("a")), make_request())


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError):
        SchedulerConfig(cost_weight=-1)
    with pytest.raises(ConfigError):
        SchedulerConfig(max_cached_groups=0)


def test_all_weights_zero_still_places_deterministically() -> None:
    zero = SchedulerConfig(
        locality_weight=0,
        reliability_weight=0,
        cost_weight=0,
        utilization_weight=0,
        network_weight=0,
        spread_weight=0,
        taint_weight=0,
    )
    snap = make_snapshot(make_node("a"), make_node("b"))
    result = schedule(snap, make_request(), zero, seed=1)
    assert isinstance(result, Placement) and result.score == 0.0 and result.breakdown == {}
    assert result == schedule(snap, make_request(), zero, seed=1)


def test_binpack_sees_a_node_another_workload_just_filled() -> None:
    # b's ranking was built when "x" was the fullest node; then "a" fills "y". b's next replica must see that
    # (the engine re-ranks nodes placed on since a binpack group last ran; without it, it would pick "x").
    snap = make_snapshot(
        make_node("x", cpu="4", mem="4Gi", used_cpu="1", labels={"role": "x"}),
        make_node("y", cpu="4", mem="4Gi", labels={"role": "y"}),
    )
    b = replicas(2, cpu="100m", strategy=Strategy.BINPACK)
    b = [dataclasses.replace(r, workload="default/b") for r in b]
    a = make_request("default/a", cpu="3500m", node_selector=(("role", "y"),), replica_id="a-0")
    results = SchedulingPass(snap).place_all([b[0], a, b[1]])  # strictly in this order
    assert [placed(r) for r in results] == ["x", "y", "y"]


def test_zone_anti_affinity_reason_is_refreshed_when_the_zone_changes() -> None:
    # "web" avoids db and cache zone-wide: cache already runs in zone z. Then db lands on "z-1"; web's reason
    # for "z-2" (nothing was placed on z-2 itself) must now name db, the first listed, as a fresh check would.
    snap = make_snapshot(
        make_node("z-1", zone="z", labels={"role": "db"}, workloads={"default/cache": 1}),
        make_node("z-2", zone="z"),
    )
    web = make_request("default/web", anti_affinity=("default/db", "default/cache"), anti_affinity_scope=Scope.ZONE)
    db = make_request("default/db", node_selector=(("role", "db"),), replica_id="db-0")
    results = SchedulingPass(snap).place_all([web, db, dataclasses.replace(web, replica_id="web-1")])
    first, last = results[0], results[2]
    assert isinstance(first, Unschedulable) and isinstance(last, Unschedulable)
    assert placed(results[1]) == "z-1"
    assert first.reasons["z-2"] == Reject("anti-affinity: default/cache runs in zone z", True)
    assert last.reasons["z-2"] == Reject("anti-affinity: default/db runs in zone z", True)


def test_schedule_many_places_workload_by_workload_and_answers_in_request_order() -> None:
    snap = make_snapshot(make_node("a", cpu="1"), make_node("b", cpu="1"))
    a = [make_request("default/a", cpu="600m", replica_id=f"a-{i}") for i in range(2)]
    b = [make_request("default/b", cpu="600m", replica_id=f"b-{i}") for i in range(2)]
    mixed = [a[0], b[0], a[1], b[1]]
    results = schedule_many(snap, mixed)
    grouped = SchedulingPass(snap).place_all([a[0], a[1], b[0], b[1]])
    assert results == [grouped[0], grouped[2], grouped[1], grouped[3]]
    assert [type(r).__name__ for r in results] == ["Placement", "Unschedulable", "Placement", "Unschedulable"]


def test_a_node_takes_no_more_replicas_than_one_desired_state_carries() -> None:
    """10,000 tiny replicas may fit one big node's CPU and memory, not its desired-state message (issue 17): the
    engine stops at the wire's item cap and says why for the rest."""
    snap = make_snapshot(make_node("big", cpu="1000", mem="1Ti"))
    results = schedule_many(snap, replicas(DESIRED_MAX_REPLICAS + 3, cpu="1m", mem="1Mi"))
    assert [placed(r) for r in results[:DESIRED_MAX_REPLICAS]] == ["big"] * DESIRED_MAX_REPLICAS
    rest = results[DESIRED_MAX_REPLICAS:]
    assert all(isinstance(r, Unschedulable) and r.summary == "0/1 nodes available: 1 desired state too large"
               for r in rest), rest[0]


def _fleet(n: int) -> list[NodeView]:
    """Alike nodes whose live usage differs (as heartbeats report it), reliability too: small replicas barely move
    either, which is why utilization alone stacked them."""
    return [make_node(f"n{i:02d}", cpu="4", mem="4Gi", utilization=0.1 + 0.3 * ((i * 7) % n) / n,
                      reliability=1.0 - 0.01 * (i % 5)) for i in range(n)]


@pytest.mark.parametrize(("replicas", "workloads", "nodes", "distinct"), [
    (10, 1, 20, 10),  # issue 17: ten 10m replicas landed on 2 of 20 nodes
    (20, 1, 20, 20),
    (30, 1, 20, 20),  # more replicas than nodes: every node gets one before any gets a third
    (10, 10, 20, 10),  # ten one-replica workloads: other workloads' replicas count too
], ids=["10-on-20", "20-on-20", "30-on-20", "10-workloads-on-20"])
def test_small_replicas_spread_over_as_many_nodes_as_fit(replicas: int, workloads: int, nodes: int,
                                                         distinct: int) -> None:
    requests = [dataclasses.replace(make_request(f"default/w{i % workloads}", cpu="10m", mem="8Mi"),
                                    replica_id=f"r{i}") for i in range(replicas)]
    results = schedule_many(make_snapshot(*_fleet(nodes)), requests)
    per_node = Counter(placed(r) for r in results)
    assert len(per_node) == distinct
    assert max(per_node.values()) - min(per_node.values()) <= 1


def test_binpack_still_packs_small_replicas() -> None:
    requests = replicas(10, cpu="10m", mem="8Mi", strategy=Strategy.BINPACK)
    results = schedule_many(make_snapshot(*_fleet(20)), requests)
    assert len({placed(r) for r in results}) == 1


def test_prepare_steps_checks_static_filters_in_bounded_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    """A workload's static rejections come in stages of at most CHECKS_PER_STEP filter checks and each scorer's
    column in stages of SCORES_PER_STEP nodes (at 5,000 nodes each held the coordinator's loop 10-25 ms at once),
    and they decide exactly what one pass over every node decides."""
    from coordinator.scheduler import engine

    nodes = [make_node(f"n{i:02}", mem="1Gi", used_mem="1000Mi" if i % 3 == 0 else "0", cordoned=i % 4 == 1)
             for i in range(13)]
    snap = make_snapshot(*nodes)
    requests = replicas(20, mem="400Mi")
    whole = schedule_many(snap, requests)
    assert any(isinstance(r, Unschedulable) for r in whole) and any(isinstance(r, Placement) for r in whole)

    monkeypatch.setattr(engine, "CHECKS_PER_STEP", 5)
    monkeypatch.setattr(engine, "SCORES_PER_STEP", 4)
    sched = SchedulingPass(snap)
    static_filters = len(sched._static_filters)
    columns = sum(1 for s, _ in sched._static_scorers if s.key(requests[0]) is not None)
    columns += sum(1 for s, _ in sched._dynamic_scorers if s.local and s.key(requests[0]) is not None)
    assert columns >= 2
    stages = sum(1 for _ in sched.prepare_steps(requests[0]))
    # every check of every static filter, 5 to a stage; every scorer's column, 4 nodes to a stage; the ranking
    assert stages >= (13 * static_filters) // 5 + columns * 4
    assert sched.prepared(requests[0])
    assert [sched.place(r) for r in requests] == whole
    sliced = [pair for part in engine.schedule_slices(snap, requests, size=1) for pair in part]
    assert [r for _, r in sorted(sliced, key=lambda p: p[0])] == whole


def test_a_placement_between_the_stages_of_prepare_steps_is_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    """A column built in stages is right for nodes placed on while it was being built."""
    from coordinator.scheduler import engine

    monkeypatch.setattr(engine, "SCORES_PER_STEP", 2)
    monkeypatch.setattr(engine, "CHECKS_PER_STEP", 3)
    snap = make_snapshot(*(make_node(f"n{i}", mem="2Gi") for i in range(6)))
    web, db = replicas(4, mem="256Mi"), [dataclasses.replace(r, workload="db") for r in replicas(6, mem="512Mi")]
    reference = SchedulingPass(snap)
    first = [reference.place(r) for r in db[:3]]
    expected = [reference.place(r) for r in web]
    later = [reference.place(r) for r in db[3:]]

    sched = SchedulingPass(snap)
    steps = sched.prepare_steps(web[0])
    static_columns = sum(1 for s, _ in sched._static_scorers if s.key(web[0]) is not None)
    for _ in range(len(sched._static_filters) * 6 // 3 + 1 + static_columns * 3 + 2):  # into the last column
        next(steps)
    assert not sched._local  # the utilization column is half built
    assert [sched.place(r) for r in db[:3]] == first  # builds that column for db's group meanwhile
    for _ in steps:
        pass
    assert [sched.place(r) for r in web] == expected
    # db's group keeps scoring with a column placements keep current (the staged one did not replace it: review 5 L1)
    assert [sched.place(r) for r in db[3:]] == later


def test_node_id_hashes_are_kept_between_passes() -> None:
    """Every pass needs every node's hash (5,000 cost ~5 ms in the step that sets a pass up): the second pass over
    the same nodes hashes none of them again, and decides as the first."""
    from coordinator.scheduler import engine

    snap = make_snapshot(*(make_node(f"hash-kept-{i}") for i in range(7)))
    first = schedule(snap, make_request())
    before = engine._node_id_hash.cache_info()
    assert schedule(snap, make_request()) == first
    after = engine._node_id_hash.cache_info()
    assert after.hits - before.hits == 7 and after.misses == before.misses

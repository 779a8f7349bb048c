from __future__ import annotations

from typing import Any

import pytest

from coordinator.scheduler import NodeView, PlacementRequest, SchedulerConfig, scorers
from coordinator.scheduler.scorers import DEFAULT_SCORERS, Scorer
from coordinator.spec import Operator, PreferredTerm, Spread, Strategy, TaintEffect, Toleration, TolerationOperator
from tests.coordinator.builders import make_ctx, make_node, make_request

# (id, scorer, node, other nodes in the snapshot, request, expected score)
Case = tuple[str, Scorer, NodeView, tuple[NodeView, ...], PlacementRequest, float]


def req(**kw: Any) -> PlacementRequest:
    return make_request(**kw)


def pref(weight: int, key: str, op: str, *values: str) -> PreferredTerm:
    return PreferredTerm(weight, key, Operator(op), values)


CHEAP, DEAR = make_node("cheap", cost=0.5), make_node("dear", cost=2.5)
CASES: list[Case] = [
    # Locality: share of preferred weight matched
    ("locality-no-preference", scorers.Locality(), make_node(), (), req(), 100.0),
    (
        "locality-all-match",
        scorers.Locality(),
        make_node(zone="home", labels={"class": "pi"}),
        (),
        req(preferred=(pref(60, "cloudless.io/zone", "In", "home"), pref(40, "class", "In", "pi"))),
        100.0,
    ),
    (
        "locality-zone-only",
        scorers.Locality(),
        make_node(zone="home", labels={"class": "vps"}),
        (),
        req(preferred=(pref(60, "cloudless.io/zone", "In", "home"), pref(40, "class", "In", "pi"))),
        60.0,
    ),
    (
        "locality-none-match",
        scorers.Locality(),
        make_node(zone="office"),
        (),
        req(preferred=(pref(10, "cloudless.io/zone", "In", "home"),)),
        0.0,
    ),
    # Reliability
    ("reliability-perfect", scorers.Reliability(), make_node(reliability=1.0), (), req(), 100.0),
    ("reliability-flaky", scorers.Reliability(), make_node(reliability=0.25), (), req(), 25.0),
    ("reliability-clamped", scorers.Reliability(), make_node(reliability=1.7), (), req(), 100.0),
    # Cost: cheapest 100, dearest 0, linear between
    ("cost-cheapest", scorers.Cost(), CHEAP, (DEAR,), req(), 100.0),
    ("cost-dearest", scorers.Cost(), DEAR, (CHEAP,), req(), 0.0),
    ("cost-middle", scorers.Cost(), make_node("mid", cost=1.0), (CHEAP, DEAR), req(), 75.0),
    ("cost-all-equal", scorers.Cost(), make_node(cost=3.0), (make_node("b", cost=3.0),), req(), 100.0),
    # NetworkPenalty
    ("network-good", scorers.NetworkPenalty(), make_node(), (), req(), 100.0),
    ("network-metered", scorers.NetworkPenalty(), make_node(network_penalty=0.75), (), req(), 25.0),
    ("network-latency", scorers.NetworkPenalty(), make_node(latency_ms=250.0), (), req(), 50.0),
    (
        "network-worse-of-both",
        scorers.NetworkPenalty(),
        make_node(network_penalty=0.2, latency_ms=400.0),
        (),
        req(),
        20.0,
    ),
    ("network-latency-capped", scorers.NetworkPenalty(), make_node(latency_ms=9000.0), (), req(), 0.0),
    # UtilizationBalance
    ("util-spread-empty", scorers.UtilizationBalance(), make_node(), (), req(), 100.0),
    ("util-binpack-empty", scorers.UtilizationBalance(), make_node(), (), req(strategy=Strategy.BINPACK), 0.0),
    (
        "util-spread-half",
        scorers.UtilizationBalance(),
        make_node(cpu="2", mem="1Gi", used_cpu="1", used_mem="512Mi"),
        (),
        req(),
        50.0,
    ),
    (
        "util-binpack-mixed",
        scorers.UtilizationBalance(),
        make_node(cpu="2", mem="1Gi", used_cpu="2", used_mem="512Mi"),
        (),
        req(strategy=Strategy.BINPACK),
        75.0,
    ),
    (
        "util-live-usage-wins",
        scorers.UtilizationBalance(),
        make_node(utilization=0.9),
        (),
        req(strategy=Strategy.BINPACK),
        90.0,
    ),
    (
        "util-reserved-shrinks-allocatable",
        scorers.UtilizationBalance(),
        make_node(cpu="4", mem="2Gi", reserved_cpu="2", reserved_mem="1Gi", used_cpu="1", used_mem="512Mi"),
        (),
        req(strategy=Strategy.BINPACK),
        50.0,
    ),
    ("util-no-capacity-is-full", scorers.UtilizationBalance(), make_node(cpu="0", mem="0"), (), req(), 0.0),
    # Spreading
    (
        "spread-not-requested-binpack",
        scorers.Spreading(),
        make_node(replicas=5, workloads={"default/web": 5}),
        (),
        req(strategy=Strategy.BINPACK),
        100.0,
    ),
    # ... with the default strategy (spread) and no spread asked, small replicas still spread (issue 17)
    ("spread-default-empty", scorers.Spreading(), make_node(), (), req(), 100.0),
    ("spread-default-one-sibling", scorers.Spreading(), make_node(replicas=1, workloads={"default/web": 1}), (),
     req(), 50.0),
    ("spread-default-four-others", scorers.Spreading(), make_node(replicas=4, workloads={"default/db": 4}), (),
     req(), 50.0),
    (
        "spread-default-siblings-and-others",
        scorers.Spreading(),
        make_node(replicas=6, workloads={"default/web": 2, "default/db": 4}),
        (make_node("b", workloads={"default/web": 9}),),  # other nodes' replicas do not count
        req(),
        25.0,
    ),
    ("spread-node-empty", scorers.Spreading(), make_node(), (), req(spread=Spread.NODE), 100.0),
    (
        "spread-node-one-sibling",
        scorers.Spreading(),
        make_node(workloads={"default/web": 1, "default/db": 3}),
        (),
        req(spread=Spread.NODE),
        50.0,
    ),
    (
        "spread-zone-siblings-elsewhere-in-zone",
        scorers.Spreading(),
        make_node("a", zone="home"),
        (make_node("b", zone="home", workloads={"default/web": 3}),),
        req(spread=Spread.ZONE),
        25.0,
    ),
    (
        "spread-zone-other-zone",
        scorers.Spreading(),
        make_node("a", zone="office"),
        (make_node("b", zone="home", workloads={"default/web": 3}),),
        req(spread=Spread.ZONE),
        100.0,
    ),
    # PreferNoSchedule taints
    ("taints-none", scorers.PreferNoScheduleTaints(), make_node(), (), req(), 100.0),
    ("taints-one", scorers.PreferNoScheduleTaints(), make_node(taints=("battery:PreferNoSchedule",)), (), req(), 50.0),
    (
        "taints-two",
        scorers.PreferNoScheduleTaints(),
        make_node(taints=("battery:PreferNoSchedule", "metered:PreferNoSchedule")),
        (),
        req(),
        100.0 / 3,
    ),
    (
        "taints-tolerated",
        scorers.PreferNoScheduleTaints(),
        make_node(taints=("battery:PreferNoSchedule",)),
        (),
        req(tolerations=(Toleration("battery", TolerationOperator.EXISTS, "", TaintEffect.PREFER_NO_SCHEDULE),)),
        100.0,
    ),
    (
        "taints-noschedule-ignored",
        scorers.PreferNoScheduleTaints(),
        make_node(taints=("dedicated:NoSchedule",)),
        (),
        req(),
        100.0,
    ),
]


@pytest.mark.parametrize(
    ("scorer", "node", "others", "request_", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_scorer(
    scorer: Scorer, node: NodeView, others: tuple[NodeView, ...], request_: PlacementRequest, expected: float
) -> None:
    ctx = make_ctx(node, *others)
    assert scorer.score(node, request_, ctx) == pytest.approx(expected)
    assert 0.0 <= scorer.score(node, request_, ctx) <= 100.0


@pytest.mark.parametrize("scorer", DEFAULT_SCORERS, ids=[s.name for s in DEFAULT_SCORERS])
def test_not_applicable_means_exactly_100(scorer: Scorer) -> None:
    # the engine adds weight * 100 without calling score() when key() is None; score() must agree exactly
    node = make_node(reliability=0.5, cost=3.0, latency_ms=100.0, taints=("x:PreferNoSchedule",))
    request = make_request()
    if scorer.key(request) is None:
        assert scorer.score(node, request, make_ctx(node, make_node("b", cost=1.0))) == 100.0


def test_every_scorer_has_a_table_row() -> None:
    assert {type(c[1]) for c in CASES} == {type(s) for s in DEFAULT_SCORERS}


def test_weights_come_from_the_config() -> None:
    config = SchedulerConfig(locality_weight=3, reliability_weight=0, cost_weight=0.5)
    weights = {s.name: s.weight(config) for s in DEFAULT_SCORERS}
    assert weights["locality"] == 3 and weights["reliability"] == 0 and weights["cost"] == 0.5


def test_only_binpack_can_raise_a_score() -> None:
    util = scorers.UtilizationBalance()
    assert util.may_increase(make_request(strategy=Strategy.BINPACK))
    assert not util.may_increase(make_request(strategy=Strategy.SPREAD))
    assert not any(
        s.may_increase(make_request(strategy=Strategy.BINPACK))
        for s in DEFAULT_SCORERS
        if not isinstance(s, scorers.UtilizationBalance)
    )

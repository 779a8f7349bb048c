"""Endpoint choice: locality tiers (node -> zone -> anywhere), weights within a tier, exclusion of failed endpoints."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.wire import ServiceEndpoint
from dataplane.balance import TIERS, Choice, NoEndpoint, Tier, choose, key_of, tier_of

ME, MY_ZONE = "pi", "kitchen"


def ep(node: str, replica: str = "", zone: str = "", weight: int = 1) -> ServiceEndpoint:
    return ServiceEndpoint(node=node, replica=replica or f"{node}-r", zone=zone, weight=weight)


endpoints_st = st.lists(
    st.builds(ServiceEndpoint, node=st.sampled_from(["pi", "laptop", "vps", "phone"]),
              replica=st.sampled_from(["a", "b", "c", "d"]), zone=st.sampled_from(["", "kitchen", "cloud"]),
              weight=st.integers(1, 100)),
    max_size=12, unique_by=lambda e: (e.node, e.replica))


@given(endpoints=endpoints_st, excluded=st.sets(st.integers(0, 11)), seed=st.integers(0, 2**32))
def test_never_an_excluded_endpoint_and_never_a_farther_tier_while_a_nearer_one_has_a_candidate(
        endpoints: list[ServiceEndpoint], excluded: set[int], seed: int) -> None:
    exclude = {key_of(e) for i, e in enumerate(endpoints) if i in excluded}
    result = choose(endpoints, node=ME, zone=MY_ZONE, rng=random.Random(seed), exclude=exclude)
    candidates = [e for e in endpoints if key_of(e) not in exclude]
    if not candidates:
        assert isinstance(result, NoEndpoint)
        return
    assert isinstance(result, Choice)
    assert result.key not in exclude and result.endpoint in candidates
    assert result.tier is tier_of(result.endpoint, node=ME, zone=MY_ZONE)
    nearest = min(TIERS.index(tier_of(e, node=ME, zone=MY_ZONE)) for e in candidates)
    assert TIERS.index(result.tier) == nearest


@given(endpoints=endpoints_st, seed=st.integers(0, 2**32))
def test_retrying_with_every_failure_excluded_visits_each_endpoint_once_nearest_tiers_first(
        endpoints: list[ServiceEndpoint], seed: int) -> None:
    rng, exclude, tiers = random.Random(seed), set[tuple[str, str]](), []
    while isinstance(result := choose(endpoints, node=ME, zone=MY_ZONE, rng=rng, exclude=exclude), Choice):
        assert result.key not in exclude
        exclude.add(result.key)
        tiers.append(TIERS.index(result.tier))
    assert exclude == {key_of(e) for e in endpoints}
    assert tiers == sorted(tiers)  # spill-over goes outward only


@pytest.mark.parametrize(("endpoints", "tier"), [
    ([ep("laptop", zone=MY_ZONE), ep("pi"), ep("vps", zone="cloud")], Tier.NODE),
    ([ep("laptop", zone=MY_ZONE), ep("vps", zone="cloud")], Tier.ZONE),
    ([ep("vps", zone="cloud"), ep("phone")], Tier.ANY),
], ids=["own-node", "same-zone", "anywhere"])
def test_the_nearest_tier_takes_every_connection(endpoints: list[ServiceEndpoint], tier: Tier) -> None:
    rng = random.Random(7)
    picks = [choose(endpoints, node=ME, zone=MY_ZONE, rng=rng) for _ in range(1000)]
    assert {p.tier for p in picks if isinstance(p, Choice)} == {tier} and all(isinstance(p, Choice) for p in picks)


def test_an_unknown_zone_is_not_near_another_unknown_zone() -> None:
    result = choose([ep("laptop", zone="")], node=ME, zone="", rng=random.Random(1))
    assert isinstance(result, Choice) and result.tier is Tier.ANY


def test_weights_3_to_1_split_about_75_25() -> None:
    endpoints = [ep("laptop", "heavy", weight=3), ep("vps", "light", weight=1)]
    rng = random.Random(2026)
    counts = Counter(c.endpoint.replica for _ in range(4000)
                     if isinstance(c := choose(endpoints, node=ME, zone=MY_ZONE, rng=rng), Choice))
    assert 0.72 <= counts["heavy"] / 4000 <= 0.78, counts


def test_nothing_to_choose_is_a_value_with_a_reason() -> None:
    assert choose([], node=ME, zone="", rng=random.Random(1)) == NoEndpoint("no ready endpoint")
    only = ep("laptop")
    result = choose([only], node=ME, zone="", rng=random.Random(1), exclude={key_of(only)})
    assert isinstance(result, NoEndpoint) and "failed to connect" in result.reason

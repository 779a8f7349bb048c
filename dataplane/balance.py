"""Which endpoint a new service connection goes to (pure core: the caller passes a seeded `random.Random`).

Locality first, then weight (Kubernetes' `trafficDistribution: PreferSameNode / PreferSameZone`, Consul's
nearest-first): the endpoints are split into tiers — on this node, in this node's zone, anywhere else — and the
first tier that has a candidate is used; within it one endpoint is drawn with probability weight / sum of weights.
There is no health check here: the coordinator lists only ready endpoints, so an unready local replica simply is
not a candidate and traffic spills to the next tier. `exclude` holds the endpoints a connection has already failed
to reach, so a retry goes to another one, and to the next tier once this one is used up.

Zones count only when known: an endpoint is "same zone" when both its zone and this node's are non-empty and
equal (two nodes without a zone are not assumed to be near each other).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum
from random import Random

from broker.wire import ServiceEndpoint

EndpointKey = tuple[str, str]  # (node, replica): an endpoint's identity across table updates


class Tier(StrEnum):
    NODE = "node"
    ZONE = "zone"
    ANY = "any"


TIERS = (Tier.NODE, Tier.ZONE, Tier.ANY)


@dataclass(frozen=True, slots=True)
class Choice:
    endpoint: ServiceEndpoint
    tier: Tier

    @property
    def key(self) -> EndpointKey:
        return key_of(self.endpoint)


@dataclass(frozen=True, slots=True)
class NoEndpoint:
    """Nothing to connect to; `reason` says why (for the log and the client-facing refusal)."""

    reason: str


def key_of(endpoint: ServiceEndpoint) -> EndpointKey:
    return (endpoint.node, endpoint.replica)


def tier_of(endpoint: ServiceEndpoint, *, node: str, zone: str) -> Tier:
    if endpoint.node == node:
        return Tier.NODE
    if zone and endpoint.zone == zone:
        return Tier.ZONE
    return Tier.ANY


def choose(endpoints: Sequence[ServiceEndpoint], *, node: str, zone: str, rng: Random,
           exclude: Collection[EndpointKey] = ()) -> Choice | NoEndpoint:
    """The endpoint for a new connection from `node` (in `zone`), skipping `exclude`; see the module docstring."""
    if not endpoints:
        return NoEndpoint("no ready endpoint")
    tiers: dict[Tier, list[ServiceEndpoint]] = {tier: [] for tier in TIERS}
    for endpoint in endpoints:
        if key_of(endpoint) not in exclude:
            tiers[tier_of(endpoint, node=node, zone=zone)].append(endpoint)
    for tier in TIERS:
        if tiers[tier]:
            return Choice(_weighted(tiers[tier], rng), tier)
    return NoEndpoint(f"all {len(endpoints)} ready endpoint(s) failed to connect")


def _weighted(candidates: list[ServiceEndpoint], rng: Random) -> ServiceEndpoint:
    # weights are 1-100 by the wire contract; max(…, 1) keeps a hand-built 0 from making a tier unpickable
    total = sum(max(e.weight, 1) for e in candidates)
    point = rng.randrange(total)
    for endpoint in candidates:
        point -= max(endpoint.weight, 1)
        if point < 0:
            return endpoint
    raise AssertionError("unreachable: point < total")

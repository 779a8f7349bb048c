"""Runtimes and abilities (pure): what a workload needs of a node's runtime, and what a node can do.

A node states its abilities in its facts (`NodeFacts.abilities`: containers, port-remap, volumes, images,
process, overlay); an agent too old to say is judged by its runtime's name. A workload's needs follow from its
`runtime` and, for `runtime: any`, from its spec:

- `container`: containers and images, plus port-remap when a hostPort differs from its containerPort, plus
  volumes when it mounts any (emptyDir or secret volumes);
- `process`: process;
- `any`: no image -> process; an image and anything only a container can give (no command to run without the
  image's own, a remapped port, volumes, a read-only root, privileged, added capabilities, a Localhost seccomp
  profile: what `runtime.process` on the agent refuses) -> the container needs; otherwise either will do.

`needs()` returns the alternatives (a node must have every ability of at least one of them); `()` places no
constraint. The `Runtime` filter turns this into a per-node `Reject` ("runtime mismatch: ...").
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Final

from broker.wire import NodeFacts
from coordinator.spec import Runtime, SeccompType, WorkloadSpec

CONTAINERS: Final = "containers"
PORT_REMAP: Final = "port-remap"
VOLUMES: Final = "volumes"
IMAGES: Final = "images"
PROCESS: Final = "process"
OVERLAY: Final = "overlay"

# what an agent that does not list its abilities has, by the runtime it names (the agent's own table, as of the
# first agents that list them: edge_agent.facts)
BY_RUNTIME: Final[dict[str, frozenset[str]]] = {
    "podman": frozenset({CONTAINERS, PORT_REMAP, VOLUMES, IMAGES}),
    "process": frozenset({PROCESS}),
}

Needs = tuple[frozenset[str], ...]


def of_facts(facts: NodeFacts | None) -> frozenset[str] | None:
    """A node's abilities: as it states them, else inferred from its runtime; None when nothing is known (a node
    that has not reported its facts yet, or a runtime this coordinator does not know): not filtered."""
    if facts is None:
        return None
    return _of(facts.abilities, facts.runtime)


@functools.lru_cache(maxsize=256)
def _of(abilities: tuple[str, ...], runtime: str) -> frozenset[str] | None:
    """Cached: every snapshot asks for every node, and a fleet's nodes state a handful of distinct sets."""
    stated = frozenset(abilities)
    if stated & {CONTAINERS, PROCESS}:
        return stated
    by_runtime = BY_RUNTIME.get(runtime)  # an agent that lists no runtime ability (a runtime it does not know, or
    return None if by_runtime is None else by_runtime | stated  # too old to list any): by its name


def container_needs(spec: WorkloadSpec) -> frozenset[str]:
    needs = {CONTAINERS, IMAGES}
    if any(p.host_port not in (0, p.container_port) for p in spec.ports):
        needs.add(PORT_REMAP)
    if spec.volumes or spec.secret_volumes:
        needs.add(VOLUMES)
    return frozenset(needs)


def container_only(spec: WorkloadSpec) -> str:
    """Why a spec with an image can run only in a container ("" when a plain process could run it too)."""
    sc = spec.security_context
    reasons = (
        (not spec.command, "no command (it runs the image's own)"),
        (any(p.host_port not in (0, p.container_port) for p in spec.ports), "a remapped port"),
        (bool(spec.volumes or spec.secret_volumes), "volumes"),
        (sc.read_only_root_filesystem, "a read-only root filesystem"),
        (sc.privileged, "privileged"),
        (bool(sc.capabilities.add), "added capabilities"),
        (sc.seccomp_profile.profile_type is SeccompType.LOCALHOST, "a Localhost seccomp profile"),
    )
    return next((why for hit, why in reasons if hit), "")


def needs(spec: WorkloadSpec) -> Needs:
    """The runtime's needs (below), each with what `placement.requires` adds (e.g. the overlay)."""
    extra = frozenset(a.value for a in spec.placement.requires)
    base = runtime_needs(spec)
    if not extra:
        return base
    return tuple(alt | extra for alt in base) if base else (extra,)


def runtime_needs(spec: WorkloadSpec) -> Needs:
    match spec.runtime:
        case Runtime.CONTAINER:
            return (container_needs(spec),)
        case Runtime.PROCESS:
            return (frozenset({PROCESS}),)
    if not spec.image:
        return (frozenset({PROCESS}),)
    if container_only(spec):
        return (container_needs(spec),)
    return (container_needs(spec), frozenset({PROCESS}))


def missing(have: frozenset[str], wanted: Needs) -> frozenset[str] | None:
    """None when `have` satisfies one alternative; else what the closest alternative lacks (fewest missing)."""
    if not wanted:
        return None
    gaps = [alt - have for alt in wanted]
    if any(not gap for gap in gaps):
        return None
    return min(gaps, key=lambda gap: (len(gap), sorted(gap)))


def describe(abilities: Iterable[str]) -> str:
    return ", ".join(sorted(abilities)) or "none"


def describe_needs(wanted: Needs) -> str:
    return " or ".join(f"[{describe(alt)}]" for alt in wanted)

"""Runtime-aware scheduling: a workload goes only to nodes whose runtime can run it, and a node that refused a
replica is not asked again. The `scale hello --replicas 2` case of issue 15 (one Podman node, one process node)
is here end to end through the engine: the second replica stays unplaced, with each node's reason."""

from __future__ import annotations

from typing import Any

import pytest

from broker import wire
from coordinator.scheduler import Placement, PlacementRequest, Reject, Unschedulable, filters, schedule_many
from coordinator.scheduler import abilities as ab
from coordinator.scheduler.filters import DEFAULT_FILTERS
from coordinator.spec import Runtime, Workload, parse_workload
from tests.coordinator.builders import make_ctx, make_node, make_request

PODMAN = frozenset({"containers", "port-remap", "volumes", "images"})
PROCESS = frozenset({"process"})


def workload(**spec: Any) -> Workload:
    body: dict[str, Any] = {"image": "localhost/cloudless/busybox:latest", "command": ["httpd", "-f"], **spec}
    for key in [k for k, v in body.items() if v is None]:
        del body[key]
    return parse_workload({"apiVersion": "cloudless/v1", "kind": "Workload", "metadata": {"name": "hello"},
                           "spec": body})


EITHER = (PODMAN - {"port-remap", "volumes"}, PROCESS)


@pytest.mark.parametrize(("spec", "expected"), [
    ({}, EITHER),
    ({"command": None}, (frozenset({"containers", "images"}),)),
    ({"ports": [{"containerPort": 8080, "hostPort": 18081}]}, (frozenset({"containers", "images", "port-remap"}),)),
    ({"ports": [{"containerPort": 8080, "hostPort": 8080}]}, EITHER),
    ({"volumes": [{"name": "data", "mountPath": "/data"}]}, (frozenset({"containers", "images", "volumes"}),)),
    ({"securityContext": {"readOnlyRootFilesystem": True}}, (frozenset({"containers", "images"}),)),
    ({"securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE"]}}}, (frozenset({"containers", "images"}),)),
    ({"image": None}, (PROCESS,)),
    ({"runtime": "process"}, (PROCESS,)),
    ({"runtime": "container"}, (frozenset({"containers", "images"}),)),
], ids=["image+command:either", "image-only", "remapped-port", "same-port", "volumes", "read-only-root",
        "added-caps", "no-image", "runtime-process", "runtime-container"])
def test_what_a_workload_needs(spec: dict[str, Any], expected: ab.Needs) -> None:
    assert ab.needs(workload(**spec).spec) == expected


@pytest.mark.parametrize(("facts", "expected"), [
    (None, None),
    (wire.NodeFacts(runtime="podman"), PODMAN),
    (wire.NodeFacts(runtime="process"), PROCESS),
    (wire.NodeFacts(runtime="something-new"), None),
    (wire.NodeFacts(runtime="podman", abilities=("containers", "images")), frozenset({"containers", "images"})),
], ids=["no-facts", "old-podman-agent", "old-process-agent", "unknown-runtime", "stated"])
def test_a_nodes_abilities(facts: wire.NodeFacts | None, expected: frozenset[str] | None) -> None:
    assert ab.of_facts(facts) == expected


REMAP = (frozenset({"containers", "images", "port-remap"}),)


@pytest.mark.parametrize(("node_abilities", "needs", "expected"), [
    (PODMAN, REMAP, None),
    (PROCESS, REMAP, ("runtime mismatch: node lacks containers, images, port-remap (it has process; the workload "
                      "needs [containers, images, port-remap])", False)),
    (PROCESS, EITHER, None),
    (PODMAN, EITHER, None),
    (PODMAN, ((PROCESS),), ("runtime mismatch: node lacks process (it has containers, images, port-remap, "
                            "volumes; the workload needs [process])", False)),
    (None, REMAP, None),
    (frozenset(), (), None),
], ids=["podman-remap", "process-remap", "process-either", "podman-either", "podman-process-only",
        "unknown-node", "no-needs"])
def test_runtime_filter(node_abilities: frozenset[str] | None, needs: ab.Needs,
                        expected: tuple[str, bool] | None) -> None:
    node = make_node(abilities=node_abilities)
    got = filters.Runtime().check(node, make_request(abilities=needs), make_ctx(node))
    assert got == (None if expected is None else Reject(*expected))


def test_refused_filter_keeps_only_the_refusing_node_away() -> None:
    request = make_request(refused_by=(("pi-1", "the process runtime cannot remap ports"),))
    pi1, pi2 = make_node("pi-1"), make_node("pi-2")
    assert filters.Refused().check(pi1, request, make_ctx(pi1, pi2)) == Reject(
        "refused by the node: the process runtime cannot remap ports", resolvable=False)
    assert filters.Refused().check(pi2, request, make_ctx(pi1, pi2)) is None


def test_both_filters_are_default_and_static() -> None:
    names = {f.name: f.static for f in DEFAULT_FILTERS}
    assert names["Runtime"] is True and names["Refused"] is True


def test_scale_hello_to_two_with_one_podman_and_one_process_node_never_uses_the_process_node() -> None:
    """Issue 15 (3): the hello example remaps 8080 -> 18081, so only the Podman node can run it; the second
    replica's host port is taken there, and the message names each node's reason."""
    import pathlib

    import yaml

    doc = yaml.safe_load((pathlib.Path(__file__).parents[2] / "examples" / "hello.yaml").read_text())
    hello = parse_workload(doc)
    nodes = (make_node("podman-1", abilities=PODMAN), make_node("phone-1", abilities=PROCESS))
    from coordinator.scheduler import Snapshot

    reqs = [PlacementRequest.for_replica(hello, f"hello-{i}") for i in range(2)]
    first, second = schedule_many(Snapshot(nodes), reqs, seed=1)
    assert isinstance(first, Placement) and first.node_id == "podman-1"
    assert isinstance(second, Unschedulable)
    assert second.reasons["phone-1"].category == "runtime mismatch"
    assert second.reasons["podman-1"].category == "host port in use"
    assert "phone-1: runtime mismatch: node lacks containers, images, port-remap" in second.detail()
    assert "podman-1: host port in use: 18081/TCP" in second.detail()


def test_a_process_workload_goes_to_the_process_node_and_a_refused_replica_elsewhere() -> None:
    from coordinator.scheduler import Snapshot

    nodes = (make_node("podman-1", abilities=PODMAN), make_node("phone-1", abilities=PROCESS),
             make_node("phone-2", abilities=PROCESS | {"overlay"}))
    job = workload(image=None, command=["python3", "-m", "http.server"], runtime="process")
    assert job.spec.runtime is Runtime.PROCESS and job.spec.image == ""
    placed = schedule_many(Snapshot(nodes), [PlacementRequest.for_replica(job, "r0")], seed=3)[0]
    assert isinstance(placed, Placement) and placed.node_id.startswith("phone-")
    again = schedule_many(Snapshot(nodes), [PlacementRequest.for_replica(
        job, "r0", refused_by={placed.node_id: "security.runAsUser: switching users needs setpriv"})], seed=3)[0]
    assert isinstance(again, Placement) and again.node_id not in ("podman-1", placed.node_id)


def test_detail_is_bounded() -> None:
    reasons = {f"n{i:02}": Reject("offline") for i in range(12)}
    text = Unschedulable.explain(reasons).detail(limit=3)
    assert text == "0/12 nodes available: 12 offline; n00: offline; n01: offline; n02: offline (and 9 more)"


def test_a_workload_that_requires_the_overlay_goes_only_to_nodes_that_run_it() -> None:
    from coordinator.scheduler import Snapshot

    job = workload(image=None, command=["serve"], runtime="process", placement={"requires": ["overlay"]})
    assert ab.needs(job.spec) == (frozenset({"process", "overlay"}),)
    nodes = (make_node("phone-1", abilities=PROCESS), make_node("phone-2", abilities=PROCESS | {"overlay"}))
    results = schedule_many(Snapshot(nodes), [PlacementRequest.for_replica(job, f"r{i}") for i in range(3)], seed=2)
    assert all(isinstance(r, Placement) and r.node_id == "phone-2" for r in results)
    alone = schedule_many(Snapshot(nodes[:1]), [PlacementRequest.for_replica(job, "r9")], seed=2)[0]
    assert isinstance(alone, Unschedulable)
    assert "phone-1: runtime mismatch: node lacks overlay" in alone.detail()


def test_requires_takes_only_known_abilities() -> None:
    from coordinator.errors import SpecError

    with pytest.raises(SpecError, match=r"spec.placement.requires\[0\]"):
        workload(placement={"requires": ["wings"]})

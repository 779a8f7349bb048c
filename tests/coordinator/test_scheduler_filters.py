from __future__ import annotations

from typing import Any

import pytest

from coordinator.scheduler import NodeView, PlacementRequest, Reject, filters
from coordinator.scheduler.filters import DEFAULT_FILTERS, Filter
from coordinator.scheduler.model import DESIRED_BUDGET_BYTES, DESIRED_MAX_REPLICAS
from coordinator.spec import NodeSelectorRequirement, Operator, Scope, TaintEffect, Toleration, TolerationOperator
from tests.coordinator.builders import make_ctx, make_node, make_request

# (id, filter, node, request, expected): expected is None (passes) or (reason, resolvable); the reason is
# compared exactly, so these tables also pin the messages users read.
Case = tuple[str, Filter, NodeView, PlacementRequest, tuple[str, bool] | None]


def req(**kw: Any) -> PlacementRequest:
    return make_request(**kw)


def tol(key: str = "", op: str = "Equal", value: str = "", effect: str | None = None) -> Toleration:
    return Toleration(key, TolerationOperator(op), value, TaintEffect(effect) if effect else None)


def term(key: str, op: str, *values: str) -> NodeSelectorRequirement:
    return NodeSelectorRequirement(key, Operator(op), values)


CASES: list[Case] = [
    # Online
    ("online", filters.Online(), make_node(), req(), None),
    ("offline", filters.Online(), make_node(online=False), req(), ("offline", True)),
    # Schedulable
    ("schedulable", filters.Schedulable(), make_node(), req(), None),
    ("cordoned", filters.Schedulable(), make_node(cordoned=True), req(), ("cordoned", True)),
    ("draining", filters.Schedulable(), make_node(draining=True), req(), ("draining", True)),
    (
        "gated-with-reasons",
        filters.Schedulable(),
        make_node(schedulable=False, gates=("battery 12%", "thermal")),
        req(),
        ("gated: battery 12%; thermal", True),
    ),
    ("gated-no-reason", filters.Schedulable(), make_node(schedulable=False), req(), ("gated: not schedulable", True)),
    # Capacity
    ("fits", filters.Capacity(), make_node(cpu="2", mem="1Gi"), req(cpu="2", mem="1Gi"), None),
    ("zero-request-fits-full-node", filters.Capacity(), make_node(used_cpu="2", used_mem="1Gi"), req(), None),
    (
        "memory-free",
        filters.Capacity(),
        make_node(mem="1Gi", used_mem="992Mi"),
        req(mem="64Mi"),
        ("insufficient memory: requested 64Mi, free 32Mi", True),
    ),
    (
        "memory-never-fits",
        filters.Capacity(),
        make_node(mem="1Gi", reserved_mem="512Mi"),
        req(mem="768Mi"),
        ("insufficient memory: requested 768Mi, allocatable 512Mi", False),
    ),
    (
        "cpu-free",
        filters.Capacity(),
        make_node(cpu="2", used_cpu="1750m"),
        req(cpu="500m"),
        ("insufficient cpu: requested 500m, free 250m", True),
    ),
    (
        "cpu-reserved-by-owner",
        filters.Capacity(),
        make_node(cpu="4", reserved_cpu="3"),
        req(cpu="2"),
        ("insufficient cpu: requested 2, allocatable 1", False),
    ),
    (
        "cpu-checked-before-memory",
        filters.Capacity(),
        make_node(cpu="1", mem="1Gi", used_cpu="1", used_mem="1Gi"),
        req(cpu="1m", mem="1"),
        ("insufficient cpu: requested 1m, free 0", True),
    ),
    # MaxWorkloads
    ("under-max", filters.MaxWorkloads(), make_node(replicas=3, max_workloads=4), req(), None),
    ("no-max", filters.MaxWorkloads(), make_node(replicas=300), req(), None),
    (
        "at-max",
        filters.MaxWorkloads(),
        make_node(replicas=4, max_workloads=4),
        req(),
        ("too many replicas: 4/4", True),
    ),
    # ArchOS
    ("any-arch", filters.ArchOS(), make_node(arch="riscv64"), req(), None),
    ("arch-alias", filters.ArchOS(), make_node(arch="aarch64"), req(archs=("arm64",)), None),
    ("arch-one-of", filters.ArchOS(), make_node(arch="x86_64"), req(archs=("aarch64", "amd64")), None),
    (
        "arch-mismatch",
        filters.ArchOS(),
        make_node(arch="armv7l"),
        req(archs=("aarch64",)),
        ("arch mismatch: node is armv7, workload needs aarch64", False),
    ),
    (
        "arch-unknown",
        filters.ArchOS(),
        make_node(arch=""),
        req(archs=("aarch64",)),
        ("arch mismatch: node is unknown, workload needs aarch64", False),
    ),
    (
        "os-mismatch",
        filters.ArchOS(),
        make_node(os="android"),
        req(oses=("linux",)),
        ("os mismatch: node is android, workload needs linux", False),
    ),
    # NodeSelector
    (
        "selector-match",
        filters.NodeSelector(),
        make_node(labels={"disk": "ssd"}),
        req(node_selector=(("disk", "ssd"),)),
        None,
    ),
    (
        "selector-well-known-zone",
        filters.NodeSelector(),
        make_node(zone="home"),
        req(node_selector=(("cloudless.io/zone", "home"),)),
        None,
    ),
    (
        "selector-wrong-value",
        filters.NodeSelector(),
        make_node(labels={"disk": "sd"}),
        req(node_selector=(("disk", "ssd"),)),
        ("node selector mismatch: disk=ssd (node has 'sd')", False),
    ),
    (
        "selector-missing-label",
        filters.NodeSelector(),
        make_node(),
        req(node_selector=(("disk", "ssd"),)),
        ("node selector mismatch: disk=ssd (node lacks it)", False),
    ),
    # Taints / tolerations
    ("no-taints", filters.Taints(), make_node(), req(), None),
    (
        "untolerated",
        filters.Taints(),
        make_node(taints=("dedicated=edge:NoSchedule",)),
        req(),
        ("untolerated taint: dedicated=edge:NoSchedule", False),
    ),
    (
        "tolerated-equal",
        filters.Taints(),
        make_node(taints=("dedicated=edge:NoSchedule",)),
        req(tolerations=(tol("dedicated", value="edge"),)),
        None,
    ),
    (
        "equal-wrong-value",
        filters.Taints(),
        make_node(taints=("dedicated=edge:NoSchedule",)),
        req(tolerations=(tol("dedicated", value="gpu"),)),
        ("untolerated taint: dedicated=edge:NoSchedule", False),
    ),
    (
        "tolerated-exists",
        filters.Taints(),
        make_node(taints=("dedicated=edge:NoSchedule",)),
        req(tolerations=(tol("dedicated", "Exists"),)),
        None,
    ),
    (
        "exists-without-key-tolerates-all",
        filters.Taints(),
        make_node(taints=("a:NoSchedule", "b=c:NoSchedule")),
        req(tolerations=(tol(op="Exists"),)),
        None,
    ),
    (
        "wrong-effect",
        filters.Taints(),
        make_node(taints=("dedicated:NoSchedule",)),
        req(tolerations=(tol("dedicated", "Exists", effect="PreferNoSchedule"),)),
        ("untolerated taint: dedicated:NoSchedule", False),
    ),
    (
        "prefer-no-schedule-is-not-a-filter",
        filters.Taints(),
        make_node(taints=("battery:PreferNoSchedule",)),
        req(),
        None,
    ),
    # Zones / regions
    ("zone-any", filters.Zones(), make_node(zone="home"), req(), None),
    ("zone-allowed", filters.Zones(), make_node(zone="home"), req(zones=("home", "office")), None),
    (
        "zone-not-allowed",
        filters.Zones(),
        make_node(zone="cafe"),
        req(zones=("home", "office")),
        ("zone not allowed: cafe not in home, office", False),
    ),
    (
        "zone-none",
        filters.Zones(),
        make_node(),
        req(zones=("home",)),
        ("zone not allowed: (none) not in home", False),
    ),
    ("region-allowed", filters.Zones(), make_node(region="eu"), req(regions=("eu",)), None),
    (
        "region-not-allowed",
        filters.Zones(),
        make_node(region="us"),
        req(regions=("eu",)),
        ("region not allowed: us not in eu", False),
    ),
    # NodeAffinity (required)
    (
        "affinity-in",
        filters.NodeAffinity(),
        make_node(labels={"class": "pi"}),
        req(required=(term("class", "In", "pi", "vps"),)),
        None,
    ),
    (
        "affinity-notin-absent",
        filters.NodeAffinity(),
        make_node(),
        req(required=(term("class", "NotIn", "phone"),)),
        None,
    ),
    (
        "affinity-exists",
        filters.NodeAffinity(),
        make_node(labels={"gpu": ""}),
        req(required=(term("gpu", "Exists"),)),
        None,
    ),
    (
        "affinity-in-mismatch",
        filters.NodeAffinity(),
        make_node(labels={"class": "phone"}),
        req(required=(term("class", "In", "pi", "vps"),)),
        ("node affinity mismatch: class In [pi, vps]", False),
    ),
    (
        "affinity-notin-mismatch",
        filters.NodeAffinity(),
        make_node(labels={"class": "phone"}),
        req(required=(term("class", "NotIn", "phone"),)),
        ("node affinity mismatch: class NotIn [phone]", False),
    ),
    (
        "affinity-does-not-exist",
        filters.NodeAffinity(),
        make_node(labels={"gpu": "yes"}),
        req(required=(term("gpu", "DoesNotExist"),)),
        ("node affinity mismatch: gpu DoesNotExist", False),
    ),
    (
        "affinity-all-terms",
        filters.NodeAffinity(),
        make_node(labels={"class": "pi"}),
        req(required=(term("class", "In", "pi"), term("gpu", "Exists"))),
        ("node affinity mismatch: gpu Exists", False),
    ),
    # DesiredStateSize: the node's desired state is one wire message (issue 16, High 1)
    ("desired-fits", filters.DesiredStateSize(), make_node(desired_bytes=1000), req(wire_bytes=1000), None),
    ("desired-unknown-size", filters.DesiredStateSize(), make_node(desired_bytes=2**30), req(), None),
    (
        "desired-full",
        filters.DesiredStateSize(),
        make_node(desired_bytes=DESIRED_BUDGET_BYTES - 10),
        req(wire_bytes=11),
        (f"desired state too large: this replica's 11 bytes would take its {DESIRED_BUDGET_BYTES - 10:,} "
         f"past {DESIRED_BUDGET_BYTES:,}", True),
    ),
    (
        "desired-never",
        filters.DesiredStateSize(),
        make_node(),
        req(wire_bytes=DESIRED_BUDGET_BYTES + 1),
        (f"desired state too large: this replica's {DESIRED_BUDGET_BYTES + 1:,} bytes would take its 0 "
         f"past {DESIRED_BUDGET_BYTES:,}", False),
    ),
    # ... and its replicas list is capped in items: a fleet workload of thousands of tiny replicas (issue 17)
    ("desired-count-fits", filters.DesiredStateSize(), make_node(replicas=DESIRED_MAX_REPLICAS - 1), req(), None),
    (
        "desired-count-full",
        filters.DesiredStateSize(),
        make_node(replicas=DESIRED_MAX_REPLICAS, cpu="1000", mem="1Ti"),
        req(wire_bytes=300),
        (f"desired state too large: {DESIRED_MAX_REPLICAS} replicas already, one message carries "
         f"{DESIRED_MAX_REPLICAS}", True),
    ),
    # HostPorts
    ("port-free", filters.HostPorts(), make_node(host_ports=frozenset({"80/TCP"})), req(host_ports=("80/UDP",)), None),
    (
        "port-taken",
        filters.HostPorts(),
        make_node(host_ports=frozenset({"80/TCP"})),
        req(host_ports=("80/TCP",)),
        ("host port in use: 80/TCP", True),
    ),
    # AntiAffinity (node scope; zone scope in the test below, it needs a context with other nodes)
    (
        "anti-none-running",
        filters.AntiAffinity(),
        make_node(workloads={"default/db": 1}),
        req(anti_affinity=("default/cache",)),
        None,
    ),
    (
        "anti-self",
        filters.AntiAffinity(),
        make_node(workloads={"default/web": 1}),
        req(anti_affinity=("default/web",)),
        ("anti-affinity: default/web runs in this node", True),
    ),
    # Runtime
    ("runtime-fits", filters.Runtime(), make_node(abilities=frozenset({"containers", "images", "port-remap"})),
     req(abilities=(frozenset({"containers", "images", "port-remap"}),)), None),
    ("runtime-unknown-node", filters.Runtime(), make_node(), req(abilities=(frozenset({"containers"}),)), None),
    ("runtime-mismatch", filters.Runtime(), make_node(abilities=frozenset({"process"})),
     req(abilities=(frozenset({"containers", "images"}),)),
     ("runtime mismatch: node lacks containers, images (it has process; the workload needs [containers, images])",
      False)),
    # Refused
    ("refused-elsewhere", filters.Refused(), make_node("n1"), req(refused_by=(("n2", "no"),)), None),
    ("refused-here", filters.Refused(), make_node("n1"), req(refused_by=(("n1", "cannot remap ports"),)),
     ("refused by the node: cannot remap ports", False)),
]


@pytest.mark.parametrize(("flt", "node", "request_", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_filter(flt: Filter, node: NodeView, request_: PlacementRequest, expected: tuple[str, bool] | None) -> None:
    got = flt.check(node, request_, make_ctx(node))
    assert got == (None if expected is None else Reject(*expected))


ZONE_CASES = [
    ("same-zone", "home", Scope.ZONE, ("anti-affinity: default/db runs in zone home", True)),
    ("other-zone", "office", Scope.ZONE, None),
    ("node-scope-ignores-zone", "home", Scope.NODE, None),
    ("no-zone-is-its-own-domain", "", Scope.ZONE, None),
]


@pytest.mark.parametrize(("zone", "scope", "expected"), [c[1:] for c in ZONE_CASES], ids=[c[0] for c in ZONE_CASES])
def test_anti_affinity_zone_scope(zone: str, scope: Scope, expected: tuple[str, bool] | None) -> None:
    db_node = make_node("db-host", zone="home", workloads={"default/db": 2})
    candidate = make_node("candidate", zone=zone)
    ctx = make_ctx(db_node, candidate)
    request = make_request(anti_affinity=("default/db",), anti_affinity_scope=scope)
    got = filters.AntiAffinity().check(candidate, request, ctx)
    assert got == (None if expected is None else Reject(*expected))


def test_every_filter_has_a_table_row() -> None:
    tested = {type(c[1]) for c in CASES}
    assert tested == {type(f) for f in DEFAULT_FILTERS}


def test_static_filters_come_first() -> None:
    kinds = [f.static for f in DEFAULT_FILTERS]
    assert kinds == sorted(kinds, reverse=True)


def test_reject_category_is_the_text_before_the_colon() -> None:
    assert Reject("insufficient memory: requested 1Gi, free 0").category == "insufficient memory"
    assert Reject("cordoned").category == "cordoned"


@pytest.mark.parametrize("message", ["desired", "observed"])
def test_the_item_cap_is_the_wires(message: str) -> None:
    """DESIRED_MAX_REPLICAS is what the codec accepts in one desired or observed state: one more is refused."""
    from broker import wire
    from broker.errors import WireError
    from broker.wire import DesiredState, ObservedState, ReplicaObserved, ReplicaSpec, ReplicaState

    def build(n: int) -> object:
        if message == "desired":
            return DesiredState(node_id="n", generation=1, epoch=1, issued_at=1.0,
                                replicas=tuple(ReplicaSpec(replica_id=f"r{i}", workload="w") for i in range(n)))
        return ObservedState(node_id="n", generation=1, epoch=1, ts=1.0, replicas=tuple(
            ReplicaObserved(replica_id=f"r{i}", workload="w", state=ReplicaState.RUNNING) for i in range(n)))

    wire.encode(build(DESIRED_MAX_REPLICAS))
    with pytest.raises(WireError):
        wire.encode(build(DESIRED_MAX_REPLICAS + 1))

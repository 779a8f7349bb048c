"""Services on the coordinator: the pure registry (addresses, grouping, endpoints, tables, pairs, changes) and, through
the real engine and REST app over the in-memory broker, the ServiceTable each node is sent and what people see."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from broker import wire
from broker.wire import (
    NodeFacts,
    NodeStatus,
    ObservedState,
    Presence,
    Protocol,
    ReplicaObserved,
    ReplicaState,
    ServiceEndpoint,
    ServicePort,
    ServiceTable,
    topics,
)
from coordinator import services
from coordinator.errors import SpecError
from coordinator.services import Backing, ReplicaFacts
from coordinator.spec import parse_workload
from tests.coordinator.rest_harness import AUTH, Rest, rest

HTTP = (ServicePort(80, 8080, name="http"),)


def backing(workload: str, *, service: str = "web", ns: str = "default", weight: int = 1,
            ports: tuple[ServicePort, ...] = HTTP, ingress: tuple[Any, ...] = ()) -> Backing:
    return Backing(workload=f"{ns}/{workload}", namespace=ns, service=service, weight=weight, ports=ports,
                   ingress=ingress)


def facts(replica: str, workload: str, node: str | None, *, ready: bool = True, online: bool = True) -> ReplicaFacts:
    return ReplicaFacts(replica=replica, workload=f"default/{workload}", node=node, ready=ready, node_online=online)


def _build(backings: list[Backing], replicas: list[ReplicaFacts], *, zones: dict[str, str] | None = None,
           vips: dict[tuple[str, str], str] | None = None) -> services.ServiceBook:
    groups, problems = services.group(backings)
    allocated, _, _ = services.allocate(groups, vips or {})
    return services.build(groups, problems, allocated, replicas, zone_of=lambda n: (zones or {}).get(n, ""),
                          ingress_nodes=lambda _b, nodes, _sel: nodes)


# ---- the spec ---------------------------------------------------------------------------------------------------

def _doc(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "cloudless/v1", "kind": "Workload", "metadata": {"name": "web"},
            "spec": {"image": "busybox", "ports": [{"containerPort": 8080, "name": "http"}], **spec}}


def test_a_service_defaults_to_every_port_and_the_workload_name() -> None:
    w = parse_workload(_doc(service={}))
    assert w.spec.service is not None and w.spec.service.name == "" and w.spec.service.weight == 1
    b = services.backing_of(w.key, "default", "web", w.spec.service,
                            [(p.container_port, p.name, p.protocol) for p in w.spec.ports])
    assert (b.service, b.ports) == ("web", (ServicePort(8080, 8080, name="http", protocol=Protocol.TCP),))


@pytest.mark.parametrize(("service", "path"), [
    pytest.param({"ports": [{"port": 80, "targetPort": 9090}]}, "spec.service.ports[0].targetPort", id="target"),
    pytest.param({"ports": [{"port": 80, "targetPort": 8080}, {"port": 80, "targetPort": 8080}]},
                 "spec.service.ports[1].port", id="dup-port"),
    pytest.param({"name": "Web_1"}, "spec.service.name", id="not-dns"),
    pytest.param({"ingress": [{"port": 81, "hostPort": 8080, "nodes": ["vps"]}]}, "spec.service.ingress[0].port",
                 id="ingress-port"),
    pytest.param({"ingress": [{"port": 8080, "hostPort": 8080}]}, "spec.service.ingress[0].nodes", id="no-nodes"),
    pytest.param({"weight": 0}, "spec.service.weight", id="weight"),
])
def test_a_bad_service_names_the_field(service: dict[str, Any], path: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_workload(_doc(service=service))
    assert path in [p for p, _ in err.value.errors], err.value.errors


def test_a_service_needs_ports_and_a_dns_namespace() -> None:
    doc = _doc(service={})
    doc["spec"]["ports"] = []
    doc["metadata"]["namespace"] = "Team_A"
    with pytest.raises(SpecError) as err:
        parse_workload(doc)
    assert {p for p, _ in err.value.errors} == {"spec.service", "metadata.namespace"}


# ---- addresses -------------------------------------------------------------------------------------------------

def test_an_address_is_kept_while_the_service_exists_and_new_ones_never_collide() -> None:
    a, b = ("default", "web"), ("default", "db")
    first, new, released = services.allocate([a], {})
    assert set(new) == {a} and released == [] and services.valid_vip(first[a])
    again, new2, _ = services.allocate([a, b], first)
    assert again[a] == first[a] and set(new2) == {b} and again[b] != again[a]
    # a collision on the first candidate takes the next one
    forced, _, _ = services.allocate([b], {a: services.vip_candidate(b)})
    assert forced[b] != services.vip_candidate(b)
    left, _, released = services.allocate([b], again)
    assert released == [a] and left == {b: again[b]}


def test_a_stored_address_outside_the_range_is_replaced() -> None:
    out, new, _ = services.allocate([("default", "web")], {("default", "web"): "10.0.0.1"})
    assert services.valid_vip(out[("default", "web")]) and new


# ---- endpoints, tables, pairs ----------------------------------------------------------------------------------

def test_only_ready_replicas_on_online_nodes_are_endpoints_and_every_replica_is_shown() -> None:
    book = _build([backing("web", weight=3)], [facts("w1", "web", "pi"), facts("w2", "web", "laptop", ready=False),
                                                facts("w3", "web", "phone", online=False), facts("w4", "web", None)],
                  zones={"pi": "kitchen"})
    view = book.views[("default", "web")]
    assert [(e.replica, e.ready, e.reason) for e in view.endpoints] == [
        ("w1", True, ""), ("w2", False, "not ready"), ("w3", False, "node not online")]
    record = view.record()
    assert [(e.node, e.replica, e.zone, e.weight) for e in record.endpoints] == [("pi", "w1", "kitchen", 3)]
    assert record.vip == view.vip and record.ports == HTTP


def test_workloads_with_other_ports_are_left_out_with_a_reason() -> None:
    other = (ServicePort(80, 9090, name="http"),)
    book = _build([backing("web"), backing("canary", weight=3), backing("zz", ports=other)],
                  [facts("a", "web", "pi"), facts("b", "canary", "pi"), facts("c", "zz", "pi")])
    view = book.views[("default", "web")]
    assert view.workloads == ("default/canary", "default/web")
    assert [e.replica for e in view.ready()] == ["b", "a"]
    assert len(view.problems) == 1 and "default/zz is left out" in view.problems[0]


def test_a_node_gets_the_services_of_its_namespaces_and_its_ingress_and_pairs_follow() -> None:
    ingress = ((80, 8080, ("vps",), ()),)
    book = _build([backing("web", ingress=ingress), backing("db", service="db", ns="other")],
                  [facts("w1", "web", "pi"), facts("w2", "web", "laptop"),
                   ReplicaFacts("d1", "other/db", "laptop", True, True)])
    tables = {"pi": book.table("pi", {"default"}), "phone": book.table("phone", set()),
              "vps": book.table("vps", set())}
    assert [r.name for r in tables["pi"]] == ["web"] and tables["pi"][0].ingress == ()
    assert book.table("laptop", {"default"})[0] is tables["pi"][0]  # one record shared by every table
    assert tables["phone"] == ()
    (vps,) = tables["vps"]
    assert vps.name == "web" and [(i.port, i.host_port) for i in vps.ingress] == [(80, 8080)]
    assert services.pairs(book, tables) == {("laptop", "pi"): "service web.default", ("laptop", "vps"):
                                            "service web.default", ("pi", "vps"): "service web.default"}


def test_endpoint_changes_are_events_and_the_last_one_leaving_is_a_warning() -> None:
    before = _build([backing("web")], [facts("w1", "web", "pi"), facts("w2", "web", "laptop")])
    assert services.endpoint_changes(None, before) == []
    vips = {k: v.vip for k, v in before.views.items()}
    mid = _build([backing("web")], [facts("w1", "web", "pi", ready=False), facts("w2", "web", "laptop"),
                                    facts("w3", "web", "phone")], vips=vips)
    evs = services.endpoint_changes(before, mid)
    assert [(e.replica, e.ready, e.warning) for e in evs] == [("w3", True, False), ("w1", False, False)]
    assert "not ready" in evs[1].message
    after = _build([backing("web")], [facts("w2", "web", "laptop", online=False)], vips=vips)
    last = services.endpoint_changes(mid, after)
    assert [(e.replica, e.warning) for e in last] == [("w2", True), ("w3", True)]
    assert "no ready endpoint" in last[-1].message and "node not online" in last[0].message


# ---- the engine and REST -----------------------------------------------------------------------------------------

PODMAN = NodeFacts(arch="x86_64", os="linux", cpu_count=4, memory_bytes=8 * 1024**3, runtime="podman",
                   abilities=("containers", "port-remap", "volumes", "images"), zone="home")
SECURE = {"securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "readOnlyRootFilesystem": True,
                               "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}


async def _until(pred: Any, what: str, timeout: float = 8.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := pred():
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def _nodes(r: Rest, *names: str) -> None:
    bus = r.bus.client("nodes")
    await bus.start()
    for node in names:
        bus.publish_nowait(topics.node_status(node), wire.encode(NodeStatus(
            node_id=node, presence=Presence.ONLINE, ts=time.time(), facts=PODMAN)), retain=True)
    await _until(lambda: set(names) <= set(r.coord.cluster.members), "nodes known")


def _table(r: Rest, node: str) -> ServiceTable | None:
    payload = r.bus.retained.get(topics.node_services(node))
    if not payload:
        return None
    msg = wire.decode_node_message(topics.node_services(node), payload)
    assert isinstance(msg, ServiceTable)
    return msg


def _ready(r: Rest, node: str, *, ready: bool = True) -> None:
    reps = tuple(ReplicaObserved(replica_id=rid, workload=rep.workload, state=ReplicaState.RUNNING, ready=ready,
                                 spec_hash=rep.spec_hash)
                 for rid, rep in r.coord.replicas.items() if rep.node == node)
    obs = ObservedState(node_id=node, generation=1, epoch=r.coord.epoch, ts=time.time(), replicas=reps)
    r.bus.route(node, topics.node_observed(node), wire.encode(obs), True)


async def test_a_service_reaches_the_nodes_that_need_it_and_rest_shows_its_endpoints() -> None:
    async with rest() as r:
        r.coord._settle_until = 0.0
        await _nodes(r, "pi", "laptop", "vps")
        web = {"apiVersion": "cloudless/v1", "kind": "Workload", "metadata": {"name": "web"},
               "spec": {"image": "busybox", "replicas": 2, "ports": [{"containerPort": 8080, "name": "http"}],
                        "placement": {"nodeSelector": {}}, **SECURE,
                        "service": {"ports": [{"port": 80, "targetPort": 8080}],
                                    "ingress": [{"port": 80, "hostPort": 8080, "nodes": ["vps"]}]}}}
        resp = await r.client.put("/v1/workloads/default/web", json=web, headers=AUTH)
        assert resp.status in (200, 201), await resp.text()
        placed = await _until(lambda: (n := sorted(x.node for x in r.coord.replicas.values() if x.node))
                              and len(n) == 2 and n, "both replicas placed")
        # no replica ready yet: the service exists with its address, nobody gets an endpoint
        first = await _until(lambda: _table(r, placed[0]), "a table for a node running the namespace")
        (rec,) = first.services
        assert rec.name == "web" and rec.endpoints == () and services.valid_vip(rec.vip)
        assert first.zone == "home" and first.epoch == r.coord.epoch
        for node in set(placed):
            _ready(r, node)
        full = await _until(lambda: (t := _table(r, placed[0])) and len(t.services[0].endpoints) == 2 and t,
                            "both endpoints ready")
        assert full.services[0].vip == rec.vip  # the address never moves
        vps = await _until(lambda: (t := _table(r, "vps")) and t.services and t.services[0].endpoints and t,
                           "the ingress node's table")
        assert [(i.port, i.host_port) for i in vps.services[0].ingress] == [(80, 8080)]
        # the ingress node needs the overlay to every endpoint node
        assert all(r.coord.overlay.is_wanted("vps", n) for n in placed if n != "vps")

        body = await (await r.client.get("/v1/services", headers=AUTH)).json()
        (row,) = body["items"]
        assert row["fqdn"] == "web.default.svc.cloudless" and row["vip"] == rec.vip and row["ready"] == 2
        assert row["ports"] == [{"port": 80, "targetPort": 8080, "name": "http", "protocol": "TCP"}]
        one = await (await r.client.get("/v1/services/default/web", headers=AUTH)).json()
        assert one == row
        missing = await r.client.get("/v1/services/default/nope", headers=AUTH)
        assert missing.status == 404 and "get services" in (await missing.json())["error"]["message"]
        bad = await r.client.get("/v1/services?namespace=a/b", headers=AUTH)
        assert bad.status == 400
        metrics = await (await r.client.get("/metrics", headers=AUTH)).text()
        assert 'cloudless_service_endpoints{namespace="default",ready="true",service="web"} 2.0' in metrics

        # a replica turns unready: it leaves every table, with an event
        _ready(r, placed[0], ready=False)
        await _until(lambda: (t := _table(r, "vps")) and len(t.services[0].endpoints) == (
            2 - placed.count(placed[0])), "the unready endpoint removed")
        await r.coord.journal.flush()
        reasons = [e.reason for e in r.coord.journal.committed_events() if e.object == "service/default/web"]
        assert "ServiceCreated" in reasons and "EndpointReady" in reasons and "EndpointRemoved" in reasons

        # deleting the workload deletes the service and releases its address (stored)
        assert any(e.key.startswith("/services/vips/") for e in await r.store.list("/services/"))
        resp = await r.client.delete("/v1/workloads/default/web", headers=AUTH)
        assert resp.status in (200, 202), await resp.text()
        for node in set(placed):  # the nodes report the replicas gone
            r.bus.route(node, topics.node_observed(node), wire.encode(ObservedState(
                node_id=node, generation=2, epoch=r.coord.epoch, ts=time.time())), True)
        await _until(lambda: not r.coord.services.book.views, "service gone", timeout=15)
        await r.coord.journal.flush()
        assert not any(e.key.startswith("/services/vips/") for e in await r.store.list("/services/"))


async def test_addresses_survive_a_restart_of_the_coordinator() -> None:
    async with rest() as r:
        r.coord._settle_until = 0.0
        await _nodes(r, "pi")
        doc = {"apiVersion": "cloudless/v1", "kind": "Workload", "metadata": {"name": "db"},
               "spec": {"image": "busybox", "ports": [{"containerPort": 6379}], **SECURE, "service": {}}}
        resp = await r.client.put("/v1/workloads/default/db", json=doc, headers=AUTH)
        assert resp.status in (200, 201), await resp.text()
        view = await _until(lambda: r.coord.services.find("default", "db"), "service known")
        await r.coord.journal.flush()
        r.coord.services.vips = {}
        await r.coord._read_state()
        assert r.coord.services.vips == {("default", "db"): view.vip}


# ---- built-in services (the S3 gateway as s3.cloudless) -----------------------------------------------------------

S3 = ("cloudless", "s3")
GATEWAY = services.Builtin(ports=(ServicePort(80, 80, name="http"),), members=("s3@coord-1",))


def _build_with(backings: list[Backing], replicas: list[ReplicaFacts],
                builtins: dict[tuple[str, str], services.Builtin]) -> services.ServiceBook:
    groups, problems = services.group(backings)
    allocated, _, _ = services.allocate([*groups, *builtins], {})
    return services.build(groups, problems, allocated, replicas, zone_of=lambda _n: "",
                          ingress_nodes=lambda _b, nodes, _sel: nodes, builtins=builtins)


def test_a_builtin_service_reaches_every_node_running_replicas_and_pairs_it_with_the_gateway() -> None:
    book = _build_with([backing("web")], [facts("w1", "web", "pi")], {S3: GATEWAY})
    tables = {"pi": book.table("pi", {"default"}), "laptop": book.table("laptop", {"prod"}),
              "idle": book.table("idle", set())}
    assert [(r.namespace, r.name) for r in tables["pi"]] == [S3, ("default", "web")]
    (s3,) = tables["laptop"]  # a namespace with no service of its own still gets the built-in one
    assert s3.endpoints == (ServiceEndpoint("s3@coord-1", services.BUILTIN_REPLICA),)
    assert s3.ports == GATEWAY.ports and services.valid_vip(s3.vip)
    assert tables["idle"] == ()  # a node that runs nothing connects to nothing
    assert services.pairs(book, tables) == {("laptop", "s3@coord-1"): "service s3.cloudless",
                                            ("pi", "s3@coord-1"): "service s3.cloudless"}
    # the record goes over the wire with the gateway's member id as the endpoint's node
    table = ServiceTable(node_id="pi", generation=1, epoch=1, ts=1.0, services=tables["pi"])
    assert wire.decode(wire.encode(table)) == table


def test_no_gateway_no_builtin_and_a_workload_cannot_take_its_name() -> None:
    assert _build_with([backing("web")], [facts("w1", "web", "pi")], {}).table("pi", {"default"})[0].name == "web"
    book = _build_with([backing("fake", service="s3", ns="cloudless")],
                       [ReplicaFacts("f1", "cloudless/fake", "pi", True, True)], {S3: GATEWAY})
    view = book.views[S3]
    assert [e.node for e in view.endpoints] == ["s3@coord-1"] and view.workloads == ()
    assert view.problems == ("workload cloudless/fake is left out: s3.cloudless is a built-in service",)
    assert [r.name for r in book.table("pi", {"cloudless"})] == ["s3"]


class _Journal:
    """What ServiceRegistry records (a fake Recorder): queued store writes and events."""

    def __init__(self) -> None:
        self.ops: list[object] = []
        self.events: list[tuple[str, str]] = []

    def event(self, type_: str, reason: str, obj: str, message: str, *, about: str = "") -> None:
        self.events.append((reason, obj))

    def queue(self, op: object) -> None:
        self.ops.append(op)

    async def flush(self) -> None:
        pass


def test_the_builtin_keeps_its_address_while_its_gateway_is_not_registered() -> None:
    """A coordinator restarts: its first rounds run before the gateway registers s3.cloudless again. The stored
    address must not be released and handed out anew in that window (review 6, L6)."""
    from coordinator.cluster import Cluster
    from coordinator.services_ops import ServiceRegistry

    journal = _Journal()
    registry = ServiceRegistry(Cluster(), journal, clock=lambda: 1000.0)  # type: ignore[arg-type]
    registry.builtins[S3] = GATEWAY
    registry.round(acting=True)
    vip = registry.vips[S3]
    registry.builtins.clear()  # restarted: the gateway is not attached yet
    registry.round(acting=True)
    assert registry.vips.get(S3) == vip and ("ServiceDeleted", "service/cloudless/s3") not in journal.events
    assert all(r.name != "s3" for rs in registry.tables.values() for r in rs)  # not served meanwhile
    registry.builtins[S3] = GATEWAY
    registry.round(acting=True)
    assert registry.vips[S3] == vip

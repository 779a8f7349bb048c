"""`cloudless get services` and `describe service`."""

from __future__ import annotations

import json

import pytest

from tests.cli.fake_coordinator import FakeCoordinator


def _service(ns: str, name: str, vip: str, *, ready: int, endpoints: list[dict[str, object]],
             **kw: object) -> dict[str, object]:
    row: dict[str, object] = {
        "namespace": ns, "name": name, "fqdn": f"{name}.{ns}.svc.cloudless", "vip": vip,
        "ports": [{"port": 80, "targetPort": 8080, "name": "http", "protocol": "TCP"}],
        "workloads": [f"{ns}/{name}"], "ready": ready, "endpointCount": len(endpoints), "endpoints": endpoints,
        "ingress": [], "problems": []}
    row.update(kw)
    return row


@pytest.fixture
def svcs(fake: FakeCoordinator) -> FakeCoordinator:
    now = fake.clock()
    fake.services = [
        _service("default", "web", "127.77.3.9", ready=1, endpoints=[
            {"node": "pi-1", "replica": "web-a1", "workload": "default/web", "zone": "kitchen", "weight": 1,
             "ready": True, "reason": ""},
            {"node": "phone", "replica": "web-b2", "workload": "default/web", "zone": "", "weight": 1,
             "ready": False, "reason": "node not online"}],
            ingress=[{"port": 80, "hostPort": 8080, "nodes": ["vps"]}]),
        _service("shop", "db", "127.77.200.1", ready=0, endpoints=[],
                 ports=[{"port": 6379, "targetPort": 6379, "name": "", "protocol": "TCP"}]),
    ]
    fake.events.append({"id": 1, "time": now - 5, "type": "Warning", "reason": "EndpointRemoved",
                        "object": "service/default/web", "message": "endpoint web-b2 on phone removed"})
    return fake


def test_get_services_is_a_table_of_names_addresses_and_ready_endpoints(svcs: FakeCoordinator, cli) -> None:
    r = cli("get", "services")
    assert r.code == 0, r.err
    assert [line.split() for line in r.out.splitlines()] == [
        ["NAME", "ADDRESS", "PORTS", "READY", "INGRESS"],
        ["web", "127.77.3.9", "80->8080/TCP", "1/2", "8080@vps"],
    ]
    assert svcs.requests[-1].query == {"namespace": "default"}
    every = cli("get", "svc", "-A", "-o", "wide").out.splitlines()
    assert every[0].split()[:2] == ["NAMESPACE", "NAME"] and "FQDN" in every[0]
    assert "db.shop.svc.cloudless" in every[2] and "6379/TCP" in every[2] and "0/0" in every[2]
    assert json.loads(cli("get", "services", "web", "-o", "json").out)["vip"] == "127.77.3.9"


def test_describe_service_shows_each_endpoint_with_why_and_the_events(svcs: FakeCoordinator, cli) -> None:
    out = cli("describe", "service", "web").out
    assert "web.default.svc.cloudless" in out and "127.77.3.9" in out and "1 of 2 endpoints" in out
    assert "port 80 on host port 8080 of vps" in out
    section = out[out.index("Endpoints (2)"):]
    rows = [line.split() for line in section.splitlines()[1:4]]
    assert rows[1][:5] == ["web-a1", "pi-1", "kitchen", "1", "yes"]
    assert rows[2][:5] == ["web-b2", "phone", "-", "1", "no"] and "node not online" in section
    assert "EndpointRemoved" in out[out.index("Events"):]


def test_a_missing_service_says_how_to_list_them(svcs: FakeCoordinator, cli) -> None:
    r = cli("describe", "service", "nope")
    assert r.code != 0 and "get services -A" in r.err

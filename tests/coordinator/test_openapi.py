"""/openapi.json is a valid OpenAPI 3.1 document, and what the live API answers matches the response schemas it
declares (a real coordinator and REST app; an in-memory broker). Also: apply answers admission warnings."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from openapi_spec_validator import validate

from broker import wire
from broker.wire import NodeFacts, NodeStatus, Presence, topics
from coordinator.rest.app import ROUTES, openapi_document
from coordinator.rest.openapi import components_of
from tests.coordinator.rest_harness import AUTH, Rest, rest

DOC: dict[str, Any] = {"apiVersion": "cloudless/v1", "kind": "Workload", "metadata": {"name": "web"},
                       "spec": {"image": "localhost/app:1", "replicas": 1,
                                # what the default policies refuse without; what they only warn about is left out
                                "securityContext": {"allowPrivilegeEscalation": False,
                                                    "capabilities": {"drop": ["ALL"]}}}}
SECURE = {"securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "readOnlyRootFilesystem": True,
                              "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
          "resources": {"limits": {"cpu": "200m", "memory": "64Mi"}}}


def test_the_document_validates_with_openapi_spec_validator() -> None:
    validate(openapi_document())  # raises on any error, e.g. the old "'/$defs/Workload' does not exist"


def test_no_reference_points_into_a_json_schema_defs_section() -> None:
    text = repr(openapi_document())
    assert "#/$defs/" not in text


def test_components_of_moves_defs_and_rewrites_their_references() -> None:
    top, defs = components_of({"$schema": "x", "$ref": "#/$defs/A", "$defs": {
        "A": {"properties": {"b": {"$ref": "#/$defs/B"}, "c": {"items": [{"$ref": "#/$defs/B"}]}}}, "B": {}}})
    assert top == {"$ref": "#/components/schemas/A"}
    assert defs["A"]["properties"]["b"] == {"$ref": "#/components/schemas/B"}
    assert defs["A"]["properties"]["c"]["items"][0] == {"$ref": "#/components/schemas/B"}


@pytest.mark.parametrize("handler", ["list_nodes", "get_node", "list_workloads", "apply", "get_workload",
                                     "list_replicas", "list_events", "list_tokens", "create_token",
                                     "overlay_summary", "list_peers", "rollout_status", "logs", "exec"])
def test_the_main_routes_declare_a_named_response_shape(handler: str) -> None:
    route = next(r for r in ROUTES if r.handler == handler)
    op = openapi_document()["paths"][route.path][route.method.lower()]
    ok = [code for code in op["responses"] if code.startswith("2")]
    assert ok, f"{handler}: no 2xx response"
    for code in ok:
        schema = op["responses"][code]["content"]["application/json"]["schema"]
        assert schema["$ref"].startswith("#/components/schemas/"), handler


def test_every_route_declares_a_2xx_answer_with_content() -> None:
    doc = openapi_document()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            # a WebSocket upgrade (exec -it) succeeds with 101 Switching Protocols, never a 2xx
            ok = {c: v for c, v in op["responses"].items() if c.startswith("2") or c == "101"}
            assert ok and all(v.get("content") for v in ok.values()), f"{method.upper()} {path}"


def _check(doc: dict[str, Any], handler: str, body: Any, status: int) -> None:
    """`body` matches the schema the document declares for `handler`'s `status` answer."""
    route = next(r for r in ROUTES if r.handler == handler)
    op = doc["paths"][route.path][route.method.lower()]
    assert str(status) in op["responses"], f"{handler} answered {status}, which the document does not declare"
    schema = op["responses"][str(status)]["content"]["application/json"]["schema"]
    resolver_root = {"components": doc["components"], **schema}
    jsonschema.validate(body, resolver_root, cls=jsonschema.Draft202012Validator)


async def _node(r: Rest, node: str) -> None:
    bus = r.bus.client("nodes")
    await bus.start()
    facts = NodeFacts(arch="x86_64", os="linux", cpu_count=2, memory_bytes=2 * 1024**3, runtime="podman",
                      labels={"room": "attic"}, abilities=("containers", "port-remap", "volumes", "images"))
    bus.publish_nowait(topics.node_status(node), wire.encode(NodeStatus(node_id=node, presence=Presence.ONLINE,
                                                                        ts=time.time(), facts=facts)), retain=True)
    deadline = time.monotonic() + 8
    while node not in r.coord.cluster.members:
        assert time.monotonic() < deadline, "node never known"
        await asyncio.sleep(0.05)


async def test_live_answers_match_the_declared_response_schemas(tmp_path: Path) -> None:
    doc = openapi_document()
    async with rest(pki=tmp_path) as r:
        await _node(r, "pi")
        calls: list[tuple[str, str, str, Any]] = [
            ("apply", "PUT", "/v1/workloads/default/web", DOC),
            ("apply", "PUT", "/v1/workloads/default/web", DOC),  # unchanged: 200
            ("list_nodes", "GET", "/v1/nodes", None),
            ("get_node", "GET", "/v1/nodes/pi", None),
            ("cordon", "POST", "/v1/nodes/pi/cordon", None),
            ("list_workloads", "GET", "/v1/workloads", None),
            ("get_workload", "GET", "/v1/workloads/default/web", None),
            ("scale", "POST", "/v1/workloads/default/web/scale", {"replicas": 2}),
            ("rollout_status", "GET", "/v1/workloads/default/web/rollout", None),
            ("rollout_history", "GET", "/v1/workloads/default/web/history", None),
            ("list_replicas", "GET", "/v1/replicas", None),
            ("list_events", "GET", "/v1/events", None),
            ("create_token", "POST", "/v1/tokens", {}),
            ("list_tokens", "GET", "/v1/tokens", None),
            ("overlay_summary", "GET", "/v1/overlay", None),
            ("list_peers", "GET", "/v1/peers", None),
            ("healthz", "GET", "/healthz", None),
            ("delete_workload", "DELETE", "/v1/workloads/default/web", None),
        ]
        for handler, method, path, body in calls:
            resp = await r.client.request(method, path, json=body, headers=AUTH)
            answer = await resp.json()
            assert resp.status < 300, (handler, resp.status, answer)
            _check(doc, handler, answer, resp.status)
        events = (await (await r.client.get("/v1/events", headers=AUTH)).json())["items"]
        assert events, "the events list the schema was checked on was empty"


async def test_apply_answers_the_admission_warnings() -> None:
    async with rest() as r:
        resp = await r.client.put("/v1/workloads/default/web", json=DOC, headers=AUTH)
        assert resp.status == 201, await resp.text()
        warnings = (await resp.json())["warnings"]
        # the default policies warn (not refuse) about a root user, a writable root filesystem, no limits
        assert any("runAsNonRoot" in w for w in warnings), warnings
        assert any("readOnlyRootFilesystem" in w for w in warnings), warnings
        assert all("(" in w and "/" in w for w in warnings), "each names its policy/rule"


async def test_a_workload_that_passes_every_rule_gets_no_warnings() -> None:
    async with rest() as r:
        secure = {**DOC, "spec": {**DOC["spec"], **SECURE}}
        resp = await r.client.put("/v1/workloads/default/web", json=secure, headers=AUTH)
        assert resp.status == 201, await resp.text()
        assert (await resp.json())["warnings"] == []

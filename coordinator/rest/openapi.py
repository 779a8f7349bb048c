"""The OpenAPI 3.1 document of the REST API, built from the route tables (so it cannot drift from the router)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from coordinator.rest.overlay import BODY_SCHEMAS as OVERLAY_BODY_SCHEMAS
from coordinator.rest.responses import RESPONSE_SCHEMAS
from coordinator.rest.routes import Param, Route
from coordinator.rest.secrets import SECRETS_BODY_SCHEMAS
from coordinator.rest.storage import BODY_SCHEMAS as STORAGE_BODY_SCHEMAS
from coordinator.spec import MAX_REPLICAS, workload_json_schema

BODY_SCHEMAS: dict[str, dict[str, Any]] = {
    "Enroll": {"type": "object", "additionalProperties": False, "required": ["token", "nodeId", "csr"],
               "properties": {"token": {"type": "string"}, "nodeId": {"type": "string"}, "csr": {"type": "string"}}},
    "Renew": {"type": "object", "additionalProperties": False, "required": ["csr"],
              "properties": {"csr": {"type": "string"}}},
    "TokenRequest": {"type": "object", "additionalProperties": False, "properties": {
        "ttlSeconds": {"type": "number", "minimum": 60, "maximum": 604800},
        "maxUses": {"type": "integer", "minimum": 1, "maximum": 10000},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}}, "zone": {"type": "string"}}},
    "Scale": {"type": "object", "additionalProperties": False, "required": ["replicas"],
              "properties": {"replicas": {"type": "integer", "minimum": 0, "maximum": MAX_REPLICAS}}},
    "Rollback": {"type": "object", "additionalProperties": False,
                 "properties": {"revision": {"type": ["integer", "null"], "minimum": 1}}},
    "Exec": {"type": "object", "additionalProperties": False, "required": ["command"],
             "properties": {"command": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                            "timeoutSeconds": {"type": "number", "minimum": 0.5, "maximum": 300}}},
    **SECRETS_BODY_SCHEMAS,
    **OVERLAY_BODY_SCHEMAS,
    **STORAGE_BODY_SCHEMAS,
}


def document(routes: Iterable[Route]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for r in routes:
        op: dict[str, Any] = {"summary": r.summary, "operationId": r.handler,
                              "responses": {**_ok_responses(r), "default": {
                                  "description": "Error",
                                  "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}}}
        params: list[dict[str, Any]] = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                                        for p in re.findall(r"{(\w+)}", r.path)]
        params += [_query_param(q) for q in r.query]
        if params:
            op["parameters"] = params
        if r.body:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": {
                "$ref": f"#/components/schemas/{r.body}"}}}}
        if r.auth:
            op["security"] = [{"bearer": []}]
        paths.setdefault(r.path, {})[r.method.lower()] = op
    workload, workload_defs = components_of(workload_json_schema())
    return {
        "openapi": "3.1.0",
        "info": {"title": "Cloudless coordinator API", "version": "1"},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                **workload_defs,
                **BODY_SCHEMAS,
                **RESPONSE_SCHEMAS,
                # the workload schema's root is a reference to its own `Workload` definition: that one is it
                "Workload": workload_defs.get("Workload", workload),
                "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                    "message": {"type": "string"}, "field": {"type": ["string", "null"]},
                    "errors": {"type": "array", "items": {"type": "object", "properties": {
                        "path": {"type": "string"}, "message": {"type": "string"}}}}}}}},
            },
        },
    }


def _query_param(q: Param) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": q.type}
    if q.enum:
        schema["enum"] = list(q.enum)
    if q.minimum is not None:
        schema["minimum"] = q.minimum
    if q.maximum is not None:
        schema["maximum"] = q.maximum
    return {"name": q.name, "in": "query", "required": False, "description": q.description, "schema": schema}


def _ok_responses(r: Route) -> dict[str, Any]:
    if r.media != "application/json":
        schema: dict[str, Any] = {"type": "string"}
    elif r.response:
        schema = {"$ref": f"#/components/schemas/{r.response}"}
    else:
        schema = {"type": "object"}
    return {str(code): {"description": "Created" if code == 201 else "OK", "content": {r.media: {"schema": schema}}}
            for code in r.ok}


def components_of(schema: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A JSON Schema document split for OpenAPI: the schema without its `$defs`, and those definitions, with every
    `#/$defs/X` reference rewritten to `#/components/schemas/X` (inside components a `$defs` pointer would resolve
    against the OpenAPI document's root, where there is none)."""
    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (_component_ref(v) if k == "$ref" and isinstance(v, str) else rewrite(v))
                    for k, v in node.items()}
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    defs = schema.get("$defs", {})
    clash = set(defs) & (set(BODY_SCHEMAS) | set(RESPONSE_SCHEMAS) | {"Error"})
    if clash:
        raise ValueError(f"workload schema definitions {sorted(clash)} clash with API schema names")
    body = {k: v for k, v in schema.items() if k not in ("$defs", "$schema", "$id")}
    return rewrite(body), {name: rewrite(d) for name, d in defs.items()}


def _component_ref(ref: str) -> str:
    if ref.startswith("#/$defs/"):
        return "#/components/schemas/" + ref.removeprefix("#/$defs/")
    return ref

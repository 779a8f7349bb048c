"""The OpenAPI 3.1 document of the REST API, built from the route tables (so it cannot drift from the router)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from coordinator.rest.overlay import BODY_SCHEMAS as OVERLAY_BODY_SCHEMAS
from coordinator.rest.routes import Route
from coordinator.rest.secrets import SECRETS_BODY_SCHEMAS
from coordinator.spec import workload_json_schema

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
              "properties": {"replicas": {"type": "integer", "minimum": 0, "maximum": 1000}}},
    "Rollback": {"type": "object", "additionalProperties": False,
                 "properties": {"revision": {"type": ["integer", "null"], "minimum": 1}}},
    "Exec": {"type": "object", "additionalProperties": False, "required": ["command"],
             "properties": {"command": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                            "timeoutSeconds": {"type": "number", "minimum": 0.5, "maximum": 300}}},
    **SECRETS_BODY_SCHEMAS,
    **OVERLAY_BODY_SCHEMAS,
}


def document(routes: Iterable[Route]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for r in routes:
        op: dict[str, Any] = {"summary": r.summary, "operationId": r.handler,
                              "responses": {"200": {"description": "OK"},
                                            "default": {"description": "Error",
                                                        "content": {"application/json": {"schema": {
                                                            "$ref": "#/components/schemas/Error"}}}}}}
        params = re.findall(r"{(\w+)}", r.path)
        if params:
            op["parameters"] = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                                for p in params]
        if r.body:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": {
                "$ref": f"#/components/schemas/{r.body}"}}}}
        if r.auth:
            op["security"] = [{"bearer": []}]
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Cloudless coordinator API", "version": "1"},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                **BODY_SCHEMAS,
                "Workload": workload_json_schema(),
                "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                    "message": {"type": "string"}, "field": {"type": ["string", "null"]},
                    "errors": {"type": "array", "items": {"type": "object", "properties": {
                        "path": {"type": "string"}, "message": {"type": "string"}}}}}}}},
            },
        },
    }

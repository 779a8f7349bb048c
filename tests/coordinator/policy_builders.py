"""Builders and shared constants for the admission policy tests (test_policy.py, test_policy_parsing.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from coordinator.policy import (
    Decision,
    Policy,
    parse_policy,
)
from coordinator.spec import Workload, parse_workload

REPO = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "ab" * 32
CTX = "spec.securityContext"
# Passes every rule of the default set (the example in coordinator/policies/default.yaml).
SECURE_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": 65534,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}


# ---- builders ----------------------------------------------------------------------------------------------------

def make_workload(image: str = "localhost/app:1", *, namespace: str = "default", security: dict[str, Any] | None = None,
                  resources: dict[str, Any] | None = None) -> Workload:
    spec: dict[str, Any] = {"image": image}
    if security is not None:
        spec["securityContext"] = security
    if resources is not None:
        spec["resources"] = resources
    return parse_workload({"apiVersion": "cloudless/v1", "kind": "Workload",
                           "metadata": {"name": "web", "namespace": namespace}, "spec": spec})


def policy_doc(rules: dict[str, Any], *, name: str = "p", action: str | None = None,
               namespaces: list[str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"rules": rules}
    if action is not None:
        spec["action"] = action
    if namespaces is not None:
        spec["namespaces"] = namespaces
    return {"apiVersion": "cloudless/v1", "kind": "Policy", "metadata": {"name": name}, "spec": spec}


def make_policy(rules: dict[str, Any], **kwargs: Any) -> Policy:
    return parse_policy(policy_doc(rules, **kwargs))


def fields_of(decision: Decision) -> list[str]:
    return [v.field for v in decision.violations]


def hello() -> dict[str, Any]:
    doc = yaml.safe_load((REPO / "examples" / "hello.yaml").read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc

"""Workload documents for spec tests: a full example using every field, and small helpers to vary it."""

from __future__ import annotations

import copy
from typing import Any

FULL_EXAMPLE: dict[str, Any] = {
    "apiVersion": "cloudless/v1",
    "kind": "Workload",
    "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web", "tier": "frontend"}},
    "spec": {
        "image": "ghcr.io/example/web:1.4.2",
        "command": ["/bin/web"],
        "args": ["--port", "8080"],
        "env": [
            {"name": "MODE", "value": "production"},
            {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
        ],
        "replicas": 3,
        "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}},
        "ports": [{"containerPort": 8080, "hostPort": 80, "protocol": "TCP", "name": "http"}],
        "placement": {
            "nodeSelector": {"disk": "ssd"},
            "zones": ["home", "office"],
            "regions": ["eu"],
            "arch": ["arm64", "x86_64"],
            "os": ["linux"],
            "spread": "zone",
            "nodeAffinity": {
                "required": [{"key": "class", "operator": "NotIn", "values": ["phone"]}],
                "preferred": [{"weight": 50, "key": "cloudless.io/zone", "operator": "In", "values": ["home"]}],
            },
            "antiAffinity": {"workloads": ["web"], "scope": "node"},
            "tolerations": [
                {"key": "battery", "operator": "Exists", "effect": "PreferNoSchedule"},
                {"key": "dedicated", "operator": "Equal", "value": "edge", "effect": "NoSchedule"},
            ],
            "strategy": "binpack",
        },
        "restartPolicy": "OnFailure",
        "rollout": {
            "strategy": "RollingUpdate",
            "maxSurge": 1,
            "maxUnavailable": "25%",
            "minAvailable": "50%",
            "progressDeadlineSeconds": 300,
            "autoRollback": False,
        },
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 5, "failureThreshold": 4},
        "readinessProbe": {"exec": {"command": ["/bin/check"]}, "initialDelaySeconds": 2.5},
        "securityContext": {
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "privileged": False,
            "allowPrivilegeEscalation": False,
            "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
            "seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/web.json"},
            "hostNetwork": False,
            "hostPID": False,
            "hostIPC": False,
        },
        "volumes": [
            {"name": "cache", "mountPath": "/var/cache/web", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
            {"name": "scratch", "mountPath": "/scratch"},
        ],
    },
}


def example(**overrides: Any) -> dict[str, Any]:
    """A deep copy of FULL_EXAMPLE with dotted-path overrides: example(**{"spec.replicas": 5})."""
    doc = copy.deepcopy(FULL_EXAMPLE)
    for path, value in overrides.items():
        set_path(doc, path, value)
    return doc


def set_path(doc: Any, path: str, value: Any) -> None:
    """Set `a.b[2].c` in a nested document (creating dicts on the way)."""
    parts = path.replace("[", ".[").split(".")
    target = doc
    for part in parts[:-1]:
        target = target[int(part[1:-1])] if part.startswith("[") else target.setdefault(part, {})
    last = parts[-1]
    if last.startswith("["):
        target[int(last[1:-1])] = value
    else:
        target[last] = value


def minimal(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "cloudless/v1", "kind": "Workload", "metadata": {"name": "w"}, "spec": {"image": "x", **spec}}

"""`cloudless status`: the cluster's health on one screen — is the coordinator ready (and if not, why: broker,
store, leader, failing reconcile rounds, an epoch behind the nodes'), how many nodes are in which state, how many
workloads are ready, and which objects have a problem. Exit 0 when ready, 1 when not.

`summary` is a pure function of the API's JSON (/readyz, /v1/nodes, /v1/workloads); `cmd_status` only fetches.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cloudless.ctl import Ctx, add_command, connection_flags

if TYPE_CHECKING:
    from cloudless.ctl import Sub


def _why_not(ready: Mapping[str, Any]) -> list[str]:
    reasons = []
    if not ready.get("state"):
        reasons.append("state not loaded yet")
    if not ready.get("broker"):
        reasons.append("no broker connection")
    if not ready.get("store", True):
        reasons.append(f"store unavailable ({ready.get('storeError') or 'no answer'})")
    if ready.get("roundsFailing"):
        reasons.append(f"reconcile rounds failing ({ready['roundsFailing']} in a row: {ready.get('roundError')})")
    if ready.get("epochBehind"):
        reasons.append(f"epoch behind the nodes ({ready['epochBehind']}): see docs/operations.md")
    return reasons or ["no leader known"]


def summary(ready: Mapping[str, Any], nodes: Sequence[Mapping[str, Any]],
            workloads: Sequence[Mapping[str, Any]]) -> str:
    """One screen of cluster health from the API's JSON."""
    lines = []
    if ready.get("ready"):
        role = "leader" if ready.get("leader") else f"follower of {ready.get('leaderId') or '?'}"
        lines.append(f"coordinator  ready ({role}, epoch {ready.get('epoch')}, {ready.get('rounds', 0)} rounds)")
    else:
        lines.append("coordinator  NOT READY: " + "; ".join(_why_not(ready)))
    states = Counter(str(n.get("state", "?")) for n in nodes)
    lines.append("nodes        " + (", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "none"))
    phases = Counter(str((w.get("status") or {}).get("phase", "?")) for w in workloads)
    ready_count = sum(1 for w in workloads if (w.get("status") or {}).get("ready") == (w.get("status") or {}).get(
        "desired"))
    lines.append(f"workloads    {len(workloads)} ({ready_count} fully ready"
                 + "".join(f", {n} {p}" for p, n in sorted(phases.items())) + ")" if workloads else
                 "workloads    none")
    problems = ready.get("problems") or {}
    for obj, why in sorted(problems.items()):
        lines.append(f"problem      {obj}: {why}")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace, ctx: Ctx) -> int:
    ready = ctx.api.request("GET", "/readyz", answers=(503,)).body or {}
    nodes = ctx.api.request("GET", "/v1/nodes").body["items"]
    workloads = ctx.api.request("GET", "/v1/workloads").body["items"]
    ctx.out(summary(ready, nodes, workloads))
    return 0 if ready.get("ready") else 1


def add_parser(sub: Sub) -> None:
    add_command(sub, "status", connection_flags(), func=cmd_status,
                help="cluster health on one screen (exit 1 when the coordinator is not ready)",
                description="Whether the coordinator is ready and, if not, why (broker, store, leader, failing "
                "reconcile rounds, an epoch behind the nodes'); nodes by state; workloads ready; objects with a "
                "problem. Exit 0 when ready, 1 when not.",
                examples="  cloudless status\n  cloudless status || echo 'look at the coordinator log'")

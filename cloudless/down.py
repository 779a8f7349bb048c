"""`cloudless down`: stop what a stopped `cloudless up` left running — the local agent's workloads.

Replicas outlive their agent on purpose (ARCHITECTURE §5, edge autonomy: a workload keeps running while its agent
is away), so Ctrl-C on `up` leaves the local node's containers and processes serving. `down` stops them:
- Podman: every container labelled `cloudless.node=<the local node id>` (`podman rm --force`);
- the process runtime: every instance under DATA_DIR/agent/process/ whose recorded pid is still that process
  (same creation time), by SIGTERM to its process group, then SIGKILL after a grace period.
It refuses while the cluster still answers (the agent would start them again): stop `up` first.
It also stops the Mosquitto an `up --mosquitto` started, when that outlived its `up` (cloudless.up_mosquitto).

What to stop is decided from listings (`containers_to_stop`, `processes_to_stop` are pure); the rest is adapters.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloudless.ctl import Sub

LABEL_NODE = "cloudless.node"  # edge_agent.runtime.base.LABEL_NODE (not imported: the CLI must not need the agent)
GRACE_S = 10.0


@dataclass(frozen=True, slots=True)
class Running:
    """One workload instance left running: how to name it to the user, and how to stop it."""

    kind: str  # "container" | "process"
    ident: str  # container id, or instance id
    what: str  # "default/hello replica hello-ab12"
    pid: int | None = None


def _what(labels: Mapping[str, str]) -> str:
    ns, wl, rep = (labels.get(f"cloudless.{k}", "?") for k in ("namespace", "workload", "replica"))
    return f"{ns}/{wl} replica {rep}"


def containers_to_stop(listing: Sequence[Mapping[str, Any]], node_id: str) -> list[Running]:
    """From `podman ps -a --format json`: the containers of `node_id` that are not already gone."""
    out = []
    for c in listing:
        labels = c.get("Labels") or {}
        if labels.get(LABEL_NODE) != node_id:
            continue
        out.append(Running("container", str(c.get("Id", ""))[:12], _what(labels)))
    return out


def processes_to_stop(instances: Mapping[str, tuple[Mapping[str, Any], Mapping[str, Any]]],
                      alive: Mapping[int, float]) -> list[Running]:
    """From each process instance's (meta.json, run.json) and the live pids with their creation times: those whose
    recorded pid is still the process it started (a reused pid is someone else's)."""
    out = []
    for instance_id, (meta, run) in sorted(instances.items()):
        pid, created = run.get("pid"), run.get("pid_created")
        if not isinstance(pid, int) or pid not in alive or not isinstance(created, (int, float)):
            continue
        if abs(alive[pid] - float(created)) >= 1.0:
            continue
        out.append(Running("process", instance_id, _what(meta.get("labels") or {}), pid=pid))
    return out


# ---- adapters -------------------------------------------------------------------------------------------------

def _podman_listing(node_id: str) -> list[dict[str, Any]]:
    if shutil.which("podman") is None:
        return []
    proc = subprocess.run(["podman", "ps", "--all", "--format", "json", "--filter", f"label={LABEL_NODE}={node_id}"],
                          capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"podman ps failed: {proc.stderr.strip()[:300]}")
    data = json.loads(proc.stdout or "[]")
    return data if isinstance(data, list) else []


def _process_instances(root: Path) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    out: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        try:
            meta = json.loads((d / "meta.json").read_text())
            run = json.loads((d / "run.json").read_text())
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and isinstance(run, dict):
            out[d.name] = (meta, run)
    return out


def _alive(pids: Sequence[int]) -> dict[int, float]:
    import psutil

    out = {}
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                out[pid] = proc.create_time()
        except psutil.Error:
            continue
    return out


def _signal(pid: int, sig: signal.Signals) -> None:
    """`sig` to the process group `pid` leads (the runtime starts each instance in its own session), else to it."""
    try:
        os.killpg(pid, sig)
    except PermissionError:
        os.kill(pid, sig)


def _stop_process(pid: int, grace_s: float) -> None:
    """SIGTERM, then SIGKILL when it is still there after grace_s."""
    import psutil

    try:
        _signal(pid, signal.SIGTERM)
        psutil.Process(pid).wait(timeout=grace_s)
    except (ProcessLookupError, psutil.NoSuchProcess):
        return
    except psutil.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            _signal(pid, signal.SIGKILL)


def _cluster_answers() -> str | None:
    """The API URL when the local cluster still answers (then `down` must not run), else None."""
    from cloudless.client import ClientError, CoordinatorClient, default_config_path, read_config_file

    cfg = read_config_file(default_config_path(os.environ), required=False, warn=lambda _: None)
    server = cfg.get("server")
    if not server:
        return None
    try:
        CoordinatorClient(server, cfg.get("token"), timeout=3.0, ca=cfg.get("ca")).request("GET", "/healthz")
    except ClientError:
        return None
    return server


def cmd_down(args: argparse.Namespace) -> int:
    from cloudless.up import default_data_dir, local_node_id

    data_dir: Path = (args.data_dir or default_data_dir()).resolve()
    agent_dir = data_dir / "agent"
    if not args.force and (server := _cluster_answers()):
        print(f"cloudless down: the cluster still answers at {server}: stop `cloudless up` first (Ctrl-C in its "
              "terminal), or its agent starts the workloads again\ncloudless: hint: `cloudless down --force` "
              "stops them anyway", file=sys.stderr)
        return 1
    from cloudless import up_mosquitto

    if (pid := up_mosquitto.left_running(data_dir)) is not None:
        if args.dry_run:
            print(f"would stop mosquitto (pid {pid}, started by `cloudless up --mosquitto`)")
        elif up_mosquitto.stop_left_running(data_dir, GRACE_S) is not None:
            print(f"stopped mosquitto (pid {pid}, started by `cloudless up --mosquitto`)", flush=True)
    node_id = local_node_id(agent_dir)
    instances = _process_instances(agent_dir / "process")
    pids = [run["pid"] for _, run in instances.values() if isinstance(run.get("pid"), int)]
    running = [*containers_to_stop(_podman_listing(node_id), node_id), *processes_to_stop(instances, _alive(pids))]
    if not running:
        print(f"nothing of node {node_id} is running (data dir {data_dir})")
        return 0
    for r in running:
        if args.dry_run:
            print(f"would stop {r.kind} {r.ident} ({r.what})")
            continue
        if r.kind == "container":
            proc = subprocess.run(["podman", "rm", "--force", "--time", str(int(GRACE_S)), r.ident],
                                  capture_output=True, text=True, timeout=GRACE_S + 60, check=False)
            if proc.returncode != 0:
                print(f"cloudless down: podman rm {r.ident}: {proc.stderr.strip()[:300]}", file=sys.stderr)
                continue
        elif r.pid is not None:
            _stop_process(r.pid, GRACE_S)
        print(f"stopped {r.kind} {r.ident} ({r.what})", flush=True)
    return 0


def add_parser(sub: Sub) -> None:
    p = sub.add_parser("down", help="stop the local cluster's workloads that `cloudless up` left running",
                       description="Stop the containers and processes of the local node of a stopped `cloudless "
                       "up` (workloads keep running without their agent, by design). Refuses while the cluster "
                       "still answers, since its agent would start them again.")
    p.add_argument("--data-dir", type=Path, default=None, help="the data dir `cloudless up` used (default: its "
                   "default)")
    p.add_argument("--dry-run", action="store_true", help="only list what would be stopped")
    p.add_argument("--force", action="store_true", help="stop them even while the cluster answers")
    p.set_defaults(func=cmd_down)

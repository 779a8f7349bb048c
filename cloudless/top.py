"""`cloudless top`: a live view of the nodes (load, battery, temperature, storage), the object store and the
workloads, over the REST API.

The tables are computed by pure functions from the API's JSON (`frame`); `cmd_top` only fetches, prints and
sleeps through the CLI's clock, so tests drive it with a FakeClock and a fake coordinator.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cloudless import render
from cloudless.ctl import Ctx, add_command, connection_flags, duration_in, namespace_arg, watch

if TYPE_CHECKING:
    from cloudless.ctl import Sub

NODE_HEADERS = ("NODE", "STATE", "CPU%", "MEM%", "BATTERY", "TEMP", "REPLICAS", "STORAGE")
WORKLOAD_HEADERS = ("NAMESPACE", "NAME", "READY/DESIRED", "PHASE")


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def memory_percent(node: Mapping[str, Any]) -> float | None:
    used = _number((node.get("usage") or {}).get("memoryBytes"))
    total = _number((node.get("capacity") or {}).get("memory"))
    return used * 100 / total if used is not None and total else None


def temperature(node: Mapping[str, Any]) -> str:
    """The hottest sensor, in °C; `-` when the node reports none."""
    temps = [t for t in map(_number, (node.get("temperatures") or {}).values()) if t is not None]
    return f"{max(temps):.0f}C" if temps else render.NONE


def storage_cell(node: Mapping[str, Any]) -> str:
    """Object-store bytes used/offered (`-`: the node offers no storage)."""
    st = node.get("storage")
    if not isinstance(st, Mapping) or not _number(st.get("quotaBytes")):
        return render.NONE
    cell = f"{render.memory(st.get('usedBytes') or 0)}/{render.memory(st.get('quotaBytes'))}"
    corrupt = _number(st.get("corrupt"))
    return f"{cell} ({corrupt:.0f} corrupt)" if corrupt else cell


def node_row(node: Mapping[str, Any]) -> list[str]:
    usage = node.get("usage") or {}
    return [render.text(node.get("id")), render.text(node.get("state")), render.percent(usage.get("cpuPercent")),
            render.percent(memory_percent(node)), render.percent(usage.get("batteryPercent")), temperature(node),
            render.text(node.get("replicas")), storage_cell(node)]


def storage_line(status: Mapping[str, Any] | None) -> str | None:
    """One line on the object store (GET /v1/storage/status), or None when the cluster serves none."""
    if not status:
        return None
    repair = status.get("repair") or {}
    rate = _number(repair.get("rateBytesPerS")) or 0.0
    nodes = [n for n in status.get("nodes") or () if isinstance(n, Mapping)]
    offering = sum(1 for n in nodes if n.get("online") and _number(n.get("quotaBytes")))
    return (f"Storage: {offering} node(s) offering, {render.text(status.get('chunks'))} chunks, "
            f"{render.text(status.get('underReplicated'))} under-replicated, "
            f"{render.text(status.get('unrecoverable'))} unrecoverable; repair {render.memory(rate)}B/s, "
            f"{render.memory(repair.get('copiedBytes') or 0)}B copied since start")


def workload_row(workload: Mapping[str, Any]) -> list[str]:
    meta, status = workload.get("metadata") or {}, workload.get("status") or {}
    ready, desired = status.get("ready"), status.get("desired")
    return [render.text(meta.get("namespace")), render.text(meta.get("name")),
            f"{render.text(ready if ready is not None else 0)}/{render.text(desired)}",
            render.text(status.get("phase"))]


def frame(nodes: Sequence[Mapping[str, Any]], workloads: Sequence[Mapping[str, Any]],
          storage: Mapping[str, Any] | None = None) -> str:
    """Both tables, nodes first (then the object store's line when the cluster serves one); a line instead of an
    empty table."""
    node_part = render.table(NODE_HEADERS, map(node_row, nodes)) if nodes else "No nodes."
    line = storage_line(storage)
    if line is not None:
        node_part += f"\n{line}"
    wl_part = render.table(WORKLOAD_HEADERS, map(workload_row, workloads)) if workloads else "No workloads."
    return f"{node_part}\n\n{wl_part}"


def _fetch(ctx: Ctx, namespace: str | None) -> str:
    nodes = ctx.api.request("GET", "/v1/nodes").body["items"]
    query = {"namespace": namespace} if namespace else None
    workloads = ctx.api.request("GET", "/v1/workloads", query=query).body["items"]
    storage = ctx.api.request("GET", "/v1/storage/status", answers=(404, 503))  # 503: no storage; 404: older API
    return frame(nodes, workloads, storage.body if storage.status == 200 and isinstance(storage.body, dict) else None)


def cmd_top(args: argparse.Namespace, ctx: Ctx) -> int:
    if args.once:
        ctx.out(_fetch(ctx, args.namespace))
        return 0
    return watch(ctx, args.interval, lambda: _fetch(ctx, args.namespace),
                 title=lambda stamp: f"cloudless top   every {args.interval:g}s   {stamp}   (Ctrl-C to stop)",
                 show=lambda text: text, key=lambda text: text)


def add_parser(sub: Sub) -> None:
    p = add_command(sub, "top", connection_flags(), func=cmd_top,
                    help="live view of node load and workload health",
                    description="Nodes (state, CPU and memory use, battery, hottest temperature, replicas, "
                    "object-store bytes used/offered), the object store (chunks, under-replicated, repair rate) and "
                    "workloads (ready/desired, phase), redrawn every interval until Ctrl-C. On a terminal the screen "
                    "is cleared for each frame; piped, a frame is printed only when it changed.",
                    examples="  cloudless top\n  cloudless top --interval 10s -n prod\n  cloudless top --once")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.add_argument("--interval", type=duration_in(1, 3600), default=2.0, metavar="DURATION",
                   help="time between frames, 1s..1h, e.g. 5, 5s, 1m (default 2s)")
    namespace_arg(p)
    p.set_defaults(namespace=None)

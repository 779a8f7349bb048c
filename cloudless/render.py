"""Rendering API objects for people (aligned tables, `describe` pages) and for scripts (JSON, YAML).

Pure: every function takes the decoded JSON and `now` (unix seconds) and returns text; nothing here prints,
reads the clock or talks to the network. Missing or null fields render as "-" rather than failing, so a
coordinator newer or older than this CLI still gets a readable table.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

JSONObject = dict[str, Any]
OUTPUT_FORMATS = ("table", "wide", "json", "yaml")
NONE = "-"


class RenderError(Exception):
    """Output cannot be produced (e.g. -o yaml without PyYAML)."""


# ---- values ---------------------------------------------------------------------------------------------------

def to_epoch(value: object) -> float | None:
    """Unix seconds from a number or an ISO 8601 string (the contract does not fix one for every timestamp)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def age(value: object, now: float) -> str:
    """kubectl-style age of a timestamp: 42s, 7m, 5h, 3d."""
    then = to_epoch(value)
    if then is None:
        return NONE
    secs = max(0, int(now - then))
    if secs < 120:
        return f"{secs}s"
    if secs < 600:
        return f"{secs // 60}m{secs % 60}s" if secs % 60 else f"{secs // 60}m"
    if secs < 3 * 3600:
        return f"{secs // 60}m"
    if secs < 2 * 86400:
        return f"{secs // 3600}h"
    return f"{secs // 86400}d"


def cpu(millicores: object) -> str:
    if not isinstance(millicores, int | float) or isinstance(millicores, bool):
        return NONE
    if millicores % 1000 == 0:
        return str(int(millicores) // 1000)
    return f"{int(millicores)}m" if millicores < 1000 else f"{millicores / 1000:.1f}"


def memory(nbytes: object) -> str:
    if not isinstance(nbytes, int | float) or isinstance(nbytes, bool):
        return NONE
    value = float(nbytes)
    for unit in ("", "Ki", "Mi", "Gi", "Ti"):
        if value < 1024 or unit == "Ti":
            return f"{value:.0f}{unit}" if value >= 10 or value.is_integer() else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def percent(value: object) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return NONE
    return f"{value:.0f}%"


def text(value: object) -> str:
    if value is None or value == "":
        return NONE
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def labels(value: object) -> str:
    if not isinstance(value, Mapping) or not value:
        return NONE
    return ",".join(f"{k}={v}" for k, v in sorted(value.items()))


def _get(obj: object, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


# ---- tables ---------------------------------------------------------------------------------------------------

def widths_of(headers: Sequence[str], rows: Sequence[Sequence[str]], minimum: Sequence[int] = ()) -> list[int]:
    grid = [headers, *rows]
    cols = max((len(r) for r in grid), default=0)
    return [max([*(len(r[i]) for r in grid if i < len(r)), minimum[i] if i < len(minimum) else 0])
            for i in range(cols)]


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, widths: Sequence[int] = (),
          header: bool = True) -> str:
    """Left-aligned columns three spaces apart, last column unpadded; no header line when `headers` is empty or
    `header` is False (the headers still size the columns).

    `widths` are minimum widths: `watch` passes the first batch's widths so appended rows line up with it, and
    `cloudless get` the first page's so the pages after it line up with it.
    """
    body = [list(r) for r in rows]
    grid = [list(headers), *body] if headers and header else body
    size = widths_of(headers, body, widths)
    return "\n".join("   ".join(c.ljust(size[i]) if i < len(r) - 1 else c for i, c in enumerate(r)).rstrip()
                     for r in grid)


def node_status(node: Mapping[str, Any]) -> str:
    parts = ["Ready" if node.get("online") else "NotReady"]
    if node.get("cordoned"):
        parts.append("SchedulingDisabled")
    if node.get("draining"):
        parts.append("Draining")
    if node.get("online") and node.get("gates"):
        parts.append("Gated")
    if node.get("problem"):  # the coordinator could not do its part for this node (e.g. send its desired state)
        parts.append("Problem")
    return ",".join(parts)


def _used(node: Mapping[str, Any], key: str, fmt: Any) -> str:
    return f"{fmt(_get(node, 'allocated', key))}/{fmt(_get(node, 'capacity', key))}"


Grid = tuple[list[str], list[list[str]]]


def nodes_table(nodes: Sequence[JSONObject], now: float, *, wide: bool = False, widths: Sequence[int] = (),
                header: bool = True) -> str:
    return table(*nodes_grid(nodes, now, wide=wide), widths=widths, header=header)


def nodes_grid(nodes: Sequence[JSONObject], now: float, *, wide: bool = False) -> Grid:
    """The headers and rows of `nodes_table`."""
    headers = ["NODE", "STATUS", "ZONE", "ARCH", "PROFILE", "CPU", "MEM", "REPLICAS", "LAST-SEEN"]
    if wide:
        headers += ["OS", "RUNTIME", "CPU%", "MEM-USED", "BATTERY", "RELIABILITY", "GATES", "LABELS"]
    rows = []
    for n in sorted(nodes, key=lambda n: str(n.get("id"))):
        row = [text(n.get("id")), node_status(n), text(n.get("zone")), text(n.get("arch")), text(n.get("profile")),
               _used(n, "cpu", cpu), _used(n, "memory", memory), text(n.get("replicas")),
               age(n.get("lastSeen"), now)]
        if wide:
            runtime = text(n.get("runtime")) + (" (rootless)" if n.get("rootless") else "")
            rel = n.get("reliability")
            row += [text(n.get("os")), runtime, percent(_get(n, "usage", "cpuPercent")),
                    memory(_get(n, "usage", "memoryBytes")), percent(_get(n, "usage", "batteryPercent")),
                    f"{rel:.2f}" if isinstance(rel, int | float) else NONE,
                    ",".join(n.get("gates") or []) or NONE, labels(n.get("labels"))]
        rows.append(row)
    return headers, rows


def workloads_table(workloads: Sequence[JSONObject], now: float, *, wide: bool = False,
                    namespaces: bool = False, widths: Sequence[int] = (), header: bool = True) -> str:
    return table(*workloads_grid(workloads, now, wide=wide, namespaces=namespaces), widths=widths, header=header)


def workloads_grid(workloads: Sequence[JSONObject], now: float, *, wide: bool = False,
                   namespaces: bool = False) -> Grid:
    """The headers and rows of `workloads_table`."""
    headers = ["NAMESPACE"] if namespaces else []
    headers += ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    if wide:
        headers += ["PHASE", "REVISION", "IMAGE", "UNSCHEDULABLE"]
    rows = []
    for w in sorted(workloads, key=lambda w: (str(_get(w, "metadata", "namespace")), str(_get(w, "metadata", "name")))):
        meta, status = w.get("metadata") or {}, w.get("status") or {}
        row = [text(meta.get("namespace"))] if namespaces else []
        row += [text(meta.get("name")), f"{text(status.get('ready'))}/{text(status.get('desired'))}",
                text(status.get("updated")), text(status.get("available")), age(meta.get("createdAt"), now)]
        if wide:
            row += [text(status.get("phase")), text(meta.get("revision")), text(_get(w, "spec", "image")),
                    str(len(status.get("unschedulable") or []))]
        rows.append(row)
    return headers, rows


def replicas_table(replicas: Sequence[JSONObject], now: float, *, wide: bool = False,
                   namespaces: bool = False, widths: Sequence[int] = (), header: bool = True) -> str:
    return table(*replicas_grid(replicas, now, wide=wide, namespaces=namespaces), widths=widths, header=header)


def replicas_grid(replicas: Sequence[JSONObject], now: float, *, wide: bool = False,
                  namespaces: bool = False) -> Grid:
    """The headers and rows of `replicas_table`."""
    headers = ["NAMESPACE"] if namespaces else []
    headers += ["NAME", "WORKLOAD", "NODE", "STATE", "READY", "RESTARTS", "AGE"]
    if wide:
        headers += ["REVISION", "SPEC-HASH", "MESSAGE"]
    rows = []
    for r in sorted(replicas, key=lambda r: (str(r.get("namespace")), str(r.get("id")))):
        row = [text(r.get("namespace"))] if namespaces else []
        row += [text(r.get("id")), text(r.get("workload")), text(r.get("node")), text(r.get("state")),
                text(r.get("ready")), text(r.get("restarts")), age(r.get("startedAt"), now)]
        if wide:
            row += [text(r.get("revision")), text(r.get("specHash"))[:12], text(r.get("message"))]
        rows.append(row)
    return headers, rows


def event_rows(events: Sequence[JSONObject], now: float, *, with_object: bool = True) -> list[list[str]]:
    rows = []
    for e in events:
        row = [age(e.get("time"), now), text(e.get("type")), text(e.get("reason"))]
        row += [text(e.get("object"))] if with_object else []
        rows.append([*row, text(e.get("message"))])
    return rows


EVENT_HEADERS = ["AGE", "TYPE", "REASON", "OBJECT", "MESSAGE"]


def events_table(events: Sequence[JSONObject], now: float) -> str:
    return table(EVENT_HEADERS, event_rows(events, now))


def history_table(items: Sequence[JSONObject], now: float, *, current: object = None) -> str:
    rows = [[text(i.get("revision")) + (" (current)" if current is not None and i.get("revision") == current else ""),
             age(i.get("createdAt"), now), text(i.get("image")), text(i.get("specHash"))[:12], text(i.get("cause"))]
            for i in sorted(items, key=lambda i: i.get("revision") or 0)]
    return table(["REVISION", "AGE", "IMAGE", "SPEC-HASH", "CAUSE"], rows)


# ---- machine formats ------------------------------------------------------------------------------------------

def to_json(obj: object) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False)


def to_yaml(obj: object) -> str:
    try:
        import yaml
    except ImportError:
        raise RenderError("-o yaml needs PyYAML, which is not installed: `pip install pyyaml`, "
                          "or use -o json") from None
    return str(yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, allow_unicode=True)).rstrip("\n")


def dump(obj: object, fmt: str) -> str:
    return to_yaml(obj) if fmt == "yaml" else to_json(obj)


# ---- rollout --------------------------------------------------------------------------------------------------

def rollout_line(ref: str, status: Mapping[str, Any]) -> str:
    """One progress line for `rollout status`."""
    desired, updated, available = status.get("desired"), status.get("updated"), status.get("available")
    phase = text(status.get("phase"))
    line = (f"{ref} revision {text(status.get('revision'))}: {phase}, {text(updated)} of {text(desired)} "
            f"updated, {text(status.get('ready'))} ready, {text(available)} available")
    message = status.get("message")
    return f"{line} ({message})" if message else line


# ---- describe -------------------------------------------------------------------------------------------------

_KEY_WIDTH = 15


def _fields(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """`Key:` columns; a multi-line value continues under its first line."""
    lines = []
    for key, value in pairs:
        first, *rest = value.splitlines() or [""]
        lines.append(f"{key + ':':<{_KEY_WIDTH}}{first}".rstrip())
        lines += [" " * _KEY_WIDTH + line for line in rest]
    return lines


def _section(title: str, body: str) -> list[str]:
    if not body:
        return [f"{title}: <none>"]
    return [f"{title}:", *("  " + line for line in body.splitlines())]


def _share(node: Mapping[str, Any], key: str) -> str:
    used, cap = _get(node, "allocated", key), _get(node, "capacity", key)
    if isinstance(used, int | float) and isinstance(cap, int | float) and cap:
        return f" ({used * 100 / cap:.0f}%)"
    return ""


PEER_HEADERS = ["NODE", "PEER", "PATH", "VIA", "RTT", "OUT", "IN", "SINCE"]


def rtt(value: object) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return NONE
    return f"{value:.1f}ms" if value < 100 else f"{value:.0f}ms"


def peers_table(rows: Sequence[JSONObject], now: float, *, wide: bool = False, with_node: bool = True) -> str:
    """Each node's path to each peer: lan/direct (with the address when wide), relayed (via which relay), down
    (with why); RTT, bytes each way and how long the path has been the current one."""
    headers = PEER_HEADERS[(0 if with_node else 1):] + (["ADDRESS", "CHANGES", "ERROR"] if wide else [])
    out = []
    for r in rows:
        via = text(r.get("relay")) if r.get("path") == "relayed" else "-" if r.get("path") in ("lan", "direct") \
            else NONE
        row = [text(r.get("node")), text(r.get("peer")), text(r.get("path")), via, rtt(r.get("rttMs")),
               memory(r.get("bytesOut")), memory(r.get("bytesIn")), age(r.get("since"), now)]
        if wide:
            row += [text(r.get("address")) if r.get("address") else NONE, text(r.get("changes")),
                    text(r.get("error")) if r.get("error") else NONE]
        out.append(row[(0 if with_node else 1):])
    return table(headers, out)


SERVICE_HEADERS = ["NAME", "ADDRESS", "PORTS", "READY", "INGRESS"]


def _service_ports(svc: Mapping[str, Any]) -> str:
    ports = []
    for p in svc.get("ports") or []:
        target = f"->{p.get('targetPort')}" if p.get("targetPort") != p.get("port") else ""
        ports.append(f"{p.get('port')}{target}/{p.get('protocol', 'TCP')}")
    return ",".join(ports) or NONE


def services_table(rows: Sequence[JSONObject], *, wide: bool = False, namespaces: bool = False,
                   widths: Sequence[int] = (), header: bool = True) -> str:
    """Each service: its name, stable virtual address, ports (port->targetPort), ready/all endpoints, ingress."""
    return table(*services_grid(rows, wide=wide, namespaces=namespaces), widths=widths, header=header)


def services_grid(rows: Sequence[JSONObject], *, wide: bool = False, namespaces: bool = False) -> Grid:
    """The headers and rows of `services_table`."""
    headers = (["NAMESPACE"] if namespaces else []) + SERVICE_HEADERS + (["FQDN", "WORKLOADS"] if wide else [])
    out = []
    for r in rows:
        ingress = ",".join(f"{i.get('hostPort')}@{'+'.join(i.get('nodes') or []) or '-'}"
                           for i in r.get("ingress") or []) or NONE
        row = ([text(r.get("namespace"))] if namespaces else []) + [
            text(r.get("name")), text(r.get("vip")), _service_ports(r),
            f"{text(r.get('ready'))}/{text(r.get('endpointCount'))}", ingress]
        if wide:
            row += [text(r.get("fqdn")), ",".join(r.get("workloads") or []) or NONE]
        out.append(row)
    return headers, out


def describe_service(svc: Mapping[str, Any], events: Sequence[JSONObject], now: float) -> str:
    lines = _fields([
        ("Name", text(svc.get("name"))),
        ("Namespace", text(svc.get("namespace"))),
        ("DNS", f"{text(svc.get('fqdn'))} (and {text(svc.get('name'))} within the namespace)"),
        ("Address", text(svc.get("vip"))),
        ("Ports", _service_ports(svc)),
        ("Workloads", ", ".join(svc.get("workloads") or []) or "<none>"),
        ("Ready", f"{text(svc.get('ready'))} of {text(svc.get('endpointCount'))} endpoints"),
        ("Ingress", "; ".join(f"port {i.get('port')} on host port {i.get('hostPort')} of "
                              f"{', '.join(i.get('nodes') or []) or '<no node selected>'}"
                              for i in svc.get("ingress") or []) or "<none>"),
        ("Problems", "; ".join(svc.get("problems") or []) or "<none>"),
    ])
    eps = [[text(e.get("replica")), text(e.get("node")), text(e.get("zone")) if e.get("zone") else NONE,
            text(e.get("weight")), "yes" if e.get("ready") else "no", text(e.get("reason")) if e.get("reason")
            else NONE] for e in svc.get("endpoints") or []]
    lines += _section(f"Endpoints ({len(eps)})", table(["REPLICA", "NODE", "ZONE", "WEIGHT", "READY", "WHY"], eps)
                      if eps else "")
    lines += _section("Events", table(["AGE", "TYPE", "REASON", "MESSAGE"],
                                      event_rows(events, now, with_object=False)) if events else "")
    return "\n".join(lines)


def describe_node(node: Mapping[str, Any], replicas: Sequence[JSONObject], events: Sequence[JSONObject],
                  now: float, peers: Sequence[JSONObject] = ()) -> str:
    label_lines = "\n".join(f"{k}={v}" for k, v in sorted((node.get("labels") or {}).items())) or "<none>"
    runtime = text(node.get("runtime")) + (" (rootless)" if node.get("rootless") else "")
    rel = node.get("reliability")
    seen = age(node.get("lastSeen"), now)
    lines = _fields([
        ("Name", text(node.get("id"))),
        ("Status", node_status(node)),
        ("Schedulable", text(node.get("schedulable"))),
        ("Gates", ", ".join(node.get("gates") or []) or "<none>"),
        ("Problem", text(node.get("problem")) if node.get("problem") else "<none>"),
        ("Zone", text(node.get("zone"))),
        ("Platform", f"{text(node.get('os'))}/{text(node.get('arch'))}"),
        ("Profile", text(node.get("profile"))),
        ("Runtime", runtime),
        ("Abilities", ", ".join(node.get("abilities") or []) or "<not reported yet>"),
        *([("Isolation", text(node.get("workloadIsolation")))] if node.get("workloadIsolation") else []),
        ("Labels", label_lines),
        ("Last seen", f"{seen} ago" if seen != NONE else NONE),
        ("Reliability", f"{rel:.2f}" if isinstance(rel, int | float) else NONE),
        ("Capacity", f"cpu {cpu(_get(node, 'capacity', 'cpu'))}, memory {memory(_get(node, 'capacity', 'memory'))}"),
        ("Allocated", f"cpu {cpu(_get(node, 'allocated', 'cpu'))}{_share(node, 'cpu')}, "
                      f"memory {memory(_get(node, 'allocated', 'memory'))}{_share(node, 'memory')}"),
        ("Usage", f"cpu {percent(_get(node, 'usage', 'cpuPercent'))}, "
                  f"memory {memory(_get(node, 'usage', 'memoryBytes'))}, "
                  f"battery {percent(_get(node, 'usage', 'batteryPercent'))}"),
    ])
    lines += _section(f"Replicas ({text(node.get('replicas'))})",
                      replicas_table(replicas, now, namespaces=True) if replicas else "")
    lines += _section(f"Overlay peers ({len(peers)})", peers_table(peers, now, wide=True, with_node=False)
                      if peers else "")
    lines += _section("Events", table(["AGE", "TYPE", "REASON", "MESSAGE"],
                                      event_rows(events, now, with_object=False)) if events else "")
    return "\n".join(lines)


def describe_workload(w: Mapping[str, Any], events: Sequence[JSONObject], now: float) -> str:
    meta, spec, status = w.get("metadata") or {}, w.get("spec") or {}, w.get("status") or {}
    label_lines = "\n".join(f"{k}={v}" for k, v in sorted((meta.get("labels") or {}).items())) or "<none>"
    created = age(meta.get("createdAt"), now)
    counts = " | ".join(f"{text(status.get(k))} {k}" for k in ("desired", "updated", "ready", "available"))
    lines = _fields([
        ("Name", text(meta.get("name"))),
        ("Namespace", text(meta.get("namespace"))),
        ("Labels", label_lines),
        ("Created", f"{created} ago" if created != NONE else NONE),
        ("Generation", text(meta.get("generation"))),
        ("Revision", text(meta.get("revision"))),
        ("Image", text(spec.get("image"))),
        ("Replicas", counts),
        ("Phase", text(status.get("phase"))),
    ])
    conditions = [[text(c.get("type")), text(c.get("status")), text(c.get("reason")), age(c.get("time"), now),
                   text(c.get("message"))] for c in status.get("conditions") or []]
    lines += _section("Conditions", table(["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"], conditions)
                      if conditions else "")
    replicas = [[text(r.get("id")), text(r.get("node")) if r.get("node") else "<unscheduled>", text(r.get("state")),
                 text(r.get("ready")), text(r.get("restarts")), text(r.get("revision")), text(r.get("message"))]
                for r in status.get("replicas") or []]
    lines += _section("Replicas", table(["NAME", "NODE", "STATE", "READY", "RESTARTS", "REVISION", "MESSAGE"],
                                        replicas) if replicas else "")
    lines += _section("Unschedulable", _unschedulable(status.get("unschedulable") or []))
    lines += _section("Events", table(["AGE", "TYPE", "REASON", "OBJECT", "MESSAGE"], event_rows(events, now))
                      if events else "")
    return "\n".join(lines)


def _unschedulable(items: Sequence[Mapping[str, Any]]) -> str:
    """Each unplaced replica with the reason every node gave (STYLE §3: the reason per node)."""
    out = []
    for item in items:
        out.append(f"{text(item.get('replica'))}: {text(item.get('summary'))}")
        reasons = item.get("reasons") or {}
        out += [f"  {node}: {reason}" for node, reason in sorted(reasons.items())]
    return "\n".join(out)

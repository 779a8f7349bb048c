"""FakeCoordinator: an in-memory coordinator implementing the REST contract the CLI speaks, and a real HTTP
server (http.server on 127.0.0.1, port 0, in a thread) in front of it.

A maintained fake (STYLE §5), not a mock: `handle()` answers every route of the contract from in-memory state
with the same shapes and status codes as coordinator/rest/, so CLI tests go through real HTTP, real urllib,
real JSON. Test-only scripting is explicit and small:

- `rollout_script[(ns, name)]`: successive answers of GET .../rollout (the last one repeats);
- a draining node loses one replica each time it is read (so `drain` sees progress, then completion);
- `faults`: (method, path prefix, status, body) answered once instead of the real thing.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

JSON = dict[str, Any]
NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}"


class Refusal(Exception):
    def __init__(self, status: int, message: str, *, field: str | None = None,
                 errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field, self.errors = status, message, field, errors or []

    def body(self) -> JSON:
        return {"error": {"message": self.message, "field": self.field, "errors": self.errors}}


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]


@dataclass
class Fault:
    method: str
    prefix: str
    status: int
    body: bytes


def make_node(node_id: str, **overrides: Any) -> JSON:
    node: JSON = {
        "id": node_id, "online": True, "schedulable": True, "cordoned": False, "draining": False, "gates": [],
        "labels": {}, "zone": "home", "arch": "aarch64", "os": "linux", "profile": "raspberry-pi-4",
        "runtime": "podman", "rootless": True, "capacity": {"cpu": 4000, "memory": 4 * 1024**3},
        "allocated": {"cpu": 500, "memory": 256 * 1024**2},
        "usage": {"cpuPercent": 12.5, "memoryBytes": 1024**3, "batteryPercent": None},
        "replicas": 0, "lastSeen": 0.0, "reliability": 0.99,
    }
    node.update(overrides)
    return node


def workload_doc(name: str, *, namespace: str | None = None, image: str = "nginx:1.25", replicas: int = 2) -> JSON:
    meta: JSON = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "cloudless/v1", "kind": "Workload", "metadata": meta,
            "spec": {"image": image, "replicas": replicas}}


@dataclass
class FakeCoordinator:
    clock: Callable[[], float]
    token: str = "s3cret"
    nodes: dict[str, JSON] = field(default_factory=dict)
    workloads: dict[tuple[str, str], JSON] = field(default_factory=dict)
    history: dict[tuple[str, str], list[JSON]] = field(default_factory=dict)
    events: list[JSON] = field(default_factory=list)
    logs: dict[str, str] = field(default_factory=dict)
    rollout_script: dict[tuple[str, str], list[JSON]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    readiness: JSON = field(default_factory=lambda: {"ready": True, "broker": True, "state": True, "store": True,
                                                     "leader": True, "leaderId": None, "epoch": 1, "rounds": 7,
                                                     "roundsFailing": 0, "problems": {}})
    peers: list[JSON] = field(default_factory=list)  # overlay paths, as GET /v1/peers rows
    kept: set[tuple[str, str]] = field(default_factory=set)  # overlay connect pairs
    services: list[JSON] = field(default_factory=list)  # as GET /v1/services rows
    ping_answer: JSON = field(default_factory=dict)  # what a node answers an overlay ping (peer/from filled in)
    version: str = "9.9.9-fake"  # what GET /healthz says the coordinator runs
    storage: JSON | None = None  # GET /v1/storage/status (None: the cluster serves no storage: 503)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # ---- builders ----

    def add_node(self, node_id: str, **overrides: Any) -> JSON:
        self.nodes[node_id] = make_node(node_id, lastSeen=self.clock() - 5, **overrides)
        return self.nodes[node_id]

    def add_workload(self, name: str, *, namespace: str = "default", **kw: Any) -> JSON:
        self.put_workload(namespace, name, workload_doc(name, namespace=namespace, **kw))
        return self.workloads[(namespace, name)]

    def add_event(self, obj: str, reason: str, message: str, *, type_: str = "Normal",
                  time: float | None = None) -> JSON:
        event = {"id": len(self.events) + 1, "time": self.clock() if time is None else time, "type": type_,
                 "reason": reason, "object": obj, "message": message}
        self.events.append(event)
        return event

    def fail_once(self, method: str, prefix: str, status: int, body: bytes | JSON | None = None) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(
            body or {"error": {"message": f"injected {status}", "field": None, "errors": []}}).encode()
        self.faults.append(Fault(method, prefix, status, raw))

    # ---- the contract ----

    def handle(self, method: str, path: str, query: dict[str, str], body: Any,
               headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        """(status, JSON body, extra headers) for one request."""
        self.requests.append(Recorded(method, path, query, body, headers))
        if headers.get("Authorization") != f"Bearer {self.token}":
            raise Refusal(401, "missing or invalid bearer token")
        return self._route(method, path, query, body)

    def _route(self, method: str, path: str, q: dict[str, str], body: Any) -> tuple[int, Any, dict[str, str]]:
        wl = rf"/v1/workloads/(?P<ns>{NAME})/(?P<name>{NAME})"
        routes: list[tuple[str, str, Callable[..., Any]]] = [
            ("GET", r"/readyz", lambda: copy.deepcopy(self.readiness)),
            ("GET", r"/healthz", lambda: {"ok": True, "version": self.version}),
            ("GET", r"/v1/nodes", lambda: {"items": [self._node(n) for n in sorted(self.nodes)]}),
            ("GET", rf"/v1/nodes/(?P<node>{NAME})", self._node),
            ("POST", rf"/v1/nodes/(?P<node>{NAME})/(?P<action>cordon|uncordon|drain)", self._node_action),
            ("DELETE", rf"/v1/nodes/(?P<node>{NAME})", self._delete_node),
            ("GET", r"/v1/workloads", lambda: {"items": [copy.deepcopy(w) for k, w in sorted(self.workloads.items())
                                                         if q.get("namespace") in (None, k[0])]}),
            ("PUT", wl, lambda ns, name: self.put_workload(ns, name, body)),
            ("GET", wl, lambda ns, name: copy.deepcopy(self._workload(ns, name))),
            ("DELETE", wl, self._delete),
            ("POST", wl + "/scale", lambda ns, name: self._scale(ns, name, body)),
            ("GET", wl + "/rollout", self._rollout),
            ("GET", wl + "/history", lambda ns, name: {"items": self._history(ns, name)}),
            ("POST", wl + "/rollback", lambda ns, name: self._rollback(ns, name, body)),
            ("GET", wl + rf"/replicas/(?P<replica>{NAME})/logs", lambda ns, name, replica: self._logs(
                ns, name, replica, q)),
            ("POST", wl + rf"/replicas/(?P<replica>{NAME})/exec", lambda ns, name, replica: self._exec(
                ns, name, replica, body)),
            ("GET", r"/v1/replicas", lambda: {"items": self._replicas(q)}),
            ("GET", r"/v1/events", lambda: {"items": self._events(q)}),
            ("GET", r"/v1/peers", lambda: {"items": copy.deepcopy(self.peers)}),
            ("GET", rf"/v1/nodes/(?P<node>{NAME})/peers", self._node_peers),
            ("POST", r"/v1/overlay/(?P<action>connect|disconnect)", lambda action: self._overlay_pair(action, body)),
            ("POST", r"/v1/overlay/ping", lambda: self._overlay_ping(body)),
            ("GET", r"/v1/overlay", self._overlay_summary),
            ("GET", r"/v1/services", lambda: {"items": [copy.deepcopy(x) for x in self.services
                                                        if q.get("namespace") in (None, x["namespace"])]}),
            ("GET", rf"/v1/services/(?P<ns>{NAME})/(?P<name>{NAME})", self._service),
            ("GET", r"/v1/storage/status", self._storage_status),
        ]
        for verb, pattern, fn in routes:
            m = re.fullmatch(pattern, path)
            if m and verb == method:
                result = fn(**m.groupdict())
                return result if isinstance(result, tuple) else (200, result, {})
        raise Refusal(404, f"{method} {path}: Not Found")

    def _storage_status(self) -> JSON:
        if self.storage is None:
            raise Refusal(503, "this cluster serves no storage; start the coordinator with --s3-port")
        return copy.deepcopy(self.storage)

    # nodes

    def _node(self, node: str) -> JSON:
        n = self.nodes.get(node)
        if n is None:
            raise Refusal(404, f"node {node} not found")
        if n["draining"] and n["replicas"] > 0:
            n["replicas"] -= 1  # scripted progress: each read sees one replica fewer
        return copy.deepcopy(n)

    # services

    def _service(self, ns: str, name: str) -> JSON:
        for x in self.services:
            if (x["namespace"], x["name"]) == (ns, name):
                return copy.deepcopy(x)
        raise Refusal(404, f"service {name} not found in namespace {ns}")

    # overlay

    def _node_peers(self, node: str) -> JSON:
        if node not in self.nodes:
            raise Refusal(404, f"node {node} not found")
        return {"items": [copy.deepcopy(p) for p in self.peers if p["node"] == node]}

    def _overlay_pair(self, action: str, body: Any) -> JSON:
        a, b = body["a"], body["b"]
        for n in (a, b):
            if n not in self.nodes:
                raise Refusal(404, f"node {n} not found")
        key = (min(a, b), max(a, b))
        if action == "connect":
            new = key not in self.kept
            self.kept.add(key)
            return {"a": a, "b": b, "kept": True, "new": new}
        was = key in self.kept
        self.kept.discard(key)
        return {"a": a, "b": b, "kept": False, "was": was}

    def _overlay_ping(self, body: Any) -> JSON:
        for n in (body["from"], body["to"]):
            if n not in self.nodes:
                raise Refusal(404, f"node {n} not found")
        return {"from": body["from"], "peer": body["to"], "path": "relayed", "relay": "", "address": "",
                "rttsMs": [], "connectMs": None, "error": "", **self.ping_answer}

    def _overlay_summary(self) -> JSON:
        return {"relays": [{"id": "relay@vps", "addresses": ["203.0.113.1:7000"]}],
                "nodes": [{"node": n, "enabled": True, "disabled": "", "nat": "nat-unknown", "port": 41641,
                           "candidates": [{"kind": "local", "address": "192.168.1.2:41641", "via": ""}],
                           "relays": ["relay@vps"], "peers": 1, "counters": {}, "reportedAt": 0.0}
                          for n in sorted(self.nodes)],
                "kept": [{"a": a, "b": b, "until": None, "why": "cli"} for a, b in sorted(self.kept)],
                "directShare": 0.5}

    def _delete_node(self, node: str) -> JSON:
        n = self.nodes.get(node)
        if n is None:
            raise Refusal(404, f"node {node} not found")
        if n["online"] or n["replicas"]:
            raise Refusal(409, f"node {node} is online; stop its agent or `cloudless node revoke {node}` first")
        del self.nodes[node]
        return {"deleted": node}

    def _node_action(self, node: str, action: str) -> JSON:
        n = self.nodes.get(node)
        if n is None:
            raise Refusal(404, f"node {node} not found")
        n["cordoned"] = action != "uncordon"
        n["draining"] = action == "drain" or (n["draining"] and action != "uncordon")
        n["schedulable"] = n["online"] and not n["cordoned"]
        return copy.deepcopy(n)

    # workloads

    def _workload(self, ns: str, name: str) -> JSON:
        w = self.workloads.get((ns, name))
        if w is None:
            raise Refusal(404, f"workload {ns}/{name} not found")
        return w

    def put_workload(self, ns: str, name: str, doc: Any) -> tuple[int, JSON, dict[str, str]]:
        if not isinstance(doc, dict):
            raise Refusal(400, "the body must be a workload document (a JSON object)")
        meta, spec = doc.get("metadata") or {}, doc.get("spec")
        if meta.get("name", name) != name or meta.get("namespace", ns) != ns:
            raise Refusal(400, "metadata does not match the URL", field="metadata")
        errors = []
        if not isinstance(spec, dict) or not isinstance(spec.get("image"), str):
            errors.append({"path": "spec.image", "message": "required"})
        replicas = spec.get("replicas", 1) if isinstance(spec, dict) else 1
        if isinstance(replicas, bool) or not isinstance(replicas, int) or not 0 <= replicas <= 10000:
            errors.append({"path": "spec.replicas", "message": "must be an integer from 0 to 10000"})
        if errors:
            raise Refusal(400, f"invalid workload {ns}/{name}: {len(errors)} problem(s)", field=errors[0]["path"],
                          errors=errors)
        assert isinstance(spec, dict)
        old = self.workloads.get((ns, name))
        warnings = _admission_warnings(spec)
        if old is not None and old["spec"] == spec and old["metadata"]["labels"] == (meta.get("labels") or {}):
            return 200, {**copy.deepcopy(old), "warnings": warnings}, {"X-Cloudless-Changed": "false"}
        revision = old["metadata"]["revision"] + 1 if old else 1
        w = {"apiVersion": "cloudless/v1", "kind": "Workload",
             "metadata": {"name": name, "namespace": ns, "labels": meta.get("labels") or {},
                          "generation": revision, "revision": revision,
                          "createdAt": old["metadata"]["createdAt"] if old else self.clock()},
             "spec": copy.deepcopy(spec), "status": {}}
        self._set_status(w, revision)
        self.workloads[(ns, name)] = w
        self.history.setdefault((ns, name), []).append(
            {"revision": revision, "specHash": f"{abs(hash(json.dumps(spec, sort_keys=True))):016x}",
             "createdAt": self.clock(), "image": spec["image"], "cause": "apply"})
        self.add_event(f"workload/{ns}/{name}", "Updated" if old else "Created", f"revision {revision}")
        return (200 if old else 201), {**copy.deepcopy(w), "warnings": warnings}, {"X-Cloudless-Changed": "true"}

    def _set_status(self, w: JSON, revision: int) -> None:
        n = w["spec"].get("replicas", 1)
        nodes = sorted(self.nodes) or [None]
        reps = [{"id": f"{w['metadata']['name']}-{i}", "node": nodes[i % len(nodes)], "state": "running",
                 "ready": True, "restarts": 0, "specHash": "abc123", "revision": revision, "message": ""}
                for i in range(n)]
        w["status"] = {"desired": n, "ready": n, "available": n, "updated": n, "phase": "Running",
                       "conditions": [{"type": "Available", "status": "true", "reason": "MinimumReplicasAvailable",
                                       "message": f"{n}/{n} replicas ready", "time": self.clock()}],
                       "replicas": reps, "unschedulable": []}

    def _delete(self, ns: str, name: str) -> JSON:
        w = copy.deepcopy(self._workload(ns, name))
        del self.workloads[(ns, name)]
        for r in w["status"]["replicas"]:
            r["state"] = "stopping"
        w["status"]["phase"] = "Deleting"
        return w

    def _scale(self, ns: str, name: str, body: Any) -> JSON:
        w = self._workload(ns, name)
        replicas = body.get("replicas") if isinstance(body, dict) else None
        if isinstance(replicas, bool) or not isinstance(replicas, int) or not 0 <= replicas <= 10000:
            raise Refusal(400, "replicas: must be an integer from 0 to 10000", field="replicas")
        w["spec"]["replicas"] = replicas
        self._set_status(w, w["metadata"]["revision"])
        return copy.deepcopy(w)

    def _rollout(self, ns: str, name: str) -> JSON:
        w = self._workload(ns, name)
        script = self.rollout_script.get((ns, name))
        if script:
            return script.pop(0) if len(script) > 1 else script[0]
        s = w["status"]
        return {"revision": w["metadata"]["revision"], "phase": "complete", "desired": s["desired"],
                "updated": s["updated"], "ready": s["ready"], "available": s["available"], "message": ""}

    def _history(self, ns: str, name: str) -> list[JSON]:
        self._workload(ns, name)
        return copy.deepcopy(self.history.get((ns, name), []))

    def _rollback(self, ns: str, name: str, body: Any) -> JSON:
        w = self._workload(ns, name)
        revision = body.get("revision") if isinstance(body, dict) else None
        items = self.history.get((ns, name), [])
        candidates = [h for h in items if (revision is None and h["revision"] != w["metadata"]["revision"])
                      or h["revision"] == revision]
        if not candidates:
            raise Refusal(404, f"workload {ns}/{name}: no revision to roll back to")
        w["spec"]["image"] = candidates[-1]["image"]
        w["metadata"]["revision"] += 1
        items.append({**candidates[-1], "revision": w["metadata"]["revision"], "cause": "rollback"})
        return copy.deepcopy(w)

    # replicas, events, logs, exec

    def _replicas(self, q: dict[str, str]) -> list[JSON]:
        out = []
        for (ns, name), w in sorted(self.workloads.items()):
            for r in w["status"]["replicas"]:
                item = {**r, "workload": name, "namespace": ns, "startedAt": self.clock() - 60}
                if q.get("namespace") in (None, ns) and q.get("workload") in (None, name) \
                        and q.get("node") in (None, r["node"]):
                    out.append(item)
        return out

    def _events(self, q: dict[str, str]) -> list[JSON]:
        # `tail`: the newest N; one page holds every match (no `continue`), as the contract allows
        since, tail, obj = float(q.get("since", "0")), int(q.get("tail", "5000")), q.get("object")
        items = [e for e in self.events if e["time"] > since
                 and (obj is None or e["object"] == obj or e["object"].startswith(obj + "/"))
                 and q.get("type") in (None, e["type"])]
        return copy.deepcopy(items[-tail:])

    def _replica(self, ns: str, name: str, replica: str) -> JSON:
        for r in self._workload(ns, name)["status"]["replicas"]:
            if r["id"] == replica:
                return r
        raise Refusal(404, f"replica {replica} of workload {ns}/{name} not found")

    def _logs(self, ns: str, name: str, replica: str, q: dict[str, str]) -> JSON:
        r = self._replica(ns, name, replica)
        tail = int(q.get("tail", "100"))
        lines = self.logs.get(replica, "").splitlines(keepends=True)[-tail:]
        return {"replica": replica, "node": r["node"], "output": "".join(lines)}

    def _exec(self, ns: str, name: str, replica: str, body: Any) -> JSON:
        self._replica(ns, name, replica)
        command = body["command"]
        match command:
            case ["exit", code]:
                return {"exitCode": int(code), "output": ""}
            case ["echo", *words]:
                return {"exitCode": 0, "output": " ".join(words) + "\n"}
        return {"exitCode": 127, "output": f"{command[0]}: not found\n"}


def _admission_warnings(spec: JSON) -> list[str]:
    """The one warn rule of the default policies the fake keeps: a workload that may run as root."""
    if (spec.get("securityContext") or {}).get("runAsNonRoot") is True:
        return []
    return ["spec.securityContext.runAsNonRoot: must be true (or set runAsUser to a non-zero UID): images often "
            "run as root (secure-defaults/runAsNonRoot)"]


class FakeServer:
    """The fake behind a real HTTP server on 127.0.0.1 (port 0), served from a thread."""

    def __init__(self, fake: FakeCoordinator) -> None:
        self.fake = fake
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(fake))
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def _handler_for(fake: FakeCoordinator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _dispatch(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with fake.lock:
                fault = next((f for f in fake.faults
                              if f.method == self.command and url.path.startswith(f.prefix)), None)
                if fault is not None:
                    fake.faults.remove(fault)
                    return self._send(fault.status, fault.body, {})
                try:
                    body = json.loads(raw) if raw else None
                    status, data, headers = fake.handle(self.command, url.path, query, body, dict(self.headers))
                except Refusal as exc:
                    status, data, headers = exc.status, exc.body(), {}
                except json.JSONDecodeError:
                    status, data, headers = 400, Refusal(400, "body is not JSON").body(), {}
                except Exception as exc:  # a bug in the fake: answer like the real API does, visibly
                    status, data, headers = 500, Refusal(500, f"fake coordinator bug: {exc!r}").body(), {}
            self._send(status, json.dumps(data).encode(), headers)

        def _send(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = _dispatch

    return Handler

"""Workloads and their replicas over REST: apply, get, list, delete, scale, rollout status and history,
rollback, and the logs and exec commands carried to a replica's node."""

from __future__ import annotations

import asyncio
import json
from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from typing import Any, cast

from aiohttp import web

from broker.wire import CommandName, valid_id
from coordinator import views
from coordinator.errors import SpecError
from coordinator.http import read_json
from coordinator.list_index import ReplicaOrder, SortedKeys, from_cursor, split_key
from coordinator.listing import page_after, page_request
from coordinator.model import ReplicaRecord, WorkloadRecord
from coordinator.operations import CommandFailed, NotFound
from coordinator.policy import Action, Policy, default_policies, evaluate
from coordinator.rest.paged import Budget, first_matching, page_body, paged_response
from coordinator.rest.ports import Engine
from coordinator.rest.routes import LIST_PARAMS, Param, Route, path_name
from coordinator.selector import parse_selector
from coordinator.spec import MAX_REPLICAS, parse_workload

ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/workloads", "list_workloads", "List workloads by (namespace, name) (paged: `limit`, `continue`; "
          "filtered: `namespace`, `labelSelector`)", response="WorkloadList",
          query=(*LIST_PARAMS, Param("namespace", "only this namespace's"),
                 Param("labelSelector", "only workloads whose metadata.labels match (Kubernetes syntax)"))),
    Route("PUT", "/v1/workloads/{namespace}/{name}", "apply",
          "Create or update a workload (idempotent); `warnings` lists what admission policy warned about",
          body="Workload", response="WorkloadView", ok=(200, 201)),
    Route("GET", "/v1/workloads/{namespace}/{name}", "get_workload", "Get a workload with its status",
          response="WorkloadView"),
    Route("DELETE", "/v1/workloads/{namespace}/{name}", "delete_workload", "Delete a workload (stops replicas)",
          response="WorkloadView"),
    Route("POST", "/v1/workloads/{namespace}/{name}/scale", "scale", "Set the replica count", body="Scale",
          response="WorkloadView"),
    Route("GET", "/v1/workloads/{namespace}/{name}/rollout", "rollout_status", "Rollout status",
          response="RolloutStatus"),
    Route("GET", "/v1/workloads/{namespace}/{name}/history", "rollout_history", "Rollout history",
          response="RolloutHistory"),
    Route("POST", "/v1/workloads/{namespace}/{name}/rollback", "rollback", "Roll back to a revision",
          body="Rollback", response="WorkloadView"),
    Route("GET", "/v1/workloads/{namespace}/{name}/replicas/{replica}/logs", "logs", "Tail a replica's logs",
          response="Logs"),
    Route("POST", "/v1/workloads/{namespace}/{name}/replicas/{replica}/exec", "exec", "Run a command in a replica",
          body="Exec", response="ExecResult"),
    Route("GET", "/v1/replicas", "list_replicas", "List replicas by (namespace, workload, id) (paged: `limit`, "
          "`continue`; filtered: `namespace`, `workload`, `node`)", response="ReplicaList",
          query=(*LIST_PARAMS, Param("namespace", "only this namespace's"),
                 Param("workload", "only this workload's"), Param("node", "only those on this node"))),
)


REPLICA_SLICE = 400  # replicas rendered or encoded between two yields to the loop (~5-10 us each)


class WorkloadHandlers:
    """The /v1/workloads and /v1/replicas handlers."""

    def __init__(self, coord: Engine) -> None:
        self.coord = coord
        self._workload_order: SortedKeys[str, tuple[str, str]] = SortedKeys(split_key)
        self._replica_order = ReplicaOrder()

    async def _workload_view(self, w: WorkloadRecord, budget: Budget | None = None) -> dict[str, Any]:
        """A workload with its status; costs its own replicas (`Cluster.replicas.of_workload`), not every one, and
        renders them a slice at a time (a workload may hold thousands)."""
        budget = budget or Budget(REPLICA_SLICE)
        reps = self.coord.cluster.replicas.of_workload(w.key)
        rendered = []
        for r in reps:
            await budget.spend()
            rendered.append(views.replica_json(r, self.coord.observed_of(r)))
        return views.workload_json(w, [(r, None) for r in reps],
                                   self.coord.cluster.problems.get(f"workload/{w.key}", ""), rendered=rendered)

    async def _encoded(self, w: WorkloadRecord, budget: Budget | None = None, *,
                       extra: Mapping[str, object] | None = None) -> str:
        """The workload view as JSON (with `extra` top-level fields), its replicas encoded a slice at a time."""
        budget = budget or Budget(REPLICA_SLICE)
        doc = await self._workload_view(w, budget)
        status = doc.pop("status")
        reps = status.pop("replicas")
        parts = []
        for rep in reps:
            await budget.spend()
            parts.append(json.dumps(rep))
        head, tail = json.dumps({**doc, **(extra or {})}), json.dumps(status)
        # both are non-empty objects: reopen them to add status, then status.replicas, as their last members
        return head[:-1] + ',"status":' + tail[:-1] + ',"replicas":[' + ",".join(parts) + "]}}"

    async def _answer(self, w: WorkloadRecord, *, status: int = 200, headers: dict[str, str] | None = None,
                      **extra: object) -> web.Response:
        return web.Response(text=await self._encoded(w, extra=extra), status=status, headers=headers,
                            content_type="application/json")

    async def list_workloads(self, request: web.Request) -> web.Response:
        """Workload keys in order are kept between requests (sorted again only when a workload came or went); a
        page bisects to its cursor (or its namespace) and applies the selector from there until it is full."""
        q = request.query
        req = page_request(q, "workloads", (str, str))
        ns = query_name(q, "namespace")
        selector = parse_selector(q.get("labelSelector"))
        workloads = self.coord.cluster.workloads
        order = self._workload_order.of(workloads)
        after = cast("tuple[str, str] | None", req.after)
        lo, hi = (bisect_left(order, (ns,)), bisect_left(order, (ns + "\x00",))) if ns is not None else (0, len(order))
        if after is not None:
            lo = max(lo, bisect_right(order, after))

        def matches(key: tuple[str, str]) -> bool:
            w = workloads.get(f"{key[0]}/{key[1]}")
            return w is not None and (not selector or selector.matches(_labels(w)))
        keys, more = await first_matching((order[i] for i in range(lo, hi)), matches, req.limit)
        # counted when it costs nothing (no selector: the rest of the range); a selector would need a scan
        remaining = hi - bisect_right(order, keys[-1]) if more and not selector else None
        page = page_after(keys, more, "workloads", remaining=remaining)
        budget = Budget(REPLICA_SLICE)
        parts = []
        for ns_name in page.keys:
            await budget.spend()
            w = workloads.get(f"{ns_name[0]}/{ns_name[1]}")
            if w is not None:
                parts.append(await self._encoded(w, budget))
        return page_body(page, parts)

    async def apply(self, request: web.Request) -> web.Response:
        ns, name = path_name(request, "namespace"), path_name(request, "name")
        doc = await read_json(request)
        if not isinstance(doc, dict):
            raise SpecError("", "the body must be a workload document (a JSON object)")
        meta = doc.get("metadata")
        if isinstance(meta, dict):
            if meta.get("name", name) != name:
                raise SpecError("metadata.name", f"{meta.get('name')!r} does not match the URL's {name!r}")
            if meta.get("namespace", ns) != ns:
                raise SpecError("metadata.namespace", f"{meta.get('namespace')!r} does not match the URL's {ns!r}")
            doc = {**doc, "metadata": {**meta, "name": name, "namespace": ns}}
        rec, created, changed = await self.coord.ops.apply(doc)
        warnings = admission_warnings(self.coord.ops.policies, doc)
        return await self._answer(rec, status=201 if created else 200,
                                  headers={"X-Cloudless-Changed": str(changed).lower()}, warnings=warnings)

    async def get_workload(self, request: web.Request) -> web.Response:
        w = self.coord.ops.get(path_name(request, "namespace"), path_name(request, "name"))
        return await self._answer(w)

    async def delete_workload(self, request: web.Request) -> web.Response:
        w = await self.coord.ops.delete(path_name(request, "namespace"), path_name(request, "name"))
        return await self._answer(w)

    async def scale(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        replicas = body.get("replicas") if isinstance(body, dict) else None
        if isinstance(replicas, bool) or not isinstance(replicas, int) or not 0 <= replicas <= MAX_REPLICAS:
            raise SpecError("replicas", f"must be an integer from 0 to {MAX_REPLICAS}")
        if isinstance(body, dict) and set(body) - {"replicas"}:
            raise SpecError(sorted(set(body) - {"replicas"})[0], "unknown field")
        w = await self.coord.ops.scale(path_name(request, "namespace"), path_name(request, "name"), replicas)
        return await self._answer(w)

    async def rollout_status(self, request: web.Request) -> web.Response:
        w = self.coord.ops.get(path_name(request, "namespace"), path_name(request, "name"))
        return web.json_response(views.rollout_json(w, await self._workload_view(w)))

    async def rollout_history(self, request: web.Request) -> web.Response:
        w = self.coord.ops.get(path_name(request, "namespace"), path_name(request, "name"))
        items = [{"revision": h["revision"], "specHash": h["spec_hash"], "createdAt": h["created_at"],
                  "image": h["doc"].get("spec", {}).get("image", ""), "cause": h.get("cause", "")}
                 for h in w.history]
        return web.json_response({"items": items})

    async def rollback(self, request: web.Request) -> web.Response:
        body = await read_json(request) if request.can_read_body else {}
        revision = body.get("revision") if isinstance(body, dict) else None
        if revision is not None and (isinstance(revision, bool) or not isinstance(revision, int) or revision < 1):
            raise SpecError("revision", "must be a positive integer or null")
        w = await self.coord.ops.rollback(path_name(request, "namespace"), path_name(request, "name"), revision)
        return await self._answer(w)

    def _replica(self, request: web.Request) -> Any:
        ns, name, rid = (path_name(request, k) for k in ("namespace", "name", "replica"))
        r = self.coord.cluster.replicas.get(rid)
        if r is None or r.namespace != ns or r.workload != name:
            raise NotFound(f"replica {rid} of workload {ns}/{name} not found")
        return r

    async def logs(self, request: web.Request) -> web.Response:
        r = self._replica(request)
        try:
            tail = int(request.query.get("tail", "100"))
        except ValueError:
            raise SpecError("tail", "must be a number of lines") from None
        if not 1 <= tail <= 10_000:
            raise SpecError("tail", "must be 1-10000")
        reply = await self.coord.ops.command(r, CommandName.LOGS, args={"tail": str(tail)})
        if not reply.ok:
            raise CommandFailed(f"node {r.node}: {reply.error}")
        return web.json_response({"replica": r.replica_id, "node": r.node,
                                  "output": reply.output.decode("utf-8", "replace")})

    async def exec(self, request: web.Request) -> web.Response:
        r = self._replica(request)
        body = await read_json(request)
        command = body.get("command") if isinstance(body, dict) else None
        if not isinstance(command, list) or not command or not all(isinstance(c, str) for c in command):
            raise SpecError("command", "must be a non-empty list of strings")
        timeout = body.get("timeoutSeconds", 30)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0.5 <= timeout <= 300:
            raise SpecError("timeoutSeconds", "must be a number from 0.5 to 300")
        reply = await self.coord.ops.command(r, CommandName.EXEC, argv=tuple(command), timeout_s=float(timeout))
        if not reply.ok:
            raise CommandFailed(f"node {r.node}: {reply.error}")
        return web.json_response({"exitCode": reply.exit_code if reply.exit_code is not None else -1,
                                  "output": reply.output.decode("utf-8", "replace")})

    async def list_replicas(self, request: web.Request) -> web.Response:
        q = request.query
        req = page_request(q, "replicas", (str, str, str))
        ns, workload, node = (query_name(q, k) for k in ("namespace", "workload", "node"))
        table = self.coord.cluster.replicas
        after = cast("tuple[str, str, str] | None", req.after)
        if node is not None:  # one node's replicas (a node holds few): sorted here, filtered while walking
            on_node = sorted((r.namespace, r.workload, r.replica_id) for r in table.on_node(node))
            keys, more = await first_matching(
                from_cursor(on_node, after), lambda k: ns in (None, k[0]) and workload in (None, k[1]), req.limit)
            remaining = (len(on_node) - bisect_right(on_node, keys[-1])
                         if more and ns is None and workload is None else None)
        else:  # workloads in order, each's replicas in id order (ReplicaOrder): nothing sorted per page
            for _ in self._replica_order.refresh(table):
                await asyncio.sleep(0)
            walk = self._replica_order.walk(table, after, namespace=ns, workload=workload)
            records, more = await first_matching(walk, None, req.limit)
            keys = [(r.namespace, r.workload, r.replica_id) for r in records]
            remaining = None
            if more and ns is None and workload is None:
                remaining = self._replica_order.remaining(table, keys[-1])
            elif more and ns is not None and workload is not None:
                reps = table.of_workload(f"{ns}/{workload}")
                remaining = len(reps) - bisect_right(reps, keys[-1][2], key=_rid)
        page = page_after(keys, more, "replicas", remaining=remaining)

        def render(key: tuple[str, str, str]) -> dict[str, Any] | None:
            r = table.get(key[2])
            return views.replica_json(r, self.coord.observed_of(r)) if r is not None else None
        return await paged_response(page, render)


def query_name(q: Mapping[str, str], key: str) -> str | None:
    """A name filter from the query string (absent: None), checked like every id."""
    value = q.get(key)
    if value is not None and not valid_id(value):
        raise SpecError(key, f"{value[:80]!r} is not a valid name (letters, digits, '.', '_', '-')")
    return value


def _rid(r: ReplicaRecord) -> str:
    return r.replica_id


def _labels(w: WorkloadRecord) -> Mapping[str, str]:
    labels = w.doc.get("metadata", {}).get("labels")
    return labels if isinstance(labels, dict) else {}


def admission_warnings(policies: tuple[Policy, ...] | None, doc: object) -> list[str]:
    """What admission policy warns about in an admitted workload document, one line each, as the PolicyWarn events
    word it. Evaluated again here (pure and deterministic) because Operations.apply returns no decision."""
    decision = evaluate(policies if policies is not None else default_policies(), parse_workload(doc))
    return [f"{v.field}: {v.message} ({v.policy}/{v.rule})" for v in decision.violations if v.action is Action.WARN]

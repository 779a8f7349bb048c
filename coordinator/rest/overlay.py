"""The overlay over REST: every node's peers and paths, keeping a connection between two nodes, and a ping between
them (coordinator.overlay_ops does the work; this module checks what comes in and shapes what goes out)."""

from __future__ import annotations

import asyncio
import json
from bisect import bisect_left
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from broker.wire import OverlayPingResult, valid_id
from coordinator.errors import SpecError
from coordinator.listing import encode_continue, page_request
from coordinator.overlay import direct_share, nat_class
from coordinator.overlay_ops import MAX_PING_COUNT, BadRequest, ping_json
from coordinator.rest.paged import SLICE, Budget
from coordinator.rest.ports import Engine
from coordinator.rest.routes import LIST_PARAMS, Param, Route, json_object, path_name

ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/overlay", "overlay_summary",
          "The overlay: relays, each node's overlay (on/off and why, NAT class, candidates, relays), the direct share",
          response="OverlaySummary"),
    Route("GET", "/v1/peers", "list_peers", "Every node's path to each of its peers (path, relay, RTT, bytes, "
          "since), by (node, peer) (paged: `limit`, `continue`; filtered: `node`)", response="PeerList",
          query=(*LIST_PARAMS, Param("node", "only this node's paths"))),
    Route("GET", "/v1/nodes/{node}/peers", "node_peers", "One node's path to each of its peers", response="PeerList"),
    Route("POST", "/v1/overlay/connect", "overlay_connect",
          "Keep an overlay connection between two nodes (until disconnect)", body="OverlayPair",
          response="OverlayKept"),
    Route("POST", "/v1/overlay/disconnect", "overlay_disconnect",
          "Stop keeping an overlay connection between two nodes", body="OverlayPair", response="OverlayKept"),
    Route("POST", "/v1/overlay/ping", "overlay_ping",
          "Ask node `from` to reach node `to` over the overlay and measure round trips", body="OverlayPing",
          response="OverlayPingResult"),
)

BODY_SCHEMAS: dict[str, dict[str, Any]] = {
    "OverlayPair": {"type": "object", "additionalProperties": False, "required": ["a", "b"],
                    "properties": {"a": {"type": "string"}, "b": {"type": "string"}}},
    "OverlayPing": {"type": "object", "additionalProperties": False, "required": ["from", "to"],
                    "properties": {"from": {"type": "string"}, "to": {"type": "string"},
                                   "count": {"type": "integer", "minimum": 1, "maximum": MAX_PING_COUNT},
                                   "timeoutSeconds": {"type": "number", "minimum": 1, "maximum": 120}}},
}


async def _body(request: web.Request, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    body = await json_object(request, required, optional)
    for key in required:
        if not valid_id(body[key]):
            raise SpecError(key, f"{str(body[key])[:80]!r} is not a node name (letters, digits, '.', '_', '-')")
    return body


class OverlayHandlers:
    def __init__(self, coord: Engine) -> None:
        self.coord = coord

    async def overlay_summary(self, request: web.Request) -> web.Response:
        """Every node's overlay: O(nodes), so built and encoded a slice at a time (coordinator.rest.paged)."""
        book = self.coord.overlay
        nodes = []
        budget = Budget()
        for node_id in sorted({*self.coord.cluster.members, *book.reports}):
            await budget.spend()
            report = book.reports.get(node_id)
            nodes.append(json.dumps({
                "node": node_id,
                "enabled": report.enabled if report else None,
                "disabled": report.disabled if report else "no overlay report yet",
                "nat": nat_class(report) if report else "unknown",
                "port": report.port if report else None,
                "candidates": [{"kind": c.kind.value, "address": c.address, "via": c.via}
                               for c in (report.candidates if report else ())],
                "relays": list(report.relays) if report else [],
                "peers": len(report.peers) if report else 0,
                "counters": {"punchAttempts": report.punch_attempts, "punchSuccesses": report.punch_successes,
                             "fallbacks": report.fallbacks, "relayBytes": report.relay_bytes} if report else {},
                "reportedAt": report.ts if report else None}))
        rest = json.dumps({
            "relays": [{"id": r.relay_id, "addresses": list(r.addresses)} for r in book.relays],
            "kept": [{"a": a, "b": b, "until": w.until, "why": w.why} for (a, b), w in sorted(book.wants.items())],
            "directShare": direct_share(book.live_reports().values())})
        return web.Response(text='{"nodes":[' + ",".join(nodes) + "]," + rest[1:], content_type="application/json")

    async def list_peers(self, request: web.Request) -> web.Response:
        node = request.query.get("node")
        if node is not None and not valid_id(node):
            raise SpecError("node", f"{node[:80]!r} is not a node name")
        req = page_request(request.query, "peers", (str, str))
        book = self.coord.overlay
        nodes = [node] if node is not None else sorted(book.reports)
        start = 0 if req.after is None else bisect_left(nodes, req.after[0])
        rows: list[dict[str, object]] = []
        # node by node from the cursor, until one row past the page (which says more follow): costs the page
        for i, n in enumerate(nodes[start:]):
            if i and i % SLICE == 0:
                await asyncio.sleep(0)
            rows += sorted((r for r in book.peer_rows(n) if req.after is None or (n, str(r["peer"])) > req.after),
                           key=lambda r: str(r["peer"]))
            if len(rows) > req.limit:
                break
        more = len(rows) > req.limit
        rows = rows[:req.limit]
        meta = {"continue": encode_continue("peers", (str(rows[-1]["node"]), str(rows[-1]["peer"])))} if more else {}
        return web.json_response({"items": rows, "metadata": meta})

    async def node_peers(self, request: web.Request) -> web.Response:
        return web.json_response({"items": self.coord.overlay_ops.rows(path_name(request, "node"))})

    async def overlay_connect(self, request: web.Request) -> web.Response:
        body = await _body(request, ("a", "b"))
        new = await self._pair(self.coord.overlay_ops.connect, body)
        return web.json_response({"a": body["a"], "b": body["b"], "kept": True, "new": new})

    async def overlay_disconnect(self, request: web.Request) -> web.Response:
        body = await _body(request, ("a", "b"))
        was = await self._pair(self.coord.overlay_ops.disconnect, body)
        return web.json_response({"a": body["a"], "b": body["b"], "kept": False, "was": was})

    @staticmethod
    async def _pair(action: Callable[[str, str], Awaitable[bool]], body: dict[str, Any]) -> bool:
        try:
            return await action(body["a"], body["b"])
        except BadRequest as exc:
            raise SpecError("b", str(exc)) from None

    async def overlay_ping(self, request: web.Request) -> web.Response:
        body = await _body(request, ("from", "to"), ("count", "timeoutSeconds"))
        count = body.get("count", 5)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_PING_COUNT:
            raise SpecError("count", f"must be an integer from 1 to {MAX_PING_COUNT}")
        timeout = body.get("timeoutSeconds", 30)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 1 <= timeout <= 120:
            raise SpecError("timeoutSeconds", "must be a number from 1 to 120")
        try:
            result: OverlayPingResult = await self.coord.overlay_ops.ping(body["from"], body["to"], count=count,
                                                                          timeout_s=float(timeout))
        except BadRequest as exc:
            raise SpecError("to", str(exc)) from None
        return web.json_response({"from": body["from"], **ping_json(result)})

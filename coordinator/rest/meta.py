"""Health, readiness, metrics, the OpenAPI document and the workload JSON Schema."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from importlib import metadata
from typing import Any

from aiohttp import web

from coordinator.rest.ports import Engine
from coordinator.rest.routes import Route
from coordinator.spec import workload_json_schema
from coordinator.store import StoreError


def _installed_version() -> str:
    """This code's version as installed (the distribution's metadata; `cloudless.__version__` is the same number,
    but the coordinator may not import the `cloudless` package)."""
    try:
        return metadata.version("cloudless")
    except metadata.PackageNotFoundError:
        return "unknown"


VERSION = _installed_version()
READY_STORE_TIMEOUT_S = 2.0
ROUND_FAILURES_UNREADY = 3  # reconcile rounds failed in a row before the coordinator reports itself not ready


ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", "healthz", "Liveness: the process serves requests (and its version)", auth=False,
          response="Health"),
    Route("GET", "/readyz", "readyz", "Readiness: state loaded and the broker connected", auth=False,
          response="Readiness", ok=(200, 503)),
    Route("GET", "/metrics", "metrics", "Prometheus metrics", auth=False, media="text/plain"),
    Route("GET", "/openapi.json", "openapi", "This document", auth=False, response="Object"),
    Route("GET", "/v1/schema/workload", "workload_schema", "JSON Schema of a workload document", response="Object"),
)


class MetaHandlers:
    """`openapi` builds the OpenAPI document (coordinator.rest.app, from every route table)."""

    def __init__(self, coord: Engine, *, openapi: Callable[[], dict[str, Any]]) -> None:
        self.coord = coord
        self.prom = coord.metrics
        self._openapi = openapi

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "version": VERSION})

    async def readyz(self, request: web.Request) -> web.Response:
        """Ready: state loaded, broker connected, and a leader known (this one, or one to forward writes to).
        With etcd and no quorum there is no leader: not ready, writes refused, agents keep running."""
        lead = self.coord.leadership
        has_leader = lead.is_leader or bool(lead.leader_api)
        store_ok, store_error = True, None
        try:  # a quorum read: with etcd it fails (or times out) while the cluster has no majority
            async with asyncio.timeout(READY_STORE_TIMEOUT_S):
                await self.coord.store.revision()
        except (StoreError, TimeoutError) as exc:
            store_ok, store_error = False, str(exc) or "no answer in time"
        rounds_ok = self.coord.round_failures < ROUND_FAILURES_UNREADY and not self.coord.epoch_behind
        ready = self.coord.ready and self.coord.mqtt.connected and has_leader and store_ok and rounds_ok
        return web.json_response({"ready": ready, "broker": self.coord.mqtt.connected, "state": self.coord.ready,
                                  "store": store_ok, "storeError": store_error, "epoch": self.coord.epoch,
                                  # leader = acting: elected, and done re-reading the store (a write before
                                  # that gets a 503 "taking over")
                                  "leader": lead.is_leader and self.coord.acting and store_ok,
                                  "leaderId": lead.leader_id,
                                  "rounds": self.coord.rounds, "roundsFailing": self.coord.round_failures,
                                  "roundError": self.coord.round_error or None,
                                  # nodes honour a higher epoch than ours: they ignore us (docs/operations.md)
                                  "epochBehind": self.coord.epoch_behind or None,
                                  # objects one of whose steps failed in the last round (the others went on)
                                  "problems": dict(sorted(self.coord.cluster.problems.items()))},
                                 status=200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        body, content_type = self.prom.render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(self._openapi())

    async def workload_schema(self, request: web.Request) -> web.Response:
        return web.json_response(workload_json_schema())

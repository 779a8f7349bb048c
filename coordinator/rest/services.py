"""Services over REST: every service with its virtual address, ports, endpoints and their health
(coordinator.services decides; coordinator.services_ops keeps this round's view)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from broker.wire import valid_id
from coordinator.errors import SpecError
from coordinator.listing import page_of, page_request
from coordinator.operations import NotFound
from coordinator.rest.paged import paged_response
from coordinator.rest.ports import Engine
from coordinator.rest.routes import LIST_PARAMS, Param, Route, path_name
from coordinator.services_ops import service_row

ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/services", "list_services",
          "List services by (namespace, name): address, ports, ready endpoints (paged: `limit`, `continue`; "
          "filtered: `namespace`)", response="ServiceList",
          query=(*LIST_PARAMS, Param("namespace", "only this namespace's"))),
    Route("GET", "/v1/services/{namespace}/{name}", "get_service",
          "One service: its address, ports, every endpoint with its health, ingress and problems",
          response="Service"),
)


class ServiceHandlers:
    def __init__(self, coord: Engine) -> None:
        self.coord = coord

    async def list_services(self, request: web.Request) -> web.Response:
        ns = request.query.get("namespace")
        if ns is not None and not valid_id(ns):
            raise SpecError("namespace", f"{ns[:80]!r} is not a namespace name")
        req = page_request(request.query, "services", (str, str))
        views = self.coord.services.book.views
        page = page_of(sorted(k for k in views if ns is None or k[0] == ns), req, "services")

        def render(key: tuple[str, str]) -> dict[str, Any] | None:
            view = views.get(key)
            return service_row(view) if view is not None else None
        return await paged_response(page, render)

    async def get_service(self, request: web.Request) -> web.Response:
        ns, name = path_name(request, "namespace"), path_name(request, "name")
        view = self.coord.services.find(ns, name)
        if view is None:
            raise NotFound(f"service {name} not found in namespace {ns} (a workload with spec.service "
                                "makes one; list them with `cloudless get services -A`)")
        return web.json_response(service_row(view))

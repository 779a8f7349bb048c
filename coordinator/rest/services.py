"""Services over REST: every service with its virtual address, ports, endpoints and their health
(coordinator.services decides; coordinator.services_ops keeps this round's view)."""

from __future__ import annotations

from aiohttp import web

from broker.wire import valid_id
from coordinator.errors import SpecError
from coordinator.operations import NotFound
from coordinator.rest.ports import Engine
from coordinator.rest.routes import Route, path_name
from coordinator.services_ops import service_row

ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/services", "list_services",
          "List services (?namespace=): address, ports, ready endpoints", response="ServiceList"),
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
        return web.json_response({"items": self.coord.services.rows(ns)})

    async def get_service(self, request: web.Request) -> web.Response:
        ns, name = path_name(request, "namespace"), path_name(request, "name")
        view = self.coord.services.find(ns, name)
        if view is None:
            raise NotFound(f"service {name} not found in namespace {ns} (a workload with spec.service "
                                "makes one; list them with `cloudless get services -A`)")
        return web.json_response(service_row(view))

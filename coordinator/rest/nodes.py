"""Nodes over REST: list, get, delete, cordon, uncordon, drain (revocation is in coordinator.rest.identity)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from coordinator import views
from coordinator.model import NodeAdmin
from coordinator.operations import NotFound
from coordinator.rest.ports import Engine
from coordinator.rest.routes import Route, path_name
from coordinator.scheduler.model import NodeView

ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/nodes", "list_nodes", "List nodes", response="NodeList"),
    Route("GET", "/v1/nodes/{node}", "get_node", "Get a node", response="Node"),
    Route("DELETE", "/v1/nodes/{node}", "delete_node",
          "Forget a node that is offline or lost (409 while online or holding replicas); clears its retained "
          "presence, dashboard mirror and Home Assistant entities", response="NodeDeleted"),
    Route("POST", "/v1/nodes/{node}/cordon", "cordon", "Mark a node unschedulable", response="Node"),
    Route("POST", "/v1/nodes/{node}/uncordon", "uncordon", "Mark a node schedulable again", response="Node"),
    Route("POST", "/v1/nodes/{node}/drain", "drain", "Cordon a node and move its replicas away (keeps minAvailable)",
          response="Node"),
)


class NodeHandlers:
    """The /v1/nodes handlers."""

    def __init__(self, coord: Engine) -> None:
        self.coord = coord

    def _node_view(self, node_id: str, snap: dict[str, NodeView] | None = None) -> dict[str, Any]:
        """One node as the API shows it; `snap` is the scheduler's view of every node when the caller lists many
        (built once for the whole list: building it per node made GET /v1/nodes quadratic, issue 17)."""
        info = self.coord.cluster.members.get(node_id)
        if info is None:
            raise NotFound(f"node {node_id} not found")
        if snap is None:
            snap = self._snapshot()
        view = snap.get(node_id)
        alloc = (view.allocated_cpu_millis, view.allocated_memory_bytes) if view else (0, 0)
        admin = self.coord.cluster.admin.get(node_id, NodeAdmin())
        return views.node_json(info, admin, replicas=view.replicas if view else 0, alloc=alloc,
                               now=self.coord.clock(), cfg=self.coord.cfg.membership,
                               problem=self.coord.cluster.problems.get(f"node/{node_id}", ""))

    def _snapshot(self) -> dict[str, NodeView]:
        return {n.node_id: n for n in self.coord.snapshot(self.coord.clock()).nodes}

    async def list_nodes(self, request: web.Request) -> web.Response:
        snap = self._snapshot()
        return web.json_response({"items": [self._node_view(n, snap) for n in sorted(self.coord.cluster.members)]})

    async def get_node(self, request: web.Request) -> web.Response:
        return web.json_response(self._node_view(path_name(request, "node")))

    async def delete_node(self, request: web.Request) -> web.Response:
        node = path_name(request, "node")
        await self.coord.ops.delete_node(node)
        return web.json_response({"deleted": node})

    async def _admin(self, request: web.Request, **kw: bool) -> web.Response:
        node = path_name(request, "node")
        await self.coord.ops.set_admin(node, **kw)
        return web.json_response(self._node_view(node))

    async def cordon(self, request: web.Request) -> web.Response:
        return await self._admin(request, cordoned=True)

    async def uncordon(self, request: web.Request) -> web.Response:
        return await self._admin(request, cordoned=False)

    async def drain(self, request: web.Request) -> web.Response:
        return await self._admin(request, draining=True)

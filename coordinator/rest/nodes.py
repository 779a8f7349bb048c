"""Nodes over REST: list (paged, filtered), get, delete, cordon, uncordon, drain (revocation is in
coordinator.rest.identity).

Each answer costs what it holds (issue 17): a node's allocation and replica count come from the replicas on that
node (`Cluster.replicas.on_node`), never from the scheduler's snapshot of every node, and a list renders only its
page, a slice at a time (coordinator.rest.paged).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Mapping
from typing import Any, cast

from aiohttp import web

from coordinator import views
from coordinator.errors import SpecError
from coordinator.list_index import SortedKeys, from_cursor
from coordinator.listing import page_after, page_request
from coordinator.membership import NodeInfo, NodeState
from coordinator.model import NodeAdmin
from coordinator.operations import NotFound
from coordinator.rest.paged import first_matching, paged_response
from coordinator.rest.ports import Engine
from coordinator.rest.routes import LIST_PARAMS, Param, Route, path_name
from coordinator.selector import Selector, parse_selector

NODE_STATES = tuple(s.value for s in NodeState)
NODE_FILTERS = (
    Param("labelSelector", "only nodes whose labels match (Kubernetes syntax: `a=b,c!=d,e,!f,g in (x,y)`)"),
    Param("state", f"only nodes in this state ({', '.join(NODE_STATES)})", enum=NODE_STATES),
    Param("zone", "only nodes in this zone"),
)

ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/nodes", "list_nodes", "List nodes, by id (paged: `limit`, `continue`; filtered: "
          "`labelSelector`, `state`, `zone`)", response="NodeList", query=(*LIST_PARAMS, *NODE_FILTERS)),
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
        self._order: SortedKeys[str, tuple[str]] = SortedKeys(_one_part)

    def _node_view(self, node_id: str) -> dict[str, Any] | None:
        """One node as the API shows it (None: not a member); costs the replicas on that node."""
        cluster = self.coord.cluster
        info = cluster.members.get(node_id)
        if info is None:
            return None
        cpu = memory = 0
        on_node = cluster.replicas.on_node(node_id)
        for r in on_node:  # what the scheduler's snapshot counts as allocated (coordinator.cluster.snapshot)
            w = cluster.spec_of(r)
            if w is not None:
                cpu += w.spec.resources.cpu_request_millis
                memory += w.spec.resources.memory_request_bytes
        admin = cluster.admin.get(node_id, NodeAdmin())
        return views.node_json(info, admin, replicas=len(on_node), alloc=(cpu, memory), now=self.coord.clock(),
                               cfg=self.coord.cfg.membership, problem=cluster.problems.get(f"node/{node_id}", ""))

    def _one(self, node_id: str) -> dict[str, Any]:
        view = self._node_view(node_id)
        if view is None:
            raise NotFound(f"node {node_id} not found")
        return view

    async def list_nodes(self, request: web.Request) -> web.Response:
        """Node ids in order are kept between requests (`SortedKeys`: sorted again only when a node came or went);
        a page bisects to its cursor and applies the filters from there until it is full."""
        q = request.query
        req = page_request(q, "nodes", (str,))
        keep = node_filter(q)
        members = self.coord.cluster.members
        order = self._order.of(members)
        after = cast("tuple[str] | None", req.after)

        def matches(key: tuple[str]) -> bool:
            info = members.get(key[0])
            return info is not None and (keep is None or keep(info))
        keys, more = await first_matching(from_cursor(order, after), matches, req.limit)
        # counted only without a filter (as Kubernetes does): counting matches would scan every node
        remaining = len(order) - bisect_right(order, keys[-1]) if more and keep is None else None
        return await paged_response(page_after(keys, more, "nodes", remaining=remaining),
                                    lambda key: self._node_view(key[0]))

    async def get_node(self, request: web.Request) -> web.Response:
        return web.json_response(self._one(path_name(request, "node")))

    async def delete_node(self, request: web.Request) -> web.Response:
        node = path_name(request, "node")
        await self.coord.ops.delete_node(node)
        return web.json_response({"deleted": node})

    async def _admin(self, request: web.Request, **kw: bool) -> web.Response:
        node = path_name(request, "node")
        await self.coord.ops.set_admin(node, **kw)
        return web.json_response(self._one(node))

    async def cordon(self, request: web.Request) -> web.Response:
        return await self._admin(request, cordoned=True)

    async def uncordon(self, request: web.Request) -> web.Response:
        return await self._admin(request, cordoned=False)

    async def drain(self, request: web.Request) -> web.Response:
        return await self._admin(request, draining=True)


def _one_part(node_id: str) -> tuple[str]:
    return (node_id,)


def node_filter(q: Mapping[str, str]) -> Callable[[NodeInfo], bool] | None:
    """A predicate over NodeInfo for the query's `labelSelector`, `state` and `zone` (None: no filter); a bad
    value is a SpecError naming its parameter."""
    selector = parse_selector(q.get("labelSelector"))
    state = q.get("state")
    if state is not None and state not in NODE_STATES:
        raise SpecError("state", f"must be one of {', '.join(NODE_STATES)}, got {state[:40]!r}")
    zone = q.get("zone")
    if zone is not None and len(zone) > 64:
        raise SpecError("zone", "is longer than 64 characters")
    if not selector and state is None and zone is None:
        return None
    return lambda info: node_matches(info, selector, state, zone)


def node_matches(info: NodeInfo, selector: Selector, state: str | None, zone: str | None) -> bool:
    facts = info.status.facts if info.status else None
    if state is not None and info.state.value != state:
        return False
    if zone is not None and (facts.zone if facts else "") != zone:
        return False
    return not selector or selector.matches(facts.labels if facts else {})

"""The route table entry every REST module declares, and the helpers its handlers share.

Each module under coordinator.rest lists its routes (`ROUTES`: method, path, handler name, summary, body schema,
auth, response schema) next to a handler object; `bind` pairs them. The app (coordinator.rest.app) registers every
pair with aiohttp and builds the OpenAPI document from the same tables, so the documentation cannot drift from what is
served.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from broker.wire import valid_id
from coordinator.errors import SpecError
from coordinator.http import read_json
from coordinator.listing import DEFAULT_LIMIT, MAX_LIMIT

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Param:
    """A query parameter a route takes (documented in the OpenAPI document)."""

    name: str
    description: str
    type: str = "string"  # JSON Schema type
    enum: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None


# what every paged list takes (coordinator.listing)
LIST_PARAMS: tuple[Param, ...] = (
    Param("limit", f"at most this many items (default {DEFAULT_LIMIT})", type="integer", minimum=1,
          maximum=MAX_LIMIT),
    Param("continue", "the previous page's `metadata.continue`, unchanged: the next page starts after its last item"),
)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: str
    summary: str
    body: str | None = None  # name of a schema in components
    auth: bool = True
    # the 2xx answer: a schema name in components (coordinator.rest.responses; None: a JSON object of no fixed
    # shape), the status codes it comes with, and its media type when it is not JSON
    response: str | None = None
    ok: tuple[int, ...] = (200,)
    media: str = "application/json"
    query: tuple[Param, ...] = ()


def bind(routes: Iterable[Route], handlers: object) -> list[tuple[Route, Handler]]:
    """Each route with its handler: the method of `handlers` named by the route."""
    return [(r, getattr(handlers, r.handler)) for r in routes]


def path_name(request: web.Request, key: str) -> str:
    """A name from the URL path, checked like every id (a bad one is a 400 naming the parameter)."""
    value = request.match_info[key]
    if not valid_id(value):
        raise SpecError(key, f"{value[:80]!r} is not a valid name (letters, digits, '.', '_', '-')")
    return value


async def json_object(request: web.Request, required: tuple[str, ...],
                      optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """The request's body as a JSON object with the `required` fields and no others than `optional`; a SpecError
    naming the first field that is wrong."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise SpecError("", "the body must be a JSON object")
    if unknown := sorted(set(body) - {*required, *optional}):
        raise SpecError(unknown[0], f"unknown field (expected {', '.join((*required, *optional))})")
    for key in required:
        if key not in body:
            raise SpecError(key, "required")
    return body

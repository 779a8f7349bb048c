"""A page of a list as an HTTP answer, built in slices that give the event loop back (issue 17).

`paged_response` renders each key of a `coordinator.listing.Page` with the handler's `render`, JSON-encodes the
items a slice at a time and yields to the loop between slices (`await asyncio.sleep(0)`), so a page of the
largest allowed size never holds the loop for more than one slice: heartbeats, verdicts and the MQTT keep-alive go
on while a big list is answered. Because of those yields, an item removed between slices is left out (`render`
returns None for it) and each item is as of the moment its slice was rendered.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from aiohttp import web

from coordinator.listing import Page

SLICE = 100  # items rendered and encoded between two yields to the loop (a node view: ~30-60 us each)

K = TypeVar("K")


async def in_slices(keys: Sequence[K], render: Callable[[K], dict[str, Any] | None]) -> list[str]:
    """Each key rendered and JSON-encoded (None: left out), yielding to the loop every SLICE keys."""
    parts: list[str] = []
    for i, key in enumerate(keys):
        if i and i % SLICE == 0:
            await asyncio.sleep(0)
        item = render(key)
        if item is not None:
            parts.append(json.dumps(item))
    return parts


async def paged_response(page: Page[Any], render: Callable[[Any], dict[str, Any] | None]) -> web.Response:
    """`{"items": [...], "metadata": {"continue"?, "remainingItemCount"?}}` for `page`."""
    return page_body(page, await in_slices(page.keys, render))


def page_body(page: Page[Any], parts: list[str]) -> web.Response:
    """The answer for `page` whose items are already JSON-encoded (`parts`)."""
    body = '{"items":[' + ",".join(parts) + '],"metadata":' + json.dumps(page.metadata()) + "}"
    return web.Response(text=body, content_type="application/json")


class Budget:
    """Gives the loop back once every `every` units of work (`await budget.spend(n)`): for answers whose items
    differ in cost, such as workloads that carry all their replicas."""

    def __init__(self, every: int = SLICE) -> None:
        self.every = every
        self.spent = 0

    async def spend(self, units: int = 1) -> None:
        self.spent += units
        if self.spent >= self.every:
            self.spent = 0
            await asyncio.sleep(0)

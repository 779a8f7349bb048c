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
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from aiohttp import web

from coordinator.listing import Page

SLICE = 100  # items rendered and encoded between two yields to the loop (a node view: ~30-60 us each)

K = TypeVar("K")
T = TypeVar("T")


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


SCAN_SLICE = 500  # candidates looked at (a filter applied) between two yields to the loop while a page is filled


async def first_matching(candidates: Iterator[T], keep: Callable[[T], bool] | None,
                         limit: int) -> tuple[list[T], bool]:
    """Up to `limit` candidates that `keep` accepts (None: all), in order, and whether another follows. Stops at
    the first candidate past the page (the page costs what it scans, from the cursor on, not the whole list) and
    gives the loop back every SCAN_SLICE candidates, so a filter that matches little never holds the loop."""
    chosen: list[T] = []
    for i, item in enumerate(candidates):
        if i and i % SCAN_SLICE == 0:
            await asyncio.sleep(0)
        if keep is None or keep(item):
            if len(chosen) == limit:
                return chosen, True
            chosen.append(item)
    return chosen, False

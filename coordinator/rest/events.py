"""Events over REST: a filtered list, and a server-sent event stream that resumes from an event id."""

from __future__ import annotations

import asyncio
import json
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from typing import Any

from aiohttp import web

from coordinator import views
from coordinator.errors import SpecError
from coordinator.listing import MAX_LIMIT, page_after, page_request, parse_limit
from coordinator.model import Event
from coordinator.rest.paged import SLICE, first_matching, page_body, paged_response
from coordinator.rest.ports import EventLog
from coordinator.rest.routes import LIST_PARAMS, Param, Route

SSE_KEEPALIVE_S = 15.0


ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/events", "list_events", "List events, oldest first by id (paged: `limit`, `continue`; "
          "filtered: `object`, `type`, `reason`, `since`, `tail`)", response="EventList",
          query=(*LIST_PARAMS,
                 Param("object", "only events about this object (`node/ID`, `workload/NS/NAME`) or under it"),
                 Param("type", "only events of this type", enum=("Normal", "Warning")),
                 Param("reason", "only events with this reason"),
                 Param("since", "only events after this time (unix seconds)", type="number"),
                 Param("tail", "only the newest N matching events (then paged like the rest)", type="integer",
                       minimum=1, maximum=MAX_LIMIT))),
    Route("GET", "/v1/events/stream", "stream_events",
          "Stream events as server-sent events (text/event-stream; ?object=&type=&reason=&after=ID or the "
          "Last-Event-ID header to resume; a comment line every 15 s keeps idle connections alive)",
          media="text/event-stream"),
)


class EventHandlers:
    """The /v1/events handlers (they read the journal only)."""

    def __init__(self, journal: EventLog) -> None:
        self.journal = journal

    async def list_events(self, request: web.Request) -> web.Response:
        """Events in id order, a page at a time. `tail=N` first narrows them to the newest N that match (what
        `cloudless get events` shows); `since` to those after a time. A page bisects to its cursor in the journal
        (held in id order) and applies the filters from there until it is full.

        With `tail`, the first page fixes the window: its oldest event's id goes into the continue token as the
        window's start (`floor`), so later pages go on from the same window even while events are recorded (newer
        ones are then seen, as an item added ahead of the cursor is in any list); they are never skipped."""
        q = request.query
        req = page_request(q, "events", (int,), extra=("floor",))
        try:
            since = float(q.get("since", "0"))
        except ValueError:
            raise SpecError("since", f"must be unix seconds, got {q.get('since', '')[:40]!r}") from None
        tail = parse_limit(q.get("tail"), default=0, field="tail") if q.get("tail") else None
        if q.get("type") not in (None, "Normal", "Warning"):
            raise SpecError("type", "must be Normal or Warning")
        match = _event_filter(q)
        filtered = any(q.get(k) for k in ("object", "type", "reason", "since"))

        def keep(e: Event) -> bool:
            return e.time > since and match(e)
        events = self.journal.committed_events()  # in id order
        floor = req.extra.get("floor")
        if tail is not None and req.after is None:
            newest, _ = await first_matching((events[i] for i in range(len(events) - 1, -1, -1)), keep, tail)
            floor = newest[-1].seq if newest else None
            if floor is None:
                return page_body(page_after([], False, "events"), [])
        elif tail is not None and floor is None:
            raise SpecError("continue", "is not a continue token of this list with `tail`: pass metadata.continue "
                            "from the previous page unchanged, with the same query (or start again without it)")
        start = 0 if req.after is None else bisect_right(events, req.after[0], key=_seq)
        if floor is not None:
            start = max(start, bisect_left(events, floor, key=_seq))
        chosen, more = await first_matching((events[i] for i in range(start, len(events))), keep, req.limit)
        remaining = len(events) - bisect_right(events, chosen[-1].seq, key=_seq) if more and not filtered else None
        page = page_after([(e.seq,) for e in chosen], more, "events", remaining=remaining,
                          extra={"floor": floor} if floor is not None else None)
        by_id = {e.seq: e for e in chosen}
        return await paged_response(page, lambda key: views.event_json(by_id[key[0]]))

    async def stream_events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: first the retained events after `after` (or Last-Event-ID), then each new one
        as it is recorded. `id:` is the event id, so a client that reconnects with Last-Event-ID misses
        nothing still retained. A client too slow to keep up is cut off (it reconnects and resumes)."""
        raw_after = request.query.get("after") or request.headers.get("Last-Event-ID") or "0"
        try:
            after = int(raw_after)
        except ValueError:
            raise SpecError("after", f"after (or Last-Event-ID) must be an event id, got {raw_after[:40]!r}") from None
        match = _event_filter(request.query)
        queue = self.journal.listen_events()  # before the replay, so nothing recorded in between is missed
        try:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                               "X-Accel-Buffering": "no"})
            await resp.prepare(request)
            await resp.write(b"retry: 2000\n\n")
            last = after
            for i, e in enumerate(self.journal.committed_events()):
                if i % SLICE == SLICE - 1:  # the replay may be thousands of events: give the loop back meanwhile
                    await asyncio.sleep(0)
                if e.seq > last and match(e):
                    await resp.write(_sse(e))
                    last = e.seq
            while True:
                try:
                    async with asyncio.timeout(SSE_KEEPALIVE_S):
                        ev = await queue.get()
                except TimeoutError:
                    await resp.write(b": keep-alive\n\n")
                    continue
                if ev is None:
                    break
                if ev.seq > last and match(ev):
                    await resp.write(_sse(ev))
                    last = ev.seq
            return resp
        except ConnectionResetError:  # the client went away: the normal end of a stream, not an error
            return resp
        finally:
            self.journal.unlisten_events(queue)


def _event_filter(q: Any) -> Callable[[Event], bool]:
    obj, type_, reason = q.get("object"), q.get("type"), q.get("reason")

    def match(e: Event) -> bool:
        return ((obj is None or e.object == obj or e.object.startswith(obj + "/"))
                and (type_ is None or e.type == type_) and (reason is None or e.reason == reason))
    return match


def _seq(e: Event) -> int:
    return e.seq


def _sse(e: Event) -> bytes:
    return f"id: {e.seq}\nevent: event\ndata: {json.dumps(views.event_json(e))}\n\n".encode()

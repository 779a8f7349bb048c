"""The operation handlers driven directly (no HTTP), where a test must control when each request's body arrives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from dataplane.s3.body import body_reader
from dataplane.s3.errors import ErrorCode, S3Error
from dataplane.s3.handlers import Call, Incoming, Response, Service, handle
from dataplane.s3.routing import Operation, Route
from dataplane.s3.sigv4 import Authenticated, Payload
from tests.dataplane.s3.memory_backend import MemoryBackend

NOW = 1_800_000_000.0


def _conditional_put(key: str, data: bytes, gate: asyncio.Event, arrived: asyncio.Event) -> Call:
    headers = {"if-none-match": "*"}

    async def body() -> AsyncIterator[bytes]:
        arrived.set()
        await gate.wait()  # the body is still arriving when the other request gets going
        yield data

    reader = body_reader(headers.get, Authenticated("AKID", Payload.UNSIGNED))
    assert not isinstance(reader, S3Error)
    return Call(Route(Operation.PUT_OBJECT, "bkt", key), headers.get, NOW, "AKID", body=Incoming(body(), reader))


async def test_concurrent_if_none_match_puts_exactly_one_wins() -> None:
    """Two `If-None-Match: *` PUTs of one key, both past the early existence check before either commits: the commit
    decides, so one is 200 and the other 412, and the object is the winner's."""
    backend = MemoryBackend()
    await backend.create_bucket("bkt", NOW)
    service = Service(backend, lambda: "id")
    gate = asyncio.Event()
    arrived = [asyncio.Event(), asyncio.Event()]
    tasks = [asyncio.create_task(handle(service, _conditional_put("lock", data, gate, seen)))
             for data, seen in zip((b"first", b"second"), arrived, strict=True)]
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in arrived)), timeout=30)  # both are streaming
    gate.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
    won = [r for r in results if isinstance(r, Response) and r.status == 200]
    lost = [r for r in results if isinstance(r, S3Error)]
    assert len(won) == 1 and len(lost) == 1
    assert lost[0].code is ErrorCode.PRECONDITION_FAILED and lost[0].status == 412
    assert lost[0].resource == "/bkt/lock"
    winner = b"first" if results[0] is won[0] else b"second"
    assert backend.buckets["bkt"].objects["lock"][1] == winner
    assert backend.staged == 0  # the loser's staging area was dropped

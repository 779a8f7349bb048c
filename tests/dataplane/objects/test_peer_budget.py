"""The chunk server's node-wide memory bound (review 3, M6): the chunk bytes all requests hold at once are capped
(`Limits.max_buffered_bytes`) across peers; past it a request is answered BUSY before its body is read, and the
client sees a ChunkRefused naming the node-wide buffer. Requests finished (or failed) give their bytes back."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Sequence

import pytest

from dataplane.objects.peer import (
    MAX_CHUNK,
    ChunkRefused,
    ChunkServer,
    Limits,
    Op,
    Request,
    Response,
    Status,
    _result,
    encode_request,
    header_length,
    is_gateway,
    parse_response,
)
from dataplane.objects.ports import ChunkBusy, ChunkMissing

MIB = 1024 * 1024


class GatedStore:
    """Puts wait for `release` (a slow disk), so requests stay in progress while others arrive."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.held: dict[str, bytes] = {}

    def put(self, chunk_id: str, data: bytes) -> str | None:
        self.release.wait(10)
        self.held[chunk_id] = data
        return None

    def get(self, chunk_id: str) -> bytes | None:
        self.release.wait(10)
        return self.held.get(chunk_id)

    def delete(self, chunk_id: str) -> bool:
        return self.held.pop(chunk_id, None) is not None

    def has(self, chunk_ids: Sequence[str]) -> frozenset[str]:
        return frozenset(c for c in chunk_ids if c in self.held)


class Writer:
    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = asyncio.Event()

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        return None

    def write_eof(self) -> None:
        self.closed.set()

    def close(self) -> None:
        self.closed.set()


def chunk(n: int, size: int) -> tuple[str, bytes]:
    data = (hashlib.sha256(str(n).encode()).digest() * (size // 32 + 1))[:size]
    return hashlib.sha256(data).hexdigest(), data


def request(op: Op, chunk_id: str, body: bytes = b"") -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(encode_request(Request(op, chunk_id, len(body))) + body)
    reader.feed_eof()
    return reader


def answer(writer: Writer) -> tuple[Status, str]:
    raw = bytes(writer.data)
    size = header_length(raw[:2])
    assert isinstance(size, int)
    response = parse_response(raw[2:2 + size], cap=MAX_CHUNK)
    assert isinstance(response, Response), response
    return response.status, response.reason


async def serve(server: ChunkServer, node: str, reader: asyncio.StreamReader) -> tuple[asyncio.Task[None], Writer]:
    writer = Writer()
    task = asyncio.create_task(server.handle(node, reader, writer))  # type: ignore[arg-type]
    return task, writer


async def test_the_buffer_is_shared_by_all_peers_and_refuses_past_it() -> None:
    store = GatedStore()
    server = ChunkServer(store, Limits(max_buffered_bytes=8 * MIB, per_peer=8))
    puts = [chunk(i, 3 * MIB) for i in range(3)]
    first = [await serve(server, f"peer-{i}", request(Op.PUT, cid, data)) for i, (cid, data) in enumerate(puts[:2])]
    while server.buffered.held < 6 * MIB:  # both bodies read, both puts waiting on the disk
        await asyncio.sleep(0.01)

    # a third peer's put and a get (MAX_CHUNK reserved) do not fit: BUSY, before the body is read
    task, writer = await serve(server, "peer-2", request(Op.PUT, puts[2][0], puts[2][1]))
    await task
    status, why = answer(writer)
    assert status is Status.BUSY and "node-wide chunk buffer full" in why
    task, writer = await serve(server, "peer-3", request(Op.GET, puts[0][0]))
    await task
    assert answer(writer)[0] is Status.BUSY
    assert server.buffered.refused == 2
    with pytest.raises(ChunkRefused, match="busy: node-wide chunk buffer full") as refused:  # what the client raises
        _result("peer-2", puts[2][0], Response(Status.BUSY, why), b"")
    assert isinstance(refused.value, ChunkBusy)  # the ports' "try again shortly"

    store.release.set()  # the disk catches up: the two puts finish and give their bytes back
    for t, w in first:
        await t
        assert answer(w)[0] is Status.OK
    assert server.buffered.held == 0
    task, writer = await serve(server, "peer-2", request(Op.PUT, puts[2][0], puts[2][1]))
    await task
    assert answer(writer)[0] is Status.OK and puts[2][0] in store.held


async def test_a_request_that_fails_gives_its_bytes_back() -> None:
    store = GatedStore()
    store.release.set()
    server = ChunkServer(store, Limits(max_buffered_bytes=8 * MIB))
    cid, data = chunk(1, MIB)
    reader = asyncio.StreamReader()
    reader.feed_data(encode_request(Request(Op.PUT, cid, len(data))) + data[:1000])
    reader.feed_eof()  # the peer went away mid-body
    task, _writer = await serve(server, "peer", reader)
    with pytest.raises(asyncio.IncompleteReadError):
        await task  # (the overlay's stream handler catches it)
    assert server.buffered.held == 0


def test_a_missing_chunk_is_the_ports_chunk_missing() -> None:
    with pytest.raises(ChunkMissing):  # chunkio and the repairer forget that holder
        _result("peer", "ab" * 32, Response(Status.MISSING), b"")


def test_only_storage_gateways_are_gateways() -> None:
    assert is_gateway("s3@c1") and is_gateway("s3@main")
    assert not any(is_gateway(p) for p in ("s3", "s3@", "node-1", "relay@vps", "s4@c1", "@c1", "xs3@c1"))


async def test_a_server_for_gateways_refuses_any_other_peer_before_reading_a_byte() -> None:
    store = GatedStore()
    store.release.set()
    server = ChunkServer(store, Limits(max_buffered_bytes=8 * MIB), allowed=is_gateway)
    cid, data = chunk(0, MIB)
    task, writer = await serve(server, "node-7", request(Op.PUT, cid, data))
    await task
    status, why = answer(writer)
    assert status is Status.REFUSED and "node-7 may not use this node's chunks" in why
    assert cid not in store.held and server.rejected == 1
    for op in (Op.GET, Op.DELETE):
        task, writer = await serve(server, "node-7", request(op, cid))
        await task
        assert answer(writer)[0] is Status.REFUSED
    task, writer = await serve(server, "s3@c1", request(Op.PUT, cid, data))
    await task
    assert answer(writer)[0] is Status.OK and cid in store.held

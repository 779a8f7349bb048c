"""Chunk transfer between nodes on overlay streams (service "chunks"): one request and one answer per stream.

Frame (both directions): 2 bytes big-endian header length (1..MAX_HEADER), a msgpack map, then exactly `len` raw
bytes. Request `{"op": put|get|delete|has, "id": <64 hex>, "len": n}`: a put carries the chunk (<= MAX_CHUNK), a has
carries the asked ids as 32-byte digests (<= MAX_HAS of them, no "id"). Answer `{"st": <Status>, "why": <reason>,
"len": n}`: a get's chunk, a has's held ids as digests. The framing is sans-IO (`encode_*`, `parse_*`: bytes in, a
value or a `Rejected` out); the asyncio server (`chunk_service`) and client (`OverlayChunkClient`) only move bytes.

Why per-request streams: QUIC streams are cheap and independent, so one slow transfer never holds up another, and a
broken request ends with its stream. Every read is bounded by a header cap, a validated length and a deadline; a
node serves at most `per_peer` requests of one peer at a time and holds at most `max_buffered_bytes` of chunks
for all requests together (more are answered "busy"), so one slow or hostile peer cannot stall the others and many
peers cannot take the node's memory. The client trusts nothing it receives: every chunk is checked against its id
(`ChunkMismatch`, a bad copy for read-repair)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import msgpack

from dataplane.errors import DataPlaneError
from dataplane.objects.chunking import is_chunk_id
from dataplane.objects.ports import ChunkBusy, ChunkMismatch, ChunkMissing, ChunkUnavailable
from dataplane.overlay import Overlay, ServiceHandler, ServiceRefused

log = logging.getLogger(__name__)

SERVICE = "chunks"
MAX_CHUNK = 4 * 1024 * 1024
MAX_HEADER = 1024
MAX_HAS = 4096  # ids per has request (128 KiB of digests); the client splits longer lists
MAX_REASON = 200
DIGEST = 32
_LEN = struct.Struct(">H")


class Op(StrEnum):
    PUT = "put"
    GET = "get"
    DELETE = "delete"
    HAS = "has"


class Status(StrEnum):
    OK = "ok"
    MISSING = "missing"  # the node does not hold the chunk
    REFUSED = "refused"  # bad request, quota full, bytes not matching the id
    CORRUPT = "corrupt"  # the node found its copy corrupt (and dropped it)
    BUSY = "busy"  # too many requests of this peer at once; try later or elsewhere
    ERROR = "error"  # the node's store failed (I/O)


@dataclass(frozen=True, slots=True)
class Request:
    op: Op
    chunk_id: str = ""
    length: int = 0


@dataclass(frozen=True, slots=True)
class Response:
    status: Status
    reason: str = ""
    length: int = 0


@dataclass(frozen=True, slots=True)
class Rejected:
    """A frame that breaks the protocol; `field` names what was wrong."""

    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


# ---- errors the client raises (all ChunkUnavailable, the port's one error type) --------------------------------

ChunkError = ChunkUnavailable


class ChunkNotFound(ChunkMissing):
    """The node does not hold the chunk (the ports' ChunkMissing: the caller forgets that holder)."""


class ChunkRefused(ChunkUnavailable):
    """The node (or this client, before sending) refused the request; `why` says why (quota, bad id, busy)."""


class ChunkServerBusy(ChunkRefused, ChunkBusy):
    """The node answered busy (its per-peer or node-wide limit): refused now, worth a retry shortly."""


class ChunkUnreachable(ChunkUnavailable):
    """No answer: the node is down, unreachable, or too slow for the request's deadline."""


class CopyCorrupt(DataPlaneError):
    """Raised by a `ChunkStore.get` that found its copy corrupt (and dropped it): answered as CORRUPT."""


# ---- sans-IO framing -------------------------------------------------------------------------------------------

def _frame(header: dict[str, Any]) -> bytes:
    raw: bytes = msgpack.packb(header, use_bin_type=True)
    if len(raw) > MAX_HEADER:
        raise ValueError(f"header of {len(raw)} bytes exceeds {MAX_HEADER}")
    return _LEN.pack(len(raw)) + raw


def encode_request(request: Request) -> bytes:
    header: dict[str, Any] = {"op": str(request.op), "len": request.length}
    if request.chunk_id:
        header["id"] = request.chunk_id
    return _frame(header)


def encode_response(response: Response) -> bytes:
    return _frame({"st": str(response.status), "why": response.reason[:MAX_REASON], "len": response.length})


def header_length(prefix: bytes) -> int | Rejected:
    n: int = _LEN.unpack(prefix)[0]
    if not 1 <= n <= MAX_HEADER:
        return Rejected("header", f"length {n} outside 1..{MAX_HEADER}")
    return n


def _unpack(raw: bytes) -> dict[str, Any] | Rejected:
    try:
        doc = msgpack.unpackb(raw, raw=False, strict_map_key=True, max_str_len=MAX_HEADER, max_bin_len=0,
                              max_array_len=0, max_map_len=8, max_ext_len=0)
    except Exception as exc:  # msgpack raises many types (ExtraData, ValueError, UnicodeDecodeError, ...)
        return Rejected("header", f"not a msgpack map ({type(exc).__name__})")
    if not isinstance(doc, dict):
        return Rejected("header", "not a map")
    return doc


def _length(doc: dict[str, Any], cap: int) -> int | Rejected:
    n = doc.get("len")
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= cap:
        return Rejected("len", f"must be an integer in 0..{cap}, got {str(n)[:20]!r}")
    return int(n)


def parse_request(raw: bytes) -> Request | Rejected:
    doc = _unpack(raw)
    if isinstance(doc, Rejected):
        return doc
    try:
        op = Op(str(doc.get("op")))
    except ValueError:
        return Rejected("op", f"unknown operation {str(doc.get('op'))[:20]!r}")
    length = _length(doc, MAX_CHUNK if op is Op.PUT else MAX_HAS * DIGEST if op is Op.HAS else 0)
    if isinstance(length, Rejected):
        return length
    if op is Op.HAS:
        if length % DIGEST:
            return Rejected("len", f"a has body is whole {DIGEST}-byte digests, got {length} bytes")
        return Request(op, "", length)
    chunk_id = doc.get("id")
    if not is_chunk_id(chunk_id):
        return Rejected("id", "must be 64 lowercase hex characters (a SHA-256)")
    assert isinstance(chunk_id, str)
    return Request(op, chunk_id, length)


def parse_response(raw: bytes, *, cap: int) -> Response | Rejected:
    """An answer header; `cap` bounds the body the request allows (a chunk, or the digests asked about)."""
    doc = _unpack(raw)
    if isinstance(doc, Rejected):
        return doc
    try:
        status = Status(str(doc.get("st")))
    except ValueError:
        return Rejected("st", f"unknown status {str(doc.get('st'))[:20]!r}")
    reason = doc.get("why", "")
    if not isinstance(reason, str):
        return Rejected("why", "must be a string")
    length = _length(doc, cap if status is Status.OK else 0)
    if isinstance(length, Rejected):
        return length
    return Response(status, reason[:MAX_REASON], length)


def digests(chunk_ids: Sequence[str]) -> bytes:
    return b"".join(bytes.fromhex(c) for c in chunk_ids)


def chunk_ids_of(body: bytes) -> list[str]:
    return [body[i:i + DIGEST].hex() for i in range(0, len(body), DIGEST)]


async def read_body(reader: asyncio.StreamReader, length: int) -> bytes:
    """Exactly `length` bytes, taken as they arrive: the overlay's receive window (dataplane.quic RECEIVE_WINDOW)
    opens only as the reader takes bytes, so one readexactly() of a body near the window's size would wait forever."""
    body = bytearray()
    while len(body) < length:
        piece = await reader.read(min(length - len(body), 256 * 1024))
        if not piece:
            raise asyncio.IncompleteReadError(bytes(body), length)
        body += piece
    return bytes(body)


def deadline_s(length: int, *, base_s: float, min_rate: float) -> float:
    """Time allowed to move `length` bytes: a fixed part plus the bytes at the slowest rate accepted."""
    return base_s + length / min_rate


# ---- the server ------------------------------------------------------------------------------------------------

class ChunkStore(Protocol):
    """A node's chunk storage (edge_agent.chunks.DiskChunkStore). Blocking (disk): the server calls it in a thread.
    `put` returns None when stored (or already held), else the refusal's reason; `get` returns None when not held
    and raises CopyCorrupt for a copy that fails its check; `delete` returns whether there was a copy."""

    def put(self, chunk_id: str, data: bytes) -> str | None: ...

    def get(self, chunk_id: str) -> bytes | None: ...

    def delete(self, chunk_id: str) -> bool: ...

    def has(self, chunk_ids: Sequence[str]) -> frozenset[str]: ...


@dataclass(frozen=True, slots=True)
class Limits:
    header_timeout_s: float = 10.0  # a request's header must arrive within this
    base_timeout_s: float = 10.0  # plus its body at min_rate
    min_rate: float = 256 * 1024  # bytes/s: a peer slower than this is cut off
    per_peer: int = 8  # concurrent requests of one peer
    # node-wide: the chunk bytes all requests together may hold in memory at once (a put's body, a get's chunk:
    # MAX_CHUNK reserved until its size is known). Past it a request is answered BUSY before its body is read, so
    # ten peers repairing into one small device cannot take its memory (a get's chunk goes through a thread copy)
    max_buffered_bytes: int = 32 * 1024 * 1024


class Buffered:
    """The bytes the server's requests hold, against `Limits.max_buffered_bytes` (event-loop only: no lock)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.refused = 0  # requests answered BUSY for want of room

    def take(self, n: int) -> bool:
        if self.held + n > self.limit:
            self.refused += 1
            return False
        self.held += n
        return True

    def give(self, n: int) -> None:
        self.held -= n


def reservation(request: Request) -> int:
    """What a request may hold in memory: a put its body, a get the largest chunk, a has its digests (twice)."""
    match request.op:
        case Op.PUT:
            return request.length
        case Op.GET:
            return MAX_CHUNK
        case Op.HAS:
            return 2 * request.length
        case _:
            return 0


GATEWAY = "s3"  # the storage gateways' overlay identities are "s3@<coordinator id>" (node ids cannot hold "@")


def is_gateway(peer: str) -> bool:
    """A storage gateway's overlay identity: the only peers a storage node serves (they place, read, repair and
    collect chunks; devices never talk to each other's chunk stores)."""
    name, at, rest = peer.partition("@")
    return bool(at) and name == GATEWAY and bool(rest)


class ChunkServer:
    """Serves one node's store to its peers; `handle` is the overlay service handler. `allowed(peer)` decides who
    may use it at all (a refused peer gets REFUSED naming why, before anything is read)."""

    def __init__(self, store: ChunkStore, limits: Limits, *, allowed: Callable[[str], bool] | None = None) -> None:
        self.store = store
        self.limits = limits
        self.allowed = allowed
        self.active: dict[str, int] = {}
        self.rejected = 0  # requests that broke the protocol (each logged)
        self.buffered = Buffered(limits.max_buffered_bytes)

    async def handle(self, node: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.allowed is not None and not self.allowed(node):
            self.rejected += 1
            log.info("chunks: refused %s: not a storage gateway", node)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.limits.header_timeout_s):
                    await self._answer(writer, Response(Status.REFUSED, f"{node} may not use this node's chunks: only "
                                                        f"the cluster's storage gateways ({GATEWAY}@...) may"))
            return
        if self.active.get(node, 0) >= self.limits.per_peer:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.limits.header_timeout_s):
                    await self._answer(writer, Response(Status.BUSY, f"{self.limits.per_peer} requests in progress"))
            return
        self.active[node] = self.active.get(node, 0) + 1
        try:
            await self._serve(node, reader, writer)
        except TimeoutError:
            self.rejected += 1
            log.info("chunks: request from %s timed out; stream closed", node)
        finally:
            self.active[node] -= 1
            if not self.active[node]:
                del self.active[node]

    async def _serve(self, node: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        limits = self.limits
        async with asyncio.timeout(limits.header_timeout_s):
            size = header_length(await reader.readexactly(2))
            request = size if isinstance(size, Rejected) else parse_request(await reader.readexactly(size))
            if isinstance(request, Rejected):
                self.rejected += 1
                log.info("chunks: rejected a request from %s: %s", node, request)
                await self._answer(writer, Response(Status.REFUSED, str(request)))
                return
            held = reservation(request)
            if not self.buffered.take(held):
                why = (f"node-wide chunk buffer full: {self.buffered.held} of {self.buffered.limit} bytes held by "
                       f"requests in progress, this one needs {held}; try later or another node")
                log.info("chunks: %s of %s from %s answered busy: %s", request.op, request.chunk_id[:12] or "-",
                         node, why)
                await self._answer(writer, Response(Status.BUSY, why))
                return
        try:
            # the answer's deadline counts what moves either way: a get's chunk goes out in it
            moving = request.length + (MAX_CHUNK if request.op is Op.GET else 0)
            async with asyncio.timeout(deadline_s(moving, base_s=limits.base_timeout_s, min_rate=limits.min_rate)):
                body = await read_body(reader, request.length)
                response, payload = await self._dispatch(node, request, body)
                del body
                await self._answer(writer, response, payload)
        finally:
            self.buffered.give(held)

    async def _dispatch(self, node: str, request: Request, body: bytes) -> tuple[Response, bytes]:
        store, cid = self.store, request.chunk_id
        try:
            match request.op:
                case Op.PUT:
                    refusal = await asyncio.to_thread(store.put, cid, body)
                    return (Response(Status.OK) if refusal is None else Response(Status.REFUSED, refusal)), b""
                case Op.GET:
                    data = await asyncio.to_thread(store.get, cid)
                    if data is None:
                        return Response(Status.MISSING), b""
                    return Response(Status.OK, length=len(data)), data
                case Op.DELETE:
                    await asyncio.to_thread(store.delete, cid)
                    return Response(Status.OK), b""
                case Op.HAS:
                    asked = chunk_ids_of(body)
                    held = await asyncio.to_thread(store.has, asked)
                    out = digests([c for c in asked if c in held])
                    return Response(Status.OK, length=len(out)), out
        except CopyCorrupt as exc:
            log.warning("chunks: %s", exc)
            return Response(Status.CORRUPT, str(exc)), b""
        except Exception as exc:  # the store's I/O failure is this request's answer, never the server's end
            log.warning("chunks: %s of %s for %s failed: %r", request.op, cid[:12], node, exc)
            return Response(Status.ERROR, f"{type(exc).__name__}: {exc}"), b""

    @staticmethod
    async def _answer(writer: asyncio.StreamWriter, response: Response, payload: bytes = b"") -> None:
        writer.write(encode_response(response) + payload)
        await writer.drain()
        writer.write_eof()


def chunk_service(store: ChunkStore, limits: Limits | None = None, *,
                  allowed: Callable[[str], bool] | None = None) -> ServiceHandler:
    """The handler to register: `overlay.serve(SERVICE, chunk_service(store))` (or `serve_chunks`)."""
    return ChunkServer(store, limits or Limits(), allowed=allowed).handle


def serve_chunks(overlay: Overlay, store: ChunkStore, limits: Limits | None = None, *,
                 allowed: Callable[[str], bool] | None = None) -> None:
    overlay.serve(SERVICE, chunk_service(store, limits, allowed=allowed))


# ---- the client ------------------------------------------------------------------------------------------------

class StreamOpener(Protocol):
    """What the client needs of dataplane.overlay.Overlay."""

    async def open_stream(self, node_id: str, service: str, *, timeout_s: float = 10.0,
                          early: bytes = b"") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]: ...


class OverlayChunkClient:
    """The `ChunkClient` port over overlay streams. Every call ends within `timeout_s` plus the transfer time at
    `min_rate`, raising a ChunkUnavailable subclass: ChunkNotFound, ChunkRefused, ChunkUnreachable, ChunkMismatch."""

    def __init__(self, overlay: StreamOpener, *, timeout_s: float = 10.0, min_rate: float = 256 * 1024) -> None:
        self.overlay = overlay
        self.timeout_s = timeout_s
        self.min_rate = min_rate

    async def put(self, node: str, chunk_id: str, data: bytes) -> None:
        self._check_id(node, chunk_id)
        if len(data) > MAX_CHUNK:
            raise ChunkRefused(node, chunk_id, f"{len(data)} bytes exceeds the {MAX_CHUNK}-byte chunk cap")
        if hashlib.sha256(data).hexdigest() != chunk_id:
            raise ChunkRefused(node, chunk_id, "the bytes do not hash to the chunk id")
        await self._call(node, Request(Op.PUT, chunk_id, len(data)), data, cap=0)

    async def get(self, node: str, chunk_id: str) -> bytes:
        self._check_id(node, chunk_id)
        data = await self._call(node, Request(Op.GET, chunk_id), b"", cap=MAX_CHUNK)
        if hashlib.sha256(data).hexdigest() != chunk_id:
            raise ChunkMismatch(node, chunk_id, f"the {len(data)} bytes received do not hash to the id")
        return data

    async def delete(self, node: str, chunk_id: str) -> None:
        self._check_id(node, chunk_id)
        await self._call(node, Request(Op.DELETE, chunk_id), b"", cap=0)

    async def has(self, node: str, chunk_ids: Sequence[str]) -> frozenset[str]:
        asked = list(dict.fromkeys(chunk_ids))
        for cid in asked:
            self._check_id(node, cid)
        held: set[str] = set()
        for start in range(0, len(asked), MAX_HAS):
            batch = asked[start:start + MAX_HAS]
            body = digests(batch)
            answer = await self._call(node, Request(Op.HAS, "", len(body)), body, cap=len(body))
            held.update(c for c in chunk_ids_of(answer) if c in batch)  # only what was asked counts
        return frozenset(held)

    @staticmethod
    def _check_id(node: str, chunk_id: str) -> None:  # refused here: a bad id never goes out
        if not is_chunk_id(chunk_id):
            raise ChunkRefused(node, str(chunk_id)[:64], "a chunk id is 64 lowercase hex characters")

    async def _call(self, node: str, request: Request, body: bytes, *, cap: int) -> bytes:
        budget = deadline_s(len(body) + cap, base_s=self.timeout_s, min_rate=self.min_rate)
        cid = request.chunk_id or "-"
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(budget):
                reader, writer = await self.overlay.open_stream(node, SERVICE, timeout_s=budget,
                                                                early=encode_request(request) + body)
                writer.write_eof()
                size = header_length(await reader.readexactly(2))
                response = size if isinstance(size, Rejected) else parse_response(await reader.readexactly(size),
                                                                                  cap=cap)
                if isinstance(response, Rejected):
                    raise ChunkRefused(node, cid, f"a bad answer ({response})")
                payload = await read_body(reader, response.length)
        except TimeoutError:
            raise ChunkUnreachable(node, cid, f"no answer within {budget:g}s") from None
        except ServiceRefused as exc:
            raise ChunkRefused(node, cid, f"serves no chunks: {exc.reason}") from None
        except (DataPlaneError, ConnectionError, asyncio.IncompleteReadError) as exc:
            raise ChunkUnreachable(node, cid, f"{type(exc).__name__}: {exc}") from None
        finally:
            if writer is not None:
                writer.close()
        return _result(node, cid, response, payload)


def _result(node: str, cid: str, response: Response, payload: bytes) -> bytes:
    match response.status:
        case Status.OK:
            return payload
        case Status.MISSING:
            raise ChunkNotFound(node, cid, "not held there")
        case Status.CORRUPT:
            raise ChunkMismatch(node, cid, f"its copy is corrupt: {response.reason}")
        case Status.BUSY:
            raise ChunkServerBusy(node, cid, f"{response.status}: {response.reason}")
        case Status.REFUSED:
            raise ChunkRefused(node, cid, f"{response.status}: {response.reason}")
        case Status.ERROR:
            raise ChunkUnavailable(node, cid, f"its store failed: {response.reason}")

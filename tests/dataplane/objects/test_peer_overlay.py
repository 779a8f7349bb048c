"""Chunks between real overlays on loopback (a real relay, CA-issued certificates) and the agent's real disk store:
put/get/has/delete from A to B, a corrupt copy on B refused (B's own check, and A's check against a lying node),
the size cap on both sides, quota refusals, a stalled or hostile peer that holds up nobody else, and B going down
answered as ChunkUnreachable within the client's deadline. The throughput of 1 MiB chunks is printed (`-s`), not
asserted."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgpack
import pytest

from broker.wire import PathKind, PeerEntry, RelayInfo
from coordinator.pki import CertRole
from dataplane.objects.peer import (
    MAX_CHUNK,
    MAX_HAS,
    SERVICE,
    ChunkMismatch,
    ChunkNotFound,
    ChunkRefused,
    ChunkUnreachable,
    Limits,
    OverlayChunkClient,
    Rejected,
    Response,
    Status,
    chunk_service,
    header_length,
    parse_response,
)
from dataplane.objects.ports import ChunkUnavailable
from dataplane.overlay import Overlay
from dataplane.overlay_plan import RetryPolicy
from dataplane.paths import Timers
from dataplane.relay import RelayServer
from edge_agent.chunks import DiskChunkStore
from tests.dataplane.pki_builders import issue
from tests.dataplane.test_overlay_facade import until
from tests.dataplane.test_quic import CA, credential

RELAY = "relay@vps"
MIB = 1024 * 1024


def chunk(n: int, size: int = 64 * 1024) -> tuple[str, bytes]:
    data = (hashlib.sha256(str(n).encode()).digest() * (size // 32 + 1))[:size]
    return hashlib.sha256(data).hexdigest(), data


class LyingStore:
    """A node that answers every get with the wrong bytes (a hostile or broken peer) and whose disk fails deletes."""

    def put(self, chunk_id: str, data: bytes) -> str | None:
        return None

    def get(self, chunk_id: str) -> bytes | None:
        return b"not the chunk you asked for"

    def delete(self, chunk_id: str) -> bool:
        raise OSError(5, "Input/output error")  # a failing disk

    def has(self, chunk_ids: Sequence[str]) -> frozenset[str]:
        return frozenset(chunk_ids)


@dataclass
class Lab:
    relay: RelayServer
    a: Overlay
    b: Overlay
    c: Overlay
    store_b: DiskChunkStore

    async def stop(self) -> None:
        for overlay in (self.a, self.b, self.c):
            await overlay.stop()
        self.relay.close()


async def make_lab(tmp_path: Path, *, direct: bool = False, limits: Limits | None = None,
                   quota: int = 64 * MIB) -> Lab:
    relay = await RelayServer.open(credential(issue(CA, RELAY, role=CertRole.RELAY, now=time.time())),
                                   "127.0.0.1", 0, clock=time.time)
    overlays = []
    for name in ("a", "b", "c"):
        overlay = Overlay(credential(issue(CA, name, now=time.time())), clock=time.time,
                          local_addresses=lambda: ["127.0.0.1"], direct=direct,
                          retry=RetryPolicy(initial_s=0.1, max_s=0.5), tick_s=0.05, relay_udp_timeout_s=0.5,
                          connect_timeout_s=3.0, timers=Timers(probe_interval_s=0.1))
        await overlay.start("127.0.0.1", 0)
        overlays.append(overlay)
    a, b, c = overlays
    relays = (RelayInfo(relay_id=RELAY, addresses=(f"127.0.0.1:{relay.address[1]}",)),)
    a.apply(relays, (PeerEntry(node_id="b", relays=(RELAY,), dial=True),
                     PeerEntry(node_id="c", relays=(RELAY,), dial=True)), ())
    b.apply(relays, (PeerEntry(node_id="a", relays=(RELAY,)),), ())
    c.apply(relays, (PeerEntry(node_id="a", relays=(RELAY,)),), ())
    store_b = DiskChunkStore.open(tmp_path / "b" / "chunks", quota=quota)
    b.serve(SERVICE, chunk_service(store_b, limits))
    c.serve(SERVICE, chunk_service(LyingStore()))
    lab = Lab(relay, a, b, c, store_b)
    await until(lambda: a._connected("b") is not None and a._connected("c") is not None, "a connected to b and c",
                timeout=30)
    return lab


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    built = await make_lab(tmp_path)
    try:
        yield built
    finally:
        await built.stop()


async def test_put_get_has_delete_between_two_nodes(lab: Lab) -> None:
    client = OverlayChunkClient(lab.a)
    cid, data = chunk(1, MIB)
    other, _ = chunk(2)
    await client.put("b", cid, data)
    assert lab.store_b.path(cid).read_bytes() == data  # on B's disk
    assert await client.get("b", cid) == data
    assert await client.has("b", [cid, other, cid]) == {cid}
    with pytest.raises(ChunkNotFound):
        await client.get("b", other)
    await client.delete("b", cid)
    assert await client.has("b", [cid]) == frozenset()
    assert lab.store_b.used_bytes == 0
    await client.delete("b", cid)  # idempotent


async def test_has_splits_long_lists(lab: Lab) -> None:
    client = OverlayChunkClient(lab.a)
    held = [chunk(i, 1024) for i in range(3)]
    for cid, data in held:
        await client.put("b", cid, data)
    asked = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(MAX_HAS + 10)] + [c for c, _ in held]
    assert await client.has("b", asked) == {c for c, _ in held}


async def test_a_corrupt_copy_is_never_returned(lab: Lab) -> None:
    client = OverlayChunkClient(lab.a)
    cid, data = chunk(3)
    await client.put("b", cid, data)
    raw = bytearray(lab.store_b.path(cid).read_bytes())
    raw[10] ^= 0xFF
    lab.store_b.path(cid).write_bytes(bytes(raw))
    with pytest.raises(ChunkMismatch, match="corrupt"):  # B's own check: the copy dropped, not served
        await client.get("b", cid)
    assert await client.has("b", [cid]) == frozenset()
    with pytest.raises(ChunkMismatch, match="do not hash"):  # A's check: C sends wrong bytes
        await client.get("c", cid)
    await client.put("b", cid, data)  # repair brings a good copy back
    assert await client.get("b", cid) == data


async def test_a_store_failure_is_the_requests_answer_and_the_server_goes_on(lab: Lab) -> None:
    client = OverlayChunkClient(lab.a)
    cid, _ = chunk(3)
    with pytest.raises(ChunkUnavailable, match="store failed: OSError") as caught:
        await client.delete("c", cid)
    assert type(caught.value) is ChunkUnavailable
    assert await client.has("c", [cid]) == {cid}


async def test_oversized_and_bad_chunks_are_refused_on_both_sides(lab: Lab) -> None:
    client = OverlayChunkClient(lab.a)
    big = b"\x00" * (MAX_CHUNK + 1)
    big_id = hashlib.sha256(big).hexdigest()
    with pytest.raises(ChunkRefused, match="exceeds"):
        await client.put("b", big_id, big)
    with pytest.raises(ChunkRefused, match="hash"):
        await client.put("b", chunk(1)[0], chunk(2)[1])
    with pytest.raises(ChunkRefused, match="64 lowercase hex"):
        await client.get("b", "../etc/passwd")
    # a peer that skips the client's checks: B refuses the header before reading any body
    answer = await raw_request(lab, frame({"op": "put", "id": big_id, "len": MAX_CHUNK + 1}))
    assert answer.status is Status.REFUSED and "len" in answer.reason
    answer = await raw_request(lab, (2000).to_bytes(2, "big") + b"x" * 2000)
    assert answer.status is Status.REFUSED and "header" in answer.reason
    cid, data = chunk(4)
    answer = await raw_request(lab, frame({"op": "put", "id": cid, "len": len(data)}) + b"y" * len(data))
    assert answer.status is Status.REFUSED and "do not hash" in answer.reason
    assert lab.store_b.chunk_count == 0


def frame(doc: dict[str, object]) -> bytes:
    raw: bytes = msgpack.packb(doc, use_bin_type=True)
    return len(raw).to_bytes(2, "big") + raw


async def raw_request(lab: Lab, data: bytes) -> Response:
    reader, writer = await lab.a.open_stream("b", SERVICE)
    writer.write(data)
    async with asyncio.timeout(10):
        size = header_length(await reader.readexactly(2))
        assert isinstance(size, int)
        response = parse_response(await reader.readexactly(size), cap=MAX_CHUNK)
    writer.close()
    assert not isinstance(response, Rejected)
    return response


async def test_quota_full_is_a_refusal_with_the_reason(tmp_path: Path) -> None:
    lab = await make_lab(tmp_path, quota=100 * 1024)
    try:
        client = OverlayChunkClient(lab.a)
        await client.put("b", *chunk(1))
        with pytest.raises(ChunkRefused, match="quota full"):
            await client.put("b", *chunk(2))
    finally:
        await lab.stop()


async def test_a_stalled_peer_holds_up_nobody_and_is_cut_off(tmp_path: Path) -> None:
    lab = await make_lab(tmp_path, limits=Limits(header_timeout_s=1.0, per_peer=3))
    try:
        client = OverlayChunkClient(lab.a)
        stalled = []
        for _ in range(2):  # half a header, then nothing
            reader, writer = await lab.a.open_stream("b", SERVICE)
            writer.write(b"\x00")
            stalled.append(reader)
        cid, data = chunk(5)
        await client.put("b", cid, data)  # the third slot: served while the two stall
        assert await client.get("b", cid) == data
        for reader in stalled:  # cut off at the header deadline: the stream ends
            async with asyncio.timeout(30):
                assert await reader.read() == b""
        await client.put("b", *chunk(6))  # the slots are free again
        assert lab.store_b.chunk_count == 2
    finally:
        await lab.stop()


async def test_past_the_per_peer_limit_a_peer_is_answered_busy(tmp_path: Path) -> None:
    lab = await make_lab(tmp_path, limits=Limits(header_timeout_s=30.0, per_peer=2))
    try:
        client = OverlayChunkClient(lab.a)
        writers = []
        for _ in range(2):
            _reader, writer = await lab.a.open_stream("b", SERVICE)
            writer.write(b"\x00")
            writers.append(writer)
        with pytest.raises(ChunkRefused, match="busy"):
            await client.put("b", *chunk(7))
        for writer in writers:  # the stalled requests end: the next one is served
            writer.close()
        await until_served(client, "b", *chunk(7))
    finally:
        await lab.stop()


async def until_served(client: OverlayChunkClient, node: str, cid: str, data: bytes) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            await client.put(node, cid, data)
            return
        except ChunkRefused:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_a_node_that_is_down_is_unreachable_within_the_deadline(lab: Lab) -> None:
    client = OverlayChunkClient(lab.a, timeout_s=3.0)
    cid, data = chunk(8)
    await client.put("b", cid, data)
    await lab.b.stop()
    async with asyncio.timeout(60):  # the client's own deadline ends it long before this
        with pytest.raises(ChunkUnreachable):
            await client.get("b", cid)
        with pytest.raises(ChunkUnavailable):
            await client.put("b", *chunk(9))
    assert await client.has("c", [cid]) == {cid}  # the other peer is unaffected


@pytest.mark.parametrize("direct", [False, True], ids=["relayed", "direct"])
async def test_throughput_of_1mib_chunks(tmp_path: Path, direct: bool) -> None:
    """Prints MiB/s for puts then gets of 1 MiB chunks A -> B on loopback (`pytest -s`); asserts only the bytes."""
    lab = await make_lab(tmp_path, direct=direct, quota=256 * MIB)
    try:
        if direct:
            await until(lambda: lab.a._path_of("b")[0] is PathKind.LAN, "a direct path to b", timeout=30)
        client = OverlayChunkClient(lab.a)
        chunks = [chunk(100 + i, MIB) for i in range(32)]
        started = time.perf_counter()
        for cid, data in chunks:
            await client.put("b", cid, data)
        put_s = time.perf_counter() - started
        started = time.perf_counter()
        for cid, data in chunks:
            assert await client.get("b", cid) == data
        get_s = time.perf_counter() - started
        print(f"\nchunks over the overlay ({'direct' if direct else 'relayed'}, loopback, 32 x 1 MiB, sequential): "
              f"put {len(chunks) / put_s:.1f} MiB/s, get {len(chunks) / get_s:.1f} MiB/s")
        assert lab.store_b.chunk_count == len(chunks)
    finally:
        await lab.stop()

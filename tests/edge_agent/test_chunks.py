"""The agent's chunk store on real files (tmp_path): content-addressed layout, refusals as values, quota counting
writes in progress, verify-on-read and scrub finding a flipped byte (and removing the copy), a crash's temp file
invisible and removed by the rescan, used bytes rebuilt at start."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from dataplane.objects.peer import CopyCorrupt
from edge_agent.chunks import ChunkCorrupt, DiskChunkStore, admit, put_problem

KIB = 1024


def chunk(n: int, size: int = 4 * KIB) -> tuple[str, bytes]:
    data = hashlib.sha256(str(n).encode()).digest() * (size // 32)
    return hashlib.sha256(data).hexdigest(), data


def flip(path: Path, offset: int = 100) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


@pytest.fixture
def store(tmp_path: Path) -> DiskChunkStore:
    return DiskChunkStore.open(tmp_path / "chunks", quota=64 * KIB)


def test_put_get_has_delete_on_disk(store: DiskChunkStore) -> None:
    cid, data = chunk(1)
    assert store.put(cid, data) is None
    on_disk = store.root / cid[:2] / cid
    assert on_disk.read_bytes() == data
    assert store.get(cid) == data
    assert store.has([cid, chunk(2)[0], "nonsense"]) == {cid}
    assert (store.used_bytes, store.chunk_count) == (len(data), 1)
    assert store.put(cid, data) is None  # idempotent: counted once
    assert store.used_bytes == len(data)
    assert store.delete(cid) is True
    assert store.delete(cid) is False
    assert not on_disk.exists()
    assert store.get(cid) is None
    assert (store.used_bytes, store.chunk_count) == (0, 0)


@pytest.mark.parametrize(("chunk_id", "data", "field"), [
    ("A" * 64, b"x", "chunk id"),
    ("../" + "a" * 61, b"x", "chunk id"),
    ("a" * 63, b"x", "chunk id"),
    (hashlib.sha256(b"y").hexdigest(), b"x", "chunk data"),
    (hashlib.sha256(b"z" * (8 * KIB + 1)).hexdigest(), b"z" * (8 * KIB + 1), "chunk size"),
], ids=["uppercase", "traversal", "short", "wrong-bytes", "too-big"])
def test_put_refuses_bad_chunks_naming_the_field(tmp_path: Path, chunk_id: str, data: bytes, field: str) -> None:
    store = DiskChunkStore.open(tmp_path, quota=1024 * KIB, max_chunk=8 * KIB)
    refusal = store.put(chunk_id, data)
    assert refusal is not None and refusal.startswith(field)
    assert store.used_bytes == 0
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_quota_refuses_with_the_numbers_and_frees_on_delete(tmp_path: Path) -> None:
    store = DiskChunkStore.open(tmp_path, quota=10 * KIB)
    a, b, c = chunk(1), chunk(2), chunk(3)
    assert store.put(*a) is None
    assert store.put(*b) is None
    refusal = store.put(*c)
    assert refusal is not None and "quota full" in refusal and "10240" in refusal
    assert store.has([c[0]]) == frozenset()
    store.delete(a[0])
    assert store.put(*c) is None
    assert store.used_bytes == 8 * KIB


def test_admit_counts_writes_in_progress() -> None:
    assert admit(4, used=4, pending=0, quota=8) is None
    assert admit(4, used=4, pending=1, quota=8) is not None
    assert put_problem(chunk(1)[0], chunk(1)[1], 8 * KIB) is None


def test_concurrent_puts_never_pass_the_quota(tmp_path: Path) -> None:
    store = DiskChunkStore.open(tmp_path, quota=40 * KIB)
    chunks = [chunk(i) for i in range(30)]
    results: list[str | None] = [None] * len(chunks)

    def put(i: int) -> None:
        results[i] = store.put(*chunks[i])

    threads = [threading.Thread(target=put, args=(i,)) for i in range(len(chunks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stored = sum(r is None for r in results)
    assert stored == 10
    assert store.used_bytes == 40 * KIB == sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file())


def test_get_detects_a_flipped_byte_and_removes_the_copy(store: DiskChunkStore) -> None:
    cid, data = chunk(1)
    store.put(cid, data)
    flip(store.path(cid))
    with pytest.raises(ChunkCorrupt) as caught:
        store.get(cid)
    assert isinstance(caught.value, CopyCorrupt)  # what the chunk server answers as CORRUPT
    assert not store.path(cid).exists()
    assert (store.used_bytes, store.chunk_count) == (0, 0)
    assert store.get(cid) is None
    assert store.put(cid, data) is None  # a good copy can come back (repair)
    assert store.get(cid) == data


def test_a_put_over_a_corrupt_copy_replaces_it(store: DiskChunkStore) -> None:
    cid, data = chunk(1)
    store.put(cid, data)
    flip(store.path(cid))
    assert store.put(cid, data) is None  # a repair's put is not acknowledged over the bad copy
    assert store.path(cid).read_bytes() == data
    assert (store.used_bytes, store.chunk_count) == (len(data), 1)


def test_scrub_finds_corrupt_chunks_in_bounded_resumable_slices(tmp_path: Path) -> None:
    store = DiskChunkStore.open(tmp_path, quota=1024 * KIB)
    chunks = sorted(chunk(i) for i in range(10))
    for cid, data in chunks:
        store.put(cid, data)
    bad = {chunks[2][0], chunks[7][0]}
    for cid in bad:
        flip(store.path(cid), offset=7)
    steps = []
    position = ""
    while True:
        step = store.scrub(position, max_chunks=3)
        steps.append(step)
        position = step.position
        if step.wrapped:
            break
    assert [s.checked for s in steps] == [3, 3, 3, 1]
    assert {c for s in steps for c in s.corrupt} == bad
    assert steps[0].position == chunks[2][0]  # resumes after the last id checked
    assert store.has([c for c, _ in chunks]) == {c for c, _ in chunks} - bad
    assert store.chunk_count == 8
    clean = store.scrub(max_chunks=100)
    assert (clean.checked, clean.corrupt, clean.wrapped) == (8, (), True)


def test_scrub_slice_is_bounded_by_bytes(tmp_path: Path) -> None:
    store = DiskChunkStore.open(tmp_path, quota=1024 * KIB)
    for i in range(6):
        store.put(*chunk(i))
    step = store.scrub(max_chunks=100, max_bytes=10 * KIB)
    assert (step.checked, step.bytes_read, step.wrapped) == (3, 12 * KIB, False)


def test_a_crash_mid_write_leaves_no_visible_chunk_and_the_rescan_cleans_up(tmp_path: Path) -> None:
    root = tmp_path / "chunks"
    store = DiskChunkStore.open(root, quota=1024 * KIB)
    kept, lost = chunk(1), chunk(2)
    store.put(*kept)
    # what a crash between the temp file's write and its rename leaves behind: a partial temp file
    temp = root / lost[0][:2] / f".{lost[0]}.dead{'.tmp'}"
    temp.parent.mkdir(exist_ok=True)
    temp.write_bytes(lost[1][:1000])
    assert store.has([lost[0]]) == frozenset()
    assert store.get(lost[0]) is None
    stray = root / "notes.txt"  # not ours: left alone
    stray.write_text("keep me")
    again = DiskChunkStore.open(root, quota=1024 * KIB)
    assert not temp.exists()
    assert stray.exists()
    assert (again.used_bytes, again.chunk_count) == (len(kept[1]), 1)
    assert again.get(kept[0]) == kept[1]
    assert again.rescan().temps_removed == 0


def test_a_finished_write_is_not_counted_twice_against_the_quota(tmp_path: Path) -> None:
    """A put that is syncing its directory already counts as used: its reservation must be gone by then (CI found 9
    of 10 puts stored: the quota saw that chunk twice, as used and as still pending)."""
    store = DiskChunkStore.open(tmp_path, quota=8 * KIB)
    first, second = chunk(1), chunk(2)
    syncing, go_on = threading.Event(), threading.Event()
    real_sync = store._sync_dir

    def slow_sync(directory: Path) -> None:
        syncing.set()
        go_on.wait(10)
        real_sync(directory)

    store._sync_dir = slow_sync  # type: ignore[method-assign]
    results: list[str | None] = []
    writer = threading.Thread(target=lambda: results.append(store.put(*first)))
    writer.start()
    assert syncing.wait(10)
    store._sync_dir = real_sync  # type: ignore[method-assign]
    try:
        assert store.put(*second) is None  # 4 KiB used + 4 KiB: exactly the quota
    finally:
        go_on.set()
        writer.join()
    assert results == [None] and store.used_bytes == 8 * KIB

"""The disk store when a copy goes bad under it (review 3, L4 and M8): a copy a reader found corrupt is removed only
if it is still the file read (a put that replaced it meanwhile with a good copy keeps it), and an unreadable copy
(EIO on a bad sector) counts as corrupt in scrub and get, so the scrub moves past it."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from edge_agent.chunks import ChunkCorrupt, DiskChunkStore


def chunk(n: int, size: int = 4096) -> tuple[str, bytes]:
    data = (hashlib.sha256(str(n).encode()).digest() * (size // 32 + 1))[:size]
    return hashlib.sha256(data).hexdigest(), data


def rot(store: DiskChunkStore, chunk_id: str) -> None:
    path = store.path(chunk_id)
    data = bytearray(path.read_bytes())
    data[5] ^= 0xFF
    path.write_bytes(bytes(data))


def replace_with_good(store: DiskChunkStore, chunk_id: str, data: bytes) -> None:
    """What a concurrent repair put does in the end: a new file renamed over the old one."""
    tmp = store.path(chunk_id).with_name("." + chunk_id + ".race.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, store.path(chunk_id))


class ReplacedAfterRead(DiskChunkStore):
    """Fault injection: right after reading `victim`, a put replaces it with a good copy."""

    victim = ""
    good = b""

    def _read(self, chunk_id: str) -> tuple[bytes, tuple[int, int]]:
        out = super()._read(chunk_id)
        if chunk_id == self.victim:
            self.victim = ""
            replace_with_good(self, chunk_id, self.good)
        return out


@pytest.mark.parametrize("reader", ["scrub", "get"])
def test_a_good_copy_put_in_between_is_not_deleted(tmp_path: Path, reader: str) -> None:
    store = ReplacedAfterRead.open(tmp_path / "chunks", quota=1 << 20, sync=False)
    cid, data = chunk(1)
    assert store.put(cid, data) is None
    rot(store, cid)
    store.victim, store.good = cid, data
    if reader == "scrub":
        step = store.scrub()
        assert step.corrupt == () and step.checked == 1
    else:
        assert store.get(cid) == data  # the new copy, read again
    assert store.path(cid).read_bytes() == data
    assert (store.chunk_count, store.used_bytes) == (1, len(data))


class Unreadable(DiskChunkStore):
    """Fault injection: reading `bad` fails with EIO, as a bad sector does."""

    bad = ""

    def _read(self, chunk_id: str) -> tuple[bytes, tuple[int, int]]:
        if chunk_id == self.bad:
            raise OSError(errno.EIO, "Input/output error")
        return super()._read(chunk_id)


def test_an_unreadable_copy_is_corrupt_and_the_scrub_moves_past_it(tmp_path: Path) -> None:
    store = Unreadable.open(tmp_path / "chunks", quota=1 << 20, sync=False)
    chunks = dict(chunk(i) for i in range(3))
    for cid, data in chunks.items():
        store.put(cid, data)
    ids = sorted(chunks)
    store.bad = ids[1]
    step = store.scrub(max_chunks=10)
    assert step.corrupt == (ids[1],) and step.wrapped and step.checked == 3
    assert not store.path(ids[1]).exists() and store.chunk_count == 2
    store.bad = ids[0]
    with pytest.raises(ChunkCorrupt):
        store.get(ids[0])
    assert store.has(ids) == frozenset({ids[2]})

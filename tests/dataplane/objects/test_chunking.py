"""Chunking: fixed-size content-addressed pieces cut incrementally, and the slices a byte range covers."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataplane.objects.chunking import Chunker, ChunkRef, Slice, chunk_id, covering, is_chunk_id


@given(st.lists(st.binary(max_size=40), max_size=20), st.integers(1, 16))
def test_cutting_in_any_pieces_gives_the_same_chunks(pieces: list[bytes], size: int) -> None:
    chunker = Chunker(size)
    out = [c for p in pieces for c in chunker.feed(p)]
    last = chunker.finish()
    if last is not None:
        out.append(last)
    data = b"".join(pieces)
    assert out == [data[i:i + size] for i in range(0, len(data), size)]


def test_the_id_is_the_sha256_of_the_bytes() -> None:
    assert chunk_id(b"abc") == hashlib.sha256(b"abc").hexdigest()
    assert is_chunk_id(chunk_id(b"abc")) and not is_chunk_id("ABC") and not is_chunk_id(chunk_id(b"")[:-1] + "G")


def test_a_bad_chunk_size_is_refused() -> None:
    with pytest.raises(ValueError, match="chunk size"):
        Chunker(0)


REFS = (ChunkRef("a", 4), ChunkRef("b", 4), ChunkRef("c", 2))


@pytest.mark.parametrize(("start", "end", "slices"), [
    (0, 9, [Slice(0, 0, 3), Slice(1, 0, 3), Slice(2, 0, 1)]),
    (3, 4, [Slice(0, 3, 3), Slice(1, 0, 0)]),
    (4, 7, [Slice(1, 0, 3)]),
    (9, 9, [Slice(2, 1, 1)]),
    (5, 4, []),
], ids=["whole", "straddle", "one-chunk", "last-byte", "empty"])
def test_covering(start: int, end: int, slices: list[Slice]) -> None:
    assert covering(REFS, start, end) == slices


@given(st.lists(st.integers(0, 5), max_size=6), st.data())
def test_covering_reassembles_any_range(sizes: list[int], data: st.DataObject) -> None:
    blobs = [bytes([i]) * s for i, s in enumerate(sizes)]
    whole = b"".join(blobs)
    if not whole:
        return
    start = data.draw(st.integers(0, len(whole) - 1))
    end = data.draw(st.integers(start, len(whole) - 1))
    refs = [ChunkRef(str(i), s) for i, s in enumerate(sizes)]
    got = b"".join(blobs[s.index][s.start:s.end + 1] for s in covering(refs, start, end))
    assert got == whole[start:end + 1]

"""Cutting object data into content-addressed chunks, and finding the chunks a byte range covers.

Chunks are fixed-size (1 MiB, the last one shorter), named by the SHA-256 hex of their bytes: the same bytes in two
objects are one chunk (dedup), and a reader verifies what it got against the name. The S3 ETag (MD5) is the S3
layer's business, not the chunk's. Pure: no I/O."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

CHUNK_SIZE = 1024 * 1024
COMPRESSIONS = ("zstd",)  # the chunk codecs a ChunkRef may name (dataplane/objects/compression.py does the work)


def chunk_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_chunk_id(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """One chunk of an object, in order: its id and its size in bytes as stored (what the id hashes). `codec`: None
    when the stored bytes are the object's bytes; "zstd" when they are the compressed form of `plain` bytes of the
    object (dataplane/objects/compression.py). `length` is what the chunk holds of the object either way."""

    id: str
    size: int
    codec: str | None = None
    plain: int = 0  # the plaintext size of a compressed chunk (0 and unused for a raw one)

    @property
    def length(self) -> int:
        return self.size if self.codec is None else self.plain


class Chunker:
    """Incremental cutter: `feed` bytes as they arrive, get back the chunks completed so far; `finish` returns the
    last, shorter chunk (none for an empty remainder). Holds at most one chunk of data."""

    def __init__(self, size: int = CHUNK_SIZE) -> None:
        if size <= 0:
            raise ValueError(f"chunk size must be positive, got {size}")
        self._size = size
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        done: list[bytes] = []
        while len(self._buffer) >= self._size:
            done.append(bytes(self._buffer[:self._size]))
            del self._buffer[:self._size]
        return done

    def finish(self) -> bytes | None:
        rest, self._buffer = bytes(self._buffer), bytearray()
        return rest or None


@dataclass(frozen=True, slots=True)
class Slice:
    """Bytes `start..end` (inclusive) of chunk number `index`."""

    index: int
    start: int
    end: int


def covering(chunks: Sequence[ChunkRef], start: int, end: int) -> list[Slice]:
    """The chunk slices that hold object bytes start..end inclusive, in order (empty when the range is empty).
    Offsets are the object's (plaintext): each chunk covers `ref.length` of them, compressed or not."""
    slices: list[Slice] = []
    if end < start:
        return slices
    offset = 0
    for index, ref in enumerate(chunks):
        first, last = offset, offset + ref.length - 1
        offset += ref.length
        if ref.length == 0 or last < start:
            continue
        if first > end:
            break
        slices.append(Slice(index, max(start, first) - first, min(end, last) - first))
    return slices

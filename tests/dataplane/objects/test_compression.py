"""The compression core: raw vs compressed per chunk (the 1/8 rule), deterministic output (dedup), a strict bounded
decode (a frame that lies about its size, is truncated, carries trailing bytes or is not zstd is Corrupt, never an
exception or wrong bytes), plaintext offsets through refs of both kinds, the manifest codec's two chunk forms."""

from __future__ import annotations

import asyncio
import os
import random

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.objects_codec import bucket_doc, bucket_from, manifest_doc, manifest_from
from coordinator.store import StoreError
from dataplane.objects.chunking import ChunkRef, Slice, chunk_id, covering
from dataplane.objects.compression import (
    ZSTD,
    Corrupt,
    Tally,
    compression_problem,
    decode,
    encode,
    worth_it,
)
from dataplane.objects.model import BucketRecord, Manifest
from dataplane.s3.backend import ObjectInfo
from dataplane.s3.errors import S3Error
from tests.dataplane.objects.cluster import Cluster


def text(size: int, seed: int = 1) -> bytes:
    rnd = random.Random(seed)
    words = ["".join(rnd.choice("abcdefghij") for _ in range(rnd.randint(2, 8))) for _ in range(300)]
    out = " ".join(rnd.choice(words) for _ in range(size // 3)).encode()
    return out[:size]


@pytest.mark.parametrize(("plain", "compressed", "kept"), [
    (800, 700, True),  # exactly 1/8 saved
    (800, 701, False),
    (800, 100, True),
    (7, 7, False),  # saves nothing
    (7, 6, True),  # 1/8 of 7 rounds to 0: any saving counts
    (1, 1, False),
], ids=["eighth", "just-short", "much", "none", "tiny", "one-byte"])
def test_compressed_is_kept_only_when_it_saves_an_eighth(plain: int, compressed: int, kept: bool) -> None:
    assert worth_it(plain, compressed) is kept


def test_compressible_chunk_is_stored_compressed_and_decodes_back() -> None:
    data = text(1 << 20)
    encoded = encode(data, ZSTD)
    assert encoded.codec == ZSTD and encoded.plain == len(data) and len(encoded.data) < len(data) // 2
    ref = encoded.ref(chunk_id(encoded.data))
    assert ref == ChunkRef(chunk_id(encoded.data), len(encoded.data), ZSTD, len(data)) and ref.length == len(data)
    assert decode(encoded.data, ref) == data


def test_incompressible_chunk_is_stored_raw() -> None:
    data = os.urandom(1 << 20)
    encoded = encode(data, ZSTD)
    assert encoded.codec is None and encoded.data == data
    ref = encoded.ref(chunk_id(data))
    assert ref == ChunkRef(chunk_id(data), len(data)) and ref.codec is None and decode(data, ref) == data


def test_no_compression_stores_the_bytes_as_they_are() -> None:
    data = text(5000)
    assert encode(data, None).data == data and encode(data, None).codec is None


def test_output_is_deterministic_so_identical_chunks_dedup() -> None:
    data = text(300_000, seed=7)
    assert encode(data, ZSTD).data == encode(bytes(data), ZSTD).data


@given(st.binary(max_size=5000), st.integers(0, 4))
def test_any_bytes_round_trip(data: bytes, repeat: int) -> None:
    data = data * (repeat + 1)  # repeats make some inputs compressible
    encoded = encode(data, ZSTD)
    assert decode(encoded.data, encoded.ref(chunk_id(encoded.data))) == data


def _lying_frame() -> tuple[bytes, int]:
    """A frame whose header declares 2,304 bytes but which holds 2,512 (the header's 2-byte content size patched)."""
    data = bytes(range(256)) * 2 + b"a" * 2000
    frame = bytearray(zstandard.ZstdCompressor(level=3, write_checksum=False).compress(data))
    assert frame[4] == 0x60 and int.from_bytes(frame[5:7], "little") + 256 == len(data)  # single segment, 2-byte FCS
    frame[5:7] = (2304 - 256).to_bytes(2, "little")
    return bytes(frame), 2304


def test_decode_is_strict_and_bounded() -> None:
    data = text(100_000)
    good = encode(data, ZSTD)
    frame = good.data
    ref = good.ref(chunk_id(frame))
    lying, declared = _lying_frame()
    cases = {
        "plain size differs from the frame's": (frame, ChunkRef(ref.id, ref.size, ZSTD, len(data) - 1)),
        "truncated": (frame[:-5], ref),
        "trailing bytes": (frame + b"xyz", ref),
        "two frames": (frame + frame, ref),
        "not zstd": (b"\x00" * 64, ref),
        "frame lies about its size": (lying, ChunkRef(chunk_id(lying), len(lying), ZSTD, declared)),
        "unknown codec": (frame, ChunkRef(ref.id, ref.size, "lz4", len(data))),
        "absurd plain size": (frame, ChunkRef(ref.id, ref.size, ZSTD, 1 << 40)),
    }
    for name, (stored, bad_ref) in cases.items():
        assert isinstance(decode(stored, bad_ref), Corrupt), name


def test_a_frame_without_its_content_size_is_corrupt() -> None:
    data = text(10_000)
    frame = zstandard.ZstdCompressor(level=3, write_content_size=False).compress(data)
    assert isinstance(decode(frame, ChunkRef(chunk_id(frame), len(frame), ZSTD, len(data))), Corrupt)


def test_offsets_map_through_plaintext_lengths() -> None:
    refs = (ChunkRef("a", 3, ZSTD, 10), ChunkRef("b", 10), ChunkRef("c", 2, ZSTD, 5))
    assert covering(refs, 0, 24) == [Slice(0, 0, 9), Slice(1, 0, 9), Slice(2, 0, 4)]
    assert covering(refs, 9, 20) == [Slice(0, 9, 9), Slice(1, 0, 9), Slice(2, 0, 0)]
    assert covering(refs, 21, 24) == [Slice(2, 1, 4)]


@pytest.mark.parametrize(("name", "problem"), [
    (None, None), ("zstd", None), ("lz4", "compression 'lz4' is not offered"), ("", "compression '' is not offered")])
def test_compression_names(name: str | None, problem: str | None) -> None:
    found = compression_problem(name)
    assert found == problem if problem is None else found is not None and found.startswith(problem)


def test_tally_counts_what_compression_saved() -> None:
    tally = Tally()
    tally.add(encode(text(50_000), ZSTD))
    tally.add(encode(os.urandom(1000), ZSTD))
    stats = tally.stats()
    assert stats["writtenBytes"] == 51_000 and stats["chunksCompressed"] == 1 and stats["chunksRaw"] == 1
    assert 0 < stats["storedBytes"] < 30_000 and stats["savedBytes"] == 51_000 - stats["storedBytes"]


# ---- the coordinator's documents ----------------------------------------------------------------------------------

def _manifest(chunks: tuple[ChunkRef, ...]) -> Manifest:
    return Manifest(ObjectInfo("k", sum(c.length for c in chunks), "e", 1.0), chunks, 2)


def test_manifest_documents_keep_both_chunk_forms_and_read_old_ones() -> None:
    raw, packed = ChunkRef(chunk_id(b"a"), 5), ChunkRef(chunk_id(b"b"), 3, ZSTD, 10)
    manifest = _manifest((raw, packed))
    doc = manifest_doc(manifest)
    assert manifest_from("/m", doc) == manifest
    assert f'["{raw.id}",5]'.encode() in doc and f'["{packed.id}",3,"zstd",10]'.encode() in doc  # compact
    old = b'{"chunks":[["%s",5]],"info":{"checksum":null,"content_type":"","etag":"e","key":"k","last_modified":1.0,' \
          b'"metadata":[],"parts":0,"size":5},"replicas":2}' % raw.id.encode()
    assert manifest_from("/m", old).chunks == (raw,)


@pytest.mark.parametrize("entry", [
    '["%s",3,"lz4",10]', '["%s",3,"zstd"]', '["%s",3,"zstd",-1]', '["%s",3,"zstd",true]', '["%s",3,null,10]'],
    ids=["codec", "no-plain", "negative", "bool", "null-codec"])
def test_bad_chunk_entries_are_a_corrupt_store(entry: str) -> None:
    doc = manifest_doc(_manifest(())).replace(b'"chunks":[]', b'"chunks":[' + (entry % chunk_id(b"x")).encode() + b"]")
    with pytest.raises(StoreError, match="chunks"):
        manifest_from("/m", doc)


def test_bucket_documents_carry_compression() -> None:
    bucket = BucketRecord("b", 1.0, 2, None, ZSTD)
    assert bucket_from("/b", bucket_doc(bucket)) == bucket
    assert bucket_from("/b", b'{"created":1.0,"name":"b","replicas":2}').compression is None  # older document
    with pytest.raises(StoreError, match="compression"):
        bucket_from("/b", b'{"compression":"lz4","created":1.0,"name":"b","replicas":2}')


# ---- properties over the backend (1 KiB chunks, in-memory fakes) ---------------------------------------------------

_pieces = st.lists(st.one_of(st.binary(min_size=1, max_size=900),  # mostly incompressible
                             st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=8), st.integers(50, 400))),
                   max_size=8)


@settings(max_examples=40, deadline=None)
@given(_pieces, st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 4000)), min_size=1, max_size=6))
def test_any_object_in_a_compressing_bucket_reads_back_exactly_in_any_range(
        pieces: list[bytes], spans: list[tuple[int, int]]) -> None:
    body = b"".join(pieces)

    async def run() -> None:
        c = Cluster(4)
        assert await c.backend.create_bucket("bkt", 0.0, compression=ZSTD) is None
        await c.put("bkt", "k", body)
        manifest = await c.metadata.get_manifest("bkt", "k")
        assert manifest is not None and sum(r.length for r in manifest.chunks) == len(body)
        assert await c.read("bkt", "k") == body
        for a, b in spans:
            if len(body) == 0:
                break
            start, end = sorted((a % len(body), b % len(body)))
            pieces = await c.backend.read_object("bkt", "k", start, end)
            assert not isinstance(pieces, S3Error)
            assert b"".join([p async for p in pieces]) == body[start:end + 1]

    asyncio.run(run())

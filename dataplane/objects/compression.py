"""Optional chunk compression (a bucket property, `BucketRecord.compression`): a transform *before* content
addressing. The gateway's writer compresses each plaintext chunk of a compressing bucket; when that saves at least
1/8 of it, the compressed bytes are the stored chunk (its id is the SHA-256 of the compressed bytes), else the chunk
is stored as it is. The object's `ChunkRef` says which (`codec`, and the plaintext size `plain`), so placement,
repair, scrub, garbage collection, erasure coding and the agents never know: they only see content-addressed blobs.

Why compress before addressing, not after: dedup and every integrity check stay on the stored bytes (a copy is
verified without decompressing it), and a node never needs the codec. The price: a chunk stored compressed in one
bucket and raw in another is two chunks (no dedup across buckets with different settings), and the output must be
deterministic for identical plaintext to dedup: one zstd level, single-threaded, and the `zstandard` version pinned
in pyproject.toml (a different version may produce other bytes: correct, only no longer deduplicated).

Reading: the stored bytes were verified against their id before they reach `decode`, so a copy's bit rot never
gets here; `decode` is still strict (bounded output: the frame must state exactly the plaintext size the ref records,
decode to exactly that many bytes, end where the blob ends) and returns a `Corrupt` value instead of raising, so a
manifest that disagrees with its chunk is a failed read, never wrong bytes and never a crash.

Pure (a computation library, like erasure.py's pyeclib): no I/O, no clock."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from dataplane.objects.chunking import COMPRESSIONS, ChunkRef

ZSTD = "zstd"
ZSTD_LEVEL = 3  # zstd's default: 150-400 MiB/s per core here by data, far above what the overlay carries
MIN_SAVING = 8  # kept compressed only when it saves at least 1/MIN_SAVING of the chunk
MAX_PLAIN = 64 * 1024 * 1024  # no chunk is larger (1 MiB by default): bounds what a ref may ask a decoder to produce


@dataclass(frozen=True, slots=True)
class Encoded:
    """What to store for one plaintext chunk: `data` (compressed when `codec` is set) and the plaintext size."""

    data: bytes
    codec: str | None
    plain: int

    def ref(self, chunk_id: str) -> ChunkRef:
        """The manifest's reference to this chunk once stored under `chunk_id`."""
        if self.codec is None:
            return ChunkRef(chunk_id, len(self.data))
        return ChunkRef(chunk_id, len(self.data), self.codec, self.plain)


@dataclass(frozen=True, slots=True)
class Corrupt:
    """A stored chunk that does not decode to what its ref says: `why`."""

    why: str


@dataclass(slots=True)
class Tally:
    """What compression did to the chunks written to compressing buckets (counted by the writer): plaintext bytes,
    stored bytes (one copy), chunks kept compressed and chunks stored raw because compressing did not pay."""

    written: int = 0
    stored: int = 0
    compressed: int = 0
    raw: int = 0

    def add(self, encoded: Encoded) -> None:
        self.written += encoded.plain
        self.stored += len(encoded.data)
        if encoded.codec is None:
            self.raw += 1
        else:
            self.compressed += 1

    def stats(self) -> dict[str, int]:
        return {"writtenBytes": self.written, "storedBytes": self.stored, "savedBytes": self.written - self.stored,
                "chunksCompressed": self.compressed, "chunksRaw": self.raw}


@cache
def _zstd() -> Any:
    import zstandard  # the `coordinator` extra: only the gateway compresses; agents store blobs

    return zstandard


def compression_problem(name: str | None) -> str | None:
    """Why a bucket cannot be created with compression `name` here (None: it can; no compression always can).
    Messages start with "compression" so an API can name the field."""
    if name is None:
        return None
    if name not in COMPRESSIONS:
        return f"compression {name!r} is not offered: give \"zstd\" or none"
    try:
        _zstd()
    except ImportError as exc:
        return f"compression zstd needs the zstandard package ({exc}); install cloudless[coordinator]"
    return None


def worth_it(plain: int, compressed: int) -> bool:
    """Keep the compressed form only when it saves at least 1/MIN_SAVING: below that, the CPU of decompressing every
    read buys too little disk (and random or already-compressed data comes out slightly larger)."""
    return compressed <= plain - plain // MIN_SAVING and compressed < plain


def encode(data: bytes, codec: str | None) -> Encoded:
    """The chunk to store for plaintext `data` in a bucket compressing with `codec` (None: as it is). Deterministic
    for given bytes: one level, single-threaded, no checksum (the id covers the stored bytes), the content size in
    the frame (decode checks it against the ref)."""
    if codec is None:
        return Encoded(data, None, len(data))
    if codec != ZSTD:
        raise ValueError(f"unknown compression {codec!r}")
    zstd = _zstd()
    compressed = zstd.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=False, write_content_size=True,
                                     threads=0).compress(data)
    if worth_it(len(data), len(compressed)):
        return Encoded(compressed, ZSTD, len(data))
    return Encoded(data, None, len(data))


def decode(stored: bytes, ref: ChunkRef) -> bytes | Corrupt:
    """The plaintext of a stored chunk (`stored`: verified against `ref.id`). Bounded: the frame must declare exactly
    `ref.plain` bytes (libzstd then refuses to produce more), nothing may follow the frame, and the output must be
    exactly `ref.plain` bytes; anything else is Corrupt."""
    if ref.codec is None:
        return stored
    if ref.codec != ZSTD:
        return Corrupt(f"unknown compression {ref.codec!r}")
    if not 0 <= ref.plain <= MAX_PLAIN:
        return Corrupt(f"plaintext size {ref.plain} out of range")
    try:
        zstd = _zstd()
    except ImportError as exc:
        return Corrupt(f"cannot be decoded here: the zstandard package does not import ({exc})")
    try:
        declared = zstd.frame_content_size(stored)
        if declared != ref.plain:
            return Corrupt(f"the zstd frame declares {declared} bytes, the manifest {ref.plain}")
        reader = zstd.ZstdDecompressor().decompressobj()
        out = reader.decompress(stored)
    except zstd.ZstdError as exc:
        return Corrupt(f"does not decompress: {exc}")
    if not reader.eof or reader.unused_data:
        return Corrupt("the zstd frame is truncated or followed by other bytes")
    if len(out) != ref.plain:
        return Corrupt(f"decompressed to {len(out)} bytes, the manifest says {ref.plain}")
    return bytes(out)

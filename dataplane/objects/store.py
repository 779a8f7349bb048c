"""`ObjectBackend`: the S3 layer's `Backend` over the `Metadata` and `ChunkClient` ports. Uploads are cut into 1 MiB
content-addressed chunks as they stream in; each chunk goes to R nodes (`chunkio.ChunkIO.store`), a few chunks in
flight at a time (`parallel`), so a staging area holds a few MiB at most; the manifest is committed, atomically and
conditionally (If-None-Match), only after every chunk has at least one acknowledged copy. Reads fetch the chunks a
range covers from any holder and verify them. A bucket with `compression` stores each chunk compressed when that
pays (dataplane/objects/compression.py: a transform before content addressing, decided per chunk, recorded in the
chunk's ref); reads decompress what their refs say is compressed. Deleting an object drops its manifest; its chunks
go with garbage collection (`collect_garbage`), since another object may share them (dedup).

A backend failure the client can retry (no storage node could take a chunk) is an `InternalError` (500) with the
reason, returned at the commit: `Staging.write` keeps reading the body so the connection stays usable."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

from dataplane.objects import compression as compression_mod
from dataplane.objects import erasure as erasure_mod
from dataplane.objects.chunking import CHUNK_SIZE, Chunker, ChunkRef, covering
from dataplane.objects.chunkio import ChunkIO, ChunkLost, ChunkWriteFailed, NodeSource
from dataplane.objects.compression import Corrupt, Tally
from dataplane.objects.model import DEFAULT_REPLICAS, BucketRecord, ErasureCode, Manifest, PartRecord
from dataplane.objects.ports import ChunkClient, Metadata, Outcome
from dataplane.objects.repair import GC_GRACE_S
from dataplane.s3.backend import BucketInfo, ObjectInfo, PartInfo, UploadInfo
from dataplane.s3.errors import ErrorCode, S3Error

RECORD_WINDOW = 16  # chunk records fetched per metadata round
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ManifestInfo(ObjectInfo):
    """An ObjectInfo as `head_object` returns it: with the chunks of the manifest it came from."""

    chunks: tuple[ChunkRef, ...] = ()

    @classmethod
    def of(cls, manifest: Manifest) -> ManifestInfo:
        i = manifest.info
        return cls(i.key, i.size, i.etag, i.last_modified, content_type=i.content_type, metadata=i.metadata,
                   checksum=i.checksum, parts=i.parts, chunks=manifest.chunks)


def _no_bucket(name: str) -> S3Error:
    return S3Error(ErrorCode.NO_SUCH_BUCKET, "the specified bucket does not exist", f"/{name}")


def _no_upload() -> S3Error:
    return S3Error(ErrorCode.NO_SUCH_UPLOAD, "the specified multipart upload does not exist")


class ObjectStaging:
    """Chunks are stored `parallel` at a time (each to R nodes), in order in the manifest: the upload keeps flowing
    while earlier chunks are still being written, and at most `parallel` chunks (plus the one being cut) are held."""

    def __init__(self, backend: ObjectBackend, replicas: int, erasure: ErasureCode | None = None,
                 compression: str | None = None) -> None:
        self._backend, self._replicas, self._erasure = backend, replicas, erasure
        self._compression = compression
        self._chunker = Chunker(backend.chunk_size)
        self._pending: list[asyncio.Task[ChunkRef]] = []
        self._refs: list[ChunkRef] = []
        self._failed: S3Error | None = None
        self._open = True
        self._began = backend.clock()

    async def write(self, data: bytes) -> None:
        try:
            for piece in self._chunker.feed(data):
                await self._store(piece)
        except BaseException:  # a metadata error (not a ChunkWriteFailed) or a cancel: no chunk write outlives it
            self._cancel()  # (review 4, L6)
            raise

    async def _store(self, piece: bytes) -> None:
        if self._failed is not None:
            return
        self._pending.append(asyncio.create_task(
            self._backend.store_chunk(piece, self._replicas, self._erasure, self._compression)))
        while len(self._pending) >= self._backend.parallel:
            await self._settle_oldest()

    async def _settle_oldest(self) -> None:
        task = self._pending.pop(0)
        try:
            self._refs.append(await task)
        except ChunkWriteFailed as exc:
            if self._failed is None:
                self._failed = S3Error(ErrorCode.INTERNAL_ERROR, f"storage unavailable: {exc}")

    async def _finish(self) -> tuple[ChunkRef, ...] | S3Error:
        assert self._open, "a staging area was used after its commit or abort"
        self._open = False
        last = self._chunker.finish()
        if last is not None:
            await self._store(last)
        try:
            while self._pending:
                await self._settle_oldest()
        except BaseException:
            self._cancel()
            raise
        if self._failed is not None:
            return self._failed
        refs = tuple(self._refs)
        return await self._still_held(refs) or refs

    async def _still_held(self, refs: tuple[ChunkRef, ...]) -> S3Error | None:
        """An upload slower than half the GC grace re-touches its chunks just before the commit and fails when one was
        collected meanwhile (review 4, H2). Why this is correct under concurrency: GC drops a record only if it is
        untouched since `now - grace`, atomically (`drop_chunk`); so either the touch lands first (the drop then
        fails, and the grace covers the few moments until the manifest references the chunk) or the drop did (the
        touch re-creates the record with no holder and no stripe, seen here: a 503 the client retries, never a 200
        for bytes that are gone). Half the grace leaves room for clocks that differ between gateways."""
        now = self._backend.clock()
        if now - self._began <= GC_GRACE_S / 2:
            return None
        for ref in dict.fromkeys(refs):
            record = await self._backend.metadata.update_chunk(ref.id, ref.size, touched=now)
            if not record.good() and record.stripe is None:
                return S3Error(ErrorCode.SERVICE_UNAVAILABLE, f"chunk {ref.id[:12]} of this upload was collected "
                               "while the upload ran (slower than the garbage-collection grace): retry the upload")
        return None

    def _cancel(self) -> None:
        for task in self._pending:
            task.cancel()
        self._pending.clear()

    async def commit_object(self, bucket: str, info: ObjectInfo, *, if_absent: bool = False) -> S3Error | None:
        refs = await self._finish()
        if isinstance(refs, S3Error):
            return refs
        manifest = Manifest(info, refs, self._replicas)
        match await self._backend.metadata.commit_manifest(bucket, manifest, if_absent=if_absent):
            case Outcome.DONE:
                return None
            case Outcome.EXISTS:
                return S3Error(ErrorCode.PRECONDITION_FAILED, "At least one of the pre-conditions you specified did "
                               "not hold (If-None-Match: *)", f"/{bucket}/{info.key}")
            case _:
                return _no_bucket(bucket)

    async def commit_part(self, upload_id: str, part: PartInfo) -> S3Error | None:
        refs = await self._finish()
        if isinstance(refs, S3Error):
            return refs
        outcome = await self._backend.metadata.put_part(upload_id, PartRecord(part, refs))
        return None if outcome is Outcome.DONE else _no_upload()

    async def abort(self) -> None:
        self._open = False  # chunks already stored are unreferenced: garbage collection takes them
        self._cancel()


class ObjectBackend:
    def __init__(self, metadata: Metadata, client: ChunkClient, nodes: NodeSource, *,
                 chunk_size: int = CHUNK_SIZE, parallel: int = 4, clock: Callable[[], float] = time.time) -> None:
        if parallel < 1:
            raise ValueError(f"parallel must be at least 1, got {parallel}")
        self.metadata = metadata
        self.io = ChunkIO(metadata, client, nodes, clock)
        self.chunk_size, self.parallel = chunk_size, parallel
        self._clock = self.clock = clock
        self.tally = Tally()  # what compression did to the chunks this backend wrote (compression_stats)

    # ---- buckets -------------------------------------------------------------------------------------------------

    async def list_buckets(self) -> list[BucketInfo]:
        return [BucketInfo(b.name, b.created) for b in await self.metadata.list_buckets()]

    async def create_bucket(self, name: str, now: float, replicas: int = DEFAULT_REPLICAS,
                            erasure: ErasureCode | None = None, *, compression: str | None = None) -> S3Error | None:
        """`erasure`: an erasure-coded bucket (refused, as InvalidArgument naming why, without enough storage nodes
        or the codec); its manifests then ask `erasure.replicas` of a chunk shared with a replicated bucket.
        `compression`: None or "zstd" (refused as InvalidArgument, the message starting with "compression", for
        another value or without the zstandard package)."""
        if (why := compression_mod.compression_problem(compression)) is not None:
            return S3Error(ErrorCode.INVALID_ARGUMENT, why, f"/{name}")
        if erasure is not None:
            why = erasure_mod.bucket_refusal(erasure, self.io.nodes(), erasure_mod.codec_problem(erasure))
            if why is not None:
                return S3Error(ErrorCode.INVALID_ARGUMENT, why, f"/{name}")
            replicas = erasure.replicas
        bucket = BucketRecord(name, now, replicas, erasure, compression)
        if await self.metadata.create_bucket(bucket) is Outcome.EXISTS:
            return S3Error(ErrorCode.BUCKET_ALREADY_OWNED_BY_YOU, "you already own this bucket", f"/{name}")
        return None

    async def delete_bucket(self, name: str) -> S3Error | None:
        match await self.metadata.delete_bucket(name):
            case Outcome.DONE:
                return None
            case Outcome.NOT_EMPTY:
                return S3Error(ErrorCode.BUCKET_NOT_EMPTY, "the bucket you tried to delete is not empty", f"/{name}")
            case _:
                return _no_bucket(name)

    async def bucket_exists(self, name: str) -> bool:
        return await self.metadata.get_bucket(name) is not None

    async def stage(self, bucket: str) -> ObjectStaging | S3Error:
        record = await self.metadata.get_bucket(bucket)
        if record is None:
            return _no_bucket(bucket)
        return ObjectStaging(self, record.replicas, record.erasure, record.compression)

    async def store_chunk(self, piece: bytes, replicas: int, erasure: ErasureCode | None,
                          compression: str | None) -> ChunkRef:
        """Store one chunk of an object (`piece`: its plaintext): compressed first when the bucket compresses and
        that pays (in a worker thread: zstd releases the GIL, so the loop keeps serving). Its ref for the manifest."""
        if compression is None:
            return await self.io.store(piece, replicas, erasure)
        try:
            encoded = await asyncio.to_thread(compression_mod.encode, piece, compression)
        except ImportError as exc:  # a bucket made where zstandard imports, written through a gateway without it
            raise ChunkWriteFailed("", f"compression {compression} needs the zstandard package ({exc})") from exc
        stored = await self.io.store(encoded.data, replicas, erasure)
        self.tally.add(encoded)
        return encoded.ref(stored.id)

    def compression_stats(self) -> dict[str, int]:
        """Chunks written to compressing buckets by this backend since it started (JSON, camelCase): plaintext bytes
        written, bytes stored for them (one copy, before replication or erasure coding), the difference, and how
        many chunks were kept compressed or stored raw (compression did not save 1/8)."""
        return self.tally.stats()

    # ---- objects -------------------------------------------------------------------------------------------------

    async def _manifest(self, bucket: str, key: str) -> Manifest | S3Error:
        manifest = await self.metadata.get_manifest(bucket, key)
        if manifest is not None:
            return manifest
        if await self.metadata.get_bucket(bucket) is None:
            return _no_bucket(bucket)
        return S3Error(ErrorCode.NO_SUCH_KEY, "the specified key does not exist", f"/{bucket}/{key}")

    async def head_object(self, bucket: str, key: str) -> ObjectInfo | S3Error:
        """The object's info, carrying the chunks of the manifest it was read from (`ManifestInfo`): a read given
        it back serves exactly that version (review 3, H1)."""
        manifest = await self._manifest(bucket, key)
        return manifest if isinstance(manifest, S3Error) else ManifestInfo.of(manifest)

    async def read_object(self, bucket: str, key: str, start: int, end: int, *,
                          info: ObjectInfo | None = None) -> AsyncIterator[bytes] | S3Error:
        if isinstance(info, ManifestInfo) and info.key == key:
            return self._pieces(info.chunks, start, end)  # the manifest read once, whose headers went out
        manifest = await self._manifest(bucket, key)
        if isinstance(manifest, S3Error):
            return manifest
        return self._pieces(manifest.chunks, start, end)

    async def _pieces(self, chunks: tuple[ChunkRef, ...], start: int, end: int) -> AsyncIterator[bytes]:
        slices = covering(chunks, start, end)
        for first in range(0, len(slices), RECORD_WINDOW):  # locations a window at a time: the first byte comes soon
            window = slices[first:first + RECORD_WINDOW]
            records = await self.metadata.get_chunks(sorted({chunks[s.index].id for s in window}))
            for s in window:
                ref = chunks[s.index]
                data = await self.io.fetch(ref, records.get(ref.id))
                if ref.codec is not None:
                    data = await self._decompress(data, ref)
                yield data[s.start:s.end + 1]

    @staticmethod
    async def _decompress(stored: bytes, ref: ChunkRef) -> bytes:
        """The plaintext of a compressed chunk (`stored` verified against its id). Bytes that passed the hash check
        but do not decode to what the ref says are the same on every copy (content-addressed), so no copy is marked
        bad (repair would delete good data): the read fails as for a lost chunk, never with wrong bytes."""
        plain = await asyncio.to_thread(compression_mod.decode, stored, ref)
        if isinstance(plain, Corrupt):
            log.error("chunk %s does not decode as its manifest says: %s", ref.id[:12], plain.why)
            raise ChunkLost(ref.id, (), f"does not decode as its manifest says: {plain.why}")
        return plain

    async def delete_object(self, bucket: str, key: str) -> S3Error | None:
        outcome = await self.metadata.delete_manifest(bucket, key)
        return _no_bucket(bucket) if outcome is Outcome.NO_BUCKET else None

    async def list_objects(self, bucket: str, prefix: str, after: str) -> Iterable[ObjectInfo] | S3Error:
        manifests = await self.metadata.list_manifests(bucket, prefix, after)
        if isinstance(manifests, Outcome):
            return _no_bucket(bucket)
        return (m.info for m in manifests)

    # ---- multipart -----------------------------------------------------------------------------------------------

    async def create_upload(self, upload: UploadInfo) -> S3Error | None:
        outcome = await self.metadata.create_upload(upload)
        return _no_bucket(upload.bucket) if outcome is Outcome.NO_BUCKET else None

    async def get_upload(self, bucket: str, key: str, upload_id: str) -> UploadInfo | S3Error:
        upload = await self.metadata.get_upload(upload_id)
        if upload is None or (upload.bucket, upload.key) != (bucket, key):
            return _no_upload()
        return upload

    async def list_parts(self, upload_id: str) -> list[PartInfo] | S3Error:
        parts = await self.metadata.list_parts(upload_id)
        return _no_upload() if isinstance(parts, Outcome) else sorted((p.info for p in parts),
                                                                      key=lambda p: p.number)

    async def complete_upload(self, upload_id: str, info: ObjectInfo, parts: tuple[int, ...]) -> S3Error | None:
        """The metadata builds the object from the parts it reads inside its own transaction (review 3, M5): a part
        re-uploaded after the handler checked the list no longer adds up to `info` and is refused as InvalidPart."""
        upload = await self.metadata.get_upload(upload_id)
        if upload is None:
            return _no_upload()
        match await self.metadata.complete_upload(upload_id, info, parts):
            case Outcome.DONE:
                return None
            case Outcome.NO_BUCKET:
                return _no_bucket(upload.bucket)
            case Outcome.INVALID_PART:
                return S3Error(ErrorCode.INVALID_PART, "one or more of the specified parts could not be found or "
                               "changed while the upload was being completed; list the parts and try again")
            case _:
                return _no_upload()

    async def abort_upload(self, upload_id: str) -> S3Error | None:
        await self.metadata.drop_upload(upload_id)  # its parts' chunks are collected as garbage
        return None

    # ---- maintenance ---------------------------------------------------------------------------------------------

    async def collect_garbage(self, now: float | None = None, grace: float = GC_GRACE_S) -> list[str]:
        return await self.io.collect_garbage(self._clock() if now is None else now, grace)

"""In-memory `Metadata` (dataplane.objects.ports) for object store tests: dicts, no await inside an operation, so
every operation is atomic and the whole is trivially linearizable. A maintained fake (STYLE §5): it implements the
Protocol in full with the same outcomes as coordinator/objects.py's `StoreMetadata`, which
tests/coordinator/test_objects.py checks against the same expectations."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from dataplane.objects.model import AccessKey, BucketRecord, ChunkRecord, Manifest, PartRecord, Stripe
from dataplane.objects.ports import Outcome
from dataplane.s3.backend import ObjectInfo, UploadInfo
from dataplane.s3.multipart import multipart_etag


@dataclass
class _Upload:
    info: UploadInfo
    parts: dict[int, PartRecord] = field(default_factory=dict)


class MemoryMetadata:
    def __init__(self) -> None:
        self.buckets: dict[str, BucketRecord] = {}
        self.orphans: dict[tuple[str, str], float] = {}
        self.objects: dict[str, dict[str, Manifest]] = {}
        self.chunks: dict[str, ChunkRecord] = {}
        self.uploads: dict[str, _Upload] = {}
        self.keys: dict[str, AccessKey] = {}

    async def list_buckets(self) -> list[BucketRecord]:
        return sorted(self.buckets.values(), key=lambda b: b.name)

    async def get_bucket(self, name: str) -> BucketRecord | None:
        return self.buckets.get(name)

    async def create_bucket(self, bucket: BucketRecord) -> Outcome:
        if bucket.name in self.buckets:
            return Outcome.EXISTS
        self.buckets[bucket.name] = bucket
        self.objects[bucket.name] = {}
        return Outcome.DONE

    async def delete_bucket(self, name: str) -> Outcome:
        if name not in self.buckets:
            return Outcome.NO_BUCKET
        if self.objects[name] or any(u.info.bucket == name for u in self.uploads.values()):
            return Outcome.NOT_EMPTY
        del self.buckets[name], self.objects[name]
        return Outcome.DONE

    async def get_manifest(self, bucket: str, key: str) -> Manifest | None:
        return self.objects.get(bucket, {}).get(key)

    async def list_manifests(self, bucket: str, prefix: str, after: str) -> Iterable[Manifest] | Outcome:
        if bucket not in self.buckets:
            return Outcome.NO_BUCKET
        objects = self.objects[bucket]
        keys = sorted((k for k in objects if k.startswith(prefix) and k.encode() > after.encode()),
                      key=lambda k: k.encode())
        return [objects[k] for k in keys]

    async def commit_manifest(self, bucket: str, manifest: Manifest, *, if_absent: bool = False) -> Outcome:
        if bucket not in self.buckets:
            return Outcome.NO_BUCKET
        if if_absent and manifest.info.key in self.objects[bucket]:
            return Outcome.EXISTS
        self.objects[bucket][manifest.info.key] = manifest
        return Outcome.DONE

    async def delete_manifest(self, bucket: str, key: str) -> Outcome:
        if bucket not in self.buckets:
            return Outcome.NO_BUCKET
        self.objects[bucket].pop(key, None)
        return Outcome.DONE

    async def referenced_chunks(self) -> frozenset[str]:
        ids = {c.id for objects in self.objects.values() for m in objects.values() for c in m.chunks}
        ids |= {c.id for u in self.uploads.values() for p in u.parts.values() for c in p.chunks}
        return frozenset(ids)

    async def get_chunks(self, ids: Sequence[str]) -> dict[str, ChunkRecord]:
        return {i: self.chunks[i] for i in ids if i in self.chunks}

    async def list_chunks(self) -> list[ChunkRecord]:
        return [self.chunks[i] for i in sorted(self.chunks)]

    async def update_chunk(self, chunk_id: str, size: int, *, add: Iterable[str] = (), remove: Iterable[str] = (),
                           bad: Iterable[str] = (), touched: float | None = None,
                           stripe: Stripe | None = None) -> ChunkRecord:
        record = self.chunks.get(chunk_id, ChunkRecord(chunk_id, size))
        removed = frozenset(remove)
        record = replace(record, holders=(record.holders | frozenset(add)) - removed,
                         bad=(record.bad - removed) | frozenset(bad),
                         touched=max(record.touched, touched if touched is not None else record.touched),
                         stripe=record.stripe or stripe)
        self.chunks[chunk_id] = record
        return record

    async def drop_chunk(self, chunk_id: str, *, unless_touched_since: float) -> bool:
        record = self.chunks.get(chunk_id)
        if record is None or record.touched >= unless_touched_since:
            return False
        del self.chunks[chunk_id]
        return True

    async def note_orphans(self, node: str, chunk_ids: Iterable[str], at: float) -> None:
        for cid in chunk_ids:
            self.orphans.setdefault((node, cid), at)

    async def list_orphans(self) -> list[tuple[str, str, float]]:
        return [(n, c, at) for (n, c), at in sorted(self.orphans.items())]

    async def forget_orphan(self, node: str, chunk_id: str) -> None:
        self.orphans.pop((node, chunk_id), None)

    async def create_upload(self, upload: UploadInfo) -> Outcome:
        if upload.bucket not in self.buckets:
            return Outcome.NO_BUCKET
        self.uploads[upload.upload_id] = _Upload(upload)
        return Outcome.DONE

    async def get_upload(self, upload_id: str) -> UploadInfo | None:
        upload = self.uploads.get(upload_id)
        return upload.info if upload else None

    async def put_part(self, upload_id: str, part: PartRecord) -> Outcome:
        upload = self.uploads.get(upload_id)
        if upload is None:
            return Outcome.NO_UPLOAD
        upload.parts[part.info.number] = part
        return Outcome.DONE

    async def list_parts(self, upload_id: str) -> list[PartRecord] | Outcome:
        upload = self.uploads.get(upload_id)
        return Outcome.NO_UPLOAD if upload is None else [upload.parts[n] for n in sorted(upload.parts)]

    async def complete_upload(self, upload_id: str, info: ObjectInfo, parts: Sequence[int]) -> Outcome:
        upload = self.uploads.get(upload_id)
        if upload is None:
            return Outcome.NO_UPLOAD
        bucket = self.buckets.get(upload.info.bucket)
        if bucket is None:
            return Outcome.NO_BUCKET
        chosen = [upload.parts.get(n) for n in parts]
        found = [p for p in chosen if p is not None]
        if (len(found) != len(chosen) or sum(p.info.size for p in found) != info.size
                or multipart_etag([p.info.etag for p in found]) != info.etag):
            return Outcome.INVALID_PART
        del self.uploads[upload_id]
        manifest = Manifest(replace(info, key=upload.info.key), tuple(c for p in found for c in p.chunks),
                            bucket.replicas)
        self.objects[upload.info.bucket][manifest.info.key] = manifest
        return Outcome.DONE

    async def drop_upload(self, upload_id: str) -> Outcome:
        return Outcome.DONE if self.uploads.pop(upload_id, None) else Outcome.NO_UPLOAD

    async def get_key(self, access_key: str) -> AccessKey | None:
        return self.keys.get(access_key)

    async def list_keys(self) -> list[AccessKey]:
        return [self.keys[k] for k in sorted(self.keys)]

    async def put_key(self, key: AccessKey) -> None:
        self.keys[key.access_key] = key

    async def delete_key(self, access_key: str) -> Outcome:
        return Outcome.DONE if self.keys.pop(access_key, None) else Outcome.NO_KEY

"""An in-memory `Backend` for S3 tests: buckets, objects and multipart parts in dicts, with S3's answers for missing
buckets, keys and uploads. A maintained fake (STYLE §5), not a mock: it implements the Protocol in full. Reads come
back in `piece`-sized pieces so streaming is exercised; `staged` counts staging areas still open (a test can check
that every rejected upload was aborted)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

from dataplane.s3.backend import BucketInfo, ObjectInfo, PartInfo, UploadInfo
from dataplane.s3.errors import ErrorCode, S3Error


@dataclass
class _Bucket:
    info: BucketInfo
    objects: dict[str, tuple[ObjectInfo, bytes]] = field(default_factory=dict)


@dataclass
class _Upload:
    info: UploadInfo
    parts: dict[int, tuple[PartInfo, bytes]] = field(default_factory=dict)


def _utf8_order(key: str) -> bytes:
    return key.encode()


class MemoryStaging:
    def __init__(self, backend: MemoryBackend) -> None:
        self._backend = backend
        self._data = bytearray()
        self._open = True
        backend.staged += 1

    def _close(self) -> None:
        assert self._open, "a staging area was used after its commit or abort"
        self._open = False
        self._backend.staged -= 1

    async def write(self, data: bytes) -> None:
        assert self._open
        self._data += data

    async def commit_object(self, bucket: str, info: ObjectInfo, *, if_absent: bool = False) -> S3Error | None:
        self._close()
        found = self._backend._bucket(bucket)
        if isinstance(found, S3Error):
            return found
        if if_absent and info.key in found.objects:  # no await between this check and the write: atomic
            return S3Error(ErrorCode.PRECONDITION_FAILED, "At least one of the pre-conditions you specified did not "
                           "hold (If-None-Match: *)", f"/{bucket}/{info.key}")
        assert len(self._data) == info.size
        found.objects[info.key] = (info, bytes(self._data))
        return None

    async def commit_part(self, upload_id: str, part: PartInfo) -> S3Error | None:
        self._close()
        upload = self._backend.uploads.get(upload_id)
        if upload is None:
            return S3Error(ErrorCode.NO_SUCH_UPLOAD, "the specified multipart upload does not exist")
        assert len(self._data) == part.size
        upload.parts[part.number] = (part, bytes(self._data))
        return None

    async def abort(self) -> None:
        self._close()


class MemoryBackend:
    def __init__(self, piece: int = 64 * 1024) -> None:
        self.buckets: dict[str, _Bucket] = {}
        self.uploads: dict[str, _Upload] = {}
        self.staged = 0
        self._piece = piece

    def _bucket(self, name: str) -> _Bucket | S3Error:
        bucket = self.buckets.get(name)
        if bucket is None:
            return S3Error(ErrorCode.NO_SUCH_BUCKET, "the specified bucket does not exist", f"/{name}")
        return bucket

    async def list_buckets(self) -> list[BucketInfo]:
        return [b.info for b in self.buckets.values()]

    async def create_bucket(self, name: str, now: float) -> S3Error | None:
        if name in self.buckets:
            return S3Error(ErrorCode.BUCKET_ALREADY_OWNED_BY_YOU, "you already own this bucket", f"/{name}")
        self.buckets[name] = _Bucket(BucketInfo(name, now))
        return None

    async def delete_bucket(self, name: str) -> S3Error | None:
        bucket = self._bucket(name)
        if isinstance(bucket, S3Error):
            return bucket
        if bucket.objects:
            return S3Error(ErrorCode.BUCKET_NOT_EMPTY, "the bucket you tried to delete is not empty", f"/{name}")
        del self.buckets[name]
        return None

    async def bucket_exists(self, name: str) -> bool:
        return name in self.buckets

    async def stage(self, bucket: str) -> MemoryStaging | S3Error:
        found = self._bucket(bucket)
        return found if isinstance(found, S3Error) else MemoryStaging(self)

    async def head_object(self, bucket: str, key: str) -> ObjectInfo | S3Error:
        found = self._bucket(bucket)
        if isinstance(found, S3Error):
            return found
        entry = found.objects.get(key)
        if entry is None:
            return S3Error(ErrorCode.NO_SUCH_KEY, "the specified key does not exist", f"/{bucket}/{key}")
        return entry[0]

    async def read_object(self, bucket: str, key: str, start: int, end: int, *,
                          info: ObjectInfo | None = None) -> AsyncIterator[bytes] | S3Error:
        found = await self.head_object(bucket, key)  # one dict lookup: no window for another version
        if isinstance(found, S3Error):
            return found
        return self._pieces(self.buckets[bucket].objects[key][1][start:end + 1])

    async def _pieces(self, data: bytes) -> AsyncIterator[bytes]:
        for i in range(0, len(data), self._piece):
            yield data[i:i + self._piece]

    async def delete_object(self, bucket: str, key: str) -> S3Error | None:
        found = self._bucket(bucket)
        if isinstance(found, S3Error):
            return found
        found.objects.pop(key, None)
        return None

    async def list_objects(self, bucket: str, prefix: str, after: str) -> Iterable[ObjectInfo] | S3Error:
        found = self._bucket(bucket)
        if isinstance(found, S3Error):
            return found
        keys = sorted((k for k in found.objects if k.startswith(prefix) and _utf8_order(k) > _utf8_order(after)),
                      key=_utf8_order)
        return (found.objects[k][0] for k in keys)

    async def create_upload(self, upload: UploadInfo) -> S3Error | None:
        found = self._bucket(upload.bucket)
        if isinstance(found, S3Error):
            return found
        self.uploads[upload.upload_id] = _Upload(upload)
        return None

    async def get_upload(self, bucket: str, key: str, upload_id: str) -> UploadInfo | S3Error:
        upload = self.uploads.get(upload_id)
        if upload is None or (upload.info.bucket, upload.info.key) != (bucket, key):
            return S3Error(ErrorCode.NO_SUCH_UPLOAD, "the specified multipart upload does not exist")
        return upload.info

    async def list_parts(self, upload_id: str) -> list[PartInfo] | S3Error:
        return [p for p, _ in self.uploads[upload_id].parts.values()]

    async def complete_upload(self, upload_id: str, info: ObjectInfo, parts: tuple[int, ...]) -> S3Error | None:
        upload = self.uploads.pop(upload_id)
        found = self._bucket(upload.info.bucket)
        if isinstance(found, S3Error):
            return found
        data = b"".join(upload.parts[n][1] for n in parts)
        assert len(data) == info.size
        found.objects[info.key] = (info, data)
        return None

    async def abort_upload(self, upload_id: str) -> S3Error | None:
        self.uploads.pop(upload_id, None)
        return None

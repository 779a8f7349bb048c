"""The storage port the S3 layer serves: buckets, objects and multipart parts (issue 20). The coordinator's
metadata store plus chunks on agents will implement it; tests use an in-memory fake. Expected "no"s (no such bucket,
bucket not empty, no such upload) are returned `S3Error`s, never exceptions.

Object and part data stream: an upload writes into a `Staging` area as the bytes arrive (a chunk store can cut and
place chunks on the way) and becomes visible only on `commit_object`/`commit_part`, after the S3 layer has verified
the body's signatures and checksums; a rejected body is `abort`ed. Reads come back as an async iterator of pieces."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import KW_ONLY, dataclass
from typing import Protocol

from dataplane.s3.checksums import Algorithm
from dataplane.s3.errors import S3Error


@dataclass(frozen=True, slots=True)
class BucketInfo:
    name: str
    created: float


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    etag: str  # without quotes: hex MD5, or md5-of-md5s "-N" for multipart
    last_modified: float
    _: KW_ONLY  # STYLE §6: past four, by name
    content_type: str = "binary/octet-stream"
    metadata: tuple[tuple[str, str], ...] = ()  # x-amz-meta-* (names without the prefix, lower-case)
    checksum: tuple[Algorithm, str] | None = None
    parts: int = 0  # >0 for an object assembled by CompleteMultipartUpload


@dataclass(frozen=True, slots=True)
class PartInfo:
    number: int
    size: int
    etag: str
    last_modified: float


@dataclass(frozen=True, slots=True)
class UploadInfo:
    upload_id: str
    bucket: str
    key: str
    initiated: float
    _: KW_ONLY
    content_type: str = "binary/octet-stream"
    metadata: tuple[tuple[str, str], ...] = ()


class Staging(Protocol):
    """Bytes of one object or part on their way in; nothing is visible until a commit."""

    async def write(self, data: bytes) -> None: ...

    async def commit_object(self, bucket: str, info: ObjectInfo, *, if_absent: bool = False) -> S3Error | None:
        """Make the staged bytes the object `info.key` (replacing any previous one), atomically. With `if_absent`
        (PutObject's `If-None-Match: *`), only when no object has that key at the moment of the commit, checked in the
        same transaction as the write: else PreconditionFailed and the staged bytes are dropped. Of two concurrent
        conditional writes exactly one wins."""
        ...

    async def commit_part(self, upload_id: str, part: PartInfo) -> S3Error | None:
        """Make the staged bytes part `part.number` of the upload (replacing a previous upload of that number)."""
        ...

    async def abort(self) -> None: ...


class Backend(Protocol):
    async def list_buckets(self) -> list[BucketInfo]: ...

    async def create_bucket(self, name: str, now: float) -> S3Error | None: ...

    async def delete_bucket(self, name: str) -> S3Error | None: ...

    async def bucket_exists(self, name: str) -> bool: ...

    async def stage(self, bucket: str) -> Staging | S3Error:
        """A staging area for an object or part of `bucket` (NoSuchBucket when it does not exist)."""
        ...

    async def head_object(self, bucket: str, key: str) -> ObjectInfo | S3Error: ...

    async def read_object(self, bucket: str, key: str, start: int, end: int, *,
                          info: ObjectInfo | None = None) -> AsyncIterator[bytes] | S3Error:
        """Bytes start..end inclusive of the object, in pieces (the whole object when end = size - 1). `info`: what
        `head_object` returned for this request, whose ETag, size and range went into the response headers; a
        backend serves the bytes of exactly that version (a PUT in between must not mix v1's headers with v2's
        bytes), e.g. from what it attached to the info it returned."""
        ...

    async def delete_object(self, bucket: str, key: str) -> S3Error | None:
        """Deleting a missing key succeeds (S3 semantics); a missing bucket is NoSuchBucket."""
        ...

    async def list_objects(self, bucket: str, prefix: str, after: str) -> Iterable[ObjectInfo] | S3Error:
        """The objects whose key starts with prefix and sorts after `after`, in key (UTF-8 byte) order; may be lazy."""
        ...

    async def create_upload(self, upload: UploadInfo) -> S3Error | None: ...

    async def get_upload(self, bucket: str, key: str, upload_id: str) -> UploadInfo | S3Error: ...

    async def list_parts(self, upload_id: str) -> list[PartInfo] | S3Error: ...

    async def complete_upload(self, upload_id: str, info: ObjectInfo, parts: tuple[int, ...]) -> S3Error | None:
        """Make the object `info` out of the named parts, in order, and forget the upload."""
        ...

    async def abort_upload(self, upload_id: str) -> S3Error | None: ...

"""The object store's two ports. `Metadata`: buckets, manifests, chunk locations, multipart uploads and access keys,
linearizable (a commit that returned is seen by every later read anywhere) with conditional commits; the
coordinator's store implements it (coordinator/objects.py), tests use an in-memory fake. `ChunkClient`: chunk bytes
on storage nodes (over the overlay in a cluster, dataplane/objects/peer.py). Expected "no"s are values."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import Protocol

from dataplane.objects.model import AccessKey, BucketRecord, ChunkRecord, Manifest, PartRecord, Stripe
from dataplane.s3.backend import ObjectInfo, UploadInfo


class Outcome(StrEnum):
    DONE = "done"
    NO_BUCKET = "no such bucket"
    EXISTS = "exists"  # CreateBucket on an existing name; a conditional commit whose key exists
    NOT_EMPTY = "bucket not empty"
    NO_UPLOAD = "no such upload"
    INVALID_PART = "invalid part"  # CompleteMultipartUpload names a part that is gone or changed
    NO_KEY = "no such access key"


class ChunkUnavailable(Exception):
    """A node could not serve or store a chunk (unreachable, refused, I/O error); `node` says which."""

    def __init__(self, node: str, chunk_id: str, why: str) -> None:
        self.node, self.chunk_id, self.why = node, chunk_id, why
        super().__init__(f"chunk {chunk_id[:12]} on {node}: {why}")


class ChunkMismatch(ChunkUnavailable):
    """The node's copy is bad: the bytes it sent do not hash to the id, or it found its copy corrupt itself (a client
    that checks what it receives, as dataplane.objects.peer's does, raises this). The caller records the copy as bad
    for read-repair."""


class ChunkMissing(ChunkUnavailable):
    """The node answered that it does not hold the chunk (dataplane.objects.peer's ChunkNotFound is one): the copy is
    gone (deleted as corrupt by the node's own check, a wiped disk), so the caller forgets that holder."""


class ChunkBusy(ChunkUnavailable):
    """The node refused for want of room right now (too many requests at once): try again shortly."""


class ChunkClient(Protocol):
    async def put(self, node: str, chunk_id: str, data: bytes) -> None:
        """Store the chunk on `node` (idempotent); raises ChunkUnavailable."""
        ...

    async def get(self, node: str, chunk_id: str) -> bytes:
        """The chunk's bytes as `node` has them: the caller verifies them against the id. Raises ChunkUnavailable."""
        ...

    async def delete(self, node: str, chunk_id: str) -> None: ...

    async def has(self, node: str, chunk_ids: Sequence[str]) -> frozenset[str]:
        """Which of `chunk_ids` the node holds."""
        ...


class Metadata(Protocol):
    # buckets
    async def list_buckets(self) -> list[BucketRecord]: ...

    async def get_bucket(self, name: str) -> BucketRecord | None: ...

    async def create_bucket(self, bucket: BucketRecord) -> Outcome:
        """DONE, or EXISTS."""
        ...

    async def delete_bucket(self, name: str) -> Outcome:
        """DONE, NO_BUCKET or NOT_EMPTY (objects or uploads in it), decided atomically against concurrent commits."""
        ...

    # objects
    async def get_manifest(self, bucket: str, key: str) -> Manifest | None: ...

    async def list_manifests(self, bucket: str, prefix: str, after: str) -> Iterable[Manifest] | Outcome:
        """Manifests with keys starting with `prefix` and sorting (UTF-8 bytes) after `after`; NO_BUCKET."""
        ...

    async def commit_manifest(self, bucket: str, manifest: Manifest, *, if_absent: bool = False) -> Outcome:
        """Make `manifest` the object at its key, replacing any previous one: DONE, NO_BUCKET, or EXISTS when
        `if_absent` and the key exists at the moment of the commit (checked in the same transaction)."""
        ...

    async def delete_manifest(self, bucket: str, key: str) -> Outcome:
        """DONE (also for a missing key) or NO_BUCKET."""
        ...

    async def referenced_chunks(self) -> frozenset[str]:
        """Every chunk id a manifest or an uploaded part refers to (for garbage collection)."""
        ...

    # chunk locations
    async def get_chunks(self, ids: Sequence[str]) -> dict[str, ChunkRecord]: ...

    async def list_chunks(self) -> list[ChunkRecord]: ...

    async def update_chunk(self, chunk_id: str, size: int, *, add: Iterable[str] = (), remove: Iterable[str] = (),
                           bad: Iterable[str] = (), touched: float | None = None,
                           stripe: Stripe | None = None) -> ChunkRecord:
        """Merge into the chunk's record atomically (created when missing): holders += add, holders -= remove
        (a removed holder is no longer bad either), bad += bad, touched = max(touched, given); stripe: set when the
        record has none (a stripe never changes once set: its fragments are content-addressed)."""
        ...

    async def drop_chunk(self, chunk_id: str, *, unless_touched_since: float) -> bool:
        """Forget the chunk record, unless a writer touched it at or after `unless_touched_since` (atomic)."""
        ...

    # orphan copies: (node, chunk id) pairs that may hold bytes no record lists (a delete that failed after the
    # record forgot the holder, a write whose outcome is unknown); the sweep (repairer.sweep_orphans) deletes them
    async def note_orphans(self, node: str, chunk_ids: Iterable[str], at: float) -> None:
        """Remember that `node` may hold these chunks unlisted (kept with the earliest `at`)."""
        ...

    async def list_orphans(self) -> list[tuple[str, str, float]]:
        """Every noted (node, chunk id, noted at)."""
        ...

    async def forget_orphan(self, node: str, chunk_id: str) -> None: ...

    # multipart
    async def create_upload(self, upload: UploadInfo) -> Outcome: ...

    async def get_upload(self, upload_id: str) -> UploadInfo | None: ...

    async def put_part(self, upload_id: str, part: PartRecord) -> Outcome:
        """DONE or NO_UPLOAD."""
        ...

    async def list_parts(self, upload_id: str) -> list[PartRecord] | Outcome: ...

    async def complete_upload(self, upload_id: str, info: ObjectInfo, parts: Sequence[int]) -> Outcome:
        """Make the object `info` (its key is the upload's) out of the uploaded `parts`, in order, and forget the
        upload, in one transaction that reads the parts itself: DONE, NO_UPLOAD, NO_BUCKET, or INVALID_PART when a
        part is missing or its size/ETag no longer add up to `info` (re-uploaded since the caller checked)."""
        ...

    async def drop_upload(self, upload_id: str) -> Outcome: ...

    # access keys
    async def get_key(self, access_key: str) -> AccessKey | None: ...

    async def list_keys(self) -> list[AccessKey]:
        """Every access key, by access key id (the gateway's `access.Keyring` is built from this)."""
        ...

    async def put_key(self, key: AccessKey) -> None: ...

    async def delete_key(self, access_key: str) -> Outcome:
        """DONE or NO_KEY."""
        ...

"""`StoreMetadata`: the object store's `Metadata` port (dataplane/objects/ports.py) over the coordinator's state
store (SQLite, or etcd with replicated coordinators). Every commit is one store transaction, conditional on the
revisions it read (`expect`), retried from a fresh read on a conflict, so concurrent writers anywhere are
linearizable: a commit that returned is seen by every later read through any `StoreMetadata` on the same store.

Keys (values are JSON, coordinator/objects_codec.py):
  /objects/buckets/<bucket>              the bucket (name, created, replicas)
  /objects/closed/<bucket>               while a DeleteBucket decides, and after it deleted the bucket (see below)
  /objects/manifests/<bucket>/<key>      an object's manifest (S3 info + chunk ids in order)
  /objects/chunks/<chunk id>             where a chunk lives (holders, bad copies, last touched)
  /objects/uploads/<upload id>           a multipart upload in progress
  /objects/parts/<upload id>/<00001>     its uploaded parts (with their chunks)
  /objects/keys/<access key>             an access key with its bucket permissions
  /objects/orphans/<node>/<chunk id>     a copy that may exist unlisted (a failed delete), until swept

DeleteBucket against concurrent commits: a commit into a bucket requires `/objects/closed/<bucket>` absent (a delete
with expect 0 is etcd's "key must not exist" compare), so commits into one bucket do not contend with each other.
DeleteBucket first creates the marker, then lists the bucket's objects and uploads: a commit that landed before the
marker is in that list; any later one conflicts on the marker and retries. A bucket found empty is deleted and the
marker stays as its tombstone (a late commit that read the bucket before it went conflicts and finds it gone); a
bucket found busy loses its marker again (a coordinator that crashes right there leaves the bucket refusing commits
until a DeleteBucket is retried, which adopts the marker). CreateBucket removes the tombstone as it creates.

Access keys: the secret is stored sealed (`SecretSealer`; in a cluster `EnvelopeSealer`, the secrets service's envelope
encryption: a fresh data key per secret, wrapped by the active master key, bound to the access key id), never in
plaintext. SigV4 needs the plaintext secret to compute its HMAC, so it cannot be hashed; the gateway opens the secrets
into its in-memory keyring.

Limits: a manifest is one value (etcd's default request limit of 1.5 MiB holds about 20,000 chunk ids, a 20 GiB
object); `referenced_chunks` reads every manifest and part (garbage collection is a periodic scan)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any, Protocol, TypeVar

from coordinator import objects_codec as codec
from coordinator.secrets import envelope
from coordinator.store import Conflict, Entry, Op, Store, StoreError, delete, put
from dataplane.objects.model import AccessKey, BucketRecord, ChunkRecord, Manifest, PartRecord, Stripe
from dataplane.objects.ports import Outcome
from dataplane.s3.backend import ObjectInfo, UploadInfo
from dataplane.s3.multipart import multipart_etag

log = logging.getLogger(__name__)

ROOT = "/objects/"
T = TypeVar("T")
GET_CHUNKS_AT_ONCE = 32
DECODE_SLICE = 256  # records decoded per loop step: 100k chunk records are ~1 s of CPU (review 4, M5)
MARKER_STALE_S = 30.0  # a DeleteBucket decides within a few round trips; a marker this old was left by a crash
RETRIES = 200  # conflicts in a row before giving up (each retry re-reads; only a livelock gets this far)


def _bucket(name: str) -> str:
    return f"{ROOT}buckets/{name}"


def _closed(name: str) -> str:
    return f"{ROOT}closed/{name}"


def _manifests(bucket: str) -> str:
    return f"{ROOT}manifests/{bucket}/"


def _chunk(chunk_id: str) -> str:
    return f"{ROOT}chunks/{chunk_id}"


def _upload(upload_id: str) -> str:
    return f"{ROOT}uploads/{upload_id}"


def _parts(upload_id: str) -> str:
    return f"{ROOT}parts/{upload_id}/"


def _orphan(node: str, chunk_id: str) -> str:
    return f"{ROOT}orphans/{node}/{chunk_id}"


def _key(access_key: str) -> str:
    return f"{ROOT}keys/{access_key}"



Decoded = TypeVar("Decoded")


async def _decoded(entries: Sequence[Entry], decode: Callable[[str, bytes], Decoded]) -> list[Decoded]:
    """Decode listed entries in slices of DECODE_SLICE, yielding to the event loop between slices, so a listing of
    the whole metadata (repair, GC) does not hold S3, MQTT and the scheduler for a second (review 4, M5)."""
    out: list[Decoded] = []
    for start in range(0, len(entries), DECODE_SLICE):
        if start:
            await asyncio.sleep(0)
        out.extend(decode(e.key, e.value) for e in entries[start:start + DECODE_SLICE])
    return out

class SecretSealer(Protocol):
    """Seals an access key's secret for the store and opens it again (bound to the access key id)."""

    def seal(self, access_key: str, secret: str) -> dict[str, Any]: ...

    def open(self, access_key: str, sealed: dict[str, Any]) -> str:
        """The secret; raises envelope.EnvelopeError when it cannot be opened (wrong master key, tampered)."""
        ...


KEYS_NAMESPACE = "objects/keys"  # the envelope binding's namespace: no secret namespace has a '/' in it


class EnvelopeSealer:
    """`SecretSealer` with the secrets service's envelope encryption. `keyring` is read at every call, so a rotated
    master key seals new secrets from then on (older ones stay readable while the keyring holds their key)."""

    def __init__(self, keyring: Callable[[], envelope.Keyring]) -> None:
        self._keyring = keyring

    def seal(self, access_key: str, secret: str) -> dict[str, Any]:
        sealed = envelope.seal_version(self._keyring(), envelope.Binding(KEYS_NAMESPACE, access_key, 1),
                                       {"secret": secret.encode()})
        return sealed.to_json()

    def open(self, access_key: str, sealed: dict[str, Any]) -> str:
        opened = envelope.open_version(self._keyring(), envelope.Binding(KEYS_NAMESPACE, access_key, 1),
                                       envelope.SealedVersion.from_json(sealed))
        return opened["secret"].decode()


class MetadataContended(Exception):
    """A commit kept conflicting with other writers past RETRIES attempts."""


async def _retrying(attempt: Callable[[], Awaitable[T]]) -> T:
    for tries in range(RETRIES):
        try:
            return await attempt()
        except Conflict:
            await asyncio.sleep(min(0.001 * tries, 0.05))  # a DeleteBucket decides within a few store round trips
    raise MetadataContended(f"gave up after {RETRIES} conflicting attempts")


class StoreMetadata:
    """`sealer` seals access-key secrets; without one, access keys cannot be stored or read (StoreError)."""

    def __init__(self, store: Store, sealer: SecretSealer | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._sealer = sealer
        self._clock = clock

    def _need_sealer(self) -> SecretSealer:
        if self._sealer is None:
            raise StoreError("access keys need a secret sealer (the secrets service): none was given")
        return self._sealer

    async def _guard(self, bucket: str) -> list[Op] | None:
        """The op that makes a commit conditional on the bucket not being deleted meanwhile; None: no such bucket.
        A marker older than MARKER_STALE_S on a bucket that still exists was left by a DeleteBucket that crashed
        deciding: it is cleared (conditionally; a DeleteBucket still at work then conflicts on its own marker and
        decides again), so commits into the bucket do not fail for good (review 3, L3)."""
        if await self._store.get(_bucket(bucket)) is None:
            return None
        marker = await self._store.get(_closed(bucket))
        if marker is not None and self._clock() - codec.marker_at(marker.key, marker.value) >= MARKER_STALE_S:
            log.warning("bucket %s: clearing a DeleteBucket marker left %.0f s ago", bucket,
                        self._clock() - codec.marker_at(marker.key, marker.value))
            with contextlib.suppress(Conflict):
                await self._store.txn([delete(marker.key, expect=marker.mod_revision)])
        return [delete(_closed(bucket), expect=0)]

    # ---- buckets -------------------------------------------------------------------------------------------------

    async def list_buckets(self) -> list[BucketRecord]:
        return [codec.bucket_from(e.key, e.value) for e in await self._store.list(f"{ROOT}buckets/")]

    async def get_bucket(self, name: str) -> BucketRecord | None:
        entry = await self._store.get(_bucket(name))
        return codec.bucket_from(entry.key, entry.value) if entry else None

    async def create_bucket(self, bucket: BucketRecord) -> Outcome:
        try:
            await self._store.txn([put(_bucket(bucket.name), codec.bucket_doc(bucket), expect=0),
                                   delete(_closed(bucket.name))])
        except Conflict:
            return Outcome.EXISTS
        return Outcome.DONE

    async def delete_bucket(self, name: str) -> Outcome:
        async def attempt() -> Outcome:
            entry = await self._store.get(_bucket(name))
            if entry is None:
                return Outcome.NO_BUCKET
            stale = await self._store.get(_closed(name))  # left by a DeleteBucket that crashed deciding: adopt it
            mark = codec.dump({"at": self._clock()})
            marker = stale.mod_revision if stale else await self._store.txn([put(_closed(name), mark, expect=0)])
            busy = bool(await self._store.list(_manifests(name))) or any(
                u.bucket == name for u in await self._uploads())
            if busy:
                await self._store.txn([delete(_closed(name), expect=marker)])
                return Outcome.NOT_EMPTY
            # the marker stays as the tombstone; expecting it unchanged means nobody cleared it as stale meanwhile
            # (a commit could have landed since the listing then)
            await self._store.txn([delete(entry.key, expect=entry.mod_revision),
                                   put(_closed(name), mark, expect=marker)])
            return Outcome.DONE

        return await _retrying(attempt)

    # ---- objects -------------------------------------------------------------------------------------------------

    async def get_manifest(self, bucket: str, key: str) -> Manifest | None:
        entry = await self._store.get(_manifests(bucket) + key)
        return codec.manifest_from(entry.key, entry.value) if entry else None

    async def list_manifests(self, bucket: str, prefix: str, after: str) -> Iterable[Manifest] | Outcome:
        if await self._store.get(_bucket(bucket)) is None:
            return Outcome.NO_BUCKET
        base = _manifests(bucket)
        entries = await self._store.list(base + prefix)
        mark = after.encode()
        found = await _decoded([e for e in entries if e.key[len(base):].encode() > mark], codec.manifest_from)
        return sorted(found, key=lambda m: m.info.key.encode())

    async def commit_manifest(self, bucket: str, manifest: Manifest, *, if_absent: bool = False) -> Outcome:
        async def attempt() -> Outcome:
            guard = await self._guard(bucket)
            if guard is None:
                return Outcome.NO_BUCKET
            key = _manifests(bucket) + manifest.info.key
            try:
                await self._store.txn([*guard, put(key, codec.manifest_doc(manifest), 0 if if_absent else None)])
            except Conflict as exc:
                if exc.key == key:
                    return Outcome.EXISTS
                raise
            return Outcome.DONE

        return await _retrying(attempt)

    async def delete_manifest(self, bucket: str, key: str) -> Outcome:
        if await self._store.get(_bucket(bucket)) is None:
            return Outcome.NO_BUCKET
        await self._store.txn([delete(_manifests(bucket) + key)])
        return Outcome.DONE

    async def referenced_chunks(self) -> frozenset[str]:
        """Parts first, then manifests: references only move from parts to a manifest (CompleteMultipartUpload
        commits the manifest, then drops the parts), so a chunk referenced throughout is seen in at least one of
        the two lists. (The other order could miss it: manifests listed before the commit, parts after the drop.)"""
        ids: set[str] = set()
        for part in await _decoded(await self._store.list(f"{ROOT}parts/"), codec.part_from):
            ids.update(c.id for c in part.chunks)
        for manifest in await _decoded(await self._store.list(f"{ROOT}manifests/"), codec.manifest_from):
            ids.update(c.id for c in manifest.chunks)
        return frozenset(ids)

    # ---- chunk locations -----------------------------------------------------------------------------------------

    async def get_chunks(self, ids: Sequence[str]) -> dict[str, ChunkRecord]:
        """One get per id, GET_CHUNKS_AT_ONCE in flight (each is linearizable on its own; a read window of 16
        chunks no longer waits for 16 round trips one after the other; review 3, L5)."""
        found = {}
        for start in range(0, len(ids), GET_CHUNKS_AT_ONCE):
            if start and start % DECODE_SLICE == 0:
                await asyncio.sleep(0)  # a store that answers without suspending would not yield (review 4, M5)
            window = ids[start:start + GET_CHUNKS_AT_ONCE]
            entries = await asyncio.gather(*(self._store.get(_chunk(cid)) for cid in window))
            for cid, entry in zip(window, entries, strict=True):
                if entry is not None:
                    found[cid] = codec.chunk_from(entry.key, entry.value)
        return found

    async def list_chunks(self) -> list[ChunkRecord]:
        return await _decoded(await self._store.list(f"{ROOT}chunks/"), codec.chunk_from)

    async def update_chunk(self, chunk_id: str, size: int, *, add: Iterable[str] = (), remove: Iterable[str] = (),
                           bad: Iterable[str] = (), touched: float | None = None,
                           stripe: Stripe | None = None) -> ChunkRecord:
        added, removed, marked = frozenset(add), frozenset(remove), frozenset(bad)

        async def attempt() -> ChunkRecord:
            entry = await self._store.get(_chunk(chunk_id))
            record = codec.chunk_from(entry.key, entry.value) if entry else ChunkRecord(chunk_id, size)
            record = replace(record, holders=(record.holders | added) - removed, bad=(record.bad - removed) | marked,
                             touched=max(record.touched, record.touched if touched is None else touched),
                             stripe=record.stripe or stripe)
            await self._store.txn([put(_chunk(chunk_id), codec.chunk_doc(record),
                                       expect=entry.mod_revision if entry else 0)])
            return record

        return await _retrying(attempt)

    async def drop_chunk(self, chunk_id: str, *, unless_touched_since: float) -> bool:
        async def attempt() -> bool:
            entry = await self._store.get(_chunk(chunk_id))
            if entry is None or codec.chunk_from(entry.key, entry.value).touched >= unless_touched_since:
                return False
            await self._store.txn([delete(entry.key, expect=entry.mod_revision)])
            return True

        return await _retrying(attempt)

    # ---- orphan copies -------------------------------------------------------------------------------------------

    async def note_orphans(self, node: str, chunk_ids: Iterable[str], at: float) -> None:
        ids = sorted(set(chunk_ids))
        for start in range(0, len(ids), 100):  # etcd's per-transaction limit; each key on its own is enough
            entries = [(cid, await self._store.get(_orphan(node, cid))) for cid in ids[start:start + 100]]
            ops = [put(_orphan(node, cid), codec.dump({"at": at}), expect=0) for cid, e in entries if e is None]
            if ops:
                with contextlib.suppress(Conflict):  # noted meanwhile by another writer: the earlier one stays
                    await self._store.txn(ops)

    async def list_orphans(self) -> list[tuple[str, str, float]]:
        found = []
        for e in await self._store.list(f"{ROOT}orphans/"):
            node, _, cid = e.key[len(f"{ROOT}orphans/"):].partition("/")
            found.append((node, cid, codec.orphan_at(e.key, e.value)))
        return found

    async def forget_orphan(self, node: str, chunk_id: str) -> None:
        await self._store.txn([delete(_orphan(node, chunk_id))])

    # ---- multipart -----------------------------------------------------------------------------------------------

    async def _uploads(self) -> list[UploadInfo]:
        return [codec.upload_from(e.key, e.value) for e in await self._store.list(f"{ROOT}uploads/")]

    async def create_upload(self, upload: UploadInfo) -> Outcome:
        async def attempt() -> Outcome:
            guard = await self._guard(upload.bucket)
            if guard is None:
                return Outcome.NO_BUCKET
            await self._store.txn([*guard, put(_upload(upload.upload_id), codec.upload_doc(upload), expect=0)])
            return Outcome.DONE

        return await _retrying(attempt)

    async def get_upload(self, upload_id: str) -> UploadInfo | None:
        entry = await self._store.get(_upload(upload_id))
        return codec.upload_from(entry.key, entry.value) if entry else None

    async def put_part(self, upload_id: str, part: PartRecord) -> Outcome:
        async def attempt() -> Outcome:
            entry = await self._store.get(_upload(upload_id))
            if entry is None:
                return Outcome.NO_UPLOAD
            await self._store.txn([put(entry.key, entry.value, expect=entry.mod_revision),  # still in progress
                                   put(f"{_parts(upload_id)}{part.info.number:05d}", codec.part_doc(part))])
            return Outcome.DONE

        return await _retrying(attempt)

    async def list_parts(self, upload_id: str) -> list[PartRecord] | Outcome:
        if await self._store.get(_upload(upload_id)) is None:
            return Outcome.NO_UPLOAD
        return [codec.part_from(e.key, e.value) for e in await self._store.list(_parts(upload_id))]

    async def complete_upload(self, upload_id: str, info: ObjectInfo, parts: Sequence[int]) -> Outcome:
        """Build the object from the named parts and commit it, forgetting the upload, in one transaction: the
        upload entry, the bucket and the parts are read inside the attempt and the commit expects the upload entry
        unchanged (every UploadPart bumps it), so the manifest is made of exactly the parts it was checked against.
        INVALID_PART when a named part is missing or no longer the one `info` (size, ETag) was computed from."""
        async def attempt() -> Outcome:
            entry = await self._store.get(_upload(upload_id))
            if entry is None:
                return Outcome.NO_UPLOAD
            upload = codec.upload_from(entry.key, entry.value)
            bucket = await self.get_bucket(upload.bucket)
            if bucket is None:
                return Outcome.NO_BUCKET
            records = {p.info.number: p for p in (codec.part_from(e.key, e.value)
                                                   for e in await self._store.list(_parts(upload_id)))}
            chosen = [records.get(n) for n in parts]
            if any(p is None for p in chosen):
                return Outcome.INVALID_PART
            found = [p for p in chosen if p is not None]
            if (sum(p.info.size for p in found) != info.size
                    or multipart_etag([p.info.etag for p in found]) != info.etag):
                return Outcome.INVALID_PART
            manifest = Manifest(replace(info, key=upload.key), tuple(c for p in found for c in p.chunks),
                                bucket.replicas)
            await self._store.txn([delete(_closed(upload.bucket), expect=0), delete(entry.key,
                                   expect=entry.mod_revision),
                                   put(_manifests(upload.bucket) + upload.key, codec.manifest_doc(manifest))])
            return Outcome.DONE

        outcome = await _retrying(attempt)
        if outcome is Outcome.DONE:
            await self._drop_parts(upload_id)
        return outcome

    async def _drop_parts(self, upload_id: str) -> None:
        """After the upload key is gone (nobody can add a part): the part records, in batches under etcd's limit."""
        keys = [e.key for e in await self._store.list(_parts(upload_id))]
        for start in range(0, len(keys), 100):
            await self._store.txn([delete(k) for k in keys[start:start + 100]])

    async def drop_upload(self, upload_id: str) -> Outcome:
        entry = await self._store.get(_upload(upload_id))
        if entry is None:
            return Outcome.NO_UPLOAD
        try:
            await self._store.txn([delete(entry.key, expect=entry.mod_revision)])
        except Conflict:
            return Outcome.NO_UPLOAD  # completed or aborted meanwhile
        await self._drop_parts(upload_id)
        return Outcome.DONE

    # ---- access keys ---------------------------------------------------------------------------------------------

    def _key_from(self, key: str, raw: bytes) -> AccessKey:
        sealer = self._need_sealer()
        return codec.access_key_from(key, raw, sealer.open)

    async def get_key(self, access_key: str) -> AccessKey | None:
        entry = await self._store.get(_key(access_key))
        return self._key_from(entry.key, entry.value) if entry else None

    async def list_keys(self) -> list[AccessKey]:
        """Every key whose secret opens; one that does not (a master key missing from the keyring) is logged and
        left out, so one bad entry does not lock every client out."""
        keys = []
        for e in await self._store.list(f"{ROOT}keys/"):
            try:
                keys.append(self._key_from(e.key, e.value))
            except (envelope.EnvelopeError, StoreError) as exc:
                log.error("access key %s left out: %s", e.key.rsplit("/", 1)[-1], exc)
        return keys

    async def put_key(self, key: AccessKey) -> None:
        sealed = self._need_sealer().seal(key.access_key, key.secret)
        await self._store.txn([put(_key(key.access_key), codec.access_key_doc(key, sealed))])

    async def delete_key(self, access_key: str) -> Outcome:
        entry = await self._store.get(_key(access_key))
        if entry is None:
            return Outcome.NO_KEY
        try:
            await self._store.txn([delete(entry.key, expect=entry.mod_revision)])
        except Conflict:
            return await self.delete_key(access_key)  # replaced meanwhile: delete what is there now
        return Outcome.DONE

"""JSON documents for the object store's records in the coordinator's store (coordinator/objects.py), and back.
Decoding is strict: an entry that does not parse is a corrupt store (StoreError naming the key and field), never a
silently wrong manifest."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from coordinator.store import StoreError
from dataplane.objects import erasure
from dataplane.objects.chunking import COMPRESSIONS, ChunkRef, is_chunk_id
from dataplane.objects.model import AccessKey, BucketRecord, ChunkRecord, Manifest, PartRecord
from dataplane.s3.backend import ObjectInfo, PartInfo, UploadInfo
from dataplane.s3.checksums import Algorithm


def dump(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


class _Doc:
    """Typed access to one decoded document; every failure names the key and the field."""

    def __init__(self, key: str, raw: bytes | dict[str, Any]) -> None:
        self.key = key
        if isinstance(raw, dict):
            self.doc = raw
            return
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StoreError(f"{key}: not a JSON document ({exc})") from exc
        if not isinstance(doc, dict):
            raise StoreError(f"{key}: not a JSON object")
        self.doc = doc

    def get(self, name: str, kind: type | tuple[type, ...]) -> Any:
        value = self.doc.get(name)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float, (int, float))):
            raise StoreError(f"{self.key}: field {name!r} is missing or not {kind}")
        return value

    def number(self, name: str) -> float:
        return float(self.get(name, (int, float)))

    def sub(self, name: str) -> _Doc:
        return _Doc(f"{self.key}.{name}", self.get(name, dict))

    def pairs(self, name: str) -> tuple[tuple[str, str], ...]:
        items = self.get(name, list)
        if not all(isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) for s in p) for p in items):
            raise StoreError(f"{self.key}: field {name!r} must be a list of string pairs")
        return tuple((a, b) for a, b in items)

    def chunks(self, name: str) -> tuple[ChunkRef, ...]:
        """`[id, size]` for a chunk stored as the object's bytes, `[id, size, codec, plaintext size]` for a
        compressed one (manifests from before compression have only the first form)."""
        items = self.get(name, list)
        if not all(_chunk_entry_ok(c) for c in items):
            raise StoreError(f"{self.key}: field {name!r} must be a list of [chunk id, size] or "
                             f"[chunk id, size, {' | '.join(COMPRESSIONS)}, plaintext size]")
        return tuple(ChunkRef(c[0], c[1]) if len(c) == 2 else ChunkRef(c[0], c[1], c[2], c[3]) for c in items)

    def names(self, name: str) -> frozenset[str]:
        items = self.get(name, list)
        if not all(isinstance(s, str) for s in items):
            raise StoreError(f"{self.key}: field {name!r} must be a list of node ids")
        return frozenset(items)


def _size_ok(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _chunk_entry_ok(c: object) -> bool:
    if not isinstance(c, list) or len(c) not in (2, 4) or not is_chunk_id(c[0]) or not _size_ok(c[1]):
        return False
    return len(c) == 2 or (c[2] in COMPRESSIONS and _size_ok(c[3]))


def _chunk_entries(chunks: tuple[ChunkRef, ...]) -> list[list[Any]]:
    return [[c.id, c.size] if c.codec is None else [c.id, c.size, c.codec, c.plain] for c in chunks]


# ---- buckets, keys ----------------------------------------------------------------------------------------------

def bucket_doc(bucket: BucketRecord) -> bytes:
    return dump({"name": bucket.name, "created": bucket.created, "replicas": bucket.replicas,
                 "erasure": erasure.code_doc(bucket.erasure), "compression": bucket.compression})


def bucket_from(key: str, raw: bytes) -> BucketRecord:
    d = _Doc(key, raw)
    try:
        code = erasure.code_from_doc(d.doc.get("erasure"))  # absent (older documents): replicated
    except ValueError as exc:
        raise StoreError(f"{key}: {exc}") from exc
    compression = d.doc.get("compression")  # absent (older documents): none
    if compression is not None and compression not in COMPRESSIONS:
        raise StoreError(f"{key}: field 'compression' must be one of {', '.join(COMPRESSIONS)} or null")
    return BucketRecord(d.get("name", str), d.number("created"), d.get("replicas", int), code, compression)


def access_key_doc(key: AccessKey, sealed: dict[str, Any]) -> bytes:
    """The key with its secret sealed (`sealed`, from coordinator.objects.SecretSealer): never the plaintext."""
    return dump({"access_key": key.access_key, "sealed": sealed, "owner": key.owner,
                 "buckets": [list(p) for p in key.buckets]})


def access_key_from(key: str, raw: bytes, open_secret: Callable[[str, dict[str, Any]], str]) -> AccessKey:
    """`open_secret(access key, sealed)` opens the sealed secret. An entry written before secrets were sealed
    (plaintext `secret`) is still read; the next put seals it."""
    d = _Doc(key, raw)
    access_key = d.get("access_key", str)
    secret = open_secret(access_key, d.get("sealed", dict)) if "sealed" in d.doc else d.get("secret", str)
    return AccessKey(access_key, secret, d.get("owner", str), d.pairs("buckets"))


# ---- objects ----------------------------------------------------------------------------------------------------

def _info_doc(info: ObjectInfo) -> dict[str, Any]:
    return {"key": info.key, "size": info.size, "etag": info.etag, "last_modified": info.last_modified,
            "content_type": info.content_type, "metadata": [list(p) for p in info.metadata],
            "checksum": list(info.checksum) if info.checksum else None, "parts": info.parts}


def _info_from(d: _Doc) -> ObjectInfo:
    checksum = d.doc.get("checksum")
    if checksum is not None:
        if not (isinstance(checksum, list) and len(checksum) == 2 and checksum[0] in set(Algorithm)
                and isinstance(checksum[1], str)):
            raise StoreError(f"{d.key}: field 'checksum' must be [algorithm, value]")
        checksum = (Algorithm(checksum[0]), checksum[1])
    return ObjectInfo(d.get("key", str), d.get("size", int), d.get("etag", str), d.number("last_modified"),
                      content_type=d.get("content_type", str), metadata=d.pairs("metadata"), checksum=checksum,
                      parts=d.get("parts", int))


def manifest_doc(manifest: Manifest) -> bytes:
    return dump({"info": _info_doc(manifest.info), "chunks": _chunk_entries(manifest.chunks),
                 "replicas": manifest.replicas})


def manifest_from(key: str, raw: bytes) -> Manifest:
    d = _Doc(key, raw)
    return Manifest(_info_from(d.sub("info")), d.chunks("chunks"), d.get("replicas", int))


def upload_doc(upload: UploadInfo) -> bytes:
    return dump({"upload_id": upload.upload_id, "bucket": upload.bucket, "key": upload.key,
                 "initiated": upload.initiated, "content_type": upload.content_type,
                 "metadata": [list(p) for p in upload.metadata]})


def upload_from(key: str, raw: bytes) -> UploadInfo:
    d = _Doc(key, raw)
    return UploadInfo(d.get("upload_id", str), d.get("bucket", str), d.get("key", str), d.number("initiated"),
                      content_type=d.get("content_type", str), metadata=d.pairs("metadata"))


def part_doc(part: PartRecord) -> bytes:
    return dump({"number": part.info.number, "size": part.info.size, "etag": part.info.etag,
                 "last_modified": part.info.last_modified, "chunks": _chunk_entries(part.chunks)})


def part_from(key: str, raw: bytes) -> PartRecord:
    d = _Doc(key, raw)
    info = PartInfo(d.get("number", int), d.get("size", int), d.get("etag", str), d.number("last_modified"))
    return PartRecord(info, d.chunks("chunks"))


def marker_at(key: str, raw: bytes) -> float:
    """When a DeleteBucket marker was set (0: a marker from before markers carried the time)."""
    at = _Doc(key, raw).doc.get("at", 0.0)
    return float(at) if isinstance(at, int | float) and not isinstance(at, bool) else 0.0


def orphan_at(key: str, raw: bytes) -> float:
    return _Doc(key, raw).number("at")


# ---- chunk locations --------------------------------------------------------------------------------------------

def chunk_doc(record: ChunkRecord) -> bytes:
    return dump({"id": record.id, "size": record.size, "holders": sorted(record.holders), "bad": sorted(record.bad),
                 "touched": record.touched, "stripe": erasure.stripe_doc(record.stripe)})


def chunk_from(key: str, raw: bytes) -> ChunkRecord:
    d = _Doc(key, raw)
    try:
        stripe = erasure.stripe_from_doc(d.doc.get("stripe"))  # absent (older documents): replicated
    except ValueError as exc:
        raise StoreError(f"{key}: {exc}") from exc
    return ChunkRecord(d.get("id", str), d.get("size", int), d.names("holders"), d.names("bad"), d.number("touched"),
                       stripe)

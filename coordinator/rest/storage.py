"""The object store over REST (issue 20): its status, its buckets and the S3 access keys.

An adapter: the gateway (`StorageAdmin`, coordinator.rest.ports) reports the status and holds the metadata; the
handlers check what comes in (every field, a 400 naming it) and shape what goes out. Access keys: a key is a
generated access key id and secret with a name (its `owner`: a person or a workload) and a grant per bucket (or `*`:
every bucket) of `read`, `write` or `admin` (dataplane.objects.access). The secret is in the answer to the POST that
made it and never again: the store keeps it sealed (coordinator.objects), the list shows ids, names and grants.
Without storage (the cluster runs no S3 gateway) every route here answers 503 saying how to turn it on.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from broker.wire import valid_id
from coordinator.errors import CoordinatorError, SpecError
from coordinator.operations import InUse, NotFound
from coordinator.rest.paged import Budget
from coordinator.rest.ports import StorageAdmin
from coordinator.rest.routes import Route, json_object, path_name
from dataplane.objects import access
from dataplane.objects.chunking import COMPRESSIONS
from dataplane.objects.model import DEFAULT_REPLICAS, AccessKey, BucketRecord
from dataplane.objects.ports import Outcome
from dataplane.s3.errors import ErrorCode
from dataplane.s3.routing import valid_bucket_name

NO_STORE = {"Cache-Control": "no-store"}  # the answer carrying a new secret is never cached
MAX_GRANTS = 64
MAX_REPLICAS = 5
_CAMEL = re.compile(r"_([a-z0-9])")

ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/storage/status", "storage_status",
          "The object store: each storage node's quota, used bytes, chunks and whether it is online; chunks in "
          "total, under-replicated and unrecoverable; repair progress", response="StorageStatus"),
    Route("GET", "/v1/storage/buckets", "list_buckets",
          "Buckets with their replication factor, object count and bytes", response="BucketList"),
    Route("POST", "/v1/storage/buckets", "create_bucket",
          "Create a bucket: replicated (replicas: copies of each chunk, default 2) or erasure-coded (erasure: \"4+2\", "
          "needs 6 storage nodes); 409 if it exists", body="BucketCreate",
          response="Bucket", ok=(201,)),
    Route("DELETE", "/v1/storage/buckets/{bucket}", "delete_bucket",
          "Delete an empty bucket (409 while it holds objects or uploads)", response="BucketDeleted"),
    Route("GET", "/v1/storage/keys", "list_storage_keys",
          "S3 access keys: id, name and bucket grants (never the secret)", response="StorageKeyList"),
    Route("POST", "/v1/storage/keys", "create_storage_key",
          "Make an S3 access key for a person or workload with grants per bucket (read, write, admin; `*`: every "
          "bucket); the answer holds the secret, shown this once", body="StorageKeyCreate",
          response="StorageKeyCreated", ok=(201,)),
    Route("DELETE", "/v1/storage/keys/{id}", "delete_storage_key", "Delete an S3 access key (it stops working at "
          "once)", response="StorageKeyDeleted"),
)

_LEVELS = [level.name.lower() for level in access.Level]
BODY_SCHEMAS: dict[str, dict[str, Any]] = {
    "BucketCreate": {"type": "object", "additionalProperties": False, "required": ["name"], "properties": {
        "name": {"type": "string", "description": "S3 bucket name: 3-63 of a-z 0-9 . -"},
        "replicas": {"type": "integer", "minimum": 1, "maximum": MAX_REPLICAS},
        "erasure": {"type": "string", "description": "an erasure code instead of replicas: \"4+2\" (RS(4,2))"},
        "compression": {"type": ["string", "null"], "enum": [*COMPRESSIONS, None],
                        "description": "compress each chunk with zstd before it is stored (a chunk that does not "
                                       "shrink by at least 1/8 is stored as it is); combines with replicas or "
                                       "erasure"}}},
    "StorageKeyCreate": {"type": "object", "additionalProperties": False, "required": ["name", "buckets"],
                         "properties": {
                             "name": {"type": "string", "description": "who the key is for (a person or workload)"},
                             "buckets": {"type": "object", "minProperties": 1, "maxProperties": MAX_GRANTS,
                                         "description": "bucket name (or `*`: every bucket) -> permission",
                                         "additionalProperties": {"type": "string", "enum": _LEVELS}}}},
}


def camel(doc: Any) -> Any:
    """`doc` with every object key in camelCase (the gateway reports snake_case; the API speaks camelCase)."""
    if isinstance(doc, Mapping):
        return {_CAMEL.sub(lambda m: m.group(1).upper(), str(k)): camel(v) for k, v in doc.items()}
    if isinstance(doc, (list, tuple)):
        return [camel(v) for v in doc]
    return doc


def bucket_json(bucket: BucketRecord) -> dict[str, Any]:
    code = bucket.erasure
    return {"name": bucket.name, "created": bucket.created, "replicas": bucket.replicas,
            "erasure": f"{code.k}+{code.m}" if code is not None else None, "compression": bucket.compression}


def key_json(key: AccessKey) -> dict[str, Any]:
    return {"id": key.access_key, "name": key.owner, "buckets": dict(key.buckets)}


def grants(value: object) -> tuple[tuple[str, str], ...]:
    """`{"bucket" | "*": "read" | "write" | "admin"}` as the AccessKey's grants; SpecError naming the field."""
    if not isinstance(value, Mapping) or not value:
        raise SpecError("buckets", "required: an object mapping bucket names (or *) to read, write or admin")
    if len(value) > MAX_GRANTS:
        raise SpecError("buckets", f"at most {MAX_GRANTS} buckets per key (use * for every bucket)")
    out = []
    for bucket, level in value.items():
        name = str(bucket)
        if name != "*" and not valid_bucket_name(name):
            raise SpecError(f"buckets.{name[:80]}", "not a bucket name (3-63 of a-z 0-9 . -) or *")
        if not isinstance(level, str) or isinstance(access.parse_level(level), str):
            raise SpecError(f"buckets.{name}", f"permission must be one of {', '.join(_LEVELS)} "
                            f"(got {str(level)[:40]!r})")
        out.append((name, level.lower()))
    return tuple(sorted(out))


class StorageUnavailable(CoordinatorError):
    """The cluster serves no storage (no gateway): a 503 naming how to turn it on."""


class StorageHandlers:
    """The /v1/storage handlers. `admin` is the gateway (None: no storage), set when the gateway starts."""

    def __init__(self, clock: Callable[[], float], admin: StorageAdmin | None = None) -> None:
        self.clock = clock
        self.admin = admin

    def _admin(self) -> StorageAdmin:
        if self.admin is None:
            raise StorageUnavailable("this cluster serves no object storage: start the coordinator with an S3 port "
                                     "(`cloudless up --s3-port 9000`, or `cloudless coordinator --s3-port PORT`)")
        return self.admin

    async def storage_status(self, request: web.Request) -> web.Response:
        return web.json_response(camel(self._admin().status()))

    async def list_buckets(self, request: web.Request) -> web.Response:
        meta = self._admin().metadata
        items, budget = [], Budget()
        for bucket in sorted(await meta.list_buckets(), key=lambda b: b.name):
            found = await meta.list_manifests(bucket.name, "", "")
            count = size = stored = 0
            if not isinstance(found, Outcome):  # deleted meanwhile: listed as empty
                for manifest in found:
                    count += 1
                    size += manifest.info.size
                    stored += sum(c.size for c in manifest.chunks)  # as stored: compressed where it paid
                    await budget.spend()
            items.append({**bucket_json(bucket), "objects": count, "bytes": size, "storedBytes": stored})
        return web.json_response({"items": items})

    async def create_bucket(self, request: web.Request) -> web.Response:
        admin = self._admin()
        body = await json_object(request, ("name",), ("replicas", "erasure", "compression"))
        name, replicas, code = body["name"], body.get("replicas", DEFAULT_REPLICAS), body.get("erasure")
        compression = body.get("compression")
        if compression is not None and compression not in COMPRESSIONS:
            raise SpecError("compression", f"must be {' or '.join(repr(c) for c in COMPRESSIONS)} or null "
                            f"(got {str(compression)[:40]!r})")
        if not isinstance(name, str) or not valid_bucket_name(name):
            raise SpecError("name", f"{str(name)[:80]!r} is not a bucket name (3-63 of a-z 0-9 . -, a letter or "
                            "digit at both ends)")
        if isinstance(replicas, bool) or not isinstance(replicas, int) or not 1 <= replicas <= MAX_REPLICAS:
            raise SpecError("replicas", f"must be a whole number from 1 to {MAX_REPLICAS}")
        if code is not None and (not isinstance(code, str) or not 0 < len(code) <= 16):
            raise SpecError("erasure", "must be an erasure code such as \"4+2\"")
        if code is not None and "replicas" in body:
            raise SpecError("replicas", "an erasure-coded bucket stores fragments, not copies: give one of the two")
        refused = await admin.create_bucket(name, self.clock(), replicas=replicas, erasure=code,
                                            compression=compression)
        if refused is not None:
            if refused.code is ErrorCode.BUCKET_ALREADY_OWNED_BY_YOU:
                raise InUse(f"bucket {name} already exists")
            field = ("compression" if refused.message.startswith("compression") else
                     "erasure" if code is not None else "name")
            raise SpecError(field, refused.message)
        created = next((b for b in await admin.metadata.list_buckets() if b.name == name), None)
        if created is None:  # deleted again in between: say what was asked
            created = BucketRecord(name, self.clock(), replicas, compression=compression)
        return web.json_response({**bucket_json(created), "objects": 0, "bytes": 0, "storedBytes": 0}, status=201)

    async def delete_bucket(self, request: web.Request) -> web.Response:
        meta = self._admin().metadata
        name = request.match_info["bucket"]
        if not valid_bucket_name(name):
            raise SpecError("bucket", f"{name[:80]!r} is not a bucket name")
        match await meta.delete_bucket(name):
            case Outcome.DONE:
                return web.json_response({"deleted": name})
            case Outcome.NOT_EMPTY:
                raise InUse(f"bucket {name} is not empty: delete its objects first "
                            f"(`cloudless storage rm --recursive s3://{name}/`)")
            case _:
                raise NotFound(f"bucket {name} not found (list them with `cloudless storage buckets`)")

    async def list_storage_keys(self, request: web.Request) -> web.Response:
        meta = self._admin().metadata
        keys = sorted(await meta.list_keys(), key=lambda k: (k.owner, k.access_key))
        return web.json_response({"items": [key_json(k) for k in keys]})

    async def create_storage_key(self, request: web.Request) -> web.Response:
        admin = self._admin()
        body = await json_object(request, ("name", "buckets"), ())
        name = body["name"]
        if not isinstance(name, str) or not valid_id(name):
            raise SpecError("name", f"{str(name)[:80]!r} is not a name (letters, digits, '.', '_', '-')")
        key = access.new_key(name, grants(body["buckets"]))
        if problems := access.validate(key):  # every part was checked above or generated here: a bug
            raise RuntimeError(f"generated access key fails validation: {problems}")
        await admin.metadata.put_key(key)
        await admin.keys_changed()
        return web.json_response({**key_json(key), "secret": key.secret}, status=201, headers=NO_STORE)

    async def delete_storage_key(self, request: web.Request) -> web.Response:
        admin = self._admin()
        key_id = path_name(request, "id")
        if await admin.metadata.delete_key(key_id) is not Outcome.DONE:
            raise NotFound(f"access key {key_id} not found (list them with `cloudless storage keys ls`)")
        await admin.keys_changed()
        return web.json_response({"id": key_id, "deleted": True})

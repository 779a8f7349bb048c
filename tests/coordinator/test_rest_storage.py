"""/v1/storage over the real REST app of a real coordinator, with a fake StorageAdmin (the gateway's role) over the
in-memory object metadata: 503 without storage, the admin credential, every input checked with a 400 naming the
field, buckets with their counts, access keys whose secret is answered once and stored for the S3 layer, and every
answer matching the OpenAPI document."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from coordinator.api import Api, StorageAdmin
from coordinator.http import token_digest
from coordinator.objects import EnvelopeSealer, StoreMetadata
from coordinator.rest.app import openapi_document
from coordinator.secrets import envelope
from coordinator.service import Coordinator, CoordinatorConfig
from dataplane.objects.access import Keyring
from dataplane.objects.erasure import parse_code
from dataplane.objects.model import AccessKey, ErasureCode, Manifest, StorageNode
from dataplane.objects.ports import Metadata
from dataplane.objects.store import ObjectBackend
from dataplane.s3.backend import ObjectInfo
from dataplane.s3.errors import ErrorCode, S3Error
from dataplane.s3.routing import Operation
from tests.coordinator.rest_harness import ADMIN, AUTH
from tests.coordinator.stores import FullDiskStore
from tests.coordinator.test_openapi import _check
from tests.dataplane.objects.fake_chunks import FakeChunkClient
from tests.dataplane.objects.memory_metadata import MemoryMetadata
from tests.dataplane.objects.objserver import default_nodes
from tests.pair.fakebus import FakeBroker

VIEWER = "viewer-token-for-tests"


@dataclass
class FakeStorage:
    """A maintained fake of the gateway's REST face: the real object store backend over the in-memory metadata and
    fake storage nodes, a status it reports as the gateway does (snake_case), and the keyring it rebuilds when told
    the keys changed."""

    metadata: Metadata = field(default_factory=MemoryMetadata)
    nodes: list[StorageNode] = field(default_factory=default_nodes)
    report: dict[str, Any] = field(default_factory=dict)
    keyring: Keyring = field(default_factory=lambda: Keyring([]))
    reloads: int = 0

    def __post_init__(self) -> None:
        self.chunks = FakeChunkClient(self.nodes)
        self.backend = ObjectBackend(self.metadata, self.chunks, self.chunks.storage_nodes)

    def status(self) -> dict[str, Any]:
        return self.report

    async def create_bucket(self, name: str, now: float, *, replicas: int, erasure: str | None,
                            compression: str | None = None) -> S3Error | None:
        code: ErasureCode | None = None
        if erasure is not None:
            parsed = parse_code(erasure)
            if isinstance(parsed, str):
                return S3Error(ErrorCode.INVALID_ARGUMENT, parsed)
            code = parsed
        return await self.backend.create_bucket(name, now, replicas, code, compression=compression)

    async def keys_changed(self) -> None:
        self.reloads += 1
        self.keyring = Keyring(await self.metadata.list_keys())


@dataclass
class Served:
    client: TestClient[Any, Any]
    api: Api


@asynccontextmanager
async def served(storage: StorageAdmin | None) -> AsyncIterator[Served]:
    store = FullDiskStore()
    coord = Coordinator(CoordinatorConfig(coordinator_id="test", tick_s=0.05), store=store,
                        mqtt=FakeBroker().client("coordinator@test"))  # type: ignore[arg-type]
    await coord.start()
    api = Api(coord, token_digests={token_digest(ADMIN): ("admin", "admin"),
                                    token_digest(VIEWER): ("viewer", "viewer")}, storage=storage)
    client: TestClient[Any, Any] = TestClient(TestServer(api.app()))
    await client.start_server()
    try:
        yield Served(client, api)
    finally:
        await client.close()
        await coord.stop()
        await store.close()


async def answer(s: Served, method: str, path: str, *, status: int, handler: str | None = None,
                 body: object = None, headers: dict[str, str] | None = None) -> Any:
    resp = await s.client.request(method, path, json=body, headers=AUTH if headers is None else headers)
    doc = await resp.json()
    assert resp.status == status, doc
    if handler is not None:
        _check(openapi_document(), handler, doc, status)
    return doc


ROUTES = [("GET", "/v1/storage/status"), ("GET", "/v1/storage/buckets"), ("POST", "/v1/storage/buckets"),
          ("DELETE", "/v1/storage/buckets/photos"), ("GET", "/v1/storage/keys"), ("POST", "/v1/storage/keys"),
          ("DELETE", "/v1/storage/keys/CLKABC")]


async def test_without_storage_every_route_says_how_to_turn_it_on() -> None:
    async with served(None) as s:
        for method, path in ROUTES:
            doc = await answer(s, method, path, status=503, body={"name": "photos", "buckets": {"*": "read"}})
            assert "--s3-port" in doc["error"]["message"], path
        s.api.storage = FakeStorage()  # the gateway came up after the API
        await answer(s, "GET", "/v1/storage/keys", status=200)


async def test_every_route_needs_a_credential_and_writes_an_admin() -> None:
    async with served(FakeStorage()) as s:
        for method, path in ROUTES:
            await answer(s, method, path, status=401, headers={}, body={})
        viewer = {"Authorization": f"Bearer {VIEWER}"}
        await answer(s, "GET", "/v1/storage/keys", status=200, headers=viewer)
        for method, path in ROUTES:
            if method != "GET":
                await answer(s, method, path, status=403, headers=viewer, body={})


async def test_status_is_the_gateways_in_camel_case() -> None:
    storage = FakeStorage(report={
        "nodes": [{"node": "pi-1", "zone": "attic", "online": True, "quotaBytes": 20 << 30, "usedBytes": 3 << 20,
                   "chunks": 3}],
        "chunks": 3, "under_replicated": 1, "unrecoverable": 0,
        "repair": {"copied": 2, "copied_bytes": 2 << 20, "rate_bytes_per_s": 1048576.0, "last_run": 1_700_000_000.0}})
    async with served(storage) as s:
        doc = await answer(s, "GET", "/v1/storage/status", status=200, handler="storage_status")
        assert doc["underReplicated"] == 1 and doc["repair"]["lastRun"] == 1_700_000_000.0
        assert doc["nodes"][0] == storage.report["nodes"][0]
        storage.report["under_replicated"] = 0  # read at every request, not cached
        assert (await answer(s, "GET", "/v1/storage/status", status=200))["underReplicated"] == 0


async def test_buckets_create_list_with_counts_and_delete() -> None:
    storage = FakeStorage()
    async with served(storage) as s:
        made = await answer(s, "POST", "/v1/storage/buckets", status=201, handler="create_bucket",
                            body={"name": "photos", "replicas": 3})
        assert made["replicas"] == 3 and (await storage.metadata.get_bucket("photos")).replicas == 3  # type: ignore[union-attr]
        await answer(s, "POST", "/v1/storage/buckets", status=201, body={"name": "empty"})
        await answer(s, "POST", "/v1/storage/buckets", status=409, body={"name": "photos"})
        for size, key in ((100, "a.jpg"), (2500, "b/c.jpg")):
            info = ObjectInfo(key, size, "etag", time.time())
            await storage.metadata.commit_manifest("photos", Manifest(info, replicas=3))
        doc = await answer(s, "GET", "/v1/storage/buckets", status=200, handler="list_buckets")
        assert [(b["name"], b["replicas"], b["objects"], b["bytes"], b["erasure"]) for b in doc["items"]] == [
            ("empty", 2, 0, 0, None), ("photos", 3, 2, 2600, None)]
        err = await answer(s, "DELETE", "/v1/storage/buckets/photos", status=409)
        assert "not empty" in err["error"]["message"]
        await answer(s, "DELETE", "/v1/storage/buckets/empty", status=200, handler="delete_bucket")
        await answer(s, "DELETE", "/v1/storage/buckets/empty", status=404)
        assert [b.name for b in await storage.metadata.list_buckets()] == ["photos"]


async def test_a_compressing_bucket_is_made_listed_with_what_it_stores_and_refused_without_the_codec() -> None:
    from dataplane.objects.chunking import ChunkRef

    storage = FakeStorage()
    async with served(storage) as s:
        made = await answer(s, "POST", "/v1/storage/buckets", status=201, handler="create_bucket",
                            body={"name": "logs", "compression": "zstd", "replicas": 3})
        assert (made["compression"], made["replicas"], made["storedBytes"]) == ("zstd", 3, 0)
        assert (await storage.metadata.get_bucket("logs")).compression == "zstd"  # type: ignore[union-attr]
        await answer(s, "POST", "/v1/storage/buckets", status=201, body={"name": "plain", "compression": None})
        info = ObjectInfo("app.log", 3 << 20, "etag", time.time())
        chunks = (ChunkRef("a" * 64, 100_000, "zstd", 1 << 20), ChunkRef("b" * 64, 1 << 20),
                  ChunkRef("c" * 64, 200_000, "zstd", 1 << 20))
        await storage.metadata.commit_manifest("logs", Manifest(info, chunks=chunks, replicas=3))
        listed = await answer(s, "GET", "/v1/storage/buckets", status=200, handler="list_buckets")
        assert [(b["name"], b["compression"], b["bytes"], b["storedBytes"]) for b in listed["items"]] == [
            ("logs", "zstd", 3 << 20, 300_000 + (1 << 20)), ("plain", None, 0, 0)]
    # the backend's own refusal (no zstandard here) names the field
    refusal = S3Error(ErrorCode.INVALID_ARGUMENT, "compression zstd needs the zstandard package: not installed")

    class NoCodec(FakeStorage):
        async def create_bucket(self, name: str, now: float, *, replicas: int, erasure: str | None,
                                compression: str | None = None) -> S3Error | None:
            return refusal if compression else await super().create_bucket(name, now, replicas=replicas,
                                                                           erasure=erasure)

    async with served(NoCodec()) as s:
        doc = await answer(s, "POST", "/v1/storage/buckets", status=400, body={"name": "logs", "compression": "zstd"})
        assert doc["error"]["field"] == "compression" and "zstandard" in doc["error"]["message"]


async def test_an_erasure_coded_bucket_needs_six_storage_nodes() -> None:
    five = FakeStorage()  # default_nodes(): five nodes
    async with served(five) as s:
        doc = await answer(s, "POST", "/v1/storage/buckets", status=400, body={"name": "archive", "erasure": "4+2"})
        assert doc["error"]["field"] == "erasure" and "at least 6 storage nodes" in doc["error"]["message"]
        doc = await answer(s, "POST", "/v1/storage/buckets", status=400, body={"name": "archive", "erasure": "8+3"})
        assert doc["error"]["field"] == "erasure" and "use 4+2" in doc["error"]["message"]
        assert await five.metadata.list_buckets() == []
    six = FakeStorage(nodes=[StorageNode(f"n{i}", f"z{i % 3}", quota=1 << 30) for i in range(6)])
    async with served(six) as s:
        made = await answer(s, "POST", "/v1/storage/buckets", status=201, handler="create_bucket",
                            body={"name": "archive", "erasure": "4+2"})
        assert made["erasure"] == "4+2" and made["replicas"] == 3
        listed = await answer(s, "GET", "/v1/storage/buckets", status=200, handler="list_buckets")
        assert [(b["name"], b["erasure"]) for b in listed["items"]] == [("archive", "4+2")]


@pytest.mark.parametrize(("body", "field_"), [
    ({"name": "No_Such"}, "name"), ({"name": "ab"}, "name"), ({"name": 7}, "name"), ({}, "name"),
    ({"name": "photos", "replicas": 0}, "replicas"), ({"name": "photos", "replicas": True}, "replicas"),
    ({"name": "photos", "replicas": 9}, "replicas"), ({"name": "photos", "colour": "red"}, "colour"),
    ({"name": "photos", "erasure": 42}, "erasure"), ({"name": "photos", "erasure": "4+2", "replicas": 2}, "replicas"),
    ({"name": "photos", "compression": "lz4"}, "compression"), ({"name": "photos", "compression": 1}, "compression"),
    ({"name": "photos", "compression": ["zstd"]}, "compression"),
], ids=["upper-case", "too-short", "not-a-string", "missing", "zero-replicas", "bool-replicas", "nine-replicas",
        "unknown-field", "erasure-not-a-string", "erasure-and-replicas", "compression-unknown",
        "compression-not-a-string", "compression-a-list"])
async def test_bucket_input_errors_name_the_field(body: dict[str, Any], field_: str) -> None:
    async with served(FakeStorage()) as s:
        doc = await answer(s, "POST", "/v1/storage/buckets", status=400, body=body)
        assert doc["error"]["field"] == field_, doc


async def test_a_key_is_made_with_its_grants_its_secret_answered_once() -> None:
    storage = FakeStorage()
    async with served(storage) as s:
        resp = await s.client.post("/v1/storage/keys", json={"name": "backup-job",
                                                              "buckets": {"backups": "write", "*": "read"}},
                                   headers=AUTH)
        made = await resp.json()
        assert resp.status == 201 and resp.headers["Cache-Control"] == "no-store"
        _check(openapi_document(), "create_storage_key", made, 201)
        assert made["name"] == "backup-job" and made["buckets"] == {"backups": "write", "*": "read"}
        assert made["id"].startswith("CLK") and len(made["id"]) == 20 and len(made["secret"]) == 40
        # stored for the S3 layer, and the gateway's keyring follows at once
        assert storage.reloads == 1
        assert storage.keyring.secret(made["id"]) == made["secret"]
        assert storage.keyring.authorize(made["id"], Operation.PUT_OBJECT, "backups")
        assert not storage.keyring.authorize(made["id"], Operation.PUT_OBJECT, "photos")
        assert storage.keyring.authorize(made["id"], Operation.GET_OBJECT, "photos")
        other = await answer(s, "POST", "/v1/storage/keys", status=201, body={"name": "alice",
                                                                             "buckets": {"photos": "admin"}})
        assert other["id"] != made["id"] and other["secret"] != made["secret"]
        listed = await answer(s, "GET", "/v1/storage/keys", status=200, handler="list_storage_keys")
        assert listed["items"] == [{"id": other["id"], "name": "alice", "buckets": {"photos": "admin"}},
                                   {"id": made["id"], "name": "backup-job",
                                    "buckets": {"*": "read", "backups": "write"}}]
        assert made["secret"] not in str(listed)
        gone = await answer(s, "DELETE", f"/v1/storage/keys/{made['id']}", status=200, handler="delete_storage_key")
        assert gone == {"id": made["id"], "deleted": True}
        assert storage.keyring.secret(made["id"]) is None and storage.reloads == 3
        await answer(s, "DELETE", f"/v1/storage/keys/{made['id']}", status=404)
        assert [k.access_key for k in await storage.metadata.list_keys()] == [other["id"]]


@pytest.mark.parametrize(("body", "field_"), [
    ({"buckets": {"b1b": "read"}}, "name"), ({"name": "a b", "buckets": {"bkt": "read"}}, "name"),
    ({"name": "x"}, "buckets"), ({"name": "x", "buckets": {}}, "buckets"),
    ({"name": "x", "buckets": ["bkt"]}, "buckets"),
    ({"name": "x", "buckets": {"Bad_Bucket": "read"}}, "buckets.Bad_Bucket"),
    ({"name": "x", "buckets": {"bkt": "owner"}}, "buckets.bkt"), ({"name": "x", "buckets": {"bkt": 1}}, "buckets.bkt"),
    ({"name": "x", "buckets": {f"b{i:03d}": "read" for i in range(65)}}, "buckets"),
    ({"name": "x", "buckets": {"bkt": "read"}, "secret": "mine"}, "secret"),
], ids=["no-name", "bad-name", "no-buckets", "empty-buckets", "list-buckets", "bad-bucket", "bad-level",
        "number-level", "too-many", "own-secret"])
async def test_key_input_errors_name_the_field(body: dict[str, Any], field_: str) -> None:
    storage = FakeStorage()
    async with served(storage) as s:
        doc = await answer(s, "POST", "/v1/storage/keys", status=400, body=body)
        assert doc["error"]["field"] == field_, doc
        assert await storage.metadata.list_keys() == [] and storage.reloads == 0


async def test_a_bad_key_id_in_the_path_is_a_400() -> None:
    async with served(FakeStorage()) as s:
        doc = await answer(s, "DELETE", "/v1/storage/keys/bad%20id", status=400)
        assert doc["error"]["field"] == "id"


async def test_the_key_is_stored_with_its_grants_as_the_s3_layer_reads_them() -> None:
    storage = FakeStorage()
    async with served(storage) as s:
        made = await answer(s, "POST", "/v1/storage/keys", status=201,
                            body={"name": "w", "buckets": {"logs": "WRITE"}})
        stored = await storage.metadata.get_key(made["id"])
        assert stored == AccessKey(made["id"], made["secret"], owner="w", buckets=(("logs", "write"),))


async def test_through_the_real_metadata_the_secret_is_stored_sealed_and_works() -> None:
    """The gateway's metadata (StoreMetadata with the secrets service's envelope sealing) behind the route: the store
    holds no plaintext secret, and the key read back carries the secret the POST answered."""
    store = FullDiskStore()
    keyring = envelope.Keyring.of(envelope.MasterKey.generate())
    storage = FakeStorage(metadata=StoreMetadata(store, EnvelopeSealer(lambda: keyring)))
    try:
        async with served(storage) as s:
            made = await answer(s, "POST", "/v1/storage/keys", status=201, body={"name": "w", "buckets": {"*": "read"}})
            raw = b"".join(e.value for e in await store.list("/objects/keys/"))
            assert made["id"].encode() in raw and made["secret"].encode() not in raw
            assert storage.keyring.secret(made["id"]) == made["secret"]
            listed = await answer(s, "GET", "/v1/storage/keys", status=200)
            assert [k["id"] for k in listed["items"]] == [made["id"]]
    finally:
        await store.close()


def test_the_gateway_is_what_the_api_calls() -> None:
    """cloudless.gateway.Gateway fills the hook: mypy holds it to the StorageAdmin Protocol here (`as_admin`), and the
    run to its members (a renamed method would otherwise surface as a 500 on a live cluster only)."""
    from dataclasses import fields

    from cloudless.gateway import Gateway
    from coordinator.rest.ports import StorageAdmin as Port

    def as_admin(gateway: Gateway) -> StorageAdmin:
        return gateway

    assert as_admin is not None
    wanted = {name for name in vars(Port) if not name.startswith("_")}
    assert wanted == {"metadata", "status", "keys_changed", "create_bucket"}
    for name in wanted:
        assert hasattr(Gateway, name) or name in {f.name for f in fields(Gateway)}, name

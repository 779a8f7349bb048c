"""Access keys: grant levels per bucket, the keyring the S3 adapter asks, and what a bad key is told; plus boto3
through the real adapter with the keyring as its secret lookup and authorizer."""

from __future__ import annotations

import asyncio
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from dataplane.objects.access import Keyring, Level, parse_level, validate
from dataplane.objects.model import AccessKey
from dataplane.objects.store import ObjectBackend
from dataplane.s3.http import S3Config, s3_app
from dataplane.s3.routing import Operation
from tests.dataplane.objects.fake_chunks import FakeChunkClient
from tests.dataplane.objects.memory_metadata import MemoryMetadata
from tests.dataplane.objects.objserver import default_nodes

ALICE = AccessKey("AKIDALICE0000001", "alice-secret-0123456789", "alice", (("photos", "write"), ("*", "read")))
BOB = AccessKey("AKIDBOB000000001", "bob-secret-0123456789xx", "bob", (("logs", "admin"),))
RING = Keyring([ALICE, BOB])


@pytest.mark.parametrize(("key", "operation", "bucket", "allowed"), [
    (ALICE, Operation.PUT_OBJECT, "photos", True),
    (ALICE, Operation.GET_OBJECT, "logs", True),  # read on *
    (ALICE, Operation.PUT_OBJECT, "logs", False),
    (ALICE, Operation.DELETE_BUCKET, "photos", False),  # write is not admin
    (ALICE, Operation.LIST_BUCKETS, "", True),
    (BOB, Operation.LIST_BUCKETS, "", False),  # no grant on *
    (BOB, Operation.CREATE_BUCKET, "logs", True),
    (BOB, Operation.GET_OBJECT, "photos", False),
], ids=["write-own", "read-star", "no-write-elsewhere", "write-not-admin", "list-with-star", "list-without-star",
        "admin-creates", "no-grant"])
def test_authorize(key: AccessKey, operation: Operation, bucket: str, allowed: bool) -> None:
    assert RING.authorize(key.access_key, operation, bucket) is allowed


def test_an_unknown_key_has_no_secret_and_no_rights() -> None:
    assert RING.secret("AKIDNOBODY") is None and RING.secret(ALICE.access_key) == ALICE.secret
    assert not RING.authorize("AKIDNOBODY", Operation.GET_OBJECT, "photos")
    assert RING.level(ALICE.access_key, "photos") is Level.WRITE


def test_every_operation_has_a_level() -> None:
    admin = Keyring([AccessKey("A" * 16, "s" * 20, "", (("*", "admin"),))])
    assert all(admin.authorize("A" * 16, op, "b") for op in Operation)


@pytest.mark.parametrize(("key", "problem"), [
    (AccessKey("short", "s" * 20), "access_key must be"),
    (AccessKey("A" * 16, "tiny"), "secret must be"),
    (AccessKey("A" * 16, "s" * 20, "", (("a/b", "read"),)), "is not a bucket name"),
    (AccessKey("A" * 16, "s" * 20, "", (("b", "owner"),)), "permission must be one of read, write, admin"),
], ids=["access-key", "secret", "bucket", "level"])
def test_validate_names_the_field(key: AccessKey, problem: str) -> None:
    assert any(problem in p for p in validate(key))
    assert validate(ALICE) == [] and isinstance(parse_level("Write"), Level)


async def test_boto3_is_held_to_its_grants() -> None:
    from aiohttp.test_utils import TestServer

    metadata = MemoryMetadata()
    chunks = FakeChunkClient(default_nodes())
    backend = ObjectBackend(metadata, chunks, chunks.storage_nodes)
    await backend.create_bucket("photos", 0.0)
    await backend.create_bucket("logs", 0.0)
    app = s3_app(backend, RING.secret, S3Config(authorize=RING.authorize))
    async with TestServer(app, host="127.0.0.1") as server:
        url = str(server.make_url(""))

        def client(key: AccessKey, secret: str | None = None) -> Any:
            return boto3.client("s3", endpoint_url=url, aws_access_key_id=key.access_key,
                                aws_secret_access_key=secret or key.secret, region_name="us-east-1",
                                config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))

        def scenario() -> None:
            alice = client(ALICE)
            alice.put_object(Bucket="photos", Key="cat.jpg", Body=b"meow")
            with pytest.raises(ClientError) as denied:
                alice.put_object(Bucket="logs", Key="x", Body=b"x")
            assert denied.value.response["Error"]["Code"] == "AccessDenied"
            with pytest.raises(ClientError) as wrong:
                client(ALICE, "not-the-secret-000000").get_object(Bucket="photos", Key="cat.jpg")
            assert wrong.value.response["Error"]["Code"] == "SignatureDoesNotMatch"

        await asyncio.to_thread(scenario)


def test_new_keys_are_valid_aws_shaped_and_distinct() -> None:
    from dataplane.objects.access import new_key, validate

    keys = [new_key("backup", (("photos", "read"), ("*", "admin"))) for _ in range(50)]
    assert all(not validate(k) for k in keys), [validate(k) for k in keys if validate(k)]
    assert all(len(k.access_key) == 20 and k.access_key.startswith("CLK") and len(k.secret) == 40 for k in keys)
    assert len({k.access_key for k in keys}) == 50 and len({k.secret for k in keys}) == 50
    assert keys[0].owner == "backup" and keys[0].buckets == (("photos", "read"), ("*", "admin"))

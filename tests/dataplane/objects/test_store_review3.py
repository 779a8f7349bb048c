"""Review 3, H1, as the test that failed before the fix: GET and CopyObject read the manifest twice (once for the
headers and preconditions, once for the bytes), so a PUT landing in between sent v1's ETag and Content-Length with
v2's bytes (a short or long body), and a copy stored v1's size next to v2's chunks. Here the overwrite is made to
land exactly there: right after the handler's read of the manifest. Real boto3 through the real S3 adapter."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from dataplane.objects.model import Manifest
from tests.dataplane.objects.memory_metadata import MemoryMetadata
from tests.dataplane.objects.objserver import ObjectServer, serving
from tests.dataplane.s3.s3server import ACCESS_KEY, REGION, SECRET_KEY


class OverwrittenAfterRead(MemoryMetadata):
    """In-memory metadata that, once armed, makes `bucket/key` the manifest of `replacement` right after the next
    read of `key` has returned (a concurrent PUT that landed just then)."""

    armed: tuple[str, str, str] | None = None

    async def get_manifest(self, bucket: str, key: str) -> Manifest | None:
        found = await super().get_manifest(bucket, key)
        if self.armed is not None and self.armed[:2] == (bucket, key):
            replacement = self.objects[bucket][self.armed[2]]
            self.objects[bucket][key] = dataclasses.replace(
                replacement, info=dataclasses.replace(replacement.info, key=key))
            self.armed = None
        return found


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[ObjectServer, OverwrittenAfterRead]]:
    meta = OverwrittenAfterRead()
    with serving(tmp_path, meta=meta) as s:
        yield s, meta


def _client(server: ObjectServer) -> object:
    return boto3.client("s3", endpoint_url=server.http_url, aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET_KEY, region_name=REGION,
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


def test_get_serves_the_version_its_headers_describe(server: tuple[ObjectServer, OverwrittenAfterRead]) -> None:
    srv, meta = server
    s3 = _client(srv)
    v1, v2 = os.urandom(2 * 1024 * 1024 + 7), os.urandom(3 * 1024 * 1024 + 11)
    s3.create_bucket(Bucket="bkt")  # type: ignore[attr-defined]
    s3.put_object(Bucket="bkt", Key="k", Body=v1)  # type: ignore[attr-defined]
    s3.put_object(Bucket="bkt", Key="v2", Body=v2)  # type: ignore[attr-defined]
    meta.armed = ("bkt", "k", "v2")
    got = s3.get_object(Bucket="bkt", Key="k")  # type: ignore[attr-defined]
    body = got["Body"].read()
    assert got["ContentLength"] == len(v1) and got["ETag"] == f'"{hashlib.md5(v1).hexdigest()}"'
    assert hashlib.sha256(body).digest() == hashlib.sha256(v1).digest()
    assert meta.armed is None  # the overwrite did happen in between
    later = s3.get_object(Bucket="bkt", Key="k")["Body"].read()  # type: ignore[attr-defined]
    assert hashlib.sha256(later).digest() == hashlib.sha256(v2).digest()


def test_copy_copies_the_version_it_checked(server: tuple[ObjectServer, OverwrittenAfterRead]) -> None:
    srv, meta = server
    s3 = _client(srv)
    v1, v2 = os.urandom(1024 * 1024 + 5), os.urandom(2 * 1024 * 1024 + 9)
    s3.create_bucket(Bucket="bkt")  # type: ignore[attr-defined]
    s3.put_object(Bucket="bkt", Key="src", Body=v1)  # type: ignore[attr-defined]
    s3.put_object(Bucket="bkt", Key="v2", Body=v2)  # type: ignore[attr-defined]
    meta.armed = ("bkt", "src", "v2")
    s3.copy_object(Bucket="bkt", Key="dst", CopySource={"Bucket": "bkt", "Key": "src"})  # type: ignore[attr-defined]
    assert meta.armed is None
    copied = s3.get_object(Bucket="bkt", Key="dst")  # type: ignore[attr-defined]
    body = copied["Body"].read()
    assert copied["ContentLength"] == len(v1) == len(body)
    assert hashlib.sha256(body).digest() == hashlib.sha256(v1).digest()

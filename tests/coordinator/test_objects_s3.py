"""The object store with its real metadata: boto3 through the real S3 adapter, `ObjectBackend` over fake storage
nodes and `StoreMetadata` on a SQLite state file; what one gateway commits, another `StoreMetadata` on the same store
reads back (a successful PUT is visible to every following GET and LIST, issue 20)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from pathlib import Path

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from coordinator.objects import StoreMetadata
from coordinator.store import SqliteStore
from dataplane.objects.ports import Outcome
from tests.dataplane.objects.objserver import MiB, serving
from tests.dataplane.s3.s3server import ACCESS_KEY, REGION, SECRET_KEY


def test_boto3_over_store_metadata_on_sqlite(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    with serving(tmp_path, meta=StoreMetadata(store)) as server:
        s3 = boto3.client("s3", endpoint_url=server.https_url, aws_access_key_id=ACCESS_KEY,
                          aws_secret_access_key=SECRET_KEY, region_name=REGION, verify=str(server.ca_file),
                          config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
        s3.create_bucket(Bucket="real")
        small = os.urandom(3 * MiB + 5)
        s3.put_object(Bucket="real", Key="a/small", Body=small, Metadata={"k": "v"})
        big = os.urandom(11 * MiB)
        s3.upload_fileobj(io.BytesIO(big), "real", "a/big",
                          Config=TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB))
        assert s3.get_object(Bucket="real", Key="a/small", Range="bytes=100-2097252")["Body"].read() == \
            small[100:2097253]
        assert s3.get_object(Bucket="real", Key="a/big")["Body"].read() == big
        assert [o["Key"] for o in s3.list_objects_v2(Bucket="real", Prefix="a/")["Contents"]] == ["a/big", "a/small"]

        other = StoreMetadata(store)  # another reader of the same state: sees what the gateway committed
        found = server.run(other.get_manifest("real", "a/small"))
        assert found is not None and found.info.etag == hashlib.md5(small).hexdigest()
        assert found.info.metadata == (("k", "v"),) and sum(c.size for c in found.chunks) == len(small)
        listed = server.run(other.list_manifests("real", "", ""))
        assert not isinstance(listed, Outcome) and [m.info.key for m in listed] == ["a/big", "a/small"]
        records = server.run(other.get_chunks([c.id for c in found.chunks]))
        assert all(len(r.holders) == 2 for r in records.values()) and len(records) == len(found.chunks)

        with pytest.raises(ClientError) as busy:
            s3.delete_bucket(Bucket="real")
        assert busy.value.response["Error"]["Code"] == "BucketNotEmpty"
        for key in ("a/small", "a/big"):
            s3.delete_object(Bucket="real", Key=key)
        assert server.run(other.list_manifests("real", "", "")) == []
        collected = server.run(server.backend.collect_garbage(grace=0.0))
        assert set(collected) >= {c.id for c in found.chunks}
        assert all(not server.chunks.holders(c.id) for c in found.chunks)
        s3.delete_bucket(Bucket="real")
    asyncio.run(store.close())

"""`ObjectBackend` driven by real boto3 through the real S3 adapter (dataplane.s3.http), over fake storage nodes
(some down, some with corrupt copies) and the in-memory metadata: bytes go into R verified copies on distinct nodes
and zones, come back whole and in ranges, survive a node down and a corrupt copy, and dedup'd chunks outlive the
deletion of one of the objects that share them."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError, IncompleteReadError, ResponseStreamingError

from dataplane.objects.chunking import chunk_id
from dataplane.objects.model import StorageNode
from tests.dataplane.objects.objserver import MiB, ObjectServer, serving
from tests.dataplane.s3.s3server import ACCESS_KEY, REGION, SECRET_KEY


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ObjectServer]:
    with serving(tmp_path) as s:
        yield s


def client(server: ObjectServer, https: bool = False, **more: Any) -> Any:
    config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **more)
    return boto3.client("s3", endpoint_url=server.https_url if https else server.http_url,
                        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION,
                        config=config, verify=str(server.ca_file))


def code_of(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def chunk_ids(body: bytes, size: int = MiB) -> list[str]:
    return [chunk_id(body[i:i + size]) for i in range(0, len(body), size)]


@pytest.mark.parametrize("https", [False, True], ids=["http-default", "https-default-aws-chunked"])
def test_put_get_range_head_list_delete(server: ObjectServer, https: bool) -> None:
    s3 = client(server, https)
    s3.create_bucket(Bucket="bkt")
    body = os.urandom(2 * MiB + 12345)
    put = s3.put_object(Bucket="bkt", Key="dir/obj", Body=body, Metadata={"colour": "blue"})
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    nodes = {n.node_id: n for n in server.chunks.storage_nodes()}
    for cid in chunk_ids(body):  # every chunk: two copies, distinct nodes in distinct zones, recorded
        holders = server.chunks.holders(cid)
        assert len(holders) == 2 and len({nodes[h].zone for h in holders}) == 2
        assert server.metadata.chunks[cid].holders == holders
    got = s3.get_object(Bucket="bkt", Key="dir/obj")
    assert got["Body"].read() == body and got["Metadata"] == {"colour": "blue"}
    ranged = s3.get_object(Bucket="bkt", Key="dir/obj", Range=f"bytes={MiB - 10}-{2 * MiB + 5}")
    assert ranged["Body"].read() == body[MiB - 10:2 * MiB + 6]
    assert s3.head_object(Bucket="bkt", Key="dir/obj")["ContentLength"] == len(body)
    s3.put_object(Bucket="bkt", Key="dir/sub/x", Body=b"x")
    s3.put_object(Bucket="bkt", Key="top", Body=b"")
    listed = s3.list_objects_v2(Bucket="bkt", Prefix="dir/", Delimiter="/")
    assert [o["Key"] for o in listed["Contents"]] == ["dir/obj"]
    assert [p["Prefix"] for p in listed["CommonPrefixes"]] == ["dir/sub/"]
    assert s3.get_object(Bucket="bkt", Key="top")["Body"].read() == b""
    s3.delete_object(Bucket="bkt", Key="dir/obj")
    with pytest.raises(ClientError) as missing:
        s3.get_object(Bucket="bkt", Key="dir/obj")
    assert code_of(missing) == "NoSuchKey"


def test_multipart_upload_and_copy_reuse_the_chunks(server: ObjectServer) -> None:
    s3 = client(server)
    s3.create_bucket(Bucket="mpu")
    body = os.urandom(12 * MiB + 7)
    s3.upload_fileobj(io.BytesIO(body), "mpu", "big",
                      Config=TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB))
    head = s3.head_object(Bucket="mpu", Key="big")
    assert head["ETag"].endswith('-3"') and head["ContentLength"] == len(body)
    assert s3.get_object(Bucket="mpu", Key="big")["Body"].read() == body
    puts = sum(server.chunks.puts.values())
    s3.copy_object(Bucket="mpu", Key="copy", CopySource={"Bucket": "mpu", "Key": "big"})
    assert sum(server.chunks.puts.values()) == puts  # part boundaries are chunk boundaries: every chunk dedup'd
    assert s3.get_object(Bucket="mpu", Key="copy")["Body"].read() == body
    assert server.metadata.uploads == {}


def test_abort_multipart_leaves_only_garbage(server: ObjectServer) -> None:
    s3 = client(server)
    s3.create_bucket(Bucket="abort")
    upload = s3.create_multipart_upload(Bucket="abort", Key="k")["UploadId"]
    part = os.urandom(MiB + 1)
    s3.upload_part(Bucket="abort", Key="k", UploadId=upload, PartNumber=1, Body=part)
    with pytest.raises(ClientError) as busy:
        s3.delete_bucket(Bucket="abort")
    assert code_of(busy) == "BucketNotEmpty"  # an upload in progress keeps the bucket
    s3.abort_multipart_upload(Bucket="abort", Key="k", UploadId=upload)
    collected = server.run(server.backend.collect_garbage(grace=0.0))
    assert sorted(collected) == sorted(chunk_ids(part))
    assert all(not server.chunks.holders(c) for c in chunk_ids(part))
    s3.delete_bucket(Bucket="abort")


def test_a_node_down_does_not_stop_reads_or_writes(server: ObjectServer) -> None:
    s3 = client(server)
    s3.create_bucket(Bucket="down")
    body = os.urandom(3 * MiB)
    s3.put_object(Bucket="down", Key="k", Body=body)
    first = chunk_ids(body)[0]
    for node in sorted(server.chunks.holders(first)):  # whichever holder a read tries first, it is down
        server.chunks.nodes[node].down = True
        assert s3.get_object(Bucket="down", Key="k")["Body"].read() == body
        server.chunks.nodes[node].down = False
    server.chunks.nodes["n0"].down = True
    more = os.urandom(2 * MiB)
    s3.put_object(Bucket="down", Key="k2", Body=more)
    for cid in chunk_ids(more):
        assert len(server.chunks.holders(cid)) == 2 and "n0" not in server.chunks.holders(cid)


def test_every_node_down_is_a_retryable_error_not_a_partial_object(server: ObjectServer) -> None:
    s3 = client(server)
    s3.create_bucket(Bucket="alldown")
    for fake in server.chunks.nodes.values():
        fake.down = True
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket="alldown", Key="k", Body=b"data")
    assert code_of(exc) == "InternalError" and "storage unavailable" in exc.value.response["Error"]["Message"]
    assert server.metadata.objects["alldown"] == {}


@pytest.mark.parametrize("verifying", [False, True], ids=["backend-checks", "client-checks"])
def test_a_corrupt_copy_is_detected_read_from_the_next_holder_and_recorded(server: ObjectServer,
                                                                           verifying: bool) -> None:
    """Either the backend finds the bad bytes, or the chunk client does (the overlay client checks what it receives
    and raises ChunkMismatch): both record the copy as bad for read-repair."""
    server.chunks.verifying = verifying
    s3 = client(server)
    s3.create_bucket(Bucket="corrupt")
    body = os.urandom(MiB + 100)
    s3.put_object(Bucket="corrupt", Key="k", Body=body)
    cid = chunk_ids(body)[0]
    holders = sorted(server.chunks.holders(cid))  # equally reliable: a read tries them in id order
    server.chunks.corrupt(holders[0], cid)
    assert s3.get_object(Bucket="corrupt", Key="k")["Body"].read() == body
    assert server.chunks.gets[holders[0], cid] == 1 and server.chunks.gets[holders[1], cid] == 1
    assert server.backend.io.corrupt_found == [(cid, holders[0])]  # detected by hash, recorded for repair
    assert server.metadata.chunks[cid].bad == {holders[0]}
    assert s3.get_object(Bucket="corrupt", Key="k")["Body"].read() == body
    assert server.chunks.gets[holders[0], cid] == 1  # a copy known bad is not read again
    server.chunks.corrupt(holders[1], cid)  # no good copy left: the read fails instead of returning wrong bytes
    with pytest.raises((ResponseStreamingError, IncompleteReadError)):  # cut short after the headers
        s3.get_object(Bucket="corrupt", Key="k")["Body"].read()
    assert server.metadata.chunks[cid].bad == set(holders)


def test_dedup_stores_a_shared_chunk_once_and_keeps_it_for_the_other_object(server: ObjectServer) -> None:
    s3 = client(server)
    s3.create_bucket(Bucket="dedup")
    body = os.urandom(2 * MiB)
    s3.put_object(Bucket="dedup", Key="one", Body=body)
    puts = sum(server.chunks.puts.values())
    s3.put_object(Bucket="dedup", Key="two", Body=body)
    assert sum(server.chunks.puts.values()) == puts  # stored once: R copies in total, not 2R
    s3.delete_object(Bucket="dedup", Key="one")
    assert server.run(server.backend.collect_garbage(grace=0.0)) == []
    assert s3.get_object(Bucket="dedup", Key="two")["Body"].read() == body
    s3.delete_object(Bucket="dedup", Key="two")
    assert server.run(server.backend.collect_garbage(grace=3600.0)) == []  # recently touched: spared
    assert sorted(server.run(server.backend.collect_garbage(grace=0.0))) == sorted(set(chunk_ids(body)))
    assert all(not server.chunks.holders(c) for c in chunk_ids(body))


def test_conditional_put_is_decided_by_the_commit(server: ObjectServer) -> None:
    s3 = client(server)
    s3.create_bucket(Bucket="ifnm")
    s3.put_object(Bucket="ifnm", Key="k", Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket="ifnm", Key="k", Body=b"second", IfNoneMatch="*")
    assert code_of(exc) == "PreconditionFailed"
    assert s3.get_object(Bucket="ifnm", Key="k")["Body"].read() == b"first"


def test_no_storage_nodes_at_all_refuses_with_the_reason(tmp_path: Path) -> None:
    phones = [StorageNode("phone", "z", quota=0)]
    with serving(tmp_path, phones) as server:
        s3 = client(server)
        s3.create_bucket(Bucket="none")
        with pytest.raises(ClientError) as exc:
            s3.put_object(Bucket="none", Key="k", Body=b"x")
        assert "phone: offers no storage" in exc.value.response["Error"]["Message"]

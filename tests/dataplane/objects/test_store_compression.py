"""A compressing bucket (`compression="zstd"`) driven by real boto3 through the real S3 adapter over fake storage nodes
and the in-memory metadata: compressible chunks are stored compressed (fewer bytes on the nodes than the object),
incompressible ones raw; bytes come back identical whole, in ranges across chunk boundaries and through multipart;
sizes, ETags and checksums are the plaintext's; dedup within compressing buckets, not across settings; CopyObject
into a bucket with the other setting rewrites the chunks in the destination's form; a corrupt copy is read-repaired
as before; a chunk that passes its hash but does not decode as its ref says fails the read without blaming a copy;
and an erasure-coded bucket compresses too."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError, IncompleteReadError, ResponseStreamingError

from dataplane.objects import compression
from dataplane.objects.chunking import ChunkRef
from dataplane.objects.erasure import RS_4_2
from dataplane.objects.model import Manifest, StorageNode
from dataplane.s3.errors import ErrorCode, S3Error
from tests.dataplane.objects.objserver import MiB, ObjectServer, serving
from tests.dataplane.objects.test_compression import text
from tests.dataplane.objects.test_store_boto3 import client as boto3_client


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ObjectServer]:
    with serving(tmp_path) as s:
        assert s.run(s.backend.create_bucket("packed", 0.0, compression="zstd")) is None
        assert s.run(s.backend.create_bucket("plain", 0.0)) is None
        yield s


def client(server: ObjectServer) -> Any:
    return boto3_client(server, https=True)  # boto3's default configuration: aws-chunked with a CRC32 trailer


def manifest(server: ObjectServer, bucket: str, key: str) -> Manifest:
    found = server.run(server.metadata.get_manifest(bucket, key))
    assert found is not None
    return found


def stored_bytes(server: ObjectServer, refs: tuple[ChunkRef, ...]) -> int:
    """One copy of each distinct chunk, as the fake nodes hold it (ground truth, not the refs' claim)."""
    sizes = {}
    for ref in refs:
        copies = {f.chunks[ref.id] for f in server.chunks.nodes.values() if ref.id in f.chunks}
        assert len(copies) == 1, f"chunk {ref.id[:12]}: {len(copies)} different copies"
        sizes[ref.id] = len(copies.pop())
    return sum(sizes.values())


def get(s3: Any, bucket: str, key: str, span: str | None = None) -> bytes:
    kwargs = {"Range": f"bytes={span}"} if span else {}
    return bytes(s3.get_object(Bucket=bucket, Key=key, **kwargs)["Body"].read())


def test_compressible_object_is_stored_smaller_and_reads_back_identical(server: ObjectServer) -> None:
    s3 = client(server)
    body = text(3 * MiB + 12345)
    put = s3.put_object(Bucket="packed", Key="doc.txt", Body=body, ChecksumAlgorithm="SHA256")
    refs = manifest(server, "packed", "doc.txt").chunks
    assert [r.codec for r in refs] == ["zstd"] * 4 and [r.length for r in refs] == [MiB] * 3 + [12345]
    assert stored_bytes(server, refs) < len(body) // 2  # measured on the nodes
    assert get(s3, "packed", "doc.txt") == body
    for span in (f"{MiB - 10}-{MiB + 9}", f"{MiB - 1}-{3 * MiB}", "5-5", f"{3 * MiB}-", "-100"):
        first, _, last = span.partition("-")
        expect = body[-int(last):] if not first else body[int(first):int(last) + 1 if last else None]
        assert get(s3, "packed", "doc.txt", span) == expect, span
    head = s3.head_object(Bucket="packed", Key="doc.txt", ChecksumMode="ENABLED")
    assert head["ContentLength"] == len(body) and head["ETag"] == put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    assert s3.list_objects_v2(Bucket="packed")["Contents"][0]["Size"] == len(body)
    stats = server.backend.compression_stats()
    assert stats["writtenBytes"] == len(body) and stats["chunksCompressed"] == 4
    assert stats["storedBytes"] == stored_bytes(server, refs) and stats["savedBytes"] > len(body) // 2


def test_incompressible_chunks_are_stored_raw(server: ObjectServer) -> None:
    s3 = client(server)
    noise = os.urandom(2 * MiB)
    mixed = noise[:MiB] + text(MiB)  # one chunk of each kind in one object
    s3.put_object(Bucket="packed", Key="noise", Body=noise)
    s3.put_object(Bucket="packed", Key="mixed", Body=mixed)
    assert [r.codec for r in manifest(server, "packed", "noise").chunks] == [None, None]
    assert [r.codec for r in manifest(server, "packed", "mixed").chunks] == [None, "zstd"]
    assert stored_bytes(server, manifest(server, "packed", "noise").chunks) == len(noise)
    assert get(s3, "packed", "noise") == noise and get(s3, "packed", "mixed") == mixed
    assert get(s3, "packed", "mixed", f"{MiB - 3}-{MiB + 3}") == mixed[MiB - 3:MiB + 4]
    assert server.backend.compression_stats()["chunksRaw"] == 3


def test_dedup_within_compressing_buckets_not_across_settings(server: ObjectServer) -> None:
    assert server.run(server.backend.create_bucket("packed2", 0.0, compression="zstd")) is None
    s3 = client(server)
    body = text(2 * MiB, seed=3)
    for bucket in ("packed", "packed2", "plain"):
        s3.put_object(Bucket=bucket, Key="same", Body=body)
    ids = {b: [r.id for r in manifest(server, b, "same").chunks] for b in ("packed", "packed2", "plain")}
    assert ids["packed"] == ids["packed2"]  # deterministic compression: one chunk per distinct plaintext
    assert not set(ids["packed"]) & set(ids["plain"])  # documented: stored once per form


@pytest.mark.parametrize(("source", "target"), [("packed", "plain"), ("plain", "packed")])
def test_copy_into_a_bucket_with_the_other_setting_rewrites_in_its_form(server: ObjectServer, source: str,
                                                                        target: str) -> None:
    s3 = client(server)
    body = text(MiB + 777, seed=5)
    s3.put_object(Bucket=source, Key="src", Body=body)
    s3.copy_object(Bucket=target, Key="dst", CopySource={"Bucket": source, "Key": "src"})
    codecs = {r.codec for r in manifest(server, target, "dst").chunks}
    assert codecs == ({"zstd"} if target == "packed" else {None})
    assert get(s3, target, "dst") == body and get(s3, target, "dst", f"{MiB - 1}-{MiB}") == body[MiB - 1:MiB + 1]


def test_multipart_upload_into_a_compressing_bucket(server: ObjectServer) -> None:
    s3 = client(server)
    body = text(11 * MiB + 3, seed=9)
    s3.upload_fileobj(io.BytesIO(body), "packed", "big",
                      Config=TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB))
    refs = manifest(server, "packed", "big").chunks
    assert [r.codec for r in refs] == ["zstd"] * 11 + [None]  # the 3-byte last chunk does not shrink
    assert sum(r.length for r in refs) == len(body)
    assert stored_bytes(server, refs) < len(body) // 2
    assert get(s3, "packed", "big") == body
    assert get(s3, "packed", "big", f"{5 * MiB - 2}-{10 * MiB + 2}") == body[5 * MiB - 2:10 * MiB + 3]


def test_a_corrupt_copy_of_a_compressed_chunk_is_read_around_and_recorded(server: ObjectServer) -> None:
    s3 = client(server)
    body = text(MiB // 2, seed=11)
    s3.put_object(Bucket="packed", Key="k", Body=body)
    ref = manifest(server, "packed", "k").chunks[0]
    first, second = sorted(server.chunks.holders(ref.id))  # equally reliable: read in node order
    server.chunks.corrupt(first, ref.id)  # bit rot in the compressed bytes: the hash catches it before decoding
    assert get(s3, "packed", "k") == body
    assert server.metadata.chunks[ref.id].bad == {first} and server.chunks.gets[second, ref.id] == 1


def test_a_chunk_that_does_not_decode_as_its_ref_says_fails_the_read_without_blaming_a_copy(
        server: ObjectServer) -> None:
    s3 = client(server)
    body = text(2 * MiB, seed=13)
    s3.put_object(Bucket="packed", Key="k", Body=body)
    good = manifest(server, "packed", "k")
    assert [r.codec for r in good.chunks] == ["zstd", "zstd"]
    wrong = replace(good.chunks[1], plain=good.chunks[1].plain - 1)  # a manifest that disagrees with its chunk
    bad = replace(good, chunks=(good.chunks[0], wrong), info=replace(good.info, size=good.info.size - 1))
    assert server.run(server.metadata.commit_manifest("packed", bad)) == "done"
    assert get(s3, "packed", "k", "0-99") == body[:100]  # the first chunk is fine
    with pytest.raises((IncompleteReadError, ResponseStreamingError)):  # the body stops short: never wrong bytes
        get(s3, "packed", "k")
    assert not server.metadata.chunks[wrong.id].bad  # identical on every copy: no copy is blamed (repair keeps it)


def test_create_bucket_refuses_an_unknown_compression_and_a_missing_library(server: ObjectServer,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    refused = server.run(server.backend.create_bucket("x", 0.0, compression="lz4"))
    assert isinstance(refused, S3Error) and refused.code is ErrorCode.INVALID_ARGUMENT
    assert refused.message.startswith("compression 'lz4' is not offered")

    def missing() -> Any:
        raise ImportError("No module named 'zstandard'")

    monkeypatch.setattr(compression, "_zstd", missing)
    refused = server.run(server.backend.create_bucket("y", 0.0, compression="zstd"))
    assert isinstance(refused, S3Error) and "needs the zstandard package" in refused.message
    assert server.run(server.metadata.get_bucket("y")) is None and server.run(server.metadata.get_bucket("x")) is None


def test_an_erasure_coded_bucket_compresses_too(tmp_path: Path) -> None:
    nodes = [StorageNode(f"n{i}", f"z{i % 3}", quota=1 << 30) for i in range(6)]
    with serving(tmp_path, nodes) as server:
        assert server.run(server.backend.create_bucket("coded", 0.0, erasure=RS_4_2, compression="zstd")) is None
        s3 = client(server)
        body = text(2 * MiB + 99, seed=17)
        s3.put_object(Bucket="coded", Key="k", Body=body)
        refs = manifest(server, "coded", "k").chunks
        assert [r.codec for r in refs] == ["zstd"] * 3
        stripes = [server.metadata.chunks[r.id].stripe for r in refs]
        assert all(s is not None for s in stripes)
        on_nodes = sum(len(c) for f in server.chunks.nodes.values() for c in f.chunks.values())
        assert on_nodes < len(body)  # 1.5x of the compressed size is still less than the plaintext
        server.chunks.nodes["n0"].down = server.chunks.nodes["n1"].down = True
        assert get(s3, "coded", "k") == body and get(s3, "coded", "k", f"{MiB - 5}-{2 * MiB + 5}") == \
            body[MiB - 5:2 * MiB + 6]


def test_a_gateway_without_zstandard_refuses_writes_and_reads_of_compressed_chunks_cleanly(
        server: ObjectServer, monkeypatch: pytest.MonkeyPatch) -> None:
    s3 = client(server)
    body = text(MiB, seed=19)
    s3.put_object(Bucket="packed", Key="k", Body=body)

    def missing() -> Any:
        raise ImportError("No module named 'zstandard'")

    monkeypatch.setattr(compression, "_zstd", missing)
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket="packed", Key="k2", Body=body)
    assert refused.value.response["Error"]["Code"] == "InternalError"
    assert "needs the zstandard package" in refused.value.response["Error"]["Message"]
    with pytest.raises((ClientError, IncompleteReadError, ResponseStreamingError)):
        get(s3, "packed", "k")
    s3.put_object(Bucket="plain", Key="k", Body=body)  # plain buckets are not affected
    assert get(s3, "plain", "k") == body

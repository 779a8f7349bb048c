"""Real boto3 against the S3 adapter on 127.0.0.1 (issue 20's client trap): its DEFAULT configuration over HTTPS
(CRC32 in an aws-chunked trailer, STREAMING-UNSIGNED-PAYLOAD-TRAILER, Transfer-Encoding: chunked), the same with
request_checksum_calculation="when_required" (no checksum, UNSIGNED-PAYLOAD), and the default over plain HTTP (the
body's SHA-256 signed, the CRC32 in a header). Every operation the layer routes, and its errors."""

from __future__ import annotations

import base64
import hashlib
import io
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.dataplane.s3.s3server import ACCESS_KEY, REGION, SECRET_KEY, S3Server, serving

MiB = 1024 * 1024
MODES = {
    "https-default": ("https", {}),
    "https-when-required": ("https", {"request_checksum_calculation": "when_required"}),
    "http-default": ("http", {}),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with serving(tmp_path_factory.mktemp("s3")) as s:
        yield s


def make_client(server: S3Server, mode: str = "https-default", *, secret: str = SECRET_KEY,
                access_key: str = ACCESS_KEY, **more: Any) -> Any:
    scheme, extra = MODES[mode]
    extra = {**extra, **more}
    url = server.https_url if scheme == "https" else server.http_url
    config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **extra)
    return boto3.client("s3", endpoint_url=url, aws_access_key_id=access_key, aws_secret_access_key=secret,
                        region_name=REGION, config=config, verify=str(server.ca_file))


@pytest.fixture(params=list(MODES))
def s3(request: pytest.FixtureRequest, server: S3Server) -> Any:
    return make_client(server, request.param)


@pytest.fixture
def bucket(s3: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    name = "b-" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:20]
    s3.create_bucket(Bucket=name)
    yield name
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=name, Key=obj["Key"])
    s3.delete_bucket(Bucket=name)


def code_of(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def test_bucket_lifecycle(s3: Any) -> None:
    s3.create_bucket(Bucket="lifecycle-bucket")
    assert "lifecycle-bucket" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.head_bucket(Bucket="lifecycle-bucket")
    with pytest.raises(ClientError) as dup:
        s3.create_bucket(Bucket="lifecycle-bucket")
    assert code_of(dup) == "BucketAlreadyOwnedByYou"
    s3.put_object(Bucket="lifecycle-bucket", Key="k", Body=b"x")
    with pytest.raises(ClientError) as full:
        s3.delete_bucket(Bucket="lifecycle-bucket")
    assert code_of(full) == "BucketNotEmpty"
    s3.delete_object(Bucket="lifecycle-bucket", Key="k")
    s3.delete_bucket(Bucket="lifecycle-bucket")
    with pytest.raises(ClientError) as gone:
        s3.head_bucket(Bucket="lifecycle-bucket")
    assert code_of(gone) == "404"
    assert "lifecycle-bucket" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_put_get_head_delete(s3: Any, bucket: str, server: S3Server) -> None:
    body = bytes(range(256)) * 1000
    put = s3.put_object(Bucket=bucket, Key="dir/obj ü+=.bin", Body=body, ContentType="application/x-test",
                        Metadata={"colour": "blue"})
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    stored = server.backend.buckets[bucket].objects["dir/obj ü+=.bin"]
    assert stored[1] == body  # what reached the backend is the decoded payload, not aws-chunked framing
    got = s3.get_object(Bucket=bucket, Key="dir/obj ü+=.bin")
    assert got["Body"].read() == body
    assert got["ContentType"] == "application/x-test"
    assert got["Metadata"] == {"colour": "blue"}
    assert got["ETag"] == put["ETag"]
    head = s3.head_object(Bucket=bucket, Key="dir/obj ü+=.bin")
    assert head["ContentLength"] == len(body)
    s3.delete_object(Bucket=bucket, Key="dir/obj ü+=.bin")
    with pytest.raises(ClientError) as missing:
        s3.get_object(Bucket=bucket, Key="dir/obj ü+=.bin")
    assert code_of(missing) == "NoSuchKey"


EXPECTED_PAYLOAD = {
    "https-default": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",  # aws-chunked with an x-amz-checksum-crc32 trailer
    "https-when-required": hashlib.sha256(b"hello checksums").hexdigest(),  # no checksum: the body is signed
    "http-default": hashlib.sha256(b"hello checksums").hexdigest(),  # signed body, CRC32 in a header
}


@pytest.mark.parametrize("mode", list(MODES))
def test_default_client_sends_a_crc32_the_server_checked_and_stored(server: S3Server, mode: str) -> None:
    s3 = make_client(server, mode)
    bucket = f"summed-{mode}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="summed", Body=b"hello checksums")
    assert ("PUT", f"/{bucket}/summed", EXPECTED_PAYLOAD[mode]) in server.seen
    info = server.backend.buckets[bucket].objects["summed"][0]
    if mode == "https-when-required":
        assert info.checksum is None
    else:
        assert info.checksum is not None and info.checksum[0].value == "crc32"
        got = s3.get_object(Bucket=bucket, Key="summed", ChecksumMode="ENABLED")
        assert got["ChecksumCRC32"] == info.checksum[1]
        assert got["Body"].read() == b"hello checksums"  # botocore validates the CRC32 against the body it reads


def test_content_md5_over_tls_sends_an_unsigned_payload_the_server_checks(server: S3Server) -> None:
    s3 = make_client(server, "https-when-required")
    s3.create_bucket(Bucket="md5-checked")
    body = b"covered by Content-MD5 only"
    good = base64.b64encode(hashlib.md5(body).digest()).decode()
    s3.put_object(Bucket="md5-checked", Key="k", Body=body, ContentMD5=good)
    assert ("PUT", "/md5-checked/k", "UNSIGNED-PAYLOAD") in server.seen
    assert server.backend.buckets["md5-checked"].objects["k"][1] == body
    wrong = base64.b64encode(hashlib.md5(b"something else").digest()).decode()
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket="md5-checked", Key="k2", Body=body, ContentMD5=wrong)
    assert code_of(exc) == "BadDigest"
    assert "k2" not in server.backend.buckets["md5-checked"].objects
    assert server.backend.staged == 0  # the rejected body's staging area was aborted


def test_missing_bucket(s3: Any) -> None:
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket="no-such-bucket-here", Key="k")
    assert code_of(exc) == "NoSuchBucket"
    with pytest.raises(ClientError) as put:
        s3.put_object(Bucket="no-such-bucket-here", Key="k", Body=b"1")
    assert code_of(put) == "NoSuchBucket"


@pytest.mark.parametrize(("header", "expected"), [
    ("bytes=2-5", b"2345"), ("bytes=-3", b"789"), ("bytes=7-", b"789"), ("bytes=8-100", b"89"),
], ids=["closed", "suffix", "open", "past-end"])
def test_ranged_get(s3: Any, bucket: str, header: str, expected: bytes) -> None:
    s3.put_object(Bucket=bucket, Key="digits", Body=b"0123456789")
    got = s3.get_object(Bucket=bucket, Key="digits", Range=header)
    assert got["Body"].read() == expected
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert got["ContentRange"].endswith("/10")


def test_unsatisfiable_range(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="digits", Body=b"0123456789")
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="digits", Range="bytes=10-")
    assert code_of(exc) == "InvalidRange"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416
    assert exc.value.response["ResponseMetadata"]["HTTPHeaders"]["content-range"] == "bytes */10"


def test_conditional_get(s3: Any, bucket: str) -> None:
    etag = s3.put_object(Bucket=bucket, Key="c", Body=b"conditional")["ETag"]
    assert s3.get_object(Bucket=bucket, Key="c", IfMatch=etag)["Body"].read() == b"conditional"
    with pytest.raises(ClientError) as wrong:
        s3.get_object(Bucket=bucket, Key="c", IfMatch='"0000"')
    assert code_of(wrong) == "PreconditionFailed"
    with pytest.raises(ClientError) as same:
        s3.get_object(Bucket=bucket, Key="c", IfNoneMatch=etag)
    assert same.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    future, past = datetime.now(UTC) + timedelta(days=1), datetime.now(UTC) - timedelta(days=1)
    with pytest.raises(ClientError) as not_modified:
        s3.get_object(Bucket=bucket, Key="c", IfModifiedSince=future)
    assert not_modified.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    assert s3.get_object(Bucket=bucket, Key="c", IfModifiedSince=past)["Body"].read() == b"conditional"
    with pytest.raises(ClientError) as modified:
        s3.get_object(Bucket=bucket, Key="c", IfUnmodifiedSince=past)
    assert code_of(modified) == "PreconditionFailed"


def test_copy_object(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="src", Body=b"copy me", Metadata={"a": "1"}, ContentType="text/plain")
    s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    got = s3.get_object(Bucket=bucket, Key="dst")
    assert (got["Body"].read(), got["Metadata"], got["ContentType"]) == (b"copy me", {"a": "1"}, "text/plain")
    s3.copy_object(Bucket=bucket, Key="dst2", CopySource=f"{bucket}/src", MetadataDirective="REPLACE",
                   Metadata={"b": "2"})
    assert s3.head_object(Bucket=bucket, Key="dst2")["Metadata"] == {"b": "2"}
    with pytest.raises(ClientError) as missing:
        s3.copy_object(Bucket=bucket, Key="dst3", CopySource={"Bucket": bucket, "Key": "nope"})
    assert code_of(missing) == "NoSuchKey"


def test_conditional_put_and_copy(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="once", Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as exists:
        s3.put_object(Bucket=bucket, Key="once", Body=b"second", IfNoneMatch="*")
    assert code_of(exists) == "PreconditionFailed"
    assert s3.get_object(Bucket=bucket, Key="once")["Body"].read() == b"first"
    with pytest.raises(ClientError) as stale:
        s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "once"},
                       CopySourceIfMatch='"0123"')
    assert code_of(stale) == "PreconditionFailed"


def test_response_overrides_and_location(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="o", Body=b"x", ContentType="application/octet-stream")
    got = s3.get_object(Bucket=bucket, Key="o", ResponseContentType="text/csv",
                        ResponseContentDisposition="attachment; filename=o.csv")
    assert (got["ContentType"], got["ContentDisposition"]) == ("text/csv", "attachment; filename=o.csv")
    assert s3.get_bucket_location(Bucket=bucket)["LocationConstraint"] in (None, "")


def test_delete_objects(s3: Any, bucket: str) -> None:
    for key in ("a", "b", "c"):
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    result = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "a"}, {"Key": "b"}, {"Key": "zz"}]})
    assert sorted(d["Key"] for d in result["Deleted"]) == ["a", "b", "zz"]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["c"]
    quiet = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "c"}], "Quiet": True})
    assert "Deleted" not in quiet and "Errors" not in quiet
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_list_objects_v2_delimiter_and_continuation(s3: Any, bucket: str) -> None:
    keys = ["a.txt", "dir1/x", "dir1/y", "dir2/z", "dir2/sub/w", "m.txt", "n/", "z.txt"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b".")
    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Delimiter="/",
                                                               PaginationConfig={"PageSize": 2}))
    assert len(pages) == 3  # six entries: a.txt dir1/ dir2/ m.txt n/ z.txt
    assert all(p["KeyCount"] <= 2 for p in pages)
    listed = [o["Key"] for p in pages for o in p.get("Contents", [])]
    prefixes = [c["Prefix"] for p in pages for c in p.get("CommonPrefixes", [])]
    assert listed == ["a.txt", "m.txt", "z.txt"]
    assert prefixes == ["dir1/", "dir2/", "n/"]
    under = s3.list_objects_v2(Bucket=bucket, Prefix="dir2/", Delimiter="/")
    assert [o["Key"] for o in under["Contents"]] == ["dir2/z"]
    assert [c["Prefix"] for c in under["CommonPrefixes"]] == ["dir2/sub/"]
    after = s3.list_objects_v2(Bucket=bucket, StartAfter="dir2/z")
    assert [o["Key"] for o in after["Contents"]] == ["m.txt", "n/", "z.txt"]
    everything = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, PaginationConfig={"PageSize": 3}) for o in p.get("Contents", [])]
    assert everything == sorted(keys)


def test_multipart_upload_file_above_8_mib(s3: Any, bucket: str, tmp_path: Path) -> None:
    data = hashlib.sha256(b"seed").digest() * (13 * MiB // 32)  # 13 MiB
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    config = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=5 * MiB, max_concurrency=2)
    s3.upload_file(str(source), bucket, "big.bin", Config=config)
    head = s3.head_object(Bucket=bucket, Key="big.bin")
    parts = [data[i:i + 5 * MiB] for i in range(0, len(data), 5 * MiB)]
    expected = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + "-3"
    assert head["ETag"] == f'"{expected}"'
    assert head["ContentLength"] == len(data)
    out = io.BytesIO()
    s3.download_fileobj(bucket, "big.bin", out, Config=config)  # ranged GETs in parallel
    assert out.getvalue() == data


def test_multipart_low_level(s3: Any, bucket: str) -> None:
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp", ContentType="text/x-parts")["UploadId"]
    first = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, Body=b"a" * 5 * MiB)
    second = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=2, Body=b"tail")
    listed = s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload)
    assert [(p["PartNumber"], p["Size"]) for p in listed["Parts"]] == [(1, 5 * MiB), (2, 4)]
    with pytest.raises(ClientError) as order:
        s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={"Parts": [
            {"PartNumber": 2, "ETag": second["ETag"]}, {"PartNumber": 1, "ETag": first["ETag"]}]})
    assert code_of(order) == "InvalidPartOrder"
    done = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": first["ETag"]}, {"PartNumber": 2, "ETag": second["ETag"]}]})
    assert done["ETag"].endswith('-2"')
    got = s3.get_object(Bucket=bucket, Key="mp")
    assert got["Body"].read() == b"a" * 5 * MiB + b"tail"
    assert got["ContentType"] == "text/x-parts"
    aborted = s3.create_multipart_upload(Bucket=bucket, Key="gone")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="gone", UploadId=aborted, PartNumber=1, Body=b"x")
    s3.abort_multipart_upload(Bucket=bucket, Key="gone", UploadId=aborted)
    with pytest.raises(ClientError) as no_upload:
        s3.list_parts(Bucket=bucket, Key="gone", UploadId=aborted)
    assert code_of(no_upload) == "NoSuchUpload"


def test_small_part_is_refused(s3: Any, bucket: str) -> None:
    upload = s3.create_multipart_upload(Bucket=bucket, Key="small")["UploadId"]
    parts = [s3.upload_part(Bucket=bucket, Key="small", UploadId=upload, PartNumber=n, Body=b"tiny")["ETag"]
             for n in (1, 2)]
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(Bucket=bucket, Key="small", UploadId=upload, MultipartUpload={"Parts": [
            {"PartNumber": n, "ETag": e} for n, e in zip((1, 2), parts, strict=True)]})
    assert code_of(exc) == "EntityTooSmall"


# ---- authentication ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", list(MODES))
def test_wrong_secret_is_signature_does_not_match(server: S3Server, mode: str) -> None:
    bad = make_client(server, mode, secret="not-the-secret")
    with pytest.raises(ClientError) as exc:
        bad.list_buckets()
    assert code_of(exc) == "SignatureDoesNotMatch"
    with pytest.raises(ClientError) as put:
        bad.put_object(Bucket="whatever-bucket", Key="k", Body=b"data")
    assert code_of(put) == "SignatureDoesNotMatch"


def test_unknown_access_key(server: S3Server) -> None:
    with pytest.raises(ClientError) as exc:
        make_client(server, access_key="AKIDNOBODY").list_buckets()
    assert code_of(exc) == "InvalidAccessKeyId"


def _fetch(url: str, server: S3Server) -> tuple[int, bytes]:
    import ssl

    context = ssl.create_default_context(cafile=str(server.ca_file))
    try:
        with urllib.request.urlopen(url, context=context, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_presigned_urls(server: S3Server) -> None:
    s3 = make_client(server, signature_version="s3v4")  # boto3 presigns with SigV2 unless told
    s3.create_bucket(Bucket="presigned")
    s3.put_object(Bucket="presigned", Key="doc.txt", Body=b"presigned body")
    s3.put_object(Bucket="presigned", Key="other.txt", Body=b"not yours")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "presigned", "Key": "doc.txt"}, ExpiresIn=300)
    assert _fetch(url, server) == (200, b"presigned body")

    tampered = url.replace("doc.txt", "other.txt")
    status, body = _fetch(tampered, server)
    assert (status, b"<Code>SignatureDoesNotMatch</Code>" in body) == (403, True)

    longer = url.replace("X-Amz-Expires=300", "X-Amz-Expires=3000")
    assert _fetch(longer, server)[0] == 403

    server.clock.offset = 600.0  # ten minutes later: past the five-minute URL
    try:
        status, body = _fetch(url, server)
    finally:
        server.clock.offset = 0.0
    assert status == 403
    assert b"<Code>AccessDenied</Code>" in body and b"Request has expired" in body

    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": "presigned", "Key": "up.txt"}, ExpiresIn=60)
    import ssl

    request = urllib.request.Request(put_url, data=b"uploaded via URL", method="PUT")
    with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=str(server.ca_file)),
                                timeout=30) as response:
        assert response.status == 200
    assert s3.get_object(Bucket="presigned", Key="up.txt")["Body"].read() == b"uploaded via URL"


def test_default_presigned_urls_are_sigv2(server: S3Server) -> None:
    """boto3's generate_presigned_url signs with SigV2 unless the client says s3v4: those URLs work too."""
    s3 = make_client(server)
    s3.create_bucket(Bucket="presigned-v2")
    s3.put_object(Bucket="presigned-v2", Key="doc.txt", Body=b"v2 body")
    s3.put_object(Bucket="presigned-v2", Key="other.txt", Body=b"not yours")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "presigned-v2", "Key": "doc.txt",
                                                          "ResponseContentType": "text/plain"}, ExpiresIn=300)
    assert "AWSAccessKeyId=" in url and "X-Amz-Signature" not in url
    assert _fetch(url, server) == (200, b"v2 body")
    for tampered in (url.replace("doc.txt", "other.txt"), url.replace("text%2Fplain", "text%2Fhtml")):
        status, body = _fetch(tampered, server)
        assert (status, b"<Code>SignatureDoesNotMatch</Code>" in body) == (403, True), tampered
    server.clock.offset = 600.0
    try:
        status, body = _fetch(url, server)
    finally:
        server.clock.offset = 0.0
    assert status == 403 and b"Request has expired" in body


def test_skewed_clock_is_refused(server: S3Server) -> None:
    server.clock.offset = 3600.0
    try:
        with pytest.raises(ClientError) as exc:
            make_client(server).list_buckets()
    finally:
        server.clock.offset = 0.0
    assert code_of(exc) == "RequestTimeTooSkewed"

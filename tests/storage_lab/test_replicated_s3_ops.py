"""S3 operations and errors against a running cluster (the layer's own tests, tests/dataplane/s3, use an in-memory
backend): boto3 with its default configuration from another lab machine, the admin key. Ranged and conditional GET,
CopyObject, multipart above 8 MiB through `upload_file`/`download_fileobj`, ListObjectsV2 with a delimiter and
continuation, DeleteObjects; NoSuchKey, NoSuchBucket, SignatureDoesNotMatch with a wrong secret, a tampered and an
expired presigned URL."""

from __future__ import annotations

import io
import random
import ssl
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.storage_lab.world import MiB, World

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

BUCKET = "ops"


def code(fn: Any) -> str:
    from botocore.exceptions import ClientError

    try:
        fn()
    except ClientError as exc:
        return str(exc.response.get("Error", {}).get("Code"))
    return "no error"


def test_operations_and_errors(w4: World) -> None:
    body = random.Random(11).randbytes(9 * MiB + 321)

    def run() -> None:
        s3 = w4.s3()
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="a/one", Body=b"0123456789", Metadata={"who": "lab"})
        got = s3.get_object(Bucket=BUCKET, Key="a/one", Range="bytes=2-5")
        assert got["Body"].read() == b"2345" and got["ContentRange"] == "bytes 2-5/10"
        etag = s3.head_object(Bucket=BUCKET, Key="a/one")["ETag"]
        assert code(lambda: s3.get_object(Bucket=BUCKET, Key="a/one", IfNoneMatch=etag)) == "304"
        s3.copy_object(Bucket=BUCKET, Key="b/copy", CopySource={"Bucket": BUCKET, "Key": "a/one"})
        head = s3.head_object(Bucket=BUCKET, Key="b/copy")
        assert head["ContentLength"] == 10 and head["Metadata"] == {"who": "lab"}

        s3.upload_fileobj(io.BytesIO(body), BUCKET, "big/file")  # multipart: 8 MiB parts
        assert s3.head_object(Bucket=BUCKET, Key="big/file")["ETag"].strip('"').endswith("-2")
        out = io.BytesIO()
        s3.download_fileobj(BUCKET, "big/file", out)
        assert out.getvalue() == body

        for i in range(5):
            s3.put_object(Bucket=BUCKET, Key=f"c/{i}", Body=b"x")
        top = s3.list_objects_v2(Bucket=BUCKET, Delimiter="/")
        assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["a/", "b/", "big/", "c/"]
        page = s3.list_objects_v2(Bucket=BUCKET, Prefix="c/", MaxKeys=2)
        keys = [o["Key"] for o in page["Contents"]]
        while page.get("IsTruncated"):
            page = s3.list_objects_v2(Bucket=BUCKET, Prefix="c/", MaxKeys=2,
                                      ContinuationToken=page["NextContinuationToken"])
            keys += [o["Key"] for o in page["Contents"]]
        assert keys == [f"c/{i}" for i in range(5)]
        gone = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": f"c/{i}"} for i in range(5)]})
        assert len(gone["Deleted"]) == 5

        assert code(lambda: s3.get_object(Bucket=BUCKET, Key="missing")) == "NoSuchKey"
        assert code(lambda: s3.list_objects_v2(Bucket="no-such-bucket")) == "NoSuchBucket"
        creds = w4.coord.storage_config()
        bad = w4.s3(secret=creds["secretAccessKey"][::-1])  # the admin key's id with a wrong secret
        assert code(lambda: bad.get_object(Bucket=BUCKET, Key="a/one")) == "SignatureDoesNotMatch"

        url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "a/one"}, ExpiresIn=300)
        assert fetch(w4, url) == (200, b"0123456789")
        assert fetch(w4, url.replace("a%2Fone", "b%2Fcopy").replace("a/one", "b/copy"))[0] == 403
        soon = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "a/one"}, ExpiresIn=1)
        time.sleep(2.5)  # past its expiry: the clock the URL is judged by, not a timing assertion
        assert fetch(w4, soon)[0] == 403

    w4.net.call(run, timeout=500)


def fetch(w: World, url: str) -> tuple[int, bytes]:
    """GET a URL (called from a network-pool thread), trusting the cluster CA."""
    context = ssl.create_default_context(cafile=str(w.coord.ca))
    try:
        with urllib.request.urlopen(url, timeout=30, context=context) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()

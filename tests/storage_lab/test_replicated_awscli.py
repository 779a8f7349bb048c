"""The AWS CLI (v1 from PyPI, a dev dependency; its default checksum behaviour matches boto3's) against a running
cluster's S3 endpoint from another machine of the lab, with the admin key `cloudless up` wrote: `aws s3 mb`, `cp` up
and down above the 8 MiB multipart threshold (a 9 MiB and a 21 MiB file), `ls`, `sync` of a directory both ways,
`rm --recursive`, `rb`. Also boto3 with `request_checksum_calculation="when_required"` (no aws-chunked trailer)."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from tests.dataplane.s3.test_awscli import aws_binary
from tests.storage_lab.world import MiB, World

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

BUCKET = "awscli"


def aws(w: World, home: Path, *args: str, timeout: float = 300) -> str:
    creds = w.coord.storage_config()
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "AWS_ACCESS_KEY_ID": creds["accessKeyId"],
           "AWS_SECRET_ACCESS_KEY": creds["secretAccessKey"], "AWS_DEFAULT_REGION": creds.get("region", "us-east-1"),
           "AWS_CONFIG_FILE": str(home / "no-config"), "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-credentials"),
           "AWS_MAX_ATTEMPTS": "1"}  # every failure shows: no retry hides it
    out = w.client_host.run(aws_binary(), "--endpoint-url", w.endpoint, "--ca-bundle", str(w.coord.ca), *args,
                            check=False, timeout=timeout, env=env)
    assert out.returncode == 0, f"aws {' '.join(args)}: {out.returncode}\n{out.stdout}\n{out.stderr}\n{w.logs()}"
    return out.stdout


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_aws_cli_cp_sync_multipart(w4: World, tmp_path: Path) -> None:
    aws_binary()
    rng = random.Random(20)
    up, down = tmp_path / "up", tmp_path / "down"
    (up / "tree" / "sub").mkdir(parents=True)
    down.mkdir()
    big = up / "big.bin"
    big.write_bytes(rng.randbytes(9 * MiB))
    bigger = up / "bigger.bin"
    bigger.write_bytes(rng.randbytes(21 * MiB + 123))
    tree = {f"tree/f{i}.txt": rng.randbytes(rng.randint(1, 200_000)) for i in range(4)}
    tree["tree/sub/deep.bin"] = rng.randbytes(MiB + 5)
    for name, body in tree.items():
        (up / name).write_bytes(body)

    aws(w4, tmp_path, "s3", "mb", f"s3://{BUCKET}")
    for f in (big, bigger):
        aws(w4, tmp_path, "s3", "cp", str(f), f"s3://{BUCKET}/{f.name}")
    head = w4.net.call(lambda: w4.s3().head_object(Bucket=BUCKET, Key="bigger.bin"))
    assert head["ContentLength"] == bigger.stat().st_size
    assert head["ETag"].strip('"').endswith("-3"), f"not a multipart upload of 8 MiB parts: {head['ETag']}"
    for f in (big, bigger):
        aws(w4, tmp_path, "s3", "cp", f"s3://{BUCKET}/{f.name}", str(down / f.name))
        assert digest(down / f.name) == digest(f), f"{f.name} came back different"

    aws(w4, tmp_path, "s3", "sync", str(up / "tree"), f"s3://{BUCKET}/tree")
    listing = aws(w4, tmp_path, "s3", "ls", "--recursive", f"s3://{BUCKET}/tree/")
    assert sorted(line.split()[-1] for line in listing.splitlines()) == sorted(tree)
    aws(w4, tmp_path, "s3", "sync", f"s3://{BUCKET}/tree", str(down / "tree"))
    for name, body in tree.items():
        assert (down / name).read_bytes() == body, name
    again = aws(w4, tmp_path, "s3", "sync", str(up / "tree"), f"s3://{BUCKET}/tree")
    assert "upload:" not in again, f"a second sync uploaded again: {again}"

    aws(w4, tmp_path, "s3", "rm", "--recursive", f"s3://{BUCKET}")
    assert aws(w4, tmp_path, "s3", "ls", f"s3://{BUCKET}").strip() == ""
    aws(w4, tmp_path, "s3", "rb", f"s3://{BUCKET}")


def test_boto3_when_required_checksums(w4: World) -> None:
    """Without aws-chunked trailers: a signed plain body (what older clients and rclone send)."""
    body = random.Random(7).randbytes(3 * MiB + 17)

    def roundtrip() -> bytes:
        s3 = w4.s3(request_checksum_calculation="when_required", response_checksum_validation="when_required")
        s3.create_bucket(Bucket="plain")
        s3.put_object(Bucket="plain", Key="k", Body=body)
        got: bytes = s3.get_object(Bucket="plain", Key="k")["Body"].read()
        s3.delete_object(Bucket="plain", Key="k")
        s3.delete_bucket(Bucket="plain")
        return got

    assert w4.net.call(roundtrip) == body

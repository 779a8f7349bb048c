"""The AWS CLI (v1, from PyPI; its default checksum behaviour matches boto3's) against the S3 adapter over HTTPS:
`aws s3 cp` up and down above the 8 MiB multipart threshold, `aws s3 ls`, `aws s3 sync`, `aws s3 rm`."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dataplane.s3.s3server import ACCESS_KEY, REGION, SECRET_KEY, S3Server, serving
from tests.need import unavailable

MiB = 1024 * 1024


def aws_binary() -> str:
    beside = Path(sys.executable).with_name("aws")
    found = str(beside) if beside.exists() else shutil.which("aws")
    if found is None:
        unavailable("the AWS CLI is not installed: pip install 'cloudless[dev]' (awscli)")
        raise AssertionError("unreachable")
    return found


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with serving(tmp_path_factory.mktemp("s3cli")) as s:
        yield s


def aws(server: S3Server, tmp: Path, *args: str) -> str:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp), "AWS_ACCESS_KEY_ID": ACCESS_KEY,
           "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": REGION,
           "AWS_CONFIG_FILE": str(tmp / "no-config"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-credentials"),
           "AWS_MAX_ATTEMPTS": "1"}
    done = subprocess.run([aws_binary(), "--endpoint-url", server.https_url, "--ca-bundle", str(server.ca_file),
                           "s3", *args], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"aws s3 {' '.join(args)} failed ({done.returncode}): {done.stderr}"
    return done.stdout


@pytest.mark.timeout(600)  # ten CLI runs of ~1.5 s each here; generous for a loaded CI machine
def test_aws_s3_cp_ls_sync_rm(server: S3Server, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(hashlib.sha256(b"cli").digest() * (9 * MiB // 32 + 7))  # just over 9 MiB: multipart
    aws(server, tmp_path, "mb", "s3://cli-bucket")
    aws(server, tmp_path, "cp", str(big), "s3://cli-bucket/data/big.bin")
    stored = server.backend.buckets["cli-bucket"].objects["data/big.bin"][0]
    assert stored.parts >= 2  # the CLI used a multipart upload
    assert "big.bin" in aws(server, tmp_path, "ls", "s3://cli-bucket/data/")
    back = tmp_path / "back.bin"
    aws(server, tmp_path, "cp", "s3://cli-bucket/data/big.bin", str(back))
    assert back.read_bytes() == big.read_bytes()

    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("alpha")
    (tree / "sub" / "b.txt").write_text("beta")
    aws(server, tmp_path, "sync", str(tree), "s3://cli-bucket/tree")
    listing = aws(server, tmp_path, "ls", "--recursive", "s3://cli-bucket/tree/")
    assert "tree/a.txt" in listing and "tree/sub/b.txt" in listing
    copy = tmp_path / "copy"
    aws(server, tmp_path, "sync", "s3://cli-bucket/tree", str(copy))
    assert (copy / "sub" / "b.txt").read_text() == "beta"

    aws(server, tmp_path, "rm", "--recursive", "s3://cli-bucket/")
    aws(server, tmp_path, "rb", "s3://cli-bucket")
    assert "cli-bucket" not in server.backend.buckets

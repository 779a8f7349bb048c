"""`cloudless storage ls/cp/rm` against the real S3 adapter (dataplane.s3.http.s3_app over the in-memory backend) over
HTTPS: our SigV4 signer is checked by the endpoint's verifier, single PUTs and multipart uploads above 8 MiB, standard
input and output, paged listings, S3 errors with hints; boto3 reads back what the CLI wrote."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from cloudless import storage_cli, storage_transfer
from cloudless.s3_client import S3Client, resolve_storage_config, sign_headers, write_storage_config
from dataplane.s3 import sigv4
from tests.cli.conftest import Result
from tests.dataplane.s3.s3server import ACCESS_KEY, REGION, SECRET_KEY, S3Server, _self_signed, serving

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with serving(tmp_path_factory.mktemp("s3")) as s:
        yield s


@pytest.fixture(autouse=True)
def no_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No AWS_* setting of the machine running the tests (some set AWS_CA_BUNDLE) reaches the CLI."""
    for name in [n for n in os.environ if n.startswith("AWS_") or n == "CLOUDLESS_STORAGE_CONFIG"]:
        monkeypatch.delenv(name)


@pytest.fixture
def env(server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The CLI pointed at the endpoint through the AWS_* variables a workload's secret would hold."""
    for name, value in (("AWS_ENDPOINT_URL", server.https_url), ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
                        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY), ("AWS_CA_BUNDLE", str(server.ca_file)),
                        ("AWS_REGION", REGION)):
        monkeypatch.setenv(name, value)
    return server


def boto(server: S3Server) -> Any:
    return boto3.client("s3", endpoint_url=server.https_url, aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET_KEY, region_name=REGION, verify=str(server.ca_file),
                        config=Config(s3={"addressing_style": "path"}))


def bucket(server: S3Server, name: str) -> str:
    try:
        boto(server).create_bucket(Bucket=name)
    except boto(server).exceptions.BucketAlreadyOwnedByYou:
        pass
    return name


def data(n: int, seed: int = 1) -> bytes:
    out, block = bytearray(), hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:n])


def test_a_small_file_goes_up_in_one_put_and_comes_back(env: S3Server, cli: Callable[..., Result],
                                                       tmp_path: Path) -> None:
    b = bucket(env, "small")
    src = tmp_path / "notes.txt"
    src.write_bytes(b"hello storage\n")
    r = cli("storage", "cp", str(src), f"s3://{b}/docs/")
    assert r.code == 0, r.err
    assert r.out == f"upload: {src} to s3://{b}/docs/notes.txt (14B)\n"
    got = boto(env).get_object(Bucket=b, Key="docs/notes.txt")
    assert got["Body"].read() == b"hello storage\n" and got["ContentType"] == "text/plain"
    assert ("PUT", f"/{b}/docs/notes.txt") in [(m, p) for m, p, _ in env.seen]
    r = cli("storage", "cp", f"s3://{b}/docs/notes.txt", str(tmp_path))  # into a directory: the object's name
    assert r.code == 0, r.err
    assert (tmp_path / "notes.txt").read_bytes() == b"hello storage\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_above_8_mib_the_upload_is_multipart_and_the_bytes_survive(env: S3Server, cli: Callable[..., Result],
                                                                   tmp_path: Path) -> None:
    b = bucket(env, "big")
    blob = data(17 * MiB + 123)
    src = tmp_path / "big.bin"
    src.write_bytes(blob)
    before = len(env.seen)
    r = cli("storage", "cp", str(src), f"s3://{b}/big.bin")
    assert r.code == 0, r.err
    calls = [(m, p) for m, p, _ in env.seen[before:]]
    assert calls.count(("PUT", f"/{b}/big.bin")) == 3  # parts of 8 + 8 + 1 MiB
    assert calls.count(("POST", f"/{b}/big.bin")) == 2  # create and complete
    head = boto(env).head_object(Bucket=b, Key="big.bin")
    assert head["ContentLength"] == len(blob) and head["ETag"].strip('"').endswith("-3")
    out = tmp_path / "back.bin"
    r = cli("storage", "cp", f"s3://{b}/big.bin", str(out))
    assert r.code == 0, r.err
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(blob).digest()


def test_exactly_8_mib_is_one_put(env: S3Server, cli: Callable[..., Result], tmp_path: Path) -> None:
    b = bucket(env, "edge")
    src = tmp_path / "eight.bin"
    src.write_bytes(data(8 * MiB))
    before = len(env.seen)
    assert cli("storage", "cp", str(src), f"s3://{b}/eight.bin").code == 0
    assert [(m, p) for m, p, _ in env.seen[before:]] == [("PUT", f"/{b}/eight.bin")]


def test_standard_input_and_output(env: S3Server, clock: object, monkeypatch: pytest.MonkeyPatch) -> None:
    b = bucket(env, "pipes")
    blob = data(9 * MiB + 7, seed=2)  # unknown size from a pipe, still multipart above 8 MiB
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(blob)))
    assert storage_main("storage", "cp", "-", f"s3://{b}/from-stdin") == 0
    assert boto(env).get_object(Bucket=b, Key="from-stdin")["Body"].read() == blob
    assert boto(env).head_object(Bucket=b, Key="from-stdin")["ETag"].strip('"').endswith("-2")
    out = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(out))
    assert storage_main("storage", "cp", f"s3://{b}/from-stdin", "-") == 0
    assert out.getvalue() == blob  # nothing else on standard output


def storage_main(*argv: str) -> int:
    from cloudless.cli import main
    return main(list(argv))


def test_stdin_needs_an_object_name(env: S3Server, cli: Callable[..., Result]) -> None:
    r = cli("storage", "cp", "-", "s3://pipes/")
    assert r.code == 2 and "standard input has no file name" in r.err and "s3://BUCKET/KEY" in r.err


def test_ls_follows_every_page_and_groups_prefixes(env: S3Server, cli: Callable[..., Result],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    b = bucket(env, "listing")
    s3 = boto(env)
    keys = [f"a/{i:04d}" for i in range(23)] + ["b/x", "b/y", "top"]
    for key in keys:
        s3.put_object(Bucket=b, Key=key, Body=key.encode())
    real = S3Client.list_page

    def small_pages(self: S3Client, *args: Any, **kw: Any) -> Any:
        return real(self, *args, **{**kw, "max_keys": 5})
    monkeypatch.setattr(S3Client, "list_page", small_pages)  # 26 keys in pages of 5: the tokens are followed
    r = cli("storage", "ls", "--recursive", f"s3://{b}")
    assert r.code == 0, r.err
    assert [line.split()[-1] for line in r.out.splitlines()] == sorted(keys)
    assert r.out.splitlines()[0].split()[2] == str(len("a/0000"))
    r = cli("storage", "ls", f"s3://{b}/")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert [ln.split() for ln in lines if "PRE" in ln] == [["PRE", "a/"], ["PRE", "b/"]]
    assert [ln.split()[-1] for ln in lines if "PRE" not in ln] == ["top"]
    r = cli("storage", "ls")
    assert "s3://listing/" in r.out.splitlines()


def test_rm_and_rm_recursive(env: S3Server, cli: Callable[..., Result]) -> None:
    b = bucket(env, "removal")
    s3 = boto(env)
    for key in ("keep", "tmp/1", "tmp/2"):
        s3.put_object(Bucket=b, Key=key, Body=b"x")
    assert cli("storage", "rm", f"s3://{b}/keep").out == f"delete: s3://{b}/keep\n"
    r = cli("storage", "rm", "--recursive", f"s3://{b}/tmp/")
    assert r.code == 0 and r.out.splitlines() == [f"delete: s3://{b}/tmp/1", f"delete: s3://{b}/tmp/2"]
    assert s3.list_objects_v2(Bucket=b)["KeyCount"] == 0
    r = cli("storage", "rm", f"s3://{b}")
    assert r.code == 2 and "--recursive" in r.err


def test_s3_refusals_say_what_to_do(env: S3Server, cli: Callable[..., Result], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    r = cli("storage", "cp", "s3://no-such-bucket/x", str(tmp_path / "x"))
    assert r.code == 1 and "NoSuchBucket" in r.err and "cloudless storage buckets" in r.err
    b = bucket(env, "errors")
    r = cli("storage", "cp", f"s3://{b}/missing", str(tmp_path / "x"))
    assert r.code == 1 and "NoSuchKey" in r.err and f"cloudless storage ls s3://{b}/" in r.err
    assert not (tmp_path / "x").exists()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-at-all")
    r = cli("storage", "ls", f"s3://{b}")
    assert r.code == 1 and "SignatureDoesNotMatch" in r.err and "AWS_SECRET_ACCESS_KEY" in r.err


def test_an_untrusted_certificate_names_the_ca_setting(env: S3Server, cli: Callable[..., Result],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_CA_BUNDLE")
    r = cli("storage", "ls")
    assert r.code == 1 and "does not trust" in r.err and "AWS_CA_BUNDLE" in r.err


def test_no_credentials_is_a_usage_error_with_the_way_out(cli: Callable[..., Result]) -> None:
    r = cli("storage", "ls")
    assert r.code == 2 and "no S3 endpoint, accessKeyId, secretAccessKey configured" in r.err
    assert "cloudless up" in r.err and "AWS_ACCESS_KEY_ID" in r.err


def _other_ca_pem() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        cert, _ = _self_signed(Path(tmp))
        return cert.read_bytes()


def test_the_storage_config_file_cloudless_up_writes(server: S3Server, cli: Callable[..., Result],
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "xdg" / "cloudless" / "storage.json"  # next to the CLI config under XDG_CONFIG_HOME
    write_storage_config(path, endpoint=server.https_url, access_key=ACCESS_KEY, secret=SECRET_KEY, region=REGION,
                         ca=str(server.ca_file))
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert json.loads(path.read_text())["accessKeyId"] == ACCESS_KEY
    bucket(server, "fromfile")
    r = cli("storage", "ls")
    assert r.code == 0, r.err
    assert "s3://fromfile/" in r.out.splitlines()
    cfg = resolve_storage_config(endpoint=None, config=None, env=dict(os.environ))
    assert cfg.secret == SECRET_KEY and SECRET_KEY not in repr(cfg)
    # a machine-wide AWS_CA_BUNDLE (another CA) is trusted besides the cluster CA, not instead of it
    other = tmp_path / "other-ca.pem"
    other.write_bytes(_other_ca_pem())
    monkeypatch.setenv("AWS_CA_BUNDLE", str(other))
    assert cli("storage", "ls").code == 0
    # beside a CLI config named with --config
    elsewhere = tmp_path / "elsewhere"
    write_storage_config(elsewhere / "storage.json", endpoint=server.https_url, access_key=ACCESS_KEY,
                         secret=SECRET_KEY, region=REGION, ca=str(server.ca_file))
    path.unlink()
    assert cli("storage", "ls").code == 2
    assert cli("storage", "ls", "--config", str(elsewhere / "config.json")).code == 0
    monkeypatch.setenv("CLOUDLESS_CONFIG", str(elsewhere / "config.json"))
    assert cli("storage", "ls").code == 0
    monkeypatch.setenv("AWS_CA_BUNDLE", str(tmp_path / "missing.pem"))
    r = cli("storage", "ls")
    assert r.code == 2 and "cannot load the CA bundle" in r.err and "missing.pem" in r.err


def test_the_signer_is_what_the_verifier_accepts_for_awkward_keys() -> None:
    now = 1_800_000_000.0
    path, query = "/b/dir/ä ö+%.txt", [("uploadId", "a/b+c"), ("partNumber", "3")]
    headers = sign_headers("PUT", path, query, {"host": "s3.example:9000", "Content-Type": "text/plain"},
                           payload_sha256=sigv4.EMPTY_SHA256, access_key=ACCESS_KEY, secret=SECRET_KEY,
                           region=REGION, now=now)
    raw_query = "&".join(f"{sigv4.uri_encode(k)}={sigv4.uri_encode(v)}" for k, v in query)
    request = sigv4.Request("PUT", sigv4.uri_encode(path, keep_slash=True), raw_query, tuple(headers.items()))
    verdict = sigv4.verify(request, {ACCESS_KEY: SECRET_KEY}.get, now, region=REGION)
    assert isinstance(verdict, sigv4.Authenticated), verdict
    wrong = sigv4.verify(request, {ACCESS_KEY: SECRET_KEY + "x"}.get, now, region=REGION)
    assert not isinstance(wrong, sigv4.Authenticated)


def test_progress_is_drawn_on_a_terminal_only() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    t = [0.0]
    stream = Tty()
    p = storage_transfer.Progress("up", 16 * MiB, clock=lambda: t[0], stream=stream, enabled=True)
    for _ in range(16):
        t[0] += 0.3
        p(MiB)
    p.finish()
    lines = stream.getvalue().split("\r")
    assert "16MiB/16MiB (100%)" in lines[-1] and lines[-1].endswith("\n")
    assert len(lines) > 3
    quiet = io.StringIO()
    q = storage_transfer.Progress("up", 16 * MiB, clock=lambda: t[0], stream=quiet, enabled=True)
    t[0] += 5
    q(16 * MiB)
    q.finish()
    assert quiet.getvalue() == ""


@pytest.mark.parametrize(("text", "want"), [("photos", ("photos", "write")), ("photos:ro", ("photos", "read")),
                                            ("*:admin", ("*", "admin")), ("b:RW", ("b", "write"))],
                         ids=["default", "ro", "star-admin", "upper"])
def test_grants(text: str, want: tuple[str, str]) -> None:
    assert storage_cli.grant(text) == want


def test_part_size_grows_only_past_ten_thousand_parts() -> None:
    assert storage_transfer.part_size(None) == 8 * MiB
    assert storage_transfer.part_size(80_000 * MiB) == 8 * MiB
    big = 200_000 * MiB
    assert storage_transfer.part_size(big) * storage_transfer.MAX_PARTS >= big


def test_a_download_into_a_missing_directory_is_a_usage_error(env: S3Server, cli: Callable[..., Result],
                                                              tmp_path: Path) -> None:
    b = bucket(env, "nowhere")
    boto(env).put_object(Bucket=b, Key="k", Body=b"data")
    r = cli("storage", "cp", f"s3://{b}/k", str(tmp_path / "no" / "such" / "file"))
    assert r.code == 2 and "cannot write into" in r.err
    assert cli("storage", "cp", f"s3://{b}/k", str(tmp_path / "file")).code == 0  # the connection is still usable


def test_the_storage_cli_loads_no_server_side_package() -> None:
    import subprocess
    code = ("import sys, cloudless.storage_cli, cloudless.s3_client\n"
            "print(','.join(m for m in ('aiohttp', 'coordinator', 'yaml', 'boto3', 'botocore') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == ""


def test_keys_with_spaces_plus_percent_and_unicode_round_trip(env: S3Server, cli: Callable[..., Result],
                                                              tmp_path: Path) -> None:
    b = bucket(env, "awkward")
    key = "dir/ä ö+%20&=?#.txt"
    src = tmp_path / "f"
    src.write_bytes(b"odd names")
    r = cli("storage", "cp", str(src), f"s3://{b}/{key}")
    assert r.code == 0, r.err
    assert boto(env).get_object(Bucket=b, Key=key)["Body"].read() == b"odd names"
    r = cli("storage", "ls", "-r", f"s3://{b}/dir/")
    assert r.out.rstrip().endswith(key)
    assert cli("storage", "cp", f"s3://{b}/{key}", str(tmp_path / "back")).code == 0
    assert (tmp_path / "back").read_bytes() == b"odd names"
    assert cli("storage", "rm", f"s3://{b}/{key}").code == 0
    assert boto(env).list_objects_v2(Bucket=b)["KeyCount"] == 0

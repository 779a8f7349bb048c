"""A compressing bucket on the running cluster (issue 20, Deliver 1: optional compression): created through the REST
API with `"compression": "zstd"`, written and read with boto3 (default configuration) from another lab machine.
Ground truth is the devices' chunk directories: a text-like object's chunks are on disk under the ids of their
zstd-compressed bytes (computed here with the same deterministic level), R = 2 copies each, taking far fewer bytes
than the object; a random object's chunks are on disk raw (ids of the plaintext, full size); both read back
byte-identical whole, in ranges across chunk boundaries and after a multipart upload. The bucket listing's
`storedBytes` is exactly what those stored forms add up to, and the gateway's status counts what was saved."""

from __future__ import annotations

import hashlib
import io
import random

import pytest

from tests.storage_lab.objects import log_text, stored_form
from tests.storage_lab.world import MiB, World

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

BUCKET = "packed"


def on_disk(w: World, chunks: dict[str, int]) -> dict[str, list[int]]:
    """chunk id -> the sizes of its files on the devices' disks."""
    return {cid: [a.chunk_path(cid).stat().st_size for a in w.agents.values() if cid in a.held()] for cid in chunks}


def test_a_compressing_bucket_stores_less_and_reads_back_identical(w4: World) -> None:
    status, answer = w4.post("/v1/storage/buckets", {"name": BUCKET, "compression": "zstd"})
    assert status == 201, f"creating a zstd bucket: {status} {answer}\n{w4.logs()}"
    listed = w4.rest("/v1/storage/buckets") or {}
    rows = {b["name"]: b for b in listed.get("items", [])}
    assert rows.get(BUCKET, {}).get("compression") == "zstd", listed

    logs = log_text(3 * MiB + 4321, seed=20)
    noise = random.Random(21).randbytes(2 * MiB + 17)
    big = log_text(9 * MiB + 5, seed=22)  # multipart (8 MiB parts): a part boundary inside the object

    def run() -> None:
        s3 = w4.s3()
        s3.put_object(Bucket=BUCKET, Key="logs.txt", Body=logs)
        s3.put_object(Bucket=BUCKET, Key="noise.bin", Body=noise)
        s3.upload_fileobj(io.BytesIO(big), BUCKET, "big.txt")
        assert s3.get_object(Bucket=BUCKET, Key="logs.txt")["Body"].read() == logs
        assert s3.get_object(Bucket=BUCKET, Key="noise.bin")["Body"].read() == noise
        for first, last in ((MiB - 7, MiB + 6), (MiB - 1, 3 * MiB + 100), (3 * MiB, len(logs) - 1)):
            got = s3.get_object(Bucket=BUCKET, Key="logs.txt", Range=f"bytes={first}-{last}")["Body"].read()
            assert got == logs[first:last + 1], (first, last)
        got = s3.get_object(Bucket=BUCKET, Key="big.txt", Range=f"bytes={8 * MiB - 3}-{8 * MiB + 2}")["Body"].read()
        assert got == big[8 * MiB - 3:8 * MiB + 3]
        out = io.BytesIO()
        s3.download_fileobj(BUCKET, "big.txt", out)
        assert out.getvalue() == big
        head = s3.head_object(Bucket=BUCKET, Key="logs.txt")
        assert head["ContentLength"] == len(logs)
        assert [o["Size"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]] == [len(big), len(logs), len(noise)]

    w4.net.call(run, timeout=300)

    packed = stored_form(logs)
    files = on_disk(w4, packed)
    assert all(len(sizes) == 2 and set(sizes) == {packed[cid]} for cid, sizes in files.items()), files
    disk = sum(sum(sizes) for sizes in files.values())
    assert disk < 0.6 * 2 * len(logs), f"{disk} bytes on disk for 2 copies of {len(logs)}"

    raw = {hashlib.sha256(noise[i:i + MiB]).hexdigest(): len(noise[i:i + MiB]) for i in range(0, len(noise), MiB)}
    assert all(len(s) == 2 and set(s) == {raw[cid]} for cid, s in on_disk(w4, raw).items())  # stored as it is

    parts = {**stored_form(big[:8 * MiB]), **stored_form(big[8 * MiB:])}
    assert all(len(s) == 2 for s in on_disk(w4, parts).values())
    row = {b["name"]: b for b in (w4.rest("/v1/storage/buckets") or {}).get("items", [])}.get(BUCKET, {})
    logical = len(logs) + len(noise) + len(big)
    stored = sum(packed.values()) + len(noise) + sum(parts.values())
    assert row.get("bytes") == logical and row.get("storedBytes") == stored, (row, logical, stored)
    w4.note("zstd bucket", f"{len(logs) / MiB:.2f} MiB of log-like text: {disk / 2 / MiB:.2f} MiB per copy on the "
                           f"devices ({disk / 2 / len(logs):.2f}x); random bytes stored raw")
    stats = w4.status().get("compression")
    assert stats is not None and stats["writtenBytes"] >= len(logs) + len(noise) + len(big), stats
    assert stats["savedBytes"] > len(logs) // 2, stats

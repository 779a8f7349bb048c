"""Moving bytes between files and the cluster's S3 for `cloudless storage cp` (issue 20): S3 addresses, uploads (one
PUT up to 8 MiB, multipart above, aborted when a part fails), downloads (to standard output, or a temporary file
renamed into place when complete) and a progress line on a terminal's stderr. Over `cloudless.s3_client.S3Client`."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from cloudless import render
from cloudless.ctl import UsageError
from cloudless.s3_client import S3Client, drain

MiB = 1024 * 1024
PART_SIZE = 8 * MiB  # above this an upload is multipart (the AWS CLI's threshold and part size)
MAX_PARTS = 10_000
PROGRESS_EVERY_S = 0.5


@dataclass(frozen=True, slots=True)
class S3Path:
    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def s3_path(text: str) -> S3Path:
    """`s3://bucket[/key]`; UsageError otherwise."""
    if not text.startswith("s3://"):
        raise UsageError(f"{text!r} is not an S3 address", hint="write s3://BUCKET/KEY")
    bucket, _, key = text.removeprefix("s3://").partition("/")
    if not bucket:
        raise UsageError(f"{text!r} names no bucket", hint="write s3://BUCKET/KEY")
    return S3Path(bucket, key)



class Progress:
    """`done/total (pct) rate` on one redrawn stderr line, at most every PROGRESS_EVERY_S; only on a terminal and
    for transfers of at least PART_SIZE (or of unknown size), so scripts and small copies stay quiet."""

    def __init__(self, what: str, total: int | None, *, clock: Callable[[], float], stream: IO[str],
                 enabled: bool) -> None:
        self.what, self.total, self.clock, self.stream = what, total, clock, stream
        self.enabled = enabled and stream.isatty() and (total is None or total >= PART_SIZE)
        self.done = 0
        self.started = self.shown = clock()

    def __call__(self, n: int) -> None:
        self.done += n
        now = self.clock()
        if self.enabled and now - self.shown >= PROGRESS_EVERY_S:
            self.shown = now
            self.stream.write("\r" + self.line(now))
            self.stream.flush()

    def line(self, now: float) -> str:
        rate = self.done / max(now - self.started, 1e-6)
        of = f"/{render.memory(self.total)}B ({self.done * 100 // max(self.total, 1)}%)" if self.total else ""
        return f"{self.what}: {render.memory(self.done)}B{of} at {render.memory(rate)}B/s  "

    def finish(self) -> None:
        if self.enabled and self.shown != self.started:
            self.stream.write("\r" + self.line(self.clock()).rstrip() + "\n")
            self.stream.flush()


def part_size(total: int | None) -> int:
    """8 MiB, or larger whole MiB when a known size would need more than 10,000 parts."""
    if total is None or total <= PART_SIZE * MAX_PARTS:
        return PART_SIZE
    return -(-total // MAX_PARTS // MiB) * MiB + MiB


def read_full(src: BinaryIO, size: int) -> bytes:
    """Up to `size` bytes, fewer only at the end (a pipe hands out less per read)."""
    parts, left = [], size
    while left > 0:
        chunk = src.read(left)
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def upload(client: S3Client, src: BinaryIO, dst: S3Path, *, total: int | None, content_type: str | None,
           progress: Callable[[int], None]) -> str:
    """One PUT up to PART_SIZE, multipart above it (aborted if anything fails); the ETag."""
    size = part_size(total)
    first = read_full(src, size)
    second = read_full(src, size) if len(first) == size else b""
    if not second:
        etag = client.put(dst.bucket, dst.key, first, content_type=content_type)
        progress(len(first))
        return etag
    upload_id = client.create_upload(dst.bucket, dst.key, content_type=content_type)
    try:
        etags: list[str] = []
        block = first
        while block:
            etags.append(client.upload_part(dst.bucket, dst.key, upload_id, len(etags) + 1, block))
            progress(len(block))
            block, second = second, (read_full(src, size) if second else b"")
        return client.complete_upload(dst.bucket, dst.key, upload_id, etags)
    except BaseException:
        try:
            client.abort_upload(dst.bucket, dst.key, upload_id)
        except Exception:  # noqa: S110 (the first failure is the one to report; a stale upload only costs space)
            pass
        raise


def download(client: S3Client, src: S3Path, dst: str, *, progress_for: Callable[[int | None], Progress]) -> int:
    """To standard output (`-`) or a file, written beside its target and renamed into place when complete."""
    resp = client.get(src.bucket, src.key)
    length = resp.headers.get("Content-Length")
    progress = progress_for(int(length) if length and length.isdigit() else None)
    if dst == "-":
        out = sys.stdout.buffer
        n = drain(resp, out, progress, what=str(src))
        out.flush()
        progress.finish()
        return n
    target = Path(dst)
    if target.is_dir() or dst.endswith(os.sep):
        target = target / Path(src.key).name
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
    except OSError as exc:
        client.close()  # the unread body would stay on a kept-alive connection
        raise UsageError(f"cannot write into {target.parent}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            n = drain(resp, out, progress, what=str(src))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    progress.finish()
    return n

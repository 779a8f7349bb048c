"""Objects for the storage lab: a deterministic set of bodies, uploading them, and a read loop that keeps reading
every object (checking its bytes) while the test breaks things."""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from dataplane.objects.compression import ZSTD, encode
from tests.storage_lab.world import MiB, World, chunk_ids


def bodies(n: int, *, seed: int, large: int, small_max: int = 64 * 1024,
           large_range: tuple[int, int] = (MiB + 1, 3 * MiB - 7)) -> dict[str, bytes]:
    """`n` objects of random bytes: `large` of them span several 1 MiB chunks (sizes not a multiple of a chunk), the
    rest are 1 byte to `small_max`. Keys spread over a few prefixes."""
    rng = random.Random(seed)
    out = {}
    for i in range(n):
        size = rng.randint(*large_range) if i < large else rng.randint(1, small_max)
        out[f"p{i % 4}/obj-{i:04d}"] = rng.randbytes(size)
    return out


def log_text(size: int, seed: int) -> bytes:
    """Log-like lines: what compression is for."""
    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefghijklmnop") for _ in range(rng.randint(2, 9))) for _ in range(400)]
    lines = []
    total = 0
    while total < size:
        line = f"2026-12-07T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d} level={rng.choice(['info', 'warn'])} " \
               + " ".join(rng.choice(words) for _ in range(rng.randint(4, 14))) + "\n"
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()[:size]


def stored_form(body: bytes) -> dict[str, int]:
    """chunk id -> stored size, as a compressing bucket stores `body` (deterministic: the gateway's zstd level)."""
    out = {}
    for i in range(0, len(body), MiB):
        encoded = encode(body[i:i + MiB], ZSTD)
        out[hashlib.sha256(encoded.data).hexdigest()] = len(encoded.data)
    return out


def expected_chunks(objects: dict[str, bytes]) -> dict[str, str]:
    """chunk id -> one key whose object holds it."""
    return {cid: key for key, body in objects.items() for cid in chunk_ids(body)}


class Clients:
    """One boto3 client per thread of the world's network pool (botocore clients share connection pools poorly
    across threads; sessions are not thread-safe)."""

    def __init__(self, w: World, **config: Any) -> None:
        self.w, self.config = w, config
        self.local = threading.local()

    def get(self) -> Any:
        client = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = self.w.s3(**self.config)
        return client


def upload(w: World, bucket: str, objects: dict[str, bytes], *, parallel: int = 4) -> float:
    """PUT every object (boto3's default configuration: aws-chunked with a CRC32 trailer), `parallel` at a time;
    seconds it took."""
    clients = Clients(w)
    items = sorted(objects.items())

    def share(part: list[tuple[str, bytes]]) -> None:
        for key, body in part:
            clients.get().put_object(Bucket=bucket, Key=key, Body=body)

    started = time.monotonic()
    futures = [w.net.submit(share, items[i::parallel]) for i in range(parallel)]
    for f in futures:
        f.result(timeout=900)
    return time.monotonic() - started


def read_all(w: World, bucket: str, objects: dict[str, bytes]) -> list[str]:
    """GET every object once and compare its bytes; the problems found (empty: all good)."""
    clients = Clients(w)

    def one(key: str, body: bytes) -> str:
        try:
            got = clients.get().get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:  # any failure is a finding, named in the report
            return f"{key}: {type(exc).__name__}: {exc}"
        if hashlib.sha256(got).digest() != hashlib.sha256(body).digest():
            return f"{key}: wrong bytes ({len(got)} bytes, want {len(body)})"
        return ""

    futures = [w.net.submit(one, k, b) for k, b in objects.items()]
    return [p for f in futures if (p := f.result(timeout=600))]


@dataclass
class ReadLoop:
    """Reads every object over and over from `threads` threads until stopped; records every failure with its time
    (monotonic) and the slowest GET."""

    w: World
    bucket: str
    objects: dict[str, bytes]
    threads: int = 4
    failures: list[tuple[float, str]] = field(default_factory=list)
    reads: int = 0
    rounds: int = 0
    slowest: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _futures: list[Future[None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> ReadLoop:
        keys = sorted(self.objects)
        shares = [keys[i::self.threads] for i in range(self.threads)]
        clients = Clients(self.w)
        self._futures = [self.w.net.submit(self._run, share, clients.get) for share in shares]
        return self

    def _run(self, keys: list[str], client: Callable[[], Any]) -> None:
        while not self._stop.is_set():
            for key in keys:
                if self._stop.is_set():
                    return
                t0 = time.monotonic()
                problem = ""
                try:
                    got = client().get_object(Bucket=self.bucket, Key=key)["Body"].read()
                    if got != self.objects[key]:
                        problem = f"{key}: wrong bytes ({len(got)}, want {len(self.objects[key])})"
                except Exception as exc:  # any failure is a finding
                    problem = f"{key}: {type(exc).__name__}: {exc}"
                took = time.monotonic() - t0
                with self._lock:
                    self.reads += 1
                    self.slowest = max(self.slowest, took)
                    if problem:
                        self.failures.append((t0, problem))
            with self._lock:
                self.rounds += 1

    def stop(self) -> None:
        self._stop.set()
        for f in self._futures:
            f.result(timeout=300)

    def rounds_since(self, mark: int) -> int:
        with self._lock:
            return self.rounds - mark


def under_r(copies: dict[str, set[str]], chunks: Iterable[str], r: int) -> dict[str, int]:
    """chunk id -> copies it has, for the chunks below `r` copies."""
    return {c: len(copies.get(c, ())) for c in chunks if len(copies.get(c, ())) < r}


def get_bytes(w: World, bucket: str, key: str) -> bytes:
    """One GET from the client machine (a fresh client: default configuration)."""

    def get() -> bytes:
        body: bytes = w.s3().get_object(Bucket=bucket, Key=key)["Body"].read()
        return body

    return w.net.call(get)

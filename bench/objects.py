"""Object store benchmark (issue 20), side by side in one run: PUT and GET of 4 KiB, 1 MiB and 64 MiB objects

- through our S3 endpoint: boto3 with its default configuration (aws-chunked with a CRC32 trailer, HTTPS) from a
  client machine of the namespace lab to `cloudless up --s3-port` on another, three storage agents (process
  runtime) holding R = 2 copies of each 1 MiB chunk, reached over the overlay; every object has fresh random bytes
  (identical chunks would be deduplicated);
- as a raw overlay transfer: the same sizes pushed and pulled on one overlay stream between two endpoints on
  loopback (mutual TLS, direct path), one process: what moving the bytes costs without S3, metadata or copies;
- on local disk: a file written and fsynced, then read back after dropping it from the page cache
  (posix_fadvise DONTNEED), in the data directory's file system;

plus repair: a storage agent holding copies is killed with SIGKILL and the time until every chunk is back at R is
measured on the devices' disks (ground truth), with the bytes that had to be copied.

`--parts zstd` (its own section, "objects-compression"): a plain and a compressing bucket (`compression: zstd`)
side by side in one lab world (three storage agents, R = 2), with log-like text and random bytes: PUT/GET MiB/s
and the bytes the objects take on the devices' disks over R x their size; and the codec alone on one core (zstd at
the gateway's level, 1 MiB chunks).

Every loop is bounded (a count per size). Needs root (network namespaces) and the lab's tools.

    sudo .venv/bin/python bench/objects.py            # a few minutes; writes docs/benchmarks.md "objects"
    sudo .venv/bin/python bench/objects.py --quick --doc /tmp/b.md
    sudo .venv/bin/python bench/objects.py --parts zstd   # a couple of minutes; section "objects-compression"
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.report import DOC, table, write_section  # noqa: E402

KiB, MiB = 1024, 1024 * 1024
SIZES = {"4 KiB": 4 * KiB, "1 MiB": MiB, "64 MiB": 64 * MiB}
COUNTS = {"4 KiB": 200, "1 MiB": 40, "64 MiB": 3}
QUICK = {"4 KiB": 50, "1 MiB": 10, "64 MiB": 2}
R = 2


@dataclass(frozen=True)
class Row:
    path: str
    size: str
    n: int
    put_mibs: float
    put_p50: float
    put_p95: float
    get_mibs: float
    get_p50: float
    get_p95: float

    def cells(self) -> list[object]:
        return [self.path, self.size, self.n, f"{self.put_mibs:.1f}", f"{self.put_p50:.1f}", f"{self.put_p95:.1f}",
                f"{self.get_mibs:.1f}", f"{self.get_p50:.1f}", f"{self.get_p95:.1f}"]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def row(path: str, label: str, size: int, puts: list[float], gets: list[float]) -> Row:
    n = len(puts)
    return Row(path, label, n, size * n / sum(puts) / MiB, pct(puts, .5), pct(puts, .95),
               size * len(gets) / sum(gets) / MiB, pct(gets, .5), pct(gets, .95))


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


# ---- local disk -------------------------------------------------------------------------------------------------

def disk(counts: dict[str, int], where: Path) -> list[Row]:
    rows = []
    for label, size in SIZES.items():
        puts, gets = [], []
        for i in range(counts[label]):
            body = os.urandom(size)
            path = where / f"{label.replace(' ', '')}-{i}"

            def put(path: Path = path, body: bytes = body) -> None:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    os.write(fd, body)
                    os.fsync(fd)
                finally:
                    os.close(fd)

            puts.append(timed(put))
            fd = os.open(path, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # the read comes from the device, not the cache
            os.close(fd)
            gets.append(timed(path.read_bytes))
            path.unlink()
        rows.append(row("local disk (fsync; read uncached)", label, size, puts, gets))
    return rows


# ---- raw overlay ------------------------------------------------------------------------------------------------

async def overlay(counts: dict[str, int]) -> list[Row]:
    from coordinator.pki import CertRole
    from dataplane.endpoint import Endpoint
    from dataplane.quic import Peer
    from tests.dataplane.pki_builders import issue, make_ca
    from tests.dataplane.test_quic import credential

    now = time.time()
    ca = make_ca("bench", now=now)
    creds = {name: credential(issue(ca, name, role=CertRole.NODE, now=now)) for name in ("a", "b")}

    async def on_stream(_peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readexactly(9)
        size = int.from_bytes(head[1:], "big")
        if head[:1] == b"P":  # a PUT: take the bytes, answer when all are in
            got = 0
            while got < size and (piece := await reader.read(256 * KiB)):
                got += len(piece)
            writer.write(got.to_bytes(8, "big"))
        else:  # a GET: send them
            block = bytes(256 * KiB)
            for off in range(0, size, len(block)):
                writer.write(block[:min(len(block), size - off)])
                await writer.drain()
        writer.write_eof()

    a = await Endpoint.open(creds["a"], "127.0.0.1", 0, clock=time.time)
    b = await Endpoint.open(creds["b"], "127.0.0.1", 0, clock=time.time, on_stream=on_stream)
    rows = []
    try:
        peer = await a.connect("b", addr=b.address)
        for label, size in SIZES.items():
            puts, gets = [], []
            body = os.urandom(size)
            for _ in range(counts[label]):
                started = time.perf_counter()
                reader, writer = await peer.open_stream()
                writer.write(b"P" + size.to_bytes(8, "big"))
                for off in range(0, size, 256 * KiB):
                    writer.write(body[off:off + 256 * KiB])
                    await writer.drain()
                writer.write_eof()
                assert int.from_bytes(await reader.readexactly(8), "big") == size
                puts.append(time.perf_counter() - started)
                started = time.perf_counter()
                reader, writer = await peer.open_stream()
                writer.write(b"G" + size.to_bytes(8, "big"))
                writer.write_eof()
                got = 0
                while piece := await reader.read(256 * KiB):
                    got += len(piece)
                assert got == size
                gets.append(time.perf_counter() - started)
            rows.append(row("raw overlay stream (loopback, direct)", label, size, puts, gets))
    finally:
        a.close()
        b.close()
    return rows


# ---- S3 through the cluster, and repair --------------------------------------------------------------------------

def s3_and_repair(counts: dict[str, int], tmp: Path) -> tuple[list[Row], list[str]]:
    from tests.storage_lab.objects import under_r
    from tests.storage_lab.world import chunk_ids, world

    notes: list[str] = []
    rows = []
    with world(tmp, storage_nodes=3) as w:
        s3 = w.net.call(w.s3)
        w.net.call(lambda: s3.create_bucket(Bucket="bench"))
        written: dict[str, int] = {}

        def read(key: str) -> bytes:
            body: bytes = s3.get_object(Bucket="bench", Key=key)["Body"].read()
            return body

        kept: dict[str, list[str]] = {}
        for label, size in SIZES.items():
            puts, gets = [], []
            for i in range(counts[label]):
                key = f"{label.replace(' ', '')}/{i}"
                body = os.urandom(size)
                puts.append(w.net.call(lambda key=key, body=body: timed(
                    lambda: s3.put_object(Bucket="bench", Key=key, Body=body)), timeout=600))
                kept[key] = chunk_ids(body)
                written[key] = size
            for i in range(counts[label]):
                key = f"{label.replace(' ', '')}/{i}"
                gets.append(w.net.call(lambda key=key: timed(lambda: read(key)), timeout=600))
            rows.append(row(f"S3 endpoint (boto3 default, R = {R})", label, size, puts, gets))
        want = {c for ids in kept.values() for c in ids}
        w.until(lambda: not under_r(w.copies(), want, R), 300, "every chunk at R before the repair run")
        copies = w.copies()
        victim = max(sorted(w.agents), key=lambda n: sum(1 for c in want if n in copies[c]))
        lost = [c for c in want if victim in copies[c]]
        lost_bytes = sum(w.agents[victim].chunk_path(c).stat().st_size for c in lost)
        w.agents[victim].kill9()
        killed = time.monotonic()
        first: list[float] = []

        def repaired() -> bool:
            now = w.copies()
            if not first and any(len(now.get(c, ())) >= R for c in lost):
                first.append(time.monotonic())
            return not under_r(now, want, R)

        _, took = w.until(repaired, 900, "every chunk back at R after the kill")
        started = first[0] if first else killed
        span = max(1e-3, time.monotonic() - started)
        notes.append(f"Repair: {victim} (SIGKILL) held {len(lost)} of {len(want)} chunks ({lost_bytes / MiB:.0f} MiB); "
                     f"every chunk back at R = {R} **{took:.0f} s** after the kill; the first chunk was back at R "
                     f"{started - killed:.1f} s after the kill (the gateway repairs as soon as the node is seen "
                     f"offline), the last {span:.1f} s later: **{lost_bytes / MiB / span:.1f} MiB/s** (the gateway's "
                     "repair budget is 32 MiB/s). Ground truth: the chunk files on the devices' disks.")
    return rows, notes


# ---- compression: a plain vs a zstd bucket, text-like and random data -----------------------------------------------

ZSTD_SIZES = {"1 MiB": MiB, "32 MiB": 32 * MiB}
ZSTD_COUNTS = {"1 MiB": 10, "32 MiB": 2}


def _data(kind: str, size: int, seed: int) -> bytes:
    import random

    from tests.storage_lab.objects import log_text

    return log_text(size, seed) if kind == "text" else random.Random(seed).randbytes(size)


def codec_rows() -> list[list[object]]:
    """zstd on one core at the gateway's level, 1 MiB chunks: compress (encode, incl. the keep-or-not decision) and
    decode (bounded, checked) MiB/s, and the ratio."""
    from dataplane.objects.chunking import chunk_id
    from dataplane.objects.compression import ZSTD, decode, encode

    out: list[list[object]] = []
    for kind in ("text", "random"):
        data = _data(kind, 16 * MiB, seed=99)
        pieces = [data[i:i + MiB] for i in range(0, len(data), MiB)]
        started = time.perf_counter()
        encoded = [encode(p, ZSTD) for p in pieces]
        enc_s = time.perf_counter() - started
        refs = [e.ref(chunk_id(e.data)) for e in encoded]
        started = time.perf_counter()
        for e, ref, piece in zip(encoded, refs, pieces, strict=True):
            if decode(e.data, ref) != piece:
                raise SystemExit(f"zstd round trip of a {kind} chunk failed")
        dec_s = time.perf_counter() - started
        stored = sum(len(e.data) for e in encoded)
        out.append([f"zstd codec, one core ({kind})", "16 x 1 MiB", f"{len(data) / MiB / enc_s:.0f}",
                    f"{len(data) / MiB / dec_s:.0f}" if any(e.codec for e in encoded) else "- (stored raw)",
                    f"{stored / len(data):.2f}"])
    return out


def compression(tmp: Path) -> tuple[list[list[object]], list[str]]:
    from tests.storage_lab.objects import stored_form
    from tests.storage_lab.world import chunk_ids, world

    rows: list[list[object]] = []
    notes: list[str] = []
    with world(tmp, storage_nodes=3) as w:
        s3 = w.net.call(w.s3)
        w.net.call(lambda: s3.create_bucket(Bucket="plain"))
        status, answer = w.post("/v1/storage/buckets", {"name": "zstd", "compression": "zstd"})
        if status != 201:
            raise SystemExit(f"creating the zstd bucket: {status} {answer}")
        seed = 0
        for kind in ("text", "random"):
            for bucket in ("plain", "zstd"):
                for label, size in ZSTD_SIZES.items():
                    puts, gets, disk = [], [], 0
                    for i in range(ZSTD_COUNTS[label]):
                        seed += 1
                        body, key = _data(kind, size, seed), f"{kind}/{label.replace(' ', '')}/{i}"
                        puts.append(w.net.call(lambda key=key, body=body, bucket=bucket: timed(
                            lambda: s3.put_object(Bucket=bucket, Key=key, Body=body)), timeout=600))
                        got: list[bytes] = []
                        gets.append(w.net.call(lambda key=key, bucket=bucket, got=got: timed(
                            lambda: got.append(s3.get_object(Bucket=bucket, Key=key)["Body"].read())), timeout=600))
                        if got != [body]:
                            raise SystemExit(f"{bucket}/{key}: read back other bytes")
                        ids = set(stored_form(body)) if bucket == "zstd" else set(chunk_ids(body))
                        copies = w.copies()
                        disk += sum(w.agents[n].chunk_path(c).stat().st_size for c in ids for n in copies.get(c, ()))
                    n = len(puts)
                    rows.append([f"S3, {bucket} bucket ({kind})", label, n, f"{size * n / sum(puts) / MiB:.1f}",
                                 f"{pct(puts, .5):.0f}", f"{size * n / sum(gets) / MiB:.1f}", f"{pct(gets, .5):.0f}",
                                 f"{disk / (R * size * n):.2f}"])
        stats = w.status().get("compression")
        if stats:
            notes.append(f"The gateway's own count (`cloudless storage status`, `compression`): "
                         f"{stats['writtenBytes'] / MiB:.1f} MiB written into the zstd bucket, "
                         f"{stats['storedBytes'] / MiB:.1f} MiB stored (one copy), {stats['savedBytes'] / MiB:.1f} MiB "
                         f"saved; {stats['chunksCompressed']} chunks compressed, {stats['chunksRaw']} stored raw.")
    return rows, notes


def render_compression(rows: list[list[object]], codec: list[list[object]], notes: list[str]) -> str:
    headers = ["path", "size", "n", "PUT MiB/s", "PUT p50 ms", "GET MiB/s", "GET p50 ms", "on disk / (R x size)"]
    return "\n".join([
        "A plain bucket and a `compression: zstd` bucket in one lab world (three storage agents, R = 2, boto3 "
        "default configuration from a client machine; every object fresh bytes, read back and compared). "
        "\"text\" is log-like lines (timestamps, levels, words from a 400-word vocabulary), \"random\" is "
        "incompressible. The last column is ground truth: the bytes of the object's chunk files on the devices' "
        "disks over R times its size.",
        "",
        table(headers, rows),
        "",
        table(["codec", "data", "compress MiB/s", "decode MiB/s", "stored / plain"], codec),
        "",
        *[f"- {n}" for n in notes],
    ])


def render(rows: list[Row], notes: list[str], counts: dict[str, int]) -> str:
    headers = ["path", "size", "n", "PUT MiB/s", "PUT p50 ms", "PUT p95 ms", "GET MiB/s", "GET p50 ms", "GET p95 ms"]
    return "\n".join([
        "PUT and GET one object at a time (n per size: " + ", ".join(f"{k} x{v}" for k, v in counts.items())
        + "); MiB/s is bytes over the summed latencies. The S3 rows cross the lab's veth links (client -> "
        "coordinator -> storage agents over the overlay) and store two copies; the overlay rows are one stream on "
        "loopback; the disk rows are this machine's file system.",
        "",
        table(headers, [r.cells() for r in rows]),
        "",
        *[f"- {n}" for n in notes],
    ])


def main(args: argparse.Namespace) -> int:
    counts = QUICK if args.quick else COUNTS
    parts = set(args.parts.split(","))
    if "zstd" in parts:
        codec = codec_rows()
        with tempfile.TemporaryDirectory(prefix="cl-bench-zstd-") as tmp:
            zrows, znotes = compression(Path(tmp))
        body = render_compression(zrows, codec, znotes)
        print(body)
        if args.doc is not None:
            write_section("objects-compression", "Object store: compressed buckets (zstd)", body,
                          command="python bench/objects.py --parts zstd", doc=args.doc)
        parts.discard("zstd")
        if not parts:
            return 0
    rows: list[Row] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="cl-bench-objects-") as tmp:
        if "s3" in parts:
            (Path(tmp) / "lab").mkdir()
            got, notes = s3_and_repair(counts, Path(tmp) / "lab")
            rows += got
        if "overlay" in parts:
            rows += asyncio.run(overlay(counts))
        if "disk" in parts:
            (Path(tmp) / "disk").mkdir()
            rows += disk(counts, Path(tmp) / "disk")
    body = render(rows, notes, counts)
    print(body)
    if args.doc is not None:
        write_section("objects", "Object store: S3 endpoint vs raw overlay vs local disk, and repair", body,
                      command="python bench/objects.py" + (" --quick" if args.quick else "")
                      + (f" --parts {args.parts}" if parts != {"s3", "overlay", "disk"} else ""), doc=args.doc)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer objects per size: " + str(QUICK))
    parser.add_argument("--parts", default="s3,overlay,disk",
                        help="which paths to measure (default s3,overlay,disk; zstd: compressed buckets, own section)")
    parser.add_argument("--doc", type=Path, default=DOC, help="markdown file to write (default docs/benchmarks.md)")
    sys.exit(main(parser.parse_args()))

"""Erasure coding throughput: RS(4,2) encode and decode MiB/s as the object store does it (one stripe per 1 MiB chunk,
`dataplane.objects.erasure`), for a 1 MiB and a 64 MiB object, per pyeclib backend that loads here.

- encode: every chunk of the object into 6 fragments, plus the SHA-256 of each fragment (its id), as a write does;
- decode (data): from the 4 data fragments, verifying each fragment's id and the chunk's, as a healthy read does;
- decode (2 lost): from 2 data + 2 parity fragments, the same checks, as a read with two nodes lost does.

CPU only (no network, no disk), one core. `measure(size)` returns the numbers for bench/objects.py to include.

    .venv/bin/python bench/erasure.py            # ~10 s
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

from dataplane.objects.chunking import CHUNK_SIZE, chunk_id
from dataplane.objects.erasure import BACKENDS, RS_4_2, Codec, CodecUnavailable, load_codec

MiB = 1024 * 1024


def _rate(size: int, work: Callable[[], None], min_seconds: float) -> float:
    """MiB/s of `work` over `size` bytes, repeated until at least `min_seconds` have passed (best of the runs)."""
    best, spent = float("inf"), 0.0
    while spent < min_seconds:
        start = time.perf_counter()
        work()
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
    return size / MiB / best


def measure(size: int, backend: str | None = None, *, min_seconds: float = 1.0) -> dict[str, float | str]:
    """{"backend", "size_mib", "encode_mib_s", "decode_mib_s", "decode_degraded_mib_s"} for an object of `size`."""
    codec: Codec = load_codec(RS_4_2, backend)
    chunks = [os.urandom(min(CHUNK_SIZE, size - at)) for at in range(0, size, CHUNK_SIZE)]
    stripes = [codec.encode(c) for c in chunks]
    ids = [[chunk_id(f) for f in s] for s in stripes]
    chunk_ids = [chunk_id(c) for c in chunks]

    def encode() -> None:
        for c in chunks:
            for f in codec.encode(c):
                chunk_id(f)

    def decode(keep: tuple[int, ...]) -> Callable[[], None]:
        def run() -> None:
            for fragments, fids, cid in zip(stripes, ids, chunk_ids, strict=True):
                picked = [fragments[i] for i in keep]
                assert all(chunk_id(f) == fids[i] for i, f in zip(keep, picked, strict=True))
                assert chunk_id(codec.decode(picked)) == cid
        return run

    return {"backend": codec.backend, "size_mib": size / MiB,
            "encode_mib_s": _rate(size, encode, min_seconds),
            "decode_mib_s": _rate(size, decode((0, 1, 2, 3)), min_seconds),
            "decode_degraded_mib_s": _rate(size, decode((0, 3, 4, 5)), min_seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="minimum time per measurement")
    args = parser.parse_args()
    print(f"{'backend':24} {'object':>8} {'encode':>12} {'decode':>12} {'decode, 2 lost':>15}   (MiB/s, incl. SHA-256)")
    for backend in BACKENDS:
        for size in (MiB, 64 * MiB):
            try:
                r = measure(size, backend, min_seconds=args.seconds)
            except CodecUnavailable as exc:
                print(f"{backend:24} unavailable: {exc}")
                break
            print(f"{backend:24} {size // MiB:>5} MiB {r['encode_mib_s']:>12.0f} {r['decode_mib_s']:>12.0f} "
                  f"{r['decode_degraded_mib_s']:>15.0f}")


if __name__ == "__main__":
    main()

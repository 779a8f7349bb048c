"""An erasure-coded bucket on six storage devices (issue 20, Tests): RS(4,2), each chunk as 4 data + 2 parity
fragments on six distinct nodes. 40 objects (30 of 64-300 KiB, 10 of 1-3 MiB) are written with boto3; no raw chunk
of them is on any disk (they are stored as fragments), and the bytes on disk are about 1.5x the data. Two of the six
agents are killed with SIGKILL: every object reads back right at once (reconstructed from the four left) and again
once the coordinator has declared both lost, and the gateway counts nothing unrecoverable. A second bucket is
erasure-coded *and* compressed (zstd): a log-like object takes less on disk than its size even at 1.5x, no chunk of
it is on any disk whole (compressed or not), and it reads back through the same two losses."""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator

import pytest

from tests.storage_lab.objects import bodies, log_text, read_all, stored_form, upload
from tests.storage_lab.world import MiB, World, chunk_ids, node_rows, pick, world

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

BUCKET = "coded"
PACKED = "coded-zstd"
READ_BOUND_S = 300.0


@pytest.fixture(scope="module")
def w(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with world(tmp_path_factory.mktemp("storage-ec"), storage_nodes=6) as built:
        yield built
        print("\n[storage lab] measured:\n" + "\n".join(f"  {k}: {v}" for k, v in built.numbers.items()))


def disk_bytes(w: World) -> int:
    return sum(a.chunk_path(c).stat().st_size for a in w.agents.values() for c in a.held())


def test_ec_bucket_survives_losing_two_of_six(w: World) -> None:
    status, answer = w.post("/v1/storage/buckets", {"name": BUCKET, "erasure": "4+2"})
    assert status == 201, f"creating an RS(4,2) bucket: {status} {answer}\n{w.logs()}"
    objects = bodies(40, seed=6, large=10, small_max=300 * 1024)
    objects = {k: (b if len(b) >= 64 * 1024 else b * (64 * 1024 // len(b) + 1)) for k, b in objects.items()}
    took = upload(w, BUCKET, objects)
    data = sum(len(b) for b in objects.values())
    on_disk = disk_bytes(w)
    w.note("ec upload", f"{len(objects)} objects, {data / MiB:.1f} MiB in {took:.1f} s; {on_disk / MiB:.1f} MiB on "
                        f"disk ({on_disk / data:.2f}x)")
    raw = {c for b in objects.values() for c in chunk_ids(b)}
    stored_whole = raw & set(w.copies())
    assert not stored_whole, f"{len(stored_whole)} chunks stored whole in an erasure-coded bucket"
    assert on_disk < 1.9 * data, f"{on_disk / data:.2f}x the data on disk: not RS(4,2) (1.5x)"
    status, answer = w.post("/v1/storage/buckets", {"name": PACKED, "erasure": "4+2", "compression": "zstd"})
    assert status == 201, f"creating an RS(4,2) zstd bucket: {status} {answer}\n{w.logs()}"
    packed = {"logs.txt": log_text(3 * MiB + 99, seed=23)}
    upload(w, PACKED, packed)
    packed_disk = disk_bytes(w) - on_disk
    w.note("ec + zstd", f"{len(packed['logs.txt']) / MiB:.2f} MiB of log-like text: {packed_disk / MiB:.2f} MiB on "
                        f"disk with parity ({packed_disk / len(packed['logs.txt']):.2f}x)")
    assert packed_disk < 0.75 * len(packed["logs.txt"]), f"{packed_disk} bytes on disk: not compressed"
    whole = (set(stored_form(packed["logs.txt"])) | set(chunk_ids(packed["logs.txt"]))) & set(w.copies())
    assert not whole, f"{len(whole)} chunks of the compressed object stored whole"

    files = collections.Counter({n: len(a.held()) for n, a in w.agents.items()})
    assert all(files[n] > 0 for n in w.agents), f"a node holds no fragment: {files}"

    victims = [n for n, _ in files.most_common(2)]
    for n in victims:
        w.agents[n].kill9()
    killed = time.monotonic()
    problems = read_all(w, BUCKET, objects) + read_all(w, PACKED, packed)
    w.note("ec read, 2 of 6 just killed", f"{time.monotonic() - killed:.1f} s for all {len(objects)} objects, "
                                          f"{len(problems)} problems (killed {victims})")
    assert not problems, f"with {victims} killed: {problems[:10]}\n{w.logs()}"

    def both_lost() -> bool:
        rows = node_rows(w.status())
        return all(n in rows and not pick(rows[n], "online", default=True) for n in victims)

    w.until(both_lost, READ_BOUND_S, f"the gateway seeing {victims} offline")
    started = time.monotonic()
    problems = read_all(w, BUCKET, objects) + read_all(w, PACKED, packed)
    w.note("ec read, 2 of 6 offline", f"{time.monotonic() - started:.1f} s for all objects, {len(problems)} problems")
    assert not problems, f"with {victims} offline: {problems[:10]}\n{w.logs()}"
    assert pick(w.status(), "unrecoverable", default=0) == 0, w.logs()

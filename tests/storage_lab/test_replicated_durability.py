"""Durability of the object store with real devices (issue 20, Tests): `cloudless up --s3-port` on one machine,
four storage agents (process runtime, 2 GiB quota each, zones z0/z1) on a LAN, boto3 with its default configuration
against the coordinator's S3 endpoint. Ground truth is each device's chunk directory, not the store's own account.

- 200 objects (180 of 1 B-64 KiB, 20 of 1-3 MiB: 260-odd chunks), R = 2. kill -9 the agent holding the most of
  their chunks: a read loop (4 threads, every object's bytes compared) sees no failure from before the kill until
  every chunk is back at 2 copies on running devices (and the gateway's status agrees), then every object is read
  once more. The agent comes back: every chunk ends at exactly 2 copies (surplus garbage-collected), and no sample
  in between shows a chunk below 2 (never the last copy, nor a needed one).
- A byte flipped in a stored chunk on a device's disk (the copy reads go to first): the object keeps reading right,
  the bad copy is found (by a read here; the agent's scrub makes one pass an hour) and replaced from a good one:
  every copy on disk hashes to its id again, 2 of them.

The module's tests run in file order on one world. Times are printed (pytest -s) and bounded generously for a
loaded 2-core CI machine (lost-after is the coordinator's default 30 s).
"""

from __future__ import annotations

import collections
import hashlib
import os
import time

import pytest

from tests.storage_lab.objects import ReadLoop, bodies, expected_chunks, get_bytes, read_all, under_r, upload
from tests.storage_lab.world import World, chunk_ids, node_rows, pick

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

R = 2
BUCKET = "durable"
N_OBJECTS = 200
REPAIR_BOUND_S = 420.0  # kill -9 -> every chunk back at R (30 s lost-after + repair), loaded 2-core CI
GC_BOUND_S = 420.0
SCRUB_BOUND_S = 420.0


@pytest.fixture(scope="module")
def w(w4: World) -> World:
    return w4


@pytest.fixture(scope="module")
def objs(w: World) -> dict[str, bytes]:
    objects = bodies(N_OBJECTS, seed=20, large=20)
    w.net.call(lambda: w.s3().create_bucket(Bucket=BUCKET))
    took = upload(w, BUCKET, objects)
    size = sum(len(b) for b in objects.values())
    w.note("upload", f"{N_OBJECTS} objects, {size / 2**20:.1f} MiB, {len(expected_chunks(objects))} chunks in "
                     f"{took:.1f} s")
    return objects


def test_a_node_lost_keeps_every_object_readable_and_repairs_to_r(w: World, objs: dict[str, bytes]) -> None:
    want = expected_chunks(objs)
    w.until(lambda: not under_r(w.copies(), want, R), 180, f"every chunk at {R} copies after the upload")
    copies = w.copies()
    holding = collections.Counter(n for c in want for n in copies[c])
    victim = max(sorted(holding), key=lambda n: holding[n])
    assert holding[victim] > 0
    w.note("victim", f"{victim} holds {holding[victim]} of {len(want)} chunks "
                     f"({len({want[c] for c in want if victim in copies[c]})} objects)")

    loop = ReadLoop(w, BUCKET, objs).start()
    try:
        w.until(lambda: loop.rounds >= loop.threads, 300, "one full read pass before the kill")
        killed = time.monotonic()
        w.agents[victim].kill9()
        mark = loop.rounds

        def repaired() -> bool:
            if under_r(w.copies(), want, R):
                return False
            st = w.status()
            return bool(pick(st, "underReplicated", "under_replicated") == 0 and pick(st, "unrecoverable") == 0)

        _, took = w.until(repaired, REPAIR_BOUND_S, f"every chunk back at {R} copies on running devices")
        st = w.status()
        repair = pick(st, "repair", default={}) or {}
        w.note("repair after kill -9", f"{took:.1f} s from the kill to every chunk at R (bound {REPAIR_BOUND_S:.0f} "
                                       f"s); gateway repair counters {repair}")
        w.until(lambda: loop.rounds_since(mark) >= 2 * loop.threads, 600, "two more full read passes")
    finally:
        loop.stop()
    w.note("read loop", f"{loop.reads} GETs, {len(loop.failures)} failures, slowest {loop.slowest:.2f} s, over "
                        f"{time.monotonic() - killed:.0f} s from the kill")
    assert not loop.failures, f"{len(loop.failures)} failed reads, first: {loop.failures[:5]}\n{w.logs()}"
    problems = read_all(w, BUCKET, objs)
    assert not problems, f"after repair: {problems[:10]}\n{w.logs()}"

    # the node comes back with its old copies: surplus copies go, never one that is needed
    w.agents[victim].start()
    w.until(lambda: victim in w.online(), 180, f"{victim} online again")
    back = time.monotonic()
    low: list[dict[str, int]] = []

    def settled() -> bool:
        now = w.copies()
        below = under_r(now, want, R)
        if below:
            low.append(below)
        return all(len(now.get(c, ())) == R for c in want)

    _, took = w.until(settled, GC_BOUND_S, f"every chunk at exactly {R} copies after {victim} came back")
    w.note("surplus GC", f"{time.monotonic() - back:.1f} s after {victim} came back ({took:.1f} s of polling)")
    assert not low, f"a chunk fell below {R} copies while surplus was collected: {low[:3]}"
    problems = read_all(w, BUCKET, objs)
    assert not problems, f"after GC: {problems[:10]}\n{w.logs()}"


def test_b_a_flipped_byte_is_detected_and_repaired(w: World, objs: dict[str, bytes]) -> None:
    key = next(k for k, b in sorted(objs.items()) if len(b) > 2 * 2**20)
    cid = chunk_ids(objs[key])[1]
    rows = node_rows(w.status())
    # the copy reads go to first (online, most reliable, then by id: ChunkIO._order): the agents' scrub makes one
    # pass an hour, so within this test the bad copy is found by a read
    holders = sorted(w.copies()[cid], key=lambda n: (-float(pick(rows.get(n, {}), "reliability", default=1.0)), n))
    assert len(holders) >= R, f"{key}'s chunk {cid[:12]} is on {holders}"
    path = w.agents[holders[0]].chunk_path(cid)
    with path.open("r+b") as f:  # in place, as bit rot would: same inode, size and mtime-agnostic
        f.seek(123_457)
        byte = f.read(1)
        f.seek(123_457)
        f.write(bytes([byte[0] ^ 0x20]))
        f.flush()
        os.fsync(f.fileno())
    assert hashlib.sha256(path.read_bytes()).hexdigest() != cid
    flipped = time.monotonic()
    reads: list[int] = []  # sizes of wrong reads are kept (World.until retries on an assertion)

    def healed() -> bool:
        got = get_bytes(w, BUCKET, key)
        reads.append(-1 if got == objs[key] else len(got))
        good: set[str] = set()
        bad: set[str] = set()
        for node, agent in w.agents.items():
            p = agent.chunk_path(cid)
            if agent.running() and p.exists():
                (good if hashlib.sha256(p.read_bytes()).hexdigest() == cid else bad).add(node)
        return not bad and len(good) >= R

    _, took = w.until(healed, SCRUB_BOUND_S, f"the flipped copy of {cid[:12]} on {holders[0]} detected and "
                                             f"replaced by a good copy")
    w.note("bit rot", f"found and repaired in {time.monotonic() - flipped:.1f} s ({len(reads)} reads of the object "
                      f"meanwhile; bound {SCRUB_BOUND_S:.0f} s, {took:.1f} s of polling)")
    wrong = [n for n in reads if n != -1]
    assert not wrong, f"{len(wrong)} of {len(reads)} reads of {key} returned wrong bytes after the flip"
    assert not read_all(w, BUCKET, {key: objs[key]})

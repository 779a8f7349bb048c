"""A property over `ObjectBackend` + `Repairer` + garbage collection: under any sequence of puts (from a small pool
of bodies, so chunks are shared), deletes, garbage collection, repair passes and one node at a time going down and
coming back, every live object reads back exactly the bytes last written to it, and no chunk a live object refers to
is ever collected."""

from __future__ import annotations

import asyncio
import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from dataplane.objects.chunking import chunk_id
from tests.dataplane.objects.cluster import CHUNK, Cluster

BODIES = [bytes([i]) * (CHUNK * (i % 3) + 7 * i) for i in range(1, 6)] + [b"", b"\x01" * CHUNK + b"tail"]
KEYS = ["a", "b", "c", "d"]

operations = st.lists(st.one_of(
    st.tuples(st.just("put"), st.sampled_from(KEYS), st.integers(0, len(BODIES) - 1)),
    st.tuples(st.just("delete"), st.sampled_from(KEYS), st.just(0)),
    st.tuples(st.just("gc"), st.just(""), st.just(0)),
    st.tuples(st.just("repair"), st.just(""), st.just(0)),
    st.tuples(st.just("down"), st.sampled_from(["n0", "n1", "n2", "n3"]), st.just(0)),
    st.tuples(st.just("up"), st.just(""), st.just(0)),
), max_size=25)


async def _run(ops: list[tuple[str, str, int]]) -> None:
    c = Cluster(4)
    await c.backend.create_bucket("bkt", 0.0)
    live: dict[str, bytes] = {}
    now = 0.0
    for op, arg, n in ops:
        now += 1.0
        match op:
            case "put":
                await c.put("bkt", arg, BODIES[n])
                live[arg] = BODIES[n]
            case "delete":
                await c.backend.delete_object("bkt", arg)
                live.pop(arg, None)
            case "gc":
                collected = await c.backend.collect_garbage(now, grace=0.0)
                needed = {chunk_id(b[i:i + CHUNK]) for b in live.values() for i in range(0, len(b), CHUNK)}
                assert not needed & set(collected)
            case "repair":
                await c.repairer.repair_once(now)
            case "down":  # one node down at a time
                for fake in c.client.nodes.values():
                    fake.down = False
                c.lost = {arg}
                c.client.nodes[arg].down = True
            case "up":
                for fake in c.client.nodes.values():
                    fake.down = False
                c.lost = set()
        for key, body in live.items():
            got = await c.read("bkt", key)
            assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest(), (key, op)


@settings(max_examples=60, deadline=None)
@given(operations)
def test_live_objects_always_read_back_and_are_never_collected(ops: list[tuple[str, str, int]]) -> None:
    asyncio.run(_run(ops))

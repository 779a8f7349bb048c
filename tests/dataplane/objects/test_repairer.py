"""Repair end to end over fake nodes and the in-memory metadata, objects written and read through `ObjectBackend`:
a node lost -> every chunk back at R from the survivors and every object readable; the node back -> the surplus is
collected, never the last copy; a byte budget spreads the work over passes that resume from the state; a corrupt
source is recorded and another used."""

from __future__ import annotations

import os

from tests.dataplane.objects.cluster import CHUNK, Cluster


async def test_a_lost_node_is_repaired_to_r_and_its_return_collected_never_the_last_copy() -> None:
    c = Cluster()
    await c.backend.create_bucket("two", 0.0)
    await c.backend.create_bucket("three", 0.0, replicas=3)
    bodies = {(b, f"o{i}"): os.urandom(CHUNK * (i % 3) + 100 + i) for i in range(20) for b in ("two", "three")}
    for (bucket, key), body in bodies.items():
        await c.put(bucket, key, body)
    victim = max(c.client.nodes, key=lambda n: len(c.client.nodes[n].chunks))
    held = set(c.client.nodes[victim].chunks)
    assert held
    c.client.nodes[victim].down = True  # lost: its copies are gone as far as anyone can tell
    c.lost.add(victim)
    for (bucket, key), body in bodies.items():  # readable throughout, from the other copies
        assert await c.read(bucket, key) == body
    report = await c.repairer.repair_once(1.0)
    assert report.copied == report.plan.under_replicated >= len(held) and report.failed == 0
    for state in (await c.states()).values():
        assert len(c.good_online(state)) == state.replicas  # every chunk back at its bucket's R
    again = await c.repairer.repair_once(2.0)
    assert again.plan.empty  # idempotent: nothing left to do
    c.client.nodes[victim].down = False  # the node comes back with its old copies: surplus
    c.lost.discard(victim)
    back = await c.repairer.repair_once(3.0)
    assert back.deleted > 0 and back.plan.copies == ()
    for state in (await c.states()).values():
        holders = {n for n, f in c.client.nodes.items() if state.record.id in f.chunks}
        assert holders == set(state.record.holders) and len(holders) == state.replicas
    for (bucket, key), body in bodies.items():
        assert await c.read(bucket, key) == body


async def test_a_budget_spreads_repair_over_passes_that_resume() -> None:
    c = Cluster(3)
    await c.backend.create_bucket("bkt", 0.0)
    for i in range(20):
        await c.put("bkt", f"k{i}", os.urandom(CHUNK))
    held = len(c.client.nodes["n0"].chunks)
    assert held > 0
    c.lost.add("n0")
    c.client.nodes["n0"].down = True
    passes = 0
    while True:
        report = await c.repairer.repair_once(float(passes), budget=3 * CHUNK)
        assert report.copied_bytes <= 3 * CHUNK
        passes += 1
        if report.plan.empty:
            break
        assert passes < 20
    under = [s for s in (await c.states()).values() if len(c.good_online(s)) < s.replicas]
    assert under == [] and passes == -(-held // 3) + 1  # three chunks a pass, then one pass with nothing left


async def test_a_corrupt_source_is_recorded_and_the_next_pass_uses_another() -> None:
    c = Cluster(4)
    await c.backend.create_bucket("bkt", 0.0, replicas=3)
    body = os.urandom(CHUNK)
    await c.put("bkt", "k", body)
    (state,) = (await c.states()).values()
    cid = state.record.id
    holders = sorted(state.record.holders)
    c.lost.add(holders[2])
    c.client.nodes[holders[2]].down = True
    first = await c.repairer.repair_once(1.0)
    source = first.plan.copies[0].source if first.plan.copies else None
    assert source is not None
    # make the chosen source corrupt, undo the copy and plan again: the corrupt source is recorded and skipped
    c.client.corrupt(source, cid)
    target = first.plan.copies[0].target
    c.client.nodes[target].chunks.pop(cid)
    await c.metadata.update_chunk(cid, CHUNK, remove=[target])
    second = await c.repairer.repair_once(2.0)
    assert second.failed == 1 and c.metadata.chunks[cid].bad == {source}
    third = await c.repairer.repair_once(3.0)
    assert third.copied >= 1 and source not in {cp.source for cp in third.plan.copies}
    assert await c.read("bkt", "k") == body

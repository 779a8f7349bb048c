"""The placement core: eligibility with reasons as values, distinct nodes and zones, capacity, HRW stability."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataplane.objects.chunking import chunk_id
from dataplane.objects.model import StorageNode
from dataplane.objects.placement import Placed, Reason, Unplaceable, place

GiB = 1 << 30


def node(name: str, zone: str = "z", *, quota: int = GiB, used: int = 0, reliability: float = 1.0,
         online: bool = True) -> StorageNode:
    return StorageNode(name, zone, quota=quota, used=used, reliability=reliability, online=online)


CID = chunk_id(b"some chunk")


@pytest.mark.parametrize(("nodes", "exclude", "reason"), [
    ([node("a", quota=0)], (), Reason.NO_STORAGE),
    ([node("a", online=False)], (), Reason.OFFLINE),
    ([node("a")], ("a",), Reason.EXCLUDED),
    ([node("a", quota=100, used=50)], (), Reason.FULL),
    ([node("a", reliability=0.0)], (), Reason.UNRELIABLE),
], ids=["no-storage", "offline", "excluded", "full", "unreliable"])
def test_an_ineligible_node_is_refused_with_its_reason(nodes: list[StorageNode], exclude: tuple[str, ...],
                                                       reason: Reason) -> None:
    result = place(CID, 64, nodes, 1, exclude=exclude)
    assert isinstance(result, Unplaceable)
    assert result.reasons == (("a", reason),) and result.eligible == ()
    assert reason.value in result.explain()


def test_fewer_eligible_than_r_is_unplaceable_unless_a_minimum_allows_it() -> None:
    nodes = [node("a"), node("b", quota=0)]
    refused = place(CID, 1, nodes, 2)
    assert isinstance(refused, Unplaceable) and refused.eligible == ("a",)
    assert refused.reasons == (("b", Reason.NO_STORAGE),)
    partial = place(CID, 1, nodes, 2, minimum=1)
    assert partial == Placed(("a",), 2) and partial.short == 1


def test_a_duplicate_node_id_counts_once() -> None:
    result = place(CID, 1, [node("a"), node("a")], 2)
    assert isinstance(result, Unplaceable) and result.reasons == (("a", Reason.DUPLICATE),)


def test_zones_are_spread_before_a_zone_gets_a_second_copy() -> None:
    nodes = [node(f"a{i}", "za") for i in range(8)] + [node("b0", "zb")]
    for i in range(50):
        result = place(chunk_id(bytes([i])), 1, nodes, 2)
        assert isinstance(result, Placed)
        assert "b0" in result.nodes  # the only node of zone zb is always one of the two


@pytest.mark.parametrize(("favoured", "other"), [
    (node("big", quota=100 * GiB), node("small", quota=GiB)),
    (node("solid", reliability=0.99), node("flaky", reliability=0.05)),
    (node("empty", quota=10 * GiB), node("nearly-full", quota=10 * GiB, used=9 * GiB)),
], ids=["free-space", "reliability", "usage"])
def test_weight_follows_free_space_and_reliability(favoured: StorageNode, other: StorageNode) -> None:
    firsts = [place(chunk_id(i.to_bytes(4, "big")), 1, [favoured, other], 1) for i in range(400)]
    wins = sum(1 for p in firsts if isinstance(p, Placed) and p.nodes == (favoured.node_id,))
    assert wins > 300


nodes_strategy = st.lists(
    st.builds(node, st.text("abcdefgh", min_size=1, max_size=3), st.sampled_from(["z1", "z2", "z3", ""]),
              quota=st.integers(0, 10_000), used=st.integers(0, 10_000), reliability=st.floats(0.0, 1.0),
              online=st.booleans()),
    max_size=12, unique_by=lambda n: n.node_id)


@settings(max_examples=300, deadline=None)
@given(nodes_strategy, st.integers(1, 4), st.integers(0, 3000), st.binary(max_size=8))
def test_placement_invariants(nodes: list[StorageNode], r: int, size: int, seed: bytes) -> None:
    cid = chunk_id(seed)
    result = place(cid, size, nodes, r, minimum=1)
    by_id = {n.node_id: n for n in nodes}
    eligible = [n for n in nodes if n.quota > 0 and n.online and n.free >= size and n.reliability > 0]
    if isinstance(result, Unplaceable):
        assert not eligible
        assert {n for n, _ in result.reasons} == set(by_id)
        return
    chosen = [by_id[n] for n in result.nodes]
    assert len(set(result.nodes)) == len(result.nodes) == min(r, len(eligible))  # distinct nodes, as many as can be
    assert all(n.free >= size and n.online and n.quota > 0 for n in chosen)  # never past a node's free quota
    zones_available = len({n.zone for n in eligible})
    assert len({n.zone for n in chosen}) == min(len(chosen), zones_available)  # distinct zones where possible
    assert place(cid, size, nodes, r, minimum=1) == result  # deterministic


@settings(max_examples=50, deadline=None)
@given(st.integers(3, 12), st.integers(1, 3), st.booleans())
def test_adding_a_node_moves_only_chunks_onto_it(n: int, r: int, zoned: bool) -> None:
    before_nodes = [node(f"n{i}", f"z{i % 3}" if zoned else "") for i in range(n)]
    after_nodes = [*before_nodes, node("new", "z9" if zoned else "")]
    moved = 0
    chunks = [chunk_id(i.to_bytes(4, "big")) for i in range(300)]
    for cid in chunks:
        before, after = place(cid, 1, before_nodes, r), place(cid, 1, after_nodes, r)
        assert isinstance(before, Placed) and isinstance(after, Placed)
        if set(before.nodes) != set(after.nodes):
            moved += 1
            assert "new" in after.nodes  # a chunk moves only to the new node
            assert len(set(before.nodes) - set(after.nodes)) == 1  # and only one copy of it moves
    if not zoned:  # HRW: about r/(n+1) of the chunks gain the new node
        expected = len(chunks) * min(r, n + 1) / (n + 1)
        assert 0.5 * expected <= moved <= 1.6 * expected

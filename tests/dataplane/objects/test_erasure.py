"""Erasure coding, the pure parts and the codec: RS(4,2) round trips from every 4 of 6 fragments, deterministic
fragments (a rebuilt fragment keeps its id), where fragments are and may go (`layout`, `targets`: never two of a
stripe on one node, zones first), which buckets may be erasure-coded, the repair plan for stripes, and the documents
the coordinator stores."""

from __future__ import annotations

import itertools
import os
from collections import Counter

import pytest

from dataplane.objects import erasure
from dataplane.objects.chunking import chunk_id
from dataplane.objects.erasure import RS_4_2, Codec, Layout, load_codec
from dataplane.objects.model import ChunkRecord, ErasureCode, StorageNode, Stripe
from dataplane.objects.placement import Unplaceable
from dataplane.objects.repair import ChunkState, plan_repair, plan_stripe_repair

NODES = [StorageNode(f"n{i}", f"z{i % 3}", quota=1 << 30) for i in range(8)]


@pytest.fixture(scope="module")
def codec() -> Codec:
    return load_codec(RS_4_2)


def striped(codec: Codec, data: bytes) -> tuple[ChunkRecord, list[bytes]]:
    fragments = codec.encode(data)
    return ChunkRecord(chunk_id(data), len(data), stripe=erasure.make_stripe(codec, fragments)), fragments


def placed(stripe: Stripe, homes: list[str | None]) -> dict[str, ChunkRecord]:
    """Fragment records: fragment i on homes[i] (None: no copy anywhere)."""
    return {fid: ChunkRecord(fid, stripe.fragment_size, frozenset({home}))
            for fid, home in zip(stripe.fragments, homes, strict=True) if home is not None}


# ---- the codec --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [1, 1000, 1 << 20, (1 << 20) - 3])
def test_any_four_of_six_fragments_decode_to_the_exact_bytes(codec: Codec, size: int) -> None:
    data = os.urandom(size)
    fragments = codec.encode(data)
    assert len(fragments) == 6 and len({len(f) for f in fragments}) == 1
    for lost in itertools.combinations(range(6), 2):
        kept = [f for i, f in enumerate(fragments) if i not in lost]
        assert codec.decode(kept) == data, f"lost {lost}"
    with pytest.raises(ValueError, match="needs 4"):
        codec.decode(fragments[:3])


def test_encoding_is_deterministic_so_a_rebuilt_fragment_keeps_its_id(codec: Codec) -> None:
    data = os.urandom(300_000)
    record, fragments = striped(codec, data)
    assert record.stripe is not None
    assert erasure.check_fragments(record.stripe, codec.encode(data)) is None
    assert [chunk_id(f) for f in fragments] == list(record.stripe.fragments)
    other = erasure.check_fragments(record.stripe, codec.encode(data + b"x"))
    assert other is not None and "other bytes" in other


def test_the_codec_prefers_isa_l_and_names_what_is_missing_when_a_backend_does_not_load() -> None:
    assert load_codec(RS_4_2).backend == erasure.BACKENDS[0]
    with pytest.raises(erasure.CodecUnavailable, match="no_such_backend"):
        load_codec(RS_4_2, "no_such_backend")
    assert erasure.codec_problem() is None


# ---- buckets ----------------------------------------------------------------------------------------------------

def test_only_4_plus_2_is_offered() -> None:
    assert erasure.parse_code("4+2") == erasure.parse_code("RS(4,2)") == RS_4_2
    for text in ("3+2", "", "4+2+1", "eight"):
        why = erasure.parse_code(text)
        assert isinstance(why, str) and "4+2" in why


def test_an_erasure_coded_bucket_needs_six_storage_nodes_and_a_codec() -> None:
    six = NODES[:6]
    assert erasure.bucket_refusal(RS_4_2, six) is None
    offline = [*NODES[:5], StorageNode("n5", quota=1, online=False)]
    assert erasure.bucket_refusal(RS_4_2, offline) is None  # known storage nodes count, online or not
    phones = [*NODES[:5], StorageNode("phone", quota=0)]
    why = erasure.bucket_refusal(RS_4_2, phones)
    assert why is not None and "at least 6 storage nodes" in why and "5 known" in why and "phone" not in why
    why = erasure.bucket_refusal(RS_4_2, six, "pyeclib is not installed")
    assert why is not None and "pyeclib is not installed" in why


# ---- layout and placement ---------------------------------------------------------------------------------------

def test_layout_finds_good_missing_and_occupied_fragments(codec: Codec) -> None:
    record, _ = striped(codec, os.urandom(5000))
    stripe = record.stripe
    assert stripe is not None
    records = placed(stripe, ["n0", "n1", "n2", "n3", None, "n5"])
    records[stripe.fragments[1]] = ChunkRecord(stripe.fragments[1], 1, frozenset({"n1"}), bad=frozenset({"n1"}))
    nodes = [n if n.node_id != "n2" else StorageNode("n2", quota=1 << 30, online=False) for n in NODES]
    lay = erasure.layout(stripe, records, nodes)
    assert lay.good == (0, 3, 5) and lay.missing == (1, 2, 4) and not lay.readable
    assert lay.occupied == {"n0", "n1", "n2", "n3", "n5"}  # the corrupt and the offline holder too
    assert lay.read_order() == [(0, "n0"), (3, "n3"), (5, "n5"), (2, "n2")]  # the offline copy last, never the bad


def test_read_order_tries_data_fragments_first_then_second_copies() -> None:
    stripe = Stripe(4, 2, "isa_l_rs_vand", 10, tuple(f"{i}" * 64 for i in range(6)))
    lay = Layout(stripe, (("a",), ("b", "x"), ("c",), (), ("e",), ("f",)), frozenset())
    assert lay.read_order() == [(0, "a"), (1, "b"), (2, "c"), (4, "e"), (5, "f"), (1, "x")]


def test_targets_are_distinct_new_nodes_across_zones(codec: Codec) -> None:
    record, _ = striped(codec, os.urandom(5000))
    assert record.stripe is not None
    homes = erasure.targets(record.id, record.stripe, range(6), NODES[:6], ())
    assert not isinstance(homes, Unplaceable)
    assert [i for i, _ in homes] == list(range(6)) and len({n for _, n in homes}) == 6
    zones = [NODES[int(n[1:])].zone for _, n in homes[:3]]
    assert len(set(zones)) == 3  # one per zone before any zone gets a second
    again = erasure.targets(record.id, record.stripe, [1, 4], NODES, {"n0", "n1", "n2", "n3", "n5"})
    assert not isinstance(again, Unplaceable)
    assert {n for _, n in again} <= {"n4", "n6", "n7"} and len({n for _, n in again}) == 2
    few = erasure.targets(record.id, record.stripe, [1, 4], NODES[:6], {"n0", "n1", "n2", "n3", "n5"})
    assert few == [(1, "n4")]  # one node left: the first index gets it
    none = erasure.targets(record.id, record.stripe, [1], NODES[:3], {"n0", "n1", "n2"})
    assert isinstance(none, Unplaceable) and "excluded" in none.explain()


def test_fragments_spread_evenly_over_zones_so_a_lost_zone_costs_at_most_two(codec: Codec) -> None:
    nine = [StorageNode(f"n{i}", f"z{i % 3}", quota=1 << 30) for i in range(9)]
    zone = {n.node_id: n.zone for n in nine}
    for size in range(100, 140):  # many chunks: many rendezvous orders
        record, _ = striped(codec, os.urandom(size))
        assert record.stripe is not None
        homes = erasure.targets(record.id, record.stripe, range(6), nine, ())
        assert not isinstance(homes, Unplaceable)
        assert sorted(Counter(zone[n] for _, n in homes).values()) == [2, 2, 2]
        # fragments 0 and 1 lost from zone z0's nodes: their rebuilds go back to z0, not onto z1/z2
        survivors = [n for i, n in homes if i > 1]
        lost_zones = Counter(zone[n] for i, n in homes if i <= 1)
        again = erasure.targets(record.id, record.stripe, [0, 1], nine, {n for _, n in homes}, holding=survivors)
        assert not isinstance(again, Unplaceable)
        assert Counter(zone[n] for _, n in again) == lost_zones


# ---- repair planning --------------------------------------------------------------------------------------------

def test_a_stripe_with_two_lost_fragments_is_rebuilt_onto_new_nodes(codec: Codec) -> None:
    record, _ = striped(codec, os.urandom(20_000))
    stripe = record.stripe
    assert stripe is not None
    homes = ["n0", "n1", "n2", "n3", "n4", "n5"]
    lost = {"n1", "n4"}
    nodes = [StorageNode(n.node_id, n.zone, quota=n.quota, online=n.node_id not in lost) for n in NODES]
    plan = plan_stripe_repair({record.id: record}, placed(stripe, list(homes)), nodes, 0.0)
    assert plan.degraded == 1 and not plan.unrecoverable and len(plan.rebuilds) == 1
    rebuild = plan.rebuilds[0]
    assert [i for i, _ in rebuild.targets] == [1, 4]
    assert {n for _, n in rebuild.targets} == {"n6", "n7"}  # never a node holding (or having held) a fragment
    assert rebuild.bytes == 2 * stripe.fragment_size
    deferred = plan_stripe_repair({record.id: record}, placed(stripe, list(homes)), nodes, 0.0,
                                  budget=stripe.fragment_size)
    assert deferred.rebuilds == () and deferred.deferred == (record.id,)
    # the replicated planner leaves striped chunks alone (their record has no holders, yet nothing is lost)
    assert plan_repair({record.id: ChunkState(record, 3)}, nodes, 0.0).unrecoverable == ()


def test_a_stripe_below_k_is_unrecoverable_and_a_full_one_needs_nothing(codec: Codec) -> None:
    record, _ = striped(codec, os.urandom(20_000))
    stripe = record.stripe
    assert stripe is not None
    three = placed(stripe, ["n0", "n1", "n2", None, None, None])
    plan = plan_stripe_repair({record.id: record}, three, NODES, 0.0)
    assert plan.unrecoverable == (record.id,) and plan.rebuilds == ()
    full = plan_stripe_repair({record.id: record}, placed(stripe, [f"n{i}" for i in range(6)]), NODES, 0.0)
    assert full.empty and full.degraded == 0


def test_surplus_and_corrupt_fragment_copies_are_deleted_never_the_last(codec: Codec) -> None:
    record, _ = striped(codec, os.urandom(20_000))
    stripe = record.stripe
    assert stripe is not None
    records = placed(stripe, [f"n{i}" for i in range(6)])
    f1, f2 = stripe.fragments[1], stripe.fragments[2]
    records[f1] = ChunkRecord(f1, 1, frozenset({"n1", "n6"}))  # n1 came back after fragment 1 was rebuilt on n6
    records[f2] = ChunkRecord(f2, 1, frozenset({"n2", "n7"}), bad=frozenset({"n2"}))
    plan = plan_stripe_repair({record.id: record}, records, NODES, 0.0)
    assert plan.rebuilds == ()
    deletes = {(d.chunk_id, d.node, d.corrupt) for d in plan.deletes}
    assert (f2, "n2", True) in deletes
    surplus = [d for d in plan.deletes if d.chunk_id == f1]
    assert len(surplus) == 1 and not surplus[0].corrupt  # one of the two copies stays
    assert all(d.chunk_id != f2 or d.corrupt for d in plan.deletes)  # n7's copy is the last good one


# ---- documents --------------------------------------------------------------------------------------------------

def test_stripe_and_code_documents_round_trip_and_name_the_bad_field(codec: Codec) -> None:
    record, _ = striped(codec, os.urandom(1000))
    assert erasure.stripe_from_doc(erasure.stripe_doc(record.stripe)) == record.stripe
    assert erasure.stripe_from_doc(None) is None and erasure.stripe_doc(None) is None
    assert erasure.code_from_doc(erasure.code_doc(RS_4_2)) == RS_4_2 and erasure.code_from_doc(None) is None
    good = erasure.stripe_doc(record.stripe)
    assert good is not None
    wrong = [("k", 0), ("fragment_size", "1"), ("backend", "xor"), ("fragments", ["a" * 64] * 5),
             ("fragments", ["A" * 64] * 6)]
    for field, value in wrong:
        with pytest.raises(ValueError, match=field):
            erasure.stripe_from_doc({**good, field: value})
    for bad in ([4], [4, True], [3, 2], "4+2"):
        with pytest.raises(ValueError, match="erasure"):
            erasure.code_from_doc(bad)
    assert ErasureCode().replicas == 3 and str(ErasureCode()) == "4+2"

"""Erasure-coded buckets over the coordinator's real metadata (`StoreMetadata` on SQLite): the bucket's code and each
chunk's stripe survive the JSON documents (coordinator/objects_codec.py), the stripe is set once, a corrupt stripe
document is a StoreError naming the field, and the whole lose-2-of-6 / repair / return scenario of
tests/dataplane/objects/test_stripes.py runs over it unchanged."""

from __future__ import annotations

import json
import os

import pytest

from coordinator.objects import StoreMetadata
from coordinator.store import SqliteStore, StoreError, put
from dataplane.objects.chunking import chunk_id
from dataplane.objects.erasure import RS_4_2, load_codec, make_stripe
from dataplane.objects.model import BucketRecord
from tests.dataplane.objects.ec_cluster import ECCluster, lifecycle


async def test_the_lifecycle_over_sqlite_metadata() -> None:
    await lifecycle(ECCluster(6, metadata=StoreMetadata(SqliteStore(":memory:"))))


async def test_bucket_code_and_stripe_round_trip_and_the_stripe_is_set_once() -> None:
    meta = StoreMetadata(SqliteStore(":memory:"))
    await meta.create_bucket(BucketRecord("ec", 1.0, 3, RS_4_2))
    await meta.create_bucket(BucketRecord("rep", 1.0))
    assert await meta.get_bucket("ec") == BucketRecord("ec", 1.0, 3, RS_4_2)
    rep = await meta.get_bucket("rep")
    assert rep is not None and rep.erasure is None
    codec = load_codec(RS_4_2)
    data = os.urandom(10_000)
    stripe = make_stripe(codec, codec.encode(data))
    other = make_stripe(codec, codec.encode(data + b"!"))
    cid = chunk_id(data)
    await meta.update_chunk(cid, len(data), stripe=stripe, touched=2.0)
    again = await meta.update_chunk(cid, len(data), stripe=other)  # a stripe never changes once set
    assert again.stripe == stripe
    assert (await meta.get_chunks([cid]))[cid].stripe == stripe
    assert [r.stripe for r in await meta.list_chunks()] == [stripe]


async def test_a_corrupt_stripe_document_is_a_store_error_naming_the_field() -> None:
    store = SqliteStore(":memory:")
    meta = StoreMetadata(store)
    cid = "a" * 64
    doc = {"id": cid, "size": 1, "holders": [], "bad": [], "touched": 0.0,
           "stripe": {"k": 4, "m": 2, "backend": "isa_l_rs_vand", "fragment_size": 10, "fragments": ["b" * 64] * 5}}
    await store.txn([put(f"/objects/chunks/{cid}", json.dumps(doc).encode())])
    with pytest.raises(StoreError, match=f"/objects/chunks/{cid}.*'fragments'"):
        await meta.get_chunks([cid])

"""The SQLite store: revisions, compare-and-swap, atomic transactions, watches, durability across reopen."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from coordinator.store import Conflict, OpKind, SqliteStore, delete, put


@pytest.fixture
def store() -> SqliteStore:
    return SqliteStore(":memory:")


async def test_revisions_advance_per_transaction(store: SqliteStore) -> None:
    assert await store.revision() == 0
    r1 = await store.txn([put("/a", b"1"), put("/b", b"2")])
    r2 = await store.txn([put("/a", b"3")])
    assert (r1, r2) == (1, 2)
    a = await store.get("/a")
    assert a is not None and (a.value, a.mod_revision, a.create_revision) == (b"3", 2, 1)
    assert [e.key for e in await store.list("/")] == ["/a", "/b"]


@pytest.mark.parametrize(("expect", "ok"), [(None, True), (1, True), (0, False), (2, False)],
                         ids=["unconditional", "current", "must-not-exist", "stale"])
async def test_compare_and_swap(store: SqliteStore, expect: int | None, ok: bool) -> None:
    await store.txn([put("/k", b"v1")])
    if ok:
        await store.txn([put("/k", b"v2", expect)])
        assert (await store.get("/k")).value == b"v2"  # type: ignore[union-attr]
    else:
        with pytest.raises(Conflict) as info:
            await store.txn([put("/k", b"v2", expect)])
        assert info.value.key == "/k" and info.value.actual == 1


async def test_a_failed_expectation_applies_nothing(store: SqliteStore) -> None:
    await store.txn([put("/x", b"1")])
    with pytest.raises(Conflict):
        await store.txn([put("/y", b"new"), delete("/x", expect=99)])
    assert await store.get("/y") is None and await store.get("/x") is not None
    assert await store.revision() == 1


async def test_prefix_listing_is_exact(store: SqliteStore) -> None:
    await store.txn([put("/w/a", b""), put("/w/b", b""), put("/wx", b""), put("/v", b"")])
    assert [e.key for e in await store.list("/w/")] == ["/w/a", "/w/b"]


async def test_watch_sees_changes_under_its_prefix_in_order(store: SqliteStore) -> None:
    seen = []

    async def follow() -> None:
        async for change in store.watch("/w/"):
            seen.append((change.kind, change.key, change.revision))
            if len(seen) == 3:
                return

    task = asyncio.create_task(follow())
    await asyncio.sleep(0)
    await store.txn([put("/w/a", b"1")])
    await store.txn([put("/other", b"")])
    await store.txn([put("/w/a", b"2"), delete("/w/a")])
    await asyncio.wait_for(task, 2)
    assert seen == [(OpKind.PUT, "/w/a", 1), (OpKind.PUT, "/w/a", 3), (OpKind.DELETE, "/w/a", 3)]


async def test_state_survives_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    s = SqliteStore(path)
    await s.txn([put("/a", b"1")])
    await s.close()
    s2 = SqliteStore(path)
    assert (await s2.get("/a")).value == b"1"  # type: ignore[union-attr]
    assert await s2.revision() == 1
    await s2.close()

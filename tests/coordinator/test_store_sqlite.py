"""The store contract, run against SQLite and against a real 3-member etcd cluster (EtcdStore, integration):
revisions, compare-and-swap, atomic transactions, watches; and SQLite's durability across reopen.

Revisions are compared relative to each other: an etcd cluster starts at revision 1 and other key roots on the
same cluster advance it too."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from coordinator.store import Conflict, Fenced, OpKind, SqliteStore, Store, delete, put
from tests.integration.etcd_env import EtcdCluster, running_etcd_cluster


@pytest.fixture(scope="module")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    with running_etcd_cluster(tmp_path_factory.mktemp("etcd")) as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", pytest.param("etcd", marks=pytest.mark.integration)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        yield SqliteStore(":memory:")
        return
    from coordinator.store.etcd import open_etcd_store

    cluster: EtcdCluster = request.getfixturevalue("etcd_cluster")
    etcd = await open_etcd_store(cluster.url, root=f"/test-{uuid.uuid4().hex[:8]}")  # each test its own keys
    yield etcd
    await etcd.close()


async def test_revisions_advance_per_transaction(store: Store) -> None:
    r0 = await store.revision()
    r1 = await store.txn([put("/a", b"1"), put("/b", b"2")])
    r2 = await store.txn([put("/a", b"3")])
    assert r0 < r1 < r2 == await store.revision()
    a = await store.get("/a")
    assert a is not None and (a.value, a.mod_revision, a.create_revision) == (b"3", r2, r1)
    assert [e.key for e in await store.list("/")] == ["/a", "/b"]


@pytest.mark.parametrize(("expect", "ok"), [(None, True), ("current", True), (0, False), ("stale", False)],
                         ids=["unconditional", "current", "must-not-exist", "stale"])
async def test_compare_and_swap(store: Store, expect: int | str | None, ok: bool) -> None:
    r1 = await store.txn([put("/k", b"v1")])
    revision = {"current": r1, "stale": r1 + 1}[expect] if isinstance(expect, str) else expect
    if ok:
        await store.txn([put("/k", b"v2", revision)])
        assert (await store.get("/k")).value == b"v2"  # type: ignore[union-attr]
    else:
        with pytest.raises(Conflict) as info:
            await store.txn([put("/k", b"v2", revision)])
        assert (info.value.key, info.value.expected, info.value.actual) == ("/k", revision, r1)


async def test_a_failed_expectation_applies_nothing(store: Store) -> None:
    r1 = await store.txn([put("/x", b"1")])
    with pytest.raises(Conflict):
        await store.txn([put("/y", b"new"), delete("/x", expect=r1 + 99)])
    assert await store.get("/y") is None and await store.get("/x") is not None
    assert await store.revision() == r1


async def test_prefix_listing_is_exact(store: Store) -> None:
    await store.txn([put("/w/a", b""), put("/w/b", b""), put("/wx", b""), put("/v", b"")])
    assert [e.key for e in await store.list("/w/")] == ["/w/a", "/w/b"]


async def test_watch_sees_changes_under_its_prefix_in_order(store: Store) -> None:
    seen = []

    async def follow() -> None:
        async for change in store.watch("/w/"):
            seen.append((change.kind, change.key, change.revision))
            if len(seen) == 3:
                return

    task = asyncio.create_task(follow())
    await asyncio.sleep(0)
    r1 = await store.txn([put("/w/a", b"1")])
    await store.txn([put("/other", b"")])
    r3 = await store.txn([put("/w/b", b"2"), delete("/w/a")])
    await asyncio.wait_for(task, 5)
    assert seen == [(OpKind.PUT, "/w/a", r1), (OpKind.PUT, "/w/b", r3), (OpKind.DELETE, "/w/a", r3)]


async def test_several_ops_on_one_key_leave_the_last_ones_result(store: Store) -> None:
    await store.txn([put("/k", b"1")])
    await store.txn([put("/k", b"2"), delete("/k")])
    assert await store.get("/k") is None
    rev = await store.txn([delete("/j"), put("/j", b"3")])
    j = await store.get("/j")
    assert j is not None and (j.value, j.mod_revision) == (b"3", rev)


async def test_state_survives_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    s = SqliteStore(path)
    await s.txn([put("/a", b"1")])
    await s.close()
    s2 = SqliteStore(path)
    assert (await s2.get("/a")).value == b"1"  # type: ignore[union-attr]
    assert await s2.revision() == 1
    await s2.close()


async def test_a_fenced_store_refuses_writes_once_the_election_key_moved_on(store: Store) -> None:
    """A leader's writes carry the election key's create revision (its epoch): after another coordinator took the
    key, the store itself refuses the deposed leader's late writes, and nothing of them lands."""
    epoch = await store.txn([put("/leader", b"me")])
    store.fence(("/leader", epoch))
    await store.txn([put("/w/1", b"while leading")])  # the key is still ours
    other = await store.txn([delete("/leader")])
    store.fence(None)
    await store.txn([put("/leader", b"someone else")])  # a new leader's key: another create revision
    store.fence(("/leader", epoch))
    with pytest.raises(Fenced, match=f"/leader is no longer at epoch {epoch} "):
        await store.txn([put("/w/2", b"late write")])
    assert await store.get("/w/2") is None and other > epoch
    with pytest.raises(Conflict):  # a failed expectation is still reported as such, fenced or not
        await store.txn([put("/w/1", b"x", expect=1)])
    store.fence(None)  # unfenced (a follower's compare-and-swap writes) it applies again
    await store.txn([put("/w/2", b"as a follower")])


async def test_an_empty_txn_writes_nothing_and_is_not_fenced(store: Store) -> None:
    rev = await store.txn([put("/a", b"1")])
    store.fence(("/no-such-leader", 1))
    assert await store.txn([]) == rev == await store.revision()

"""EtcdStore beyond the shared contract (test_store_sqlite.py runs that against etcd too).

Without a cluster: URL parsing, how a txn is planned for etcd (ops collapsed per key, op limit), configuration
errors. Against real 3-member clusters (integration): conflict details, paging, watches across clients and after
compaction, one member lost or frozen (operations continue), quorum lost (StoreUnavailable, never a hang) and
recovered.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from coordinator.store import Conflict, Op, StoreError, StoreUnavailable, delete, put
from coordinator.store.etcd import (
    EtcdStore,
    EtcdTarget,
    _Endpoints,
    _prefix_end,
    collapse,
    open_etcd_store,
    parse_etcd_url,
)
from tests.integration.conftest import free_port
from tests.integration.etcd_env import EtcdCluster, running_etcd_cluster

# ---- without a cluster -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "expected"), [
    ("etcd://10.0.0.1:2379", EtcdTarget(("10.0.0.1:2379",), False, None)),
    ("etcd://a:1,b:2,c:3", EtcdTarget(("a:1", "b:2", "c:3"), False, None)),
    ("etcd://a", EtcdTarget(("a:2379",), False, None)),
    ("etcds://e1:2379,e2:2379/prod", EtcdTarget(("e1:2379", "e2:2379"), True, "/prod")),
    ("etcd://[::1]:2380,[fe80::1]", EtcdTarget(("[::1]:2380", "[fe80::1]:2379"), False, None)),
    ("etcd://a:1/", EtcdTarget(("a:1",), False, None)),
], ids=["one", "three", "default-port", "tls-root", "ipv6", "trailing-slash"])
def test_parse_etcd_url(url: str, expected: EtcdTarget) -> None:
    assert parse_etcd_url(url) == expected


@pytest.mark.parametrize(("url", "problem"), [
    ("http://a:2379", "scheme must be etcd:// or etcds://"),
    ("a:2379", "scheme must be etcd:// or etcds://"),
    ("etcd://", "no endpoint"),
    ("etcd://a:1,,b:2", "empty endpoint"),
    ("etcd://a:port", "invalid port 'port'"),
    ("etcd://a:70000", "invalid port '70000'"),
    ("etcd://:2379", "has no host"),
    ("etcd://::1:2379", "[address]:port"),
    ("etcd://u:p@a:2379", "user:password@"),
    ("etcd://a:2379?x=1", "query strings"),
], ids=["http", "no-scheme", "empty", "double-comma", "port-word", "port-range", "no-host", "bare-ipv6", "userinfo",
        "query"])
def test_parse_etcd_url_names_the_problem(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match="etcd URL") as info:
        parse_etcd_url(url)
    assert problem in str(info.value)


def test_a_certificate_makes_the_url_tls() -> None:
    assert parse_etcd_url("etcd://a:1", tls=True).tls


@pytest.mark.parametrize(("ops", "writes", "compares"), [
    ([put("/a", b"1", 0), put("/b", b"2", 7)], [put("/a", b"1", 0), put("/b", b"2", 7)], [("/a", 0), ("/b", 7)]),
    ([put("/a", b"1"), put("/a", b"2")], [put("/a", b"2")], []),
    ([put("/a", b"1", 5), delete("/a")], [delete("/a")], [("/a", 5)]),
    ([put("/a", b"1"), put("/b", b""), delete("/a")], [put("/b", b""), delete("/a")], []),
    ([delete("/a", 3), put("/a", b"new", 0)], [put("/a", b"new", 0)], [("/a", 3)]),
], ids=["distinct", "last-put-wins", "first-expectation-kept", "order-of-last-ops", "recreate-after-delete"])
def test_collapse(ops: list[Op], writes: list[Op], compares: list[tuple[str, int]]) -> None:
    assert collapse(ops) == (writes, compares)


def test_collapse_refuses_an_expectation_on_a_key_the_txn_already_wrote() -> None:
    with pytest.raises(StoreError, match="already wrote"):
        collapse([put("/a", b"1"), put("/a", b"2", expect=4)])


@pytest.mark.parametrize(("prefix", "end"), [(b"/a/", b"/a0"), (b"a\xff", b"b"), (b"\xff\xff", b"\0")],
                         ids=["plain", "trailing-ff", "all-ff"])
def test_prefix_end(prefix: bytes, end: bytes) -> None:
    assert _prefix_end(prefix) == end


async def test_a_txn_over_etcds_op_limit_is_refused_before_anything_is_sent() -> None:
    store = EtcdStore(_Endpoints(("127.0.0.1:1",), None, 1.0), root="/t", max_txn_ops=3)
    with pytest.raises(StoreError, match="at most 3 per transaction") as info:
        await store.txn([put(f"/k{i}", b"") for i in range(4)])
    assert not isinstance(info.value, StoreUnavailable)
    await store.close()


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"cert": "c.pem"}, "needs its key"),
    ({"key": "k.pem"}, "needs its key"),
    ({"ca": "/nonexistent/ca.pem"}, "cannot read the CA bundle /nonexistent/ca.pem"),
    ({"timeout_s": 0}, "timeout must be positive"),
    ({"root": "/x/"}, "must start with '/' and not end with one"),
], ids=["cert-only", "key-only", "unreadable-ca", "zero-timeout", "bad-root"])
async def test_configuration_errors_are_value_errors(kwargs: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match="etcd") as info:
        await open_etcd_store("etcd://127.0.0.1:1", **kwargs)  # type: ignore[arg-type]
    assert problem in str(info.value)


async def test_nothing_listening_is_unavailable_with_the_endpoints_and_what_to_check() -> None:
    ports = [free_port(), free_port()]
    url = f"etcd://127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}"
    with pytest.raises(StoreUnavailable) as info:
        await asyncio.wait_for(open_etcd_store(url, timeout_s=1.0), 10)
    message = str(info.value)
    assert f"127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}" in message
    assert "majority of the etcd members" in message and "etcdctl" in message


# ---- against a real cluster --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """Shared by the tests that do not harm it; each works under its own key root."""
    with running_etcd_cluster(tmp_path_factory.mktemp("etcd")) as cluster:
        yield cluster


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    """For tests that kill or freeze members."""
    with running_etcd_cluster(tmp_path / "etcd") as cluster:
        yield cluster


@pytest.fixture
async def store(etcd_cluster: EtcdCluster) -> AsyncIterator[EtcdStore]:
    s = await open_etcd_store(etcd_cluster.url, root=f"/t-{uuid.uuid4().hex[:8]}")
    yield s
    await s.close()


async def eventually(what: str, attempt: Callable[[], Awaitable[object]], timeout_s: float = 15.0) -> object:
    """Retry `attempt()` on StoreError until it succeeds; bounded."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            return await attempt()
        except StoreError:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{what}: still failing after {timeout_s} s") from None
            await asyncio.sleep(0.1)


@pytest.mark.integration
async def test_the_conflict_names_the_first_key_whose_revision_differed(store: EtcdStore) -> None:
    r1 = await store.txn([put("/a", b""), put("/b", b""), put("/c", b"")])
    r2 = await store.txn([put("/b", b"changed")])
    with pytest.raises(Conflict) as info:
        await store.txn([put("/a", b"x", expect=r1), put("/b", b"x", expect=r1), put("/c", b"x", expect=r2)])
    assert (info.value.key, info.value.expected, info.value.actual) == ("/b", r1, r2)
    with pytest.raises(Conflict) as info:
        await store.txn([put("/new", b"", expect=0), delete("/c", expect=0)])
    assert (info.value.key, info.value.expected, info.value.actual) == ("/c", 0, r1)
    assert await store.get("/new") is None


@pytest.mark.integration
async def test_listing_pages_through_more_keys_than_one_answer_holds(store: EtcdStore) -> None:
    for batch in range(11):
        await store.txn([put(f"/many/{batch:02}-{i:03}", b"v") for i in range(100)])
    keys = [e.key for e in await store.list("/many/")]
    assert len(keys) == 1100 and keys == sorted(keys) and len(set(keys)) == 1100


@pytest.mark.integration
async def test_a_watch_goes_on_from_the_last_read_so_list_then_watch_misses_nothing(etcd_cluster: EtcdCluster,
                                                                                    store: EtcdStore) -> None:
    other = await open_etcd_store(etcd_cluster.url, root=store.root)  # another coordinator
    await other.txn([put("/w/before", b"")])
    assert [e.key for e in await store.list("/w/")] == ["/w/before"]
    between = await other.txn([put("/w/between", b"")])  # after the list, before the watch: not to be missed
    watch = store.watch("/w/")
    first = asyncio.ensure_future(anext(watch))
    await asyncio.sleep(0)
    after = await other.txn([put("/w/after", b"1")])
    changes = [await asyncio.wait_for(first, 5), await asyncio.wait_for(anext(watch), 5)]
    assert [(c.key, c.revision) for c in changes] == [("/w/between", between), ("/w/after", after)]
    await watch.aclose()
    await other.close()


@pytest.mark.integration
async def test_a_watch_from_a_compacted_revision_raises_so_the_caller_relists(etcd_cluster: EtcdCluster,
                                                                               store: EtcdStore) -> None:
    old = await store.txn([put("/c/a", b"1")])
    now = await store.txn([put("/c/a", b"2")])
    etcd_cluster.compact(now)
    with pytest.raises(StoreError, match="re-list"):
        async for _ in store.watch("/c/", start_revision=old):
            pass


@pytest.mark.integration
async def test_one_member_lost_operations_continue(own_cluster: EtcdCluster) -> None:
    store = await open_etcd_store(own_cluster.url, root="/t")
    await store.txn([put("/k", b"0")])
    own_cluster.kill(0)  # the endpoint the store talks to first
    # a write in flight while etcd elects a new leader may time out; after that, everything works
    await eventually("first write after losing a member", lambda: store.txn([put("/k", b"1")]))
    for i in range(2, 12):
        rev = await store.txn([put("/k", str(i).encode())])
        entry = await store.get("/k")
        assert entry is not None and (entry.value, entry.mod_revision) == (str(i).encode(), rev)
    assert [e.key for e in await store.list("/")] == ["/k"]
    await store.close()


@pytest.mark.integration
async def test_a_frozen_member_costs_reads_one_share_of_the_deadline(own_cluster: EtcdCluster) -> None:
    # Freeze a member that is not etcd's raft leader, named first so the store talks to it first. (Freezing the
    # raft leader also makes etcd elect another, which on a loaded machine can outlast the whole deadline: that
    # is etcd's availability, not the client's, and the leadership tests cover it.)
    frozen = next(i for i in range(3) if i != own_cluster.raft_leader())
    order = [frozen] + [i for i in range(3) if i != frozen]
    url = "etcd://" + ",".join(own_cluster.endpoints[i] for i in order)
    store = await open_etcd_store(url, root="/t", timeout_s=3.0)
    await store.txn([put("/k", b"v")])
    own_cluster.pause(frozen)  # SIGSTOP: the TCP connection stays up, nothing answers
    try:
        entry = await asyncio.wait_for(store.get("/k"), 10)  # 1 s on the frozen member, then the next one
        assert entry is not None and entry.value == b"v"
        await store.txn([put("/k", b"w")])  # and the next call starts from the next member
    finally:
        own_cluster.resume(frozen)
    await store.close()


@pytest.mark.integration
async def test_quorum_lost_is_unavailable_not_a_hang_and_recovery_follows(own_cluster: EtcdCluster) -> None:
    store = await open_etcd_store(own_cluster.url, root="/t", timeout_s=2.0)
    rev = await store.txn([put("/kept", b"v")])

    async def watch_until_error() -> None:
        async for _ in store.watch("/"):
            pass

    watching = asyncio.create_task(watch_until_error())
    own_cluster.kill(0)
    own_cluster.kill(1)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: store.txn([put("/x", b"")]), lambda: store.get("/kept"), lambda: store.list("/"), store.revision]
    for call in calls:
        with pytest.raises(StoreUnavailable, match="majority of the etcd members"):
            await asyncio.wait_for(call(), 10)  # the store's own 2 s deadline ends it, not this bound
    with pytest.raises(StoreError):
        await asyncio.wait_for(watching, 20)  # the surviving member ends watches once it knows it has no leader

    own_cluster.restart(0)
    own_cluster.restart(1)
    own_cluster.wait_healthy()
    await eventually("write after quorum is back", lambda: store.txn([put("/x", b"back")]))
    kept = await store.get("/kept")
    assert kept is not None and (kept.value, kept.mod_revision) == (b"v", rev)
    await store.close()


@pytest.mark.integration
async def test_tls_with_a_client_certificate(tmp_path: Path) -> None:
    with running_etcd_cluster(tmp_path / "etcd", tls=True) as cluster:
        assert cluster.url.startswith("etcds://")
        store = await open_etcd_store(cluster.url, ca=cluster.ca_file, cert=cluster.client_cert,
                                      key=cluster.client_key, root="/t")
        rev = await store.txn([put("/k", b"v", expect=0)])
        entry = await store.get("/k")
        assert entry is not None and entry.mod_revision == rev
        await store.close()
        with pytest.raises(StoreUnavailable, match="CA bundle and client certificate"):  # no client certificate
            await asyncio.wait_for(open_etcd_store(cluster.url, ca=cluster.ca_file, timeout_s=1.0), 10)


@pytest.mark.integration
def test_the_harness_starts_on_other_ports_when_one_was_taken_meanwhile(tmp_path: Path) -> None:
    """free_port() hands out a port another process may bind before etcd does (seen once in CI)."""
    import socket

    (tmp_path / "etcd").mkdir()
    cluster = EtcdCluster(tmp_path / "etcd")
    taken = cluster.members[0].client_port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        try:
            cluster.start()
            assert taken not in [m.client_port for m in cluster.members]
            assert all(cluster.healthy(i) for i in range(3))
        finally:
            cluster.close()

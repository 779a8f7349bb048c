"""The S3 gateway's composition (cloudless.gateway*), with fakes for the overlay and the membership and the real
object store over in-memory metadata and fake storage nodes: storage nodes from member statuses, scrub reports acted
on once, repair and status, the keyring following the store, the admin-key bootstrap, the overlay bookkeeping in
the coordinator's OverlayBook, and a real S3 server (plain HTTP here) observed by the metrics."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from broker.wire import NodeFacts, NodeStatus, OverlayReport, PeerEntry, Presence, RelayInfo
from cloudless.gateway import Gateway, GatewayConfig
from cloudless.gateway_keys import CredentialsUnreadable, ensure_admin_credentials
from cloudless.gateway_nodes import ScrubLedger, storage_nodes
from cloudless.gateway_overlay import PAIR_TTL_S, GatewayOverlay
from coordinator.membership import NodeInfo, NodeState
from coordinator.metrics import StorageMetrics
from coordinator.overlay import OverlayBook
from dataplane.objects.chunking import chunk_id
from dataplane.objects.model import AccessKey, ChunkRecord, StorageNode
from dataplane.objects.repair import ChunkState, plan_repair
from dataplane.objects.store import ObjectBackend
from dataplane.s3.errors import S3Error
from tests.dataplane.objects.fake_chunks import FakeChunkClient
from tests.dataplane.objects.memory_metadata import MemoryMetadata

MiB = 1024 * 1024


def member(node: str, *, quota: int | None = 100 * MiB, used: int = 0, zone: str = "", corrupt: Iterable[str] = (),
           state: NodeState = NodeState.ONLINE) -> NodeInfo:
    status = NodeStatus(node_id=node, presence=Presence.ONLINE, ts=1.0, facts=NodeFacts(zone=zone),
                        storage_quota_bytes=quota, storage_used_bytes=used, storage_chunks=0,
                        storage_corrupt=tuple(corrupt))
    return NodeInfo(node_id=node, state=state, status=status, first_seen=1.0, state_since=1.0)


def test_storage_nodes_from_member_statuses() -> None:
    members = {"a": member("a", zone="home", used=5), "b": member("b", state=NodeState.LOST),
               "c": member("c", quota=None), "d": member("d", state=NodeState.SUSPECT)}
    assert all(n.reliability == 1.0 for n in storage_nodes(members, 30.0))  # no history yet: never zero
    nodes = {n.node_id: n for n in storage_nodes(members, 100.0)}
    assert set(nodes) == {"a", "b", "d"}  # c reports no storage (an older agent, or none offered)
    assert nodes["a"] == StorageNode("a", "home", quota=100 * MiB, used=5, reliability=1.0, online=True)
    assert not nodes["b"].online and nodes["d"].online  # only a LOST node's copies stop counting
    assert nodes["a"].reachable and not nodes["d"].reachable  # dedup does not rely on a suspect node's copy (M4)
    assert nodes["b"].reliability == 0.0


def test_a_node_offering_no_storage_is_not_a_good_holder() -> None:
    """Review 4, H1: a node restarted with quota 0 (or whose chunk store failed to open) serves no chunks: its copies
    do not count, so repair re-replicates them instead of reporting the chunk at R."""
    members = {"a": member("a", zone="z1"), "b": member("b", zone="z2", quota=0), "c": member("c", zone="z3")}
    nodes = storage_nodes(members, 100.0)
    assert {n.node_id: n.online for n in nodes} == {"a": True, "b": False, "c": True}
    rec = ChunkRecord("ab" * 32, 1000, frozenset({"a", "b"}), frozenset(), touched=0.0)
    plan = plan_repair({rec.id: ChunkState(rec, 2)}, nodes, 0.0)
    assert plan.under_replicated == 1
    assert [(c.source, c.target) for c in plan.copies] == [("a", "c")]


def test_scrub_reports_are_news_once() -> None:
    ledger, cid = ScrubLedger(), chunk_id(b"x")
    assert ledger.news({"a": member("a", corrupt=[cid])}) == [("a", cid)]
    assert ledger.news({"a": member("a", corrupt=[cid])}) == []  # republished with every status: acted on once
    assert ledger.news({"a": member("a")}) == []
    assert ledger.news({"a": member("a", corrupt=[cid])}) == [("a", cid)]  # corrupt again after a re-store


@dataclass
class Fleet:
    """Members the gateway reads, fake storage nodes behind them, the real ObjectBackend over memory metadata."""

    members: dict[str, NodeInfo] = field(default_factory=dict)
    leading: bool = True

    def __post_init__(self) -> None:
        for n in ("n0", "n1", "n2"):
            self.members[n] = member(n, zone=f"z{n[-1]}")
        self.client = FakeChunkClient([StorageNode(n, quota=100 * MiB) for n in self.members])
        self.metadata = MemoryMetadata()
        self.gateway = Gateway(GatewayConfig(host="127.0.0.1", port=0, tick_s=0.05), self.metadata,
                               ObjectBackend(self.metadata, self.client, self.nodes, chunk_size=1024), self.client,
                               lambda: self.members, lambda: self.leading)

    def nodes(self) -> list[StorageNode]:
        return storage_nodes(self.members, 100.0)

    def lose(self, node: str) -> None:
        self.members[node] = replace(self.members[node], state=NodeState.LOST)
        self.client.nodes[node].down = True


async def _put(fleet: Fleet, key: str, body: bytes) -> None:
    staging = await fleet.gateway.backend.stage("b")
    assert not isinstance(staging, S3Error)
    await staging.write(body)
    from dataplane.s3.backend import ObjectInfo

    assert await staging.commit_object("b", ObjectInfo(key, len(body), "0" * 32, 0.0)) is None


async def test_repair_after_a_loss_shows_in_status() -> None:
    fleet = Fleet()
    await fleet.gateway.backend.create_bucket("b", 0.0)
    for i in range(5):
        await _put(fleet, f"k{i}", os.urandom(3000))
    victim = max(fleet.client.nodes, key=lambda n: len(fleet.client.nodes[n].chunks))
    fleet.lose(victim)
    report = await fleet.gateway.repair_now()
    status = fleet.gateway.status()
    assert report.copied > 0 and status["repair"]["copied"] == report.copied
    assert status["repair"]["copiedBytes"] == report.copied_bytes and status["repair"]["lastRun"] is not None
    assert status["chunks"] == report.chunks == 15 and status["underReplicated"] == report.plan.under_replicated
    assert status["unrecoverable"] == 0 and status["leader"] is True
    assert {r["node"]: r["online"] for r in status["nodes"]} == {"n0": True, "n1": True, "n2": True} | {
        victim: False}
    again = await fleet.gateway.repair_now()
    assert again.plan.empty and fleet.gateway.status()["underReplicated"] == 0


async def test_a_scrub_report_forgets_the_copy_and_repair_replaces_it() -> None:
    fleet = Fleet()
    await fleet.gateway.backend.create_bucket("b", 0.0)
    body = os.urandom(1000)
    await _put(fleet, "k", body)
    cid = chunk_id(body)
    holder = sorted(fleet.metadata.chunks[cid].holders)[0]
    del fleet.client.nodes[holder].chunks[cid]  # the node's scrub found it corrupt and deleted it
    fleet.members[holder] = member(holder, corrupt=[cid])
    assert await fleet.gateway.take_scrub_reports() == 1
    assert holder not in fleet.metadata.chunks[cid].holders and fleet.gateway.status()["scrub"]["reported"] == 1
    assert await fleet.gateway.take_scrub_reports() == 0  # the same report again: nothing new
    report = await fleet.gateway.repair_now()
    assert report.copied == 1 and len(fleet.metadata.chunks[cid].holders) == 2


async def test_a_follower_reads_scrub_reports_but_writes_no_metadata() -> None:
    """Review 4, L3: a follower keeps its ledger current without acting (the leader does), so it writes nothing
    and, once leading, does not treat the report agents still republish as news."""
    fleet = Fleet(leading=False)
    await fleet.gateway.backend.create_bucket("b", 0.0)
    body = os.urandom(1000)
    await _put(fleet, "k", body)
    cid = chunk_id(body)
    holder = sorted(fleet.metadata.chunks[cid].holders)[0]
    fleet.members[holder] = member(holder, corrupt=[cid])
    assert await fleet.gateway.take_scrub_reports() == 1
    assert holder in fleet.metadata.chunks[cid].holders and fleet.gateway.status()["scrub"]["reported"] == 0
    fleet.leading = True
    assert await fleet.gateway.take_scrub_reports() == 0  # an old report, already seen


async def test_the_keyring_follows_the_store_and_a_miss_asks_for_a_reload() -> None:
    fleet = Fleet()
    key = AccessKey("AKIDGATEWAY000000000", "gateway-secret-0123456789", "t", (("*", "admin"),))
    await fleet.gateway.keys_changed()
    assert fleet.gateway._secret(key.access_key) is None and fleet.gateway._keys_wanted
    await fleet.metadata.put_key(key)
    await fleet.gateway.keys_changed()
    assert fleet.gateway._secret(key.access_key) == key.secret


async def test_admin_credentials_are_made_once_and_kept(tmp_path: Path) -> None:
    meta, path = MemoryMetadata(), tmp_path / "cfg" / "storage.json"
    args = {"endpoint": "https://127.0.0.1:9000", "region": "us-east-1", "ca": tmp_path / "ca.pem"}
    assert await ensure_admin_credentials(meta, path, **args)  # type: ignore[arg-type]
    doc = json.loads(path.read_text())
    assert path.stat().st_mode & 0o777 == 0o600
    key = await meta.get_key(doc["accessKeyId"])
    assert key is not None and key.secret == doc["secretAccessKey"] and key.buckets == (("*", "admin"),)
    assert not await ensure_admin_credentials(meta, path, **args)  # type: ignore[arg-type]
    assert json.loads(path.read_text()) == doc
    await meta.delete_key(doc["accessKeyId"])  # a wiped store: a new key, the file follows
    assert await ensure_admin_credentials(meta, path, **args)  # type: ignore[arg-type]
    assert json.loads(path.read_text())["accessKeyId"] != doc["accessKeyId"]


async def test_an_unreadable_admin_credentials_file_fails_the_start_naming_it(tmp_path: Path) -> None:
    """Review 4, L5: a damaged file made a new admin key silently, the old one staying valid with no file naming it."""
    meta, path = MemoryMetadata(), tmp_path / "storage.json"
    args = {"endpoint": "https://127.0.0.1:9000", "region": "us-east-1", "ca": tmp_path / "ca.pem"}
    for content, why in (("{not json", "not JSON"), ('{"endpoint": "x"}', "field accessKeyId")):
        path.write_text(content)
        with pytest.raises(CredentialsUnreadable, match=why) as caught:
            await ensure_admin_credentials(meta, path, **args)  # type: ignore[arg-type]
        assert str(path) in str(caught.value)
    assert await meta.list_keys() == [] and path.read_text() == '{"endpoint": "x"}'


@dataclass
class FakeOverlay:
    identity: str = "s3@c1"
    applied: list[tuple[Any, ...]] = field(default_factory=list)
    candidates: int = 0

    def apply(self, relays: Any, peers: Any, revoked: Any) -> None:
        self.applied.append((relays, peers, revoked))

    def report(self, now: float) -> OverlayReport:
        return OverlayReport(node_id=self.identity, ts=now, enabled=True, port=4000 + self.candidates)

    async def stop(self) -> None:
        pass


def test_the_gateway_pairs_with_storage_nodes_and_feeds_the_book() -> None:
    relay = RelayInfo(relay_id="relay@x", addresses=("10.0.0.1:7000",))
    members = {"sa", "sb"}
    book = OverlayBook(relays=(relay,), present=lambda n: n in members)
    for n in members:
        book.on_report(OverlayReport(node_id=n, ts=0.0, enabled=True, port=1))
    woken: list[int] = []
    fake, cred = FakeOverlay(), _Cred("s3@c1")
    gw = GatewayOverlay(book=book, wake=lambda: woken.append(1), credential=lambda: cred,  # type: ignore[arg-type,return-value]
                        clock=lambda: 0.0, local_addresses=list)
    gw.overlay = fake  # type: ignore[assignment]  # started by hand: no UDP socket in a unit test
    book.local.add("s3@c1")  # what start() does
    assert gw.sync(10.0, ["sa", "sb"])
    assert book.peers_of("s3@c1") == ["sa", "sb"] and book.wants[("s3@c1", "sa")].until == 10.0 + PAIR_TTL_S
    (relays, peers, _revoked), = fake.applied
    assert relays == (relay,) and [p.node_id for p in peers] == ["sa", "sb"]
    assert all(isinstance(p, PeerEntry) and p.dial for p in peers)  # "s3@c1" sorts first: the gateway dials
    sa_peers = book.directory("sa")[1]
    assert [p.node_id for p in sa_peers] == ["s3@c1"] and not sa_peers[0].dial
    assert not book.wants_directory("s3@c1") and book.wants_directory("sa")  # none published for the gateway
    woken.clear()
    assert not gw.sync(11.0, ["sa", "sb"]) and len(fake.applied) == 1 and woken == []  # nothing new: no wake
    gw.sync(12.0, ["sa"])  # sb stopped offering storage: its pair lapses after the TTL
    book.expire(11.5 + PAIR_TTL_S)
    assert book.peers_of("s3@c1") == ["sa"]
    asyncio.run(gw.stop())
    assert book.peers_of("s3@c1") == [] and "s3@c1" not in book.reports and not book.local


def test_a_full_gateway_directory_keeps_the_storage_nodes() -> None:
    """Every node running workloads is paired with the gateway (s3.cloudless): past the directory's cap (1,024
    peers) the storage nodes come first, whatever their names sort as."""
    from coordinator.overlay import MAX_PEERS_PER_NODE

    workers = [f"n{i:04d}" for i in range(MAX_PEERS_PER_NODE + 10)]
    storage = {"zz-storage-1", "zz-storage-2"}
    book = OverlayBook()
    for n in [*workers, *storage]:
        book.on_report(OverlayReport(node_id=n, ts=0.0, enabled=True, port=1))
    book.set_derived({(w, "s3@c1"): "service s3.cloudless" for w in workers})
    for n in storage:
        book.want("s3@c1", n, until=100.0, why="object storage")
    capped = [p.node_id for p in book.directory("s3@c1")[1]]
    assert len(capped) == MAX_PEERS_PER_NODE and not storage & set(capped)  # what the plain directory would drop
    peers = [p.node_id for p in book.directory("s3@c1", first=storage)[1]]
    assert len(peers) == MAX_PEERS_PER_NODE and peers[:2] == sorted(storage)
    few = OverlayBook()
    few.on_report(OverlayReport(node_id="sa", ts=0.0, enabled=True, port=1))
    few.want("s3@c1", "sa", until=100.0, why="object storage")
    assert few.directory("s3@c1", first={"sa"}) == few.directory("s3@c1")


@dataclass(frozen=True)
class _Cred:
    identity: str


@pytest.fixture
async def served() -> AsyncIterator[tuple[Fleet, CollectorRegistry]]:
    fleet = Fleet()
    registry = CollectorRegistry()
    fleet.gateway.metrics = StorageMetrics(registry, fleet.gateway)
    await fleet.metadata.put_key(AccessKey("AKIDSERVED0000000000", "served-secret-0123456789", "t",
                                           (("*", "admin"),)))
    await fleet.gateway.start()
    yield fleet, registry
    await fleet.gateway.stop()


async def test_served_s3_requests_are_timed_per_operation(served: tuple[Fleet, CollectorRegistry]) -> None:
    import boto3
    from prometheus_client import generate_latest

    fleet, registry = served
    s3 = boto3.client("s3", endpoint_url=fleet.gateway.url, aws_access_key_id="AKIDSERVED0000000000",
                      aws_secret_access_key="served-secret-0123456789", region_name="us-east-1")

    def run() -> bytes:
        s3.create_bucket(Bucket="bkt")
        s3.put_object(Bucket="bkt", Key="k", Body=b"x" * 5000)
        return bytes(s3.get_object(Bucket="bkt", Key="k")["Body"].read())

    assert await asyncio.to_thread(run) == b"x" * 5000
    text = generate_latest(registry).decode()
    for op in ("CreateBucket", "PutObject", "GetObject"):
        assert f'cloudless_s3_request_duration_seconds_count{{operation="{op}"}} 1.0' in text
    assert 'cloudless_storage_chunks' in text and 'cloudless_storage_quota_bytes{node="n0",zone="z0"}' in text


async def test_buckets_made_for_rest_carry_their_r_or_refuse_a_bad_code() -> None:
    fleet = Fleet()
    assert await fleet.gateway.create_bucket("three", 0.0, replicas=3, erasure=None) is None
    bucket = await fleet.metadata.get_bucket("three")
    assert bucket is not None and bucket.replicas == 3 and bucket.erasure is None
    refused = await fleet.gateway.create_bucket("odd", 0.0, replicas=2, erasure="7+1")
    assert isinstance(refused, S3Error) and refused.code.value == "InvalidArgument"
    few = await fleet.gateway.create_bucket("ec", 0.0, replicas=2, erasure="4+2")  # 3 storage nodes, 6 needed
    assert isinstance(few, S3Error) and "6" in few.message and await fleet.metadata.get_bucket("ec") is None


async def _until(pred: Any, what: str, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_a_node_declared_lost_is_repaired_at_once_not_at_the_next_tick() -> None:
    fleet = Fleet()
    fleet.gateway.config = GatewayConfig(host="127.0.0.1", port=0, tick_s=3600.0)  # ticks far apart
    await fleet.gateway.backend.create_bucket("b", 0.0)
    for i in range(4):
        await _put(fleet, f"k{i}", os.urandom(2000))
    await fleet.gateway.start()
    try:
        await _until(lambda: fleet.gateway.status()["repair"]["lastRun"] is not None, "the first pass")
        assert fleet.gateway.status()["repair"]["copied"] == 0
        fleet.lose(max(fleet.client.nodes, key=lambda n: len(fleet.client.nodes[n].chunks)))
        await _until(lambda: fleet.gateway.status()["repair"]["copied"] > 0, "repair after the loss")
    finally:
        await fleet.gateway.stop()


async def test_a_follower_serves_but_neither_repairs_nor_collects() -> None:
    fleet = Fleet(leading=False)
    fleet.gateway.config = GatewayConfig(host="127.0.0.1", port=0, tick_s=0.05, status_every_s=0.0)
    await fleet.gateway.backend.create_bucket("b", 0.0)
    await _put(fleet, "k", os.urandom(2000))
    fleet.lose("n0" if fleet.client.nodes["n0"].chunks else "n1")
    await fleet.gateway.start()
    try:
        await _until(lambda: (fleet.gateway.status()["underReplicated"] or 0) > 0, "the follower's plan")
        status = fleet.gateway.status()
        assert status["leader"] is False and status["repair"]["lastRun"] is None and status["gc"]["lastRun"] is None
    finally:
        await fleet.gateway.stop()

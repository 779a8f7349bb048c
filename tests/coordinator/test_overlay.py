"""The coordinator's overlay: the pure book (pairs, directories, NAT classes, path events) and, through the real
engine and REST app over the in-memory broker, what nodes are sent and what people see."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from broker import wire
from broker.client import Message
from broker.wire import (
    CandidateKind,
    CommandName,
    CommandReply,
    CommandRequest,
    NodeStatus,
    OverlayCandidate,
    OverlayReport,
    PathKind,
    PeerDirectory,
    PeerPath,
    Presence,
    RelayInfo,
    topics,
)
from coordinator.overlay import (
    OverlayBook,
    direct_share,
    nat_class,
    pair,
    parse_relay,
    path_changes,
)
from tests.coordinator.rest_harness import AUTH, Rest, rest

RELAY = RelayInfo("relay@vps", ("203.0.113.1:7000",))
NOW = 1_800_000_000.0


def report(node: str, *, enabled: bool = True, reflexive: dict[str, str] | None = None, local: str = "",
           peers: tuple[PeerPath, ...] = (), relays: tuple[str, ...] = ("relay@vps",), **kw: Any) -> OverlayReport:
    cands = [OverlayCandidate(CandidateKind.LOCAL, local or f"192.168.1.{abs(hash(node)) % 200 + 2}:41641")]
    cands += [OverlayCandidate(CandidateKind.REFLEXIVE, addr, via=via) for via, addr in (reflexive or {}).items()]
    return OverlayReport(node_id=node, ts=NOW, enabled=enabled, candidates=tuple(cands) if enabled else (),
                         relays=relays if enabled else (), peers=peers, **kw)


# ---- the pure book -------------------------------------------------------------------------------------------------

def test_a_pair_is_unordered_and_never_a_node_with_itself() -> None:
    assert pair("b", "a") == pair("a", "b") == ("a", "b")
    with pytest.raises(ValueError, match="own peer"):
        pair("a", "a")


def test_kept_pairs_outlive_probes_and_probes_expire() -> None:
    book = OverlayBook()
    assert book.want("a", "b", until=NOW + 10, why="ping")
    assert not book.want("b", "a", until=NOW + 5, why="ping")  # a shorter probe does not shorten it
    assert book.wants[("a", "b")].until == NOW + 10
    book.want("a", "b", until=None, why="connect")  # kept from now on
    assert not book.want("a", "b", until=NOW + 60, why="ping")  # a probe never turns a kept pair into a probe's
    book.want("a", "c", until=NOW + 10, why="ping")
    assert book.expire(NOW + 10) == [("a", "c")]
    assert set(book.wants) == {("a", "b")}
    assert book.peers_of("a") == ["b"] and book.peers_of("b") == ["a"] and book.peers_of("c") == []


def test_the_directory_lists_wanted_peers_with_the_overlay_and_exactly_one_side_dials() -> None:
    book = OverlayBook(relays=(RELAY,), revoked=("aa", "bb"))
    for n in ("pi", "laptop", "phone"):
        book.on_report(report(n, enabled=n != "phone"))
    book.want("pi", "laptop", until=None, why="t")
    book.want("pi", "phone", until=None, why="t")
    relays, peers, revoked = book.directory("pi")
    assert relays == (RELAY,) and revoked == ("aa", "bb")
    assert [p.node_id for p in peers] == ["laptop"]  # the phone runs no overlay: not dialled for nothing
    assert peers[0].candidates == book.reports["laptop"].candidates and peers[0].relays == ("relay@vps",)
    (back,) = book.directory("laptop")[1]
    assert back.node_id == "pi"
    assert peers[0].dial != back.dial  # exactly one side opens the connection
    assert book.dial_side("pi", "laptop") == "laptop"  # the lexically smaller id
    assert book.wants_directory("phone")  # in a pair: it is told (relays; an empty peer list)
    assert book.peer_rows("pi")[-1] | {"error": "x"} == {
        "node": "pi", "peer": "phone", "path": "down", "relay": "", "address": "", "rttMs": None, "bytesIn": 0,
        "bytesOut": 0, "since": None, "changes": 0, "error": "x", "wanted": True}
    assert "phone runs no overlay" in str(book.peer_rows("pi")[-1]["error"])


def test_only_the_side_with_the_overlay_dials() -> None:
    book = OverlayBook()
    book.on_report(report("a", enabled=False))
    book.on_report(report("b"))
    assert book.dial_side("a", "b") == "b"


def test_a_report_says_when_peers_directories_must_change() -> None:
    book = OverlayBook()
    _, changed = book.on_report(report("a"))
    assert changed
    _, changed = book.on_report(report("a", peers=(PeerPath("b", PathKind.RELAYED, relay="relay@vps"),)))
    assert not changed  # only its paths moved: nobody else's directory changes
    _, changed = book.on_report(report("a", reflexive={"relay@vps": "198.51.100.9:1234"}))
    assert changed


@pytest.mark.parametrize(("reflexive", "local", "relays", "expected"), [
    ({}, "", ("relay@vps",), "udp-blocked"),
    ({}, "", (), "no-relay"),
    ({"relay@a": "192.168.1.5:41641"}, "192.168.1.5:41641", ("relay@a",), "public"),
    ({"relay@a": "203.0.113.9:41641"}, "", ("relay@a",), "nat-unknown"),
    ({"relay@a": "203.0.113.9:5000", "relay@b": "203.0.113.9:5000"}, "", ("relay@a", "relay@b"), "nat"),
    ({"relay@a": "203.0.113.9:5000", "relay@b": "203.0.113.9:6001"}, "", ("relay@a", "relay@b"), "nat-hard"),
])
def test_nat_class_from_candidates(reflexive: dict[str, str], local: str, relays: tuple[str, ...],
                                   expected: str) -> None:
    assert nat_class(report("n", reflexive=reflexive, local=local, relays=relays)) == expected
    assert nat_class(report("n", enabled=False)) == "no-overlay"


def test_path_changes_are_events_upgrades_normal_fallbacks_warnings() -> None:
    relayed = PeerPath("b", PathKind.RELAYED, relay="relay@vps")
    direct = PeerPath("b", PathKind.DIRECT, address="198.51.100.4:41641")
    connecting = PeerPath("b", PathKind.CONNECTING)
    assert path_changes(None, report("a", peers=(connecting,))) == []  # every connection's first step: not news
    (up,) = path_changes(report("a", peers=(relayed,)), report("a", peers=(direct,)))
    assert not up.warning and up.message == "a -> b: direct 198.51.100.4:41641 (was relayed via relay@vps)"
    (down,) = path_changes(report("a", peers=(direct,)), report("a", peers=(relayed,)))
    assert down.warning and "relayed via relay@vps" in down.message
    lost = PeerPath("b", PathKind.DOWN, last_error="handshake timed out")
    (gone,) = path_changes(report("a", peers=(relayed,)), report("a", peers=(lost,)))
    assert gone.warning and gone.message.endswith("handshake timed out")
    assert path_changes(report("a", peers=(direct,)), report("a", peers=(direct,))) == []
    (closed,) = path_changes(report("a", peers=(direct,)), report("a"))
    assert "connection closed" in closed.message


def test_direct_share_counts_live_paths_only() -> None:
    reports = [report("a", peers=(PeerPath("b", PathKind.DIRECT), PeerPath("c", PathKind.RELAYED),
                                  PeerPath("d", PathKind.DOWN), PeerPath("e", PathKind.LAN)))]
    assert direct_share(reports) == pytest.approx(2 / 3)
    assert direct_share([report("a")]) is None


@pytest.mark.parametrize("text", ["vps=1.2.3.4:7000", "relay@=1.2.3.4:7000", "relay@vps", "relay@vps=",
                                  "relay@vps=1.2.3.4", "relay@vps=1.2.3.4:0", "relay@vps=1.2.3.4:http"])
def test_a_bad_relay_flag_says_what_is_wrong(text: str) -> None:
    with pytest.raises(ValueError, match="--relay"):
        parse_relay(text)


def test_a_relay_flag_parses() -> None:
    assert parse_relay("relay@vps=203.0.113.1:7000,[2001:db8::1]:7000") == RelayInfo(
        "relay@vps", ("203.0.113.1:7000", "[2001:db8::1]:7000"))


# ---- the engine and the REST API over the in-memory broker -----------------------------------------------------------

async def _online(r: Rest, *nodes: str) -> None:
    node_bus = r.bus.client("nodes")
    await node_bus.start()
    for n in nodes:
        node_bus.publish_nowait(topics.node_status(n), wire.encode(NodeStatus(node_id=n, presence=Presence.ONLINE,
                                                                              ts=time.time())), qos=1, retain=True)
    await _until(lambda: all(n in r.coord.cluster.members for n in nodes), "nodes online")


async def _publish(r: Rest, msg: OverlayReport) -> None:
    r.bus.route(msg.node_id, topics.node_overlay(msg.node_id), wire.encode(msg), True)
    await asyncio.sleep(0.01)


async def _until(pred: Any, what: str, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := pred():
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _directory(r: Rest, node: str) -> PeerDirectory | None:
    payload = r.bus.retained.get(topics.node_peers(node))
    if not payload:
        return None
    msg = wire.decode_node_message(topics.node_peers(node), payload)
    assert isinstance(msg, PeerDirectory)
    return msg


async def test_connect_sends_both_nodes_their_directories_and_get_peers_shows_paths() -> None:
    async with rest() as r:
        r.coord.overlay.relays = (RELAY,)
        await _online(r, "pi", "laptop")
        await _publish(r, report("pi", reflexive={"relay@vps": "198.51.100.7:61000"}))
        await _publish(r, report("laptop"))
        first = await _until(lambda: _directory(r, "pi"), "pi's directory (relays only)")
        assert first.relays == (RELAY,) and first.peers == () and first.epoch == r.coord.epoch

        resp = await r.client.post("/v1/overlay/connect", json={"a": "pi", "b": "laptop"}, headers=AUTH)
        assert resp.status == 200, await resp.text()
        pi = await _until(lambda: (d := _directory(r, "pi")) and d.peers and d, "pi told about laptop")
        laptop = await _until(lambda: (d := _directory(r, "laptop")) and d.peers and d, "laptop told about pi")
        assert pi.generation > first.generation
        assert [p.node_id for p in pi.peers] == ["laptop"] and [p.node_id for p in laptop.peers] == ["pi"]
        assert laptop.peers[0].candidates == r.coord.overlay.reports["pi"].candidates
        assert pi.peers[0].dial is False and laptop.peers[0].dial is True

        # the nodes report their paths: people see them, and a change of path is an event
        await _publish(r, report("laptop", peers=(PeerPath("pi", PathKind.RELAYED, relay="relay@vps",
                                                           rtt_ms=30.0, bytes_out=10, since=NOW),)))
        await _publish(r, report("laptop", peers=(PeerPath("pi", PathKind.DIRECT, address="198.51.100.7:61000",
                                                           rtt_ms=2.5, bytes_out=4096, bytes_in=99, since=NOW),)))
        resp = await r.client.get("/v1/nodes/laptop/peers", headers=AUTH)
        (row,) = (await resp.json())["items"]
        assert row == {"node": "laptop", "peer": "pi", "path": "direct", "relay": "", "address": "198.51.100.7:61000",
                       "rttMs": 2.5, "bytesIn": 99, "bytesOut": 4096, "since": NOW, "changes": 0, "error": "",
                       "wanted": True}
        everyone = (await (await r.client.get("/v1/peers", headers=AUTH)).json())["items"]
        assert {(x["node"], x["peer"]) for x in everyone} == {("laptop", "pi"), ("pi", "laptop")}
        await r.coord.journal.flush()
        messages = [e.message for e in r.coord.journal.committed_events() if e.reason == "OverlayPath"]
        assert "laptop -> pi: direct 198.51.100.7:61000 (was relayed via relay@vps)" in messages

        summary = await (await r.client.get("/v1/overlay", headers=AUTH)).json()
        assert summary["relays"] == [{"id": "relay@vps", "addresses": ["203.0.113.1:7000"]}]
        assert {n["node"]: n["nat"] for n in summary["nodes"]} == {"pi": "nat-unknown", "laptop": "udp-blocked"}
        assert summary["kept"] == [{"a": "laptop", "b": "pi", "until": None, "why": "cloudless overlay connect"}]
        assert summary["directShare"] == 1.0

        metrics = await (await r.client.get("/metrics", headers=AUTH)).text()
        assert 'cloudless_overlay_paths{nat_pair="nat-unknown/udp-blocked",path="direct"} 1.0' in metrics
        assert "cloudless_overlay_direct_ratio 1.0" in metrics

        # kept across a restart of the coordinator: it is in the store
        assert any(k.startswith("/overlay/pairs/") for k in await _keys(r))
        resp = await r.client.post("/v1/overlay/disconnect", json={"a": "laptop", "b": "pi"}, headers=AUTH)
        assert (await resp.json())["was"] is True
        await _until(lambda: (d := _directory(r, "pi")) and not d.peers, "pi's peer list emptied")
        assert not any(k.startswith("/overlay/pairs/") for k in await _keys(r))


async def _keys(r: Rest) -> list[str]:
    await r.coord.journal.flush()
    return [e.key for e in await r.store.list("/overlay/")]


async def test_a_revocation_reaches_every_directory() -> None:
    async with rest() as r:
        await _online(r, "a", "b")
        await _publish(r, report("a"))
        await _publish(r, report("b"))
        await r.coord.overlay_ops.connect("a", "b")
        await _until(lambda: (d := _directory(r, "a")) and d.peers, "a's directory")
        await r.coord.ops.mark_revoked("b", ("1f2e",))
        a = await _until(lambda: (d := _directory(r, "a")) and d.revoked and d, "the revocation sent to a")
        assert a.revoked == ("1f2e",)


async def test_ping_asks_the_node_and_returns_its_answer() -> None:
    async with rest() as r:
        await _online(r, "a", "b")
        await _publish(r, report("a"))
        await _publish(r, report("b"))
        agent = r.bus.client("agent-a")
        await agent.start()
        asked: list[CommandRequest] = []

        def answer(m: Message) -> None:
            req = wire.decode(m.payload)
            assert isinstance(req, CommandRequest)
            asked.append(req)
            out = json.dumps({"peer": req.args["peer"], "path": "lan", "address": "192.168.1.9:41641",
                              "rtts_ms": [0.4, 0.5], "connect_ms": 12.0}).encode()
            agent.publish_nowait(req.reply_to, wire.encode(CommandReply(request_id=req.request_id, node_id="a",
                                                                        ok=True, ts=time.time(), output=out)), qos=1)
        await agent.subscribe(topics.node_cmd("a"), answer)
        resp = await r.client.post("/v1/overlay/ping", json={"from": "a", "to": "b", "count": 2}, headers=AUTH)
        assert resp.status == 200, await resp.text()
        assert await resp.json() == {"from": "a", "peer": "b", "path": "lan", "relay": "",
                                     "address": "192.168.1.9:41641", "rttsMs": [0.4, 0.5], "connectMs": 12.0,
                                     "error": ""}
        assert asked[0].command is CommandName.OVERLAY_PING and asked[0].args == {"peer": "b", "count": "2"}
        assert r.coord.overlay.wants[("a", "b")].until is not None  # wanted for a while, not kept


@pytest.mark.parametrize(("body", "field"), [
    ({"from": "a"}, "to"), ({"from": "a", "to": "b/c"}, "to"), ({"from": "a", "to": "b", "count": 0}, "count"),
    ({"from": "a", "to": "b", "count": True}, "count"), ({"from": "a", "to": "b", "x": 1}, "x"),
    ({"from": "a", "to": "b", "timeoutSeconds": 500}, "timeoutSeconds"), ({"from": "a", "to": "a"}, "to"),
])
async def test_a_bad_ping_request_is_a_400_naming_the_field(body: dict[str, object], field: str) -> None:
    async with rest() as r:
        await _online(r, "a", "b")
        resp = await r.client.post("/v1/overlay/ping", json=body, headers=AUTH)
        assert resp.status == 400
        assert (await resp.json())["error"]["field"] == field


async def test_ping_to_a_node_without_the_overlay_says_why() -> None:
    async with rest() as r:
        await _online(r, "a", "b")
        await _publish(r, report("a"))
        await _publish(r, OverlayReport(node_id="b", ts=NOW, enabled=False, disabled="aioquic is not installed"))
        resp = await r.client.post("/v1/overlay/ping", json={"from": "a", "to": "b"}, headers=AUTH)
        assert resp.status == 503
        assert "b runs no overlay: aioquic is not installed" in (await resp.json())["error"]["message"]
        resp = await r.client.post("/v1/overlay/connect", json={"a": "a", "b": "nobody"}, headers=AUTH)
        assert resp.status == 404


def test_the_peer_index_matches_the_pairs_through_every_change() -> None:
    import random

    rng = random.Random(7)
    book = OverlayBook()
    nodes = [f"n{i}" for i in range(8)]
    for step in range(600):
        a, b = rng.sample(nodes, 2)
        match rng.randrange(5):
            case 0 | 1:
                book.want(a, b, until=None if rng.random() < 0.5 else NOW + rng.randrange(10), why="t")
            case 2:
                book.unwant(a, b)
            case 3:
                book.expire(NOW + rng.randrange(10))
            case 4 if step % 50 == 0:
                book.forget_node(a)
            case _:
                book.set_wants(dict(book.wants))
        for n in nodes:
            assert book.peers_of(n) == sorted({y if x == n else x for x, y in book.wants if n in (x, y)}), step


def test_absent_nodes_are_left_out_of_directories_and_metrics() -> None:
    online = {"a", "b"}
    book = OverlayBook(present=lambda n: n in online)
    for n in ("a", "b", "c"):
        book.on_report(report(n, peers=(PeerPath("x", PathKind.DIRECT),)))
    book.want("a", "b", until=None, why="t")
    book.want("a", "c", until=None, why="t")
    assert [p.node_id for p in book.directory("a")[1]] == ["b"]  # c is offline (or revoked): not dialled
    assert sum(book.outcomes_by_nat_pair().values()) == 2
    online.discard("b")
    assert book.directory("a")[1] == ()


async def test_kept_pairs_survive_a_restart_and_deleting_a_node_forgets_them(tmp_path: Any) -> None:
    from coordinator.service import Coordinator, CoordinatorConfig
    from coordinator.store.sqlite import SqliteStore
    from tests.pair.fakebus import FakeBroker

    bus = FakeBroker()

    async def start() -> tuple[Coordinator, Any]:
        store = SqliteStore(str(tmp_path / "state.db"))
        coord = Coordinator(CoordinatorConfig(coordinator_id="t", tick_s=0.05), store=store,
                            mqtt=bus.client("coordinator@t"))  # type: ignore[arg-type]
        await coord.start()
        return coord, store

    coord, store = await start()
    nodes = bus.client("nodes")
    await nodes.start()
    for n in ("a", "b"):
        nodes.publish_nowait(topics.node_status(n), wire.encode(NodeStatus(node_id=n, presence=Presence.ONLINE,
                                                                           ts=time.time())), retain=True)
        nodes.publish_nowait(topics.node_overlay(n), wire.encode(report(n)), retain=True)
    await _until(lambda: {"a", "b"} <= set(coord.overlay.reports), "reports")
    await coord.overlay_ops.connect("a", "b")
    await coord.stop()
    await store.close()

    coord, store = await start()
    try:
        await _until(lambda: ("a", "b") in coord.overlay.wants, "the kept pair loaded from the store")
        assert coord.overlay.wants[("a", "b")].until is None
        await _until(lambda: coord.cluster.members.get("b") is not None, "b listed")
        nodes.publish_nowait(topics.node_status("b"), wire.encode(NodeStatus(node_id="b", presence=Presence.OFFLINE,
                                                                             ts=time.time())), retain=True)
        await _until(lambda: not coord.cluster.members["b"].online, "b offline")
        await _until(lambda: (d := _directory_of(bus, "a")) is not None and d.peers == (), "b left out while offline")
        await coord.ops.delete_node("b")
        await coord.journal.flush()
        assert ("a", "b") not in coord.overlay.wants and "b" not in coord.overlay.reports
        assert [e.key for e in await store.list("/overlay/")] == []
    finally:
        await coord.stop()
        await store.close()


def _directory_of(bus: Any, node: str) -> PeerDirectory | None:
    payload = bus.retained.get(topics.node_peers(node))
    if not payload:
        return None
    msg = wire.decode(payload)
    return msg if isinstance(msg, PeerDirectory) else None


def test_overlay_path_events_from_a_node_are_damped() -> None:
    from coordinator.damper import is_churn

    assert is_churn("OverlayPath") and is_churn("CrashLoopBackOff") and is_churn("ErrImagePull")
    assert not is_churn("Placed") and not is_churn("NodeDeleted")


def test_a_coordinators_member_dials_the_nodes_it_is_paired_with() -> None:
    """The S3 gateway (`s3@<id>`) keeps links to the storage nodes it dials; nodes reach it only on demand. With the
    smaller id dialling, a storage node named "pi" (< "s3@main") was the dialling side, never dialled, and its link
    to the gateway came only with the first chunk request and never back after a drop (review 6, M1)."""
    book = OverlayBook()
    for n in ("pi", "zz", "s3@main"):
        book.on_report(report(n))
    assert book.dial_side("pi", "s3@main") == "s3@main"
    assert book.dial_side("s3@main", "zz") == "s3@main"
    assert book.dial_side("pi", "zz") == "pi"  # two nodes: the smaller id, as before
    book.on_report(report("s3@main", enabled=False))
    assert book.dial_side("pi", "s3@main") == "pi"  # only the node runs the overlay


def test_an_on_demand_link_to_the_gateway_is_idle_not_down_and_its_churn_is_not_news() -> None:
    """A node reaches the coordinator's S3 gateway only while a workload uses it (review 6, L3): the wanted pair
    unreported is shown `idle`, and the link opening with a request and closing after is no event."""
    book = OverlayBook()
    for n in ("pi", "s3@main"):
        book.on_report(report(n))
    book.want("s3@main", "pi", until=None, why="object storage")
    (row,) = book.peer_rows("pi")
    assert row["path"] == "idle" and row["peer"] == "s3@main" and "on demand" in str(row["error"])
    relayed = PeerPath("s3@main", PathKind.RELAYED, relay="relay@vps")
    direct = PeerPath("s3@main", PathKind.DIRECT, address="198.51.100.4:41641")
    assert path_changes(report("pi"), report("pi", peers=(direct,))) == []  # opened for a request
    assert path_changes(report("pi", peers=(direct,)), report("pi")) == []  # idled out after it
    (fallback,) = path_changes(report("pi", peers=(direct,)), report("pi", peers=(relayed,)))
    assert fallback.warning  # a path change while in use still is
    book.want("pi", "zz", until=None, why="t")
    book.on_report(report("zz"))
    assert [r["path"] for r in book.peer_rows("pi") if r["peer"] == "zz"] == ["down"]  # two nodes: down

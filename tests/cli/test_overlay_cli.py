"""`cloudless overlay ping|connect|disconnect|status`, `get peers` and the peers section of `describe node`."""

from __future__ import annotations

import json

import pytest

from tests.cli.fake_coordinator import FakeCoordinator


def _peer(node: str, peer: str, path: str, **kw: object) -> dict[str, object]:
    row: dict[str, object] = {"node": node, "peer": peer, "path": path, "relay": "", "address": "", "rttMs": None,
                              "bytesIn": 0, "bytesOut": 0, "since": None, "changes": 0, "error": "", "wanted": True}
    row.update(kw)
    return row


@pytest.fixture
def overlay(fake: FakeCoordinator) -> FakeCoordinator:
    fake.add_node("pi-1")
    fake.add_node("laptop")
    fake.add_node("phone")
    now = fake.clock()
    fake.peers = [
        _peer("laptop", "pi-1", "direct", address="198.51.100.7:41641", rttMs=2.54, bytesOut=3 * 1024**2,
              bytesIn=1024, since=now - 90, changes=1),
        _peer("pi-1", "phone", "relayed", relay="relay@vps", rttMs=48.0, since=now - 30),
        _peer("pi-1", "laptop", "down", error="handshake timed out"),
    ]
    return fake


def test_get_peers_is_a_table_of_paths(overlay: FakeCoordinator, cli) -> None:
    r = cli("get", "peers")
    assert r.code == 0
    assert [line.split() for line in r.out.splitlines()] == [
        ["NODE", "PEER", "PATH", "VIA", "RTT", "OUT", "IN", "SINCE"],
        ["laptop", "pi-1", "direct", "-", "2.5ms", "3Mi", "1Ki", "90s"],
        ["pi-1", "phone", "relayed", "relay@vps", "48.0ms", "0", "0", "30s"],
        ["pi-1", "laptop", "down", "-", "-", "0", "0", "-"],
    ]
    wide = cli("get", "peers", "pi-1", "-o", "wide")
    assert overlay.requests[-1].path == "/v1/nodes/pi-1/peers"
    assert "handshake timed out" in wide.out and "laptop" in wide.out and "ADDRESS" in wide.out
    assert json.loads(cli("get", "peers", "-o", "json").out)["items"][0]["path"] == "direct"


def test_describe_node_shows_its_overlay_peers(overlay: FakeCoordinator, cli) -> None:
    out = cli("describe", "node", "pi-1").out
    section = out[out.index("Overlay peers (2)"):]
    assert "relay@vps" in section and "handshake timed out" in section


def test_overlay_ping_prints_the_path_and_round_trips(overlay: FakeCoordinator, cli) -> None:
    overlay.ping_answer = {"path": "lan", "address": "192.168.1.9:41641", "rttsMs": [0.9, 0.4, 0.6],
                           "connectMs": 15.2}
    r = cli("overlay", "ping", "pi-1", "laptop", "--count", "3")
    assert r.code == 0, r.err
    assert r.out.splitlines() == ["pi-1 -> laptop: lan 192.168.1.9:41641", "  connected in 15.2 ms",
                                  "  3 round trips: min 0.40 ms, median 0.60 ms, max 0.90 ms"]
    assert overlay.requests[-1].body == {"from": "pi-1", "to": "laptop", "count": 3, "timeoutSeconds": 30.0}
    assert "asking pi-1 to reach laptop" in r.err


def test_overlay_ping_without_a_round_trip_exits_1_and_says_why(overlay: FakeCoordinator, cli) -> None:
    overlay.ping_answer = {"path": "down", "error": "no relay in common and no direct path"}
    r = cli("overlay", "ping", "pi-1", "phone")
    assert r.code == 1
    assert "error: no relay in common and no direct path" in r.out


@pytest.mark.parametrize("argv", [("overlay", "ping", "pi-1", "pi-1"), ("overlay", "connect", "a/b", "pi-1"),
                                  ("overlay", "ping", "pi-1", "laptop", "--count", "0")])
def test_overlay_refuses_bad_arguments(overlay: FakeCoordinator, cli, argv: tuple[str, ...]) -> None:
    r = cli(*argv)
    assert r.code == 2
    assert not [q for q in overlay.requests if q.path.startswith("/v1/overlay")]


def test_overlay_connect_disconnect_and_status(overlay: FakeCoordinator, cli) -> None:
    assert "pi-1 <-> laptop: kept;" in cli("overlay", "connect", "pi-1", "laptop").out
    assert "(already)" in cli("overlay", "connect", "laptop", "pi-1").out
    status = cli("overlay", "status").out
    assert "Relays: relay@vps (203.0.113.1:7000)" in status and "Direct share: 50% of live paths" in status
    assert "nat-unknown" in status
    assert "no longer kept" in cli("overlay", "disconnect", "pi-1", "laptop").out
    assert "was not kept" in cli("overlay", "disconnect", "pi-1", "laptop").out
    assert cli("overlay", "connect", "pi-1", "ghost").code == 1

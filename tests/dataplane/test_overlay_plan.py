"""The overlay facade's decisions without sockets: back-off, relay choice, the directory as read, path names,
punch counters."""

from __future__ import annotations

import pytest

from broker.wire import CandidateKind as WireKind
from broker.wire import OverlayCandidate, PathKind, PeerEntry, RelayInfo
from dataplane.overlay_plan import (
    PathCounters,
    Retry,
    RetryPolicy,
    choose_relay,
    classify,
    parse_hostport,
    peer_local_addresses,
    read_directory,
    removed_peers,
)
from dataplane.paths import CandidateKind, Direct, PathChanged, Relay

T = 1_800_000_000.0


def test_retries_back_off_exponentially_up_to_a_bound() -> None:
    policy = RetryPolicy(initial_s=0.5, max_s=4.0)
    retry, delays = Retry(), []
    for _ in range(6):
        retry = retry.failed(T, "no answer", policy)
        delays.append(retry.not_before - T)
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert not retry.due(T + 3.9) and retry.due(T + 4.0) and retry.last_error == "no answer"


@pytest.mark.parametrize(("held", "peer_relays", "order", "chosen"), [
    (["relay@a", "relay@b"], ("relay@b",), ["relay@a", "relay@b"], "relay@b"),  # the one both hold
    (["relay@a", "relay@b"], ("relay@a", "relay@b"), ["relay@b", "relay@a"], "relay@b"),  # directory order
    (["relay@a"], ("relay@c",), ["relay@a", "relay@c"], "relay@a"),  # none shared: any held
    ([], ("relay@a",), ["relay@a"], None),  # none held
], ids=["shared", "ordered", "fallback", "none"])
def test_choose_relay(held: list[str], peer_relays: tuple[str, ...], order: list[str], chosen: str | None) -> None:
    assert choose_relay(held, PeerEntry(node_id="b", relays=peer_relays), order) == chosen


@pytest.mark.parametrize(("text", "addr"), [
    ("198.51.100.7:41641", ("198.51.100.7", 41641)), ("[2001:db8::1]:443", ("2001:db8::1", 443)),
    ("relay.example.org:3478", ("relay.example.org", 3478)), ("2001:db8::1:443", None), ("host", None),
    ("host:0", None), ("host:70000", None), (":80", None), ("host:x", None),
], ids=["v4", "v6", "name", "v6-unbracketed", "no-port", "port-0", "port-big", "no-host", "port-text"])
def test_parse_hostport(text: str, addr: tuple[str, int] | None) -> None:
    assert parse_hostport(text) == addr


def test_a_directory_is_read_leaving_out_and_naming_what_is_malformed() -> None:
    d = read_directory(
        [RelayInfo(relay_id="relay@a", addresses=("bad", "203.0.113.1:41641")),
         RelayInfo(relay_id="relay@b", addresses=("nope",))],
        [PeerEntry(node_id="b", dial=True), PeerEntry(node_id="c"), PeerEntry(node_id="me", dial=True)],
        ["1f", "zz"], me="me")
    assert d.relays == {"relay@a": (("203.0.113.1", 41641),)}
    assert set(d.peers) == {"b", "c"} and d.dial == {"b"}
    assert d.revoked == {0x1F}
    assert len(d.problems) == 5 and any("zz" in p for p in d.problems) and any("own peer" in p for p in d.problems)
    assert removed_peers(d, read_directory([], [PeerEntry(node_id="c")], [], me="me")) == {"b"}


@pytest.mark.parametrize(("path", "local", "named"), [
    (Relay("relay@a"), (), (PathKind.RELAYED, "relay@a", "")),
    (Direct(("192.168.1.5", 41641), CandidateKind.LAN), (), (PathKind.LAN, "", "192.168.1.5:41641")),
    (Direct(("192.168.1.5", 41641), CandidateKind.PEER_REFLEXIVE), [("192.168.1.5", 41641)],
     (PathKind.LAN, "", "192.168.1.5:41641")),  # one of the peer's own addresses, however it was found
    (Direct(("203.0.113.9", 5000), CandidateKind.REFLEXIVE), (), (PathKind.DIRECT, "", "203.0.113.9:5000")),
    (Direct(("2001:db8::9", 5000), CandidateKind.PEER_REFLEXIVE), (), (PathKind.DIRECT, "", "[2001:db8::9]:5000")),
], ids=["relayed", "lan", "lan-by-directory", "punched", "punched-v6"])
def test_classify(path: Relay | Direct, local: list[tuple[str, int]], named: tuple[PathKind, str, str]) -> None:
    assert classify(path, local) == named


def test_peer_local_addresses_come_from_its_local_candidates() -> None:
    entry = PeerEntry(node_id="b", candidates=(OverlayCandidate(WireKind.LOCAL, "10.0.0.2:41641"),
                                               OverlayCandidate(WireKind.REFLEXIVE, "203.0.113.9:1", via="relay@a"),
                                               OverlayCandidate(WireKind.LOCAL, "garbage")))
    assert peer_local_addresses(entry) == {("10.0.0.2", 41641)}


def test_punch_counters_follow_rounds_successes_and_fallbacks() -> None:
    c = PathCounters()
    relay, direct = Relay("relay@a"), Direct(("203.0.113.9", 5000), CandidateKind.REFLEXIVE)
    c.new_link("b")
    c.punching("b")
    c.punching("b")  # the same round: one attempt
    c.path_changed("b", PathChanged(relay, direct, "probe answered"))
    assert (c.attempts, c.successes, c.fallbacks) == (1, 1, 0)
    c.path_changed("b", PathChanged(direct, relay, "no answer"))
    c.punching("b")  # punching again after the fallback: a new attempt
    assert (c.attempts, c.successes, c.fallbacks) == (2, 1, 1)
    c.new_link("b")
    c.path_changed("b", PathChanged(relay, direct, "found before anyone looked"))  # counts its attempt
    assert (c.attempts, c.successes, c.changes["b"]) == (3, 2, 3)
    c.forget("b")
    assert "b" not in c.changes

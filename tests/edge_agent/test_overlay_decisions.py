"""The agent overlay's decisions without a network: when it runs, which directories apply (epoch fencing), what an
overlay-ping's args must be, and the reply's JSON as the coordinator reads it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.wire import OverlayPingResult, PathKind, PeerDirectory
from broker.wire.schema import compile_schema
from edge_agent.identity import NodeIdentity
from edge_agent.overlay import (
    NO_AIOQUIC,
    NO_CERTIFICATE,
    SWITCHED_OFF,
    OverlaySettings,
    consider_directory,
    ping_args,
    ping_output,
    why_not,
)

IDENT = NodeIdentity(directory=Path("/nonexistent"), node_id="pi", api_url="", broker_url="", not_before=0,
                     not_after=1)


@pytest.mark.parametrize(("enabled", "aioquic", "identity", "why"), [
    (True, True, IDENT, None),
    (False, True, IDENT, SWITCHED_OFF),
    (True, False, IDENT, NO_AIOQUIC),
    (True, True, None, NO_CERTIFICATE),
], ids=["runs", "switched-off", "no-aioquic", "password-only"])
def test_why_not(enabled: bool, aioquic: bool, identity: NodeIdentity | None, why: str | None) -> None:
    assert why_not(OverlaySettings(enabled=enabled), have_aioquic=aioquic, identity=identity) == why


def directory(epoch: int, generation: int) -> PeerDirectory:
    return PeerDirectory(node_id="pi", generation=generation, epoch=epoch, ts=1.0)


@pytest.mark.parametrize(("current", "max_epoch", "incoming", "applied"), [
    (None, 0, directory(1, 1), True),
    (directory(3, 5), 3, directory(3, 6), True),  # newer generation
    (directory(3, 5), 3, directory(3, 5), False),  # the retained replay after a reconnect
    (directory(3, 5), 3, directory(2, 50), False),  # a deposed leader
    (None, 7, directory(6, 1), False),  # fenced by the desired state's epoch too
    (directory(3, 5), 3, directory(4, 1), True),  # a new leader numbers afresh
], ids=["first", "newer", "replay", "stale-epoch", "fenced-by-desired", "new-leader"])
def test_consider_directory(current: PeerDirectory | None, max_epoch: int, incoming: PeerDirectory,
                            applied: bool) -> None:
    assert (consider_directory(current, max_epoch, incoming) is None) is applied


@pytest.mark.parametrize(("args", "parsed"), [
    ({"peer": "laptop", "count": "3"}, ("laptop", 3)),
    ({"peer": "laptop"}, ("laptop", 5)),
    ({"count": "3"}, "args.peer"),
    ({"peer": "a/b"}, "args.peer"),
    ({"peer": "laptop", "count": "x"}, "args.count"),
    ({"peer": "laptop", "count": "0"}, "args.count"),
    ({"peer": "laptop", "count": "101"}, "args.count"),
], ids=["ok", "default-count", "no-peer", "bad-peer", "count-text", "count-zero", "count-big"])
def test_ping_args(args: dict[str, str], parsed: tuple[str, int] | str) -> None:
    got = ping_args(args)
    assert got == parsed if isinstance(parsed, tuple) else (isinstance(got, str) and got.startswith(parsed))


def test_the_ping_reply_is_the_results_json() -> None:
    result = OverlayPingResult(peer="laptop", path=PathKind.LAN, address="10.0.0.2:41641", rtts_ms=(0.5, 0.7),
                               connect_ms=12.5)
    assert compile_schema(OverlayPingResult).from_plain(json.loads(ping_output(result))) == result

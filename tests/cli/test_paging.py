"""`cloudless get` against a real coordinator's REST app over real HTTP (issue 17): it follows `continue` to the
last page, prints a table page by page (the header once), passes --limit through, and -l/--selector, --state and
--zone filter on the server; a bad selector comes back as the server's error naming labelSelector."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from broker import wire
from broker.wire import NodeFacts, NodeStatus, Presence, topics
from coordinator.api import Api, serve
from coordinator.http import token_digest
from coordinator.service import Coordinator, CoordinatorConfig
from tests.cli.conftest import Result
from tests.coordinator.stores import FullDiskStore
from tests.pair.fakebus import FakeBroker

TOKEN = "paging-admin-token"
Cli = Callable[..., Result]
NODES = {f"pi-{i:02}": ("attic" if i % 3 == 0 else "cellar", {"tier": "edge" if i % 2 else "core"})
         for i in range(23)}


class LiveFleet:
    """A real Coordinator and Api served from an event loop in a thread; nodes join with real NodeStatus messages
    through the in-memory broker."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.url = ""

    def __enter__(self) -> LiveFleet:
        self.thread.start()
        self._run(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        self._run(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    async def _start(self) -> None:
        self.store = FullDiskStore()
        self.bus = FakeBroker()
        self.coord = Coordinator(CoordinatorConfig(coordinator_id="test"), store=self.store,
                                 mqtt=self.bus.client("coordinator@test"))  # type: ignore[arg-type]
        await self.coord.start()
        self.runner, port = await serve(Api(self.coord, token_digests={token_digest(TOKEN): ("a", "admin")}),
                                        "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        await self.runner.cleanup()
        await self.coord.stop()
        await self.store.close()

    def join(self, nodes: dict[str, tuple[str, dict[str, str]]], presence: Presence = Presence.ONLINE) -> None:
        async def go() -> None:
            client = self.bus.client(f"nodes-{time.monotonic_ns()}")
            await client.start()
            for node, (zone, labels) in nodes.items():
                facts = NodeFacts(arch="aarch64", os="linux", cpu_count=4, memory_bytes=2**32, runtime="podman",
                                  zone=zone, labels=labels)
                client.publish_nowait(topics.node_status(node), wire.encode(NodeStatus(
                    node_id=node, presence=presence, ts=time.time(), facts=facts)), retain=True)
            deadline = time.monotonic() + 20
            while not all(n in self.coord.cluster.members
                          and self.coord.cluster.members[n].state.value == presence.value for n in nodes):
                assert time.monotonic() < deadline, "nodes never arrived"
                await asyncio.sleep(0.02)
        self._run(go())


@pytest.fixture(scope="module")
def fleet() -> Iterator[LiveFleet]:
    with LiveFleet() as live:
        live.join(NODES)
        live.join({"gone-1": ("attic", {"tier": "edge"})}, presence=Presence.OFFLINE)
        yield live


@pytest.fixture
def live(fleet: LiveFleet, monkeypatch: pytest.MonkeyPatch) -> LiveFleet:
    monkeypatch.setenv("CLOUDLESS_SERVER", fleet.url)
    monkeypatch.setenv("CLOUDLESS_TOKEN", TOKEN)
    return fleet


def _ids(table: str) -> list[str]:
    return [line.split()[0] for line in table.splitlines() if line and not line.startswith("NODE")]


def test_get_nodes_follows_continue_to_the_last_page_printing_each(live: LiveFleet, cli: Cli) -> None:
    r = cli("get", "nodes", "--limit", "5")
    assert r.code == 0, r.err
    assert r.out.count("NODE") == 1, "one header for the whole list"
    assert _ids(r.out) == sorted([*NODES, "gone-1"])
    every = cli("get", "nodes")  # the server's default page holds them all
    assert _ids(every.out) == _ids(r.out)


def test_pages_after_the_first_line_up_with_it(live: LiveFleet, cli: Cli) -> None:
    """The first page holds gone-1 (NotReady, the widest status); pages of only Ready nodes keep its columns."""
    r = cli("get", "nodes", "--limit", "5")
    lines = r.out.splitlines()
    zone_at = lines[0].index("ZONE")
    assert len(lines) == len(NODES) + 2
    for line in lines[1:]:
        assert line[zone_at:].split()[0] in ("attic", "cellar"), line


def test_filters_run_on_the_coordinator(live: LiveFleet, cli: Cli) -> None:
    attic = sorted(n for n, (zone, _) in NODES.items() if zone == "attic")
    assert _ids(cli("get", "nodes", "--zone", "attic", "--state", "online", "--limit", "2").out) == attic
    assert _ids(cli("get", "nodes", "--state", "offline").out) == ["gone-1"]
    edge_attic = sorted(n for n, (z, lb) in NODES.items() if z == "attic" and lb["tier"] == "edge")
    assert _ids(cli("get", "nodes", "-l", "tier=edge", "--zone", "attic", "--state", "online").out) == edge_attic
    assert _ids(cli("get", "nodes", "--selector", "tier notin (edge)", "--limit", "3").out) == \
        sorted(n for n, (_, lb) in NODES.items() if lb["tier"] == "core")
    none = cli("get", "nodes", "--zone", "mars")
    assert none.code == 0 and none.out == "" and "No nodes found" in none.err


def test_json_is_one_document_with_progress_on_stderr(live: LiveFleet, cli: Cli) -> None:
    r = cli("get", "nodes", "-o", "json", "--limit", "10")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert [n["id"] for n in doc["items"]] == sorted([*NODES, "gone-1"])
    assert "... 10 nodes so far, 14 to go" in r.err and "... 20 nodes so far, 4 to go" in r.err


def test_a_bad_selector_is_the_servers_400_naming_it(live: LiveFleet, cli: Cli) -> None:
    r = cli("get", "nodes", "-l", "tier in (edge")
    assert r.code == 1
    assert "labelSelector" in r.err and "unbalanced" in r.err


def test_filters_on_kinds_that_have_none_are_usage_errors(live: LiveFleet, cli: Cli) -> None:
    assert cli("get", "services", "--state", "online").code == 2
    assert cli("get", "node", "pi-01", "--zone", "attic").code == 2
    assert cli("get", "nodes", "--limit", "0").code == 2


@pytest.mark.parametrize("flags", [("-l", "tier=edge"), ("--state", "online"), ("--zone", "attic")],
                         ids=["selector", "state", "zone"])
def test_event_filters_that_do_not_apply_are_usage_errors_not_ignored(live: LiveFleet, cli: Cli,
                                                                     flags: tuple[str, str]) -> None:
    r = cli("get", "events", *flags)
    assert r.code == 2, r.out
    assert flags[0].lstrip("-") in r.err or "selector" in r.err, r.err
    assert cli("get", "events", "--watch", *flags).code == 2
    assert cli("get", "events").code == 0


def test_help_names_the_paging_and_filter_flags(cli: Cli) -> None:
    text = cli("get", "--help").out
    for flag in ("--limit", "--selector", "--state", "--zone", "page"):
        assert flag in text, flag

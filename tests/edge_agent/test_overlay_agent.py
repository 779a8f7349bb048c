"""The agent's overlay against the real things: an embedded broker (its own process), a real relay, two real agents
(fake workload runtimes) with CA-issued node certificates. A PeerDirectory published on a node's peers topic makes
its agent attach to the relay and connect the peer; the OverlayReport appears retained with the peer's path; a
directory from a lower epoch is ignored; an overlay-ping command is answered with the result's JSON; an agent that
cannot run the overlay says why, retained, and runs on."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from broker import wire
from broker.client import Message, MqttClient
from broker.client_settings import MqttSettings
from broker.wire import (
    CommandName,
    CommandReply,
    CommandRequest,
    OverlayPingResult,
    OverlayReport,
    PathKind,
    PeerDirectory,
    PeerEntry,
    RelayInfo,
    topics,
)
from broker.wire.schema import compile_schema
from coordinator.pki import CertRole
from dataplane.relay import RelayServer
from edge_agent.agent import Agent
from edge_agent.beat import BeatPolicy
from edge_agent.config import AgentConfig, BrokerAddress
from edge_agent.gating import Gate
from edge_agent.identity import NodeIdentity
from edge_agent.overlay import NO_AIOQUIC, AgentOverlay, OverlaySettings
from edge_agent.runtime.fake import FakeRuntime
from firmware_profiles import load_profile
from tests.dataplane.pki_builders import DAY, issue
from tests.dataplane.test_quic import CA, credential
from tests.integration.conftest import BrokerUnderTest, make_auth

pytestmark = pytest.mark.integration
RELAY = "relay@vps"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerUnderTest]:
    b = BrokerUnderTest(kind="embedded", workdir=tmp_path)
    b.passwords = make_auth(tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
async def relay() -> AsyncIterator[RelayServer]:
    r = await RelayServer.open(credential(issue(CA, RELAY, role=CertRole.RELAY, now=time.time())), "127.0.0.1", 0,
                               clock=time.time)
    try:
        yield r
    finally:
        r.close()


def enrolled(tmp: Path, node_id: str) -> NodeIdentity:
    """The files enrolment leaves in DATA_DIR/identity, issued by the test CA."""
    now = time.time()
    cred = issue(CA, node_id, now=now)
    d = tmp / node_id / "identity"
    d.mkdir(parents=True)
    (d / "node.pem").write_bytes(cred.cert_pem)
    (d / "node.key").write_bytes(cred.key_pem)
    (d / "ca.pem").write_bytes(cred.ca_pem)
    return NodeIdentity(directory=d, node_id=node_id, api_url="", broker_url="", not_before=now - 60,
                        not_after=now + 30 * DAY)


def make_agent(tmp: Path, broker: BrokerUnderTest, node_id: str, *,
               aioquic_available: Callable[[], bool] = lambda: True) -> Agent:
    cfg = AgentConfig(broker=BrokerAddress(broker.host, broker.port, False), data_dir=tmp / node_id, node_id=node_id,
                      username=node_id, reconcile_interval_s=0.2, probe_tick_s=0.2, sensor_file=tmp / "sensors.json")
    ident = enrolled(tmp, node_id)
    mqtt = MqttClient(broker.settings(node_id))
    agent = Agent(cfg, runtime=FakeRuntime(node_id=node_id, clock=time.time), mqtt=mqtt,
                  gate=Gate(load_profile("vps"), cfg.sensor_file), profile_name="vps", heartbeat_interval_s=1.0,
                  identity=ident)
    # the agent's own overlay wiring, on loopback: any free port, 127.0.0.1 as the LAN address
    agent.overlay = AgentOverlay(node_id=node_id, mqtt=mqtt, clock=time.time, identity=lambda: agent.identity,
                                 settings=OverlaySettings(port=0, host="127.0.0.1"), max_epoch=lambda: agent.max_epoch,
                                 local_addresses=lambda: ["127.0.0.1"], aioquic_available=aioquic_available)
    return agent


class Coordinator:
    """What the coordinator does on the bus here: publish directories and commands, read reports and replies."""

    def __init__(self, broker: BrokerUnderTest) -> None:
        self.client = MqttClient(broker.settings("coordinator@test"))
        self.reports: dict[str, OverlayReport] = {}
        self.replies: dict[str, CommandReply] = {}

    async def __aenter__(self) -> Coordinator:
        await self.client.start()
        await self.client.subscribe(topics.node_channel_filter(topics.Channel.OVERLAY), self._on)
        await self.client.subscribe(topics.node_channel_filter(topics.Channel.REPLY), self._on)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.stop()

    def _on(self, m: Message) -> None:
        msg = wire.decode_node_message(m.topic, m.payload)
        if isinstance(msg, OverlayReport):
            self.reports[msg.node_id] = msg
        elif isinstance(msg, CommandReply):
            self.replies[msg.request_id] = msg

    async def directory(self, node: str, *, epoch: int, generation: int, peers: tuple[PeerEntry, ...],
                        relay: RelayServer) -> None:
        d = PeerDirectory(node_id=node, generation=generation, epoch=epoch, ts=time.time(),
                          relays=(RelayInfo(relay_id=RELAY, addresses=(f"127.0.0.1:{relay.address[1]}",)),),
                          peers=peers)
        await self.client.publish(topics.node_peers(node), wire.encode(d), qos=1, retain=True)

    async def command(self, node: str, rid: str, **args: str) -> CommandReply:
        req = CommandRequest(request_id=rid, node_id=node, command=CommandName.OVERLAY_PING,
                             reply_to=topics.node_reply(node), deadline=time.time() + 20, sent=time.time(), args=args)
        await self.client.publish(topics.node_cmd(node), wire.encode(req), qos=1)
        await until(lambda: rid in self.replies, f"the reply to {rid}", 25)
        return self.replies[rid]

    def peer(self, node: str, peer: str) -> wire.PeerPath | None:
        report = self.reports.get(node)
        return next((p for p in report.peers if p.node_id == peer), None) if report else None


async def until(pred: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def test_a_directory_connects_the_agents_and_the_report_shows_the_path(
        tmp_path: Path, broker: BrokerUnderTest, relay: RelayServer) -> None:
    a, b = make_agent(tmp_path, broker, "A"), make_agent(tmp_path, broker, "B")
    async with Coordinator(broker) as coord:
        await a.start()
        await b.start()
        try:
            await until(lambda: (r := coord.reports.get("A")) is not None and r.enabled and r.port > 0,
                        "A's first report: enabled, with its port")
            await coord.directory("A", epoch=5, generation=1, relay=relay,
                                  peers=(PeerEntry(node_id="B", relays=(RELAY,), dial=True),))
            await coord.directory("B", epoch=5, generation=1, relay=relay, peers=(PeerEntry(node_id="A"),))
            await until(lambda: set(relay.sessions) == {"A", "B"}, "both agents attached to the relay")
            await until(lambda: (p := coord.peer("A", "B")) is not None
                        and p.path in (PathKind.RELAYED, PathKind.LAN) and p.bytes_out > 0,
                        "A's retained report shows its connection to B")
            assert coord.reports["A"].relays == (RELAY,)
            assert a.overlay.overlay is not None and a.overlay.overlay.endpoint is not None
            assert a.overlay.overlay.endpoint.peers["B"].identity.identity == "B"  # type: ignore[union-attr]
            await until(lambda: (p := coord.peer("B", "A")) is not None and p.path is not PathKind.DOWN,
                        "B reports A, which dialled it")

            # overlay-ping, as `cloudless overlay ping` sends it
            reply = await coord.command("A", "ping-1", peer="B", count="3")
            assert reply.ok, reply.error
            result = compile_schema(OverlayPingResult).from_plain(json.loads(reply.output))
            assert result.peer == "B" and len(result.rtts_ms) == 3 and result.error == ""
            assert result.path in (PathKind.RELAYED, PathKind.LAN)
            bad = await coord.command("A", "ping-2", peer="B", count="lots")
            assert not bad.ok and "args.count" in bad.error
            bad = await coord.command("A", "ping-3", peer="no/such", count="1")
            assert not bad.ok and "args.peer" in bad.error

            # a directory from a lower epoch (a deposed leader) is ignored: B stays connected
            await coord.directory("A", epoch=4, generation=99, relay=relay, peers=())
            await asyncio.sleep(1.5)
            assert a.overlay.directory is not None and a.overlay.directory.generation == 1
            assert a.overlay.overlay._connected("B") is not None
            # ... and the same from the current epoch is applied: B is dropped, and the report says so
            await coord.directory("A", epoch=5, generation=2, relay=relay, peers=())
            await until(lambda: coord.reports["A"].peers == () and a.overlay.overlay._connected("B") is None,  # type: ignore[union-attr]
                        "B dropped from A's overlay and report")
        finally:
            await a.stop()
            await b.stop()
    assert a.overlay.overlay is None  # stopped with the agent


async def test_an_agent_without_aioquic_reports_why_and_runs_on(tmp_path: Path, broker: BrokerUnderTest) -> None:
    c = make_agent(tmp_path, broker, "C", aioquic_available=lambda: False)
    async with Coordinator(broker) as coord:
        await c.start()
        try:
            await until(lambda: "C" in coord.reports, "C's report")
            report = coord.reports["C"]
            assert not report.enabled and report.disabled == NO_AIOQUIC and report.peers == ()
            reply = await coord.command("C", "ping-c", peer="A", count="1")
            assert not reply.ok and "aioquic is not installed" in reply.error
            await until(lambda: c.reconciles > 0, "the agent reconciles anyway")
        finally:
            await c.stop()


@pytest.mark.parametrize(("beat", "refresh"), [
    pytest.param(None, 60.0, id="no-policy: every heartbeat interval, report at least a minute apart"),
    pytest.param(BeatPolicy(min_interval_s=10.0, max_interval_s=300.0), 300.0, id="default-profile"),
    pytest.param(BeatPolicy(min_interval_s=60.0, max_interval_s=7200.0), 7200.0, id="metered-profile"),
])
def test_an_unchanged_overlay_report_goes_out_no_more_often_than_the_heartbeat_maximum(
        tmp_path: Path, beat: BeatPolicy | None, refresh: float) -> None:
    """docs/control-link.md: a report a minute was 0.65 MiB/day on its own, more than the metered profile's month."""
    cfg = AgentConfig(broker=BrokerAddress("127.0.0.1", 1, False), data_dir=tmp_path / "n1", node_id="n1",
                      username="n1", sensor_file=tmp_path / "sensors.json")
    mqtt = MqttClient(MqttSettings(host="127.0.0.1", port=1, client_id="n1"))  # never started
    agent = Agent(cfg, runtime=FakeRuntime(node_id="n1", clock=time.time), mqtt=mqtt,
                  gate=Gate(load_profile("vps"), cfg.sensor_file), profile_name="vps", heartbeat_interval_s=1.0,
                  beat=beat)
    assert agent.overlay.settings.refresh_s == refresh

"""The overlay facade on loopback: a real relay and two real Overlays with CA-issued certificates. A directory makes
them attach and connect; streams reach services by name (an unknown one refused with a reason), datagrams reach
their handlers, ping measures round trips and names the path, a revocation in the directory cuts the live
connection at once, and the report says all of it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from broker import wire
from broker.wire import CandidateKind, OverlayPingResult, PathKind, PeerEntry, RelayInfo
from broker.wire.schema import compile_schema
from coordinator.pki import CertRole
from dataplane.overlay import ECHO, MAX_DATAGRAM, Overlay, ServiceRefused
from dataplane.overlay_plan import RetryPolicy, service_header
from dataplane.paths import Timers
from dataplane.quic import NodeCredential
from dataplane.relay import RelayServer
from tests.dataplane.pki_builders import issue
from tests.dataplane.test_quic import CA, credential

RELAY = "relay@vps"
FAST = RetryPolicy(initial_s=0.1, max_s=0.5)


async def until(pred: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Net:
    relay: RelayServer
    pi: Overlay
    laptop: Overlay
    laptop_serial: int

    def relays(self) -> tuple[RelayInfo, ...]:
        return (RelayInfo(relay_id=RELAY, addresses=("127.0.0.1:1", f"127.0.0.1:{self.relay.address[1]}")),)

    def connect(self, revoked: tuple[str, ...] = ()) -> None:
        """The directories a coordinator would publish: pi dials laptop, both hold the relay."""
        self.pi.apply(self.relays(), (PeerEntry(node_id="laptop", relays=(RELAY,), dial=True),), revoked)
        self.laptop.apply(self.relays(), (PeerEntry(node_id="pi", relays=(RELAY,)),), ())


async def make_net(*, direct: bool, idle_timeout_s: float = 30.0, eager: Callable[[str], bool] | None = None,
                   laptop_eager: Callable[[str], bool] | None = None) -> Net:
    relay = await RelayServer.open(credential(issue(CA, RELAY, role=CertRole.RELAY, now=time.time())),
                                   "127.0.0.1", 0, clock=time.time)
    laptop_cred = issue(CA, "laptop", now=time.time())
    overlays = []
    for cred, pred in ((credential(issue(CA, "pi", now=time.time())), eager),
                       (credential(laptop_cred), laptop_eager or eager)):
        overlay = Overlay(cred, clock=time.time, local_addresses=lambda: ["127.0.0.1"], direct=direct,
                          retry=FAST, tick_s=0.05, relay_udp_timeout_s=0.5, connect_timeout_s=3.0,
                          timers=Timers(probe_interval_s=0.1), idle_timeout_s=idle_timeout_s, eager=pred)
        await overlay.start("127.0.0.1", 0)
        overlays.append(overlay)
    return Net(relay, overlays[0], overlays[1], laptop_cred.cert.serial_number)


@pytest.fixture
async def net() -> AsyncIterator[Net]:
    """Relayed only (no direct paths): what every connection starts as."""
    n = await make_net(direct=False)
    try:
        yield n
    finally:
        await n.pi.stop()
        await n.laptop.stop()
        n.relay.close()


async def connected(n: Net) -> None:
    n.connect()
    await until(lambda: n.pi._connected("laptop") is not None and n.laptop._connected("pi") is not None,
                "pi connected to laptop through the relay")


async def test_a_directory_attaches_the_relay_and_connects_the_peer_it_dials(net: Net) -> None:
    net.connect()
    await until(lambda: RELAY in net.pi.endpoint.relays and RELAY in net.laptop.endpoint.relays,  # type: ignore[union-attr]
                "both attached (the first address answers nothing: the second is tried)")
    await until(lambda: net.pi._connected("laptop") is not None, "pi dialled laptop")
    # the dialled side learns the peer when its own end of the handshake completes (a moment later, on a busy host)
    await until(lambda: "pi" in net.laptop.endpoint.peers, "laptop accepted pi")  # type: ignore[union-attr]
    assert set(net.relay.sessions) == {"pi", "laptop"}
    assert net.laptop.endpoint.peers["pi"].identity.identity == "pi"  # type: ignore[union-attr]


async def test_streams_reach_services_by_name_and_an_unknown_one_is_refused_with_a_reason(net: Net) -> None:
    async def shout(node: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"{node}:".encode() + (await reader.read()).upper())

    net.laptop.serve("shout", shout)
    await connected(net)
    reader, writer = await net.pi.open_stream("laptop", "shout")
    writer.write(b"hello")
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 5) == b"pi:HELLO"  # the handler learns who called
    with pytest.raises(ServiceRefused, match="no service 'nothing' on laptop"):
        await net.pi.open_stream("laptop", "nothing")
    with pytest.raises(ValueError, match="service name"):
        await net.pi.open_stream("laptop", "a/b")
    # a peer that sends a malformed header itself (not through open_stream) is refused, and nothing breaks
    peer = net.pi.endpoint.peers["laptop"]  # type: ignore[union-attr]
    raw_reader, raw_writer = await peer.open_stream()
    raw_writer.write(b"\x03a/b")
    answer = await asyncio.wait_for(raw_reader.read(), 5)
    assert answer[0] == 1 and b"service name" in answer
    reader, writer = await net.pi.open_stream("laptop", ECHO)
    writer.write(b"still fine")
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 5) == b"still fine"


async def test_datagrams_reach_the_service_handler(net: Net) -> None:
    got: list[tuple[str, bytes]] = []
    net.laptop.on_datagram("dns", lambda node, data: got.append((node, data)))
    assert not net.pi.send_datagram("laptop", "dns", b"q")  # not connected yet: refused, not queued
    await connected(net)
    for i in range(5):
        assert net.pi.send_datagram("laptop", "dns", bytes([i]) * MAX_DATAGRAM)
    assert net.pi.send_datagram("laptop", "nobody", b"x")
    await until(lambda: len(got) == 5, "five datagrams delivered")
    assert got[0] == ("pi", b"\x00" * MAX_DATAGRAM)
    await until(lambda: net.laptop.datagrams_dropped == 1, "the one for no service counted")
    with pytest.raises(ValueError, match="at most"):
        net.pi.send_datagram("laptop", "dns", b"x" * (MAX_DATAGRAM + 1))
    assert net.pi.send_datagram("laptop", "dns", b"after")  # the queue was not blocked by the refused one
    await until(lambda: got[-1] == ("pi", b"after"), "a later datagram delivered")


async def test_ping_measures_round_trips_through_the_relay(net: Net) -> None:
    net.connect()
    result = await net.pi.ping("laptop", 3)
    assert result.error == "" and len(result.rtts_ms) == 3 and all(r > 0 for r in result.rtts_ms)
    assert (result.path, result.relay, result.address) == (PathKind.RELAYED, RELAY, "")
    assert result.connect_ms is not None
    schema = compile_schema(OverlayPingResult)  # the agent answers its JSON; the coordinator reads it this way
    assert schema.from_plain(json.loads(json.dumps(schema.to_plain(result, omit_defaults=False)))) == result
    unknown = await net.pi.ping("stranger", 1, timeout_s=2)
    assert unknown.path is PathKind.DOWN and unknown.rtts_ms == () and unknown.error


async def test_a_revocation_in_the_directory_cuts_the_live_connection_at_once(net: Net) -> None:
    await connected(net)
    live = net.pi.endpoint.peers["laptop"]  # type: ignore[union-attr]
    other_side = net.laptop.endpoint.peers["pi"]  # type: ignore[union-attr]
    net.connect(revoked=(f"{net.laptop_serial:x}",))
    assert live.quic._state.name in ("CLOSING", "DRAINING", "TERMINATED")  # cut within apply(), not later
    await asyncio.wait_for(other_side.closed.wait(), 5)  # and laptop heard it
    # reconnecting is refused too, and the report says why
    await until(lambda: (p := _peer(net.pi, "laptop")) is not None and "revoked" in p.last_error,
                "the retry refused as revoked")
    assert _peer(net.pi, "laptop").path is PathKind.DOWN  # type: ignore[union-attr]


async def test_the_report_names_candidates_relays_and_the_peer_path(net: Net) -> None:
    await connected(net)
    await net.pi.ping("laptop", 2)
    await until(lambda: RELAY in net.pi.endpoint.reflexive, "the relay told pi its address")  # type: ignore[union-attr]
    report = net.pi.report(time.time())
    port = net.pi.port
    assert report.enabled and report.port == port and report.node_id == "pi"
    kinds = {(c.kind, c.address, c.via) for c in report.candidates}
    assert (CandidateKind.LOCAL, f"127.0.0.1:{port}", "") in kinds
    assert (CandidateKind.REFLEXIVE, f"127.0.0.1:{port}", RELAY) in kinds
    assert (CandidateKind.RELAY, f"127.0.0.1:{net.relay.address[1]}", RELAY) in kinds
    assert report.relays == (RELAY,)
    (laptop,) = report.peers
    assert (laptop.node_id, laptop.path, laptop.relay) == ("laptop", PathKind.RELAYED, RELAY)
    assert laptop.bytes_out > 0 and laptop.bytes_in > 0 and laptop.since is not None and laptop.rtt_ms is not None
    assert report.relay_bytes >= laptop.bytes_out + laptop.bytes_in
    wire.decode(wire.encode(report))  # within the wire's limits


async def test_a_dropped_relay_link_and_peer_connection_come_back(net: Net) -> None:
    await connected(net)
    first = net.pi.endpoint.relays[RELAY]  # type: ignore[union-attr]
    net.relay.sessions["pi"].close("relay restarting")
    await until(lambda: (link := net.pi.endpoint.relays.get(RELAY)) is not None and link is not first,  # type: ignore[union-attr]
                "pi attached again")
    peer = net.pi.endpoint.peers["laptop"]  # type: ignore[union-attr]
    peer.close("gone")
    await until(lambda: (p := net.pi._connected("laptop")) is not None and p is not peer, "pi dialled laptop again")
    assert (await net.pi.ping("laptop", 1)).error == ""


async def test_a_peer_no_longer_listed_is_disconnected(net: Net) -> None:
    await connected(net)
    peer = net.pi.endpoint.peers["laptop"]  # type: ignore[union-attr]
    net.pi.apply(net.relays(), (), ())
    await until(peer.closed.is_set, "the connection closed")
    await asyncio.sleep(0.3)  # several rounds: not dialled again
    assert net.pi._connected("laptop") is None and net.pi.report(time.time()).peers == ()


async def test_a_lan_path_is_found_and_named() -> None:
    n = await make_net(direct=True)
    try:
        await connected(n)
        await until(lambda: (p := _peer(n.pi, "laptop")) is not None and p.path is PathKind.LAN, "a LAN path")
        result = await n.pi.ping("laptop", 2)
        assert (result.path, result.address) == (PathKind.LAN, f"127.0.0.1:{n.laptop.port}")
        report = n.pi.report(time.time())
        assert report.punch_attempts >= 1 and report.punch_successes >= 1
        assert report.peers[0].changes >= 1
    finally:
        await n.pi.stop()
        await n.laptop.stop()
        n.relay.close()


async def test_a_renewed_credential_is_used_for_new_connections(net: Net) -> None:
    renewed = credential(issue(CA, "pi", now=time.time()))
    net.pi.set_credential(renewed)
    await connected(net)
    assert net.relay.sessions["pi"].identity.serial == _serial(renewed)  # type: ignore[union-attr]
    assert net.laptop.endpoint.peers["pi"].identity.serial == _serial(renewed)  # type: ignore[union-attr]


def test_a_bad_service_name_is_refused_before_anything_is_sent() -> None:
    assert service_header("echo") == b"\x04echo"
    for bad in ("", "a/b", "x" * 64, "-lead"):
        with pytest.raises(ValueError):
            service_header(bad)


def _peer(overlay: Overlay, node: str) -> wire.PeerPath | None:
    return next((p for p in overlay.report(time.time()).peers if p.node_id == node), None)


def _serial(cred: NodeCredential) -> int:
    from cryptography import x509

    return x509.load_pem_x509_certificate(cred.cert_pem).serial_number


IDLE_S = 2.0  # the QUIC idle timeout of the on-demand tests (PINGs every IDLE_S / 3 keep a link alive)


@asynccontextmanager
async def on_demand_net(pi_eager: bool, laptop_eager: bool, *, laptop_dials: bool = False) -> AsyncIterator[Net]:
    """pi and laptop, each with its own `eager` verdict on the other; the directory says who dials."""
    n = await make_net(direct=False, idle_timeout_s=IDLE_S, eager=lambda _p: pi_eager,
                       laptop_eager=lambda _p: laptop_eager)
    try:
        n.pi.apply(n.relays(), (PeerEntry(node_id="laptop", relays=(RELAY,), dial=not laptop_dials),), ())
        n.laptop.apply(n.relays(), (PeerEntry(node_id="pi", relays=(RELAY,), dial=laptop_dials),), ())
        await until(lambda: RELAY in n.pi.endpoint.relays and RELAY in n.laptop.endpoint.relays,  # type: ignore[union-attr]
                    "both attached")
        yield n
    finally:
        await n.pi.stop()
        await n.laptop.stop()
        n.relay.close()


async def echo(n: Net, data: bytes) -> bytes:
    reader, writer = await n.pi.open_stream("laptop", ECHO)
    writer.write(data)
    writer.write_eof()
    return await asyncio.wait_for(reader.read(), 5)


async def test_a_peer_reached_on_demand_connects_on_use_and_idles_out_unpinged() -> None:
    """A peer the `eager` predicate leaves out on both sides (a workload node and the coordinator's S3 gateway) is
    neither dialled nor reported until a stream needs it, and its connection ends one idle timeout after its last
    use: no keep-alive traffic for a service nobody uses. It comes back on the next use."""
    async with on_demand_net(False, False) as n:
        for _ in range(20):  # twenty rounds of the loop: an eager peer is dialled in the first
            await asyncio.sleep(0.05)
        assert n.pi._connected("laptop") is None, "an on-demand peer is not dialled"
        assert [p.node_id for p in n.pi.report(time.time()).peers] == [], "nor reported down while idle"
        assert await echo(n, b"used") == b"used"
        assert [p.node_id for p in n.pi.report(time.time()).peers] == ["laptop"]
        await until(lambda: n.pi._connected("laptop") is None, "the unused connection idled out", 10 * IDLE_S)
        assert await echo(n, b"again") == b"again"


async def test_an_eager_side_dials_and_keeps_the_link_the_other_side_reaches_on_demand() -> None:
    """The gateway (eager toward a storage node, dialling it) and the storage node (on demand toward the gateway):
    the gateway's side connects at once and its PINGs keep the link past the idle timeout (review 6, M1)."""
    async with on_demand_net(False, True, laptop_dials=True) as n:
        await until(lambda: n.laptop._connected("pi") is not None, "the eager side dialled")
        link = n.laptop._connected("pi")
        await asyncio.sleep(2 * IDLE_S)
        assert n.laptop._connected("pi") is link, "kept alive by the eager side's PINGs alone"
        assert await echo(n, b"on the kept link") == b"on the kept link"


async def test_an_on_demand_link_with_a_silent_open_stream_is_kept_until_the_stream_ends() -> None:
    """A request whose answer takes longer than the idle timeout (a large CopyObject through s3.cloudless) must not
    lose its connection: a peer reached on demand is pinged while a stream to it is open (review 6, M2)."""
    release = asyncio.Event()

    async def slow(node: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.read()
        await release.wait()  # silent on the wire: no byte either way meanwhile
        writer.write(request.upper())
        writer.write_eof()

    async with on_demand_net(False, False) as n:
        n.laptop.serve("slow", slow)
        reader, writer = await n.pi.open_stream("laptop", "slow")
        writer.write(b"copy")
        writer.write_eof()
        await asyncio.sleep(2 * IDLE_S)  # past the idle timeout with nothing sent
        release.set()
        assert await asyncio.wait_for(reader.read(), 5) == b"COPY"
        await until(lambda: n.pi._connected("laptop") is None, "idled out once the stream ended", 10 * IDLE_S)

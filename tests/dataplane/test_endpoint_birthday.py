"""The endpoint's extra sockets (birthday punching), on loopback with real sockets: what arrives on one is validated
like the main socket's traffic (forgeries and another link's probes dropped and counted), an authentic probe is answered
from that socket and binds the peer's address to it, the path found through it sends through it, and the attempt's end
closes every other extra socket; the path's death closes the last one."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest

from dataplane import frames
from dataplane.birthday import BirthdayConfig
from dataplane.endpoint import Endpoint, Link
from dataplane.paths import Direct, PathState, Relay, Timers
from tests.dataplane.test_quic import node

PEER_KEY = bytes(range(16))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def setup() -> AsyncIterator[tuple[Endpoint, Link, socket.socket, FakeClock]]:
    clock = FakeClock()
    endpoint = await Endpoint.open(node("pi"), "127.0.0.1", 0, clock=clock, birthday=BirthdayConfig(sockets=4))
    link = Link("laptop", PathState(relay="vps", now=clock.now, timers=Timers()), peer_key=PEER_KEY)
    endpoint.links["laptop"] = link
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the peer's NAT mapping, as a plain socket
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(5)
    try:
        yield endpoint, link, peer, clock
    finally:
        peer.close()
        endpoint.close()


async def receive(sock: socket.socket) -> tuple[frames.Probe, tuple[str, int]]:
    data, addr = await asyncio.get_running_loop().run_in_executor(None, sock.recvfrom, 2048)
    return frames.decode_probe(data), addr


async def settle() -> None:
    for _ in range(20):  # let the event loop read what was sent on loopback
        await asyncio.sleep(0.01)


async def test_an_extra_socket_validates_answers_binds_and_carries_the_path(
        setup: tuple[Endpoint, Link, socket.socket, FakeClock]) -> None:
    endpoint, link, peer, clock = setup
    endpoint._open_extra(link, 4, clock.now)
    assert len(link.sockets) == 4
    extra_id, extra = next(iter(link.sockets.items()))
    extra_addr = extra.sock.getsockname()

    # garbage, a forgery and a probe from a node that is not this socket's link: dropped, counted, unanswered
    other = Link("phone", PathState(relay="vps", now=clock.now), peer_key=PEER_KEY)
    endpoint.links["phone"] = other
    for junk in (b"\x01\x02", frames.encode_probe(bytes(16), ack=False, txid=1, sender="laptop"),
                 frames.encode_probe(PEER_KEY, ack=False, txid=1, sender="phone"), b"\xc0" + bytes(40)):
        peer.sendto(junk, extra_addr)
    await settle()
    assert endpoint.dropped == 4

    # the peer's spray probe hits this socket: answered from it, and the peer's address is bound to it
    peer.sendto(frames.encode_probe(PEER_KEY, ack=False, txid=7, sender="laptop"), extra_addr)
    ack, source = await receive(peer)
    assert ack.ack and ack.txid == 7 and source == extra_addr
    endpoint._drive_paths()
    probe, source = await receive(peer)  # probing the peer now goes through the same socket
    assert not probe.ack and source == extra_addr
    peer.sendto(frames.encode_probe(PEER_KEY, ack=True, txid=probe.txid, sender="laptop"), extra_addr)
    await settle()
    path = link.state.path()
    assert isinstance(path, Direct) and path.via_socket == extra_id

    # the attempt ends: every other extra socket closes, the path's stays
    endpoint._close_unused(link, clock.now)
    assert list(link.sockets) == [extra_id] and set(endpoint._extra) == {extra_id}

    # the path dies (no answers for trust_s): back to the relay, and its socket closes
    clock.now += Timers().trust_s + 1
    endpoint._drive_paths()
    assert link.state.path() == Relay("vps")
    assert link.sockets == {} and endpoint._extra == {}
    assert extra.sock.fileno() == -1


async def test_an_attempt_opens_its_sockets_and_its_end_closes_them_all(
        setup: tuple[Endpoint, Link, socket.socket, FakeClock]) -> None:
    endpoint, link, _peer, clock = setup
    endpoint.reflexive["vps"] = ("198.51.100.1", 41641)
    assert endpoint._peer_reflexive(link) == []  # no reflexive candidate from the peer: never eligible
    endpoint._open_extra(link, 3, clock.now)
    assert len(link.sockets) == 3
    endpoint._close_unused(link, clock.now)
    assert link.sockets == {} and endpoint._extra == {}


async def test_a_forgotten_link_closes_its_extra_sockets() -> None:
    clock = FakeClock()
    endpoint = await Endpoint.open(node("pi"), "127.0.0.1", 0, clock=clock)
    try:
        link = endpoint._link("laptop", "vps")
        endpoint._open_extra(link, 2, clock.now)
        socks = [e.sock for e in link.sockets.values()]
        endpoint.close()
        assert all(s.fileno() == -1 for s in socks)
    finally:
        endpoint.close()


def test_a_link_made_by_the_endpoint_has_a_birthday_core_unless_turned_off() -> None:
    on = Endpoint(node("pi"), clock=time.time)
    off = Endpoint(node("pi"), clock=time.time, birthday=None)
    assert on._link("laptop", "vps").birthday is not None
    assert off._link("laptop", "vps").birthday is None

"""The overlay relay under a flood of QUIC handshakes (issue 16, High 3): 1,100 Initials from one address (each a
new connection that never finishes its handshake) must not keep an enrolled node from attaching over QUIC, and a
handshake that does not finish is dropped after the handshake timeout. Loopback only: the flood comes from
127.0.0.2, the node from 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from broker.limits import ListenerLimits
from coordinator.pki import CertRole
from dataplane.endpoint import Endpoint
from dataplane.quic import ALPN, Peer
from dataplane.relay import RelayServer
from tests.dataplane.pki_builders import issue
from tests.dataplane.test_quic import CA, credential, node

pytestmark = pytest.mark.integration
FLOOD = 1100


def initials(n: int, port: int) -> list[bytes]:
    """The first datagram of `n` fresh QUIC client connections (padded Initials carrying a ClientHello)."""
    out = []
    for _ in range(n):
        quic = QuicConnection(configuration=QuicConfiguration(is_client=True, alpn_protocols=[ALPN]))
        quic.connect(("127.0.0.1", port), now=time.monotonic())
        out.append(quic.datagrams_to_send(now=time.monotonic())[0][0])
    return out


async def test_an_enrolled_node_attaches_to_a_flooded_relay() -> None:
    relay = await RelayServer.open(credential(issue(CA, "relay@vps", role=CertRole.RELAY, now=time.time())),
                                   "127.0.0.1", 0, clock=time.time)
    a = await Endpoint.open(node("a"), "127.0.0.1", 0, clock=time.time)
    flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flood.bind(("127.0.0.2", 0))
    try:
        for i, datagram in enumerate(initials(FLOOD, relay.address[1])):
            flood.sendto(datagram, relay.address)
            if i % 20 == 0:
                await asyncio.sleep(0.05)  # let the relay answer (UDP drops what overflows its socket buffer)
        await asyncio.sleep(0.2)
        link = await a.attach_relay(relay.address, relay_id="relay@vps", udp_timeout_s=5, tcp=False)
        assert isinstance(link, Peer) and "a" in relay.sessions
    finally:
        flood.close()
        a.close()
        relay.close()


async def test_a_handshake_that_does_not_finish_is_dropped() -> None:
    relay = await RelayServer.open(credential(issue(CA, "relay@vps", role=CertRole.RELAY, now=time.time())),
                                   "127.0.0.1", 0, clock=time.time, limits=ListenerLimits(handshake_timeout_s=0.5))
    flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flood.bind(("127.0.0.2", 0))
    try:
        for datagram in initials(8, relay.address[1]):
            flood.sendto(datagram, relay.address)
        await asyncio.sleep(0.2)
        assert relay._handshakes() == 8
        await asyncio.sleep(1.5)
        assert relay._handshakes() == 0
    finally:
        flood.close()
        relay.close()

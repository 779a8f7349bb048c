"""The relay over TCP/TLS: a node whose UDP gets no answer falls back to TLS on the same port; peers meet through
it as through the QUIC relay link; a TLS client from another CA is refused."""

from __future__ import annotations

import asyncio
import time

from coordinator.pki import CertRole
from dataplane.endpoint import Endpoint
from dataplane.errors import PeerRefused, Unreachable
from dataplane.relay import RelayServer
from dataplane.relay_tls import HANDSHAKE_TIMEOUT_S, TlsChannel
from tests.dataplane.pki_builders import ca_pem, issue, make_ca
from tests.dataplane.test_quic import CA, credential, echo, node


async def test_a_node_without_udp_reaches_its_peer_through_the_relay_over_tls() -> None:
    relay = await RelayServer.open(credential(issue(CA, "relay@vps", role=CertRole.RELAY, now=time.time())),
                                   "127.0.0.1", 0, clock=time.time)
    await relay.listen_tls("127.0.0.1", relay.address[1])
    relay._transport.close()  # type: ignore[union-attr]  # no UDP answer from the relay, as behind a UDP block
    a = await Endpoint.open(node("a"), "127.0.0.1", 0, clock=time.time, direct=False)
    b = await Endpoint.open(node("b"), "127.0.0.1", 0, clock=time.time, on_stream=echo, direct=False)
    try:
        for endpoint in (a, b):
            link = await endpoint.attach_relay(relay.address, relay_id="relay@vps", udp_timeout_s=0.5)
            assert isinstance(link, TlsChannel)
        await asyncio.sleep(HANDSHAKE_TIMEOUT_S + 1)  # quiet links (nothing to send yet) must stay attached
        assert set(relay.sessions) == {"a", "b"} and not link.closed.is_set()
        peer = await a.connect("b", via="relay@vps")
        reader, writer = await peer.open_stream()
        writer.write(b"over tcp")
        writer.write_eof()
        async with asyncio.timeout(10):
            assert await reader.read() == b"OVER TCP"
        assert relay.forwarded > 0 and set(relay.sessions) == {"a", "b"}
    finally:
        for endpoint in (a, b, relay):
            endpoint.close()


async def test_the_tls_relay_refuses_a_node_of_another_cluster() -> None:
    relay = await RelayServer.open(credential(issue(CA, "relay@vps", role=CertRole.RELAY, now=time.time())),
                                   "127.0.0.1", 0, clock=time.time)
    await relay.listen_tls("127.0.0.1", relay.address[1])
    relay._transport.close()  # type: ignore[union-attr]
    stranger_ca = make_ca("stranger", now=time.time())  # its certificate is another cluster's; it trusts ours
    outsider = await Endpoint.open(credential(issue(stranger_ca, "a", now=time.time()), trust_pem=ca_pem(CA)),
                                   "127.0.0.1", 0, clock=time.time)
    try:
        try:
            link = await outsider.attach_relay(relay.address, relay_id="relay@vps", udp_timeout_s=0.5)
        except (Unreachable, PeerRefused):
            link = None  # refused during the handshake
        if link is not None:  # TLS 1.3: the client may finish first and hear the refusal on its first read
            async with asyncio.timeout(5):
                await link.closed.wait()
        await asyncio.sleep(0.2)
        assert relay.sessions == {} and outsider.relays == {}
    finally:
        outsider.close()
        relay.close()

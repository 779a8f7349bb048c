"""The overlay endpoint over real UDP on loopback: both sides authenticate each other with cluster certificates,
refusals reach the refused side with their reason, a revocation cuts a live connection, writers feel back-pressure.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Callable

import pytest
from aioquic.asyncio import connect
from aioquic.quic.configuration import QuicConfiguration

from dataplane.endpoint import Endpoint
from dataplane.errors import ConnectionLost, PeerRefused
from dataplane.identity import Reason, Revocations, TrustAnchor
from dataplane.quic import ALPN, HIGH_WATER, RECEIVE_WINDOW, REFUSED, NodeCredential, Peer
from tests.dataplane.pki_builders import DAY, Credential, issue, make_ca

CA = make_ca("lab", now=time.time())


def credential(cred: Credential, trust_pem: bytes | None = None) -> NodeCredential:
    return NodeCredential(cred.identity, cred.cert_pem, cred.key_pem, TrustAnchor.from_pem(trust_pem or cred.ca_pem))


def node(identity: str, *, now: float | None = None, lifetime_s: float = 30 * DAY) -> NodeCredential:
    return credential(issue(CA, identity, now=time.time() if now is None else now, lifetime_s=lifetime_s))


async def echo(_peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    data = await reader.read()
    writer.write(data.upper())
    writer.write_eof()


@pytest.fixture
async def server() -> AsyncIterator[Endpoint]:
    revoked: set[str] = set()
    endpoint = await Endpoint.open(node("pi"), "127.0.0.1", 0, on_stream=echo, clock=time.time,
                                   revocations=lambda: Revocations(identities=frozenset(revoked)))
    endpoint.revoked_ids = revoked  # type: ignore[attr-defined]  # the test's handle on the control plane's list
    yield endpoint
    endpoint.close()


async def client(cred: NodeCredential) -> Endpoint:
    return await Endpoint.open(cred, "127.0.0.1", 0, clock=time.time)


async def ask(peer: Peer, data: bytes) -> bytes:
    reader, writer = await peer.open_stream()
    writer.write(data)
    writer.write_eof()
    async with asyncio.timeout(10):
        return await reader.read()


async def test_two_nodes_authenticate_each_other_and_exchange_bytes(server: Endpoint) -> None:
    laptop = await client(node("laptop"))
    try:
        peer = await laptop.connect("pi", addr=server.address)
        assert peer.identity is not None and peer.identity.identity == "pi"
        assert await ask(peer, b"hello") == b"HELLO"
        assert set(server.peers) == {"laptop"}  # the server knows who called, from the certificate
    finally:
        laptop.close()


REFUSED_BY_SERVER: list[tuple[str, Callable[[], NodeCredential], Reason]] = [
    ("foreign-ca", lambda: credential(issue(make_ca("stranger", now=time.time()), "laptop", now=time.time()),
                                      trust_pem=issue(CA, "x", now=time.time()).ca_pem), Reason.UNTRUSTED),
    ("expired", lambda: node("laptop", now=time.time() - 10 * DAY, lifetime_s=DAY), Reason.EXPIRED),
]


@pytest.mark.parametrize(("name", "make", "reason"), REFUSED_BY_SERVER, ids=[c[0] for c in REFUSED_BY_SERVER])
async def test_the_server_refuses_a_bad_client_and_the_client_learns_why(
        server: Endpoint, name: str, make: Callable[[], NodeCredential], reason: Reason) -> None:
    laptop = await client(make())
    try:
        with pytest.raises(PeerRefused) as caught:
            await laptop.connect("pi", addr=server.address)
        assert caught.value.by_peer and reason.value in str(caught.value)
        assert server.peers == {}
    finally:
        laptop.close()


async def test_a_revoked_node_is_refused(server: Endpoint) -> None:
    server.revoked_ids.add("laptop")  # type: ignore[attr-defined]
    laptop = await client(node("laptop"))
    try:
        with pytest.raises(PeerRefused, match="revoked"):
            await laptop.connect("pi", addr=server.address)
    finally:
        laptop.close()


async def test_the_client_refuses_a_server_that_is_not_the_node_it_asked_for(server: Endpoint) -> None:
    laptop = await client(node("laptop"))
    try:
        with pytest.raises(PeerRefused) as caught:
            await laptop.connect("phone", addr=server.address)  # the control plane said "phone" is there
        assert not caught.value.by_peer and "wrong-node" in str(caught.value)
    finally:
        laptop.close()


async def test_a_client_without_a_certificate_is_refused(server: Endpoint) -> None:
    config = QuicConfiguration(is_client=True, alpn_protocols=[ALPN], verify_mode=ssl.CERT_NONE)
    async with connect(*server.address, configuration=config) as conn:  # plain aioquic: it has no certificate
        reader, writer = await conn.create_stream()
        writer.write(b"hello")
        writer.write_eof()
        async with asyncio.timeout(5):
            answer = await reader.read()
            await conn.wait_closed()
        closing = conn._quic._close_event
    assert answer == b"" and server.peers == {}  # nothing was served to it
    assert closing is not None and closing.error_code == REFUSED and "no-certificate" in closing.reason_phrase


async def test_revoking_a_connected_node_cuts_its_connection(server: Endpoint) -> None:
    laptop = await client(node("laptop"))
    try:
        peer = await laptop.connect("pi", addr=server.address)
        assert await ask(peer, b"a") == b"A"
        server.revoked_ids.add("laptop")  # type: ignore[attr-defined]
        assert server.enforce() == ["laptop"]
        async with asyncio.timeout(5):
            await peer.closed.wait()
        assert "revoked" in peer.close_reason
        with pytest.raises(ConnectionLost):
            await peer.open_stream()
    finally:
        laptop.close()


async def test_a_writer_waits_while_the_peer_does_not_acknowledge(server: Endpoint) -> None:
    laptop = await client(node("laptop"))
    try:
        peer = await laptop.connect("pi", addr=server.address)
        _reader, writer = await peer.open_stream()
        server._transport.close()  # type: ignore[union-attr]  # the peer vanishes: nothing is acknowledged
        chunk = b"x" * 65536
        written = 0
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.0):
                while True:
                    writer.write(chunk)
                    written += len(chunk)
                    await writer.drain()
        # the writer stopped within one chunk of the high-water mark: memory stays bounded
        assert HIGH_WATER <= written <= HIGH_WATER + len(chunk)
    finally:
        laptop.close()


async def test_a_reader_that_does_not_read_holds_the_sender_back_and_memory_stays_bounded() -> None:
    held: list[asyncio.StreamReader] = []
    go = asyncio.Event()
    received: list[int] = []

    async def slow(_peer: Peer, reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
        held.append(reader)
        await go.wait()
        received.append(len(await reader.read()))

    server = await Endpoint.open(node("pi"), "127.0.0.1", 0, on_stream=slow, clock=time.time)
    laptop = await client(node("laptop"))
    try:
        peer = await laptop.connect("pi", addr=server.address)
        _reader, writer = await peer.open_stream()
        chunk, written = b"y" * 65536, 0
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.5):
                while True:  # nobody reads on the other side: this must stop
                    writer.write(chunk)
                    written += len(chunk)
                    await writer.drain()
        buffered = len(held[0]._buffer)  # type: ignore[attr-defined]
        assert buffered <= RECEIVE_WINDOW + len(chunk)  # the receiver holds one window, not everything sent
        assert written <= RECEIVE_WINDOW + HIGH_WATER + 2 * len(chunk)
        go.set()  # now it reads: the sender goes on, and every byte arrives
        writer.write(chunk)
        writer.write_eof()
        async with asyncio.timeout(10):
            while not received:
                await asyncio.sleep(0.05)
        assert received == [written + len(chunk)]
    finally:
        laptop.close()
        server.close()

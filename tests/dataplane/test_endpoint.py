"""Endpoint rules that need no network: probes are authenticated and never replayed, hostile datagrams are
dropped and counted, every connection of a revoked node is cut (not only the newest)."""

from __future__ import annotations

import asyncio
import time

from dataplane import frames
from dataplane.endpoint import Endpoint, Link
from dataplane.identity import Revocations
from dataplane.paths import Candidate, CandidateKind, PathState
from dataplane.quic import NodeCredential
from tests.dataplane.test_quic import node

PEER_ADDR = ("198.19.2.10", 41641)


class Wire:
    """A fake datagram transport: records what the endpoint sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, object]] = []

    def sendto(self, data: bytes, addr: object) -> None:
        self.sent.append((data, addr))

    def close(self) -> None:
        pass


def endpoint_with_link(cred: NodeCredential) -> tuple[Endpoint, Link, Wire]:
    endpoint = Endpoint(cred, clock=time.time)
    wire = Wire()
    endpoint._transport = wire  # type: ignore[assignment]
    link = Link("laptop", PathState(relay="vps", now=time.time()), peer_key=bytes(range(16)))
    link.state.set_candidates((Candidate(PEER_ADDR, CandidateKind.REFLEXIVE),), time.time())
    endpoint.links["laptop"] = link
    return endpoint, link, wire


async def test_an_authentic_probe_is_answered_once_and_its_replay_is_dropped() -> None:
    endpoint, link, wire = endpoint_with_link(node("pi"))
    probe = frames.encode_probe(link.peer_key, ack=False, txid=5, sender="laptop")  # type: ignore[arg-type]
    endpoint.datagram_received(probe, PEER_ADDR)
    assert len(wire.sent) == 1 and frames.decode_probe(wire.sent[0][0]).ack
    endpoint.datagram_received(probe, ("203.0.113.7", 9))  # the same probe again, from anywhere
    assert len(wire.sent) == 1 and endpoint.dropped == 1
    assert not any(c.addr == ("203.0.113.7", 9) for c in link.state.candidates)


async def test_forged_probes_and_garbage_are_dropped_without_an_answer() -> None:
    endpoint, _link, wire = endpoint_with_link(node("pi"))
    for datagram in (frames.encode_probe(bytes(16), ack=False, txid=9, sender="laptop"),  # wrong key
                     frames.encode_probe(bytes(16), ack=False, txid=9, sender="stranger"),  # unknown node
                     b"\x01\x02", b"\x3f" * 50, b"\xc0" + b"\x00" * 40, b""):  # junk, a truncated QUIC header
        endpoint.datagram_received(datagram, PEER_ADDR)
    assert wire.sent == [] and endpoint.dropped == 6


async def test_revocation_cuts_every_connection_of_the_node_not_only_the_newest() -> None:
    revoked: set[str] = set()
    server = await Endpoint.open(node("pi"), "127.0.0.1", 0, clock=time.time,
                                 revocations=lambda: Revocations(identities=frozenset(revoked)))
    laptop = await Endpoint.open(node("laptop"), "127.0.0.1", 0, clock=time.time)
    try:
        first = await laptop.connect("pi", addr=server.address)
        second = await laptop.connect("pi", addr=server.address)
        assert len({p for p in server._cids.values() if p.identity}) == 2
        revoked.add("laptop")
        assert server.enforce() == ["laptop"]
        async with asyncio.timeout(5):
            await first.closed.wait()
            await second.closed.wait()
    finally:
        laptop.close()
        server.close()

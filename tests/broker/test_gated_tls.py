"""A gated listener hands every byte to the real protocol, including bytes that arrive before it exists: with TLS
the client's first request can come in the same read as its handshake's last flight, and asyncio delivers it to
the gate before start_tls() returns. They were dropped, so a fresh client's first request was lost or cut — the
API answered nothing, or 400 (`cloudless up`'s agent could not enrol 2 times in 3; tests/integration/test_up.py)."""

from __future__ import annotations

import asyncio

from broker.limits import ConnectionGate
from broker.listeners import GatedProtocol


class Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.eof = False

    def data_received(self, data: bytes) -> None:
        self.data.append(data)

    def eof_received(self) -> bool | None:
        self.eof = True
        return None


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 5) if name == "peername" else default

    def close(self) -> None:
        self.closed = True


def test_bytes_and_eof_that_arrive_before_the_protocol_exists_reach_it_in_order() -> None:
    inner = Recorder()
    gate = ConnectionGate(max_connections=10, max_per_address=10)
    gated = GatedProtocol(lambda: inner, gate, ssl_context=None, handshake_timeout_s=5, on_refused=lambda _a: None)
    # as during a TLS handshake: admitted, but the real protocol is made only once start_tls() returns
    gated._admitted = True
    gated.data_received(b"POST /v1/enroll HTTP/1.1\r\n")
    gated.data_received(b"\r\n{}")
    assert gated.eof_received() is True  # the transport stays open for what came before the EOF
    transport = Transport()
    gated._hand_over(transport)
    assert inner.data == [b"POST /v1/enroll HTTP/1.1\r\n", b"\r\n{}"] and inner.eof
    assert transport.closed  # the inner protocol did not ask to keep a half-closed connection
    gated.data_received(b"more")
    assert inner.data[-1] == b"more"


class Abortable(Transport):
    def __init__(self) -> None:
        super().__init__()
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True

    def pause_reading(self) -> None:
        pass


def test_authenticated_connections_stop_counting_against_their_address() -> None:
    """The per-address cap bounds connections that have not proved who they are: many devices behind one NAT (or
    carrier-grade NAT) each get in once authenticated, while a flood of anonymous ones from one address is held."""
    gate = ConnectionGate(max_connections=100, max_per_address=2)

    def connect() -> tuple[GatedProtocol, Abortable]:
        transport = Abortable()
        gated = GatedProtocol(Recorder, gate, ssl_context=None, handshake_timeout_s=5, on_refused=lambda _a: None)
        gated.connection_made(transport)
        return gated, transport

    async def scenario() -> None:
        first, _ = connect()
        second, _ = connect()
        _, refused = connect()
        assert refused.aborted  # two anonymous ones from 127.0.0.1: the third is refused
        first.authenticated()
        second.authenticated()
        devices = [connect() for _ in range(2)]
        assert not any(t.aborted for _, t in devices) and gate.open == 4
        first.connection_lost(None)
        assert gate.open == 3 and gate.held_by("127.0.0.1") == 2
        for gated, _ in devices:
            gated.connection_lost(None)
        assert gate.open == 1 and gate.held_by("127.0.0.1") == 0

    asyncio.run(scenario())

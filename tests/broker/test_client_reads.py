"""How much the MQTT client adapter (broker/client.py) reads and writes in one step of the event loop (issue 17): a
burst of incoming messages is handled at most _MAX_PACKETS_PER_WAKEUP at a time, however many messages of its own the
client has queued (paho's loop_read reads one packet per message in flight or queued: with thousands queued, a
fleet's dashboard topics, one readable event handled every message waiting on the socket), and a backlog of outgoing
packets is written at most _MAX_WRITES_PER_WAKEUP at a time (paho's loop_write writes all of it).

A real paho client and a real socket (a socketpair carrying MQTT 3.1.1 PUBLISH packets); no broker needed."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from broker import client as client_mod
from broker.client import Message, MqttClient, MqttSettings, _Subscription
from tests.dataplane.pki_builders import issue, make_ca


def publish_packet(topic: str, payload: bytes) -> bytes:
    """A QoS 0 PUBLISH (MQTT 3.1.1 §3.3)."""
    body = struct.pack("!H", len(topic)) + topic.encode() + payload
    n, length = len(body), b""
    while True:
        digit, n = n % 128, n // 128
        length += bytes([digit | (0x80 if n else 0)])
        if not n:
            break
    return b"\x30" + length + body


@contextmanager
def wired(queued: int, sock: socket.socket | None = None) -> Iterator[
        tuple[MqttClient, socket.socket, socket.socket, list[Message]]]:
    """A client whose paho reads from one end of a socketpair (or `sock`, already connected), with `queued` QoS 1
    messages of its own waiting."""
    c = MqttClient(MqttSettings(host="127.0.0.1", port=1, client_id="reader"))
    got: list[Message] = []
    c._subs.add(_Subscription("t/#", 0, got.append))
    ours, theirs = (sock, socket.socket()) if sock is not None else socket.socketpair()
    ours.setblocking(False)
    p: Any = c._paho
    p._sock = ours  # as paho holds it after connecting
    for mid in range(1, queued + 1):  # paho's own record of outgoing messages not acknowledged yet
        m = paho.MQTTMessage(mid=mid, topic=b"out")
        m.qos = 1
        p._out_messages[mid] = m
    try:
        with ours, theirs:
            yield c, ours, theirs, got
    finally:
        p._sock = None  # not connected: paho's finaliser has no socket to close through a loop that never ran
        p._out_messages.clear()


def test_a_burst_is_read_in_bounded_steps_however_many_messages_are_queued() -> None:
    limit = client_mod._MAX_PACKETS_PER_WAKEUP
    with wired(queued=2000) as (c, ours, theirs, got):
        theirs.sendall(b"".join(publish_packet(f"t/{i}", b"x" * 20) for i in range(3 * limit + 7)))
        c._readable(ours)
        assert len(got) == limit, f"one readable event handled {len(got)} messages (at most {limit})"
        steps = 1
        while len(got) < 3 * limit + 7:
            c._readable(ours)
            steps += 1
            assert steps <= 10
        assert steps == 4
        assert [m.topic for m in got] == [f"t/{i}" for i in range(3 * limit + 7)]  # in order, none lost


def test_a_readable_event_with_nothing_complete_reads_what_there_is_and_returns() -> None:
    with wired(queued=0) as (c, ours, theirs, got):
        packet = publish_packet("t/a", b"payload")
        theirs.sendall(packet[:5])  # half a packet: nothing to hand over yet
        c._readable(ours)
        assert got == []
        theirs.sendall(packet[5:])
        c._readable(ours)
        assert [(m.topic, m.payload) for m in got] == [("t/a", b"payload")]


def queue_packet(c: MqttClient, packet: bytes) -> None:
    """A packet in paho's write queue, as its publish() leaves one."""
    p: Any = c._paho
    p._out_packet.append({"command": 0x30, "mid": 0, "qos": 0, "pos": 0, "to_process": len(packet),
                          "packet": packet, "info": paho.MQTTMessageInfo(0)})


def received(sock: socket.socket) -> bytes:
    sock.setblocking(False)
    data = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


async def test_a_backlog_is_written_in_bounded_steps_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    limit = 20  # small: a socketpair's buffer counts each small send as a whole buffer, and must take one turn's
    monkeypatch.setattr(client_mod, "_MAX_WRITES_PER_WAKEUP", limit)
    with wired(queued=0) as (c, ours, theirs, _):
        c._loop = asyncio.get_running_loop()
        packets = [publish_packet(f"o/{i}", b"y" * 10) for i in range(3 * limit + 5)]
        for packet in packets:
            queue_packet(c, packet)
        try:
            c._writable()
            assert received(theirs) == b"".join(packets[:limit]), "one writable event wrote more than its share"
            p: Any = c._paho
            assert p.want_write() and p._registered_write, "the rest waits for the next turn, writer registered"
            out, turns = b"", 0
            while p.want_write():  # (a socketpair's buffer may take fewer: paho keeps the rest, and the writer)
                c._writable()
                turns += 1
                out += received(theirs)
                assert turns <= 20
            assert out == b"".join(packets[limit:]), "the rest, in order"
            assert turns >= 3
        finally:
            c._loop.remove_writer(ours)


def tls_pair(tmp: Path) -> tuple[ssl.SSLSocket, ssl.SSLSocket]:
    """Two ends of a socketpair speaking TLS (the broker's end and the client's), handshake done, non-blocking."""
    cred = issue(make_ca(), "broker")
    (tmp / "c.pem").write_bytes(cred.cert_pem)
    (tmp / "k.pem").write_bytes(cred.key_pem)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp / "c.pem", tmp / "k.pem")
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname, client_ctx.verify_mode = False, ssl.CERT_NONE
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    broker_end = server_ctx.wrap_socket(a, server_side=True, do_handshake_on_connect=False)
    client_end = client_ctx.wrap_socket(b, do_handshake_on_connect=False)
    pending = [broker_end, client_end]
    for _ in range(100):  # both sides step the handshake in turn (one thread, non-blocking)
        for s in list(pending):
            try:
                s.do_handshake()
                pending.remove(s)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
        if not pending:
            return broker_end, client_end
    raise AssertionError("TLS handshake over the socketpair did not finish")


async def test_decrypted_bytes_left_at_the_read_bound_are_read_without_further_input(tmp_path: Path) -> None:
    """A broker that coalesces packets into one TLS record: past the bound, the rest sits decrypted in the TLS layer
    (`pending()`), invisible to poll, and no readable event would come until the broker sends again (at worst its
    PINGRESP, one keep-alive later). The client schedules another read itself (review 5, L3)."""
    limit = client_mod._MAX_PACKETS_PER_WAKEUP
    broker_end, client_end = tls_pair(tmp_path)
    with broker_end, client_end, wired(queued=0, sock=client_end) as (c, ours, _, got):
        c._loop = asyncio.get_running_loop()
        n = limit + 7
        broker_end.sendall(b"".join(publish_packet(f"t/{i}", b"z" * 20) for i in range(n)))  # < 16 KiB: one record
        c._readable(ours)  # no reader is registered: only a read the client schedules itself can take the rest
        assert len(got) == limit
        for _ in range(10):
            await asyncio.sleep(0)
        assert [m.topic for m in got] == [f"t/{i}" for i in range(n)], "the decrypted rest was read, in order"

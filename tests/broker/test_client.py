"""Pieces of the MQTT client adapter (broker/client.py) that need no broker; the rest is covered against real
brokers in tests/integration/test_brokers.py."""

from __future__ import annotations

import socket

from broker.client import _input_waiting


def test_input_waiting_sees_unread_bytes_without_consuming_them() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        assert _input_waiting(a) is False
        b.sendall(b"\x30\x00")
        assert _input_waiting(a) is True
        assert _input_waiting(a) is True, "peeking must not consume"
        assert a.recv(16) == b"\x30\x00"
        assert _input_waiting(a) is False


def test_input_waiting_reports_a_closed_peer_so_the_read_path_sees_eof() -> None:
    a, b = socket.socketpair()
    with a:
        b.close()
        assert _input_waiting(a) is True


def test_input_waiting_is_false_for_a_closed_socket() -> None:
    a, b = socket.socketpair()
    b.close()
    a.close()
    assert _input_waiting(a) is False

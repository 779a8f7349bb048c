"""Overlay frames: round trips, authentication of probes, and nothing but FrameError from hostile bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataplane import frames
from dataplane.frames import FrameError

KEY = bytes(range(16))


def test_a_probe_round_trips_and_authenticates_with_the_senders_key_only() -> None:
    raw = frames.encode_probe(KEY, ack=False, txid=7, sender="pi")
    assert not frames.is_quic(raw)
    probe = frames.decode_probe(raw)
    assert (probe.ack, probe.txid, probe.sender) == (False, 7, "pi")
    assert frames.probe_is_authentic(probe, KEY)
    assert not frames.probe_is_authentic(probe, bytes(16))
    ack = frames.decode_probe(frames.encode_probe(KEY, ack=True, txid=7, sender="pi"))
    assert ack.ack and ack.mac != probe.mac  # an answer is not a replayed probe


def test_a_probe_with_an_edited_field_no_longer_authenticates() -> None:
    raw = bytearray(frames.encode_probe(KEY, ack=False, txid=7, sender="pi"))
    raw[8] ^= 1  # the txid
    assert not frames.probe_is_authentic(frames.decode_probe(bytes(raw)), KEY)


def test_relay_and_peer_datagrams_round_trip() -> None:
    packet = b"\xc3" + b"q" * 100
    assert frames.decode_relay(frames.encode_forward("laptop", packet)) == (frames.FORWARD, "laptop", packet)
    assert frames.decode_relay(frames.encode_observed(("198.19.1.11", 40000))) == (frames.OBSERVED,
                                                                                   ("198.19.1.11", 40000))
    assert frames.decode_relay(frames.encode_no_route("x")) == (frames.NO_ROUTE, "x", b"")
    assert frames.decode_peer(frames.encode_probe_key(KEY)) == (frames.PROBE_KEY, KEY)
    cands = [(0, ("192.168.1.2", 1)), (1, ("2001:db8::1", 65535))]
    assert frames.decode_peer(frames.encode_candidates(cands)) == (frames.CANDIDATES, cands)


@pytest.mark.parametrize("raw", [b"", b"\x11", b"\x11\x00", b"\x11\x02pi" + b"\x01not-quic", b"\x12\x00",
                                 b"\x12\x00\x01not-an-ip", b"\x7f", b"\x13\x40" + b"x" * 64,
                                 b"\x11\x01a" + b"\xc3" * 1201],
                         ids=["empty", "no-id", "zero-id", "not-quic", "short-observed", "bad-ip", "unknown",
                              "id-too-long", "packet-too-big"])
def test_bad_relay_datagrams_are_refused(raw: bytes) -> None:
    with pytest.raises(FrameError):
        frames.decode_relay(raw)


@given(st.binary(max_size=200))
def test_hostile_bytes_raise_only_frame_error(raw: bytes) -> None:
    for decode in (frames.decode_probe, frames.decode_relay, frames.decode_peer):
        try:
            decode(raw)
        except FrameError:
            pass

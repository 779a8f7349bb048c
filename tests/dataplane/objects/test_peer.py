"""The chunk protocol's framing (sans-IO): round trips, and every bad field rejected as a value naming it."""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataplane.objects.peer import (
    DIGEST,
    MAX_CHUNK,
    MAX_HAS,
    MAX_HEADER,
    Op,
    Rejected,
    Request,
    Response,
    Status,
    chunk_ids_of,
    deadline_s,
    digests,
    encode_request,
    encode_response,
    header_length,
    parse_request,
    parse_response,
)

CID = hashlib.sha256(b"chunk").hexdigest()


def body_of(frame: bytes) -> bytes:
    size = header_length(frame[:2])
    assert isinstance(size, int)
    assert len(frame) == 2 + size
    return frame[2:]


def raw(doc: Any) -> bytes:
    packed: bytes = msgpack.packb(doc, use_bin_type=True)
    return packed


@given(op=st.sampled_from([Op.PUT, Op.GET, Op.DELETE]), length=st.integers(0, MAX_CHUNK),
       digest=st.binary(min_size=32, max_size=32))
def test_request_round_trip(op: Op, length: int, digest: bytes) -> None:
    request = Request(op, digest.hex(), length if op is Op.PUT else 0)
    assert parse_request(body_of(encode_request(request))) == request


def test_has_request_and_digest_bodies_round_trip() -> None:
    ids = [hashlib.sha256(bytes([i])).hexdigest() for i in range(5)]
    body = digests(ids)
    request = Request(Op.HAS, "", len(body))
    assert parse_request(body_of(encode_request(request))) == request
    assert chunk_ids_of(body) == ids


@given(status=st.sampled_from(list(Status)), reason=st.text(max_size=300), length=st.integers(0, MAX_CHUNK))
def test_response_round_trip(status: Status, reason: str, length: int) -> None:
    response = Response(status, reason, length if status is Status.OK else 0)
    parsed = parse_response(body_of(encode_response(response)), cap=MAX_CHUNK)
    assert parsed == Response(status, reason[:200], response.length)


@pytest.mark.parametrize(("doc", "field"), [
    ({"op": "rename", "id": CID, "len": 0}, "op"),
    ({"id": CID, "len": 0}, "op"),
    ({"op": "get", "id": CID.upper(), "len": 0}, "id"),
    ({"op": "get", "id": CID[:63], "len": 0}, "id"),
    ({"op": "get", "id": 5, "len": 0}, "id"),
    ({"op": "put", "id": CID}, "len"),
    ({"op": "put", "id": CID, "len": MAX_CHUNK + 1}, "len"),
    ({"op": "put", "id": CID, "len": -1}, "len"),
    ({"op": "put", "id": CID, "len": True}, "len"),
    ({"op": "get", "id": CID, "len": 10}, "len"),
    ({"op": "has", "len": DIGEST * MAX_HAS + DIGEST}, "len"),
    ({"op": "has", "len": DIGEST + 1}, "len"),
    ([1, 2], "header"),
    ({"op": "get", "id": CID, "len": 0, "x": b"bin"}, "header"),
], ids=["unknown-op", "no-op", "upper-id", "short-id", "int-id", "no-len", "chunk-too-big", "negative-len",
        "bool-len", "body-on-get", "too-many-ids", "partial-digest", "not-a-map", "binary-field"])
def test_bad_requests_are_rejected_naming_the_field(doc: Any, field: str) -> None:
    rejected = parse_request(raw(doc))
    assert isinstance(rejected, Rejected)
    assert rejected.field == field


@pytest.mark.parametrize("garbage", [b"", b"\xc1", b"\x92\x01", raw({"op": "get"}) + b"extra"],
                         ids=["empty", "reserved-byte", "truncated", "trailing-bytes"])
def test_garbage_headers_are_rejected_not_raised(garbage: bytes) -> None:
    assert isinstance(parse_request(garbage), Rejected)
    assert isinstance(parse_response(garbage, cap=0), Rejected)


def test_header_length_is_capped() -> None:
    assert header_length((MAX_HEADER).to_bytes(2, "big")) == MAX_HEADER
    assert isinstance(header_length((MAX_HEADER + 1).to_bytes(2, "big")), Rejected)
    assert isinstance(header_length(b"\x00\x00"), Rejected)
    with pytest.raises(ValueError, match="exceeds"):
        encode_request(Request(Op.GET, "x" * 2000))


@pytest.mark.parametrize(("doc", "cap", "field"), [
    ({"st": "ok", "why": "", "len": 11}, 10, "len"),
    ({"st": "missing", "why": "", "len": 5}, 10, "len"),
    ({"st": "fine", "why": "", "len": 0}, 10, "st"),
    ({"st": "ok", "why": 3, "len": 0}, 10, "why"),
], ids=["body-over-what-was-asked", "body-on-a-no", "unknown-status", "int-reason"])
def test_bad_responses_are_rejected(doc: Any, cap: int, field: str) -> None:
    rejected = parse_response(raw(doc), cap=cap)
    assert isinstance(rejected, Rejected) and rejected.field == field


def test_deadline_grows_with_the_bytes() -> None:
    assert deadline_s(0, base_s=10, min_rate=1024) == 10
    assert deadline_s(4096, base_s=10, min_rate=1024) == 14

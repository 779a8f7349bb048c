"""The codec round trip for every message kind (STYLE §2): decode(encode(m)) == m, the encoding is canonical, and
the dashboard JSON carries every field in a form that converts back to the same message."""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
import math
import typing
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker import wire
from broker.wire.codec import KINDS
from broker.wire.messages import MESSAGE_TYPES
from broker.wire.schema import compile_schema
from tests.broker.builders import (
    BUILDERS,
    TS,
    kind_id,
    make_facts,
    make_heartbeat,
    make_message,
    make_node_status,
)
from tests.broker.strategies import field_types, messages, unwrap

ROUNDTRIP = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
JSON_ROUNDTRIP = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


def test_every_kind_is_registered_once_with_a_builder() -> None:
    kinds = [cls.KIND for cls in MESSAGE_TYPES]  # type: ignore[attr-defined]
    assert len(set(kinds)) == len(kinds), "duplicate KIND"
    assert set(KINDS.values()) == set(MESSAGE_TYPES)
    assert set(BUILDERS) == set(MESSAGE_TYPES), "add a builder in tests/broker/builders.py for the new kind"


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=kind_id)
@ROUNDTRIP
@given(data=st.data())
def test_decode_inverts_encode(cls: type, data: st.DataObject) -> None:
    message = data.draw(messages(cls), label="message")
    payload = wire.encode(message)
    decoded = wire.decode(payload)
    assert type(decoded) is cls
    assert decoded == message
    assert wire.encode(decoded) == payload, "the encoding must be canonical (the golden bytes rely on it)"
    assert wire.decode_as(bytearray(payload), cls) == message
    assert wire.decode(memoryview(payload)) == message


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=kind_id)
def test_defaults_are_omitted_on_the_wire_and_restored(cls: type) -> None:
    """Only required fields: the body carries exactly them and decoding restores every default."""
    full = make_message(cls)
    required = {
        f.name: getattr(full, f.name)
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    minimal = cls(**required)
    assert wire.decode(wire.encode(minimal)) == minimal
    assert set(wire.codec.to_body(minimal)) == set(required)


def test_int_given_for_a_float_field_decodes_equal() -> None:
    message = make_heartbeat(ts=1_700_000_000)
    assert wire.decode(wire.encode(message)) == message


# ---- encode refuses messages that break their own constraints (a bug on the sending side) ---------------------

@pytest.mark.parametrize(
    "message",
    [
        pytest.param(make_heartbeat(node_id="a/b"), id="id-with-slash"),
        pytest.param(make_heartbeat(node_id=""), id="empty-id"),
        pytest.param(make_heartbeat(seq=-1), id="int-below-range"),
        pytest.param(make_heartbeat(seq=True), id="bool-for-int"),
        pytest.param(make_heartbeat(ts=math.nan), id="nan-float"),
        pytest.param(make_heartbeat(ts=math.inf), id="inf-float"),
        pytest.param(make_heartbeat(cpu_percent="50"), id="str-for-float"),
        pytest.param(make_node_status(gates=tuple(f"g{i}" for i in range(17))), id="too-many-items"),
        pytest.param(make_node_status(boot_id="x" * 65), id="text-too-long"),
        pytest.param(make_node_status(boot_id="a\x00b"), id="text-with-nul"),
        pytest.param(make_node_status(presence="away"), id="not-an-enum-value"),
    ],
)
def test_encode_refuses_invalid_messages(message: object) -> None:
    with pytest.raises(wire.WireError):
        wire.encode(message)


@pytest.mark.parametrize("obj", [None, 1, "node.status", {"k": "node.status"}, wire.NodeFacts()], ids=repr)
def test_encode_refuses_non_messages(obj: object) -> None:
    with pytest.raises(wire.WireError):
        wire.encode(obj)


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(make_node_status(boot_id="\ud800"), id="text"),
        pytest.param(make_node_status(gates=("ok", "a\udcff")), id="tuple-item"),
        pytest.param(make_node_status(facts=make_facts(labels={"\ud800": "x"})), id="map-key"),
        pytest.param(make_node_status(facts=make_facts(labels={"k": "\udfff"})), id="map-value"),
    ],
)
def test_encode_refuses_text_that_is_not_utf8_encodable(message: object) -> None:
    with pytest.raises(wire.WireError, match="UTF-8"):
        wire.encode(message)


def test_decode_side_converter_refuses_text_that_is_not_utf8_encodable() -> None:
    """msgpack never decodes to a lone surrogate, but the converter checks both directions all the same."""
    body = {**wire.codec.to_body(make_node_status()), "boot_id": "\ud800"}
    with pytest.raises(wire.WireError, match="UTF-8"):
        compile_schema(wire.NodeStatus).from_plain(body, "b")


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(make_heartbeat(seq=10**5000), id="int-too-long-to-print"),
        pytest.param(make_heartbeat(ts=10**400), id="int-beyond-float-range"),
        pytest.param(make_node_status(facts=make_facts(labels={1: "x", "a": "y"})), id="non-str-map-key"),
        pytest.param(make_node_status(presence=[[[]]]), id="container-for-an-enum"),
    ],
)
def test_encode_raises_only_wire_error_for_hostile_field_values(message: object) -> None:
    with pytest.raises(wire.WireError):
        wire.encode(message)


# ---- the dashboard JSON ----------------------------------------------------------------------------------------

def _from_json_value(tp: Any, value: Any) -> Any:
    fld = unwrap(tp)
    if value is None and fld.optional:
        return None
    origin = typing.get_origin(fld.base)
    if origin is tuple:
        assert isinstance(value, list)
        return tuple(_from_json_value(typing.get_args(fld.base)[0], v) for v in value)
    if origin is dict:
        assert isinstance(value, dict)
        return {k: _from_json_value(typing.get_args(fld.base)[1], v) for k, v in value.items()}
    if dataclasses.is_dataclass(fld.base):
        return _from_json_obj(fld.base, value)  # type: ignore[arg-type]
    if fld.base is bytes:
        # readable text when it is UTF-8, {"base64": ...} otherwise
        return value.encode() if isinstance(value, str) else base64.b64decode(value["base64"], validate=True)
    if isinstance(fld.base, type) and issubclass(fld.base, enum.StrEnum):
        return fld.base(value)
    return value


def _from_json_obj(cls: type, obj: dict[str, Any], extra: frozenset[str] = frozenset()) -> Any:
    names = field_types(cls)
    assert set(obj) == set(names) | extra, f"{cls.__name__}: JSON keys differ from the fields (defaults included)"
    return cls(**{name: _from_json_value(tp, obj[name]) for name, tp in names.items()})


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=kind_id)
@JSON_ROUNDTRIP
@given(data=st.data())
def test_to_json_carries_every_field_and_converts_back(cls: type, data: st.DataObject) -> None:
    message = data.draw(messages(cls), label="message")
    text = wire.to_json(message)
    obj = json.loads(text)
    assert obj == json.loads(json.dumps(wire.to_json_obj(message)))
    assert set(obj) == {"protocol", "kind", "message"}
    assert _from_json_obj(cls, obj["message"]) == message
    assert wire.to_json(message) == text, "deterministic"


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=kind_id)
def test_to_json_envelope_names_protocol_version_and_kind(cls: type) -> None:
    obj = json.loads(wire.to_json(make_message(cls)))
    assert obj["kind"] == cls.KIND  # type: ignore[attr-defined]
    assert obj["protocol"] == wire.PROTOCOL_MAJOR


def test_to_json_keeps_a_field_named_like_an_envelope_key_apart() -> None:
    """CoordinatorStatus.version is the coordinator's software version, not the protocol's."""
    message = make_message(wire.CoordinatorStatus)
    obj = json.loads(wire.to_json(message))
    assert obj["protocol"] == wire.PROTOCOL_MAJOR
    assert obj["message"]["version"] == message.version != wire.PROTOCOL_MAJOR


@pytest.mark.parametrize(
    ("output", "rendered"),
    [
        pytest.param(b"hello\n", "hello\n", id="utf8-as-text"),
        pytest.param(b"", "", id="empty"),
        pytest.param(b"\xff\x00", {"base64": "/wA="}, id="binary-as-base64"),
    ],
)
def test_to_json_renders_bytes_readably(output: bytes, rendered: object) -> None:
    obj = json.loads(wire.to_json(wire.CommandReply(request_id="r", node_id="n", ok=True, ts=TS, output=output)))
    assert obj["message"]["output"] == rendered


def test_to_json_refuses_invalid_messages() -> None:
    with pytest.raises(wire.WireError):
        wire.to_json(make_heartbeat(node_id="#"))

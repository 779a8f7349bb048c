"""Hostile payloads, whole-message level: `decode()` raises WireError and nothing else, whatever the bytes (STYLE
§2, §4) — truncation, size, the envelope, msgpack features outside the contract, nesting, fuzzing, and the
topic-checking decoders. Field-level cases are in test_wire_hostile_fields.py."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker import wire
from broker.wire import codec, schema, topics
from broker.wire.codec import MAX_PAYLOAD_BYTES
from broker.wire.messages import MESSAGE_TYPES
from tests.broker.builders import kind_id, make_message, make_node_status
from tests.broker.hostile_cases import (
    FUZZ,
    GOLDEN_PAYLOADS,
    SENTINEL,
    Path,
    assert_decodes_or_wire_error,
    assert_wire_error,
    dotted,
    envelope,
    pack,
    set_at,
    splice,
)
from tests.broker.strategies import field_types

# ---- truncation, size, non-bytes ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=kind_id)
def test_every_truncation_of_a_valid_payload_is_refused(cls: type) -> None:
    payload = GOLDEN_PAYLOADS[cls]
    for cut in range(len(payload)):
        assert_wire_error(payload[:cut])


def _padded_status(total: int) -> bytes:
    """A valid NodeStatus padded with unknown fields to exactly `total` bytes (bin fields stay under msgpack's
    per-string limit, so only the payload cap can refuse it)."""
    env = envelope(make_node_status())
    env["b"]["pad_a"] = b""
    env["b"]["pad_b"] = b""
    base = len(pack(env))
    want = total - base
    half = want // 2
    env["b"]["pad_a"] = b"\x00" * half
    env["b"]["pad_b"] = b"\x00" * (want - half)
    # bin8/16/32 headers grow with the length; shave the difference off the second pad
    env["b"]["pad_b"] = b"\x00" * (want - half - (len(pack(env)) - total))
    payload = pack(env)
    assert len(payload) == total
    return payload


def test_payload_at_the_size_cap_decodes() -> None:
    assert wire.decode(_padded_status(MAX_PAYLOAD_BYTES)) == make_node_status()


def test_oversized_payload_is_refused_before_unpacking(monkeypatch: pytest.MonkeyPatch) -> None:
    payload = _padded_status(MAX_PAYLOAD_BYTES + 1)

    class Unpacker:
        @staticmethod
        def unpackb(*_args: object, **_kwargs: object) -> object:
            raise AssertionError("an oversized payload reached the msgpack decoder")

    monkeypatch.setattr(codec, "msgpack", Unpacker)
    error = assert_wire_error(payload)
    assert "cap" in str(error)


@pytest.mark.parametrize("size", [MAX_PAYLOAD_BYTES + 1, 16 * MAX_PAYLOAD_BYTES], ids=["cap+1", "16x-cap"])
def test_oversized_garbage_is_refused(size: int) -> None:
    assert_wire_error(b"\x91" * size)


@pytest.mark.parametrize(
    "payload",
    [None, "", "\x83\xa1v\x01", 0, 1, 1.5, True, [], [0x83], {"v": 1}, object()],
    ids=lambda p: type(p).__name__ + ":" + repr(p)[:20],
)
def test_non_bytes_payload_is_refused(payload: object) -> None:
    assert_wire_error(payload)


def test_str_payload_of_a_valid_message_is_refused() -> None:
    assert_wire_error(GOLDEN_PAYLOADS[wire.NodeStatus].decode("latin-1"))


def test_empty_payload_is_refused() -> None:
    assert_wire_error(b"")


def test_trailing_bytes_after_the_envelope_are_refused() -> None:
    assert_wire_error(GOLDEN_PAYLOADS[wire.Heartbeat] + b"\xc0")


# ---- the envelope ----------------------------------------------------------------------------------------------

DELETE = object()
ENVELOPE_EDITS = {
    "missing-version": ("v", DELETE),
    "version-nil": ("v", None),
    "version-next-major": ("v", 2),
    "version-zero": ("v", 0),
    "version-negative": ("v", -1),
    "version-uint64-max": ("v", 2**64 - 1),
    "version-str": ("v", "1"),
    "version-float": ("v", 1.0),
    "version-bool": ("v", True),
    "version-bin": ("v", b"\x01"),
    "missing-kind": ("k", DELETE),
    "kind-nil": ("k", None),
    "kind-unknown": ("k", "node.unknown"),
    "kind-empty": ("k", ""),
    "kind-wrong-case": ("k", "NODE.STATUS"),
    "kind-int": ("k", 1),
    "kind-bin": ("k", b"node.status"),
    "kind-list": ("k", ["node.status"]),
    "missing-body": ("b", DELETE),
    "body-nil": ("b", None),
    "body-list": ("b", []),
    "body-str": ("b", "x"),
    "body-int": ("b", 1),
}


@pytest.mark.parametrize(("key", "value"), ENVELOPE_EDITS.values(), ids=ENVELOPE_EDITS.keys())
def test_defective_envelope_is_refused(key: str, value: object) -> None:
    env = envelope(make_node_status())
    if value is DELETE:
        del env[key]
    else:
        env[key] = value
    assert_wire_error(pack(env), path=key if key != "b" else None)


@pytest.mark.parametrize(
    "doc", [[1, "node.status", {}], 1, "node.status", None, True, {}], ids=repr
)
def test_envelope_that_is_not_a_map_with_a_version_is_refused(doc: object) -> None:
    assert_wire_error(pack(doc))


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"\xc1", id="reserved-byte"),
        pytest.param(b"\xd6\xff\x00\x00\x00\x01", id="timestamp-ext"),
        pytest.param(b"\xc7\x02\x05ab", id="ext8"),
        pytest.param(b"\x81\x01\x02", id="int-map-key"),
        pytest.param(b"\x81\xc3\x02", id="bool-map-key"),
        pytest.param(b"\x81\x90\x02", id="array-map-key"),
    ],
)
def test_msgpack_features_outside_the_contract_are_refused_anywhere(raw: bytes) -> None:
    env = envelope(make_node_status())
    assert_wire_error(raw)
    for path in (("future",), ("facts", "labels", "room"), ("gates", 0)):
        assert_wire_error(splice(env, path, raw))


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(b"\xdd\xff\xff\xff\xff", id="array32-claims-4G-items"),
        pytest.param(b"\xdf\xff\xff\xff\xff", id="map32-claims-4G-entries"),
        pytest.param(b"\xdb\xff\xff\xff\xff", id="str32-claims-4GiB"),
        pytest.param(b"\xc6\xff\xff\xff\xff", id="bin32-claims-4GiB"),
    ],
)
def test_length_headers_larger_than_the_payload_are_refused(header: bytes) -> None:
    assert_wire_error(header)
    assert_wire_error(splice(envelope(make_node_status()), ("future",), header))


@pytest.mark.parametrize("container", ["array", "map"])
def test_containers_over_the_decoder_item_cap_are_refused_even_in_unknown_fields(container: str) -> None:
    n = 4097  # codec._MAX_CONTAINER_ITEMS + 1
    value: object = list(range(n)) if container == "array" else {f"k{i}": i for i in range(n)}
    assert_wire_error(pack(set_at(envelope(make_node_status()), ("future",), value)))


# ---- nesting ---------------------------------------------------------------------------------------------------

def nested(depth: int, container: str) -> bytes:
    """`depth` levels of single-item arrays (or single-entry maps) around nil, as raw msgpack."""
    level = b"\x91" if container == "array" else b"\x81\xa1a"
    return level * depth + b"\xc0"


DEEP_POSITIONS: list[Path] = [("future",), ("node_id",), ("presence",), ("ts",), ("facts",), ("facts", "labels"),
                              ("gates",), ("gates", 0)]


@pytest.mark.parametrize("container", ["array", "map"])
@pytest.mark.parametrize("depth", [1024, 10_000])
def test_deep_nesting_is_refused_anywhere(container: str, depth: int) -> None:
    env = envelope(make_node_status())
    raw = nested(depth, container)
    assert_wire_error(raw)
    for path in DEEP_POSITIONS:
        assert_wire_error(splice(env, path, raw))
    for key in ("v", "k", "b"):
        packed = pack({**env, key: SENTINEL})
        assert_wire_error(packed.replace(pack(SENTINEL), raw))


@pytest.mark.parametrize(
    ("container", "path"),
    [
        pytest.param(container, path, id=f"{container}-at-{dotted(path)}")
        for container in ("array", "map")
        for path in DEEP_POSITIONS[1:]
        # a map where a record is expected is a record with one unknown field: valid and ignored
        if not (container == "map" and path == ("facts",))
    ],
)
def test_moderate_nesting_where_a_value_is_expected_is_refused(container: str, path: Path) -> None:
    assert_wire_error(splice(envelope(make_node_status()), path, nested(100, container)))


@pytest.mark.parametrize("container", ["array", "map"])
@pytest.mark.parametrize("where", ["k", "b.presence", "b.node_id", "b.ts", "b.gates", "b.future"])
def test_nesting_just_under_the_msgpack_stack_limit_raises_only_wire_error(where: str, container: str) -> None:
    """msgpack refuses >= 1024 levels, but 1020 levels unpack; building an error message must not recurse."""
    env = envelope(make_node_status())
    raw = nested(1020, container)
    if where == "k":
        payload = pack({**env, "k": SENTINEL}).replace(pack(SENTINEL), raw)
    else:
        payload = splice(env, (where.split(".")[1],), raw)
    if where == "b.future":  # an unknown field: ignored, whatever it holds
        assert wire.decode(payload) == make_node_status()
    else:
        assert_wire_error(payload)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, "None", id="none"),
        pytest.param(True, "True", id="bool"),
        pytest.param(1.5, "1.5", id="float"),
        pytest.param(-(2**63), repr(-(2**63)), id="int64"),
        pytest.param(10**5000, "<int of 16610 bits>", id="huge-int"),
        pytest.param("x" * 100, repr("x" * 40) + "...", id="long-str"),
        pytest.param("\ud800", repr("\ud800"), id="lone-surrogate"),
        pytest.param(b"abc", "<bytes>", id="bytes"),
        pytest.param({"a": 1}, "<dict>", id="map"),
    ],
)
def test_describe_is_bounded_and_never_renders_containers(value: object, expected: str) -> None:
    assert schema.describe(value) == expected


def test_describe_survives_nesting_that_str_cannot() -> None:
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(RecursionError):
        str(deep)
    assert schema.describe(deep) == "<list>"


# ---- fuzzing ---------------------------------------------------------------------------------------------------

@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes_raise_only_wire_error(data: bytes) -> None:
    assert_decodes_or_wire_error(data)


@FUZZ
@given(
    cls=st.sampled_from(MESSAGE_TYPES),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255), st.sampled_from(["set", "ins", "del"])),
                   min_size=1, max_size=4),
)
def test_mutated_valid_payloads_raise_only_wire_error(cls: type, edits: list[tuple[int, int, str]]) -> None:
    data = bytearray(GOLDEN_PAYLOADS[cls])
    for pos, byte, op in edits:
        i = pos % (len(data) or 1)
        if op == "set" and data:
            data[i] = byte
        elif op == "ins":
            data.insert(i, byte)
        elif data:
            del data[i]
    assert_decodes_or_wire_error(bytes(data))


PLAIN = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@FUZZ
@given(data=st.data())
def test_structured_garbage_in_a_valid_envelope_raises_only_wire_error(data: st.DataObject) -> None:
    cls = data.draw(st.sampled_from(MESSAGE_TYPES))
    body = dict(envelope(make_message(cls))["b"])
    names = [*field_types(cls), "unknown"]
    for name, value in data.draw(st.dictionaries(st.sampled_from(names), PLAIN, max_size=4)).items():
        body[name] = value
    assert_decodes_or_wire_error(pack({"v": 1, "k": cls.KIND, "b": body}))  # type: ignore[attr-defined]


# ---- decode_as and decode_node_message -------------------------------------------------------------------------

def test_decode_as_refuses_another_kind() -> None:
    with pytest.raises(wire.WireError):
        wire.decode_as(GOLDEN_PAYLOADS[wire.Heartbeat], wire.NodeStatus)


CHANNEL_CASES = [pytest.param(ch, cls, id=ch.value) for ch, cls in wire.CHANNEL_KINDS.items()]


def test_every_node_channel_has_a_message_kind() -> None:
    assert set(wire.CHANNEL_KINDS) == set(topics.Channel)


@pytest.mark.parametrize(("channel", "cls"), CHANNEL_CASES)
def test_decode_node_message_accepts_the_channel_kind_from_its_node(channel: topics.Channel, cls: type) -> None:
    message = make_message(cls)
    assert wire.decode_node_message(topics.node_topic(message.node_id, channel), wire.encode(message)) == message


@pytest.mark.parametrize(("channel", "cls"), CHANNEL_CASES)
def test_decode_node_message_refuses_another_kind_on_a_channel(channel: topics.Channel, cls: type) -> None:
    for other in MESSAGE_TYPES:
        if other is not cls:
            with pytest.raises(wire.WireError):
                wire.decode_node_message(topics.node_topic("pi-1", channel), GOLDEN_PAYLOADS[other])


@pytest.mark.parametrize(("channel", "cls"), CHANNEL_CASES)
def test_decode_node_message_refuses_a_node_speaking_for_another(channel: topics.Channel, cls: type) -> None:
    message = make_message(cls)
    assert message.node_id != "pi-2"
    with pytest.raises(wire.WireError) as info:
        wire.decode_node_message(topics.node_topic("pi-2", channel), wire.encode(message))
    assert info.value.path == "b.node_id"


@pytest.mark.parametrize(
    "topic",
    ["", "cloudless/v1/node/pi-1", "cloudless/v1/node/pi-1/status/x", "cloudless/v1/node//status",
     "cloudless/v1/node/+/status", "cloudless/v1/node/pi-1/bogus", "cloudless/v2/node/pi-1/status",
     "cloudless/v1/coord/pi-1/status", "cloudless/v1/node/pi-1/Status"],
)
def test_decode_node_message_refuses_bad_topics(topic: str) -> None:
    with pytest.raises(wire.WireError):
        wire.decode_node_message(topic, GOLDEN_PAYLOADS[wire.NodeStatus])


@pytest.mark.parametrize("payload", [b"", b"\xc1", None, "text"], ids=repr)
def test_decode_node_message_refuses_bad_payloads(payload: object) -> None:
    with pytest.raises(wire.WireError):
        wire.decode_node_message(topics.node_status("pi-1"), payload)

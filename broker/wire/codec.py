"""The msgpack envelope: `{"v": <major>, "k": <kind>, "b": <body>}`.

- `v` is the protocol major version. A different major is rejected; minor evolution is additive (new optional
  fields), which old peers ignore because decoding skips unknown keys.
- The payload size is checked *before* unpacking; msgpack's own limits bound every string, array and map, and
  its stack bounds nesting, so hostile input cannot make the decoder allocate without limit.
- `decode()` raises exactly one error type, `WireError`, whatever the input (tests feed it garbage).
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

import msgpack

from broker.errors import WireError
from broker.wire import topics
from broker.wire.messages import (
    MESSAGE_TYPES,
    CommandReply,
    CommandRequest,
    DesiredState,
    Heartbeat,
    NodeStatus,
    ObservedState,
    OverlayReport,
    PeerDirectory,
    ServiceTable,
    TtyInput,
    TtyOutput,
)
from broker.wire.schema import compile_schema, describe

PROTOCOL_MAJOR = 1
MAX_PAYLOAD_BYTES = 2 * 1024 * 1024
_MAX_CONTAINER_ITEMS = 4096
_MAX_STR = 1024 * 1024 + 1024

KINDS: dict[str, type] = {cls.KIND: cls for cls in MESSAGE_TYPES}  # type: ignore[attr-defined]
M = TypeVar("M")

CHANNEL_KINDS: dict[topics.Channel, type] = {
    topics.Channel.STATUS: NodeStatus,
    topics.Channel.HEARTBEAT: Heartbeat,
    topics.Channel.DESIRED: DesiredState,
    topics.Channel.OBSERVED: ObservedState,
    topics.Channel.CMD: CommandRequest,
    topics.Channel.REPLY: CommandReply,
    topics.Channel.OVERLAY: OverlayReport,
    topics.Channel.PEERS: PeerDirectory,
    topics.Channel.SERVICES: ServiceTable,
    topics.Channel.TTY_IN: TtyInput,
    topics.Channel.TTY_OUT: TtyOutput,
}


def to_body(message: object) -> dict[str, Any]:
    """Validate a message and lower it to plain data (the envelope's `b`)."""
    cls = type(message)
    if cls not in KINDS.values():
        raise WireError(f"{cls.__name__} is not a wire message")
    return compile_schema(cls).to_plain(message)


def encode(message: object) -> bytes:
    """Message -> payload bytes. Raises WireError if the message violates its own constraints (our bug)."""
    body = to_body(message)
    payload = cast(bytes, msgpack.packb({"v": PROTOCOL_MAJOR, "k": type(message).KIND, "b": body}, use_bin_type=True))  # type: ignore[attr-defined]
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise WireError(f"encoded {type(message).__name__} is {len(payload)} bytes, over {MAX_PAYLOAD_BYTES}")
    return payload


def encoded_size(value: object) -> int:
    """The bytes a wire dataclass (a message or a part of one, e.g. one ReplicaSpec) takes once encoded, so a
    sender can keep what it puts in one message under MAX_PAYLOAD_BYTES before building it. Raises WireError, as
    `encode` does, for a value that violates its constraints."""
    body = compile_schema(type(value)).to_plain(value)
    return len(cast(bytes, msgpack.packb(body, use_bin_type=True)))  # type: ignore[attr-defined]


def _unpack(payload: object) -> dict[str, Any]:
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise WireError(f"payload must be bytes, got {type(payload).__name__}")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise WireError(f"payload of {len(payload)} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte cap")
    if len(payload) == 0:
        raise WireError("empty payload")
    try:
        envelope = msgpack.unpackb(
            bytes(payload),
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=_MAX_STR,
            max_bin_len=_MAX_STR,
            max_array_len=_MAX_CONTAINER_ITEMS,
            max_map_len=_MAX_CONTAINER_ITEMS,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises many types (ExtraData, StackError, ValueError, UnicodeDecodeError)
        raise WireError(f"not a valid msgpack document: {type(exc).__name__}") from None
    if not isinstance(envelope, dict):
        raise WireError("envelope must be a map")
    version = envelope.get("v")
    if isinstance(version, bool) or not isinstance(version, int):
        raise WireError("missing or non-integer protocol version", path="v")
    if version != PROTOCOL_MAJOR:
        raise WireError(f"unsupported protocol major version {version} (this build speaks {PROTOCOL_MAJOR})", path="v")
    return envelope


def decode(payload: object) -> object:
    """Payload bytes -> message. Any defect raises WireError, and nothing else."""
    envelope = _unpack(payload)
    kind = envelope.get("k")
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise WireError(f"unknown message kind {describe(kind)}", path="k")
    return compile_schema(cls).from_plain(envelope.get("b"), "b")


def decode_as(payload: object, cls: type[M]) -> M:
    """Decode and require a specific message type."""
    message = decode(payload)
    if not isinstance(message, cls):
        raise WireError(f"expected {cls.__name__}, got {type(message).__name__}", path="k")
    return message


def decode_node_message(topic: str, payload: object) -> object:
    """Decode a message received on a node topic, checking the kind matches the channel and the node id in
    the body matches the topic (a node must not speak for another one)."""
    parsed = topics.parse_node_topic(topic)
    message: Any = decode_as(payload, CHANNEL_KINDS[parsed.channel])
    if message.node_id != parsed.node_id:
        raise WireError(
            f"node_id {message.node_id!r} does not match topic node {parsed.node_id!r}",
            path="b.node_id",
        )
    return message

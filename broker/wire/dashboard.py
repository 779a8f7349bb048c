"""The human-readable JSON rendering of wire messages, used for the dashboard mirror (`cloudless/v1/dash/...`).

Shape: `{"protocol": <major>, "kind": <KIND>, "message": {<every field>}}`, the JSON twin of the msgpack envelope
`{"v", "k", "b"}`. The fields sit in their own object, never beside the envelope keys: a message field may have
any name (CoordinatorStatus has `version`, the coordinator's software version), and sharing one namespace let it
overwrite the protocol version. Bytes become `{"base64": ...}` only when not valid UTF-8, so MQTT Explorer shows
command output as text.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

from broker.wire.codec import PROTOCOL_MAJOR, to_body


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def to_json_obj(message: object) -> dict[str, Any]:
    """Every field, defaults included (a dashboard user should not have to know the defaults)."""
    to_body(message)  # validates
    fields = _jsonable(dataclasses.asdict(message))  # type: ignore[call-overload]
    return {"protocol": PROTOCOL_MAJOR, "kind": type(message).KIND, "message": fields}  # type: ignore[attr-defined]


def to_json(message: object) -> str:
    """Deterministic, compact JSON text for a message."""
    return json.dumps(to_json_obj(message), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

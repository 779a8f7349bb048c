"""Golden bytes per message kind (STYLE §2): a wire format change is never accidental.

`golden/messages.json` maps each KIND to the hex encoding of its fully populated builder message
(tests/broker/builders.py). If the encoding of any kind changes, these tests fail.

To change the format on purpose (and bump PROTOCOL_MAJOR if old peers cannot read the new bytes):

    CLOUDLESS_REGEN_GOLDEN=1 .venv/bin/pytest tests/broker/test_wire_golden.py

then review `git diff tests/broker/golden/` and commit it with the format change.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from broker import wire
from broker.wire.messages import MESSAGE_TYPES
from tests.broker.builders import kind_id, make_message, unpopulated_fields

GOLDEN_FILE = Path(__file__).parent / "golden" / "messages.json"
REGEN = os.environ.get("CLOUDLESS_REGEN_GOLDEN") == "1"


def _load() -> dict[str, str]:
    return json.loads(GOLDEN_FILE.read_text(encoding="utf-8")) if GOLDEN_FILE.exists() else {}


@pytest.fixture(scope="module")
def golden() -> dict[str, str]:
    if REGEN:
        table = {cls.KIND: wire.encode(make_message(cls)).hex() for cls in MESSAGE_TYPES}  # type: ignore[attr-defined]
        GOLDEN_FILE.parent.mkdir(exist_ok=True)
        GOLDEN_FILE.write_text(json.dumps(table, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return _load()


def test_golden_file_covers_exactly_the_message_kinds(golden: dict[str, str]) -> None:
    expected = {cls.KIND for cls in MESSAGE_TYPES}  # type: ignore[attr-defined]
    assert set(golden) == expected, (
        "the golden table and MESSAGE_TYPES differ: add a builder, then regenerate (see this module's docstring)"
    )


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=kind_id)
def test_builder_message_is_fully_populated(cls: type) -> None:
    """Every field, nested ones included, is non-default, so the golden bytes pin every field's encoding."""
    assert unpopulated_fields(make_message(cls)) == []


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=kind_id)
def test_encoding_equals_golden_bytes(cls: type, golden: dict[str, str]) -> None:
    kind = cls.KIND  # type: ignore[attr-defined]
    assert kind in golden, f"no golden bytes for {kind}: regenerate (see this module's docstring)"
    assert wire.encode(make_message(cls)).hex() == golden[kind], (
        f"the wire encoding of {kind} changed; if intended, regenerate (see this module's docstring)"
    )


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=kind_id)
def test_golden_bytes_decode_to_the_builder_message(cls: type, golden: dict[str, str]) -> None:
    kind = cls.KIND  # type: ignore[attr-defined]
    assert kind in golden
    assert wire.decode(bytes.fromhex(golden[kind])) == make_message(cls)

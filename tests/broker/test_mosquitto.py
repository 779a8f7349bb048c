"""The generated Mosquitto configuration (broker/mosquitto.py): queue bounds that do not silently drop what a
coordinator following every node falls behind on, and settings that stay configurable."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.acl import Acl
from broker.errors import BrokerConfigError
from broker.mosquitto import CONF_FILE, MosquittoSettings, render


def conf_lines(settings: MosquittoSettings) -> list[str]:
    return render(settings, Acl())[CONF_FILE].splitlines()


def test_default_queue_bounds_far_exceed_mosquittos_own(tmp_path: Path) -> None:
    lines = conf_lines(MosquittoSettings(out_dir=tmp_path))
    assert "max_queued_messages 100000" in lines
    assert f"max_queued_bytes {64 * 1024 * 1024}" in lines
    assert "max_inflight_messages 20" in lines


def test_queue_bounds_are_configurable(tmp_path: Path) -> None:
    settings = MosquittoSettings(out_dir=tmp_path, max_queued_messages=0, max_queued_bytes=1 << 30,
                                 max_inflight_messages=50)
    lines = conf_lines(settings)
    assert {"max_queued_messages 0", f"max_queued_bytes {1 << 30}", "max_inflight_messages 50"} <= set(lines)


@pytest.mark.parametrize("name", ["max_queued_messages", "max_queued_bytes", "max_inflight_messages"])
def test_negative_bounds_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(BrokerConfigError, match=name):
        MosquittoSettings(out_dir=tmp_path, **{name: -1})  # type: ignore[arg-type]

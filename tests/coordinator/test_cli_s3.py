"""`cloudless coordinator --s3-*`: the flags are checked before anything starts, each refusal naming the flag."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from coordinator.cli import StorageOptions, _storage_options, add_parser
from coordinator.errors import CoordinatorError


def _args(*argv: str, hook: Any = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["coordinator", "--broker", "mqtt://x:1", "--data-dir", "/tmp/d", *argv])
    if hook is not None:
        args.storage_gateway = hook
    return args


async def _hook(parts: Any) -> Any:
    return parts


SETTINGS: Any = SimpleNamespace(pki=True, api_host="127.0.0.1")


def test_no_s3_port_no_gateway() -> None:
    assert _storage_options(_args(hook=_hook), SETTINGS) is None


def test_the_flags_reach_the_gateway() -> None:
    options = _storage_options(_args("--s3-port", "9000", "--s3-admin-credentials", "/tmp/s.json", hook=_hook),
                               SETTINGS)
    assert options == StorageOptions(9000, "127.0.0.1", Path("/tmp/s.json"), _hook)
    assert _storage_options(_args("--s3-port", "9000", "--s3-host", "0.0.0.0", hook=_hook), SETTINGS).host == "0.0.0.0"  # type: ignore[union-attr]


@pytest.mark.parametrize(("argv", "settings", "hook", "message"), [
    (["--s3-port", "70000"], SETTINGS, _hook, "--s3-port: 70000 is not a port"),
    (["--s3-port", "9000"], SimpleNamespace(pki=False, api_host="h"), _hook, "--s3-port needs --pki"),
    (["--s3-port", "9000"], SETTINGS, None, "no S3 gateway"),
], ids=["bad-port", "no-pki", "no-roof"])
def test_refusals_name_the_flag(argv: list[str], settings: Any, hook: Any, message: str) -> None:
    with pytest.raises(CoordinatorError, match=message):
        _storage_options(_args(*argv, hook=hook), settings)

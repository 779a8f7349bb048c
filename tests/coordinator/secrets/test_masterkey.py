"""The master key source: first start creates the file once (0600), a start with secrets and no key refuses,
environment syntax, validation errors that name the source and never the key, rotation keeps old keys."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from coordinator.secrets import masterkey
from coordinator.secrets.envelope import key_id_for
from coordinator.secrets.masterkey import KEY_ENV, KeySource, MasterKeyError

KEY = bytes(range(32))
B64 = base64.b64encode(KEY).decode()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_start_creates_the_key_file_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "state" / "secrets.key"
    first = masterkey.load(KeySource(path), secrets_present=False)
    assert first.created and first.path == path and mode(path) == 0o600
    again = masterkey.load(KeySource(path), secrets_present=True)
    assert not again.created and again.keyring == first.keyring
    assert json.loads(path.read_text())["active"] == first.keyring.active_id
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_creation_ignores_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        masterkey.load(KeySource(tmp_path / "k"), secrets_present=False)
    finally:
        os.umask(old)
    assert mode(tmp_path / "k") == 0o600


def test_secrets_present_and_no_key_refuses(tmp_path: Path) -> None:
    path = tmp_path / "secrets.key"
    with pytest.raises(MasterKeyError, match=r"restore it from your backup .*refusing to create") as info:
        masterkey.load(KeySource(path), secrets_present=True)
    assert str(path) in str(info.value) and KEY_ENV in str(info.value)
    assert not path.exists()


def test_no_source_at_all_is_an_error() -> None:
    with pytest.raises(MasterKeyError, match="--secrets-key-file"):
        masterkey.load(KeySource(), secrets_present=False)


@pytest.mark.parametrize(("value", "active"), [
    pytest.param(B64, key_id_for(KEY), id="bare"),
    pytest.param(f"main:{B64}", "main", id="with-id"),
    pytest.param(f"new:{base64.b64encode(bytes(32)).decode()}, old:{B64}", "new", id="list-first-active"),
])
def test_environment_syntax(value: str, active: str) -> None:
    loaded = masterkey.load(KeySource.from_environ(None, {KEY_ENV: value}), secrets_present=True)
    assert loaded.keyring.active_id == active and not loaded.created
    assert KEY_ENV in loaded.origin


def test_environment_wins_over_the_file_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "k"
    masterkey.load(KeySource(path), secrets_present=False)
    loaded = masterkey.load(KeySource.from_environ(path, {KEY_ENV: f"e:{B64}"}), secrets_present=True)
    assert loaded.keyring.active_id == "e" and "ignored" in loaded.warnings[0]


@pytest.mark.parametrize(("value", "message"), [
    pytest.param("not base64!", "entry 1: not valid base64", id="garbage"),
    pytest.param(base64.b64encode(b"short").decode(), "decodes to 5 bytes", id="short"),
    pytest.param(f"a:{B64},a:{B64}", "appears twice", id="duplicate-id"),
    pytest.param(f"bad/id:{B64}", "entry 1", id="bad-id"),
    pytest.param(f"k:{B64},", "entry 2", id="trailing-comma"),
])
def test_environment_errors_name_the_source_not_the_key(value: str, message: str) -> None:
    with pytest.raises(MasterKeyError, match=message) as info:
        masterkey.load(KeySource(env_value=value), secrets_present=False)
    assert KEY_ENV in str(info.value) and B64 not in str(info.value)


@pytest.mark.parametrize(("content", "message"), [
    pytest.param("", "empty", id="empty"),
    pytest.param("{not json", "not valid JSON", id="json"),
    pytest.param('{"active": "a", "keys": {}}', "expected", id="no-keys"),
    pytest.param(json.dumps({"active": "b", "keys": {"a": B64}}), "active key 'b' is not in", id="active-missing"),
    pytest.param(json.dumps({"keys": {"a": B64}}), "active: must name", id="active-absent"),
    pytest.param(json.dumps({"active": "a", "keys": {"a": "AAAA"}}), "keys.a: decodes to 3 bytes", id="short-key"),
])
def test_file_errors_name_the_path(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "k"
    path.write_text(content)
    with pytest.raises(MasterKeyError, match=message) as info:
        masterkey.load(KeySource(path), secrets_present=False)
    assert str(path) in str(info.value)
    assert path.read_text() == content  # a damaged file is never replaced


def test_a_bare_line_is_a_valid_key_file(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text(B64 + "\n")
    path.chmod(0o600)
    loaded = masterkey.load(KeySource(path), secrets_present=True)
    assert loaded.keyring.active.material == KEY and not loaded.warnings


def test_a_world_readable_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text(B64)
    path.chmod(0o644)
    assert "chmod 600" in masterkey.load(KeySource(path), secrets_present=True).warnings[0]


def test_rotate_adds_an_active_key_and_keeps_the_old_ones(tmp_path: Path) -> None:
    path = tmp_path / "k"
    first = masterkey.load(KeySource(path), secrets_present=False).keyring
    rotated = masterkey.rotate(KeySource(path))
    assert rotated.active_id != first.active_id
    assert rotated.keys[first.active_id] == first.active
    assert masterkey.load(KeySource(path), secrets_present=True).keyring == rotated
    assert mode(path) == 0o600
    assert len(masterkey.rotate(KeySource(path)).keys) == 3


def test_rotate_refuses_an_environment_key() -> None:
    with pytest.raises(MasterKeyError, match=KEY_ENV):
        masterkey.rotate(KeySource(env_value=B64))


def test_source_repr_hides_the_environment_value() -> None:
    assert B64 not in repr(KeySource(env_value=B64))

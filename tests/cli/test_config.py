"""Where the CLI finds its server and token, how it writes its config, and what it says when it cannot connect."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import pytest

from cloudless.client import ConfigError, default_config_path, resolve_config, write_config
from tests.cli.fake_coordinator import FakeCoordinator


def _write(path: Path, data: object, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    path.chmod(mode)
    return path


def _resolve(env: dict[str, str], **flags: str | None) -> tuple[str, str | None, list[str]]:
    warnings: list[str] = []
    cfg = resolve_config(server=flags.get("server"), token=flags.get("token"), config=flags.get("config"),
                         env=env, warn=warnings.append)
    return cfg.server, cfg.token, warnings


# ---- precedence ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("flags", "env", "expected"),
    [
        pytest.param({"server": "http://flag:1", "token": "f"}, {"CLOUDLESS_SERVER": "http://env:2",
                     "CLOUDLESS_TOKEN": "e"}, ("http://flag:1", "f"), id="flag-beats-env-and-file"),
        pytest.param({}, {"CLOUDLESS_SERVER": "http://env:2", "CLOUDLESS_TOKEN": "e"}, ("http://env:2", "e"),
                     id="env-beats-file"),
        pytest.param({}, {}, ("http://file:3", "from-file"), id="file"),
        pytest.param({"token": "f"}, {"CLOUDLESS_SERVER": "http://env:2"}, ("http://env:2", "f"),
                     id="per-setting"),
        pytest.param({"server": "http://flag:1/"}, {}, ("http://flag:1", "from-file"), id="slash-trimmed"),
    ],
)
def test_precedence(tmp_path: Path, flags: dict[str, str], env: dict[str, str], expected: tuple[str, str]) -> None:
    xdg = tmp_path / "xdg"
    _write(xdg / "cloudless" / "config.json", {"server": "http://file:3", "token": "from-file"})
    server, token, _ = _resolve({"XDG_CONFIG_HOME": str(xdg), **env}, **flags)
    assert (server, token) == expected


def test_config_file_location_flag_then_env_then_xdg_then_home(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.json", {"server": "http://a:1"})
    b = _write(tmp_path / "b.json", {"server": "http://b:1"})
    env = {"CLOUDLESS_CONFIG": str(b), "XDG_CONFIG_HOME": str(tmp_path / "x"), "HOME": str(tmp_path / "h")}
    assert _resolve(env, config=str(a))[0] == "http://a:1"
    assert _resolve(env)[0] == "http://b:1"
    assert default_config_path({"XDG_CONFIG_HOME": "/x"}) == Path("/x/cloudless/config.json")
    assert default_config_path({"HOME": "/h"}) == Path("/h/.config/cloudless/config.json")


def test_defaults_without_any_config(tmp_path: Path) -> None:
    assert _resolve({"XDG_CONFIG_HOME": str(tmp_path)}) == ("http://127.0.0.1:8470", None, [])


def test_loose_config_mode_warns(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.json", {"server": "http://a:1", "token": "t"}, mode=0o644)
    _, _, warnings = _resolve({}, config=str(path))
    assert len(warnings) == 1 and "0644" in warnings[0] and f"chmod 600 {path}" in warnings[0]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [("{not json", "not valid JSON"), ("[1]", "must hold a JSON object"), ('{"token": 5}', "'token' must be")],
    ids=["invalid-json", "not-object", "wrong-type"],
)
def test_bad_config_file(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(ConfigError, match=fragment):
        _resolve({}, config=str(path))


def test_explicit_config_must_exist(tmp_path: Path, cli) -> None:
    r = cli("get", "nodes", "--config", str(tmp_path / "missing.json"))
    assert r.code == 2
    assert "config file" in r.err and "does not exist" in r.err and "cloudless up" in r.err


def test_bad_server_url_is_a_usage_error(cli) -> None:
    r = cli("get", "nodes", "--server", "127.0.0.1:8470", "--token", "t")
    assert r.code == 2 and "http(s)://HOST:PORT" in r.err


def test_cli_flag_beats_env_beats_file(fake: FakeCoordinator, cli, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end: only the right token works, so the request succeeding proves which setting won."""
    fake.add_node("pi-1")
    _write(tmp_path / "xdg" / "cloudless" / "config.json", {"server": fake.url, "token": fake.token})
    monkeypatch.delenv("CLOUDLESS_SERVER")
    monkeypatch.delenv("CLOUDLESS_TOKEN")
    assert cli("get", "nodes").code == 0  # file
    monkeypatch.setenv("CLOUDLESS_TOKEN", "wrong")
    assert cli("get", "nodes").code == 1  # env beats file
    assert cli("get", "nodes", "--token", fake.token).code == 0  # flag beats env
    assert [r.headers.get("Authorization") for r in fake.requests] == [
        f"Bearer {fake.token}", "Bearer wrong", f"Bearer {fake.token}"]


# ---- write_config ----------------------------------------------------------------------------------------------

def test_write_config_is_private_and_atomic(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "cloudless" / "config.json"
    write_config(path, "http://127.0.0.1:8470/", "tok")
    assert json.loads(path.read_text()) == {"server": "http://127.0.0.1:8470", "token": "tok"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    write_config(path, "http://127.0.0.1:9000", "tok2")  # replaces, leaves no temporary file behind
    assert json.loads(path.read_text())["token"] == "tok2"
    assert os.listdir(path.parent) == ["config.json"]


def test_write_config_over_a_loose_file_tightens_it(tmp_path: Path) -> None:
    path = _write(tmp_path / "config.json", {}, mode=0o644)
    old_umask = os.umask(0)
    try:
        write_config(str(path), "https://coord.example:8470", "tok")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(("server", "token"), [("ftp://x", "t"), ("http://x:1", "")], ids=["scheme", "empty-token"])
def test_write_config_rejects_bad_values(tmp_path: Path, server: str, token: str) -> None:
    with pytest.raises((ConfigError, ValueError)):
        write_config(tmp_path / "c.json", server, token)
    assert not (tmp_path / "c.json").exists()


# ---- connection and auth errors --------------------------------------------------------------------------------

def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_refused_says_start_a_coordinator(cli) -> None:
    r = cli("get", "nodes", "--server", f"http://127.0.0.1:{_closed_port()}", "--token", "t")
    assert r.code == 1
    assert "connection refused" in r.err
    assert "is the coordinator running? start one with `cloudless up`" in r.err


def test_wrong_token_says_check_token(fake: FakeCoordinator, cli) -> None:
    r = cli("get", "nodes", "--token", "nope")
    assert r.code == 1
    assert "cloudless: error: missing or invalid bearer token" in r.err
    assert "check --token" in r.err and "cloudless up" in r.err and "config.json" in r.err


def test_no_token_at_all_says_how_to_get_one(fake: FakeCoordinator, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLOUDLESS_TOKEN")
    r = cli("get", "workloads")
    assert r.code == 1
    assert "no token is configured" in r.err and "CLOUDLESS_TOKEN" in r.err
    assert "Authorization" not in fake.requests[0].headers


def test_non_json_answer_is_reported(fake: FakeCoordinator, cli) -> None:
    fake.fail_once("GET", "/v1/nodes", 200, b"<html>hello</html>")
    r = cli("get", "nodes")
    assert r.code == 1 and "did not answer with JSON" in r.err and "--server" in r.err


def test_unknown_route_without_envelope(fake: FakeCoordinator, cli) -> None:
    fake.fail_once("GET", "/v1/nodes", 404, b"not here")
    r = cli("get", "nodes")
    assert r.code == 1 and "does not serve GET /v1/nodes" in r.err

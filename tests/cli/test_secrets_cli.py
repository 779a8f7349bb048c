"""`cloudless secrets ...` against the real secrets API (LiveApi: the real Api and Coordinator over real HTTP)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import Result
from tests.coordinator.secrets.test_api import ADMIN_TOKEN, VIEWER_TOKEN, LiveApi

Cli = Callable[..., Result]


@pytest.fixture
def live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveApi]:
    with LiveApi(tmp_path) as api:
        monkeypatch.setenv("CLOUDLESS_SERVER", api.url)
        monkeypatch.setenv("CLOUDLESS_TOKEN", ADMIN_TOKEN)
        yield api


@pytest.fixture
def pw_file(tmp_path: Path) -> Path:
    path = tmp_path / "pw.txt"
    path.write_bytes(b"hunter2\n")
    return path


def test_create_get_reveal_list(live: LiveApi, cli: Cli, pw_file: Path) -> None:
    r = cli("secrets", "create", "prod/db", "--data", "user=app", "--from-file", f"password={pw_file}",
            "--audience", "billing", "--ttl", "90d")
    assert (r.code, r.out) == (0, "secret/prod/db created (version 1; keys: password,user)\n"), r.err
    r = cli("secrets", "get", "prod/db")
    assert r.code == 0 and "Keys:       password, user" in r.out and "Audiences:  billing" in r.out
    assert "hunter2" not in r.out and "expires" in r.out
    r = cli("secrets", "get", "prod/db", "--reveal")
    assert r.code == 0 and "user       app" in r.out and "# prod/db version 1" in r.out
    assert "<8 bytes, not printable" in r.out  # "hunter2\n": shown only with --key or -o json
    r = cli("secrets", "get", "prod/db", "--reveal", "--key", "password")
    assert (r.code, r.out) == (0, "hunter2\n")
    r = cli("secrets", "get", "prod/db", "--reveal", "-o", "json")
    assert base64.b64decode(json.loads(r.out)["data"]["password"]) == b"hunter2\n"
    assert json.loads(cli("secrets", "get", "prod/db", "-o", "json").out)["keys"] == ["password", "user"]
    cli("secrets", "create", "dev/api", "--data", "KEY=k")
    r = cli("secrets", "list", "-A")
    assert r.code == 0 and r.out.splitlines()[0].split()[:3] == ["NAMESPACE", "NAME", "KEYS"]
    assert [line.split()[:2] for line in r.out.splitlines()[1:]] == [["dev", "api"], ["prod", "db"]]
    assert [s["name"] for s in json.loads(cli("secrets", "list", "-n", "prod", "-o", "json").out)["items"]] == ["db"]
    r = cli("secrets", "list")
    assert (r.code, r.out, r.err) == (0, "", "no secrets in namespace default\n")
    assert "name: db" in cli("secrets", "get", "prod/db", "-o", "yaml").out


def test_update_versions_immutable_and_delete(live: LiveApi, cli: Cli, tmp_path: Path) -> None:
    cli("secrets", "create", "prod/db", "--data", "password=one")
    assert cli("secrets", "update", "prod/db", "--data", "password=two", "--expect-version", "1").out == \
        "secret/prod/db updated (version 2)\n"
    assert cli("secrets", "get", "prod/db", "--reveal", "--key", "password").out == "two"
    assert cli("secrets", "get", "prod/db", "--reveal", "--key", "password", "--version", "1").out == "one"
    r = cli("secrets", "update", "prod/db", "--data", "password=three", "--expect-version", "1")
    assert r.code == 1 and "active version is 2, not 1" in r.err and "cloudless: hint: someone updated it" in r.err
    assert cli("secrets", "update", "prod/db", "--audience", "web").out == "secret/prod/db updated (metadata)\n"
    cli("secrets", "create", "prod/tls", "--data", "key=k", "--immutable")
    r = cli("secrets", "update", "prod/tls", "--data", "key=other")
    assert r.code == 1 and "immutable" in r.err and "secrets delete prod/tls" in r.err
    r = cli("secrets", "create", "prod/tls", "--data", "key=k")
    assert r.code == 1 and "already exists" in r.err and "secrets update prod/tls" in r.err
    assert cli("secrets", "delete", "prod/db").out == "secret/prod/db deleted (2 version(s) and its tokens)\n"
    r = cli("secrets", "delete", "prod/db")
    assert r.code == 1 and "not found" in r.err and "secrets list -A" in r.err
    assert cli("secrets", "delete", "prod/db", "--ignore-not-found").code == 0


def test_token_issue_use_list_revoke(live: LiveApi, cli: Cli, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cli("secrets", "create", "prod/db", "--data", "password=s3cr3t", "--audience", "billing")
    r = cli("secrets", "token", "prod/db", "--audience", "billing", "--ttl", "30m", "--max-uses", "2")
    assert r.code == 0 and r.out.count(".") == 2 and "audience billing: 2 use(s)" in r.err
    token_file = tmp_path / "token"
    token_file.write_text(r.out)
    monkeypatch.delenv("CLOUDLESS_TOKEN")  # the token holder has no API credential
    r = cli("secrets", "get", "prod/db", "--access-token-file", str(token_file), "--audience", "billing", "--key",
            "password")
    assert (r.code, r.out) == (0, "s3cr3t")
    r = cli("secrets", "get", "prod/db", "--access-token-file", str(token_file), "--audience", "web")
    assert r.code == 1 and "not for audience 'web'" in r.err and "secrets token prod/db --audience" in r.err
    assert cli("secrets", "get", "prod/db", "--access-token", token_file.read_text().strip(), "--audience",
               "billing").code == 0
    r = cli("secrets", "get", "prod/db", "--access-token-file", str(token_file), "--audience", "billing")
    assert r.code == 1 and "used 2 of 2 times" in r.err
    monkeypatch.setenv("CLOUDLESS_TOKEN", ADMIN_TOKEN)
    r = cli("secrets", "token", "list", "prod/db")
    rows = r.out.splitlines()
    assert r.code == 0 and rows[0].split()[:3] == ["ID", "AUDIENCE", "USES"] and rows[1].split()[1:3] == [
        "billing", "2/2"]
    token_id = rows[1].split()[0]
    assert token_file.read_text().strip() not in r.out
    r = cli("secrets", "token", "revoke", token_id)
    assert r.code == 0 and f"secret token {token_id} revoked" in r.out
    assert json.loads(cli("secrets", "token", "list", "prod/db", "-o", "json").out)["items"][0]["revoked"] is True
    r = cli("secrets", "token", "prod/db", "--audience", "web")
    assert r.code == 1 and "not one the secret allows" in r.err


def test_audit_and_rotate_master_key(live: LiveApi, cli: Cli) -> None:
    cli("secrets", "create", "prod/db", "--data", "password=s3cr3t")
    live.clock.advance(1)
    cli("secrets", "get", "prod/db", "--reveal")
    live.clock.advance(1)
    r = cli("secrets", "rotate-master-key")
    assert r.code == 0 and r.out.startswith("master key rotated: active key ") and "1 of 1 data key(s)" in r.out
    assert "back up the key file" in r.err
    assert cli("secrets", "get", "prod/db", "--reveal", "--key", "password").out == "s3cr3t"
    r = cli("secrets", "audit", "--secret", "prod/db")
    lines = r.out.splitlines()
    assert r.code == 0 and lines[0].split()[:4] == ["TIME", "(UTC)", "ACTION", "RESULT"]
    assert [line.split()[2] for line in lines[1:]] == ["access", "access", "create"]
    assert all(" alice " in line and "127.0.0.1" in line for line in lines[1:])
    assert "s3cr3t" not in r.out
    items = json.loads(cli("secrets", "audit", "--action", "rotate-master-key", "-o", "json").out)["items"]
    assert [(i["action"], i["actor"], i["result"]) for i in items] == [("rotate-master-key", "alice", "ok")]
    assert cli("secrets", "audit", "--result", "denied").err == "no audit records match\n"


def test_viewer_and_usage_errors(live: LiveApi, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    cli("secrets", "create", "prod/db", "--data", "password=s3cr3t")
    monkeypatch.setenv("CLOUDLESS_TOKEN", VIEWER_TOKEN)
    assert cli("secrets", "get", "prod/db").code == 0
    r = cli("secrets", "get", "prod/db", "--reveal")
    assert r.code == 1 and "needs an admin credential or an access token" in r.err
    r = cli("secrets", "create", "prod/x", "--data", "a=b")
    assert r.code == 1 and "may only read" in r.err and "cloudless: hint:" in r.err
    assert cli("secrets", "audit").code == 1
    served: list[tuple[object, ...]] = []
    count = live.api.prom.request

    def counting(*args: object) -> None:
        served.append(args)
        count(*args)  # type: ignore[arg-type]
    monkeypatch.setattr(live.api.prom, "request", counting)
    for argv, message in [
        (("create", "nope", "--data", "a=b"), "expected NAMESPACE/NAME"),
        (("create", "prod/x"), "at least one value"),
        (("create", "prod/x", "--data", "a"), "expected KEY=VALUE"),
        (("create", "prod/x", "--data", "a=1", "--data", "a=2"), "given twice"),
        (("create", "prod/x", "--data", "a=1", "--ttl", "soon"), "expected a duration"),
        (("create", "prod/x", "--from-file", "a=/nonexistent/file"), "--from-file /nonexistent/file"),
        (("get", "prod/db", "--access-token", "t"), "add --audience"),
        (("get", "prod/db", "--key", "password"), "--key prints one value"),
        (("update", "prod/db"), "nothing to update"),
        (("token", "prod/db"), "add --audience"),
        (("token", "revoke"), "needs a token id"),
        (("token", "list", "bad"), "expected NAMESPACE/NAME"),
        (("audit", "--since", "yesterday-ish"), "--since/--until"),
    ]:
        r = cli("secrets", *argv)
        assert r.code == 2 and message in r.err, (argv, r)
    assert served == []  # every one found before any request


def test_help_has_examples(cli: Cli) -> None:
    r = cli("secrets", "--help")
    assert r.code == 0 and "cloudless secrets create prod/db" in r.out and "rotate-master-key" in r.out
    for action in ("create", "get", "list", "update", "delete", "token", "rotate-master-key", "audit"):
        assert cli("secrets", action, "--help").code == 0

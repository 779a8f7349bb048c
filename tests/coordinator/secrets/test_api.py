"""The secrets REST API through real HTTP: the real `Api` of a real `Coordinator` (SqliteStore(":memory:"), the
in-memory FakeBroker) on a loopback port, and a real `cloudless coordinator` process for restarts and the
master-key refusal. `LiveApi` is shared with the CLI tests (tests/cli/test_secrets_cli.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from coordinator.api import Api, serve
from coordinator.http import token_digest
from coordinator.secrets import KeySource, SecretsService
from coordinator.secrets import masterkey as masterkeys
from coordinator.service import Coordinator, CoordinatorConfig
from coordinator.store import SqliteStore
from tests.coordinator.secrets.builders import FakeClock
from tests.pair.fakebus import FakeBroker

ADMIN_TOKEN = "admin-token-for-tests"
VIEWER_TOKEN = "viewer-token-for-tests"
ANONYMOUS = ""
PASSWORD = b"correct horse battery staple"
DB = {"user": b"app", "password": PASSWORD}


def b64(data: dict[str, bytes]) -> dict[str, str]:
    return {k: base64.b64encode(v).decode() for k, v in data.items()}


def unb64(data: dict[str, str]) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in data.items()}


class LiveApi:
    """A real Coordinator and its real Api served from an event loop in a thread, so synchronous clients (urllib,
    the CLI) talk to it over real HTTP. The secrets service runs on `clock`, so tests move its time."""

    def __init__(self, workdir: Path, *, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.key_file = workdir / "secrets.key"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.url = ""
        self.raw: list[bytes] = []  # every response body, for "never a value or a token" checks

    def __enter__(self) -> LiveApi:
        self.thread.start()
        self._run(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        self._run(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def _start(self) -> None:
        self.store = SqliteStore(":memory:")
        self.source = KeySource(self.key_file)
        loaded = masterkeys.load(self.source, secrets_present=False)
        self.secrets = await SecretsService.open(self.store, loaded.keyring, clock=self.clock)
        self.coord = Coordinator(CoordinatorConfig(coordinator_id="test"), store=self.store,
                                 mqtt=FakeBroker().client("coordinator@test"),  # type: ignore[arg-type]
                                 secrets=self.secrets)
        await self.coord.start()
        self.api = Api(self.coord, token_digests={token_digest(ADMIN_TOKEN): ("alice", "admin"),
                                                  token_digest(VIEWER_TOKEN): ("victor", "viewer")},
                       secrets_key_source=self.source)
        self.runner, port = await serve(self.api, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        await self.runner.cleanup()
        await self.coord.stop()
        await self.store.close()

    def request(self, method: str, path: str, body: object = None, *, token: str = ADMIN_TOKEN,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        self.raw.append(raw)
        return status, json.loads(raw or b"null")

    def ok(self, method: str, path: str, body: object = None, *, token: str = ADMIN_TOKEN,
           status: int = 200) -> Any:
        got, doc = self.request(method, path, body, token=token)
        assert got == status, (got, doc)
        return doc

    def refused(self, status: int, method: str, path: str, body: object = None, *,
                token: str = ADMIN_TOKEN) -> dict[str, Any]:
        got, doc = self.request(method, path, body, token=token)
        assert got == status, (got, doc)
        err: dict[str, Any] = doc["error"]
        assert set(err) >= {"message", "field", "errors"}, err
        return err

    def create(self, ns: str, name: str, data: dict[str, bytes] = DB, **extra: object) -> dict[str, Any]:
        return self.ok("POST", f"/v1/secrets/{ns}", {"name": name, "data": b64(data), **extra},  # type: ignore[no-any-return]
                       status=201)

    def reveal(self, ns: str, name: str, body: object = None, *, token: str = ADMIN_TOKEN,
               query: str = "") -> tuple[int, Any]:
        return self.request("POST", f"/v1/secrets/{ns}/{name}/reveal{query}", body, token=token)

    def issue(self, ns: str, name: str, audience: str, **extra: object) -> dict[str, Any]:
        return self.ok("POST", f"/v1/secrets/{ns}/{name}/tokens",  # type: ignore[no-any-return]
                       {"audience": audience, **extra}, status=201)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveApi]:
    with LiveApi(tmp_path) as api:
        yield api


# ---- create / get / list / update / delete --------------------------------------------------------------------

def test_create_get_list_update_delete(live: LiveApi) -> None:
    info = live.create("prod", "db", audiences=["billing"], ttl="90d")
    assert (info["activeVersion"], info["keys"], info["audiences"]) == (1, ["password", "user"], ["billing"])
    assert info["ttlSeconds"] == 90 * 86400 and info["versions"][0]["createdBy"] == "alice"
    assert live.ok("GET", "/v1/secrets/prod/db") == info
    live.create("prod", "api", {"KEY": b"k"})
    live.create("dev", "db", {"KEY": b"k"})
    assert [s["name"] for s in live.ok("GET", "/v1/secrets?namespace=prod")["items"]] == ["api", "db"]
    assert len(live.ok("GET", "/v1/secrets")["items"]) == 3
    updated = live.ok("PUT", "/v1/secrets/prod/db", {"data": b64({"password": b"new"}), "expectVersion": 1})
    assert updated["activeVersion"] == 2 and [v["version"] for v in updated["versions"]] == [1, 2]
    status, doc = live.reveal("prod", "db")
    assert status == 200 and doc["version"] == 2 and unb64(doc["data"]) == {"password": b"new"}
    status, doc = live.reveal("prod", "db", query="?version=1")  # older versions stay readable
    assert status == 200 and unb64(doc["data"]) == DB
    status, doc = live.reveal("prod", "db", {"version": 1})
    assert status == 200 and doc["version"] == 1
    assert live.refused(404, "POST", "/v1/secrets/prod/db/reveal?version=9")["field"] == "version"
    assert live.ok("PUT", "/v1/secrets/prod/db", {"audiences": ["billing", "web"]})["activeVersion"] == 2
    deleted = live.ok("DELETE", "/v1/secrets/prod/db")
    assert deleted["name"] == "db"
    assert live.refused(404, "GET", "/v1/secrets/prod/db")["code"] == "not-found"
    assert live.refused(404, "DELETE", "/v1/secrets/prod/db")["code"] == "not-found"
    metadata = b"".join(r for r in live.raw if b'"data"' not in r)
    assert PASSWORD not in metadata and base64.b64encode(PASSWORD) not in metadata  # metadata never has values


def test_immutable_secret_refuses_updates_with_409(live: LiveApi) -> None:
    live.create("prod", "tls", {"key": b"k"}, immutable=True)
    err = live.refused(409, "PUT", "/v1/secrets/prod/tls", {"data": b64({"key": b"other"})})
    assert err["code"] == "immutable" and "immutable" in err["message"]
    assert live.refused(409, "PUT", "/v1/secrets/prod/tls", {"ttl": "1d"})["code"] == "immutable"
    assert unb64(live.reveal("prod", "tls")[1]["data"]) == {"key": b"k"}


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "db", "data": {"k": "not base64!"}}, "data.k"),
    ({"name": "db", "data": {}}, "data"),
    ({"name": "db", "data": {"k": "eA=="}, "audiences": ["team-*"]}, "audiences[0]"),
    ({"name": "db", "data": {"k": "eA=="}, "ttl": "soon"}, "ttl"),
    ({"name": "db", "data": {"k": "eA=="}, "colour": "red"}, "colour"),
    ({"name": "no/slash", "data": {"k": "eA=="}}, "name"),
    ({"data": {"k": "eA=="}}, "name"),
], ids=["bad-base64", "no-keys", "wildcard-audience", "bad-ttl", "unknown-field", "bad-name", "no-name"])
def test_invalid_create_is_400_naming_the_field(live: LiveApi, body: dict[str, Any], field: str) -> None:
    err = live.refused(400, "POST", "/v1/secrets/prod", body)
    assert err["field"] == field and err["code"] == "invalid", err
    assert any(e["path"] == field for e in err["errors"])


def test_create_twice_is_409_and_bad_json_400(live: LiveApi) -> None:
    live.create("prod", "db")
    assert live.refused(409, "POST", "/v1/secrets/prod", {"name": "db", "data": b64(DB)})["code"] == "exists"
    req = urllib.request.Request(live.url + "/v1/secrets/prod", data=b"{nope", method="POST",
                                 headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(req, timeout=10)
    assert caught.value.code == 400 and "not valid JSON" in json.loads(caught.value.read())["error"]["message"]
    err = live.refused(409, "PUT", "/v1/secrets/prod/db", {"data": b64(DB), "expectVersion": 5})
    assert (err["code"], err["field"]) == ("version-mismatch", "expectVersion")


def test_expired_secret_is_410(live: LiveApi) -> None:
    live.create("prod", "db", audiences=["billing"], ttl="2m")
    live.clock.advance(121)
    assert live.refused(410, "POST", "/v1/secrets/prod/db/reveal")["code"] == "secret-expired"
    assert live.refused(410, "POST", "/v1/secrets/prod/db/tokens", {"audience": "billing"})["code"] == \
        "secret-expired"
    live.ok("PUT", "/v1/secrets/prod/db", {"data": b64(DB)})  # a new value renews it
    assert live.reveal("prod", "db")[0] == 200


# ---- access tokens --------------------------------------------------------------------------------------------

def test_token_reads_the_value_without_an_api_credential(live: LiveApi) -> None:
    live.create("prod", "db", audiences=["billing", "web"])
    issued = live.issue("prod", "db", "billing", ttl="30m", maxUses=2)
    assert issued["maxUses"] == 2 and issued["expiresAt"] - issued["issuedAt"] == 1800 and issued["token"]
    status, doc = live.reveal("prod", "db", {"token": issued["token"], "audience": "billing"}, token=ANONYMOUS)
    assert status == 200 and unb64(doc["data"]) == DB
    items = live.ok("GET", "/v1/secrets/prod/db/tokens")["items"]
    assert [(t["id"], t["uses"], t["audience"]) for t in items] == [(issued["id"], 1, "billing")]
    assert issued["token"].encode() not in json.dumps(items).encode()  # records, never the tokens


@pytest.mark.parametrize(("case", "code"), [
    ("wrong-audience", "token-wrong-audience"),
    ("expired", "token-expired"),
    ("exhausted", "token-exhausted"),
    ("revoked", "token-revoked"),
    ("other-secret", "token-wrong-secret"),
    ("forged", "token-signature-invalid"),
], ids=str)
def test_refused_tokens_get_403_naming_why(live: LiveApi, case: str, code: str) -> None:
    live.create("prod", "db", audiences=["billing", "web"])
    live.create("prod", "other", audiences=["billing"])
    issued = live.issue("prod", "db", "billing", ttl="1h", maxUses=1)
    body = {"token": issued["token"], "audience": "billing"}
    target = "db"
    match case:
        case "wrong-audience":
            body["audience"] = "web"
        case "expired":
            live.clock.advance(3601)
        case "exhausted":
            assert live.reveal("prod", "db", body, token=ANONYMOUS)[0] == 200
        case "revoked":
            assert live.ok("DELETE", f"/v1/secret-tokens/{issued['id']}")["revoked"] is True
        case "other-secret":
            target = "other"
        case "forged":
            head, claims, _sig = issued["token"].split(".")
            body["token"] = f"{head}.{claims}.{base64.urlsafe_b64encode(b'x' * 32).decode().rstrip('=')}"
    status, doc = live.reveal("prod", target, body, token=ANONYMOUS)
    assert status == 403, doc
    assert doc["error"]["code"] == code and doc["error"]["field"] == "token"
    assert doc["error"]["message"]  # says why, e.g. "access token used 1 of 1 times"


def test_token_issue_checks_audience_ttl_and_role(live: LiveApi) -> None:
    live.create("prod", "db", audiences=["billing"])
    assert live.refused(400, "POST", "/v1/secrets/prod/db/tokens", {"audience": "web"})["code"] == \
        "audience-not-allowed"
    assert live.refused(400, "POST", "/v1/secrets/prod/db/tokens", {"audience": "billing", "ttl": "25h"})["field"] \
        == "ttl"
    assert live.refused(400, "POST", "/v1/secrets/prod/db/tokens", {"audience": "billing", "maxUses": 0})["field"] \
        == "maxUses"
    assert live.refused(400, "POST", "/v1/secrets/prod/db/tokens", {})["field"] == "audience"
    assert live.refused(403, "POST", "/v1/secrets/prod/db/tokens", {"audience": "billing"}, token=VIEWER_TOKEN)
    assert live.refused(404, "DELETE", "/v1/secret-tokens/" + "0" * 32)["code"] == "not-found"
    issued = live.issue("prod", "db", "billing")
    assert issued["expiresAt"] - issued["issuedAt"] == 3600 and issued["maxUses"] is None  # default 1h, unlimited


# ---- roles ----------------------------------------------------------------------------------------------------

def test_viewer_reads_metadata_but_cannot_reveal_create_or_audit(live: LiveApi) -> None:
    live.create("prod", "db", audiences=["billing"])
    assert live.ok("GET", "/v1/secrets/prod/db", token=VIEWER_TOKEN)["keys"] == ["password", "user"]
    assert live.ok("GET", "/v1/secrets", token=VIEWER_TOKEN)["items"]
    assert live.refused(403, "POST", "/v1/secrets/prod/db/reveal", token=VIEWER_TOKEN)["code"] == "token-required"
    assert live.refused(403, "POST", "/v1/secrets/prod", {"name": "x", "data": b64(DB)}, token=VIEWER_TOKEN)
    assert live.refused(403, "PUT", "/v1/secrets/prod/db", {"ttl": "1d"}, token=VIEWER_TOKEN)
    assert live.refused(403, "DELETE", "/v1/secrets/prod/db", token=VIEWER_TOKEN)
    assert live.refused(403, "POST", "/v1/secrets-master-key/rotate", token=VIEWER_TOKEN)
    assert live.refused(403, "GET", "/v1/secrets-audit", token=VIEWER_TOKEN)
    # a viewer holding an access token reads through the token like anyone else
    issued = live.issue("prod", "db", "billing")
    status, doc = live.reveal("prod", "db", {"token": issued["token"], "audience": "billing"}, token=VIEWER_TOKEN)
    assert status == 200 and unb64(doc["data"]) == DB


def test_credentials_are_checked(live: LiveApi) -> None:
    live.create("prod", "db")
    assert live.request("GET", "/v1/secrets/prod/db", token=ANONYMOUS)[0] == 401
    assert live.request("GET", "/v1/secrets/prod/db", token="wrong")[0] == 401
    assert live.request("POST", "/v1/secrets/prod/db/reveal", token="wrong")[0] == 401
    assert live.refused(403, "POST", "/v1/secrets/prod/db/reveal", token=ANONYMOUS)["code"] == "token-required"
    assert live.refused(400, "POST", "/v1/secrets/prod/db/reveal", {"token": "x"}, token=ANONYMOUS)["field"] == \
        "audience"


# ---- audit ----------------------------------------------------------------------------------------------------

def test_audit_lists_actions_with_actor_time_source_result_and_never_a_value(live: LiveApi) -> None:
    def then(method: str, path: str, body: object = None, token: str = ADMIN_TOKEN) -> Any:
        live.clock.advance(1)  # records are ordered by time
        return live.request(method, path, body, token=token)[1]

    then("POST", "/v1/secrets/prod", {"name": "db", "data": b64(DB), "audiences": ["billing"]})
    then("GET", "/v1/secrets/prod/db", token=VIEWER_TOKEN)
    then("POST", "/v1/secrets/prod/db/reveal")
    issued = then("POST", "/v1/secrets/prod/db/tokens", {"audience": "billing", "maxUses": 1})
    for _ in range(2):  # the second use is one too many
        then("POST", "/v1/secrets/prod/db/reveal", {"token": issued["token"], "audience": "billing"}, ANONYMOUS)
    then("PUT", "/v1/secrets/prod/db", {"data": b64({"password": b"rotated-" + PASSWORD})})
    then("DELETE", f"/v1/secret-tokens/{issued['id']}")
    then("DELETE", "/v1/secrets/prod/db")
    items = live.ok("GET", "/v1/secrets-audit?namespace=prod&name=db&limit=50")["items"]
    actions = [(r["action"], r["actor"], r["result"]) for r in reversed(items)]
    assert actions == [("create", "alice", "ok"), ("get", "victor", "ok"), ("access", "alice", "ok"),
                       ("token", "alice", "ok"), ("access", "anonymous", "ok"), ("access", "anonymous", "denied"),
                       ("update", "alice", "ok"), ("token-revoke", "alice", "ok"), ("delete", "alice", "ok")]
    for record in items:
        assert record["source"] == "127.0.0.1" and record["at"] > 0, record
    denied = live.ok("GET", "/v1/secrets-audit?action=access&result=denied")["items"]
    assert len(denied) == 1 and "token-exhausted" in denied[0]["reason"] and denied[0]["tokenId"] == issued["id"]
    since = items[0]["at"]
    assert [r["action"] for r in live.ok("GET", f"/v1/secrets-audit?since={since}")["items"]] == ["delete"]
    assert live.ok("GET", "/v1/secrets-audit?actor=victor")["items"][0]["action"] == "get"
    audit_raw = json.dumps(items).encode()
    for secret in (PASSWORD, base64.b64encode(PASSWORD), issued["token"].encode()):
        assert secret not in audit_raw
    assert live.refused(400, "GET", "/v1/secrets-audit?action=peek")["field"] == "action"
    assert live.refused(400, "GET", "/v1/secrets-audit?limit=0")["field"] == "limit"


# ---- master key -----------------------------------------------------------------------------------------------

def test_master_key_rotation_keeps_every_read_working(live: LiveApi) -> None:
    live.create("prod", "db", audiences=["billing"])
    live.ok("PUT", "/v1/secrets/prod/db", {"data": b64({"password": b"v2"})})
    issued = live.issue("prod", "db", "billing")  # signed with the old key
    before = live.ok("GET", "/v1/secrets-master-key")
    stop = threading.Event()

    def keep_reading() -> list[int]:
        statuses = []
        while not stop.is_set():
            statuses.append(live.reveal("prod", "db", query="?version=1")[0])
        return statuses

    with ThreadPoolExecutor(2) as pool:
        readers = [pool.submit(keep_reading) for _ in range(2)]
        rotated = live.ok("POST", "/v1/secrets-master-key/rotate")
        stop.set()
        statuses = [s for r in readers for s in r.result()]
    assert statuses and set(statuses) == {200}  # no downtime
    assert rotated["activeKeyId"] != before["activeKeyId"] and (rotated["rewrapped"], rotated["versions"]) == (2, 2)
    assert sorted(rotated["keyIds"]) == sorted([before["activeKeyId"], rotated["activeKeyId"]])
    assert set(json.loads(live.key_file.read_text())["keys"]) == set(rotated["keyIds"])  # the file keeps both
    assert stat.S_IMODE(live.key_file.stat().st_mode) == 0o600
    assert unb64(live.reveal("prod", "db", query="?version=1")[1]["data"]) == DB
    assert unb64(live.reveal("prod", "db")[1]["data"]) == {"password": b"v2"}
    status, _ = live.reveal("prod", "db", {"token": issued["token"], "audience": "billing"}, token=ANONYMOUS)
    assert status == 200  # a token signed before the rotation still verifies
    assert live.ok("GET", "/v1/secrets-master-key")["activeKeyId"] == rotated["activeKeyId"]
    rotations = live.ok("GET", "/v1/secrets-audit?action=rotate-master-key")["items"]
    assert len(rotations) == 1 and rotations[0]["actor"] == "alice"


def test_rotation_with_the_key_in_the_environment_is_refused(live: LiveApi) -> None:
    live.api.secrets_key_source = KeySource(None, base64.b64encode(bytes(32)).decode())
    err = live.refused(409, "POST", "/v1/secrets-master-key/rotate")
    assert "CLOUDLESS_SECRETS_KEY" in err["message"]


def test_openapi_documents_the_secret_routes(live: LiveApi) -> None:
    doc = live.ok("GET", "/openapi.json", token=ANONYMOUS)
    assert {"/v1/secrets", "/v1/secrets/{namespace}", "/v1/secrets/{namespace}/{name}/reveal",
            "/v1/secret-tokens/{token}", "/v1/secrets-audit", "/v1/secrets-master-key/rotate"} <= set(doc["paths"])
    assert "security" not in doc["paths"]["/v1/secrets/{namespace}/{name}/reveal"]["post"]
    assert {"SecretCreate", "SecretUpdate", "SecretReveal", "SecretTokenRequest"} <= set(doc["components"]["schemas"])


# ---- a real coordinator process -------------------------------------------------------------------------------

@pytest.fixture
def embedded_broker(tmp_path: Path) -> Iterator[Any]:
    from tests.integration.conftest import BrokerUnderTest, make_auth

    broker = BrokerUnderTest(kind="embedded", workdir=tmp_path)
    broker.passwords = make_auth(tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def _coordinator_argv(broker: Any, data_dir: Path, pw_file: Path) -> list[str]:
    return [sys.executable, "-m", "cloudless", "coordinator", "--broker", f"mqtt://{broker.host}:{broker.port}",
            "--api", "127.0.0.1:0", "--data-dir", str(data_dir), "--id", "test", "--username", "coordinator@test",
            "--password-file", str(pw_file)]


@pytest.mark.integration
def test_restart_keeps_secrets_readable_and_a_missing_key_refuses_to_start(
        embedded_broker: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.integration.cluster_env import ApiError, CoordinatorProc

    monkeypatch.delenv(masterkeys.KEY_ENV, raising=False)
    env = dict(os.environ)
    proc = CoordinatorProc(embedded_broker, tmp_path)
    key_file = proc.data_dir / "secrets.key"
    proc.start()
    try:
        assert "created master key at" in _wait_log(proc, "back it up") and str(key_file) in proc.log_tail()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        proc.request("POST", "/v1/secrets/prod", {"name": "db", "data": b64(DB), "audiences": ["billing"]})
        issued = proc.request("POST", "/v1/secrets/prod/db/tokens", {"audience": "billing"})
        proc.request("GET", "/v1/secrets/prod/db")  # a buffered audit record: flushed at shutdown at the latest
    finally:
        proc.stop()
    proc.start()
    try:
        assert proc.log_tail().count("created master key") == 1  # once, on the first start only
        assert unb64(proc.request("POST", "/v1/secrets/prod/db/reveal")["data"]) == DB
        doc = proc.request("POST", "/v1/secrets/prod/db/reveal", {"token": issued["token"], "audience": "billing"},
                           token="")
        assert unb64(doc["data"]) == DB
        actions = [r["action"] for r in proc.request("GET", "/v1/secrets-audit?namespace=prod")["items"]]
        assert actions[-3:] == ["get", "token", "create"]
        with pytest.raises(ApiError) as refused:
            proc.request("POST", "/v1/secrets/prod/db/reveal", {"token": issued["token"], "audience": "web"},
                         token="")
        assert refused.value.status == 403 and refused.value.body["error"]["code"] == "token-wrong-audience"
    finally:
        proc.stop(signal.SIGINT)
    key_file.rename(tmp_path / "backup.key")
    out = subprocess.run(_coordinator_argv(embedded_broker, proc.data_dir, proc.pw_file), capture_output=True,
                         text=True, timeout=60, env=env, check=False)
    assert out.returncode == 2, out
    assert "refusing to create a new key" in out.stdout + out.stderr and str(key_file) in out.stdout + out.stderr
    assert not key_file.exists()
    wrong = {**env, masterkeys.KEY_ENV: base64.b64encode(os.urandom(32)).decode()}
    out = subprocess.run(_coordinator_argv(embedded_broker, proc.data_dir, proc.pw_file), capture_output=True,
                         text=True, timeout=60, env=wrong, check=False)
    assert out.returncode == 2 and "lacks" in out.stdout + out.stderr, out
    (tmp_path / "backup.key").rename(key_file)  # the backup restored: it runs again
    proc.start()
    try:
        assert unb64(proc.request("POST", "/v1/secrets/prod/db/reveal")["data"]) == DB
    finally:
        proc.stop()


def _wait_log(proc: Any, text: str) -> str:
    from tests.integration.cluster_env import until

    return str(until(lambda: text in proc.log_tail() and proc.log_tail(), 10, f"{text!r} in the log",
                     proc.log_tail))


def test_a_forwarding_claim_without_a_coordinator_certificate_is_not_believed(live: LiveApi) -> None:
    """Only a follower proving itself with its coordinator certificate (mutual TLS; tests/integration/test_up.py)
    may say a write came from someone else: here (plain HTTP) the audit keeps the real peer and says so."""
    status, _ = live.request("POST", "/v1/secrets/prod", {"name": "db", "data": b64(DB)},
                             headers={"X-Cloudless-Forwarded-By": "c2", "X-Cloudless-Forwarded-For": "10.9.9.9"})
    assert status == 201
    [record] = live.ok("GET", "/v1/secrets-audit?action=create")["items"]
    assert record["source"] == "127.0.0.1 (claims to be forwarded by a coordinator: not proven)", record

"""`cloudless storage buckets|keys|status` end to end: the CLI against a real coordinator's REST app (served from its
own loop in a thread), whose storage hook is a gateway fake sharing its metadata and keyring with a real S3 endpoint
(the object store's backend over fake storage nodes). A key made with the CLI works over S3 for exactly its grants
and stops working when deleted; `--secret` stores what a workload needs as a cluster secret, which works as it is."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web

from coordinator.api import Api
from coordinator.http import token_digest
from coordinator.secrets import KeySource, SecretsService
from coordinator.secrets import masterkey as masterkeys
from coordinator.service import Coordinator, CoordinatorConfig
from coordinator.store import SqliteStore
from dataplane.s3.http import S3Config, s3_app
from tests.cli.conftest import Result
from tests.coordinator.test_rest_storage import FakeStorage
from tests.dataplane.s3.s3server import REGION, in_thread

T = TypeVar("T")
Runner = Callable[[Coroutine[Any, Any, T]], T]
ADMIN = "storage-cli-admin-token"


@dataclass
class Cluster:
    api: str
    s3: str
    ca_file: Path
    storage: FakeStorage
    run: Callable[[Coroutine[Any, Any, Any]], Any]


@contextmanager
def coordinator_api(tmp: Path, storage: FakeStorage | None) -> Iterator[tuple[str, Runner[Any]]]:
    """A started coordinator (SQLite in memory, in-memory broker, a secrets service) and its REST app on 127.0.0.1,
    all on one loop in a thread, so the synchronous CLI can call it."""
    from tests.pair.fakebus import FakeBroker

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=60)

    async def start() -> tuple[Coordinator, SqliteStore, web.AppRunner, int]:
        store = SqliteStore(":memory:")
        loaded = masterkeys.load(KeySource(tmp / "secrets.key"), secrets_present=False)
        secrets = await SecretsService.open(store, loaded.keyring, clock=time.time)
        coord = Coordinator(CoordinatorConfig(coordinator_id="test", tick_s=0.05), store=store,
                            mqtt=FakeBroker().client("coordinator@test"), secrets=secrets)  # type: ignore[arg-type]
        await coord.start()
        async with asyncio.timeout(30):
            while not coord.acting:
                await asyncio.sleep(0.01)
        api = Api(coord, token_digests={token_digest(ADMIN): ("admin", "admin")}, storage=storage)
        runner = web.AppRunner(api.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return coord, store, runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    coord, store, runner, port = run(start())
    try:
        yield f"http://127.0.0.1:{port}", run
    finally:
        async def stop() -> None:
            await runner.cleanup()
            await coord.stop()
            await store.close()
        run(stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


@pytest.fixture(autouse=True)
def root_handlers() -> Iterator[None]:
    """`cloudless` configures logging onto the stderr pytest captured for that call; the coordinator's thread logs
    later, so the root logger's handlers are put back after each test (no writes into a closed capture)."""
    saved, level = logging.root.handlers[:], logging.root.level
    yield
    logging.root.handlers[:] = saved
    logging.root.setLevel(level)


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    storage = FakeStorage()
    # the gateway's S3 face: secrets and grants from the keyring the REST API makes it reload (looked up at each
    # call: keys_changed replaces the keyring)
    app = s3_app(storage.backend, lambda key: storage.keyring.secret(key),  # noqa: PLW0108
                 S3Config(region=REGION,
                          authorize=lambda key, op, bucket: storage.keyring.authorize(key, op, bucket)))  # noqa: PLW0108
    with in_thread(app, tmp_path) as s3, coordinator_api(tmp_path, storage) as (api, run):
        monkeypatch.setenv("CLOUDLESS_SERVER", api)
        monkeypatch.setenv("CLOUDLESS_TOKEN", ADMIN)
        yield Cluster(api, s3.https, s3.cert_file, storage, run)


def as_workload(monkeypatch: pytest.MonkeyPatch, values: dict[str, str]) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_CA_BUNDLE", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def test_buckets_keys_and_s3_round_trip(cluster: Cluster, cli: Callable[..., Result], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    r = cli("storage", "buckets")
    assert r.code == 0 and "no buckets" in r.err
    assert cli("storage", "buckets", "create", "backups", "--replicas", "3").out == \
        "bucket backups created (3 replicas)\n"
    assert cli("storage", "buckets", "create", "photos").code == 0
    r = cli("storage", "buckets", "create", "photos")
    assert r.code == 1 and "already exists" in r.err
    assert cli("storage", "buckets", "create", "logs", "--compression", "zstd").out == \
        "bucket logs created (2 replicas, zstd-compressed)\n"
    listing = {line.split()[0]: line.split() for line in cli("storage", "buckets").out.splitlines()[1:]}
    assert listing["logs"][3] == "zstd" and listing["photos"][3] == "-", listing
    assert cli("storage", "buckets", "rm", "logs").code == 0

    r = cli("storage", "keys", "create", "backup-job", "--bucket", "backups", "--bucket", "photos:ro")
    assert r.code == 0, r.err
    env = dict(line.split("=", 1) for line in r.out.splitlines())
    assert set(env) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} and "shown this once" in r.err
    r = cli("storage", "keys", "ls")
    assert env["AWS_ACCESS_KEY_ID"] in r.out and "backups:write, photos:read" in r.out
    assert env["AWS_SECRET_ACCESS_KEY"] not in r.out

    as_workload(monkeypatch, {**env, "AWS_ENDPOINT_URL": cluster.s3, "AWS_CA_BUNDLE": str(cluster.ca_file)})
    src = tmp_path / "db.dump"
    src.write_bytes(b"x" * 100_000)
    r = cli("storage", "cp", str(src), "s3://backups/")
    assert r.code == 0, r.err
    r = cli("storage", "cp", str(src), "s3://photos/")  # read-only there
    assert r.code == 1 and "AccessDenied" in r.err and "keys create" in r.err
    assert cli("storage", "ls", "s3://photos").code == 0
    r = cli("storage", "buckets", "-o", "json")
    counts = {b["name"]: (b["objects"], b["bytes"], b["replicas"]) for b in json.loads(r.out)["items"]}
    assert counts == {"backups": (1, 100_000, 3), "photos": (0, 0, 2)}

    r = cli("storage", "buckets", "rm", "backups")
    assert r.code == 1 and "not empty" in r.err
    assert cli("storage", "keys", "rm", env["AWS_ACCESS_KEY_ID"]).code == 0
    r = cli("storage", "ls", "s3://backups")
    assert r.code == 1 and "InvalidAccessKeyId" in r.err
    r = cli("storage", "keys", "rm", env["AWS_ACCESS_KEY_ID"])
    assert r.code == 1 and "not found" in r.err


def test_keys_create_secret_stores_what_a_workload_needs(cluster: Cluster, cli: Callable[..., Result],
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli("storage", "buckets", "create", "media").code == 0
    as_workload(monkeypatch, {"AWS_ENDPOINT_URL": cluster.s3, "AWS_ACCESS_KEY_ID": "AKIDNOTUSEDHERE00",
                              "AWS_SECRET_ACCESS_KEY": "not-used-for-the-rest-calls",
                              "AWS_CA_BUNDLE": str(cluster.ca_file)})
    r = cli("storage", "keys", "create", "transcoder", "--bucket", "media:rw", "--secret", "prod/s3",
            "--endpoint-url", cluster.s3)
    assert r.code == 0, r.err
    assert "stored in secret prod/s3" in r.out and "secretKeyRef" in r.err
    key_id = r.out.split()[2]
    revealed = cluster.run(_reveal(cluster))
    values = {k: base64.b64decode(v).decode() for k, v in revealed["data"].items()}
    assert values["AWS_ACCESS_KEY_ID"] == key_id and values["AWS_ENDPOINT_URL"] == cluster.s3
    assert values["AWS_CA_BUNDLE"] == "/run/cloudless/storage/ca.crt"
    assert values["ca.crt"] == cluster.ca_file.read_text() and values["AWS_REGION"] == REGION
    # the secret's values, as a workload gets them (the CA file where its secretVolume puts it), just work
    ca = tmp_path / "ca.crt"
    ca.write_text(values["ca.crt"])
    as_workload(monkeypatch, {**{k: v for k, v in values.items() if k.startswith("AWS_")}, "AWS_CA_BUNDLE": str(ca)})
    src = tmp_path / "clip.mp4"
    src.write_bytes(b"frames")
    r = cli("storage", "cp", str(src), "s3://media/clip.mp4")
    assert r.code == 0, r.err

    # by default the secret names the in-cluster endpoint every agent serves its workloads: plain HTTP, no CA
    r = cli("storage", "keys", "create", "in-cluster", "--bucket", "media:ro", "--secret", "prod/s3-local")
    assert r.code == 0, r.err
    local = {k: base64.b64decode(v).decode() for k, v in cluster.run(_reveal(cluster, "s3-local"))["data"].items()}
    assert set(local) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION"}
    assert local["AWS_ENDPOINT_URL"] == "http://s3.cloudless" and local["AWS_REGION"] == REGION

    # --endpoint-url and --ca-file are all it needs: no storage config, no AWS_* variables
    as_workload(monkeypatch, {})
    r = cli("storage", "keys", "create", "player", "--bucket", "media:ro", "--secret", "prod/s3-player",
            "--endpoint-url", cluster.s3, "--ca-file", str(cluster.ca_file))
    assert r.code == 0, r.err
    r = cli("storage", "keys", "create", "player", "--bucket", "media:ro", "--secret", "prod/s3-x",
            "--endpoint-url", "ftp://nope", "--ca-file", str(cluster.ca_file))
    assert r.code == 2 and "not http(s)://HOST:PORT" in r.err

    # a secret that cannot be stored (it exists) leaves no key behind
    keys_before = len(cluster.run(cluster.storage.metadata.list_keys()))
    r = cli("storage", "keys", "create", "again", "--bucket", "media", "--secret", "prod/s3",
            "--endpoint-url", cluster.s3, "--ca-file", str(cluster.ca_file))
    assert r.code == 1 and "already exists" in r.err
    assert len(cluster.run(cluster.storage.metadata.list_keys())) == keys_before


async def _reveal(cluster: Cluster, name: str = "s3") -> dict[str, Any]:
    import aiohttp
    async with aiohttp.ClientSession() as session, session.post(
            f"{cluster.api}/v1/secrets/prod/{name}/reveal", json={},
            headers={"Authorization": f"Bearer {ADMIN}"}) as resp:
        assert resp.status == 200, await resp.text()
        doc: dict[str, Any] = await resp.json()
        return doc


def test_status_and_no_storage(cluster: Cluster, cli: Callable[..., Result]) -> None:
    cluster.storage.report = {
        "nodes": [{"node": "pi-1", "zone": "attic", "online": True, "quotaBytes": 20 << 30, "usedBytes": 3 << 20,
                   "chunks": 3},
                  {"node": "phone", "zone": "", "online": False, "quotaBytes": 1 << 30, "usedBytes": 0, "chunks": 0}],
        "chunks": 3, "under_replicated": 1, "unrecoverable": 0,
        "repair": {"copied": 2, "copiedBytes": 2 << 20, "failed": 0, "rateBytesPerS": 1048576.0, "lastRun": None}}
    r = cli("storage", "status")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0].split() == ["NODE", "ZONE", "ONLINE", "QUOTA", "USED", "CHUNKS"]
    assert lines[1].split() == ["pi-1", "attic", "yes", "20Gi", "3Mi", "3"]
    assert "under-replicated:  1" in r.out and "2 copies (2MiB) made, 0 failed" in r.out
    assert "never run" in r.out
    r = cli("storage", "status", "-o", "json")
    assert json.loads(r.out)["underReplicated"] == 1


def test_without_storage_the_cli_says_how_to_turn_it_on(tmp_path: Path, cli: Callable[..., Result],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with coordinator_api(tmp_path, None) as (api, _run):
        monkeypatch.setenv("CLOUDLESS_SERVER", api)
        monkeypatch.setenv("CLOUDLESS_TOKEN", ADMIN)
        for argv in (("status",), ("buckets",), ("keys", "ls"), ("keys", "create", "x", "--bucket", "b:ro")):
            r = cli("storage", *argv)
            assert r.code == 1 and "serves no object storage" in r.err, argv
            assert "cloudless up --s3-port 9000" in r.err


def test_usage_errors_come_before_any_request(cli: Callable[..., Result]) -> None:
    # no server configured at all: these must fail on their arguments, not on the connection
    assert cli("storage", "keys", "create", "x").code == 2
    assert cli("storage", "keys", "create", "x", "--bucket", "b:owner").code == 2
    assert cli("storage", "keys", "rm").code == 2
    assert cli("storage", "buckets", "create").code == 2
    assert cli("storage", "buckets", "create", "b", "--replicas", "0").code == 2
    assert cli("storage", "buckets", "create", "b", "--compression", "lz4").code == 2
    assert cli("storage", "cp", "a", "b").code == 2


def test_the_documented_workload_reads_every_key_the_cli_stores() -> None:
    """docs/storage.md's example workload is one the coordinator accepts, and references exactly the keys
    `keys create --secret` stores (the CA through its volume)."""
    import yaml

    from cloudless.storage_cli import workload_secret
    from coordinator.spec import parse_workload

    text = (Path(__file__).resolve().parents[2] / "docs" / "storage.md").read_text(encoding="utf-8")
    section = text[text.index("### Storage for workloads"):]
    block = section[section.index("```yaml") + len("```yaml"):]
    workload = parse_workload(yaml.safe_load(block[:block.index("```")]))
    referenced = {e.value_from.secret_key_ref.key for e in workload.spec.env if e.value_from is not None}
    referenced |= {i.key for v in workload.spec.secret_volumes for i in v.items}
    if "AWS_CA_BUNDLE" in referenced:  # the example for an HTTPS --endpoint-url
        stored = workload_secret({"id": "CLKX", "secret": "s"}, endpoint="https://s3:9000", region=REGION,
                                 ca_pem=b"PEM")
        assert stored["AWS_CA_BUNDLE"].decode() == f"{workload.spec.secret_volumes[0].mount_path}/ca.crt"
    else:  # the default: the in-cluster endpoint, no CA
        stored = workload_secret({"id": "CLKX", "secret": "s"}, endpoint="http://s3.cloudless", region=REGION,
                                 ca_pem=None)
    assert referenced == set(stored)

"""`cloudless storage` against a running cluster, as a person uses it (issue 20): `cloudless up --s3-port` with two
agents offering storage, and the CLI run as its own process with nothing but the config `up` wrote (the API token
in cli.json, the admin access key in storage.json beside it). Buckets, a multipart upload and its download, a
listing, an access key held to its grants and revoked, the status showing the chunks on both nodes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cluster_env import until
from tests.integration.test_s3_gateway import Cluster

pytestmark = pytest.mark.integration
MiB = 1024 * 1024


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "cluster")
    c.workdir.mkdir()
    try:
        yield c
    finally:
        c.stop()


def storage(cluster: Cluster, *argv: str, env: dict[str, str] | None = None,
            stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CLOUDLESS_"))}
    return subprocess.run([sys.executable, "-m", "cloudless", "storage", *argv, "--config", str(cluster.config)],
                          env={**base, **(env or {})}, input=stdin, capture_output=True, timeout=300, check=False)


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


@pytest.mark.timeout(900)
def test_a_person_uses_the_clusters_storage_with_the_cli(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start()
    cluster.agent("pi-1", "attic")
    cluster.agent("pi-2", "cellar")

    def both_offer() -> bool:
        answer = storage(cluster, "status", "-o", "json")
        if answer.returncode != 0:  # the gateway starting
            return False
        doc = json.loads(answer.stdout)
        return sum(1 for n in doc["nodes"] if n["online"] and n["quotaBytes"] > 0) == 2
    until(both_offer, 180, "both agents offer storage", cluster.tails)

    assert "bucket photos created (2 replicas)" in ok(storage(cluster, "buckets", "create", "photos"))
    blob = os.urandom(9 * MiB + 123)  # above 8 MiB: multipart; 10 distinct chunks (a repeated pattern would dedup)
    src = tmp_path / "holiday.bin"
    src.write_bytes(blob)

    def uploaded() -> bool:  # the gateway reaches the agents over the overlay a moment after they enrol
        return storage(cluster, "cp", str(src), "s3://photos/2025/").returncode == 0
    until(uploaded, 180, "the upload is accepted", cluster.tails)
    listing = ok(storage(cluster, "ls", "--recursive", "s3://photos"))
    assert listing.split()[-2:] == [str(len(blob)), "2025/holiday.bin"]
    piped = storage(cluster, "cp", "s3://photos/2025/holiday.bin", "-")
    assert piped.returncode == 0 and hashlib.sha256(piped.stdout).digest() == hashlib.sha256(blob).digest()
    buckets = json.loads(ok(storage(cluster, "buckets", "-o", "json")))["items"]
    assert [(b["name"], b["objects"], b["bytes"]) for b in buckets] == [("photos", 1, len(blob))]

    made = ok(storage(cluster, "keys", "create", "viewer", "--bucket", "photos:ro"))
    key: dict[str, Any] = dict(line.split("=", 1) for line in made.splitlines())
    creds = cluster.storage_json
    # the AWS_* variables win over storage.json's admin key, setting by setting
    as_viewer = {**key, "AWS_ENDPOINT_URL": creds["endpoint"], "AWS_CA_BUNDLE": creds["ca"]}
    assert "2025/holiday.bin" in ok(storage(cluster, "ls", "-r", "s3://photos", env=as_viewer))
    denied = storage(cluster, "cp", "-", "s3://photos/x", env=as_viewer, stdin=b"no")
    assert denied.returncode == 1 and b"AccessDenied" in denied.stderr
    ok(storage(cluster, "keys", "rm", key["AWS_ACCESS_KEY_ID"]))
    revoked = storage(cluster, "ls", "s3://photos", env=as_viewer)
    assert revoked.returncode == 1 and b"InvalidAccessKeyId" in revoked.stderr

    def chunks_on_both() -> bool:  # agents report their chunk counts with their status, the gateway its totals
        status = json.loads(ok(storage(cluster, "status", "-o", "json")))  # after its next pass
        return status["chunks"] >= 10 and all(n["chunks"] >= 10 for n in status["nodes"])  # R = 2: one copy each
    until(chunks_on_both, 300, "the status shows the 10 chunks on both nodes", cluster.tails)
    table = ok(storage(cluster, "status"))
    assert table.splitlines()[0].split() == ["NODE", "ZONE", "ONLINE", "QUOTA", "USED", "CHUNKS"]
    ok(storage(cluster, "rm", "--recursive", "s3://photos/"))
    assert "bucket photos deleted" in ok(storage(cluster, "buckets", "rm", "photos"))


@pytest.mark.timeout(600)
def test_up_with_agent_storage_is_a_one_machine_object_store(cluster: Cluster) -> None:
    """The README's tour on one machine: `cloudless up --agent-storage 64MiB` makes the local agent a storage node."""
    cluster.start(agent_storage="64MiB")

    def local_offers() -> bool:
        answer = storage(cluster, "status", "-o", "json")
        return answer.returncode == 0 and any(n["online"] and n["quotaBytes"] == 64 * MiB
                                              for n in json.loads(answer.stdout)["nodes"])
    until(local_offers, 180, "the local agent offers 64 MiB", cluster.tails)
    ok(storage(cluster, "buckets", "create", "notes", "--compression", "zstd"))  # as the tour makes it
    note = os.urandom(300_000)

    def stored() -> bool:  # the gateway reaches the agent over the overlay a moment after it offers storage
        return storage(cluster, "cp", "-", "s3://notes/kitchen.txt", stdin=note).returncode == 0
    until(stored, 180, "the upload is accepted", cluster.tails)
    back = storage(cluster, "cp", "s3://notes/kitchen.txt", "-")
    assert back.returncode == 0 and back.stdout == note

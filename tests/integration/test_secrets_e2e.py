"""Secrets end to end with `cloudless up` (mutual TLS, an enrolled agent on real rootful Podman): a container gets a
secret as env and as a file on a tmpfs with the right mode; a spy with coordinator rights capturing every MQTT
message meanwhile sees only ciphertext; the whole data dir (coordinator, broker, agent), Podman's stored container
configuration and every log are free of the value; an update reaches the running workload; deleting the workload
removes the files."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.client import ClientTls, Message, MqttClient, MqttSettings
from tests.integration.cluster_env import SECURE, until
from tests.integration.conftest import require_binary
from tests.integration.test_up import Up

pytestmark = pytest.mark.integration
IMAGE = "localhost/cloudless/busybox:latest"


@pytest.fixture(scope="module")
def up() -> Iterator[Up]:
    require_binary("podman")
    u = Up(Path(tempfile.mkdtemp(prefix="cl-secrets-")))
    u.extra = ["--agent-runtime", "podman"]
    try:
        u.start()
        until(lambda: "Ready" in u.cli("get", "nodes").stdout, 60, "the local node ready")
        yield u
    finally:
        if u.proc is not None and u.proc.poll() is None:
            u.stop()
        u.remove_containers()


def spy_credentials(up: Up) -> tuple[Path, Path, Path]:
    """A client certificate for a second coordinator identity (`cloudless up` registers coordinator@c1..c5)."""
    from coordinator.pki import CertificateAuthority, CertRole, key_pem, make_csr, new_key

    pki = up.data / "coordinator" / "pki"
    ca, _ = CertificateAuthority.load_or_create(pki, "cluster", time.time())
    key = new_key()
    issued = ca.issue(make_csr(key, "coordinator@c5"), identity="coordinator@c5", role=CertRole.COORDINATOR,
                      now=time.time(), lifetime_s=3600)
    d = up.workdir / "spy"
    d.mkdir(exist_ok=True)
    (d / "spy.key").write_bytes(key_pem(key))
    (d / "spy.pem").write_bytes(issued.cert_pem)
    return pki / "ca.pem", d / "spy.pem", d / "spy.key"


def workload(name: str) -> dict[str, object]:
    return {"apiVersion": "cloudless/v1", "kind": "Workload", "metadata": {"name": name}, "spec": {
        "image": IMAGE, "command": ["sleep", "3600"], "replicas": 1,
        "resources": {"limits": {"cpu": "100m", "memory": "32Mi"}},
        "env": [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}],
        "secretVolumes": [{"secret": "db", "mountPath": "/run/secrets/db",
                           "items": [{"key": "password", "path": "password"}]}],
        "securityContext": SECURE}}


def container_of(up: Up, name: str) -> str:
    out = subprocess.run(["podman", "ps", "-q", "--filter", f"label=cloudless.cluster={up.cluster}",
                          "--filter", f"label=cloudless.workload={name}"], capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0] if len(out) == 1 else ""


def in_container(cid: str, script: str) -> str:
    return subprocess.run(["podman", "exec", cid, "sh", "-c", script], capture_output=True, text=True,
                          check=True).stdout


def every_file(root: Path) -> Iterator[Path]:
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            yield p


def forms(value: str) -> list[bytes]:
    raw = value.encode()
    return [raw, base64.b64encode(raw), raw.hex().encode()]


async def capture(up: Up, seconds_until: object, got: list[Message]) -> None:
    ca, cert, key = spy_credentials(up)
    port = up.mqtt
    spy = MqttClient(MqttSettings("127.0.0.1", port, client_id="coordinator@c5",
                                  tls=ClientTls(ca_file=ca, cert_file=cert, key_file=key)))
    await spy.start()
    try:
        await spy.wait_connected(10)
        await spy.subscribe("cloudless/v1/#", got.append)
        await spy.subscribe("homeassistant/#", got.append)
        while not seconds_until():  # type: ignore[operator]
            await asyncio.sleep(0.2)
    finally:
        await spy.stop()


def test_a_secret_reaches_the_container_as_env_and_tmpfs_file_and_nowhere_else(up: Up) -> None:
    value = "s3cr3t-" + secrets.token_hex(8)
    new_value = "r0tated-" + secrets.token_hex(8)
    source = up.workdir / "password"
    source.write_text(value)
    got: list[Message] = []
    done = False
    loop = asyncio.new_event_loop()
    import threading

    spy = threading.Thread(target=lambda: loop.run_until_complete(capture(up, lambda: done, got)), daemon=True)
    spy.start()
    try:
        time.sleep(2)  # the spy is subscribed before the secret exists
        up.cli("secrets", "create", "default/db", "--from-file", f"password={source}", "--data", "user=app")
        spec_file = up.workdir / "web.json"
        spec_file.write_text(json.dumps(workload("web")))
        up.cli("apply", "-f", str(spec_file))
        cid = until(lambda: container_of(up, "web"), 90, "the container running")
        env = until(lambda: in_container(cid, "tr '\\0' '\\n' < /proc/1/environ | grep ^DB_PASSWORD= || true"), 30,
                    "the env var in the workload")
        assert env.strip() == f"DB_PASSWORD={value}"
        assert in_container(cid, "cat /run/secrets/db/password") == value
        assert in_container(cid, "stat -c %a /run/secrets/db/password").strip() == "400"
        assert in_container(cid, "id -u").strip() == "65534"
        fstype = in_container(cid, "awk '$2==\"/run/secrets/db\" {print $3}' /proc/mounts").strip()
        assert fstype == "tmpfs", fstype
        inspect = subprocess.run(["podman", "inspect", cid], capture_output=True, check=True).stdout
        assert value.encode() not in inspect  # not in the container's stored configuration (env is sourced)

        # an update reaches the running workload (default policy: the replica is replaced with the new value)
        source.write_text(new_value)
        up.cli("secrets", "update", "default/db", "--from-file", f"password={source}")
        until(lambda: (c := container_of(up, "web")) and c != cid
              and in_container(c, "cat /run/secrets/db/password") == new_value, 90, "the new value in the workload")
    finally:
        done = True
        spy.join(15)
    # the spy saw traffic (desired states with boxes among it), never a value
    desired = [m for m in got if m.topic.endswith("/desired") and m.payload]
    assert desired, f"the spy captured no desired state ({len(got)} messages)"
    for m in got:
        for v in (value, new_value):
            assert not any(f in m.payload for f in forms(v)), f"plaintext on {m.topic}"
    # nothing on disk or in a log: every file under the cluster's data dir, the CLI's output, podman's record
    for path in every_file(up.data):
        data = path.read_bytes()
        for v in (value, new_value):
            assert not any(f in data for f in forms(v)), f"{v!r} found in {path}"
    assert value not in "".join(up.out) and new_value not in "".join(up.out)
    cid = container_of(up, "web")
    inspect = subprocess.run(["podman", "inspect", cid], capture_output=True, check=True).stdout
    assert new_value.encode() not in inspect

    # deleting the workload removes its secret files from the tmpfs
    tmpfs_dirs = [p for p in (Path("/dev/shm"), Path(os.environ.get("XDG_RUNTIME_DIR", "/nonexistent")))
                  if p.is_dir()]
    files_before = [p for d in tmpfs_dirs  # this cluster's own directory (issue 16: clusters never share one)
                    for p in d.glob(f"cloudless-secrets-{os.geteuid()}/cluster-{up.cluster}/*/web-*")]
    assert files_before, f"the secret files live on a tmpfs: {[list(d.rglob('*')) for d in tmpfs_dirs]}"
    up.cli("delete", "workload", "web", "--wait")
    until(lambda: not any(p.exists() for p in files_before), 30, "secret files removed with the replica")


def test_secret_files_update_in_place_without_a_restart(up: Up) -> None:
    """secretUpdate: files — a new version rewrites the mounted files; the container keeps running."""
    source = up.workdir / "api-token"
    source.write_text("first-" + secrets.token_hex(4))
    up.cli("secrets", "create", "default/api", "--from-file", f"token={source}")
    doc = workload("reader")
    spec = doc["spec"]
    assert isinstance(spec, dict)
    spec.pop("env")
    spec["secretVolumes"] = [{"secret": "api", "mountPath": "/run/secrets/api"}]
    spec["secretUpdate"] = "files"
    spec_file = up.workdir / "reader.json"
    spec_file.write_text(json.dumps(doc))
    up.cli("apply", "-f", str(spec_file))
    cid = until(lambda: container_of(up, "reader"), 90, "the reader running")
    assert in_container(cid, "cat /run/secrets/api/token") == source.read_text()
    second = "second-" + secrets.token_hex(4)
    source.write_text(second)
    up.cli("secrets", "update", "default/api", "--from-file", f"token={source}")
    until(lambda: in_container(cid, "cat /run/secrets/api/token") == second, 60, "the file rewritten in place")
    assert container_of(up, "reader") == cid, "the container was replaced; it should have kept running"
    up.cli("delete", "workload", "reader", "--wait")

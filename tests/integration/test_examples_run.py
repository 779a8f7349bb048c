"""The container examples under examples/ do what their comments say, on a real `cloudless up` with Podman.

Each file is applied with the CLI as its header tells a user to (the secret created first, with the command the
secrets example gives), and each becomes ready on the local node; then what each one shows is checked the way its
comment says to look: the volume's file is served, the secret's files are there, a rollout of a new GREETING
reaches every replica, the hard anti-affinity keeps placement-demo to one replica on a one-node cluster (and says
why the others wait), the pinned example waits for a node it can use. (It found the secrets example's exec probe
naming `test`, which the busybox image has only as a shell builtin.) The process example runs on a non-root
process agent in tests/integration/test_process_example.py. One cluster for the module; every wait is bounded."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cluster_env import until
from tests.integration.conftest import free_port, require_binary
from tests.integration.test_up import REPO, Up

pytestmark = pytest.mark.integration
EXAMPLES = REPO / "examples"
# workload -> replicas ready on a one-node cluster
READY = {"hello": 1, "volumes-demo": 1, "secrets-demo": 1, "probes-demo": 2, "rollout-demo": 3, "service-demo": 2,
         "placement-demo": 1}


@pytest.fixture(scope="module")
def up() -> Iterator[Up]:
    require_binary("podman")
    u = Up(Path(tempfile.mkdtemp(prefix="cl-examples-")))
    u.extra = ["--agent-runtime", "podman", "--no-relay"]
    try:
        u.start()
        until(lambda: "Ready" in u.cli("get", "nodes").stdout, 60, "the local node ready")
        yield u
    finally:
        if u.proc is not None and u.proc.poll() is None:
            u.stop()
        u.remove_containers()
        shutil.rmtree(u.workdir, ignore_errors=True)


def _workloads(up: Up) -> dict[str, dict[str, Any]]:
    items = json.loads(up.cli("get", "workloads", "-o", "json").stdout)["items"]
    return {w["metadata"]["name"]: w for w in items}


def _apply(up: Up, name: str, text: str | None = None) -> None:
    """`cloudless apply -f examples/NAME` (hello's fixed host port moved to a free one, as test_up does)."""
    text = text if text is not None else (EXAMPLES / name).read_text(encoding="utf-8")
    text = text.replace("hostPort: 18081", f"hostPort: {free_port()}")
    path = up.workdir / name
    path.write_text(text, encoding="utf-8")
    out = up.cli("apply", "-f", str(path)).stdout
    assert re.search(r"workload/\S+ (created|configured|unchanged)", out), out


def _exec(up: Up, workload: str, *argv: str) -> str:
    return up.cli("exec", workload, "--", *argv).stdout


@pytest.mark.timeout(400)
def test_container_examples_become_ready(up: Up) -> None:
    ca = up.workdir / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nnot a real one\n-----END CERTIFICATE-----\n")
    # the secrets example's own first step
    up.cli("secrets", "create", "default/app-db", "--data", "user=app", "--data", "password=s3cret!",
           "--from-file", f"ca.crt={ca}")
    for name in ("hello.yaml", "volumes.yaml", "secrets.yaml", "probes.yaml", "rollout.yaml", "service.yaml",
                 "placement.yaml", "placement-pinned.yaml"):
        _apply(up, name)

    def ready() -> bool:
        got = {n: w["status"]["ready"] for n, w in _workloads(up).items()}
        return all(got.get(n) == want for n, want in READY.items())

    until(ready, 240, f"the examples ready: {READY}",
          lambda: up.cli("get", "workloads", "-o", "wide").stdout + up.cli("get", "events").stdout)

    # volumes: the Memory emptyDir holds what the read-only container wrote, and httpd serves it
    assert _exec(up, "volumes-demo", "wget", "-qO-", "http://127.0.0.1:8080/").startswith("written at ")
    # secrets: env and files (the readiness probe already needed tls/ca.crt)
    assert _exec(up, "secrets-demo", "cat", "/etc/app-db/password").rstrip("\n") == "s3cret!"
    assert "not a real one" in _exec(up, "secrets-demo", "cat", "/etc/app-db/tls/ca.crt")  # the header's command
    # env secrets are sourced for the workload's own process only (not for an exec, nor in the container's config)
    environ = _exec(up, "secrets-demo", "cat", "/proc/1/environ")
    assert "DB_USER=app" in environ and "DB_PASSWORD=s3cret!" in environ and "LOG_LEVEL=info" in environ
    # placement: the hard anti-affinity leaves two replicas waiting, and says why; the pinned one finds no node
    assert _workloads(up)["placement-demo"]["status"]["ready"] == 1
    assert "anti" in up.cli("describe", "workload", "placement-demo").stdout.lower()
    assert _workloads(up)["pinned-demo"]["status"]["ready"] == 0
    assert "0/1 nodes available" in up.cli("describe", "workload", "pinned-demo").stdout


@pytest.mark.timeout(300)
def test_rollout_example_rolls_a_new_greeting_out(up: Up) -> None:
    before = _workloads(up)["rollout-demo"]["metadata"]["revision"]
    text = (EXAMPLES / "rollout.yaml").read_text(encoding="utf-8")
    assert "value: hello, revision 1" in text
    _apply(up, "rollout.yaml", text.replace("value: hello, revision 1", "value: hello, revision 2"))
    assert _workloads(up)["rollout-demo"]["metadata"]["revision"] == before + 1
    revision = before + 1

    def rolled_out() -> bool:
        items = json.loads(up.cli("get", "replicas", "--workload", "rollout-demo", "-o", "json").stdout)["items"]
        return len(items) == 3 and all(r.get("ready") and r.get("revision") == revision for r in items)

    until(rolled_out, 180, "3 ready replicas of revision 2",
          lambda: up.cli("get", "replicas", "--workload", "rollout-demo", "-o", "wide").stdout)
    status = up.cli("rollout", "status", "workload", "rollout-demo", "--timeout", "30s", check=False)
    assert status.returncode == 0, status.stdout + status.stderr
    replicas = json.loads(up.cli("get", "replicas", "--workload", "rollout-demo", "-o", "json").stdout)["items"]
    for r in replicas:
        out = up.cli("exec", "rollout-demo", r["id"], "--", "wget", "-qO-", "http://127.0.0.1:8080/").stdout
        assert out.strip() == "hello, revision 2", (r["id"], out)

"""`cloudless up --mosquitto`: the local cluster with Mosquitto as its broker instead of the embedded one — Mosquitto
started as up's child with the cert-auth config and a server certificate from the cluster CA, the coordinator and
the local agent (enrolled with a token) dialling it over mutual TLS, a process workload placed and ready, Ctrl-C
stopping Mosquitto with the rest, the same data dir coming back with its state, and `cloudless down` stopping a
Mosquitto that outlived a killed `up`. Without Mosquitto installed, `up --mosquitto` says what to install.

Real Mosquitto, real processes (~1 min); run under `flock /tmp/cloudless-integration.lock`."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.integration.cluster_env import sleeper, until
from tests.integration.conftest import require_binary
from tests.integration.test_up import Up, _running
from tests.need import require_root

pytestmark = pytest.mark.integration


@pytest.fixture
def up_mosq() -> Iterator[Up]:
    require_binary("mosquitto")
    require_root("the local agent runs the workload as uid 65534 on the process runtime")
    u = Up(Path(tempfile.mkdtemp(prefix="cl-up-mosq-")))
    u.extra = ["--mosquitto", "--local-only", "--agent-runtime", "process"]
    try:
        yield u
    finally:
        if u.proc is not None and u.proc.poll() is None:
            u.stop()
        for proc in u.processes():  # whatever a failed test left: Mosquitto, the coordinator, the agent, the relay
            with contextlib.suppress(psutil.Error):
                proc.kill()
        for run in (u.data / "agent" / "process").glob("*/run.json"):  # the workload's processes outlive the agent
            with contextlib.suppress(OSError, ValueError, KeyError):
                os.killpg(json.loads(run.read_text())["pid"], signal.SIGKILL)
        shutil.rmtree(u.workdir, ignore_errors=True)


def _listens_on(proc: psutil.Process, port: int) -> bool:
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in proc.net_connections("tcp"))


def _workload_pids(up: Up) -> list[int]:
    """The process runtime's recorded pids that are still alive (not zombies)."""
    alive = []
    for run in (up.data / "agent" / "process").glob("*/run.json"):
        pid = json.loads(run.read_text())["pid"]
        with contextlib.suppress(psutil.Error):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
    return alive


def _ready_workload(up: Up) -> bool:
    items = json.loads(up.cli("get", "workloads", "-o", "json").stdout)["items"]
    return bool(items) and items[0]["status"]["ready"] == 1


def test_up_with_mosquitto_runs_a_workload_and_stops_it(up_mosq: Up) -> None:
    up = up_mosq
    up.start()
    text = "".join(up.out)
    assert f"broker:      mqtts://127.0.0.1:{up.mqtt}\n" in text and "(Mosquitto (" in text, text
    assert "embedded;" not in text
    [mosq] = up.processes("mosquitto")  # Mosquitto with the config in this data dir ...
    assert _listens_on(mosq, up.mqtt), "Mosquitto serves the MQTT port"
    assert up.processes("broker") == [], "... and no embedded broker"
    [coord] = up.processes("coordinator")
    assert f"mqtts://127.0.0.1:{up.mqtt}" in coord.cmdline()
    conf = (up.data / "mosquitto" / "mosquitto.conf").read_text().splitlines()
    assert {"use_identity_as_username true", "require_certificate true", f"user {psutil.Process().username()}"} \
        <= set(conf)

    until(lambda: any(n["id"] == up.node and n["online"] for n in json.loads(
        up.cli("get", "nodes", "-o", "json").stdout)["items"]), 60, "the local agent joined through Mosquitto")
    (up.workdir / "sleeper.json").write_text(json.dumps(sleeper("sleeper", 1)))
    up.cli("apply", "-f", str(up.workdir / "sleeper.json"))
    until(lambda: _ready_workload(up), 60, "the process workload ready")
    assert _running(up) == 1

    # Ctrl-C stops Mosquitto with the rest; the workload keeps running (edge autonomy)
    assert up.stop() == 0
    assert "mosquitto stopped" in up.out[-1], up.out[-1]
    until(lambda: not mosq.is_running(), 15, "Mosquitto gone")
    assert not (up.data / "mosquitto" / "pid").exists()

    # the same data dir comes back (Mosquitto's persistence, the node's identity), the workload adopted
    up.proc = None
    up.out.clear()
    up.start()
    until(lambda: _ready_workload(up), 60, "the workload ready again after the restart")
    [mosq] = up.processes("mosquitto")

    # `up` killed outright leaves its children; `cloudless down` stops the Mosquitto it started (and the workload)
    assert up.proc is not None
    up.proc.kill()
    up.proc.wait()
    up.proc = None
    for proc in [*up.processes("coordinator"), *up.processes("agent"), *up.processes("relay")]:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    assert mosq.is_running() and len(_workload_pids(up)) == 1
    down = up.cli("down", "--data-dir", str(up.data))
    assert f"stopped mosquitto (pid {mosq.pid}" in down.stdout, down.stdout
    assert "stopped process" in down.stdout, down.stdout
    until(lambda: not mosq.is_running(), 15, "Mosquitto stopped by cloudless down")
    until(lambda: not _workload_pids(up), 15, "the workload stopped by cloudless down")


def test_up_mosquitto_without_mosquitto_says_what_to_install(tmp_path: Path) -> None:
    """Mosquitto found nowhere (an empty PATH, and sbin directories without it: a stand-in binary that is not
    Mosquitto answers as an old version): `up` refuses before starting anything, naming the package."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "mosquitto").write_text("#!/bin/sh\necho 'mosquitto version 1.6.9'\n")
    (fake / "mosquitto").chmod(0o755)
    done = subprocess.run([sys.executable, "-m", "cloudless", "up", "--mosquitto", "--local-only", "--data-dir",
                           str(tmp_path / "data"), "--config", str(tmp_path / "cli.json")],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "PATH": f"{fake}:{os.environ.get('PATH', '')}"})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Mosquitto 2.0 or later" in done.stderr and "apt install mosquitto" in done.stderr
    assert not (tmp_path / "data").exists(), "nothing started, nothing written"


def _handshake(up: Up) -> bool:
    """Whether Mosquitto completes a TLS handshake with the local node's certificate (TLS 1.2, as the config
    pins: the client certificate, and so the CRL, is checked inside the handshake)."""
    identity = up.data / "agent" / "identity"
    ctx = ssl.create_default_context(cafile=str(identity / "ca.pem"))
    ctx.load_cert_chain(str(identity / "node.pem"), str(identity / "node.key"))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    try:
        with socket.create_connection(("127.0.0.1", up.mqtt), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1"):
            return True
    except (ssl.SSLError, OSError):
        return False


def test_a_revoked_node_is_refused_by_mosquitto(up_mosq: Up) -> None:
    """`cloudless node revoke` makes the coordinator rewrite the CRL; `up` reloads Mosquitto (SIGHUP), which from
    then on refuses the node's certificate (as the embedded broker does). Also: Mosquitto gets the hard open-file
    limit even when `up` was started with a stock soft limit of 1,024 (one descriptor per device)."""
    up = up_mosq
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))  # a stock soft limit, which `up` inherits
    try:
        up.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    [mosq] = up.processes("mosquitto")
    assert mosq.rlimit(psutil.RLIMIT_NOFILE)[0] == hard, "Mosquitto would be capped at ~1,000 devices"
    until(lambda: any(n["id"] == up.node and n["online"] for n in json.loads(
        up.cli("get", "nodes", "-o", "json").stdout)["items"]), 60, "the local agent joined through Mosquitto")
    assert _handshake(up), "the node's certificate is accepted before the revocation"
    up.cli("node", "revoke", up.node)
    until(lambda: not _handshake(up), 30, "Mosquitto refusing the revoked node's certificate")
    assert up.processes("mosquitto"), "reloaded, not restarted or stopped"


def test_up_with_the_embedded_broker_says_what_it_holds(up_mosq: Up) -> None:
    """Without --mosquitto, `up` starts the embedded broker and says how big a fleet it holds and what to use above
    that (the number measured in docs/benchmarks.md)."""
    up = up_mosq
    up.extra = ["--local-only", "--no-agent", "--no-relay"]
    up.start()
    text = "".join(up.out)
    assert "starting broker ..." in text and up.processes("mosquitto") == []
    assert "(embedded; holds about 2,000 nodes on a 2-core machine (docs/benchmarks.md): for more, install " \
           "Mosquitto and run `cloudless up --mosquitto`)" in text, text
    bench = (Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md").read_text()
    assert "| 2,000 | trie | " in bench, "the number up states is the one measured there"

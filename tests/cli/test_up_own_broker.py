"""The production path of docs/install.md, step by step with the same commands: a cluster CA and a Mosquitto server
certificate from `cloudless pki issue-server --create-ca`, Mosquitto configured by `cloudless broker
mosquitto-config --cert-auth` (certificates only: no broker password anywhere), `cloudless up --broker mqtts://...
--advertise ...`, and a device enrolled with a token that reaches the coordinator and then that broker.

Real Mosquitto, real processes; run under `flock /tmp/cloudless-integration.lock`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster_env import until
from tests.integration.conftest import free_port, require_binary, wait_port

pytestmark = pytest.mark.integration
ROLES = '[users]\n"coordinator@local" = "coordinator"\n"dashboard@local" = "dashboard"\n'  # as docs/install.md


def cloudless(*args: str, config: Path | None = None, timeout: float = 60) -> str:
    env = {**os.environ, **({"CLOUDLESS_CONFIG": str(config)} if config else {})}
    done = subprocess.run([sys.executable, "-m", "cloudless", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)
    assert done.returncode == 0, f"cloudless {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


class Procs:
    def __init__(self) -> None:
        self.procs: list[tuple[subprocess.Popen[str], signal.Signals]] = []

    def start(self, argv: list[str], log: Path) -> subprocess.Popen[str]:
        proc = subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "CLOUDLESS_LOG_LEVEL": "WARNING"})
        self.procs.append((proc, signal.SIGINT if argv[0] == sys.executable else signal.SIGTERM))
        return proc

    def stop(self) -> None:
        for proc, sig in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(sig)
        for proc, _ in reversed(self.procs):
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def procs() -> Iterator[Procs]:
    p = Procs()
    try:
        yield p
    finally:
        p.stop()


def test_production_path_with_mosquitto_and_a_token_joined_device(tmp_path: Path, procs: Procs) -> None:
    mosquitto = require_binary("mosquitto")
    data, tls, conf = tmp_path / "cloudless", tmp_path / "tls", tmp_path / "mosquitto"
    mqtt, api, relay = free_port(), free_port(), free_port()
    # 1. the cluster CA and the broker's server certificate, for the names devices dial it at
    cloudless("pki", "issue-server", "--create-ca", "--data-dir", str(data), "--name", "mosquitto",
              "--san", "127.0.0.2,localhost", "--out", str(tls))
    # 2. which certificate names are coordinators and dashboards (every other name is a node)
    (data / "broker-auth").mkdir(mode=0o700)
    (data / "broker-auth" / "roles.toml").write_text(ROLES)
    # 3. Mosquitto with mutual TLS, the same ACL as the embedded broker, the coordinator's revocation list
    cloudless("broker", "mosquitto-config", str(conf), "--auth-dir", str(data / "broker-auth"), "--host", "0.0.0.0",
              "--port", str(mqtt), "--tls-cert", str(tls / "mosquitto.pem"), "--tls-key", str(tls / "mosquitto.key"),
              "--tls-ca", str(tls / "ca.pem"), "--cert-auth", "--crl-file", str(data / "coordinator/pki/crl.pem"),
              "--persistence-dir", str(tmp_path / "mosquitto-data"),
              # as root, Mosquitto drops to `mosquitto` (docs/install.md hands it the files); here they stay root's
              *(["--user", "root"] if os.geteuid() == 0 else []))
    procs.start([mosquitto, "-c", str(conf / "mosquitto.conf")], tmp_path / "mosquitto.log")
    wait_port("127.0.0.2", mqtt)
    # 4. the coordinator (and relay) with that broker, advertised at 127.0.0.2 (a LAN address stand-in)
    config = tmp_path / "cli.json"
    log = tmp_path / "up.log"
    up = procs.start([sys.executable, "-u", "-m", "cloudless", "up", "--broker", f"mqtts://127.0.0.2:{mqtt}",
                      "--advertise", "127.0.0.2", "--no-agent", "--data-dir", str(data), "--api-port", str(api),
                      "--relay-port", str(relay), "--config", str(config)], log)
    until(lambda: "Press Ctrl-C to stop." in log.read_text() or up.poll() is not None, 90, "cloudless up")
    assert up.poll() is None, log.read_text() + (tmp_path / "mosquitto.log").read_text()
    text = log.read_text()
    assert "starting broker" not in text and f"broker mqtts://127.0.0.2:{mqtt}" in text
    assert not (data / "broker-tls").exists()  # no embedded broker, no certificate for one
    # 5. a device joins with a token: enrols at the advertised URL, then dials Mosquitto with its certificate
    token = json.loads(cloudless("token", "create", "-o", "json", config=config))["token"]
    agent_log = tmp_path / "agent.log"
    procs.start([sys.executable, "-u", "-m", "cloudless", "agent", "--token", token, "--node-id", "dev-1",
                 "--data-dir", str(tmp_path / "dev-1"), "--runtime", "process", "--no-overlay",
                 "--metrics-listen", "off"], agent_log)

    def online() -> bool:
        nodes = json.loads(cloudless("get", "nodes", "-o", "json", config=config))["items"]
        return any(n["id"] == "dev-1" and n["online"] for n in nodes)

    until(online, 90, "dev-1 online through Mosquitto",
          lambda: agent_log.read_text()[-2000:] + (tmp_path / "mosquitto.log").read_text()[-2000:])
    meta = json.loads((tmp_path / "dev-1" / "identity" / "enrolment.json").read_text())
    assert meta["api_url"] == f"https://127.0.0.2:{api}" and meta["broker_url"] == f"mqtts://127.0.0.2:{mqtt}"

"""`cloudless up` as a user runs it: one command gives a working, secure single-machine cluster that the CLI
drives right away; Ctrl-C stops everything; the same data dir comes back with its state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster_env import until
from tests.integration.conftest import free_port, require_binary

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


class Up:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.data = workdir / "data"
        self.config = workdir / "cli.json"
        self.mqtt, self.api = free_port(), free_port()
        self.proc: subprocess.Popen[str] | None = None
        self.out: list[str] = []
        self.extra: list[str] = []

    def start(self) -> None:
        argv = [sys.executable, "-m", "cloudless", "up", "--data-dir", str(self.data), "--mqtt-port", str(self.mqtt),
                "--api-port", str(self.api), "--config", str(self.config), *self.extra]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "CLOUDLESS_LOG_LEVEL": "WARNING"})
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            self.out.append(line)
            if "Press Ctrl-C to stop." in line:
                return
            if not line and self.proc.poll() is not None:
                break
        raise AssertionError("cloudless up did not come up:\n" + "".join(self.out))

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        try:
            rest, _ = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rest, _ = self.proc.communicate()
        self.out.append(rest)
        return self.proc.returncode

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "cloudless", *args], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "CLOUDLESS_CONFIG": str(self.config)}, check=False)
        if check:
            assert proc.returncode == 0, f"cloudless {' '.join(args)}: {proc.stdout}\n{proc.stderr}"
        return proc


@pytest.fixture
def up() -> Iterator[Up]:
    require_binary("podman")
    u = Up(Path(tempfile.mkdtemp(prefix="cl-up-")))
    try:
        yield u
    finally:
        if u.proc is not None and u.proc.poll() is None:
            u.stop()
        subprocess.run(["podman", "rm", "-f", "-t", "0", "--filter", "label=cloudless.node=local"],
                       capture_output=True, check=False)


def test_up_gives_a_secure_cluster_the_cli_can_drive(up: Up) -> None:
    up.start()
    text = "".join(up.out)
    assert "https://" in text and "mqtts://" in text, "secure by default: HTTPS API, MQTT over mutual TLS"
    assert oct(up.config.stat().st_mode & 0o777) == "0o600"
    until(lambda: any(n["id"] == "local" and n["online"] for n in json.loads(
        up.cli("get", "nodes", "-o", "json").stdout)["items"]), 30, "the local agent online")
    # the example from the README's tour, on a free host port
    port = free_port()
    example = (REPO / "examples" / "hello.yaml").read_text().replace("hostPort: 18081", f"hostPort: {port}")
    (up.workdir / "hello.yaml").write_text(example)
    assert "workload/hello created" in up.cli("apply", "-f", str(up.workdir / "hello.yaml")).stdout
    until(lambda: json.loads(up.cli("get", "workloads", "-o", "json").stdout)["items"][0]["status"]["ready"] == 1,
          60, "hello ready")
    assert urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read() == b"cloudless test image\n"
    assert "uid=" in up.cli("exec", "hello", "--", "id").stdout
    assert "Placed" in up.cli("describe", "workload", "hello").stdout
    # Ctrl-C stops all three; the same data dir comes back with the workload and the node's identity
    assert up.stop() == 0
    assert "broker stopped" in up.out[-1] and "agent stopped" in up.out[-1]
    up.proc = None
    up.start()
    until(lambda: json.loads(up.cli("get", "workloads", "-o", "json").stdout)["items"][0]["status"]["ready"] == 1,
          60, "hello ready again after the restart")
    up.cli("delete", "workload", "hello")


def test_unauthenticated_and_viewer_requests_are_refused(up: Up) -> None:
    up.start()
    bad = up.cli("get", "nodes", "--token", "not-the-token", check=False)
    assert bad.returncode != 0 and "invalid bearer token" in bad.stdout + bad.stderr  # the API's 401
    viewer = (up.data / "credentials" / "viewer-token").read_text().strip()
    assert up.cli("get", "nodes", "--token", viewer).returncode == 0  # a viewer reads
    denied = up.cli("cordon", "local", "--token", viewer, check=False)  # ... and may not write
    assert denied.returncode != 0 and "may only read" in denied.stdout + denied.stderr  # the API's 403

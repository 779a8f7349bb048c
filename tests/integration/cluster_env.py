"""A real cluster for end-to-end tests: the embedded broker, a `cloudless coordinator` process and agents,
plus a small REST client (urllib) that speaks the API as the CLI does."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator.credentials import write_token_digests
from tests.integration.agent_env import AgentProc
from tests.integration.conftest import BrokerUnderTest


@dataclass
class ApiError(Exception):
    status: int
    body: dict[str, Any]


@dataclass
class CoordinatorProc:
    broker: BrokerUnderTest
    workdir: Path
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    cid: str = "test"  # coordinator id; its broker user is coordinator@<cid>

    def __post_init__(self) -> None:
        suffix = "" if self.cid == "test" else f"-{self.cid}"
        self.data_dir = self.workdir / f"coordinator{suffix}"
        write_token_digests(self.data_dir, {"admin": self.token})
        self.pw_file = self.workdir / f"coord-password{suffix}"
        self.pw_file.write_text(self.broker.passwords[f"coordinator@{self.cid}"])
        self.log_path = self.workdir / f"coordinator{suffix}.log"
        self.port = 0

    def start(self) -> None:
        argv = [sys.executable, "-m", "cloudless", "coordinator", "--broker",
                f"mqtt://{self.broker.host}:{self.broker.port}", "--api", f"127.0.0.1:{self.port}",
                "--data-dir", str(self.data_dir), "--id", self.cid, "--username", f"coordinator@{self.cid}",
                "--password-file", str(self.pw_file), *self.extra]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        assert "API on" in line, f"coordinator did not start: {line!r}\n{self.log_tail()}"
        self.url = line.split("API on ", 1)[1].split()[0]
        self.port = int(self.url.rsplit(":", 1)[1])

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log_tail(self, n: int = 80) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def request(self, method: str, path: str, body: object | None = None, *, token: str | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {token if token is not None else self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, json.loads(exc.read() or b"{}")) from None

    def workload(self, name: str, ns: str = "default") -> dict[str, Any]:
        return self.request("GET", f"/v1/workloads/{ns}/{name}")  # type: ignore[no-any-return]

    def apply(self, doc: dict[str, Any]) -> dict[str, Any]:
        meta = doc["metadata"]
        return self.request("PUT", f"/v1/workloads/{meta.get('namespace', 'default')}/{meta['name']}", doc)  # type: ignore[no-any-return]


def until(pred: Callable[[], object], timeout: float, what: str, *logs: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(0.1)
    detail = "\n".join(f"--- log ---\n{log()}" for log in logs)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{detail}")


# what the secure default admission policy asks of every workload
SECURE = {"runAsNonRoot": True, "runAsUser": 65534, "readOnlyRootFilesystem": True,
          "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def sleeper(name: str, replicas: int, **spec: object) -> dict[str, Any]:
    """A process-runtime workload: `sleep 3600` (nothing to pull, starts at once)."""
    return {"apiVersion": "cloudless/v1", "kind": "Workload", "metadata": {"name": name},
            "spec": {"image": "none", "command": ["sleep", "3600"], "replicas": replicas,
                     "resources": {"requests": {"cpu": "10m", "memory": "8Mi"}},
                     # the process runtime cannot make a read-only root filesystem (it refuses rather than pretend)
                     "securityContext": {k: v for k, v in SECURE.items() if k != "readOnlyRootFilesystem"},
                     **spec}}


def httpd_workload(name: str, *, replicas: int = 3, image: str = "localhost/cloudless/busybox:latest",
                   readiness_path: str = "/", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "cloudless/v1", "kind": "Workload", "metadata": {"name": name},
        "spec": {
            "image": image, "command": ["httpd", "-f", "-p", "8080", "-h", "/www"], "replicas": replicas,
            "resources": {"requests": {"cpu": "50m", "memory": "16Mi"}},
            "ports": [{"containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": readiness_path, "port": 8080}, "periodSeconds": 0.5,
                               "failureThreshold": 2},
            "placement": {"spread": "node"},
            "securityContext": SECURE,
            **spec,
        },
    }


def agents_for(broker: BrokerUnderTest, nodes: list[str], runtime: str = "podman") -> list[AgentProc]:
    out = []
    for i, node in enumerate(nodes):
        a = AgentProc(node_id=node, broker=broker, runtime=runtime,
                      extra=["--zone", f"zone-{i % 3}", "--labels", f"idx={i}"])
        if runtime == "podman":
            a.extra += ["--podman-socket", str(a.workdir / "podman.sock")]
        out.append(a)
    return out


def env_ok() -> bool:
    return os.geteuid() == 0

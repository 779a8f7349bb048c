"""Real brokers for integration tests: the embedded broker (as its own process, through the CLI) and Mosquitto
(with the configuration `cloudless broker mosquitto-config` generates). Both get the same users and roles."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from broker import mosquitto
from broker.acl import Acl, Role
from broker.auth import AuthFiles
from broker.client import MqttSettings, Secret, Will
from broker.passwords import hash_password
from tests.integration.rawmqtt import RawClient
from tests.need import unavailable

USERS = {
    "coordinator@test": Role.COORDINATOR,
    "coordinator@other": Role.COORDINATOR,
    "coordinator@c1": Role.COORDINATOR,
    "coordinator@c2": Role.COORDINATOR,
    "coordinator@c3": Role.COORDINATOR,
    "dashboard@test": Role.DASHBOARD,
    "dashboard@other": Role.DASHBOARD,
    "A": Role.NODE,
    "B": Role.NODE,
    "C": Role.NODE,
    "D": Role.NODE,
}


def require_binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    if path is None:
        unavailable(f"{name} is not installed: run scripts/install-system-deps.sh (make test does)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


@dataclass
class BrokerUnderTest:
    kind: str
    workdir: Path
    host: str = "127.0.0.1"
    port: int = 0
    passwords: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def auth_dir(self) -> Path:
        return self.workdir / "auth"

    def settings(self, user: str, *, will: Will | None = None, clean: bool = True, keepalive: int = 30,
                 **kw: object) -> MqttSettings:
        return MqttSettings(self.host, self.port, client_id=user, username=user,
                            password=Secret(self.passwords[user]), will=will, clean_session=clean,
                            keepalive_s=keepalive, **kw)  # type: ignore[arg-type]

    def raw(self, user: str | None = None, *, password: str | None = None, **kw: object) -> tuple[RawClient, int]:
        client = RawClient(self.host, self.port)
        pw = password if password is not None else (self.passwords.get(user) if user else None)
        rc = client.connect(user or "anon", username=user, password=pw, **kw)  # type: ignore[arg-type]
        return client, rc

    def start(self) -> None:
        if self.kind == "embedded":
            argv = [sys.executable, "-m", "cloudless", "--log-level", "WARNING", "broker", "--host", self.host,
                    "--port", str(self.port), "--auth-dir", str(self.auth_dir)]
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=open(self.workdir / "broker.log", "ab"))
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline().decode()
            assert "listening on" in line, f"embedded broker did not start: {line!r}; see {self.workdir}/broker.log"
            self.port = int(line.rsplit(":", 1)[1])
        else:
            binary = require_binary("mosquitto")
            if not self.port:
                self.port = free_port()
            settings = mosquitto.MosquittoSettings(
                out_dir=self.workdir / "mosquitto", host=self.host, port=self.port,
                run_as_user="root" if os.geteuid() == 0 else None, persistence_dir=self.workdir / "mosq-data",
            )
            mosquitto.write(settings, AuthFiles.load(self.auth_dir))
            self.proc = subprocess.Popen([binary, "-c", str(settings.out_dir / mosquitto.CONF_FILE)],
                                         stdout=open(self.workdir / "broker.log", "ab"), stderr=subprocess.STDOUT)
            wait_port(self.host, self.port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def make_auth(workdir: Path) -> dict[str, str]:
    passwords = {user: f"pw-{user}-{os.getpid()}" for user in USERS}
    roles = {u: r for u, r in USERS.items() if r is not Role.NODE}
    AuthFiles(users={u: hash_password(p, iterations=1000) for u, p in passwords.items()},
              acl=Acl(user_roles=roles)).save(workdir / "auth")
    return passwords


@pytest.fixture(params=["embedded", "mosquitto"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BrokerUnderTest]:
    b = BrokerUnderTest(kind=request.param, workdir=tmp_path)
    b.passwords = make_auth(tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.stop()

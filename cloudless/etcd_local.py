"""Local etcd members for `cloudless up --coordinators N`: an N-member cluster on loopback, data under the data dir.

For trying replicated coordinators on one machine. Production runs etcd on three hosts with TLS (docs/ha.md); this
starts plain-HTTP members bound to 127.0.0.1 only, so nothing outside the machine can reach them.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CLIENT_PORT_BASE = 23790
PEER_PORT_BASE = 23800
# etcd 3.4 runs only on amd64, ppc64le and s390x unless ETCD_UNSUPPORTED_ARCH names the architecture it runs on
# (Go's GOARCH); a Raspberry Pi is arm64 (aarch64) or arm (armv7l/armv6l)
SUPPORTED_MACHINES = frozenset({"x86_64", "AMD64", "amd64", "ppc64le", "s390x"})
GOARCH = {"aarch64": "arm64", "arm64": "arm64", "armv7l": "arm", "armv6l": "arm", "i686": "386", "i386": "386"}


class EtcdUnavailable(Exception):
    """etcd is not installed or a member did not come up; the message says what to do."""


@dataclass(frozen=True)
class Member:
    name: str
    client_port: int
    peer_port: int

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"


def members(count: int, client_base: int = CLIENT_PORT_BASE, peer_base: int = PEER_PORT_BASE) -> list[Member]:
    return [Member(f"m{i + 1}", client_base + i, peer_base + i) for i in range(count)]


def store_url(ms: list[Member]) -> str:
    return "etcd://" + ",".join(f"127.0.0.1:{m.client_port}" for m in ms)


def argv(binary: str, m: Member, ms: list[Member], data_dir: Path, *, new: bool) -> list[str]:
    cluster = ",".join(f"{x.name}={x.peer_url}" for x in ms)
    return [binary, "--name", m.name, "--data-dir", str(data_dir / m.name),
            "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
            "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", cluster, "--initial-cluster-token", "cloudless-local",
            "--initial-cluster-state", "new" if new else "existing",
            "--heartbeat-interval", "100", "--election-timeout", "1000", "--logger", "zap", "--log-level", "warn"]


def member_env(machine: str, base: dict[str, str]) -> dict[str, str]:
    """The members' environment: `base`, plus ETCD_UNSUPPORTED_ARCH where etcd 3.4 would otherwise refuse to start
    (`machine` is platform.machine()). A value the user set is kept."""
    if machine in SUPPORTED_MACHINES or "ETCD_UNSUPPORTED_ARCH" in base:
        return dict(base)
    return {**base, "ETCD_UNSUPPORTED_ARCH": GOARCH.get(machine, machine)}


def start(ms: list[Member], data_dir: Path, log_dir: Path) -> list[subprocess.Popen[bytes]]:
    """Start every member (a data dir from an earlier run is reused: the cluster keeps its state)."""
    binary = shutil.which("etcd")
    if binary is None:
        raise EtcdUnavailable("etcd is not installed: `apt-get install etcd-server` (Debian/Raspberry Pi OS), "
                              "or run `scripts/install-system-deps.sh`")
    for m in ms:
        busy = _port_busy(m.client_port) or _port_busy(m.peer_port)
        if busy:
            raise EtcdUnavailable(f"port {m.client_port} or {m.peer_port} is taken (is another `cloudless up "
                                  "--coordinators` running?); stop it first")
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    log_dir.mkdir(parents=True, exist_ok=True)
    env = member_env(platform.machine(), dict(os.environ))
    procs = []
    for m in ms:
        new = not (data_dir / m.name / "member").exists()
        log = open(log_dir / f"etcd-{m.name}.log", "ab")  # noqa: SIM115 (the child owns it)
        procs.append(subprocess.Popen(argv(binary, m, ms, data_dir, new=new), stdout=log, stderr=log,
                                      env=env, start_new_session=True))
    return procs


def wait_healthy(ms: list[Member], timeout: float = 30.0) -> None:
    """Until every member answers /health with a leader elected (bounded)."""
    import json
    import urllib.request

    deadline = time.monotonic() + timeout
    pending = list(ms)
    while pending and time.monotonic() < deadline:
        m = pending[0]
        try:
            with urllib.request.urlopen(m.client_url + "/health", timeout=2) as resp:  # noqa: S310 (loopback http)
                if json.loads(resp.read()).get("health") in ("true", True):
                    pending.pop(0)
                    continue
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    if pending:
        raise EtcdUnavailable(f"etcd members {', '.join(m.name for m in pending)} not healthy after {timeout:.0f}s; "
                              "see the etcd-*.log files in the data dir")


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0

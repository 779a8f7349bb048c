"""A real etcd cluster for tests: N members (3 by default) on loopback, free ports, data in a temporary directory.

Use it as a context manager; every member process is killed on exit, whatever the test did:

    with running_etcd_cluster(tmp_path) as cluster:
        store = await open_etcd_store(cluster.url, root="/t")
        cluster.kill(0)             # SIGKILL one member (quorum kept: 2 of 3)
        cluster.kill(1)             # quorum lost
        cluster.restart(0)          # same data dir, same ports; quorum back
        cluster.wait_healthy()

`running_etcd_cluster(workdir, tls=True)` serves clients over TLS with client-certificate authentication (peers
stay on plain HTTP): certificates from the project's own CertificateAuthority, in `cluster.ca_file`,
`cluster.client_cert`, `cluster.client_key`; `cluster.url` is then etcds://...

Members are addressed by index (0..size-1; named m1..mN). `wait_healthy()` polls each running member's /health
endpoint (true only when that member sees a leader and can serve a quorum read), bounded by its timeout.
`require_binary("etcd")` fails the test under CI when etcd is missing, and skips it loudly elsewhere.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from coordinator import pki
from tests.integration.conftest import free_port, require_binary

START_TIMEOUT_S = 30.0


@dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def client_url(self, tls: bool) -> str:
        return f"{'https' if tls else 'http'}://{self.endpoint}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class EtcdCluster:
    workdir: Path
    size: int = 3
    tls: bool = False
    binary: str = ""
    token: str = field(default_factory=lambda: f"cloudless-test-{uuid.uuid4().hex[:12]}")
    members: list[EtcdMember] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.binary = self.binary or require_binary("etcd")
        self._pick_ports()
        if self.tls:
            self._write_certificates()

    def _pick_ports(self) -> None:
        self.members = [EtcdMember(f"m{i + 1}", free_port(), free_port(), self.workdir / f"m{i + 1}.etcd",
                                   self.workdir / f"m{i + 1}.log") for i in range(self.size)]

    # ---- TLS -------------------------------------------------------------------------------------------------

    @property
    def ca_file(self) -> Path:
        return self.workdir / "tls" / "ca.pem"

    @property
    def client_cert(self) -> Path:
        return self.workdir / "tls" / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.workdir / "tls" / "client.key"

    def _write_certificates(self) -> None:
        now = time.time()
        ca = pki.CertificateAuthority.create("etcd-test", now)
        server_key, client_key = pki.new_key(), pki.new_key()
        server = ca.issue_server(server_key, hosts=["127.0.0.1", "localhost"], now=now, lifetime_s=86400)
        client = ca.issue(pki.make_csr(client_key, "coordinator"), identity="coordinator",
                          role=pki.CertRole.COORDINATOR, now=now, lifetime_s=86400)
        self.ca_file.parent.mkdir(parents=True, exist_ok=True)
        for path, data in [(self.ca_file, ca.cert_pem), (self.workdir / "tls" / "server.pem", server.cert_pem),
                           (self.workdir / "tls" / "server.key", pki.key_pem(server_key)),
                           (self.client_cert, client.cert_pem), (self.client_key, pki.key_pem(client_key))]:
            path.write_bytes(data)

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context

    # ---- addresses -------------------------------------------------------------------------------------------

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    @property
    def url(self) -> str:
        """The `--store` URL naming every member: etcd://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3 (etcds:// with TLS)"""
        return ("etcds://" if self.tls else "etcd://") + ",".join(self.endpoints)

    # ---- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        for attempt in range(3):
            for i in range(self.size):
                self.restart(i, wait=False)
            try:
                self.wait_healthy()
                return
            except RuntimeError as exc:
                # a free port handed out by free_port() can be taken by another process before etcd binds it:
                # start again on other ports (a fresh cluster: new data dirs, since the peer URLs change)
                if "address already in use" not in str(exc) or attempt == 2:
                    raise
                self.close()
                for m in self.members:
                    shutil.rmtree(m.data_dir, ignore_errors=True)
                self._pick_ports()

    def restart(self, index: int, *, wait: bool = False) -> None:
        """(Re)start member `index` on its own ports and data dir; `wait` waits until the running members are
        healthy (needs a quorum)."""
        m = self.members[index]
        if m.running:
            return
        initial = ",".join(f"{x.name}={x.peer_url}" for x in self.members)
        argv = [self.binary, "--name", m.name, "--data-dir", str(m.data_dir),
                "--listen-client-urls", m.client_url(self.tls), "--advertise-client-urls", m.client_url(self.tls),
                "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
                "--initial-cluster", initial, "--initial-cluster-state", "new", "--initial-cluster-token", self.token,
                "--listen-metrics-urls", "", "--log-level", "warn", "--logger", "zap"]
        if self.tls:
            tls = self.workdir / "tls"
            argv += ["--cert-file", str(tls / "server.pem"), "--key-file", str(tls / "server.key"),
                     "--trusted-ca-file", str(self.ca_file), "--client-cert-auth"]
        env = dict(os.environ)
        arch = platform.machine()
        if arch not in ("x86_64", "AMD64"):  # etcd 3.4 refuses to start on arm64 & co. without this
            env["ETCD_UNSUPPORTED_ARCH"] = {"aarch64": "arm64", "armv7l": "arm"}.get(arch, arch)
        with open(m.log_path, "ab") as log:
            m.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        if wait:
            self.wait_healthy()

    def kill(self, index: int) -> None:
        """SIGKILL: the member dies without a word to its peers, like a power cut."""
        self._signal_and_reap(index, signal.SIGKILL)

    def stop(self, index: int) -> None:
        """SIGTERM: a clean shutdown (a leader hands leadership over first)."""
        self._signal_and_reap(index, signal.SIGTERM)

    def pause(self, index: int) -> None:
        """SIGSTOP: the process hangs with its sockets open (a frozen VM); `resume` continues it."""
        proc = self.members[index].proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGSTOP)
            _wait_stopped(proc.pid)

    def resume(self, index: int) -> None:
        proc = self.members[index].proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        for i in range(self.size):
            self.resume(i)  # a stopped process cannot die of SIGTERM until continued; SIGKILL works anyway
            self.kill(i)

    def _signal_and_reap(self, index: int, sig: signal.Signals) -> None:
        m = self.members[index]
        if m.proc is None:
            return
        if m.proc.poll() is None:
            m.proc.send_signal(sig)
            try:
                m.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                m.proc.kill()
                m.proc.wait(timeout=10)
        m.proc = None

    # ---- health ----------------------------------------------------------------------------------------------

    def healthy(self, index: int) -> bool:
        m = self.members[index]
        if not m.running:
            return False
        try:
            with urllib.request.urlopen(f"{m.client_url(self.tls)}/health", timeout=1,
                                        context=self._ssl_context()) as resp:
                return bool(json.loads(resp.read()).get("health") == "true")
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def wait_healthy(self, timeout: float = START_TIMEOUT_S) -> None:
        """Until every running member reports healthy; raises with the members' log tails after `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = [i for i, m in enumerate(self.members) if m.running]
            if running and all(self.healthy(i) for i in running):
                return
            for m in self.members:
                if m.proc is not None and m.proc.poll() is not None:
                    raise RuntimeError(f"etcd member {m.name} exited with {m.proc.returncode}:\n{self.log_tail(m)}")
            time.sleep(0.1)
        tails = "\n".join(f"--- {m.name}\n{self.log_tail(m)}" for m in self.members)
        raise TimeoutError(f"etcd cluster not healthy after {timeout}s (workdir {self.workdir}):\n{tails}")

    def compact(self, revision: int) -> None:
        """Compact the history up to `revision` (through etcd's JSON gateway): older watches cannot resume."""
        m = next(m for m in self.members if m.running)
        body = json.dumps({"revision": str(revision), "physical": True}).encode()
        request = urllib.request.Request(f"{m.client_url(self.tls)}/v3/kv/compaction", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=10, context=self._ssl_context()) as resp:
            resp.read()

    def raft_leader(self) -> int:
        """Index of the member that is etcd's raft leader now (its status, through the JSON gateway)."""
        ids: dict[str, int] = {}
        leader = ""
        for i, m in enumerate(self.members):
            if not m.running:
                continue
            request = urllib.request.Request(f"{m.client_url(self.tls)}/v3/maintenance/status", data=b"{}",
                                             method="POST")
            with urllib.request.urlopen(request, timeout=5, context=self._ssl_context()) as resp:
                status = json.loads(resp.read())
            ids[status["header"]["member_id"]] = i
            leader = status.get("leader", leader)
        return ids[leader]

    @staticmethod
    def log_tail(m: EtcdMember, lines: int = 15) -> str:
        try:
            return "\n".join(m.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@contextmanager
def running_etcd_cluster(workdir: Path, size: int = 3, *, tls: bool = False) -> Iterator[EtcdCluster]:
    """A started, healthy cluster; every member is killed on exit, even when starting it failed halfway."""
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = EtcdCluster(workdir, size, tls)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


def _wait_stopped(pid: int, timeout_s: float = 10.0) -> None:
    """Until every thread of `pid` is stopped: a signal is delivered asynchronously, and on a loaded machine a
    Go process can still answer a request sent right after SIGSTOP was sent."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            threads = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return  # gone
        states = []
        for thread in threads:
            try:
                states.append((Path(f"/proc/{pid}/task") / thread / "stat").read_text().rsplit(")", 1)[1].split()[0])
            except OSError:
                pass  # that thread ended
        if all(state in ("T", "t") for state in states):
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} did not stop within {timeout_s:g} s of SIGSTOP")

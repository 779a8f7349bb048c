"""The fleet harness's real components: a network namespace for the simulated devices joined to the host by a veth
pair (bytes counted at the IP level from the veth's counters), the cluster CA with one client certificate per device,
a broker with certificate authentication (Mosquitto configured by `cloudless broker mosquitto-config --cert-auth`'s
code, or the embedded `cloudless broker --cert-auth`), a real `cloudless coordinator --pki` process, and the
simulator processes (`tests.fleet.sim`) inside the namespace.

Every process starts in its own session (process group) and is killed by group; the namespace and veth are deleted
on close. Traffic stays on loopback and inside the namespace this harness created.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import secrets
import signal
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from broker import mosquitto
from broker.acl import Acl, Role
from broker.auth import AuthFiles
from broker.embedded import TlsSettings
from coordinator.credentials import write_token_digests
from coordinator.pki import CertificateAuthority, CertRole, key_pem, make_csr, new_key
from tests.fleet.sim import SimConfig

REPO = Path(__file__).resolve().parents[2]
COORD_ID = "fleet"


def raise_nofile() -> None:
    """This process (and the children it starts from now on) may open as many files as the hard limit allows:
    the broker holds one socket per device."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def kill_group(proc: subprocess.Popen[Any] | None, *, grace: float = 10.0) -> None:
    """SIGTERM the process's group, SIGKILL it after `grace` seconds."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")


@dataclass
class Netns:
    """A namespace `ns` with one veth to the host: host side `host_ip`, namespace side `ns_ip` (a /30)."""

    tag: str = field(default_factory=lambda: f"{os.getpid() % 100000}")
    subnet: int = field(default_factory=lambda: 16 + os.getpid() % 200)  # 10.237.<subnet>.0/30

    def __post_init__(self) -> None:
        self.ns = f"clfleet{self.tag}"
        self.host_if, self.ns_if = f"clfh{self.tag}", f"clfn{self.tag}"
        self.host_ip, self.ns_ip = f"10.237.{self.subnet}.1", f"10.237.{self.subnet}.2"
        self.up = False

    def create(self) -> None:
        self.delete()
        run(["ip", "netns", "add", self.ns])
        self.up = True
        run(["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if])
        run(["ip", "link", "set", self.ns_if, "netns", self.ns])
        run(["ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if])
        run(["ip", "link", "set", self.host_if, "up"])
        inside = ["ip", "netns", "exec", self.ns]
        run([*inside, "ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if])
        run([*inside, "ip", "link", "set", self.ns_if, "up"])
        run([*inside, "ip", "link", "set", "lo", "up"])
        run([*inside, "sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=1024 65000"])

    def delete(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, check=False, timeout=30)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, check=False, timeout=30)
        self.up = False

    def counters(self) -> tuple[int, int]:
        """(bytes from the devices, bytes to the devices) so far, at the IP level (the host side's rx/tx)."""
        base = Path("/sys/class/net") / self.host_if / "statistics"
        return int((base / "rx_bytes").read_text()), int((base / "tx_bytes").read_text())

    def exec_argv(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]


@dataclass
class Pki:
    """The cluster CA where `cloudless coordinator --pki` keeps it (DATA_DIR/pki), a broker server certificate, and
    one client certificate per device (role node, CN = node id) in `certs/`."""

    workdir: Path
    hosts: list[str]

    def __post_init__(self) -> None:
        self.coord_dir = self.workdir / "coordinator"
        self.pki_dir = self.coord_dir / "pki"
        self.ca, _ = CertificateAuthority.load_or_create(self.pki_dir, "cluster", time.time())
        self.ca_file = self.pki_dir / "ca.pem"
        self.tls_dir = self.workdir / "broker-tls"
        self.tls_dir.mkdir(parents=True, exist_ok=True)
        key = new_key()
        (self.tls_dir / "server.key").write_bytes(key_pem(key))
        (self.tls_dir / "server.key").chmod(0o600)
        issued = self.ca.issue_server(key, hosts=[*self.hosts, "127.0.0.1", "localhost"], now=time.time(),
                                      lifetime_s=7 * 86400)
        (self.tls_dir / "server.pem").write_bytes(issued.cert_pem)
        self.cert_dir = self.workdir / "certs"
        self.cert_dir.mkdir(exist_ok=True)
        self.revoked = self.workdir / "revoked"
        self.revoked.write_text("")

    @property
    def server_tls(self) -> TlsSettings:
        return TlsSettings(self.tls_dir / "server.pem", self.tls_dir / "server.key", self.ca_file, True)

    def issue_nodes(self, nodes: list[str]) -> None:
        now = time.time()
        for node in nodes:
            if (self.cert_dir / f"{node}.pem").exists():
                continue
            key = new_key()
            issued = self.ca.issue(make_csr(key, node), identity=node, role=CertRole.NODE, now=now,
                                   lifetime_s=7 * 86400)
            (self.cert_dir / f"{node}.key").write_bytes(key_pem(key))
            (self.cert_dir / f"{node}.pem").write_bytes(issued.cert_pem)


@dataclass
class Broker:
    """`mosquitto` or `embedded`, listening with TLS and certificate authentication on host:port."""

    kind: str
    workdir: Path
    pki: Pki
    host: str
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        raise_nofile()
        auth = self.workdir / "broker-auth"
        AuthFiles(users={}, acl=Acl(user_roles={f"coordinator@{COORD_ID}": Role.COORDINATOR})).save(auth)
        log = open(self.workdir / f"broker-{self.kind}.log", "ab")
        tls = self.pki.server_tls
        if self.kind == "embedded":
            argv = [sys.executable, "-m", "cloudless", "--log-level", "WARNING", "broker", "--host", self.host,
                    "--port", str(self.port), "--auth-dir", str(auth), "--cert-auth", "--revoked",
                    str(self.pki.revoked), "--tls-cert", str(tls.certfile), "--tls-key", str(tls.keyfile),
                    "--tls-ca", str(tls.cafile)]
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, cwd=REPO, start_new_session=True)
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline().decode()
            if "listening on" not in line:
                raise RuntimeError(f"embedded broker did not start: {line!r}; see {log.name}")
            self.port = int(line.rsplit(":", 1)[1])
        else:
            binary = next((p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if os.path.exists(p)), None)
            if binary is None:
                raise RuntimeError("mosquitto is not installed: run scripts/install-system-deps.sh")
            if not self.port:
                self.port = 18000 + os.getpid() % 20000
            settings = mosquitto.MosquittoSettings(
                out_dir=self.workdir / "mosquitto", host=self.host, port=self.port, tls=tls, cert_auth=True,
                run_as_user="root" if os.geteuid() == 0 else None, persistence_dir=self.workdir / "mosq-data")
            mosquitto.write(settings, AuthFiles.load(auth, require_passwords=False))
            self.proc = subprocess.Popen([binary, "-c", str(settings.out_dir / mosquitto.CONF_FILE)],
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            wait_port(self.host, self.port, self.proc)

    def stop(self) -> None:
        kill_group(self.proc)
        self.proc = None


def wait_port(host: str, port: int, proc: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


@dataclass
class Coordinator:
    """`cloudless coordinator --pki` dialling the broker with its own certificate; the admin token is ours."""

    workdir: Path
    pki: Pki
    broker: Broker
    extra: list[str] = field(default_factory=list)
    profile: Path | None = None  # run under cProfile, stats written here when it stops (SIGTERM: a clean exit)
    trace: Path | None = None  # run under tests.fleet.loop_trace: its long loop steps written here
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    def start(self) -> None:
        write_token_digests(self.pki.coord_dir, {"admin": self.token})
        self.log_path = self.workdir / "coordinator.log"
        python = [sys.executable, *(["-m", "cProfile", "-o", str(self.profile)] if self.profile else [])]
        # under the tracer, the program is its argument (it runs the module itself)
        python += ["-m", "tests.fleet.loop_trace", str(self.trace)] if self.trace is not None else ["-m"]
        argv = [*python, "cloudless", "--log-level", "INFO", "coordinator", "--broker",
                f"mqtts://{self.broker.host}:{self.broker.port}", "--api", "127.0.0.1:0", "--data-dir",
                str(self.pki.coord_dir), "--id", COORD_ID, "--pki", *self.extra]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=open(self.log_path, "ab"), cwd=REPO,
                                     start_new_session=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if "API on" not in line:
            raise RuntimeError(f"coordinator did not start: {line!r}\n{self.log_tail()}")
        self.url = line.split("API on ", 1)[1].split()[0]

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.pki.ca_file))

    def log_tail(self, n: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return "(no log)"

    def broker_events(self) -> tuple[int, int]:
        """(connects, connection losses) of the coordinator's MQTT client, from its log."""
        name = f"coordinator@{COORD_ID}"
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        connects = len(re.findall(rf"mqtt {re.escape(name)}: connected to", text))
        lost = len(re.findall(rf"mqtt {re.escape(name)}: connection lost", text))
        return connects, lost

    def stop(self) -> None:
        kill_group(self.proc, grace=15)
        self.proc = None


@dataclass
class SimProc:
    """One simulator process inside the namespace, driven over its stdin/stdout (JSON lines)."""

    netns: Netns
    cfg: SimConfig
    workdir: Path
    name: str
    proc: asyncio.subprocess.Process | None = None
    joined: dict[str, Any] = field(default_factory=dict)

    async def start(self) -> None:
        cfg_file = self.workdir / f"{self.name}.json"
        cfg_file.write_text(self.cfg.dump())
        argv = self.netns.exec_argv([sys.executable, "-m", "tests.fleet.sim", "--config", str(cfg_file)])
        self.proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=open(self.workdir / f"{self.name}.log", "ab"), cwd=REPO, start_new_session=True,
            limit=256 * 1024 * 1024)

    async def _line(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"simulator {self.name} exited; see {self.workdir / (self.name + '.log')}")
        out: dict[str, Any] = json.loads(line)
        return out

    async def arm(self, timeout: float) -> None:
        """Wait until every device's TLS context is loaded (the process prints `armed`)."""
        armed = await self._line(timeout)
        if armed.get("event") != "armed":
            raise RuntimeError(f"simulator {self.name}: expected armed, got {armed}")

    async def go(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(b'{"cmd": "go"}\n')
        await self.proc.stdin.drain()

    async def wait_joined(self, timeout: float) -> dict[str, Any]:
        self.joined = await self._line(timeout)
        return self.joined

    async def ask(self, cmd: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        return await self._line(timeout)

    def pid(self) -> int | None:
        """The simulator's own pid (`ip netns exec` execs it, so the same pid)."""
        return self.proc.pid if self.proc is not None else None

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.write(b'{"cmd": "quit"}\n')
            await self.proc.stdin.drain()
        try:
            async with asyncio.timeout(10):
                await self.proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()


def usage(pids: list[int]) -> tuple[float, int]:
    """(CPU seconds so far, RSS bytes) summed over these processes and their children."""
    cpu, rss = 0.0, 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(pid)
            for q in [p, *p.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    t = q.cpu_times()
                    cpu += t.user + t.system
                    rss += q.memory_info().rss
    return cpu, rss


def node_names(n: int) -> list[str]:
    return [f"sim-{i:05d}" for i in range(n)]



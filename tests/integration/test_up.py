"""`cloudless up` as a user runs it: one command gives a working, secure single-machine cluster that the CLI
drives right away; Ctrl-C stops everything; the same data dir comes back with its state. With `--coordinators 3`
it also starts 3 local etcd members and 3 replicated coordinators, which survive the leader's death."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from cloudless import etcd_local
from tests.integration.cluster_env import SECURE, until
from tests.integration.conftest import free_port, require_binary
from tests.need import require_root, unavailable

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


class Up:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.data = workdir / "data"
        self.config = workdir / "cli.json"
        self.mqtt, self.api, self.relay = free_port(), free_port(), free_port()
        self.proc: subprocess.Popen[str] | None = None
        self.out: list[str] = []
        self.extra: list[str] = []

    @property
    def node(self) -> str:
        """The local agent's node id (unique per data dir)."""
        return (self.data / "agent" / "node-id").read_text().strip()

    @property
    def cluster(self) -> str:
        """This cluster's id, as its agent derives it from the cluster CA."""
        from edge_agent.cluster import of_ca_file

        return of_ca_file(self.data / "coordinator" / "pki" / "ca.pem")

    def remove_containers(self) -> None:
        """This cluster's containers only (another cluster on this machine may have a node of the same name)."""
        with contextlib.suppress(OSError):
            subprocess.run(["podman", "rm", "-f", "-t", "0", "--filter", f"label=cloudless.cluster={self.cluster}"],
                           capture_output=True, check=False)

    def start(self) -> None:
        argv = [sys.executable, "-m", "cloudless", "up", "--data-dir", str(self.data), "--mqtt-port", str(self.mqtt),
                "--api-port", str(self.api), "--relay-port", str(self.relay), "--config", str(self.config),
                *self.extra]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "CLOUDLESS_LOG_LEVEL": "WARNING",
                                          # Podman here needs the project's containers.conf (runc, ulimits)
                                          "CONTAINERS_CONF": str(REPO / "scripts" / "containers.conf")})
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

    def terminate(self) -> int:
        """SIGTERM (a service manager's stop) instead of Ctrl-C."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            rest, _ = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rest, _ = self.proc.communicate()
        self.out.append(rest)
        return self.proc.returncode

    def processes(self, *words: str) -> list[psutil.Process]:
        """This cluster's processes (their command line names its data dir) with every word as an argument (or as
        the program's name)."""
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            argv = proc.info["cmdline"] or []
            if argv and any(str(self.data) in a for a in argv) and set(words) <= {*argv, Path(argv[0]).name}:
                found.append(proc)
        return found

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
        u.remove_containers()


def test_up_gives_a_secure_cluster_the_cli_can_drive(up: Up) -> None:
    up.start()
    text = "".join(up.out)
    assert "https://" in text and "mqtts://" in text, "secure by default: HTTPS API, MQTT over mutual TLS"
    assert oct(up.config.stat().st_mode & 0o777) == "0o600"
    until(lambda: any(n["id"] == up.node and n["online"] for n in json.loads(
        up.cli("get", "nodes", "-o", "json").stdout)["items"]), 30, "the local agent online")
    # up started a relay and the local agent runs the overlay, linked to it
    overlay = until(lambda: (s := json.loads(up.cli("overlay", "status", "-o", "json").stdout)) and any(
        n["node"] == up.node and n["enabled"] and n["relays"] == ["relay@local"] for n in s["nodes"]) and s, 30,
        "the local agent's overlay linked to up's relay")
    # other machines reach the relay at this host's advertised addresses (cloudless.advertise), this one at loopback
    from cloudless.advertise import host_addresses, is_ip

    lan = [f"{a}:{up.relay}" for a in host_addresses() if is_ip(a)]
    assert overlay["relays"] == [{"id": "relay@local", "addresses": [*lan, f"127.0.0.1:{up.relay}"]}]
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
    denied = up.cli("cordon", up.node, "--token", viewer, check=False)  # ... and may not write
    assert denied.returncode != 0 and "may only read" in denied.stdout + denied.stderr  # the API's 403


# ---- cloudless up --coordinators 3 ----------------------------------------------------------------------------------


def _port_free(port: int) -> bool:
    """Nobody listens on it (a connection of an earlier run in TIME_WAIT does not count: etcd reuses the address)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _holder(port: int) -> str:
    """Who listens on `port` (for the skip reason), if we may know."""
    with contextlib.suppress(psutil.Error):
        for conn in psutil.net_connections("tcp"):
            if conn.laddr and conn.laddr.port == port and conn.pid:
                return f"pid {conn.pid} ({' '.join(psutil.Process(conn.pid).cmdline()[:3])})"
    return "another process"


def _free_run(count: int) -> int:
    """A first port such that it and the next count-1 are free (the coordinators' API ports)."""
    for _ in range(50):
        base = free_port()
        if all(_port_free(base + i) for i in range(1, count)):
            return base
    raise AssertionError(f"no {count} consecutive free ports")


@pytest.fixture
def up_ha() -> Iterator[Up]:
    require_binary("etcd")
    require_root("the local agent runs the workload as uid 65534 on the process runtime")
    # etcd_local's ports are fixed (clients 23790.., peers 23800..); under CI they are free
    ms = etcd_local.members(3)
    busy = [p for m in ms for p in (m.client_port, m.peer_port) if not _port_free(p)]
    if busy:
        unavailable(f"`cloudless up --coordinators 3` needs ports {ms[0].client_port}-{ms[-1].client_port} and "
                    f"{ms[0].peer_port}-{ms[-1].peer_port}; {busy[0]} is taken by {_holder(busy[0])}")
    u = Up(Path(tempfile.mkdtemp(prefix="cl-up-ha-")))
    u.api = _free_run(3)
    u.extra = ["--coordinators", "3", "--agent-runtime", "process"]
    try:
        yield u
    finally:
        if u.proc is not None and u.proc.poll() is None:
            u.stop()
        for proc in u.processes():  # whatever a failed test left: etcd members, coordinators, the agent
            with contextlib.suppress(psutil.Error):
                proc.kill()
        for run in (u.data / "agent" / "process").glob("*/run.json"):  # the workload's processes outlive the agent
            with contextlib.suppress(OSError, ValueError, KeyError):
                os.killpg(json.loads(run.read_text())["pid"], signal.SIGKILL)
        shutil.rmtree(u.workdir, ignore_errors=True)


def _ready(up: Up, port: int) -> dict[str, Any]:
    """GET /readyz of the coordinator on `port` over the cluster CA's TLS; {} when it does not answer."""
    context = ssl.create_default_context(cafile=str(up.data / "coordinator" / "pki" / "ca.pem"))
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/readyz", timeout=2, context=context) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read() or b"{}")  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


def _call(up: Up, port: int, method: str, path: str, body: object, *, token: str | None,
          extra: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """One HTTPS request to the coordinator on `port`: (status, headers, body text), errors included."""
    context = ssl.create_default_context(cafile=str(up.data / "coordinator" / "pki" / "ca.pem"))
    headers = {"Content-Type": "application/json", **(extra or {})}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"https://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                     method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def _running(up: Up) -> int:
    """How many process-runtime instances the local agent runs."""
    return sum(1 for d in (up.data / "agent" / "process").glob("p-*") if (d / "run.json").exists()
               and not (d / "exit").exists())


def _leader(up: Up, ports: list[int]) -> int | None:
    """The API port of the one coordinator that leads and has reconciled, as every other one agrees (else None)."""
    states = {p: _ready(up, p) for p in ports}
    leading = [p for p, s in states.items() if s.get("leader") and s.get("rounds", 0) > 0]
    if len(leading) != 1 or len({s.get("leaderId") for s in states.values()}) != 1:
        return None
    return leading[0]


def test_up_with_three_coordinators_survives_the_leaders_death(up_ha: Up) -> None:
    up = up_ha
    up.start()
    ports = [up.api + i for i in range(3)]
    assert "starting 3 etcd members" in "".join(up.out)
    assert len(up.processes("etcd")) == 3
    lead = until(lambda: _leader(up, ports), 30, "one leader known to all three")
    states = [_ready(up, p) for p in ports]
    assert sum(1 for s in states if s.get("leader")) == 1
    assert {s["leaderId"] for s in states} == {_ready(up, lead)["leaderId"]}
    until(lambda: any(n["id"] == up.node and n["online"] for n in json.loads(
        up.cli("get", "nodes", "-o", "json").stdout)["items"]), 30, "the local agent online (CLI config)")

    # a write through a follower is forwarded to the leader
    follower = next(p for p in ports if p != lead)
    spec = {"apiVersion": "cloudless/v1", "kind": "Workload", "metadata": {"name": "sl"},
            "spec": {"image": "none", "command": ["sleep", "3600"], "replicas": 2,
                     "resources": {"requests": {"cpu": "10m", "memory": "8Mi"}},
                     "securityContext": {k: v for k, v in SECURE.items() if k != "readOnlyRootFilesystem"}}}
    (up.workdir / "sl.json").write_text(json.dumps(spec))
    applied = up.cli("apply", "-f", str(up.workdir / "sl.json"), "--server", f"https://127.0.0.1:{follower}")
    assert "workload/sl created" in applied.stdout

    def ready_via(port: int) -> int:
        """Ready replicas of sl as the coordinator on `port` sees them (a follower's view trails by up to 1 s)."""
        items = json.loads(up.cli("get", "workloads", "-o", "json", "--server", f"https://127.0.0.1:{port}").stdout)
        return sum(int(w["status"]["ready"]) for w in items["items"] if w["metadata"]["name"] == "sl")
    until(lambda: ready_via(follower) == 2, 60, "2 sleep replicas ready")
    assert _running(up) == 2

    # forwarding is authenticated: a follower refuses a caller without a credential itself (it relays nobody's
    # anonymous writes), proves to the leader with its coordinator certificate that the forwarding headers are
    # its own, and the leader's audit names the real client and that follower; the header from anyone else is
    # refused
    status, headers, _ = _call(up, follower, "POST", f"/v1/nodes/{up.node}/cordon", {}, token=None)
    assert status == 401 and "X-Cloudless-Leader" not in headers, "an unauthenticated write was relayed"
    admin = (up.data / "credentials" / "admin-token").read_text().strip()
    status, _, body = _call(up, lead, "POST", "/v1/secrets/default", {"name": "forged", "data": {"k": "dg=="}},
                            token=admin, extra={"X-Cloudless-Forwarded-By": "c9"})
    assert status == 403 and "X-Cloudless-Forwarded-By" in body
    up.cli("secrets", "create", "default/fwd", "--data", "k=v", "--server", f"https://127.0.0.1:{follower}")
    audit = json.loads(up.cli("secrets", "audit", "-o", "json", "--server", f"https://127.0.0.1:{lead}").stdout)
    [created] = [r for r in audit["items"] if r["action"] == "create" and r.get("name") == "fwd"]
    lead_id = _ready(up, lead)["leaderId"]
    assert re.fullmatch(r"127\.0\.0\.1 \(forwarded by coordinator@\S+\)", created["source"]), created
    assert f"coordinator@{lead_id})" not in created["source"], created
    assert not [r for r in audit["items"] if r.get("name") == "forged"]

    # kill -9 the leading coordinator: another one leads, and reads and writes keep working through it
    lead_id = _ready(up, lead)["leaderId"]
    [victim] = up.processes("coordinator", "--id", lead_id)
    victim.kill()
    victim.wait(10)
    survivors = [p for p in ports if p != lead]
    new = until(lambda: _leader(up, survivors), 20, "another coordinator leading")
    assert _ready(up, new)["leaderId"] != lead_id
    assert ready_via(survivors[0]) == 2 and ready_via(survivors[1]) == 2
    up.cli("scale", "workload", "sl", "--replicas", "1", "--server", f"https://127.0.0.1:{new}")
    until(lambda: _running(up) == 1, 30, "scaled to 1 by the new leader: one sleep process left")

    # SIGTERM stops everything it started, etcd members included
    assert up.terminate() == 0
    text = "".join(up.out)
    assert f"coordinator-{lead_id} exited with code -9; 2 coordinator(s) carry on" in text
    assert all(f"etcd-m{i} stopped" in text for i in (1, 2, 3)), text[-2000:]
    assert up.processes("etcd") == [], "an etcd member outlived `cloudless up`"
    assert up.processes("coordinator") == [] and up.processes("agent") == []


@pytest.mark.parametrize(("machine", "want"), [("x86_64", None), ("aarch64", "arm64"), ("armv7l", "arm"),
                                               ("armv6l", "arm")], ids=["amd64", "pi-64bit", "pi-32bit", "pi-zero"])
def test_local_etcd_members_may_run_on_a_raspberry_pi(machine: str, want: str | None) -> None:
    """etcd 3.4 refuses to start on arm64/arm unless ETCD_UNSUPPORTED_ARCH names the architecture."""
    env = etcd_local.member_env(machine, {"PATH": "/usr/bin"})
    assert env.get("ETCD_UNSUPPORTED_ARCH") == want and env["PATH"] == "/usr/bin"

"""Real agents for integration tests: `cloudless agent` as its own process, as root or as the rootless test
user (`scripts/setup-rootless.sh`), with the Podman or the process runtime; plus a coordinator-side observer
that decodes what the agents publish."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from broker import wire
from broker.client import Message, MqttClient
from broker.wire import DesiredState, NodeStatus, ObservedState, ReplicaObserved, topics
from tests.integration.conftest import BrokerUnderTest, require_binary
from tests.need import unavailable

REPO = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = REPO / "scripts" / "containers.conf"
ROOTLESS_USER = "cloudless-test"
IMAGE = "localhost/cloudless/busybox:latest"


def rootless_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(ROOTLESS_USER)
    except KeyError:
        unavailable(f"user {ROOTLESS_USER} missing: run scripts/setup-rootless.sh (make test does)")
        raise  # unreachable: unavailable() skips or fails


def podman_ids(label_node: str, *, user: pwd.struct_passwd | None = None) -> dict[str, str]:
    """replica id -> container id of this node's containers, straight from the podman CLI (not the agent)."""
    fmt = '{{.ID}} {{index .Labels "cloudless.replica"}} {{.State}}'
    out = run_podman(["ps", "-a", "--filter", f"label=cloudless.node={label_node}", "--format", fmt], user=user)
    result = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            result[parts[1]] = parts[0]
    return result


def run_podman(argv: list[str], *, user: pwd.struct_passwd | None = None, check: bool = True) -> str:
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    cmd = ["podman", *argv]
    if user is not None:
        env["XDG_RUNTIME_DIR"] = f"/run/user/{user.pw_uid}"
        cmd = ["runuser", "-u", user.pw_name, "--", "env", f"XDG_RUNTIME_DIR=/run/user/{user.pw_uid}",
               f"CONTAINERS_CONF={CONTAINERS_CONF}", *cmd]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False, cwd="/")
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
    return proc.stdout


@dataclass
class AgentProc:
    node_id: str
    broker: BrokerUnderTest
    runtime: str = "podman"  # podman | process
    rootless: bool = False
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="cl-agent-")))

    def __post_init__(self) -> None:
        self.metrics_url = ""
        self.user = rootless_user() if self.rootless else None
        self.data_dir = self.workdir / "data"
        self.sensor_file = self.workdir / "sensors.json"
        self.log_path = self.workdir / "agent.log"
        pw_file = self.workdir / "password"
        pw_file.write_text(self.broker.passwords[self.node_id])
        pw_file.chmod(0o600)
        if self.user is not None:
            os.chmod(self.workdir, 0o755)
            for path in (self.workdir, pw_file):
                os.chown(path, self.user.pw_uid, self.user.pw_gid)

    @property
    def cluster_id(self) -> str:
        """The cluster id this (password-authenticated) agent derives: its broker's."""
        from edge_agent.cluster import of_broker

        return of_broker(self.broker.host, self.broker.port)

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "cloudless", "--log-level", "INFO", "agent",
                "--broker", f"mqtt://{self.broker.host}:{self.broker.port}", "--data-dir", str(self.data_dir),
                "--node-id", self.node_id, "--password-file", str(self.workdir / "password"),
                "--runtime", self.runtime, "--profile", "vps", "--heartbeat-interval", "1",
                "--reconcile-interval", "0.5", "--sensor-file", str(self.sensor_file),
                "--containers-conf", str(CONTAINERS_CONF), "--metrics-listen", "127.0.0.1:0", *self.extra]
        if self.user is not None:
            run_dir = f"/run/user/{self.user.pw_uid}"
            env = [f"XDG_RUNTIME_DIR={run_dir}", f"HOME={self.user.pw_dir}",
                   f"PATH={os.environ.get('PATH', '/usr/bin:/bin')}"]
            if not self._user_can_run(sys.executable):
                # the test venv's interpreter lives where the user cannot reach (pyenv under /root): run the agent
                # on the system's Python 3.11 with the venv's packages, as an agent-only install would
                argv[0] = "/usr/bin/python3"
                env.append(f"PYTHONPATH={REPO}:{sysconfig.get_paths()['purelib']}")
            return ["runuser", "-u", self.user.pw_name, "--", "env", *env, *argv]
        return argv

    def _user_can_run(self, path: str) -> bool:
        assert self.user is not None
        return subprocess.run(["runuser", "-u", self.user.pw_name, "--", "test", "-x", path], check=False,
                              cwd="/").returncode == 0

    def start(self, timeout: float = 60.0) -> None:
        if self.runtime == "podman":
            require_binary("podman")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv(), stdout=subprocess.PIPE, stderr=log, cwd="/",
                                     env={**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)})
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            if "cloudless agent: node" in line:
                if "metrics http://" in line:
                    self.metrics_url = line.split("metrics ", 1)[1].split()[0].rstrip(",")
                return
            if not line and self.proc.poll() is not None:
                break
        raise AssertionError(f"agent {self.node_id} did not start; log:\n{self.log_tail()}")

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the agent (and, when it runs under runuser, runuser's child: the agent itself)."""
        if self.proc is not None and self.proc.poll() is None:
            targets = [self.proc.pid]
            with contextlib.suppress(psutil.Error):
                # only runuser's direct child (the agent): its Podman service, conmon and the rootless pause
                # process live on, as they would after a real agent crash (killing the pause process would
                # strand every container's network namespace)
                targets = [c.pid for c in psutil.Process(self.proc.pid).children()] + targets
            for pid in targets:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def set_sensors(self, text: str) -> None:
        tmp = self.sensor_file.with_suffix(".tmp")
        tmp.write_text(text)
        if self.user is not None:
            os.chown(tmp, self.user.pw_uid, self.user.pw_gid)
        tmp.replace(self.sensor_file)

    def cleanup(self) -> None:
        self.kill(signal.SIGTERM)
        # anything still running from this agent's workdir: an orphaned Podman service (its agent was killed
        # and the next one reused it), process-runtime wrappers
        subprocess.run(["pkill", "-f", str(self.workdir)], check=False)
        if self.runtime == "podman" and shutil.which("podman"):
            # only this test cluster's: another cluster on this machine may have a node of the same name
            run_podman(["rm", "-f", "-t", "0", "--filter", f"label=cloudless.node={self.node_id}",
                        "--filter", f"label=cloudless.cluster={self.cluster_id}"], user=self.user, check=False)
        if self.runtime == "process":
            for pid_dir in (self.data_dir / "process").glob("*"):
                run = pid_dir / "run.json"
                with contextlib.suppress(Exception):
                    import json

                    os.killpg(json.loads(run.read_text())["pid"], signal.SIGKILL)
        shutil.rmtree(self.workdir, ignore_errors=True)


class Observer:
    """The coordinator's view: latest status and observed state per node, decoded through the wire."""

    def __init__(self, broker: BrokerUnderTest) -> None:
        self.client = MqttClient(broker.settings("coordinator@test"))
        self.status: dict[str, NodeStatus] = {}
        self.observed: dict[str, ObservedState] = {}
        self.observed_at: dict[str, float] = {}

    async def __aenter__(self) -> Observer:
        await self.client.start()
        await self.client.wait_connected(10)
        await self.client.subscribe(topics.node_channel_filter(topics.Channel.STATUS), self._on)
        await self.client.subscribe(topics.node_channel_filter(topics.Channel.OBSERVED), self._on)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.stop()

    def _on(self, m: Message) -> None:
        msg = wire.decode_node_message(m.topic, m.payload)
        if isinstance(msg, NodeStatus):
            self.status[msg.node_id] = msg
        elif isinstance(msg, ObservedState):
            self.observed[msg.node_id] = msg
            self.observed_at[msg.node_id] = time.monotonic()

    async def publish_desired(self, desired: DesiredState) -> None:
        await self.client.publish(topics.node_desired(desired.node_id), wire.encode(desired), qos=1, retain=True)

    def replica(self, node: str, rid: str) -> ReplicaObserved | None:
        obs = self.observed.get(node)
        return next((r for r in obs.replicas if r.replica_id == rid), None) if obs else None

    async def until(
        self, pred: Callable[[], object], timeout: float, what: str, agent: AgentProc | None = None
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return
            await asyncio.sleep(0.05)
        detail = f"\nagent log:\n{agent.log_tail()}" if agent is not None else ""
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; observed: {self.observed}{detail}")


def process_instances(agents: list[AgentProc]) -> dict[str, tuple[int, float]]:
    """replica id -> (pid, process start time) of every running process-runtime instance of these agents: the same
    pair after an event means the workload was not restarted."""
    out = {}
    for a in agents:
        for d in (a.data_dir / "process").glob("p-*"):
            try:
                run = json.loads((d / "run.json").read_text())
                meta = json.loads((d / "meta.json").read_text())
            except (OSError, ValueError):
                continue
            if not (d / "exit").exists():
                out[meta["labels"]["cloudless.replica"]] = (run["pid"], run["pid_created"])
    return out

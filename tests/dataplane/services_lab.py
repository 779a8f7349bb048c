"""Agents of every kind in the namespace lab, enrolled by token with a zone and labels: rootful Podman (runc via
scripts/containers.conf, `nsenter --net` so runc keeps the host's cgroup mounts), rootless Podman (the
`cloudless-test` user of scripts/setup-rootless.sh, with its Podman service started by the agent inside the lab
machine's network namespace) and the process runtime. Used by tests/dataplane/test_services_lab.py; the
coordinator is tests/install/lab_fabric.Coordinator (`cloudless up --advertise` in its own namespace)."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

import psutil

from tests.dataplane.test_overlay_cluster_lab import env
from tests.install.lab_fabric import CONTAINERS_CONF, _pids_with
from tests.integration.agent_env import ROOTLESS_USER
from tests.lab.netlab import Host

REPO = Path(__file__).resolve().parents[2]


class LabAgent:
    """`cloudless agent --token` on a lab machine. kind: "podman" (root), "rootless" (Podman as the rootless test
    user) or "process"."""

    def __init__(self, host: Host, node_id: str, kind: str, *, zone: str = "", labels: str = "",
                 storage: str = "0") -> None:
        self.host, self.node_id, self.kind, self.zone, self.labels = host, node_id, kind, zone, labels
        self.storage = storage  # --storage-quota: what it offers the object store (0: nothing)
        # under /tmp with 0755 parents: the rootless user must reach its data dir (pytest's tmp is root's, 0700)
        self.dir = Path(tempfile.mkdtemp(prefix=f"cl-svclab-{node_id}-"))
        os.chmod(self.dir, 0o755)
        self.data = self.dir / "data"
        self.socket = self.dir / "podman" / "podman.sock"
        self.log = self.dir / "agent.log"
        self.user: pwd.struct_passwd | None = pwd.getpwnam(ROOTLESS_USER) if kind == "rootless" else None
        self.proc: subprocess.Popen[Any] | None = None

    def argv(self, token: str | None) -> list[str]:
        python = sys.executable
        extra_env: dict[str, str] = {}
        if self.user is not None:
            ok = subprocess.run(["runuser", "-u", self.user.pw_name, "--", "test", "-x", python], check=False,
                                cwd="/").returncode == 0
            if not ok:  # the venv's interpreter is out of the user's reach: the system's with the venv's packages
                python = "/usr/bin/python3"
                extra_env["PYTHONPATH"] = f"{REPO}:{sysconfig.get_paths()['purelib']}"
        argv = [python, "-u", "-m", "cloudless", "agent", *(["--token", token] if token else []),
                "--node-id", self.node_id, "--data-dir", str(self.data),
                "--runtime", "process" if self.kind == "process" else "podman",
                "--metrics-listen", "off", "--reconcile-interval", "0.5", "--storage-quota", self.storage]
        if self.zone:
            argv += ["--zone", self.zone]
        if self.labels:
            argv += ["--labels", self.labels]
        if self.kind != "process":
            argv += ["--podman-socket", str(self.socket), "--containers-conf", str(CONTAINERS_CONF)]
        if self.user is None:
            return argv
        run_dir = f"/run/user/{self.user.pw_uid}"
        vars_ = {"XDG_RUNTIME_DIR": run_dir, "HOME": self.user.pw_dir, "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                 "CONTAINERS_CONF": str(CONTAINERS_CONF), "PYTHONPATH": REPO.as_posix(), **extra_env,
                 "CLOUDLESS_LOG_LEVEL": "INFO"}
        return ["runuser", "-u", self.user.pw_name, "--", "env", *(f"{k}={v}" for k, v in vars_.items()), *argv]

    def start(self, token: str | None = None) -> None:
        """Enrol with `token` (first start), or start again with the identity it has."""
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            for path in (self.dir, self.socket.parent):
                os.chown(path, self.user.pw_uid, self.user.pw_gid)
        self.proc = self.host.popen(*self.argv(token), stdout=self.log.open("a"), stderr=subprocess.STDOUT,
                                    cwd="/" if self.user is not None else REPO,
                                    env=env(self.dir, PYTHONPATH=str(REPO), CONTAINERS_CONF=str(CONTAINERS_CONF)),
                                    host_mounts=self.kind != "process")

    def agent_pid(self) -> int:
        """The agent's own pid (nsenter execs it; runuser forks it)."""
        assert self.proc is not None and self.proc.poll() is None, f"the agent of {self.node_id} is not running"
        if self.user is None:
            return self.proc.pid
        children = psutil.Process(self.proc.pid).children()
        assert children, f"runuser of {self.node_id} has no child"
        return int(children[0].pid)

    def kill9(self) -> None:
        """kill -9 of the agent alone: its Podman service, containers and processes stay."""
        os.kill(self.agent_pid(), signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(timeout=15)

    def podman(self, *args: str, check: bool = False, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """The podman CLI in this machine's namespace, on the agent's storage (root's or the rootless user's)."""
        cmd = ["podman", *args]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user.pw_name, "--", "env", f"XDG_RUNTIME_DIR=/run/user/{self.user.pw_uid}",
                   f"CONTAINERS_CONF={CONTAINERS_CONF}", *cmd]
        return self.host.run(*cmd, check=check, timeout=timeout, host_mounts=True,
                             env={**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)})

    def container(self, workload: str) -> str:
        """The id of this node's running container of `workload` ("" if none)."""
        out = self.podman("ps", "-q", "--filter", f"label=cloudless.node={self.node_id}",
                          "--filter", f"label=cloudless.workload={workload}").stdout.split()
        return out[0] if out else ""

    def work_dirs(self) -> list[Path]:
        """Work dirs of this process agent's instances (the process's HOME and cwd)."""
        return sorted((self.data / "process").glob("*/work"))

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, AssertionError):
                os.kill(self.agent_pid(), signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
        if self.kind != "process":
            ids = self.podman("ps", "-aq", "--filter", f"label=cloudless.node={self.node_id}").stdout.split()
            if ids:
                self.podman("rm", "-f", "-t", "0", *ids, timeout=120)
        for pid in _pids_with(str(self.dir)):  # the Podman service it started, process workloads
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)

    def tail(self, lines: int = 40) -> str:
        """The log's last `lines` distinct messages (a warning repeated every round shows once, at its last time)."""
        try:
            text = self.log.read_text(errors="replace").splitlines()[-400:]
        except OSError:
            return f"--- {self.node_id}: <no log>"
        last: dict[str, int] = {}
        for i, line in enumerate(text):
            last[_TIME.sub("", line)] = i
        kept = sorted(last.values())[-lines:]
        return f"--- {self.node_id} ({self.kind}) agent.log:\n" + "\n".join(text[i] for i in kept)


_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+")

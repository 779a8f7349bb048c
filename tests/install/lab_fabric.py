"""The machines of the install lab, apart from the emulated Pis (tests/install/device.py): the coordinator a user
starts with `cloudless up --advertise <its LAN address>`, and a device with rootful Podman that joins by token.

Both run from a frozen copy of the checkout (`release`): others may edit the tree while the lab runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.dataplane.test_overlay_cluster_lab import env, until
from tests.install.device import REPO
from tests.lab.netlab import Host

CONTAINERS_CONF = REPO / "scripts" / "containers.conf"
IMAGE = "localhost/cloudless/busybox:latest"  # `make image` (scripts/build-test-image.sh)


def tail(path: Path, chars: int = 3000, label: str = "") -> str:
    return f"--- {label or path.name}:\n" + (path.read_text(errors="replace")[-chars:] if path.exists() else "<no log>")


class Coordinator:
    """`cloudless up --advertise ADDR --no-agent` in its own namespace, and the CLI a user runs next to it."""

    def __init__(self, host: Host, tmp: Path, release: Path) -> None:
        self.host, self.tmp, self.release = host, tmp, release
        self.config = tmp / "cli.json"
        self.log = tmp / "up.log"

    @property
    def addr(self) -> str:
        return self.host.addr

    def start(self) -> None:
        proc = self.host.popen(sys.executable, "-u", "-m", "cloudless", "up", "--advertise", self.host.addr,
                               "--no-agent", "--data-dir", str(self.tmp / "coord"), "--config", str(self.config),
                               stdout=self.log.open("w"), stderr=subprocess.STDOUT,
                               env=env(self.tmp, PYTHONPATH=str(self.release)), cwd=self.release)
        until(lambda: "Press Ctrl-C to stop." in self.log.read_text() or proc.poll() is not None, 90, "cloudless up")
        assert proc.poll() is None, self.log.read_text()

    def cli(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        out = self.host.run(sys.executable, "-m", "cloudless", *args, check=False, timeout=120, input=input,
                            env=env(self.tmp, CLOUDLESS_CONFIG=str(self.config), PYTHONPATH=str(self.release)))
        if check:
            assert out.returncode == 0, f"cloudless {' '.join(args)}:\n{out.stdout}\n{out.stderr}\n{tail(self.log)}"
        return out

    def json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "-o", "json").stdout)

    def nodes(self) -> dict[str, Any]:
        return {n["id"]: n for n in self.json("get", "nodes")["items"]}

    def replicas(self, name: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.json("get", "replicas")["items"]
        return [r for r in items if r["workload"] == name]


class PodmanDevice:
    """An agent with rootful Podman (runc through scripts/containers.conf) in its own namespace, enrolled with a
    token (`cloudless agent --token`): the Podman service it starts, on a socket of its own, and that service's
    container networks live in this namespace too."""

    def __init__(self, host: Host, node_id: str, tmp: Path, release: Path) -> None:
        self.host, self.node_id, self.release = host, node_id, release
        self.data = tmp / node_id
        self.socket = tmp / f"{node_id}-podman" / "podman.sock"
        self.log = tmp / f"{node_id}.log"
        self.proc: subprocess.Popen[Any] | None = None

    def start(self, token: str | None = None) -> None:
        """Enrol with `token` (first start), or start again with the identity it has."""
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        self.proc = self.host.popen(
            sys.executable, "-u", "-m", "cloudless", "agent", *(["--token", token] if token else []),
            "--node-id", self.node_id,
            "--data-dir", str(self.data), "--runtime", "podman", "--podman-socket", str(self.socket),
            "--containers-conf", str(CONTAINERS_CONF), "--metrics-listen", "off",
            stdout=self.log.open("a"), stderr=subprocess.STDOUT, cwd=self.release,
            env=env(self.data.parent, PYTHONPATH=str(self.release), CONTAINERS_CONF=str(CONTAINERS_CONF)),
            host_mounts=True)  # runc needs the host's cgroup mounts, which `ip netns exec` hides

    def kill9(self) -> None:
        """kill -9 of the agent alone: the Podman service it started and the containers stay."""
        assert self.proc is not None and self.proc.poll() is None, "the agent is not running"
        os.kill(self.proc.pid, signal.SIGKILL)  # nsenter execs the agent: the same pid
        self.proc.wait(timeout=10)

    def podman(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        """The podman CLI in this machine's namespace, on the same (root) storage as the agent's service."""
        return self.host.run("podman", *args, check=check, timeout=120, host_mounts=True,
                             env={**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)})

    def close(self) -> None:
        """Stop the agent (SIGTERM: it stops the Podman service it started), then remove this node's containers
        (they outlive the agent by design) while their network namespace still exists, then any service left."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        ids = self.podman("ps", "-aq", "--filter", f"label=cloudless.node={self.node_id}").stdout.split()
        if ids:
            self.podman("rm", "-f", "-t", "0", *ids)
        for pid in _pids_with(str(self.socket)):  # the service the agent started, should SIGTERM not have ended it
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def tail(self) -> str:
        return tail(self.log)


def _pids_with(needle: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if needle.encode() in cmdline:
                found.append(int(entry))
    return found

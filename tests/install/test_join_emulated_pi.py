"""The one-line device install as a user runs it, on emulated Raspberry Pi OS devices that are not the coordinator.

    inet ── vps: cloudless up --advertise (API, broker, relay; serves /v1/install.sh and the wheels)
      └── home NAT ── pi64: chroot of Debian bookworm arm64 (qemu-aarch64)
                   └─ pi32: chroot of Debian bookworm armhf (qemu-arm)

`cloudless token create --join-command` prints the line; each device runs it as printed (curl with the API key
pinned, piped to sh). The agents enrol over the lab network, report aarch64 / armv7l and the Raspberry Pi 4 profile
(the rootfs carries a device-tree model file), run the process workload the coordinator placed on them by
`placement.arch`, come back after their process is killed and after `--restart`, keep their identity across a second
install, and `--uninstall` leaves nothing running in the chroot. The lab has no route to the package index: every
wheel comes from the coordinator (the dependency wheels from scripts/agent-wheelhouse.sh, prepared on the host).

Join times (one-liner start to node online) are printed; docs/install.md records them.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from coordinator.rest.install import build_wheel
from tests.dataplane.test_overlay_cluster_lab import env, until
from tests.install.device import REPO, Device, cached_rootfs
from tests.integration.conftest import require_binary
from tests.lab.netlab import Host, Lab, NatKind
from tests.need import require_root, unavailable

pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400)]

STATE = "/root/.local/share/cloudless"  # where the script puts the venv, identity and pid files (HOME=/root)


def workload(name: str, machine: str) -> str:
    return json.dumps({"apiVersion": "cloudless/v1", "kind": "Workload", "metadata": {"name": name}, "spec": {
        "runtime": "process", "replicas": 1,
        "command": ["/bin/sh", "-c", f"uname -m > /tmp/{name}.arch; exec sleep 100000"],
        "placement": {"arch": [machine]},
        # what the secure-defaults policy and a root agent's process runtime ask: not root, no capabilities
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "capabilities": {"drop": ["ALL"]},
                            "allowPrivilegeEscalation": False},
        "resources": {"requests": {"cpu": "10m", "memory": "8Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}}}})


class Coordinator:
    def __init__(self, lab: Lab, vps: Host, tmp: Path, release: Path) -> None:
        self.lab, self.vps, self.tmp, self.release = lab, vps, tmp, release
        self.config = tmp / "cli.json"
        self.log = tmp / "up.log"

    def start(self) -> None:
        proc = self.vps.popen(sys.executable, "-u", "-m", "cloudless", "up", "--advertise", self.vps.addr,
                              "--no-agent", "--data-dir", str(self.tmp / "vps"), "--config", str(self.config),
                              stdout=self.log.open("w"), stderr=subprocess.STDOUT,
                              env=env(self.tmp, PYTHONPATH=str(self.release)), cwd=self.release)
        until(lambda: "Press Ctrl-C to stop." in self.log.read_text() or proc.poll() is not None, 90, "cloudless up")
        assert proc.poll() is None, self.log.read_text()

    def cli(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        out = self.vps.run(sys.executable, "-m", "cloudless", *args, check=False, timeout=120, input=input,
                           env=env(self.tmp, CLOUDLESS_CONFIG=str(self.config)))
        if check:
            assert out.returncode == 0, f"cloudless {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
        return out

    def nodes(self) -> dict[str, Any]:
        return {n["id"]: n for n in json.loads(self.cli("get", "nodes", "-o", "json").stdout)["items"]}

    def replicas(self, name: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = json.loads(self.cli("get", "replicas", "-o", "json").stdout)["items"]
        return [r for r in items if r["workload"] == name]


@pytest.fixture(scope="module")
def rootfs() -> dict[str, Path]:
    require_root("chroot, mounts and network namespaces")
    for tool in ("debootstrap", "qemu-aarch64-static", "qemu-arm-static", "zstd", "chroot"):
        require_binary(tool)
    wheelhouse = subprocess.run([str(REPO / "scripts" / "agent-wheelhouse.sh"), "aarch64", "armv7l"],
                                capture_output=True, text=True, timeout=600, check=False)
    if wheelhouse.returncode != 0:
        unavailable(f"scripts/agent-wheelhouse.sh could not fetch the device wheels:\n{wheelhouse.stderr[-800:]}")
    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:  # a first build is mostly downloads and emulated dpkg: both at once
        built = dict(zip(("arm64", "armhf"), pool.map(cached_rootfs, ("arm64", "armhf")), strict=True))
    print(f"rootfs arm64 + armhf: {time.monotonic() - started:.1f} s (a first build ~5 min; cached after)")
    return built


@pytest.fixture
def release(tmp_path: Path) -> Path:
    """The coordinator's source tree, frozen: a copy of the checkout (others may edit it while the test runs, and
    the wheel is built per source hash), with the agent's wheel built where the package index is reachable (pip
    fetches the build backend; the lab has no route out) and the dependency wheelhouse beside it."""
    root = tmp_path / "release"
    root.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, root / name)
    for pkg in ("broker", "cloudless", "coordinator", "dataplane", "edge_agent", "firmware_profiles", "scripts"):
        shutil.copytree(REPO / pkg, root / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (root / ".cache").mkdir()
    (root / ".cache" / "wheelhouse").symlink_to(REPO / ".cache" / "wheelhouse")
    build_wheel(root, root / ".cache" / "wheels")
    return root


@pytest.fixture
def lab_devices(rootfs: dict[str, Path], release: Path,
                tmp_path: Path) -> Iterator[tuple[Coordinator, dict[str, Device]]]:
    devices: dict[str, Device] = {}
    with Lab() as lab:
        inet = lab.network("inet")
        coord = Coordinator(lab, lab.host("vps", inet), tmp_path, release)
        home = lab.nat("home", inet, NatKind.PORT_RESTRICTED)
        try:
            for name, arch in (("pi64", "arm64"), ("pi32", "armhf")):
                devices[name] = Device(lab.host(name, home.lan), arch, tmp_path / f"root-{name}")
                print(f"{name}: rootfs unpacked in {devices[name].unpack(rootfs[arch]):.1f} s")
            coord.start()
            yield coord, devices
        finally:
            for d in devices.values():
                d.close()
            for d in devices.values():
                shutil.rmtree(d.root, ignore_errors=True)


def test_one_liner_joins_emulated_pis_runs_their_work_survives_restarts_and_uninstalls(
        lab_devices: tuple[Coordinator, dict[str, Device]]) -> None:
    coord, devices = lab_devices
    lines: dict[str, str] = {}
    for name in devices:
        lines[name] = coord.cli("token", "create", "--join-command", "--node-id", name).stdout.strip()
        assert shlex.split(lines[name])[:3] == ["curl", "-fsSk", "--pinnedpubkey"], lines[name]
        assert f"https://{coord.vps.addr}:" in lines[name] and "| sh -s -- --pin" in lines[name]

    # the pin is what authenticates the coordinator: a wrong one and curl refuses the server
    wrong = lines["pi64"].split(" | ")[0].replace("sha256//", "sha256//AAAA", 1)
    refused = devices["pi64"].sh(wrong, check=False, timeout=60)
    assert refused.returncode != 0 and "#!/bin/sh" not in refused.stdout

    join_s: dict[str, float] = {}
    logs: dict[str, str] = {}
    for name, device in devices.items():
        started = time.monotonic()
        out = device.sh(lines[name], timeout=900)
        until(lambda n=name: coord.nodes().get(n, {}).get("online"), 120, f"{name} online",
              lambda d=device: d.file(f"{STATE}/agent.log").read_text(errors="replace")[-3000:])
        join_s[name] = time.monotonic() - started
        logs[name] = out.stderr
        print(f"join {name} ({device.machine}): {join_s[name]:.1f} s\n{out.stderr}")

    nodes = coord.nodes()
    for name, device in devices.items():
        node = nodes[name]
        assert node["arch"] == device.machine, node
        assert node["profile"] == "raspberry-pi-4", node
    assert "overlay: aioquic installed" in logs["pi64"]
    assert "overlay: no aioquic wheel for armv7l" in logs["pi32"]

    # the coordinator places a process workload on each by arch; it runs inside that device's chroot
    for name, device in devices.items():
        coord.cli("apply", "-f", "-", input=workload(f"w-{name}", device.machine))
    for name, device in devices.items():
        marker = device.file(f"/tmp/w-{name}.arch")
        until(lambda m=marker: m.exists() and m.read_text().strip(), 180, f"w-{name} running on {name}",
              lambda n=name, d=device: coord.cli("describe", "workload", f"w-{n}", check=False).stdout
              + coord.cli("get", "events", check=False).stdout[-3000:]
              + d.file(f"{STATE}/agent.log").read_text(errors="replace")[-3000:])
        assert marker.read_text().strip() == device.machine
        assert {r["node"] for r in coord.replicas(f"w-{name}")} == {name}

    # the agent comes back: killed (the supervisor restarts it), then restarted through the script
    for name, device in devices.items():
        pid_file = device.file(f"{STATE}/run/agent.pid")
        old = int(pid_file.read_text())
        subprocess.run(["kill", "-9", str(old)], check=True)
        until(lambda p=pid_file, o=old: p.exists() and p.read_text().strip() not in ("", str(o)), 30,
              f"{name}'s agent restarted by its supervisor")
        restarted = device.sh(lines[name].replace("| sh -s -- ", "| sh -s -- --restart "), timeout=120)
        assert "agent restarted" in restarted.stderr
        assert int(pid_file.read_text()) not in (old,)
        until(lambda n=name: coord.nodes()[n]["online"], 120, f"{name} online after the restart")
        until(lambda n=name: [r["state"] for r in coord.replicas(f"w-{n}")] == ["running"], 120,
              f"w-{name} running after the restarts")

    # idempotent: a second run changes nothing and keeps the identity
    pi64 = devices["pi64"]
    cert = hashlib.sha256(pi64.file(f"{STATE}/agent/identity/node.pem").read_bytes()).hexdigest()
    again = pi64.sh(lines["pi64"], timeout=600)
    assert "already installed" in again.stderr and "already enrolled" in again.stderr, again.stderr
    assert hashlib.sha256(pi64.file(f"{STATE}/agent/identity/node.pem").read_bytes()).hexdigest() == cert
    assert sorted(coord.nodes()) == ["pi32", "pi64"]

    # --uninstall leaves nothing running and no venv; the identity stays unless --purge
    for name, device in devices.items():
        assert device.processes(), f"{name}: nothing running before --uninstall?"
        flag = "--uninstall --purge" if name == "pi32" else "--uninstall"
        device.sh(lines[name].split(" | ")[0] + f" | sh -s -- {flag}", timeout=120)
        left = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ") for pid in device.processes()}
        assert left == {}, f"{name}: processes left after {flag}"
        assert not device.file(f"{STATE}/venv").exists()
    assert devices["pi64"].file(f"{STATE}/agent/identity/node.pem").exists()
    assert not devices["pi32"].file(STATE).exists()
    until(lambda: not any(n["online"] for n in coord.nodes().values()), 120, "both nodes offline")
    print("join times: " + ", ".join(f"{n} ({devices[n].machine}) {s:.1f} s" for n, s in join_s.items()))


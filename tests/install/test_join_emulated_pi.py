"""Several devices on one LAN, joined as a user joins them (issue 15's "done when"), in the namespace lab:

    lan ─┬─ coord: cloudless up --advertise <its LAN address> (API, broker, relay; serves /v1/install.sh + wheels)
         ├─ pi64:  chroot of Debian bookworm arm64 (qemu-aarch64), joined by the printed one-liner
         ├─ pi32:  chroot of Debian bookworm armhf (qemu-arm), joined by the printed one-liner
         └─ pc:    an agent with rootful Podman (runc via scripts/containers.conf), joined by token
                   (`cloudless agent --token`: the one-liner installs into the machine's own home, which for a
                   namespace is this host's)

One module-scoped lab: the emulated installs (the expensive part: 40-60 s per Pi here) are paid once and
the tests below run in file order on it.

- The Pis: `cloudless token create --join-command` prints the line; each device runs it as printed (curl with the
  API key pinned, piped to sh). The agents enrol over the lab network, report aarch64 / armv7l and the Raspberry Pi
  4 profile (the rootfs carries a device-tree model file) and run the process workload placed on them by
  `placement.arch`.
- The fabric: a container workload runs only on the Podman device, and where it cannot run (the Pis are
  process-only, the Podman device's host port is taken) `describe` and the events say why, node by node; a process
  workload spread over the devices runs on the Pis; `kill -9` of a Pi's agent gets it declared lost (its last will)
  and its replicas are re-placed on the other Pi and become ready; the supervisor brings the agent back, which then
  stops the instances that moved away. `kill -9` of the Podman device's agent: no other node runs containers, so
  the container workload waits, explained per node (offline; runtime mismatch), until the agent is started again.
- Then the agents come back after `--restart`, a second install keeps the identity, and `--uninstall` leaves
  nothing running in the chroots.

The lab has no route to the package index: every wheel comes from the coordinator (the dependency wheels from
scripts/agent-wheelhouse.sh, prepared on the host). Join times per device kind and the time from `kill -9` to the
moved replicas ready are printed (`pytest -s`); docs/install.md records them.
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
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from coordinator.rest.install import build_wheel
from tests.dataplane.test_overlay_cluster_lab import until
from tests.install.device import REPO, Device, cached_rootfs
from tests.install.lab_fabric import IMAGE, Coordinator, PodmanDevice, tail
from tests.integration.conftest import require_binary
from tests.integration.podman_env import require_podman
from tests.lab.netlab import Lab
from tests.need import require_root, unavailable

pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400)]

STATE = "/root/.local/share/cloudless"  # where the script puts the venv, identity and pid files (HOME=/root)
PIS = {"pi64": "arm64", "pi32": "armhf"}
PC = "pc-lab"  # the Podman device's node id (its containers carry it as a label: teardown removes only those)
WEB_PORT = 18093
# what the secure-defaults policy and a root agent's process runtime ask: not root, no capabilities
NON_ROOT = {"runAsNonRoot": True, "runAsUser": 65534, "capabilities": {"drop": ["ALL"]},
            "allowPrivilegeEscalation": False}
SMALL = {"requests": {"cpu": "10m", "memory": "8Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}}


def workload(name: str, machine: str) -> str:
    return json.dumps({"apiVersion": "cloudless/v1", "kind": "Workload", "metadata": {"name": name}, "spec": {
        "runtime": "process", "replicas": 1,
        "command": ["/bin/sh", "-c", f"uname -m > /tmp/{name}.arch; exec sleep 100000"],
        "placement": {"arch": [machine]}, "securityContext": NON_ROOT, "resources": SMALL}})


def spread_workload(name: str, replicas: int) -> str:
    """A process workload spread over nodes: it can run on every process-runtime node (the Pis), not in Podman."""
    return json.dumps({"apiVersion": "cloudless/v1", "kind": "Workload", "metadata": {"name": name}, "spec": {
        "runtime": "process", "replicas": replicas, "command": ["/bin/sleep", "100001"],
        "placement": {"spread": "node"}, "securityContext": NON_ROOT, "resources": SMALL}})


def web_workload(name: str, replicas: int) -> str:
    """A container workload (busybox httpd) on a fixed host port: one replica per node, only where containers run."""
    return json.dumps({"apiVersion": "cloudless/v1", "kind": "Workload", "metadata": {"name": name}, "spec": {
        "runtime": "container", "image": IMAGE, "replicas": replicas,
        "command": ["httpd", "-f", "-p", "8080", "-h", "/www"],
        "ports": [{"containerPort": 8080, "hostPort": WEB_PORT}],
        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 2},
        "securityContext": {**NON_ROOT, "readOnlyRootFilesystem": True},
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "200m", "memory": "64Mi"}}}})


@dataclass
class Fabric:
    coord: Coordinator
    pis: dict[str, Device]
    pc: PodmanDevice
    lines: dict[str, str] = field(default_factory=dict)  # the printed one-liner per Pi
    join_s: dict[str, float] = field(default_factory=dict)
    install_logs: dict[str, str] = field(default_factory=dict)  # the one-liner's stderr per Pi

    def logs(self) -> str:
        return "\n".join([tail(self.coord.log), self.pc.tail(),
                          *(tail(d.file(f"{STATE}/agent.log"), label=f"{n}: agent.log") for n, d in self.pis.items())])


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


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The coordinator's source tree, frozen: a copy of the checkout (others may edit it while the test runs, and
    the wheel is built per source hash), with the agent's wheel built where the package index is reachable (pip
    fetches the build backend; the lab has no route out) and the dependency wheelhouse beside it."""
    root = tmp_path_factory.mktemp("release")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, root / name)
    for pkg in ("broker", "cloudless", "coordinator", "dataplane", "edge_agent", "firmware_profiles", "scripts"):
        shutil.copytree(REPO / pkg, root / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (root / ".cache").mkdir()
    (root / ".cache" / "wheelhouse").symlink_to(REPO / ".cache" / "wheelhouse")
    build_wheel(root, root / ".cache" / "wheels")
    return root


def _podman_image_present() -> None:
    require_podman()
    found = subprocess.run(["podman", "image", "exists", IMAGE], capture_output=True, timeout=60, check=False)
    if found.returncode != 0:
        unavailable(f"{IMAGE} is missing: run `make image` (make test does)")


@pytest.fixture(scope="module")
def fabric(rootfs: dict[str, Path], release: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fabric]:
    """The LAN, the coordinator, both Pis joined by the printed one-liner (one after the other, so each join time is
    its own) and the Podman device joined by token."""
    _podman_image_present()
    tmp = tmp_path_factory.mktemp("fabric")
    pis: dict[str, Device] = {}
    pc: PodmanDevice | None = None
    with Lab() as lab:
        lan = lab.network("lan")
        coord = Coordinator(lab.host("coord", lan), tmp, release)
        try:
            for name, arch in PIS.items():
                pis[name] = Device(lab.host(name, lan), arch, tmp / f"root-{name}")
                print(f"{name}: rootfs unpacked in {pis[name].unpack(rootfs[arch]):.1f} s")
            pc = PodmanDevice(lab.host("pc", lan), PC, tmp, release)
            coord.start()
            f = Fabric(coord, pis, pc)
            for name, device in pis.items():
                f.lines[name] = coord.cli("token", "create", "--join-command", "--node-id", name).stdout.strip()
                started = time.monotonic()
                out = device.sh(f.lines[name], timeout=900)
                until(lambda n=name: coord.nodes().get(n, {}).get("online"), 120, f"{name} online",
                      lambda d=device: tail(d.file(f"{STATE}/agent.log")) + tail(coord.log))
                f.join_s[f"{name} ({device.machine}, one-liner)"] = time.monotonic() - started
                f.install_logs[name] = out.stderr
                print(f"join {name} ({device.machine}): {time.monotonic() - started:.1f} s\n{out.stderr}")
            token = coord.json("token", "create")["token"]
            started = time.monotonic()
            pc.start(token)
            until(lambda: coord.nodes().get(PC, {}).get("online"), 120, f"{PC} online", f.logs)
            f.join_s[f"{PC} (x86_64 Podman, agent --token)"] = time.monotonic() - started
            yield f
            print("join times: " + ", ".join(f"{k} {s:.1f} s" for k, s in f.join_s.items()))
        finally:
            if pc is not None:
                pc.close()
            for d in pis.values():
                d.close()
            for d in pis.values():
                shutil.rmtree(d.root, ignore_errors=True)


def test_pis_join_by_the_printed_one_liner_and_run_their_arch_placed_work(fabric: Fabric) -> None:
    coord, devices = fabric.coord, fabric.pis
    for line in fabric.lines.values():
        assert shlex.split(line)[:3] == ["curl", "-fsSk", "--pinnedpubkey"], line
        assert f"https://{coord.addr}:" in line and "| sh -s -- --pin" in line

    # the pin is what authenticates the coordinator: a wrong one and curl refuses the server
    wrong = fabric.lines["pi64"].split(" | ")[0].replace("sha256//", "sha256//AAAA", 1)
    refused = devices["pi64"].sh(wrong, check=False, timeout=60)
    assert refused.returncode != 0 and "#!/bin/sh" not in refused.stdout

    nodes = coord.nodes()
    for name, device in devices.items():
        assert nodes[name]["arch"] == device.machine, nodes[name]
        assert nodes[name]["profile"] == "raspberry-pi-4", nodes[name]
    assert "overlay: aioquic installed" in fabric.install_logs["pi64"]
    assert "overlay: no aioquic wheel for armv7l" in fabric.install_logs["pi32"]

    # the coordinator places a process workload on each by arch; it runs inside that device's chroot
    for name, device in devices.items():
        coord.cli("apply", "-f", "-", input=workload(f"w-{name}", device.machine))
    for name, device in devices.items():
        marker = device.file(f"/tmp/w-{name}.arch")
        until(lambda m=marker: m.exists() and m.read_text().strip(), 180, f"w-{name} running on {name}",
              lambda n=name: coord.cli("describe", "workload", f"w-{n}", check=False).stdout
              + coord.cli("get", "events", check=False).stdout[-3000:] + fabric.logs())
        assert marker.read_text().strip() == device.machine
        assert {r["node"] for r in coord.replicas(f"w-{name}")} == {name}
    for name in devices:  # out of the way of the fabric test's counts
        coord.cli("delete", "workload", f"w-{name}")


def _running(coord: Coordinator, name: str) -> dict[str, str]:
    """replica id -> node, for the replicas of `name` running and ready."""
    return {r["id"]: r["node"] for r in coord.replicas(name) if r["state"] == "running" and r["ready"]}


def _serves_web(fabric: Fabric) -> None:
    """web answers on the Podman device's host port, fetched from another machine of the LAN (the coordinator's)."""
    page = fabric.coord.host.run(sys.executable, "-c", "import sys, urllib.request as u; sys.stdout.write(u.urlopen("
                                 f"'http://{fabric.pc.host.addr}:{WEB_PORT}/', timeout=10).read().decode())",
                                 check=False, timeout=30)
    assert "cloudless test image" in page.stdout, f"web from the coordinator's machine:\n{page.stderr}"


def _instances(device: Device, needle: bytes) -> list[int]:
    """The workload instances running in `device`'s chroot whose command line holds `needle`: one per replica (the
    process runtime's wrapper shell carries the command in its own argv and starts it as its child: the outermost
    counts)."""
    def argv(pid: int) -> bytes:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return b""

    def parent(pid: int) -> int:
        try:
            return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return 0

    hits = {pid for pid in device.processes() if needle in argv(pid)}
    return sorted(pid for pid in hits if parent(pid) not in hits)


def test_a_fabric_of_pis_and_podman_runs_work_where_it_can_explains_where_not_and_moves_it_off_a_killed_agent(
        fabric: Fabric) -> None:
    coord, pis = fabric.coord, fabric.pis
    until(lambda: all(n.get("online") for n in coord.nodes().values()) and len(coord.nodes()) == 3, 120,
          "all three devices online", fabric.logs)
    nodes = coord.nodes()
    assert nodes[PC]["runtime"] == "podman" and nodes[PC]["rootless"] is False, nodes[PC]
    for name in pis:
        assert nodes[name]["runtime"] == "process", nodes[name]

    # a container workload: runs on the Podman device only; the second replica (the host port is taken there) has
    # nowhere to go, and describe and the events say why for every node
    coord.cli("apply", "-f", "-", input=web_workload("web", 2))
    web = until(lambda: (r := _running(coord, "web")) and r, 240, "web running on the Podman device",
                lambda: coord.cli("describe", "workload", "web", check=False).stdout + fabric.logs())
    assert set(web.values()) == {PC}, web
    described = until(lambda: (d := coord.cli("describe", "workload", "web").stdout)
                      and all(f"{n}: runtime mismatch" in d for n in pis) and d, 60,
                      "web's unplaced replica explained per node",
                      lambda: coord.cli("describe", "workload", "web", check=False).stdout)
    for name in pis:
        line = next(ln for ln in described.splitlines() if ln.strip().startswith(f"{name}: runtime mismatch"))
        assert "containers" in line and "process" in line, line  # it lacks containers, it has the process runtime
    assert f"{PC}: " in described.split("Unschedulable", 1)[1], described  # the Podman node's own reason (port)
    events = coord.cli("get", "events", "workload/web").stdout
    assert "Unschedulable" in events and "runtime mismatch" in events, events
    _serves_web(fabric)

    # a process workload spread over the nodes: it runs on the Pis (2 + 1), never in Podman
    coord.cli("apply", "-f", "-", input=spread_workload("spread", 3))
    spread = until(lambda: len(r := _running(coord, "spread")) == 3 and r, 240, "3 spread replicas running",
                   lambda: coord.cli("describe", "workload", "spread", check=False).stdout + fabric.logs())
    assert set(spread.values()) == set(pis), spread
    for name, device in pis.items():
        assert len(_instances(device, b"100001")) == list(spread.values()).count(name), name

    # kill -9 of the agent of the Pi with the most replicas: its last will gets it declared lost, its replicas are
    # placed on the other Pi and run there; the supervisor restarts the agent, which stops what moved away
    victim = max(pis, key=lambda n: list(spread.values()).count(n))
    other = next(n for n in pis if n != victim)
    moved = {rid for rid, node in spread.items() if node == victim}
    pid_file = pis[victim].file(f"{STATE}/run/agent.pid")
    old = int(pid_file.read_text())
    killed = time.monotonic()
    subprocess.run(["kill", "-9", str(old)], check=True)
    until(lambda: "NodeLost" in coord.cli("get", "events", f"node/{victim}").stdout, 60,
          f"{victim} declared lost", fabric.logs)
    lost_s = time.monotonic() - killed

    def replaced() -> dict[str, str] | None:
        now = _running(coord, "spread")
        return now if len(now) == 3 and not moved & set(now) and set(now.values()) == {other} else None

    after = until(replaced, 180, f"spread's replicas from {victim} re-placed on {other} and ready",
                  lambda: coord.cli("describe", "workload", "spread", check=False).stdout + fabric.logs())
    ready_s = time.monotonic() - killed
    assert len(_instances(pis[other], b"100001")) == 3, after
    print(f"kill -9 {victim}'s agent: lost after {lost_s:.1f} s, {len(moved)} replica(s) ready on {other} after "
          f"{ready_s:.1f} s")

    until(lambda: pid_file.exists() and pid_file.read_text().strip() not in ("", str(old)), 60,
          f"{victim}'s agent restarted by its supervisor")
    until(lambda: coord.nodes()[victim]["online"], 120, f"{victim} online again", fabric.logs)
    until(lambda: not _instances(pis[victim], b"100001"), 120,
          f"{victim}'s agent, back, stops the instances that moved away", fabric.logs)
    assert _running(coord, "spread") == after  # nothing moves back

    # kill -9 of the Podman device's agent: no other node runs containers, so web waits and says why; the agent
    # started again (its identity kept) runs web there again, serving
    pc = fabric.pc
    pc.kill9()
    until(lambda: "NodeLost" in coord.cli("get", "events", f"node/{PC}").stdout, 60, f"{PC} declared lost",
          fabric.logs)

    def unplaced() -> list[str]:
        """The per-node reasons describe lists under each unplaced replica."""
        d = coord.cli("describe", "workload", "web").stdout
        if "ReplicaLost" not in d:
            return []
        section = d.split("\nUnschedulable:", 1)[1].split("\nEvents:", 1)[0]
        return [ln.strip() for ln in section.splitlines() if ln.startswith("    ")]

    # both replicas wait, each with every node's reason
    until(lambda: sorted(r.split(":", 2)[0] + ":" + r.split(":", 2)[1] for r in unplaced())
          == sorted([f"{PC}: offline", "pi32: runtime mismatch", "pi64: runtime mismatch"] * 2), 60,
          f"web's replica on the lost {PC} replaced; both unplaced, explained per node",
          lambda: coord.cli("describe", "workload", "web", check=False).stdout + fabric.logs())
    assert not _running(coord, "web")
    restarted = time.monotonic()
    pc.start()
    back = until(lambda: (r := _running(coord, "web")) and r, 180, f"web running again on {PC}",
                 lambda: coord.cli("describe", "workload", "web", check=False).stdout + fabric.logs())
    assert set(back.values()) == {PC}, back
    print(f"{PC}'s agent started again: web ready after {time.monotonic() - restarted:.1f} s")
    _serves_web(fabric)
    for name in ("web", "spread"):
        coord.cli("delete", "workload", name)


def test_pi_agents_restart_reinstall_idempotently_and_uninstall_cleanly(fabric: Fabric) -> None:
    coord, devices, lines = fabric.coord, fabric.pis, fabric.lines
    for name, device in devices.items():
        pid_file = device.file(f"{STATE}/run/agent.pid")
        old = int(pid_file.read_text())
        restarted = device.sh(lines[name].replace("| sh -s -- ", "| sh -s -- --restart "), timeout=120)
        assert "agent restarted" in restarted.stderr
        assert int(pid_file.read_text()) != old
        until(lambda n=name: coord.nodes()[n]["online"], 120, f"{name} online after the restart", fabric.logs)

    # idempotent: a second run changes nothing and keeps the identity
    pi64 = devices["pi64"]
    cert = hashlib.sha256(pi64.file(f"{STATE}/agent/identity/node.pem").read_bytes()).hexdigest()
    again = pi64.sh(lines["pi64"], timeout=600)
    assert "already installed" in again.stderr and "already enrolled" in again.stderr, again.stderr
    assert hashlib.sha256(pi64.file(f"{STATE}/agent/identity/node.pem").read_bytes()).hexdigest() == cert
    assert sorted(coord.nodes()) == sorted([*devices, PC])

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
    until(lambda: not any(n["online"] for n in coord.nodes().values() if n["id"] in devices), 120,
          "both Pis offline")

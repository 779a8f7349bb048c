"""The one-line device install's Termux and systemd branches, on this host with simulated device tools.

A real `cloudless up --local-only` (from a frozen copy of the checkout, as the install lab uses) serves
scripts/install-agent.sh and the agent's wheel; `cloudless token create --join-command` prints the line; the test
runs that line (plus `--no-overlay`: no fixed UDP port taken on a shared host) as a device's shell would. The
agents really install from the coordinator's wheels into a venv, enrol, run and show up online. What is simulated
are the device's own tools (tests/install/fake_tools.py, each call recorded):

- Termux: a Termux-like prefix ($PREFIX = <tmp>/data/data/com.termux/files/usr, $HOME beside it,
  $TERMUX_VERSION set) whose bin/ is the only PATH: this host's binaries of Termux's bootstrap packages (sh is dash)
  and python3 (Debian's, not Android's), a `pkg` that installs nothing and a `termux-wake-lock` that only records.
  Not proven here: Android's Python (no manylinux wheels: the script then builds msgpack as pure Python),
  Termux:Boot actually running the boot script at boot (the test runs it as Termux:Boot would), a real wake lock.
- systemd: the detection directory (CLOUDLESS_SYSTEMD_RUN_DIR, default /run/systemd/system) points at a directory
  of the test's; `systemctl --user` and `loginctl` are fakes: the fake systemctl starts the unit file's ExecStart
  the way a user manager would (own session, a user manager's small environment), so the agent that runs is the
  one the unit describes. Not proven: a real user manager, Restart=always in action, linger across a reboot.

`apt-get`, `sudo` (and on Termux `dpkg-query`, `systemctl`, `loginctl`) are tripwires: the branch under test must
not call them. Every process a device started is found by its paths under the test's directory and killed at
teardown. Run under `flock /tmp/cloudless-integration.lock` (it starts `cloudless up`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coordinator.rest.install import build_wheel
from tests.dataplane.test_overlay_cluster_lab import until
from tests.install.device import REPO
from tests.integration.conftest import free_port, require_binary
from tests.need import unavailable

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

FAKES = Path(__file__).with_name("fake_tools.py")
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
UNIT = "cloudless-agent.service"


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A frozen copy of the checkout (others may edit the tree meanwhile; the wheel is built per source hash), its
    agent wheel built, and the dependency wheelhouse with this host's x86_64 wheels (installs work offline)."""
    require_binary("curl")
    if subprocess.run(["dpkg-query", "-W", "-f=${Status}", "python3-venv"], capture_output=True, text=True,
                      check=False).stdout != "install ok installed" or not Path("/usr/bin/python3").exists():
        unavailable("Debian's python3 and python3-venv are needed (apt-get install python3-venv): the script "
                    "creates the device's venv with the system python3")
    house = REPO / ".cache" / "wheelhouse"
    if not list(house.glob("psutil-*x86_64*.whl")):
        fetched = subprocess.run([str(REPO / "scripts" / "agent-wheelhouse.sh"), "x86_64"], capture_output=True,
                                 text=True, timeout=600, check=False)
        if fetched.returncode != 0:
            unavailable(f"scripts/agent-wheelhouse.sh x86_64 failed:\n{fetched.stderr[-800:]}")
    root = tmp_path_factory.mktemp("release")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, root / name)
    for pkg in ("broker", "cloudless", "coordinator", "dataplane", "edge_agent", "firmware_profiles", "scripts"):
        shutil.copytree(REPO / pkg, root / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (root / ".cache").mkdir()
    (root / ".cache" / "wheelhouse").symlink_to(house)
    build_wheel(root, root / ".cache" / "wheels")
    return root


class Coordinator:
    """`cloudless up --local-only --no-agent --no-relay` on free loopback ports, and the CLI next to it."""

    def __init__(self, release: Path, tmp: Path) -> None:
        self.release, self.tmp, self.config, self.log = release, tmp, tmp / "cli.json", tmp / "up.log"
        self.env = {"PATH": os.environ.get("PATH", HOST_PATH), "HOME": str(tmp), "PYTHONPATH": str(release),
                    "CLOUDLESS_LOG_LEVEL": "INFO"}
        argv = [sys.executable, "-u", "-m", "cloudless", "up", "--local-only", "--no-agent", "--no-relay",
                "--data-dir", str(tmp / "data"), "--config", str(self.config), "--api-port", str(free_port()),
                "--mqtt-port", str(free_port())]
        self.proc = subprocess.Popen(argv, stdout=self.log.open("w"), stderr=subprocess.STDOUT, cwd=release,
                                     env=self.env, start_new_session=True)
        until(lambda: "Press Ctrl-C to stop." in self.log.read_text() or self.proc.poll() is not None, 120,
              "cloudless up")
        assert self.proc.poll() is None, self.log.read_text()

    def cli(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "cloudless", *args], capture_output=True, text=True,
                              timeout=120, check=False, cwd=self.release,
                              env={**self.env, "CLOUDLESS_CONFIG": str(self.config)})
        assert done.returncode == 0, f"cloudless {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def nodes(self) -> dict[str, Any]:
        return {n["id"]: n for n in json.loads(self.cli("get", "nodes", "-o", "json"))["items"]}

    def online(self, node: str) -> bool:
        return bool(self.nodes().get(node, {}).get("online"))

    def tail(self) -> str:
        return "--- up.log:\n" + self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="module")
def coord(release: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    c = Coordinator(release, tmp_path_factory.mktemp("coord"))
    try:
        yield c
    finally:
        c.stop()


class SimDevice:
    """A device simulated in a directory: its environment, its bin directory of fakes, the calls they recorded."""

    def __init__(self, root: Path, home: Path, env: dict[str, str], bin_dir: Path) -> None:
        self.root, self.home, self.env, self.bin = root, home, env, bin_dir
        self.state = root / "fake-state"
        self.base = home / ".local" / "share" / "cloudless"
        self.venv, self.data, self.run_dir = self.base / "venv", self.base / "agent", self.base / "run"

    def fake(self, tool: str, *, tripwire: bool = False) -> None:
        wrapper = self.bin / tool
        wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKES} {self.state} {'!' if tripwire else ''}{tool}"
                           ' "$@"\n')
        wrapper.chmod(0o755)

    def sh(self, line: str, *, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([self.env.get("SHELL", "/bin/sh"), "-c", line], capture_output=True, text=True,
                              timeout=timeout, check=False, env=self.env, cwd=self.home, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, f"{line[:300]}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done

    def calls(self) -> list[list[str]]:
        path = self.state / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def agents(self) -> list[int]:
        """PIDs of the agent processes this device runs (its venv's `cloudless agent`)."""
        needle = f"{self.venv}/bin/cloudless\0agent\0".encode()
        return [pid for pid, argv in _processes() if needle in argv]

    def processes(self) -> list[int]:
        """Every process whose command line names a path of this device."""
        return [pid for pid, argv in _processes() if str(self.root).encode() in argv]

    def agent_log(self) -> str:
        logs = [self.base / "agent.log", self.state / f"{UNIT}.log"]
        return "\n".join(f"--- {p.name}:\n{p.read_text(errors='replace')[-3000:]}" for p in logs if p.exists())

    def close(self) -> None:
        for pid in self.processes():
            try:
                os.killpg(os.getpgid(pid), signal.SIGKILL)  # its supervisor or unit session: all of it
            except ProcessLookupError:
                pass


def _processes() -> Iterator[tuple[int, bytes]]:
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                yield int(entry), Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue


def _identity(device: SimDevice) -> str:
    return hashlib.sha256((device.data / "identity" / "node.pem").read_bytes()).hexdigest()


def _fetch_part(line: str) -> str:
    """The printed line's download half: with it, `| sh -s -- --uninstall` runs the same script."""
    return line.split(" | ", maxsplit=1)[0]


def _termux_toolset(bin_dir: Path) -> None:
    """$PREFIX/bin as a fresh Termux has it, from this host's binaries of the same packages: Termux's bootstrap
    (coreutils, dash as sh, diffutils, sed, grep, findutils, curl, util-linux, procps) and python3 (what the
    script's `pkg install python` gives). Nothing else is on PATH: a tool the script needed beyond these would be
    missing here as on a phone."""
    (bin_dir / "sh").symlink_to("/bin/dash")  # Termux's own shell lives in the prefix; there is no /bin/sh
    (bin_dir / "python3").symlink_to("/usr/bin/python3")
    for package in ("coreutils", "dash", "diffutils", "sed", "grep", "findutils", "curl", "util-linux", "procps"):
        files = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, check=False).stdout
        for line in files.splitlines():
            path = Path(line)
            if path.parent in (Path("/bin"), Path("/usr/bin")) and os.access(path, os.X_OK) \
                    and not (bin_dir / path.name).exists():
                (bin_dir / path.name).symlink_to(path)
    missing = [t for t in ("cat", "sed", "grep", "sha256sum", "cmp", "curl", "setsid", "nohup") if
               not (bin_dir / t).exists()]
    if missing:
        unavailable(f"this host lacks {missing} (coreutils, sed, grep, diffutils, curl, util-linux)")


@pytest.fixture
def termux(tmp_path: Path) -> Iterator[SimDevice]:
    files = tmp_path / "data" / "data" / "com.termux" / "files"
    prefix, home = files / "usr", files / "home"
    (prefix / "bin").mkdir(parents=True)
    home.mkdir()
    _termux_toolset(prefix / "bin")
    systemd_dir = tmp_path / "run-systemd-system"  # present: only the Termux detection keeps systemd out
    systemd_dir.mkdir()
    env = {"PREFIX": str(prefix), "HOME": str(home), "TERMUX_VERSION": "0.118.1", "LANG": "en_US.UTF-8",
           "PATH": str(prefix / "bin"), "SHELL": str(prefix / "bin" / "sh"),
           "TMPDIR": str(prefix / "tmp"), "CLOUDLESS_SYSTEMD_RUN_DIR": str(systemd_dir)}
    (prefix / "tmp").mkdir()
    device = SimDevice(tmp_path, home, env, prefix / "bin")
    for tool in ("pkg", "termux-wake-lock", "termux-wake-unlock"):
        device.fake(tool)
    for tool in ("apt-get", "sudo", "dpkg-query", "systemctl", "loginctl"):
        device.fake(tool, tripwire=True)
    try:
        yield device
    finally:
        device.close()


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[SimDevice]:
    home, bin_dir = tmp_path / "home", tmp_path / "bin"
    home.mkdir()
    bin_dir.mkdir()
    systemd_dir = tmp_path / "run-systemd-system"
    systemd_dir.mkdir()
    env = {"HOME": str(home), "LANG": "C.UTF-8", "PATH": f"{bin_dir}:{HOST_PATH}",
           "XDG_RUNTIME_DIR": str(tmp_path / "run-user"),  # created by the fake linger, as the user manager would
           "CLOUDLESS_SYSTEMD_RUN_DIR": str(systemd_dir)}
    device = SimDevice(tmp_path, home, env, bin_dir)
    for tool in ("systemctl", "loginctl"):
        device.fake(tool)
    for tool in ("apt-get", "sudo", "pkg", "termux-wake-lock"):
        device.fake(tool, tripwire=True)
    try:
        yield device
    finally:
        device.close()


def test_termux_branch_installs_a_boot_script_with_a_wake_lock_and_runs_the_agent(
        coord: Coordinator, termux: SimDevice) -> None:
    device, node = termux, "phone-sim"
    line = coord.cli("token", "create", "--join-command", "--node-id", node).strip()
    assert shlex.split(line)[:3] == ["curl", "-fsSk", "--pinnedpubkey"], line
    first = device.sh(f"{line} --no-overlay")
    assert "termux on x86_64" in first.stderr, first.stderr

    # Termux's packages through pkg, a wake lock; nothing of Debian's or systemd's
    calls = device.calls()
    assert ["pkg", "install", "-y", "python", "python-cryptography", "python-psutil"] in calls, calls
    assert ["termux-wake-lock"] in calls, calls
    assert {c[0] for c in calls} == {"pkg", "termux-wake-lock"}, calls
    # the venv sees the system's (Termux's) packages
    assert "include-system-site-packages = true" in (device.venv / "pyvenv.cfg").read_text()

    # the Termux:Boot script: the prefix's shell, the wake lock, then the supervisor
    boot = device.home / ".termux" / "boot" / "cloudless-agent"
    supervisor = device.base / "bin" / "cloudless-agent-supervise"
    prefix = device.env["PREFIX"]
    assert boot.read_text().splitlines() == [f"#!{prefix}/bin/sh", "termux-wake-lock", f"exec {supervisor}"]
    assert os.access(boot, os.X_OK)
    text = supervisor.read_text()
    assert text.startswith(f"#!{prefix}/bin/sh\n"), text
    assert (f'MSGPACK_PUREPYTHON=1 "{device.venv}/bin/cloudless" agent --node-id {node} --data-dir {device.data} '
            f"--runtime process --token-file {device.data}/token --no-overlay") in text, text

    # the agent runs, with msgpack's pure-Python switch, enrolled and online at the coordinator
    until(lambda: coord.online(node), 120, f"{node} online", lambda: device.agent_log() + coord.tail())
    [agent] = device.agents()
    assert int((device.run_dir / "agent.pid").read_text()) == agent
    assert b"MSGPACK_PUREPYTHON=1" in Path(f"/proc/{agent}/environ").read_bytes().split(b"\0")
    identity = _identity(device)

    # again: nothing changes, the same identity, still one agent (the same process)
    again = device.sh(f"{line} --no-overlay")
    assert "already installed" in again.stderr and "already enrolled" in again.stderr, again.stderr
    assert device.agents() == [agent] and _identity(device) == identity

    # a reboot: everything gone, then Termux:Boot runs the boot script, which takes the lock and starts the agent
    supervisor_pid = int((device.run_dir / "supervisor.pid").read_text())
    os.killpg(supervisor_pid, signal.SIGKILL)
    until(lambda: not device.agents(), 30, "the agent gone with its supervisor")
    locks = device.calls().count(["termux-wake-lock"])
    booting = subprocess.Popen([str(boot)], env=device.env, cwd=device.home, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    booted = until(lambda: (a := device.agents()) and a, 60, "the agent started by the boot script",
                   device.agent_log)
    assert booted != [agent] and len(booted) == 1
    assert device.calls().count(["termux-wake-lock"]) == locks + 1
    until(lambda: coord.online(node), 120, f"{node} online after the boot script", device.agent_log)

    # --uninstall: nothing of the device runs, no boot script, no venv, the lock released; the identity stays
    out = device.sh(f"{_fetch_part(line)} | sh -s -- --uninstall")
    assert "identity and data are kept" in out.stderr, out.stderr
    assert booting.wait(timeout=30) == 0  # the boot script became the supervisor (exec), which ended cleanly
    assert device.processes() == []
    assert not boot.exists() and not device.venv.exists() and not supervisor.exists()
    assert (device.data / "identity" / "node.pem").exists()
    assert device.calls()[-1] == ["termux-wake-unlock"]
    until(lambda: not coord.online(node), 120, f"{node} offline after --uninstall", coord.tail)
    device.sh(f"{_fetch_part(line)} | sh -s -- --uninstall --purge")
    assert not device.base.exists()


def _unit(path: Path) -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        elif "=" in line:
            key, value = line.split("=", 1)
            current[key] = value
    return sections


def test_systemd_branch_installs_a_user_unit_with_linger_and_runs_the_agent(
        coord: Coordinator, systemd: SimDevice) -> None:
    device, node = systemd, "debian-sim"
    user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    line = coord.cli("token", "create", "--join-command", "--node-id", node).strip()
    first = device.sh(f"{line} --no-overlay")
    assert "debian on x86_64" in first.stderr, first.stderr

    unit_file = device.home / ".config" / "systemd" / "user" / UNIT
    unit = _unit(unit_file)
    exec_start = (f"{device.venv}/bin/cloudless agent --node-id {node} --data-dir {device.data} --runtime process "
                  f"--token-file {device.data}/token --no-overlay")
    assert unit["Service"]["ExecStart"] == exec_start
    assert unit["Service"]["Restart"] == "always"
    assert unit["Install"]["WantedBy"] == "default.target"
    # linger first (the unit runs without a login), then the manager reloads, enables and (re)starts the unit
    assert device.calls() == [["loginctl", "enable-linger", user], ["systemctl", "--user", "daemon-reload"],
                              ["systemctl", "--user", "enable", UNIT], ["systemctl", "--user", "restart", UNIT]]
    assert (device.home / ".config" / "systemd" / "user" / "default.target.wants" / UNIT).is_symlink()
    # the agent that runs is the unit's, not a supervisor of the script's
    until(lambda: coord.online(node), 120, f"{node} online", lambda: device.agent_log() + coord.tail())
    [agent] = device.agents()
    assert int((device.state / f"{UNIT}.pid").read_text()) == agent
    argv = Path(f"/proc/{agent}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    assert [a.decode() for a in argv[1:]] == shlex.split(exec_start)  # argv[0]: the venv's python, from the shebang
    assert not (device.run_dir / "supervisor.pid").exists()
    identity = _identity(device)

    # again: the same unit, not restarted; the same identity and agent
    calls = len(device.calls())
    again = device.sh(f"{line} --no-overlay")
    assert "already installed" in again.stderr and "already enrolled" in again.stderr, again.stderr
    assert device.calls()[calls:] == [["loginctl", "enable-linger", user], ["systemctl", "--user", "daemon-reload"],
                                      ["systemctl", "--user", "enable", "--now", UNIT]]
    assert device.agents() == [agent] and _identity(device) == identity

    # --restart goes through the user manager
    calls = len(device.calls())
    device.sh(f"{_fetch_part(line)} | sh -s -- --restart")
    assert device.calls()[calls:] == [["systemctl", "--user", "restart", UNIT]]
    restarted = until(lambda: (a := device.agents()) and a != [agent] and a, 30, "the unit's agent restarted")
    assert len(restarted) == 1
    until(lambda: coord.online(node), 120, f"{node} online after --restart", device.agent_log)

    # --uninstall: disabled and stopped through the manager, the unit gone, nothing running, the identity kept
    calls = len(device.calls())
    device.sh(f"{_fetch_part(line)} | sh -s -- --uninstall")
    assert device.calls()[calls:] == [["systemctl", "--user", "disable", "--now", UNIT],
                                      ["systemctl", "--user", "daemon-reload"]]
    assert not unit_file.exists() and not device.venv.exists()
    assert device.processes() == []
    assert (device.data / "identity" / "node.pem").exists()
    until(lambda: not coord.online(node), 120, f"{node} offline after --uninstall", coord.tail)


def test_a_device_without_a_name_of_its_own_is_told_to_pass_node_id(tmp_path: Path) -> None:
    """Android calls itself localhost: the script stops before installing anything and says what to pass. The
    device's /etc/hostname is replaced by one saying `localhost` in a mount namespace of the test's own."""
    from tests.need import require_root

    require_root("a mount namespace over /etc/hostname")
    require_binary("unshare")
    fake = tmp_path / "hostname"
    fake.write_text("localhost\n")
    home = tmp_path / "home"
    home.mkdir()
    script = REPO / "scripts" / "install-agent.sh"
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f'mount --bind "{fake}" /etc/hostname && exec sh "{script}" --server https://127.0.0.1:9 '
         "--pin sha256//AAAA --token t"],
        capture_output=True, text=True, timeout=60, check=False,
        env={"HOME": str(home), "PATH": HOST_PATH, "PREFIX": str(tmp_path / "usr"), "TERMUX_VERSION": "0.118.1"})
    assert done.returncode == 1, done
    assert "this device has no name of its own (localhost): pass --node-id NAME" in done.stderr, done.stderr
    assert "--join-command --node-id NAME" in done.stderr
    assert not (home / ".local").exists()  # nothing installed, nothing fetched

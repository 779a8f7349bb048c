"""`cloudless exec -it` end to end: a real embedded broker, a real coordinator process, a real process-runtime agent,
and the real CLI driven through a pseudo-terminal, as a user's terminal would drive it.

What the user does and must see: a shell in the replica (running as the replica's user, in its working directory);
`stty size` there says the size of the user's window, and follows a resize; Ctrl-C interrupts the remote foreground
job, not the session; `echo hi; exit 3` prints hi and the CLI exits 3. Without -t, standard input is piped. A user
who vanishes (the CLI killed) leaves nothing running in the replica. Every wait is bounded."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.agent_env import AgentProc
from tests.integration.cluster_env import CoordinatorProc, sleeper, until
from tests.integration.conftest import BrokerUnderTest, make_auth
from tests.need import require_root

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Env:
    coord: CoordinatorProc
    agent: AgentProc
    home: Path

    def cli_env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home), "TERM": "xterm",
                "CLOUDLESS_SERVER": self.coord.url, "CLOUDLESS_TOKEN": self.coord.token, "LANG": "C.UTF-8"}

    def logs(self) -> str:
        return f"{self.coord.log_tail()}\n--- agent ---\n{self.agent.log_tail()}"


@contextlib.contextmanager
def _cluster(runtime: str, workload: dict[str, Any], prefix: str) -> Iterator[Env]:
    """A broker, a coordinator and one agent (node A) with the `runtime`, running one replica of `workload`."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    broker = BrokerUnderTest(kind="embedded", workdir=workdir)
    broker.passwords = make_auth(workdir)
    broker.start()
    coord = CoordinatorProc(broker, workdir)
    agent = AgentProc(node_id="A", broker=broker, runtime=runtime)
    home = workdir / "home"
    home.mkdir()
    name = workload["metadata"]["name"]
    try:
        coord.start()
        agent.start()
        e = Env(coord, agent, home)
        until(lambda: any(n["online"] for n in coord.request("GET", "/v1/nodes")["items"]), 60, "node A online",
              e.logs)
        coord.apply(workload)
        until(lambda: _running(coord, name), 120, f"the replica of `{name}` running on A", e.logs)
        yield e
    finally:
        agent.cleanup()
        coord.stop()
        broker.stop()


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    require_root("the process-runtime agent runs the replica as another user (runAsUser)")
    with _cluster("process", sleeper("shell", 1), "cl-exec-tty-") as e:
        yield e


def _running(coord: CoordinatorProc, name: str) -> bool:
    replicas = coord.workload(name)["status"]["replicas"]
    return bool(replicas) and replicas[0].get("node") == "A" and replicas[0].get("state") == "running"


@dataclass
class Terminal:
    """The CLI on a pty we hold the other end of: what a terminal emulator is to a shell."""

    proc: subprocess.Popen[bytes]
    master: int
    seen: bytearray = field(default_factory=bytearray)

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def resize(self, rows: int, cols: int) -> None:
        # the kernel sends SIGWINCH to the CLI: it is the foreground process group of this terminal
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def read_until(self, pattern: str, timeout: float, what: str, logs: Any) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.seen.decode("utf-8", "replace"))
            if found:
                return found
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # EIO: the CLI exited and closed the terminal
                    chunk = b""
                if not chunk and self.proc.poll() is not None:
                    break
                self.seen += chunk
        raise AssertionError(f"no {what} ({pattern!r}) within {timeout}s; the terminal shows:\n"
                             f"{self.seen.decode('utf-8', 'replace')[-2000:]}\n{logs()}")

    def forget(self) -> None:
        self.seen.clear()


def _open_terminal(env: Env, argv: list[str], rows: int = 30, cols: int = 100) -> Terminal:
    master, slave = os.openpty()
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def controlling() -> None:  # a session of its own, with this pty as its terminal, like a login shell's job
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen([sys.executable, "-m", "cloudless", *argv], stdin=slave, stdout=slave, stderr=slave,
                            env=env.cli_env(), cwd=REPO, start_new_session=True, preexec_fn=controlling)  # noqa: PLW1509
    os.close(slave)
    return Terminal(proc, master)


def _exit_code(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def test_exec_it_gives_a_real_terminal_that_follows_resizes_and_returns_the_exit_code(env: Env) -> None:
    term = _open_terminal(env, ["exec", "-it", "shell", "--", "sh"])
    try:
        term.type("stty size; id -u; pwd\r")
        term.read_until(r"\b30 100\r?\n", 60, "the window size of the user's terminal", env.logs)
        term.read_until(r"\b65534\r?\n", 10, "the replica's user id", env.logs)
        term.read_until(r"(\n|\$ )/[^\r\n]*/work\r?\n", 10, "the replica's working directory", env.logs)

        term.resize(40, 120)

        def resized() -> bool:
            term.forget()
            term.type("stty size\r")
            try:
                term.read_until(r"\n\d+ \d+\r?\n", 10, "stty size", env.logs)
            except AssertionError:
                return False
            return re.search(r"\b40 120\r?\n", term.seen.decode("utf-8", "replace")) is not None
        until(resized, 30, "the resize to reach the remote terminal (stty size: 40 120)", env.logs)

        # Ctrl-C goes to the remote foreground job (the line discipline's SIGINT), the shell stays
        term.forget()
        term.type("sleep 300\r")
        term.read_until(r"sleep 300\r?\n", 10, "the echo of the typed command", env.logs)
        term.type("\x03")
        term.type("echo after$((40+2))\r")
        term.read_until(r"after42\r?\n", 20, "the shell answering after Ctrl-C", env.logs)

        term.forget()
        term.type("echo hi; exit 3\r")
        term.read_until(r"\bhi\r?\n", 20, "the output of echo hi", env.logs)
        assert _exit_code(term.proc) == 3, term.seen.decode("utf-8", "replace")
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
        os.close(term.master)


def test_exec_i_without_a_terminal_pipes_standard_input(env: Env) -> None:
    script = "read x; echo got-$x; test -t 0 || echo no-tty; cat; exit 4"  # cat: to the end of the input
    r = subprocess.run([sys.executable, "-m", "cloudless", "exec", "-i", "shell", "--", "sh", "-c", script],
                       input=b"from-stdin\nsecond line\n",
                       capture_output=True, env=env.cli_env(), cwd=REPO, timeout=60, check=False)
    assert r.returncode == 4, (r.stdout, r.stderr, env.logs())
    assert r.stdout == b"got-from-stdin\nno-tty\nsecond line\n"  # no terminal: no \r, no echo


def test_ctrl_d_ends_the_shell(env: Env) -> None:
    term = _open_terminal(env, ["exec", "-it", "shell", "--", "sh"])
    try:
        term.type("echo ready$((1+1))\r")
        term.read_until(r"ready2\r?\n", 60, "the shell", env.logs)
        term.type("\x04")  # ^D at an empty line: end of file for the remote shell, which exits 0
        assert _exit_code(term.proc) == 0
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
        os.close(term.master)


def test_a_vanished_client_leaves_nothing_running(env: Env) -> None:
    term = _open_terminal(env, ["exec", "-it", "shell", "--", "sh"])
    try:
        term.type("sleep 1000 & echo pid=$!\r")
        pid = int(term.read_until(r"pid=(\d+)", 60, "the background sleep's pid", env.logs).group(1))
        assert Path(f"/proc/{pid}").exists()
        term.proc.send_signal(signal.SIGKILL)  # the user's machine is gone: the connection drops
        term.proc.wait(timeout=10)
        until(lambda: not _alive(pid), 60, f"the session's processes (sleep, pid {pid}) killed by the agent",
              env.logs)
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
        os.close(term.master)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, only not yet reaped


# ---- a container on a Podman node ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def podman_env() -> Iterator[Env]:
    require_root("rootful Podman for the container")
    box = sleeper("box", 1, image="localhost/cloudless/busybox:latest", runtime="container")
    with _cluster("podman", box, "cl-exec-tty-podman-") as e:
        yield e


def test_exec_it_in_a_podman_container(podman_env: Env) -> None:
    term = _open_terminal(podman_env, ["exec", "-it", "box", "--", "sh"], rows=33, cols=99)
    try:
        term.type("stty size\r")
        term.read_until(r"\b33 99\r?\n", 90, "the window size inside the container", podman_env.logs)
        term.type("echo in-$((6*7)); exit 3\r")
        term.read_until(r"\bin-42\r?\n", 20, "the container shell's answer", podman_env.logs)
        assert _exit_code(term.proc) == 3, term.seen.decode("utf-8", "replace")
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
        os.close(term.master)


def test_a_vanished_client_leaves_nothing_running_in_the_container(podman_env: Env) -> None:
    """What `podman exec` started is conmon's child, not the agent's: killing the client alone would leave it
    running (podman #19486). The agent finds it by the session's marker and kills it."""
    term = _open_terminal(podman_env, ["exec", "-it", "box", "--", "sh"])
    try:
        term.type("sleep 1000 & echo pid=$!\r")
        inner = int(term.read_until(r"pid=(\d+)", 90, "the background sleep's pid in the container",
                                    podman_env.logs).group(1))
        hosts = [p for p in _host_pids_of(b"sleep\x001000\x00") if _ns_pid(p) == inner]
        assert len(hosts) == 1, (inner, hosts)  # the container's processes are host processes (rootful Podman)
        term.proc.send_signal(signal.SIGKILL)  # the user's machine is gone: the connection drops
        term.proc.wait(timeout=10)
        until(lambda: not _alive(hosts[0]), 90,
              f"the container's sleep (pid {inner} inside, {hosts[0]} on the host) killed by the agent",
              podman_env.logs)
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
        os.close(term.master)


def _host_pids_of(cmdline: bytes) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes() == cmdline:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _ns_pid(pid: int) -> int | None:
    """The pid of host process `pid` in its own pid namespace (the innermost NSpid), None when it is in ours."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    ids = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
    return int(ids[-1]) if len(ids) > 1 else None

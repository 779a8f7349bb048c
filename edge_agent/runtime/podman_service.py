"""The Podman REST service the Podman runtime talks to: where its socket is, whether it answers, and — when
nothing answers — a `podman system service` process this agent starts and later stops (an adapter: blocking
calls, run from a thread by `PodmanRuntime`).

Podman has no daemon: its REST API is served by `podman system service`, normally socket-activated by systemd
(`podman.socket`). Small devices often lack that unit, or the user session that runs it, so the agent can run
the service itself. `--time=0` keeps it alive without clients; containers outlive it (each has its own
conmon), so stopping the service never stops a workload, and a restarted agent re-adopts its containers.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from edge_agent.errors import RuntimeUnavailable

log = logging.getLogger(__name__)

ROOT_SOCKET = Path("/run/podman/podman.sock")
_LOG_TAIL_BYTES = 2000


def default_socket_path(environ: Mapping[str, str], euid: int) -> Path:
    """Podman's own default: `$XDG_RUNTIME_DIR/podman/podman.sock` rootless, `/run/podman/podman.sock` as root."""
    runtime_dir = environ.get("XDG_RUNTIME_DIR", "")
    if euid != 0 and runtime_dir:
        return Path(runtime_dir) / "podman" / "podman.sock"
    return ROOT_SOCKET


def socket_answers(path: Path, timeout_s: float = 2.0) -> bool:
    """True when an HTTP server on the unix socket `path` answers `GET /_ping` with 200 (Podman's liveness)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(str(path))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: podman\r\n\r\n")
            status_line = sock.recv(64)
    except OSError:
        return False
    return status_line.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200"))


class PodmanService:
    """A `podman system service --time=0 unix://PATH` child process (one per runtime at most).

    Its output goes to an anonymous temporary file, quoted in the error when it fails to start.
    """

    def __init__(
        self,
        *,
        socket_path: Path,
        containers_conf: Path | None = None,
        podman_binary: str = "podman",
        start_timeout_s: float = 20.0,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.containers_conf = containers_conf
        self.podman_binary = podman_binary
        self.start_timeout_s = start_timeout_s
        self._environ = dict(os.environ if environ is None else environ)  # the service inherits our environment
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the service (unless ours still runs) and wait until it answers; RuntimeUnavailable otherwise."""
        if self.running and socket_answers(self.socket_path):
            return
        self.stop()
        env = dict(self._environ)
        if self.containers_conf is not None:
            env["CONTAINERS_CONF"] = str(self.containers_conf)
        argv = [self.podman_binary, "system", "service", "--time=0", f"unix://{self.socket_path}"]
        try:
            self.socket_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Open for the service's lifetime (closed in stop()), so no context manager.
            self._log = tempfile.TemporaryFile(prefix="cloudless-podman-service-")  # noqa: SIM115
            # A session of its own: a Ctrl-C meant for the agent must not take the service down mid-request.
            self._proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            self._close_log()
            raise RuntimeUnavailable(f"cannot start {' '.join(argv)}: {exc}") from exc
        log.info("started podman service pid %d on %s", self._proc.pid, self.socket_path)
        self._wait_ready(argv)

    def _wait_ready(self, argv: list[str]) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if socket_answers(self.socket_path, timeout_s=1.0):
                return
            if not self.running:
                break
            time.sleep(0.05)
        output = self._log_tail()
        code = self._proc.poll() if self._proc is not None else None
        self.stop()
        why = f"exited with status {code}" if code is not None else f"did not answer within {self.start_timeout_s:g}s"
        raise RuntimeUnavailable(f"{' '.join(argv)} {why}: {output or '(no output)'}")

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM the service (SIGKILL after `timeout_s`). Containers keep running: each has its own conmon."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.info("stopped podman service pid %d (%s)", proc.pid, self.socket_path)
        self._close_log()

    def _log_tail(self) -> str:
        if self._log is None:
            return ""
        try:
            self._log.seek(0, os.SEEK_END)
            size = self._log.tell()
            self._log.seek(max(0, size - _LOG_TAIL_BYTES))
            return self._log.read().decode(errors="replace").strip()
        except OSError:
            return ""

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

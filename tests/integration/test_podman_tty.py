"""`exec -it` in a real Podman container: the command line edge_agent.runtime.podman_tty builds, run by
edge_agent.tty on a real pty against a real (rootful) Podman service, as the agent runs it: the container's shell
sees the window size, follows a resize, and its exit code comes back. Every wait is bounded."""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.runtime.podman_tty import tty_command
from edge_agent.tty import Terminal, spawn
from tests.integration.podman_env import CONF, IMAGE, PodmanTarget, _root_service, require_podman

pytestmark = pytest.mark.integration
NAME = "cloudless-tty-test"


@pytest.fixture(scope="module")
def container() -> Iterator[PodmanTarget]:
    require_podman()
    with tempfile.TemporaryDirectory(prefix="cl-podman-tty-") as workdir:
        for target in _root_service(Path(workdir)):
            target.cli("rm", "-f", "-t", "0", NAME, timeout=60)
            target.cli("run", "-d", "--name", NAME, IMAGE, "sleep", "600", timeout=120)
            try:
                yield target
            finally:
                subprocess.run(["podman", "--url", f"unix://{target.socket_path}", "rm", "-f", "-t", "0", NAME],
                               capture_output=True, timeout=60, check=False)


async def _read_until(term: Terminal, seen: bytearray, needle: bytes, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while needle not in seen:
            data = await term.read()
            if not data:
                break
            seen += data
    assert needle in seen, bytes(seen)


async def test_podman_exec_on_a_pty_follows_the_window_and_returns_the_exit_code(container: PodmanTarget) -> None:
    cmd = tty_command(NAME, ["sh"], tty=True, term="xterm", socket_path=container.socket_path, containers_conf=CONF)
    term = await spawn(cmd, tty=True, rows=33, cols=99)
    seen = bytearray()
    try:
        term.write(b"stty size; echo $TERM-$((6*7))\r")
        await _read_until(term, seen, b"xterm-42")
        assert b"33 99\r\n" in seen
        term.resize(44, 111)  # SIGWINCH to podman exec, which sets the container terminal's size
        for i in range(20):  # podman applies it asynchronously: ask until it shows (bounded)
            seen.clear()
            term.write(f"stty size; echo end-$(({i}+1000))\r".encode())
            await _read_until(term, seen, f"end-{i + 1000}".encode())
            if b"44 111" in seen:
                break
            await asyncio.sleep(0.2)
        assert b"44 111" in seen, bytes(seen)
        term.write(b"exit 7\r")
        assert await asyncio.wait_for(term.proc.wait(), 30) == 7
    finally:
        term.kill()
        term.close()


async def test_without_a_terminal_podman_exec_pipes_stdin_and_eof_ends_it(container: PodmanTarget) -> None:
    cmd = tty_command(NAME, ["sh", "-c", "test -t 0 || echo pipe; cat; exit 5"], tty=False, term="xterm",
                      socket_path=container.socket_path, containers_conf=CONF)
    term = await spawn(cmd, tty=False, rows=24, cols=80)
    seen = bytearray()
    try:
        term.write(b"abc\n")
        term.eof()
        async with asyncio.timeout(30):
            while data := await term.read():
                seen += data
        assert bytes(seen) == b"pipe\nabc\n"
        assert await asyncio.wait_for(term.proc.wait(), 30) == 5
    finally:
        term.kill()
        term.close()

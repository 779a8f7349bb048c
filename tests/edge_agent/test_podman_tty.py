"""edge_agent.runtime.podman_tty: the `podman exec` command line an interactive session runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.errors import RuntimeFailed
from edge_agent.runtime.podman_tty import tty_command


def test_a_terminal_session_is_podman_exec_it_against_the_runtime_socket_with_term() -> None:
    cmd = tty_command("c0ffee", ["sh", "-l"], tty=True, term="xterm-256color", socket_path=Path("/run/p.sock"),
                      containers_conf=Path("/etc/cl/containers.conf"), environ={"PATH": "/bin"}, podman="/bin/podman")
    assert cmd.argv == ("/bin/podman", "--url", "unix:///run/p.sock", "exec", "--interactive",
                        "--env", "CLOUDLESS_TTY_SESSION", "--tty", "--env", "TERM=xterm-256color", "c0ffee", "sh", "-l")
    assert cmd.env == {"PATH": "/bin", "CONTAINERS_CONF": "/etc/cl/containers.conf"}


def test_without_a_terminal_it_is_interactive_only() -> None:
    cmd = tty_command("c0ffee", ["cat"], tty=False, term="xterm", socket_path=Path("/s"), environ={},
                      podman="/bin/podman")
    assert cmd.argv == ("/bin/podman", "--url", "unix:///s", "exec", "--interactive",
                        "--env", "CLOUDLESS_TTY_SESSION", "c0ffee", "cat")  # the marker: the client's value
    assert cmd.env == {}


def test_no_podman_command_is_a_runtime_failure_that_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RuntimeFailed, match="podman command is not on PATH"):
        tty_command("c0ffee", ["sh"], tty=True, term="xterm", socket_path=Path("/s"))

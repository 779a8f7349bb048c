"""`exec -it` in a Podman container: the `podman exec` command line the agent runs on its pseudo-terminal.

Podman's REST API can attach a terminal to an exec session too, but over a hijacked HTTP connection that podman-py
does not expose; the `podman` client does it already and, run on a terminal, copies the window size to the
container's terminal and follows SIGWINCH (what edge_agent.tty raises by setting the size on its side). It talks to
the same service socket as the runtime (`--url`), so it sees the same containers whichever user runs the agent.

Killing the `podman exec` client (the session ended) does not end the command in the container: that is conmon's
child, and survives the client (podman issues #19486, #22495). So the agent marks its sessions: MARK_VAR=<marker> is
in the client's environment, and `--env MARK_VAR` (a name alone: the client's value) puts it in the command's, which
its children inherit. When the session ends the agent kills every process carrying the marker (edge_agent.tty); the
container's processes are host processes it can see in /proc and signal — run as root, or as the user of rootless
Podman (who owns the container's user namespace). An agent that is neither cannot, and such a command stays behind.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from edge_agent.errors import RuntimeFailed
from edge_agent.runtime.base import TtyCommand

MARK_VAR = "CLOUDLESS_TTY_SESSION"  # names the session a process belongs to (edge_agent.tty sets and looks for it)


def tty_command(instance_id: str, argv: Sequence[str], *, tty: bool, term: str, socket_path: Path,
                containers_conf: Path | None = None, environ: Mapping[str, str] | None = None,
                podman: str | None = None) -> TtyCommand:
    """The `podman exec` that runs `argv` in container `instance_id` (stdin open; `-t` with a terminal)."""
    binary = podman or shutil.which("podman")
    if binary is None:
        raise RuntimeFailed("exec -it", detail="the podman command is not on PATH (needed for interactive exec)")
    env = dict(os.environ if environ is None else environ)
    if containers_conf is not None:
        env["CONTAINERS_CONF"] = str(containers_conf)
    flags = ["--interactive", "--env", MARK_VAR, *(["--tty", "--env", f"TERM={term}"] if tty else [])]
    return TtyCommand(argv=(binary, "--url", f"unix://{socket_path}", "exec", *flags, instance_id, *argv), env=env)

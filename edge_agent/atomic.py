"""The agent's one atomic-write helper (adapter: files). Imports only the standard library, so the enrolment child
(`edge_agent.identity`) and the idle agent load nothing more for it.

A temp file in the same directory (`.NAME.tmp`, created exclusively and never through a symlink; a stale one from
a crash is removed first) gets the bytes, exactly `mode` (not narrowed by the umask) and, when the agent is root,
`owner`; it is fsynced, renamed over the target and the directory fsynced — a reader or a power cut sees either
the old file or the new one, never a torn one. `sync=False` skips the fsyncs where they buy nothing (a tmpfs) or
cost too much for what the file is (the process runtime's bookkeeping, rewritten on every start).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path


def atomic_write(path: Path, data: bytes, mode: int = 0o600, *, owner: tuple[int, int] | None = None,
                 sync: bool = True) -> None:
    """Replace `path` with `data` atomically; raises OSError. `owner`: (uid, gid), applied only as root."""
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if owner is not None and os.geteuid() == 0:
            os.fchown(fd, owner[0], owner[1])
        os.fchmod(fd, stat.S_IMODE(mode))
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if sync:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

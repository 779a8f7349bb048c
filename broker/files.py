"""Writing a private file atomically (adapter): the one helper of the bus side, which the `cloudless` command uses
too (the agent and the coordinator each have their own: they may not import each other).

A reader sees the old content or the new, never half a file: the bytes go to a temporary file created with the
final mode (0600 by default, so a key or password is never readable by others, not even briefly), fsynced, then
renamed over the target (POSIX rename is atomic within a directory)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_private(path: Path, data: str | bytes, *, mode: int = 0o600) -> None:
    """Replace `path` with `data` (str is written as UTF-8), created with `mode`. The parent must exist."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # created 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

"""How a replica's secrets reach it (pure core): the names a runtime mounts and sources, and what a spec asks for.

`edge_agent.secrets` writes the files (on a tmpfs); a runtime mounts the `Materialized` directories and, for
env secrets, runs the workload under `WRAPPER`, which sources the fragment at `ENV_MOUNT/ENV_FILE` (containers)
or at its tmpfs path (processes) right before exec'ing the workload's own command. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from broker.wire import ReplicaSpec, SecretUpdate

if TYPE_CHECKING:
    from pathlib import Path

ENV_MOUNT = "/run/cloudless/secret-env"  # where a container sees its env fragment (read-only)
ENV_FILE = "env.sh"
# sourced by /bin/sh right before the workload's own command (exec keeps its pid, signals and exit code)
WRAPPER = 'set -a; . "$CLOUDLESS_SECRET_ENV"; set +a; unset CLOUDLESS_SECRET_ENV; exec "$@"'


@dataclass(frozen=True, slots=True)
class Materialized:
    """Where one replica's secrets are: `env_dir` holds env.sh (None without env secrets); `volumes` are
    (host directory, mount path) pairs; `versions` says which secret versions these files hold."""

    root: Path
    env_dir: Path | None
    volumes: tuple[tuple[Path, str], ...]
    versions: str


def needs_secrets(spec: ReplicaSpec) -> bool:
    return bool(spec.secret_env or spec.secret_volumes)


def versions_of(spec: ReplicaSpec) -> str:
    """`name:version,...` of the boxes a spec carries: what the instance's files were made from."""
    return ",".join(f"{s.secret}:{s.version}" for s in sorted(spec.secrets, key=lambda s: s.secret))


def restart_on_change(spec: ReplicaSpec) -> bool:
    """A new secret version restarts the replica unless its secrets are files only and it asked for in-place."""
    return bool(spec.secret_env) or spec.secret_update is not SecretUpdate.FILES


def shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"

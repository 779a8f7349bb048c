"""How a replica's secrets reach it (pure core): the names a runtime mounts and sources, and what a spec asks for.

`edge_agent.secrets` writes the files (on a tmpfs); a runtime mounts the `Materialized` directories and, for
env secrets, runs the workload under `WRAPPER`, which sources the fragment at `ENV_MOUNT/ENV_FILE` (containers)
or at its tmpfs path (processes) right before exec'ing the workload's own command. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

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


def owner_of(spec: ReplicaSpec) -> tuple[int, int] | None:
    """Who must read the replica's secret files: its non-root runAsUser (and runAsGroup, else the same id);
    None when it runs as root or as the image's user."""
    sec = spec.security
    if sec is None or sec.run_as_user in (None, 0):
        return None
    return sec.run_as_user, sec.run_as_group if sec.run_as_group is not None else sec.run_as_user


@dataclass(frozen=True, slots=True)
class SecretChange:
    """An instance whose secret files are older than its spec's boxes: `replace` it, or rewrite them in place."""

    instance_id: str
    spec: ReplicaSpec
    have: str
    want: str
    replace: bool


class Holder(Protocol):
    """What `secret_changes` reads of a runtime instance (`runtime.base.Instance`, which names this module)."""

    @property
    def instance_id(self) -> str: ...

    @property
    def replica_id(self) -> str: ...

    @property
    def spec_hash(self) -> str: ...

    @property
    def secrets(self) -> str: ...


def secret_changes(instances: Sequence[Holder], specs: Mapping[str, ReplicaSpec],
                   written: Mapping[str, str]) -> tuple[SecretChange, ...]:
    """The instances running their current spec whose secret versions changed. Which versions an instance holds:
    what the agent last wrote for it (`written`), else its label."""
    changes = []
    for inst in instances:
        spec = specs.get(inst.replica_id)
        if spec is None or not needs_secrets(spec) or inst.spec_hash != spec.spec_hash or not spec.secrets:
            continue
        want, have = versions_of(spec), written.get(inst.instance_id, inst.secrets)
        if want != have:
            changes.append(SecretChange(inst.instance_id, spec, have, want, restart_on_change(spec)))
    return tuple(changes)

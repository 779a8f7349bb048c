"""Secrets on the node: open the coordinator's sealed boxes in memory and hand the values to workloads from a tmpfs.

The desired state carries each secret a replica consumes as a box sealed to this node's enrolled key
(`broker.sealed`); the agent keeps the desired state on disk, but only ever the boxes. Here they are opened with the
node's private key, in memory, and the values go where the replica's spec says:

- `secretVolumes`: files under `<tmpfs>/cloudless-secrets-<uid>/cluster-<id>/<node>/<replica>/vol<i>/` with the
  spec's modes (0400 by default), bind-mounted read-only into the container at the volume's mount path;
- `env[].valueFrom.secretKeyRef`: a shell fragment `env.sh` in `<...>/<replica>/env/` (0400) that a tiny wrapper
  sources right before exec'ing the workload's own command, so the values never enter the container's
  configuration (which Podman keeps on disk) nor any process's argv.

Who may read them: the agent's user alone (directories 0700, files 0400). A root agent gives the files of a replica
with a non-root `runAsUser` to that user and makes the directories down to them searchable but not listable
(0711): a process workload opens env.sh by its path after switching ids.

`<tmpfs>` is the first of $XDG_RUNTIME_DIR, /dev/shm, /run/shm that is a tmpfs mount: memory, never the disk (a reboot
empties it; the agent writes the files again before it starts the replica). Nothing here logs a value. Decrypted
values are cached in memory for `ttl_s` (default 5 min) so restarts do not re-open boxes; after that they are
dropped and opened again from the box when next needed. The files of a replica are removed when it goes away.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from broker.wire import ReplicaSpec, SealedSecret
from edge_agent.atomic import atomic_write
from edge_agent.errors import RuntimeError_
from edge_agent.secret_layout import ENV_FILE, Materialized, shell_quote, versions_of

TMPFS_CANDIDATES = ("XDG_RUNTIME_DIR", "/dev/shm", "/run/shm")  # noqa: S108 (own 0700 subdirectory)
DIR_NAME = "cloudless-secrets"
DEFAULT_TTL_S = 300.0
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # what /bin/sh accepts as a variable name


class SecretUnavailable(RuntimeError_):
    """A replica's secret cannot be provided now (not delivered yet, no key, no tmpfs, a missing key name)."""


def default_root() -> Path | None:
    """The tmpfs this host offers for secret files (`find_tmpfs` over the environment and /proc/mounts)."""
    try:
        mounts = Path("/proc/mounts").read_text()
    except OSError:
        mounts = ""
    return find_tmpfs(os.environ, mounts)


def secrets_tops() -> tuple[Path, ...]:
    """Where this agent's secret files are (`SecretFiles.top`), if this host has a tmpfs for them."""
    root = default_root()
    return (root / f"{DIR_NAME}-{os.geteuid()}",) if root is not None else ()


def find_tmpfs(environ: Mapping[str, str], mounts: str) -> Path | None:
    """The first candidate directory that is writable and lies on a tmpfs (per /proc/mounts' text)."""
    table = []
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) >= 3:
            table.append((parts[1].replace("\\040", " "), parts[2]))
    for candidate in TMPFS_CANDIDATES:
        path = environ.get(candidate, "") if not candidate.startswith("/") else candidate
        if not path or not os.path.isdir(path) or not os.access(path, os.W_OK | os.X_OK):
            continue
        real = os.path.realpath(path)
        best = max((m for m in table if real == m[0] or real.startswith(m[0].rstrip("/") + "/")),
                   key=lambda m: len(m[0]), default=None)
        if best is not None and best[1] == "tmpfs":
            return Path(real)
    return None


class SecretVault:
    """Opens boxes with the node's private key; keeps opened values for `ttl_s`, in memory only."""

    def __init__(self, node_id: str, load_key: Callable[[], Any | None], *, ttl_s: float = DEFAULT_TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.node_id = node_id
        self._load_key = load_key
        self.ttl_s = ttl_s
        self.clock = clock
        self._cache: dict[tuple[str, str, int, bytes], tuple[float, dict[str, bytes]]] = {}

    def open(self, namespace: str, box: SealedSecret) -> dict[str, bytes]:
        from broker import sealed

        now = self.clock()
        for k in [k for k, (exp, _) in self._cache.items() if exp <= now]:
            del self._cache[k]
        key = (namespace, box.secret, box.version, box.box[-16:])  # the GCM tag tells boxes apart
        hit = self._cache.get(key)
        if hit is not None:
            return hit[1]
        private = self._load_key()
        if private is None:
            raise SecretUnavailable(f"secret {namespace}/{box.secret}: this node has no enrolled key to open it "
                                    "(secrets need certificate enrolment: start the agent with --token)")
        try:
            plain = sealed.open_sealed(private, box.box, sealed.delivery_aad(self.node_id, namespace, box.secret,
                                                                              box.version))
            values = _decode_values(plain)
        except sealed.SealedError as exc:
            raise SecretUnavailable(f"secret {namespace}/{box.secret} v{box.version} does not open with this node's "
                                    f"key ({exc}); the coordinator reseals it after a key renewal") from None
        self._cache[key] = (now + self.ttl_s, values)
        return values


def _decode_values(plain: bytes) -> dict[str, bytes]:
    import msgpack

    try:
        doc = msgpack.unpackb(plain, raw=False, strict_map_key=True)
    except Exception as exc:  # any defect of a box's content is one answer
        raise SecretUnavailable(f"a delivered secret is not a key/value map ({type(exc).__name__})") from None
    if not isinstance(doc, dict) or not all(isinstance(k, str) and isinstance(v, bytes) for k, v in doc.items()):
        raise SecretUnavailable("a delivered secret is not a map of names to bytes")
    return doc


class SecretFiles:
    """The tmpfs side: write a replica's secret files and env fragment, refresh them in place, remove them."""

    def __init__(self, node_id: str, vault: SecretVault, root: Path | None, *, cluster: str) -> None:
        self.node_id = node_id
        self.vault = vault
        # one directory per agent user (several agents may share /dev/shm), 0700 (0711 for a root agent, whose
        # workloads may run as other users: they pass through, never list): other local users see nothing;
        # in it one per cluster and node: two clusters on one host may both have a node `local`, and each agent
        # removes what is not its own replicas' (keep_only) only in its own directory
        self.top = root / f"{DIR_NAME}-{os.geteuid()}" if root is not None else None
        self.base = self.top / f"cluster-{cluster}" / node_id if self.top is not None else None

    def replica_dir(self, replica_id: str) -> Path | None:
        return self.base / replica_id if self.base is not None else None

    def materialize(self, spec: ReplicaSpec, *, owner: tuple[int, int] | None = None) -> Materialized:
        try:
            return self._materialize(spec, owner)
        except OSError as exc:  # a full tmpfs, a path clash: one replica's problem, never the agent's loop
            raise SecretUnavailable(f"replica {spec.replica_id}: cannot write its secret files: "
                                    f"{exc.strerror or exc}") from None

    def _materialize(self, spec: ReplicaSpec, owner: tuple[int, int] | None) -> Materialized:
        """Write (or rewrite in place) everything `spec` needs; raises SecretUnavailable saying what is missing.
        `owner` (uid, gid): who must read the files (a container's non-root user), when the agent may chown."""
        if self.base is None:
            raise SecretUnavailable("no tmpfs to keep secrets on (none of $XDG_RUNTIME_DIR, /dev/shm, /run/shm is a "
                                    "writable tmpfs); secrets are never written to disk")
        boxes = {b.secret: b for b in spec.secrets}
        opened: dict[str, dict[str, bytes]] = {}

        def values(name: str) -> dict[str, bytes]:
            if name not in opened:
                box = boxes.get(name)
                if box is None:
                    raise SecretUnavailable(f"secret {spec.namespace}/{name} has not been delivered to this node yet "
                                            "(see `cloudless get events` for why)")
                opened[name] = self.vault.open(spec.namespace, box)
            return opened[name]

        assert self.top is not None
        # A workload user other than the agent's own must read its files. As root the agent gives the files to
        # that user (0400) and lets it traverse (search, not list: 0711) the directories down to them — a process
        # opens env.sh by its path after switching ids, and a root-owned 0700 directory above stops it there. The
        # replica directories of workloads that run as root stay 0700. Rootless, the agent cannot chown, so the env
        # fragment is made readable inside the container instead (bind mounts need no access to the directories
        # above; the 0700 ones keep every other local user out).
        can_chown = owner is not None and os.geteuid() == 0
        chain = 0o711 if os.geteuid() == 0 else 0o700
        _own_private_dir(self.top, chain)
        _mkdir(self.base.parent, chain)
        _mkdir(self.base, chain)
        root = self.base / spec.replica_id
        _mkdir(root, 0o711 if can_chown else 0o700)
        env_mode = 0o444 if owner is not None and not can_chown else 0o400
        env_dir = None
        if spec.secret_env:
            lines = []
            for e in spec.secret_env:
                if not ENV_NAME.fullmatch(e.name):  # a shell would run anything else as a command and log it
                    raise SecretUnavailable(f"env {e.name!r}: a secret's variable name must match "
                                            f"{ENV_NAME.pattern}")
                raw = values(e.secret).get(e.key)
                if raw is None:
                    raise SecretUnavailable(f"env {e.name}: secret {spec.namespace}/{e.secret} has no key {e.key!r}")
                try:
                    text = raw.decode()
                except UnicodeDecodeError:
                    raise SecretUnavailable(f"env {e.name}: {e.secret}/{e.key} is not UTF-8 text; mount it as a file "
                                            "instead") from None
                if "\0" in text:
                    raise SecretUnavailable(f"env {e.name}: {e.secret}/{e.key} contains a NUL byte")
                lines.append(f"{e.name}={shell_quote(text)}\n")
            env_dir = root / "env"
            _mkdir(env_dir, 0o711 if owner else 0o700)
            atomic_write(env_dir / ENV_FILE, "".join(lines).encode(), env_mode, owner=owner, sync=False)
        volumes = []
        for i, vol in enumerate(spec.secret_volumes):
            d = root / f"vol{i}"
            _mkdir(d, 0o711 if owner else 0o700)
            data = values(vol.secret)
            items = vol.items or tuple(_item(k) for k in sorted(data))
            written = set()
            for item in items:
                raw = data.get(item.key)
                if raw is None:
                    raise SecretUnavailable(f"secretVolumes[{i}]: secret {spec.namespace}/{vol.secret} has no key "
                                            f"{item.key!r}")
                target = d / item.path
                if ".." in Path(item.path).parts or item.path.startswith("/"):
                    raise SecretUnavailable(f"secretVolumes[{i}]: bad path {item.path!r}")
                _mkdir(target.parent, 0o711 if owner else 0o700)
                mode = vol.default_mode if item.mode is None else item.mode
                if can_chown:  # the directories above can be passed by anyone: no bit for others, the file is
                    mode &= ~0o007  # the workload user's (owner) and its group's
                atomic_write(target, raw, mode, owner=owner, sync=False)
                written.add(target)
            for old in [p for p in d.rglob("*") if p.is_file() and p not in written]:
                old.unlink()  # a key removed from the secret (or from items) disappears from the volume too
            volumes.append((d, vol.mount_path))
        return Materialized(root, env_dir, tuple(volumes), versions_of(spec))

    def remove(self, replica_id: str) -> None:
        d = self.replica_dir(replica_id)
        if d is not None:
            shutil.rmtree(d, ignore_errors=True)

    def keep_only(self, replica_ids: set[str]) -> None:
        """Remove the files of every replica not in `replica_ids` (it stopped, moved or was deleted)."""
        if self.base is None or not self.base.is_dir():
            return
        for d in self.base.iterdir():
            if d.name not in replica_ids:
                shutil.rmtree(d, ignore_errors=True)


def _item(key: str) -> Any:
    from broker.wire import SecretFile

    return SecretFile(key=key, path=key)


def _own_private_dir(path: Path, mode: int) -> None:
    """Create `path` with `mode` (no read bit for others), or accept it only if it is a real directory of ours: in
    a shared /dev/shm another user could have made it first (or a symlink) to read or swap what we write."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise SecretUnavailable(f"{path} is not a directory owned by this agent's user (uid {os.geteuid()}); "
                                "refusing to put secrets there — remove it, or give the agent an XDG_RUNTIME_DIR")
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)


def _mkdir(path: Path, mode: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        path.chmod(mode)

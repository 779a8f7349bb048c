"""The Podman container body (pure core): a libpod SpecGenerator (`POST /libpod/containers/create`) from a
`ReplicaSpec`, its sandbox decision (`edge_agent.sandbox`) and its secret files, plus the small readings of
Podman's answers (states, times, multiplexed streams, image config) the adapter needs.

Containers are created from this body, posted with podman-py's API client, not through
`containers.create(**kwargs)`: that docker-py-shaped signature drops `nano_cpus`, rejects `tmpfs`, and cannot
express an anonymous volume (the emptyDir that `rm -v` deletes). The restart policy is always "no": the agent
owns restarts. What cannot be expressed safely is refused with `SpecUnsupported` naming the field.
"""

from __future__ import annotations

import builtins
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from broker.wire import ReplicaSpec, Security
from broker.wire.messages import Protocol as PortProtocol
from edge_agent.errors import SpecUnsupported
from edge_agent.runtime.base import InstanceState
from edge_agent.sandbox import ContainerHost, Sandbox, decide
from edge_agent.secret_layout import ENV_FILE, ENV_MOUNT, WRAPPER, Materialized

Json = dict[str, Any]

NAME_MAX = 63  # keeps names usable as hostnames and readable in `podman ps`
CPU_PERIOD_US = 100_000
CPU_QUOTA_MIN_US = 1_000  # the kernel refuses a CFS quota under 1 ms

_STATES = {
    "created": InstanceState.CREATED, "configured": InstanceState.CREATED, "initialized": InstanceState.CREATED,
    "running": InstanceState.RUNNING, "stopping": InstanceState.RUNNING,  # still running until it has stopped
    "exited": InstanceState.EXITED, "stopped": InstanceState.EXITED,
}


def container_name(cluster: str, node_id: str, replica_id: str) -> str:
    """`cl-<cluster>-<node>-<replica>` (names are unique per Podman, and two clusters may share one); when longer
    than NAME_MAX, cut and suffixed with a hash of the full name."""
    name = f"cl-{cluster}-{node_id}-{replica_id}"
    if len(name) <= NAME_MAX:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: NAME_MAX - 11].rstrip('-_.')}-{digest}"


def instance_state(status: str) -> InstanceState:
    return _STATES.get(status.lower(), InstanceState.UNKNOWN)


def unix_time(value: object) -> float | None:
    """Podman times (RFC 3339 text or Unix seconds) as Unix seconds; Go's zero time (year 1) -> None."""
    if isinstance(value, int | float):
        return float(value) if value > 0 else None
    if not isinstance(value, str) or not value or value.startswith("0001-01-01"):
        return None
    try:
        seconds = datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None
    return seconds if seconds > 0 else None


def demux(stream: bytes) -> bytes:
    """Payloads of Podman's multiplexed stdout/stderr frames (8-byte header: type, 3 pad, u32 BE length), in order.
    A truncated last frame keeps what arrived."""
    out, i = bytearray(), 0
    while i + 8 <= len(stream):
        size = int.from_bytes(stream[i + 4 : i + 8], "big")
        out += stream[i + 8 : i + 8 + size]
        i += 8 + size
    return bytes(out)


# The open-file and process limits every container gets, set explicitly (never left to Podman's defaults): on a
# cgroup v1 host with runc, Podman's default RLIMIT_NOFILE is one runc may not set ("error setting rlimit type 7:
# operation not permitted"), and every container fails to start unless containers.conf says otherwise. These are
# the values scripts/containers.conf gives, so an agent started without CONTAINERS_CONF behaves the same; the
# agent lowers them to its own limits (`clamp_ulimits`), which a rootless container can never exceed anyway.
DEFAULT_ULIMITS: dict[str, tuple[int, int]] = {"nofile": (1024, 1024), "nproc": (4096, 4096)}


def clamp_ulimits(wanted: Mapping[str, tuple[int, int]],
                  own: Mapping[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """`wanted` (name -> (soft, hard)) lowered to the agent's `own` limits where it knows them (-1: unlimited)."""
    out: dict[str, tuple[int, int]] = {}
    for name, (want_soft, want_hard) in wanted.items():
        own_hard = own.get(name, (-1, -1))[1]
        hard = min(want_hard, own_hard) if own_hard >= 0 else want_hard
        out[name] = (min(want_soft, hard), hard)
    return out


def container_spec(
    spec: ReplicaSpec, *, name: str, labels: Mapping[str, str], stop_timeout_s: float, limits: bool,
    log_max_bytes: int | None, security: ContainerSecurity | None = None, secrets: Materialized | None = None,
    image_argv: tuple[Sequence[str], Sequence[str]] = ((), ()),
    ulimits: Mapping[str, tuple[int, int]] | None = None,
) -> Json:
    """The libpod SpecGenerator body (`POST /libpod/containers/create`) for one replica; `security` is
    `container_security(spec.security, ...)` (None: the runtime's defaults). `secrets`: the replica's secret
    files (bind-mounted read-only from the tmpfs) and env fragment (sourced by /bin/sh before the workload's
    command, so the values never enter the container's stored configuration); `image_argv` is the image's
    (Entrypoint, Cmd), needed to wrap a command the spec does not spell out."""
    if not spec.image:
        raise SpecUnsupported(f"replica {spec.replica_id}: the Podman runtime needs an image")
    body: Json = {
        "name": name,
        "image": spec.image,
        "labels": dict(labels),
        "env": dict(spec.env),
        "restart_policy": "no",  # the agent owns restarts
        "stop_timeout": max(0, math.ceil(stop_timeout_s)),
        "portmappings": [
            {"container_port": p.container_port, "host_port": p.host_port,
             "protocol": "udp" if p.protocol is PortProtocol.UDP else "tcp"}
            for p in spec.ports if p.host_port  # host_port 0: reachable through the container network only
        ],
        **_volumes(spec, owned=security is not None),
    }
    # specgen's r_limits: Podman prefixes each type with RLIMIT_ ("nofile" -> RLIMIT_NOFILE)
    body["r_limits"] = [{"type": k, "soft": soft, "hard": hard}
                        for k, (soft, hard) in sorted((DEFAULT_ULIMITS if ulimits is None else ulimits).items())]
    if security is not None:
        _merge_security(body, security)
    if spec.command:  # Kubernetes semantics: command replaces ENTRYPOINT (and the image CMD), args replace CMD
        body["entrypoint"] = list(spec.command)
    if spec.args:
        body["command"] = list(spec.args)
    if secrets is not None:
        _mount_secrets(body, spec, secrets, image_argv)
    if spec.working_dir:
        body["work_dir"] = spec.working_dir
    if log_max_bytes:
        body["log_configuration"] = {"driver": "k8s-file", "size": log_max_bytes}
    resources: Json = {}
    if limits and spec.memory_bytes:
        resources["memory"] = {"limit": spec.memory_bytes}
    if limits and spec.cpu_millis:
        quota = max(CPU_QUOTA_MIN_US, spec.cpu_millis * CPU_PERIOD_US // 1000)
        resources["cpu"] = {"quota": quota, "period": CPU_PERIOD_US}
    if resources:
        body["resource_limits"] = resources
    return body


_SECRET_MOUNT_OPTIONS = ["ro", "rbind", "nosuid", "nodev", "noexec"]


def _mount_secrets(body: Json, spec: ReplicaSpec, secrets: Materialized,
                   image_argv: tuple[Sequence[str], Sequence[str]]) -> None:
    for host_dir, mount_path in secrets.volumes:
        body["mounts"].append({"destination": mount_path, "type": "bind", "source": str(host_dir),
                               "options": list(_SECRET_MOUNT_OPTIONS)})
    if secrets.env_dir is None:
        return
    entrypoint, cmd = image_argv
    argv = [*(spec.command or entrypoint), *(spec.args or (() if spec.command else cmd))]
    if not argv:
        raise SpecUnsupported(f"replica {spec.replica_id}: secrets in env need a command to wrap; the spec and "
                              f"image {spec.image} name none")
    body["mounts"].append({"destination": ENV_MOUNT, "type": "bind", "source": str(secrets.env_dir),
                           "options": list(_SECRET_MOUNT_OPTIONS)})
    body["env"]["CLOUDLESS_SECRET_ENV"] = f"{ENV_MOUNT}/{ENV_FILE}"
    body["entrypoint"] = ["/bin/sh", "-c", WRAPPER, "cloudless-secret-env"]
    body["command"] = argv


def _volumes(spec: ReplicaSpec, *, owned: bool = False) -> Json:
    """emptyDir volumes. `owned` (a sandboxed replica, which may run as a non-root user): disk volumes are
    chowned to the container's user (Podman's `U` option; a no-op for root), since a root-owned 0755 directory
    would not be writable by that user. Memory volumes are tmpfs, mode 1777 already."""
    mounts: builtins.list[Json] = []
    volumes: builtins.list[Json] = []
    for vol in spec.volumes:
        match vol.medium:
            case "Memory":
                options = [f"size={vol.size_limit_bytes}"] if vol.size_limit_bytes else []
                mounts.append({"destination": vol.mount_path, "type": "tmpfs", "source": "tmpfs",
                               "options": options})
            case "":  # an anonymous volume: created with the container, deleted by `rm -v`
                volumes.append({"Name": "", "Dest": vol.mount_path, "Options": ["U"] if owned else []})
            case other:
                raise SpecUnsupported(f"volume {vol.name}: medium {other!r} is not supported (use '' or 'Memory')")
    return {"mounts": mounts, "volumes": volumes}


def tmp_mount() -> Json:
    """The writable /tmp a read-only root gets: the container's own tmpfs, not the host's /tmp."""
    return {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",  # noqa: S108
            "options": ["rw", "nosuid", "nodev", "mode=1777"]}


@dataclass(frozen=True, slots=True)
class ContainerSecurity:
    """SpecGenerator fields for one replica's sandbox. `mounts` are added to the replica's own (skipped where
    a volume already sits at that path); `widened` names what the policy admitted beyond a normal container
    (privileged, host namespaces) — the runtime logs a warning naming the replica for each."""

    fields: Json = field(default_factory=dict)
    mounts: tuple[Json, ...] = ()
    widened: tuple[str, ...] = ()


def container_security(security: Security | None, image_user: str | None, host: ContainerHost) -> ContainerSecurity:
    """`security` decided for a container on `host` (`edge_agent.sandbox.decide`, which documents each field)
    and mapped onto SpecGenerator fields (Podman 4.x), or SpecUnsupported."""
    return security_fields(decide(security, host, image_user=image_user))


def security_fields(sandbox: Sandbox | None) -> ContainerSecurity:
    """A sandbox decision as SpecGenerator fields: `seccomp_policy` "default" always (the profile chosen here,
    never one named by an image label), a tmpfs /tmp with a read-only root, host namespaces as `nsmode` host.
    AppArmor/SELinux: nothing is set, so Podman applies its default profile/label when the host has one."""
    if sandbox is None:
        return ContainerSecurity()
    box = sandbox
    fields: Json = {"seccomp_policy": "default"}
    if box.user:
        fields["user"] = box.user
    if box.read_only_root:
        fields["read_only_filesystem"] = True
    if box.cap_drop:
        fields["cap_drop"] = list(box.cap_drop)
    if box.cap_add:
        fields["cap_add"] = list(box.cap_add)
    if box.no_new_privs:
        fields["no_new_privileges"] = True
    if box.seccomp_profile is not None:
        fields["seccomp_profile_path"] = box.seccomp_profile
    if box.privileged:
        fields["privileged"] = True
    for flag, key in ((box.host_network, "netns"), (box.host_pid, "pidns"), (box.host_ipc, "ipcns")):
        if flag:
            fields[key] = {"nsmode": "host"}
    return ContainerSecurity(fields, (tmp_mount(),) if box.read_only_root else (), box.widened)


def _merge_security(body: Json, security: ContainerSecurity) -> None:
    body.update(security.fields)
    taken = {m["destination"] for m in body["mounts"]} | {v["Dest"] for v in body["volumes"]}
    body["mounts"] = [*body["mounts"], *(m for m in security.mounts if m["destination"] not in taken)]
    if security.fields.get("netns", {}).get("nsmode") == "host":
        for mapping in body["portmappings"]:  # the container binds the host's ports itself
            if mapping["host_port"] != mapping["container_port"]:
                raise SpecUnsupported(f"security.hostNetwork: hostPort {mapping['host_port']} != containerPort "
                                      f"{mapping['container_port']} cannot be remapped on the host network")
        body["portmappings"] = []


def image_argv_of(attrs: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """An image's (Entrypoint, Cmd) from `podman image inspect` attributes."""
    config = attrs.get("Config") or {}
    return list(config.get("Entrypoint") or ()), list(config.get("Cmd") or ())


def image_user_of(attrs: Mapping[str, Any]) -> str:
    """The user an image runs as (`Config.User`, "" = root) from its inspect data."""
    return str((attrs.get("Config") or {}).get("User") or "")

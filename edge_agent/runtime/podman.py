"""The Podman runtime: `Runtime` through podman-py against the Podman REST socket (an adapter, STYLE §1).

Every call is synchronous podman-py/requests work run in a thread (`asyncio.to_thread`); every podman-py,
requests, urllib3 or OS exception is converted at this boundary into `edge_agent.errors` types (STYLE §4):
transport failures -> RuntimeUnavailable, 404 -> InstanceNotFound (ImageUnavailable for images), anything
else -> RuntimeFailed with Podman's own message.

Containers are created from a libpod SpecGenerator body built here (`container_spec`) and posted with
podman-py's API client, not through `containers.create(**kwargs)`: that docker-py-shaped signature drops
`nano_cpus`, rejects `tmpfs`, and cannot express an anonymous volume (the emptyDir that `rm -v` deletes).

What the agent decides stays in the agent: restarts (restart policy is always "no" here), pull retries (one
pull per `ensure_image`; `next_pull_delay` gives the capped back-off the agent waits between attempts).
Capability facts are the one thing settled here: rootless Podman on cgroup v1 cannot apply CPU/memory limits
(it ignores them) nor report stats (it refuses), so limits are left out with one warning and `usage()`
returns nothing there.

The sandbox (`ReplicaSpec.security`, already admitted by the coordinator's policy) is mapped by the pure
`container_security`; see its docstring for each field. The rule is the wire's: never run weaker than asked —
what cannot be honoured is refused with `SpecUnsupported` naming the field. This file is past ~600 lines: the
sandbox section would be the first to move to a module of its own (`podman_security`).
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import requests
import urllib3
from podman import PodmanClient
from podman.errors import APIError

from broker.wire import ReplicaSpec, SeccompType, Security
from broker.wire.messages import Protocol as PortProtocol
from edge_agent.errors import (
    ImageUnavailable,
    InstanceNotFound,
    RuntimeError_,
    RuntimeFailed,
    RuntimeUnavailable,
    SpecUnsupported,
)
from edge_agent.runtime.base import (
    LABEL_NODE,
    Endpoint,
    ExecResult,
    Instance,
    InstanceState,
    ProgressFn,
    RuntimeInfo,
    Usage,
    instance_from_labels,
    instance_labels,
)
from edge_agent.runtime.podman_service import PodmanService, default_socket_path, socket_answers
from edge_agent.secrets import ENV_FILE, ENV_MOUNT, WRAPPER, Materialized

log = logging.getLogger(__name__)
T = TypeVar("T")
Json = dict[str, Any]

NAME_MAX = 63  # keeps names usable as hostnames and readable in `podman ps`
CPU_PERIOD_US = 100_000
CPU_QUOTA_MIN_US = 1_000  # the kernel refuses a CFS quota under 1 ms
EXEC_OUTPUT_MAX = 1024 * 1024  # what a CommandReply can carry
_JSON = {"content-type": "application/json"}

_STATES = {
    "created": InstanceState.CREATED, "configured": InstanceState.CREATED, "initialized": InstanceState.CREATED,
    "running": InstanceState.RUNNING, "stopping": InstanceState.RUNNING,  # still running until it has stopped
    "exited": InstanceState.EXITED, "stopped": InstanceState.EXITED,
}


# ---- pure helpers ----------------------------------------------------------------------------------------

def container_name(node_id: str, replica_id: str) -> str:
    """`cl-<node>-<replica>`; when longer than NAME_MAX, cut and suffixed with a hash of the full name."""
    name = f"cl-{node_id}-{replica_id}"
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


def pull_delay(attempt: int, initial_s: float, cap_s: float) -> float:
    """Capped exponential back-off after `attempt` failed pulls (1 -> initial, 2 -> 2x initial, ...)."""
    if attempt <= 0:
        return 0.0
    return float(min(cap_s, initial_s * 2 ** min(attempt - 1, 32)))


def demux(stream: bytes) -> bytes:
    """Payloads of Podman's multiplexed stdout/stderr frames (8-byte header: type, 3 pad, u32 BE length), in order.
    A truncated last frame keeps what arrived."""
    out, i = bytearray(), 0
    while i + 8 <= len(stream):
        size = int.from_bytes(stream[i + 4 : i + 8], "big")
        out += stream[i + 8 : i + 8 + size]
        i += 8 + size
    return bytes(out)


def container_spec(
    spec: ReplicaSpec, *, name: str, labels: Mapping[str, str], stop_timeout_s: float, limits: bool,
    log_max_bytes: int | None, security: ContainerSecurity | None = None, secrets: Materialized | None = None,
    image_argv: tuple[Sequence[str], Sequence[str]] = ((), ()),
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


# ---- the sandbox (ReplicaSpec.security) ------------------------------------------------------------------

_ROOT_USERS = ("", "0", "root")
_CAPABILITY = re.compile(r"ALL|CAP_[A-Z0-9_]+")


def tmp_mount() -> Json:
    """The writable /tmp a read-only root gets: the container's own tmpfs, not the host's /tmp."""
    return {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",  # noqa: S108
            "options": ["rw", "nosuid", "nodev", "mode=1777"]}


@dataclass(frozen=True, slots=True)
class SandboxHost:
    """What the sandbox mapping needs to know about the host: where Localhost seccomp profiles live and
    whether Podman can apply seccomp at all (`podman info`: host.security.seccompEnabled)."""

    seccomp_dir: Path
    seccomp: bool = True


@dataclass(frozen=True, slots=True)
class ContainerSecurity:
    """SpecGenerator fields for one replica's sandbox. `mounts` are added to the replica's own (skipped where
    a volume already sits at that path); `widened` names what the policy admitted beyond a normal container
    (privileged, host namespaces) — the runtime logs a warning naming the replica for each."""

    fields: Json = field(default_factory=dict)
    mounts: tuple[Json, ...] = ()
    widened: tuple[str, ...] = ()


def needs_image_user(security: Security) -> bool:
    """Whether `container_security` must know the image's configured user (`Config.User`)."""
    return security.run_as_user is None and (security.run_as_non_root or security.run_as_group is not None)


def container_security(security: Security | None, image_user: str | None, host: SandboxHost) -> ContainerSecurity:
    """Map an admitted sandbox onto libpod SpecGenerator fields (Podman 4.x), or refuse with SpecUnsupported.

    - runAsUser/runAsGroup -> `user` "UID[:GID]" (group alone: the image's user with that group). In rootless
      Podman the uid maps through the user's subuid range: uid 1000 inside is an unprivileged host uid.
    - runAsNonRoot: refused when runAsUser is 0, or when no runAsUser is set and the image's user is root
      (empty, "0", "root") or a name (cannot be verified numerically — Kubernetes refuses it too).
    - readOnlyRootFilesystem -> `read_only_filesystem` plus a tmpfs on /tmp so programs still work; emptyDir
      volumes stay writable.
    - capabilities -> `cap_drop`/`cap_add` (names with or without CAP_, and ALL); Podman drops, then adds.
    - allowPrivilegeEscalation false -> `no_new_privileges`; also by default (None) with runAsNonRoot:
      a non-root workload has no reason to regain privileges through setuid/file-capability binaries.
    - seccomp RuntimeDefault -> Podman's default profile (and never one named by an image label);
      Localhost -> the JSON file `<seccomp dir>/<name>` (plain file names only; the caller checks it exists);
      Unconfined -> "unconfined". Without kernel seccomp support only RuntimeDefault is accepted.
    - privileged, hostNetwork/hostPID/hostIPC -> mapped as admitted, reported in `widened`. Privileged means
      every capability and device and no seccomp filter unless Localhost names one; dropping capabilities
      from it is refused (Podman would ignore the drop).
    - AppArmor/SELinux: nothing is set, so Podman applies its default profile/label when the host has one.
    """
    if security is None:
        return ContainerSecurity()
    sec = security
    fields: Json = {"seccomp_policy": "default"}  # the profile chosen here, never one named by the image
    user = _user(sec, image_user)
    if user:
        fields["user"] = user
    _check_non_root(sec, image_user)
    mounts: tuple[Json, ...] = ()
    if sec.read_only_root_filesystem:
        fields["read_only_filesystem"] = True
        mounts = (tmp_mount(),)
    if sec.capabilities_drop:
        fields["cap_drop"] = _capabilities(sec.capabilities_drop, "capabilitiesDrop")
    if sec.capabilities_add:
        fields["cap_add"] = _capabilities(sec.capabilities_add, "capabilitiesAdd")
    if sec.allow_privilege_escalation is False or (sec.allow_privilege_escalation is None and sec.run_as_non_root):
        fields["no_new_privileges"] = True
    fields.update(_seccomp(sec, host))
    widened = []
    if sec.privileged:
        if sec.capabilities_drop:  # Podman gives a privileged container every capability, drops or not
            raise SpecUnsupported("security.capabilitiesDrop: a privileged container keeps every capability")
        fields["privileged"] = True
        widened.append("privileged")
    for flag, key, what in ((sec.host_network, "netns", "hostNetwork"), (sec.host_pid, "pidns", "hostPID"),
                            (sec.host_ipc, "ipcns", "hostIPC")):
        if flag:
            fields[key] = {"nsmode": "host"}
            widened.append(what)
    return ContainerSecurity(fields, mounts, tuple(widened))


def _user(sec: Security, image_user: str | None) -> str:
    if sec.run_as_user is not None:
        return f"{sec.run_as_user}" if sec.run_as_group is None else f"{sec.run_as_user}:{sec.run_as_group}"
    if sec.run_as_group is not None:  # Kubernetes: the image's user, with this primary group
        return f"{(image_user or '').split(':', 1)[0] or '0'}:{sec.run_as_group}"
    return ""


def _check_non_root(sec: Security, image_user: str | None) -> None:
    if not sec.run_as_non_root:
        return
    if sec.run_as_user is not None:
        if sec.run_as_user == 0:
            raise SpecUnsupported("security.runAsNonRoot: runAsUser is 0 (root)")
        return
    name = (image_user or "").split(":", 1)[0].strip()
    if name in _ROOT_USERS:
        raise SpecUnsupported("security.runAsNonRoot: the image runs as root and no runAsUser is set")
    if not name.isdigit():
        raise SpecUnsupported(f"security.runAsNonRoot: the image's user {name!r} is not numeric, so it cannot be "
                              "verified as non-root; set runAsUser")
    if int(name) == 0:
        raise SpecUnsupported("security.runAsNonRoot: the image runs as root and no runAsUser is set")


def _capabilities(names: Sequence[str], what: str) -> builtins.list[str]:
    out = []
    for name in names:
        cap = name.strip().upper()
        cap = cap if cap == "ALL" or cap.startswith("CAP_") else f"CAP_{cap}"
        if not _CAPABILITY.fullmatch(cap):
            raise SpecUnsupported(f"security.{what}: {name!r} is not a capability name")
        out.append(cap)
    return out


def _seccomp(sec: Security, host: SandboxHost) -> Json:
    match sec.seccomp:
        case SeccompType.UNCONFINED:
            return {"seccomp_profile_path": "unconfined"}
        case SeccompType.LOCALHOST:
            name = sec.seccomp_profile
            if not name or "/" in name or ".." in name or name.startswith("."):
                raise SpecUnsupported(f"security.seccompProfile: {name!r} must be a plain file name in the "
                                      f"agent's seccomp directory ({host.seccomp_dir})")
            if not host.seccomp:
                raise SpecUnsupported("security.seccompProfile: Podman reports no seccomp support on this host")
            return {"seccomp_profile_path": str(host.seccomp_dir / name)}
        case _:
            return {}  # RuntimeDefault: Podman's default profile


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


def default_seccomp_dir(environ: Mapping[str, str], euid: int, home: Path) -> Path:
    """`/etc/cloudless/seccomp` for root, else `$XDG_CONFIG_HOME/cloudless/seccomp` (~/.config by default)."""
    if euid == 0:
        return Path("/etc/cloudless/seccomp")
    return Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / "cloudless" / "seccomp"


def image_argv_of(attrs: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """An image's (Entrypoint, Cmd) from `podman image inspect` attributes."""
    config = attrs.get("Config") or {}
    return list(config.get("Entrypoint") or ()), list(config.get("Cmd") or ())


def image_user_of(attrs: Mapping[str, Any]) -> str:
    """The user an image runs as (`Config.User`, "" = root) from its inspect data."""
    return str((attrs.get("Config") or {}).get("User") or "")


def convert_error(exc: BaseException, what: str, *, missing: type[RuntimeError_] = InstanceNotFound) -> RuntimeError_:
    """The edge_agent error for a podman-py/requests/urllib3/OS exception raised while doing `what`."""
    if isinstance(exc, RuntimeError_):
        return exc
    if isinstance(exc, APIError):
        if exc.response is None:  # podman-py wraps transport errors (OSError, requests) without a response
            return convert_error(exc.__cause__ or OSError(str(exc)), what, missing=missing)
        message = str(exc.explanation or exc)
        if exc.response.status_code == 404:
            return missing(f"{what}: {message}")
        return RuntimeFailed(what, detail=message)
    if _is_read_timeout(exc):
        return RuntimeFailed(f"{what} timed out", detail=str(exc))
    if isinstance(exc, requests.ConnectionError | ConnectionError | FileNotFoundError):
        return RuntimeUnavailable(f"{what}: Podman service not reachable: {exc}")
    return RuntimeFailed(what, detail=f"{type(exc).__name__}: {exc}")


def _is_read_timeout(exc: BaseException) -> bool:
    # requests re-raises a streamed body's urllib3 ReadTimeoutError as a ConnectionError (Response.iter_content)
    if isinstance(exc, requests.ConnectionError) and exc.args:
        return isinstance(exc.args[0], urllib3.exceptions.ReadTimeoutError)
    return isinstance(exc, requests.ReadTimeout | urllib3.exceptions.ReadTimeoutError | TimeoutError)


def _is_missing_image(exc: RuntimeError_) -> bool:
    text = str(exc).lower()
    return "image not known" in text or "no such image" in text


# ---- the runtime ---------------------------------------------------------------------------------------

class PodmanRuntime:
    """`Runtime` on Podman. Containers carry `base.instance_labels`; only this node's are ever listed."""

    def __init__(
        self,
        *,
        node_id: str,
        socket_path: Path | None = None,
        containers_conf: Path | None = None,
        start_service: bool = True,
        pull_backoff: tuple[float, float] = (1.0, 60.0),
        stop_timeout_default: float = 5.0,
        api_timeout_s: float = 30.0,
        log_max_bytes: int | None = 8 * 1024 * 1024,
        podman_binary: str = "podman",
        service_start_timeout_s: float = 20.0,
        seccomp_dir: Path | None = None,
    ) -> None:
        self.node_id = node_id
        # The only environment reads: Podman's own default socket location and the default seccomp directory
        # (Localhost profiles), when none is configured.
        self.socket_path = socket_path or default_socket_path(os.environ, os.geteuid())
        self.seccomp_dir = seccomp_dir or default_seccomp_dir(os.environ, os.geteuid(), Path.home())
        self.start_service = start_service
        self.pull_backoff = pull_backoff
        self.stop_timeout_default = stop_timeout_default
        self.api_timeout_s = api_timeout_s
        self.log_max_bytes = log_max_bytes
        self._service = PodmanService(socket_path=self.socket_path, containers_conf=containers_conf,
                                      podman_binary=podman_binary, start_timeout_s=service_start_timeout_s)
        self._client = PodmanClient(base_url=f"unix://{self.socket_path}", timeout=api_timeout_s)
        self._ready = False
        self._connect_lock = asyncio.Lock()
        self._facts: Json | None = None  # from `podman info`: rootless, cgroup version
        self._warned: set[str] = set()

    # ---- plumbing ---------------------------------------------------------------------------------------

    def next_pull_delay(self, attempt: int) -> float:
        """Seconds the agent should wait after `attempt` failed pulls of one image before trying again."""
        return pull_delay(attempt, *self.pull_backoff)

    async def _connected(self) -> PodmanClient:
        if not self._ready:
            async with self._connect_lock:
                if not self._ready:
                    await asyncio.to_thread(self._connect)
                    self._ready = True
        return self._client

    def _connect(self) -> None:
        if socket_answers(self.socket_path):
            return
        if not self.start_service:
            raise RuntimeUnavailable(f"no Podman service answers on {self.socket_path} (and start_service is off)")
        self._service.start()

    async def _call(self, what: str, fn: Callable[..., T], *args: Any,
                    missing: type[RuntimeError_] = InstanceNotFound) -> T:
        client = await self._connected()
        try:
            return await asyncio.to_thread(fn, client, *args)
        except RuntimeError_:
            raise
        except Exception as exc:  # the boundary: nothing from podman-py, requests or the OS escapes (STYLE §4)
            err = convert_error(exc, what, missing=missing)
            if isinstance(err, RuntimeUnavailable):
                self._ready = False  # reconnect (and restart our service if it died) on the next call
            raise err from exc

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    async def _host_facts(self) -> Json:
        if self._facts is None:
            info = await self._call("podman info", lambda c: c.info())
            host = info.get("host", {})
            security = host.get("security", {})
            self._facts = {"rootless": bool(security.get("rootless")),
                           "cgroup": str(host.get("cgroupVersion", "")),
                           "version": str(info.get("version", {}).get("Version", "")),
                           # what Podman itself found (/sys/kernel/security/apparmor, selinuxfs, seccomp)
                           "lsm": bool(security.get("apparmorEnabled") or security.get("selinuxEnabled")),
                           "seccomp": bool(security.get("seccompEnabled", True))}
        return self._facts

    async def _limits_supported(self) -> bool:
        facts = await self._host_facts()
        return not (facts["rootless"] and facts["cgroup"] == "v1")

    # ---- the Runtime Protocol ---------------------------------------------------------------------------

    async def info(self) -> RuntimeInfo:
        self._facts = None  # re-read: the service may have been replaced
        facts = await self._host_facts()
        return RuntimeInfo(name="podman", version=facts["version"], rootless=facts["rootless"])

    async def list(self) -> builtins.list[Instance]:
        return await self._call("list containers", self._list_sync)

    def _list_sync(self, client: PodmanClient) -> builtins.list[Instance]:
        found = []
        for summary in client.containers.list(all=True, filters={"label": f"{LABEL_NODE}={self.node_id}"}):
            attrs = summary.attrs
            state = instance_state(str(attrs.get("State", "")))
            if state is InstanceState.RUNNING:
                inst = instance_from_labels(attrs["Id"], attrs.get("Labels") or {}, state,
                                            started_at=unix_time(attrs.get("StartedAt")))
            else:  # only inspect tells why it stopped (OOM kill, runtime error) and exact times
                try:
                    inst = _instance_from_inspect(summary.inspect())
                except APIError as exc:
                    if exc.response is not None and exc.response.status_code == 404:
                        continue  # removed while we listed
                    raise
            if inst is not None:
                found.append(inst)
        return found

    async def ensure_image(self, image: str, progress: ProgressFn | None = None) -> None:
        """One pull when `image` is missing, waiting for as long as Podman works on it: no read timeout, since
        Podman's pull stream is silent while a layer downloads and cutting it would throw a slow download away.
        Podman retries transient registry errors itself and keeps completed layers for the next attempt;
        retrying after a failure, `next_pull_delay(attempt)` seconds later, is the agent's job."""
        if await self._call(f"look up image {image}", lambda c: c.images.exists(image)):
            return
        await self._call(f"pull {image}", self._pull_sync, image, progress, missing=ImageUnavailable)

    def _pull_sync(self, client: PodmanClient, image: str, progress: ProgressFn | None) -> None:
        try:
            response = client.api.post("/images/pull", params={"reference": image, "policy": "missing"},
                                       stream=True, timeout=(self.api_timeout_s, None))
            response.raise_for_status()
        except APIError as exc:
            if exc.response is None:
                raise  # transport: the service is gone (RuntimeUnavailable), not the image
            raise ImageUnavailable(f"cannot pull {image}: {exc.explanation or exc}") from exc
        try:
            for raw in response.iter_lines():
                if not raw:
                    continue
                line = json.loads(raw)
                if line.get("error"):
                    raise ImageUnavailable(f"cannot pull {image}: {line['error']}")
                text = str(line.get("stream") or line.get("status") or "").strip()
                if text and progress is not None:
                    progress(text)
                if line.get("images") or line.get("id"):
                    return
        finally:
            response.close()
        raise ImageUnavailable(f"cannot pull {image}: the pull stream ended without an image")

    async def create(self, spec: ReplicaSpec, generation: int, secrets: Materialized | None = None) -> Instance:
        labels = instance_labels(self.node_id, spec, generation, secrets.versions if secrets else "")
        limits = await self._limits_supported()
        if not limits and (spec.cpu_millis or spec.memory_bytes):
            self._warn_once("limits", "rootless Podman on cgroup v1 cannot apply CPU/memory limits: "
                            "containers run without them (use cgroup v2 or rootful Podman to enforce them)")
        image_argv: tuple[Sequence[str], Sequence[str]] = ((), ())
        if secrets is not None and secrets.env_dir is not None and not spec.command:
            image_argv = await self._call(f"inspect image {spec.image}",
                                          lambda c: image_argv_of(c.images.get(spec.image).attrs),
                                          missing=ImageUnavailable)
        body = container_spec(spec, name=container_name(self.node_id, spec.replica_id), labels=labels,
                              stop_timeout_s=self.stop_timeout_default, limits=limits,
                              log_max_bytes=self.log_max_bytes, security=await self._sandbox(spec), secrets=secrets,
                              image_argv=image_argv)

        def create_sync(client: PodmanClient) -> str:
            response = client.api.post("/containers/create", data=json.dumps(body), headers=_JSON)
            response.raise_for_status()
            answer = response.json()
            for warning in answer.get("Warnings") or ():
                log.warning("podman create %s: %s", body["name"], warning)
            return str(answer["Id"])

        try:
            instance_id = await self._call(f"create {body['name']}", create_sync, missing=ImageUnavailable)
        except RuntimeFailed as exc:
            if _is_missing_image(exc):
                raise ImageUnavailable(f"image {spec.image} is not present: {exc}") from exc
            raise
        inst = instance_from_labels(instance_id, labels, InstanceState.CREATED)
        assert inst is not None  # our own labels always parse
        return inst

    async def _sandbox(self, spec: ReplicaSpec) -> ContainerSecurity | None:
        """`container_security` for `spec`, with the host facts and image user it needs; logs what it widens."""
        facts = await self._host_facts()
        if not facts["lsm"]:
            self._warn_once("lsm", "no AppArmor/SELinux on this host: containers run without an LSM profile")
        sec = spec.security
        if sec is None:
            return None
        if not facts["seccomp"] and sec.seccomp is SeccompType.RUNTIME_DEFAULT:
            self._warn_once("seccomp", "Podman reports no seccomp support on this host: containers run without "
                            "a seccomp filter")
        user = None
        if needs_image_user(sec):
            user = await self._call(f"inspect image {spec.image}",
                                    lambda c: image_user_of(c.images.get(spec.image).attrs), missing=ImageUnavailable)
        mapped = container_security(sec, user, SandboxHost(self.seccomp_dir, seccomp=facts["seccomp"]))
        profile = mapped.fields.get("seccomp_profile_path", "unconfined")
        if profile != "unconfined" and not await asyncio.to_thread(Path(profile).is_file):
            raise SpecUnsupported(f"security.seccompProfile: no profile {sec.seccomp_profile!r} in {self.seccomp_dir}")
        for what in mapped.widened:
            log.warning("replica %s runs with %s (admitted by the policy)", spec.replica_id, what)
        return mapped

    async def start(self, instance_id: str) -> Instance:
        def start_sync(client: PodmanClient) -> Instance | None:
            client.api.post(f"/containers/{instance_id}/start").raise_for_status()  # 304 if running: fine
            return _instance_from_inspect(client.containers.get(instance_id).attrs)

        inst = await self._call(f"start {instance_id}", start_sync)
        if inst is None:
            raise InstanceNotFound(f"{instance_id} is not a Cloudless instance")
        return inst

    async def stop(self, instance_id: str, timeout_s: float) -> None:
        seconds = max(0, math.ceil(timeout_s))

        def stop_sync(client: PodmanClient) -> None:
            response = client.api.post(f"/containers/{instance_id}/stop", params={"timeout": seconds},
                                       timeout=self.api_timeout_s + seconds)
            response.raise_for_status()  # 304 when already stopped: not an error

        try:
            await self._call(f"stop {instance_id}", stop_sync)
        except InstanceNotFound:
            return

    async def remove(self, instance_id: str) -> None:
        def remove_sync(client: PodmanClient) -> None:
            client.containers.remove(instance_id, force=True, v=True)  # v: its anonymous volumes too

        try:
            await self._call(f"remove {instance_id}", remove_sync)
        except InstanceNotFound:
            return

    async def logs(self, instance_id: str, tail: int) -> bytes:
        def logs_sync(client: PodmanClient) -> bytes:
            container = client.containers.get(instance_id)
            if tail <= 0:
                return b""
            frames = container.logs(stdout=True, stderr=True, tail=tail)
            return frames if isinstance(frames, bytes) else b"".join(frames)

        return await self._call(f"logs of {instance_id}", logs_sync)

    async def exec(self, instance_id: str, argv: Sequence[str], timeout_s: float) -> ExecResult:
        """Run `argv` in the container. Past `timeout_s` this gives up with RuntimeFailed; Podman's API cannot
        kill an exec session, so the command itself runs on until it ends."""
        await self._connected()  # starting the service is not part of the command's time
        work = self._call(f"exec in {instance_id}", self._exec_sync, instance_id, list(argv), timeout_s)
        try:
            async with asyncio.timeout(timeout_s + 1.0):  # the thread's own reads are bounded too
                return await work
        except TimeoutError:
            raise RuntimeFailed(f"exec in {instance_id} timed out after {timeout_s:g}s",
                                detail=" ".join(argv)) from None

    def _exec_sync(self, client: PodmanClient, instance_id: str, argv: builtins.list[str],
                   timeout_s: float) -> ExecResult:
        deadline = time.monotonic() + timeout_s
        created = client.api.post(f"/containers/{instance_id}/exec", headers=_JSON, data=json.dumps(
            {"AttachStdout": True, "AttachStderr": True, "AttachStdin": False, "Tty": False, "Cmd": argv}))
        created.raise_for_status()
        exec_id = created.json()["Id"]
        started = client.api.post(f"/exec/{exec_id}/start", headers=_JSON, stream=True,
                                  data=json.dumps({"Detach": False, "Tty": False}),
                                  timeout=(self.api_timeout_s, max(timeout_s, 0.1)))
        started.raise_for_status()
        raw = bytearray()
        try:
            for chunk in started.iter_content(chunk_size=4096):
                if len(raw) < EXEC_OUTPUT_MAX + 4096:
                    raw += chunk
                if time.monotonic() > deadline:
                    raise TimeoutError(f"exec {argv} still running after {timeout_s:g}s")
        finally:
            started.close()
        for _ in range(20):  # the session is marked finished just after its stream closes
            state = client.api.get(f"/exec/{exec_id}/json").json()
            if not state.get("Running"):
                return ExecResult(exit_code=int(state.get("ExitCode", -1)), output=demux(bytes(raw))[:EXEC_OUTPUT_MAX])
            time.sleep(0.05)
        raise RuntimeFailed(f"exec {argv}: the session did not report an exit code")

    async def endpoint(self, instance_id: str, container_port: int) -> Endpoint | None:
        attrs = await self._call(f"inspect {instance_id}", lambda c: c.containers.get(instance_id).attrs)
        network = attrs.get("NetworkSettings") or {}
        for binding in (network.get("Ports") or {}).get(f"{container_port}/tcp") or ():
            if str(binding.get("HostPort", "")).isdigit():
                host = binding.get("HostIp") or ""
                return Endpoint("127.0.0.1" if host in ("", "0.0.0.0", "::") else host, int(binding["HostPort"]))
        if (await self._host_facts())["rootless"]:
            return None  # a rootless container's addresses live in its user's network namespace
        addresses = [network.get("IPAddress")] + [n.get("IPAddress") for n in (network.get("Networks") or {}).values()]
        ip = next((a for a in addresses if a), None)
        return Endpoint(ip, container_port) if ip else None

    async def usage(self) -> dict[str, Usage]:
        """CPU % and memory per running instance; {} when Podman cannot tell (rootless on cgroup v1) or fails."""
        try:
            return await self._call("container stats", self._usage_sync)
        except RuntimeError_ as exc:
            self._warn_once("usage", "container usage unavailable: %s", exc)
            return {}

    def _usage_sync(self, client: PodmanClient) -> dict[str, Usage]:
        running = client.containers.list(filters={"label": f"{LABEL_NODE}={self.node_id}", "status": "running"})
        if not running:
            return {}
        response = client.api.get("/containers/stats", params={"containers": [c.id for c in running],
                                                               "stream": False})
        response.raise_for_status()
        usage = {}
        for stat in response.json().get("Stats") or ():
            cpu, mem = stat.get("CPU"), stat.get("MemUsage")
            usage[str(stat.get("ContainerID", ""))] = Usage(
                cpu_percent=float(cpu) if isinstance(cpu, int | float) else None,
                memory_bytes=int(mem) if isinstance(mem, int) else None)
        return usage

    async def maintain(self) -> None:
        """Nothing: conmon caps each container's log itself (`log_max_bytes`, Podman's log size max)."""

    async def close(self) -> None:
        await asyncio.to_thread(self._service.stop)
        self._client.close()  # type: ignore[no-untyped-call]
        self._ready = False


def _instance_from_inspect(attrs: Json) -> Instance | None:
    state = attrs.get("State") or {}
    status = instance_state(str(state.get("Status", "")))
    errors = [e for e in ("OOMKilled" if state.get("OOMKilled") else "", str(state.get("Error") or "")) if e]
    return instance_from_labels(
        str(attrs.get("Id", "")), (attrs.get("Config") or {}).get("Labels") or {}, status,
        exit_code=int(state.get("ExitCode", 0)) if status is InstanceState.EXITED else None,
        started_at=unix_time(state.get("StartedAt")),
        finished_at=unix_time(state.get("FinishedAt")) if status is InstanceState.EXITED else None,
        error="; ".join(errors),
    )

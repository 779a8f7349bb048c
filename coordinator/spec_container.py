"""The Workload document's container part: probes, the security context and volumes. Pure; see
`coordinator.spec` for how the field tables are parsed, dumped and turned into a JSON Schema."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from broker.wire.messages import Probe as WireProbe
from broker.wire.messages import ProbeKind
from coordinator.spec_kinds import (
    Bool,
    Checked,
    Choice,
    Int,
    ListOf,
    Num,
    Obj,
    Str,
    spec_field,
)
from coordinator.spec_values import ABS_PATH, CAPABILITY, MEMORY, NAME, PORT, TEXT, UID, Medium, SeccompType, duplicates


@dataclass(frozen=True, slots=True)
class ExecAction(Checked):
    """Run a command in the container; exit status 0 is healthy."""

    command: tuple[str, ...] = field(metadata=spec_field(ListOf(TEXT, 256, min_items=1)))


@dataclass(frozen=True, slots=True)
class HTTPGetAction(Checked):
    """GET a path on a container port; 2xx/3xx is healthy."""

    port: int = field(metadata=spec_field(PORT))
    path: str = field(default="/", metadata=spec_field(ABS_PATH))


@dataclass(frozen=True, slots=True)
class TCPSocketAction(Checked):
    """Open a TCP connection to a container port."""

    port: int = field(metadata=spec_field(PORT))


_HANDLERS = ("exec", "httpGet", "tcpSocket")


@dataclass(frozen=True, slots=True)
class ProbeSpec(Checked):
    """A health check with exactly one handler: exec, httpGet or tcpSocket."""

    exec: ExecAction | None = field(default=None, metadata=spec_field(Obj(ExecAction)))
    http_get: HTTPGetAction | None = field(default=None, metadata=spec_field(Obj(HTTPGetAction)))
    tcp_socket: TCPSocketAction | None = field(default=None, metadata=spec_field(Obj(TCPSocketAction)))
    initial_delay_seconds: float = field(default=0.0, metadata=spec_field(Num(0.0, 86400.0)))
    period_seconds: float = field(default=10.0, metadata=spec_field(Num(0.1, 86400.0)))
    timeout_seconds: float = field(default=1.0, metadata=spec_field(Num(0.1, 3600.0)))
    success_threshold: int = field(default=1, metadata=spec_field(Int(1, 1000)))
    failure_threshold: int = field(default=3, metadata=spec_field(Int(1, 1000)))

    SCHEMA_EXTRA: ClassVar[dict[str, Any]] = {"oneOf": [{"required": [h]} for h in _HANDLERS]}

    def _problems(self) -> Iterator[tuple[str, str]]:
        count = sum(h is not None for h in (self.exec, self.http_get, self.tcp_socket))
        if count != 1:
            yield "", f"exactly one of exec, httpGet, tcpSocket is required (got {count})"

    def to_wire(self) -> WireProbe:
        """The probe as the agent receives it in a ReplicaSpec."""
        if self.exec is not None:
            kind, command, path, port = ProbeKind.EXEC, self.exec.command, "/", 0
        elif self.http_get is not None:
            kind, command, path, port = ProbeKind.HTTP, (), self.http_get.path, self.http_get.port
        else:
            assert self.tcp_socket is not None  # guaranteed by _problems on every parsed spec
            kind, command, path, port = ProbeKind.TCP, (), "/", self.tcp_socket.port
        return WireProbe(
            kind,
            command=command,
            path=path,
            port=port,
            initial_delay_s=self.initial_delay_seconds,
            period_s=self.period_seconds,
            timeout_s=self.timeout_seconds,
            success_threshold=self.success_threshold,
            failure_threshold=self.failure_threshold,
        )


@dataclass(frozen=True, slots=True)
class Capabilities(Checked):
    """Linux capabilities to add to / drop from the runtime's default set."""

    add: tuple[str, ...] = field(default=(), metadata=spec_field(ListOf(CAPABILITY)))
    drop: tuple[str, ...] = field(default=(), metadata=spec_field(ListOf(CAPABILITY)))


@dataclass(frozen=True, slots=True)
class SeccompProfile(Checked):
    """The seccomp filter; Localhost needs localhostProfile (and only Localhost takes one)."""

    profile_type: SeccompType = field(
        default=SeccompType.RUNTIME_DEFAULT, metadata=spec_field(Choice(SeccompType), key="type")
    )
    localhost_profile: str = field(default="", metadata=spec_field(Str(256, 1, r"[A-Za-z0-9._/-]+", "profile")))

    SCHEMA_EXTRA: ClassVar[dict[str, Any]] = {
        "if": {"properties": {"type": {"const": "Localhost"}}, "required": ["type"]},
        "then": {"required": ["localhostProfile"]},
        "else": {"not": {"required": ["localhostProfile"]}},
    }

    def _problems(self) -> Iterator[tuple[str, str]]:
        if self.profile_type is SeccompType.LOCALHOST and not self.localhost_profile:
            yield "localhostProfile", "type Localhost needs localhostProfile"
        if self.profile_type is not SeccompType.LOCALHOST and self.localhost_profile:
            yield "localhostProfile", "only type Localhost takes localhostProfile"


def _both(consts: dict[str, object]) -> dict[str, Any]:
    return {"required": list(consts), "properties": {k: {"const": v} for k, v in consts.items()}}


@dataclass(frozen=True, slots=True)
class SecurityContext(Checked):
    """Process and namespace security settings, checked by admission policy and mapped onto the runtime."""

    run_as_user: int | None = field(default=None, metadata=spec_field(UID))
    run_as_group: int | None = field(default=None, metadata=spec_field(UID))
    run_as_non_root: bool = field(default=False, metadata=spec_field(Bool()))
    read_only_root_filesystem: bool = field(default=False, metadata=spec_field(Bool()))
    privileged: bool = field(default=False, metadata=spec_field(Bool()))
    allow_privilege_escalation: bool | None = field(default=None, metadata=spec_field(Bool()))
    capabilities: Capabilities = field(default_factory=Capabilities, metadata=spec_field(Obj(Capabilities)))
    seccomp_profile: SeccompProfile = field(default_factory=SeccompProfile, metadata=spec_field(Obj(SeccompProfile)))
    host_network: bool = field(default=False, metadata=spec_field(Bool()))
    host_pid: bool = field(default=False, metadata=spec_field(Bool(), key="hostPID"))
    host_ipc: bool = field(default=False, metadata=spec_field(Bool(), key="hostIPC"))

    SCHEMA_EXTRA: ClassVar[dict[str, Any]] = {
        "allOf": [
            {"not": _both({"runAsNonRoot": True, "runAsUser": 0})},
            {"not": _both({"privileged": True, "allowPrivilegeEscalation": False})},
        ]
    }

    def _problems(self) -> Iterator[tuple[str, str]]:
        if self.run_as_non_root and self.run_as_user == 0:
            yield "runAsUser", "runAsNonRoot is set but runAsUser is 0"
        if self.privileged and self.allow_privilege_escalation is False:
            yield "allowPrivilegeEscalation", "cannot be false for a privileged container"


@dataclass(frozen=True, slots=True)
class EmptyDir(Checked):
    """A scratch directory that lives as long as the replica (medium Memory = tmpfs)."""

    medium: Medium = field(default=Medium.DISK, metadata=spec_field(Choice(Medium)))
    size_limit_bytes: int | None = field(default=None, metadata=spec_field(MEMORY, key="sizeLimit"))


@dataclass(frozen=True, slots=True)
class VolumeSpec(Checked):
    """A volume mounted into the container (emptyDir is the only source so far)."""

    name: str = field(metadata=spec_field(NAME))
    mount_path: str = field(metadata=spec_field(ABS_PATH))
    empty_dir: EmptyDir = field(default_factory=EmptyDir, metadata=spec_field(Obj(EmptyDir)))


@dataclass(frozen=True, slots=True)
class SecretItem(Checked):
    """One key of a secret as one file under the volume's mount path."""

    key: str = field(metadata=spec_field(Str(253, 1, r"[-._A-Za-z0-9]+", "secret key")))
    path: str = field(metadata=spec_field(Str(253, 1, r"[A-Za-z0-9._-][A-Za-z0-9._/-]*", "relative file path")))
    mode: int | None = field(default=None, metadata=spec_field(Int(0, 0o777)))

    SCHEMA_EXTRA: ClassVar[dict[str, Any]] = {
        "not": {"required": ["path"], "properties": {"path": {"pattern": r"(^|/)\.\.(/|$)|/$|//"}}}
    }

    def _problems(self) -> Iterator[tuple[str, str]]:
        if ".." in self.path.split("/") or self.path.endswith("/") or "//" in self.path:
            yield "path", "must be a relative path without '..' or empty segments"


@dataclass(frozen=True, slots=True)
class SecretVolumeSpec(Checked):
    """A secret of the workload's namespace as files on a tmpfs at `mountPath` (read-only): the keys listed in
    `items`, or every key (file named after the key) when there are none. Modes are octal in YAML (0400)."""

    secret: str = field(metadata=spec_field(NAME))
    mount_path: str = field(metadata=spec_field(ABS_PATH))
    items: tuple[SecretItem, ...] = field(default=(), metadata=spec_field(ListOf(Obj(SecretItem), 64)))
    default_mode: int = field(default=0o400, metadata=spec_field(Int(0, 0o777)))

    def _problems(self) -> Iterator[tuple[str, str]]:
        for i in duplicates(list[object]([it.path for it in self.items])):
            yield f"items[{i}].path", "duplicate path"
        paths = [it.path for it in self.items]
        for i, p in enumerate(paths):
            if any(other.startswith(p + "/") for other in paths):
                yield f"items[{i}].path", "is also used as a directory by another item"

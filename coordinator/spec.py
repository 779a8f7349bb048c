"""Workload specs: the `cloudless/v1` Workload document as frozen dataclasses, and its strict parser.

Every document object is a frozen dataclass whose fields carry their own validation as a kind from
`coordinator.spec_kinds` (how one value is parsed, dumped and described) plus the document key. Three functions
walk those field tables:

- `parse_workload(doc)` checks every key against the table: unknown or misspelled keys are errors (with a
  difflib suggestion), never silently dropped; so are wrong types, out-of-range numbers and invalid names. It
  collects *all* problems with their field paths (`spec.ports[1].containerPort`) and raises one `SpecError`.
  After a dataclass is built, its `_problems()` method adds cross-field rules (limits >= requests, exactly one
  probe handler, ...).
- `workload_to_doc(w)` writes the canonical document: table order, defaults omitted, quantities in canonical
  form, so `parse_workload(workload_to_doc(w)) == w`.
- `workload_json_schema()` emits a JSON Schema (draft 2020-12) from the same table, so parser and schema
  cannot drift. Cross-field rules are mirrored by a hand-written `SCHEMA_EXTRA` where JSON Schema can say
  them; two are parser-only: limits >= requests (quantities are strings) and unique names in lists.

`null` is rejected like any other wrong type: an absent key means "use the default".

Pure: no I/O, no clocks. This module is longer than the style guide's ~600 lines because the field tables are
the workload document's single source of truth: splitting them would scatter one document over files.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Final

from broker.wire.messages import Probe as WireProbe
from broker.wire.messages import ProbeKind, RestartPolicy
from broker.wire.messages import Protocol as PortProtocol
from broker.wire.schema import ID_MAX_LEN, ID_PATTERN
from coordinator.errors import SpecError
from coordinator.spec_kinds import (
    Amount,
    Bool,
    Checked,
    Choice,
    Const,
    Int,
    IntOrPercent,
    ListOf,
    MapOf,
    Num,
    Obj,
    Problems,
    Quantity,
    Str,
    spec_field,
)
from firmware_profiles import units as quantity

__all__ = [
    "API_VERSION",
    "KIND",
    "AntiAffinity",
    "Capabilities",
    "ContainerPort",
    "EmptyDir",
    "EnvVar",
    "EnvVarSource",
    "ExecAction",
    "HTTPGetAction",
    "IntOrPercent",
    "Medium",
    "Metadata",
    "NodeAffinity",
    "NodeSelectorRequirement",
    "Operator",
    "PlacementSpec",
    "PortProtocol",
    "PreferredTerm",
    "ProbeSpec",
    "ResourceList",
    "Resources",
    "RestartPolicy",
    "RolloutSpec",
    "RolloutStrategy",
    "Scope",
    "SeccompProfile",
    "SeccompType",
    "SecretItem",
    "SecretKeyRef",
    "SecretUpdate",
    "SecretVolumeSpec",
    "SecurityContext",
    "Spread",
    "Strategy",
    "TCPSocketAction",
    "TaintEffect",
    "Toleration",
    "TolerationOperator",
    "VolumeSpec",
    "Workload",
    "WorkloadSpec",
    "parse_workload",
    "spec_hash",
    "workload_json_schema",
    "workload_to_doc",
]

API_VERSION: Final = "cloudless/v1"
KIND: Final = "Workload"
JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"


# ---- enums -----------------------------------------------------------------------------------------------


class Spread(StrEnum):
    NONE = "none"
    ZONE = "zone"
    NODE = "node"


class Scope(StrEnum):
    NODE = "node"
    ZONE = "zone"


class Strategy(StrEnum):
    BINPACK = "binpack"
    SPREAD = "spread"


class Operator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class TolerationOperator(StrEnum):
    EQUAL = "Equal"
    EXISTS = "Exists"


class TaintEffect(StrEnum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"


class RolloutStrategy(StrEnum):
    ROLLING_UPDATE = "RollingUpdate"
    RECREATE = "Recreate"


class SeccompType(StrEnum):
    RUNTIME_DEFAULT = "RuntimeDefault"
    LOCALHOST = "Localhost"
    UNCONFINED = "Unconfined"


class Medium(StrEnum):
    DISK = ""
    MEMORY = "Memory"


class SecretUpdate(StrEnum):
    RESTART = "restart"
    FILES = "files"


# ---- shared value kinds ----------------------------------------------------------------------------------

NAME = Str(ID_MAX_LEN, 1, ID_PATTERN.pattern, "name (letters, digits, '.', '_', '-'; max 63; starts alphanumeric)")
LABEL_KEY = Str(128, 1, r"[A-Za-z0-9][A-Za-z0-9._/-]*", "label key")
LABEL_VALUE = Str(128)
TEXT = Str(4096)
ARGV = ListOf(TEXT, 256)
ENV_NAME = Str(256, 1, r"[A-Za-z_][A-Za-z0-9_.-]*", "environment variable name")
SECRET_ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*"  # noqa: S105 (a pattern, not a password)
ABS_PATH = Str(1024, 1, r"/[^\x00]*", "absolute path")
PORT = Int(1, 65535)
CAPABILITY = Str(64, 1, r"[A-Z][A-Z0-9_]*", "capability (e.g. NET_BIND_SERVICE)")
ARCH = Str(32, 1, r"[A-Za-z0-9_]+", "architecture")
ZONE = Str(64, 1, ID_PATTERN.pattern, "zone or region name")
UID = Int(0, 2**31 - 1)
CPU = Quantity("cpu")
MEMORY = Quantity("memory")


def _duplicates(values: list[object]) -> Iterator[int]:
    seen: set[object] = set()
    for i, v in enumerate(values):
        if v in seen:
            yield i
        seen.add(v)


# ---- metadata, env, resources, ports ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Metadata(Checked):
    """Identity of a workload: `namespace/name` is unique in the cluster."""

    name: str = field(metadata=spec_field(NAME))
    namespace: str = field(default="default", metadata=spec_field(NAME))
    labels: dict[str, str] = field(default_factory=dict, metadata=spec_field(MapOf(LABEL_KEY, LABEL_VALUE)))


@dataclass(frozen=True, slots=True)
class SecretKeyRef(Checked):
    """One key of a cluster secret."""

    name: str = field(metadata=spec_field(NAME))
    key: str = field(metadata=spec_field(Str(253, 1, r"[-._A-Za-z0-9]+", "secret key")))


@dataclass(frozen=True, slots=True)
class EnvVarSource(Checked):
    """Where an environment variable's value comes from (resolved on delivery, never stored in the spec)."""

    secret_key_ref: SecretKeyRef = field(metadata=spec_field(Obj(SecretKeyRef)))


@dataclass(frozen=True, slots=True)
class EnvVar(Checked):
    """An environment variable: a literal `value` or `valueFrom` a secret (not both)."""

    name: str = field(metadata=spec_field(ENV_NAME))
    value: str = field(default="", metadata=spec_field(TEXT))
    value_from: EnvVarSource | None = field(default=None, metadata=spec_field(Obj(EnvVarSource)))

    SCHEMA_EXTRA: ClassVar[dict[str, Any]] = {
        "not": {"required": ["value", "valueFrom"], "properties": {"value": {"minLength": 1}}},
        # a secret is handed over by /bin/sh: its variable must be a shell name
        "if": {"required": ["valueFrom"]},
        "then": {"properties": {"name": {"pattern": f"^{SECRET_ENV_NAME}$"}}},
    }

    def _problems(self) -> Iterator[tuple[str, str]]:
        if self.value and self.value_from is not None:
            yield "valueFrom", "set either value or valueFrom, not both"
        if self.value_from is not None and not re.fullmatch(SECRET_ENV_NAME, self.name):
            yield "name", f"a variable taking a secret must be a shell name ({SECRET_ENV_NAME})"


@dataclass(frozen=True, slots=True)
class ResourceList(Checked):
    """Amounts of CPU (millicores) and memory (bytes); unset means "not specified"."""

    cpu_millis: int | None = field(default=None, metadata=spec_field(CPU, key="cpu"))
    memory_bytes: int | None = field(default=None, metadata=spec_field(MEMORY, key="memory"))


@dataclass(frozen=True, slots=True)
class Resources(Checked):
    """Requests are reserved on the node by the scheduler; limits are enforced by the runtime (limits >= requests)."""

    requests: ResourceList = field(default_factory=ResourceList, metadata=spec_field(Obj(ResourceList)))
    limits: ResourceList = field(default_factory=ResourceList, metadata=spec_field(Obj(ResourceList)))

    @property
    def cpu_request_millis(self) -> int:
        """What the scheduler reserves: the request, else the limit (as Kubernetes does), else 0."""
        return _first_set(self.requests.cpu_millis, self.limits.cpu_millis)

    @property
    def memory_request_bytes(self) -> int:
        return _first_set(self.requests.memory_bytes, self.limits.memory_bytes)

    def _problems(self) -> Iterator[tuple[str, str]]:
        req, lim = self.requests, self.limits
        if req.cpu_millis is not None and lim.cpu_millis is not None and lim.cpu_millis < req.cpu_millis:
            cpu_req, cpu_lim = quantity.format_cpu(req.cpu_millis), quantity.format_cpu(lim.cpu_millis)
            yield "limits.cpu", f"limit {cpu_lim} is below the request {cpu_req}"
        if req.memory_bytes is not None and lim.memory_bytes is not None and lim.memory_bytes < req.memory_bytes:
            mem_req, mem_lim = quantity.format_memory(req.memory_bytes), quantity.format_memory(lim.memory_bytes)
            yield "limits.memory", f"limit {mem_lim} is below the request {mem_req}"


def _first_set(*values: int | None) -> int:
    return next((v for v in values if v is not None), 0)


@dataclass(frozen=True, slots=True)
class ContainerPort(Checked):
    """A port the container listens on; `hostPort` (0 = none) publishes it on the node."""

    container_port: int = field(metadata=spec_field(PORT))
    host_port: int = field(default=0, metadata=spec_field(Int(0, 65535)))
    protocol: PortProtocol = field(default=PortProtocol.TCP, metadata=spec_field(Choice(PortProtocol)))
    name: str = field(default="", metadata=spec_field(NAME))


# ---- placement -------------------------------------------------------------------------------------------


def _operator_problems(operator: Operator, values: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    if operator in (Operator.IN, Operator.NOT_IN) and not values:
        yield "values", f"operator {operator} needs at least one value"
    if operator in (Operator.EXISTS, Operator.DOES_NOT_EXIST) and values:
        yield "values", f"operator {operator} takes no values"


_OPERATOR_SCHEMA: dict[str, Any] = {
    "if": {"properties": {"operator": {"enum": ["In", "NotIn"]}}},
    "then": {"required": ["values"], "properties": {"values": {"minItems": 1}}},
    "else": {"properties": {"values": {"maxItems": 0}}},
}


@dataclass(frozen=True, slots=True)
class NodeSelectorRequirement(Checked):
    """A hard rule on a node label (In/NotIn need values; Exists/DoesNotExist take none)."""

    key: str = field(metadata=spec_field(LABEL_KEY))
    operator: Operator = field(metadata=spec_field(Choice(Operator)))
    values: tuple[str, ...] = field(default=(), metadata=spec_field(ListOf(LABEL_VALUE, 64)))

    SCHEMA_EXTRA: ClassVar[dict[str, Any]] = _OPERATOR_SCHEMA

    def _problems(self) -> Iterator[tuple[str, str]]:
        return _operator_problems(self.operator, self.values)


@dataclass(frozen=True, slots=True)
class PreferredTerm(Checked):
    """A soft rule on a node label, worth `weight` (1-100) when it matches."""

    weight: int = field(metadata=spec_field(Int(1, 100)))
    key: str = field(metadata=spec_field(LABEL_KEY))
    operator: Operator = field(metadata=spec_field(Choice(Operator)))
    values: tuple[str, ...] = field(default=(), metadata=spec_field(ListOf(LABEL_VALUE, 64)))

    SCHEMA_EXTRA: ClassVar[dict[str, Any]] = _OPERATOR_SCHEMA

    def _problems(self) -> Iterator[tuple[str, str]]:
        return _operator_problems(self.operator, self.values)


@dataclass(frozen=True, slots=True)
class NodeAffinity(Checked):
    """Label rules: all `required` must match; matching `preferred` terms raise a node's score."""

    required: tuple[NodeSelectorRequirement, ...] = field(
        default=(), metadata=spec_field(ListOf(Obj(NodeSelectorRequirement), 32))
    )
    preferred: tuple[PreferredTerm, ...] = field(default=(), metadata=spec_field(ListOf(Obj(PreferredTerm), 32)))


@dataclass(frozen=True, slots=True)
class AntiAffinity(Checked):
    """Never share a node (or zone) with a replica of these workloads (same namespace; may name itself)."""

    workloads: tuple[str, ...] = field(default=(), metadata=spec_field(ListOf(NAME, 32)))
    scope: Scope = field(default=Scope.NODE, metadata=spec_field(Choice(Scope)))


@dataclass(frozen=True, slots=True)
class Toleration(Checked):
    """Allows nodes with a matching taint. Exists matches any value (and with no key, any taint)."""

    key: str = field(default="", metadata=spec_field(LABEL_KEY))
    operator: TolerationOperator = field(
        default=TolerationOperator.EQUAL, metadata=spec_field(Choice(TolerationOperator))
    )
    value: str = field(default="", metadata=spec_field(LABEL_VALUE))
    effect: TaintEffect | None = field(default=None, metadata=spec_field(Choice(TaintEffect)))

    SCHEMA_EXTRA: ClassVar[dict[str, Any]] = {
        "if": {"properties": {"operator": {"const": "Exists"}}, "required": ["operator"]},
        "then": {"properties": {"value": {"maxLength": 0}}},
        "else": {"required": ["key"]},
    }

    def _problems(self) -> Iterator[tuple[str, str]]:
        if self.operator is TolerationOperator.EXISTS and self.value:
            yield "value", "operator Exists takes no value"
        if self.operator is TolerationOperator.EQUAL and not self.key:
            yield "key", "operator Equal needs a key"


@dataclass(frozen=True, slots=True)
class PlacementSpec(Checked):
    """Where replicas may run (hard rules) and where they would rather run (scoring)."""

    node_selector: dict[str, str] = field(default_factory=dict, metadata=spec_field(MapOf(LABEL_KEY, LABEL_VALUE)))
    zones: tuple[str, ...] = field(default=(), metadata=spec_field(ListOf(ZONE)))
    regions: tuple[str, ...] = field(default=(), metadata=spec_field(ListOf(ZONE)))
    arch: tuple[str, ...] = field(default=(), metadata=spec_field(ListOf(ARCH, 16)))
    os: tuple[str, ...] = field(default=(), metadata=spec_field(ListOf(ARCH, 16)))
    spread: Spread = field(default=Spread.NONE, metadata=spec_field(Choice(Spread)))
    node_affinity: NodeAffinity = field(default_factory=NodeAffinity, metadata=spec_field(Obj(NodeAffinity)))
    anti_affinity: AntiAffinity = field(default_factory=AntiAffinity, metadata=spec_field(Obj(AntiAffinity)))
    tolerations: tuple[Toleration, ...] = field(default=(), metadata=spec_field(ListOf(Obj(Toleration), 32)))
    strategy: Strategy = field(default=Strategy.SPREAD, metadata=spec_field(Choice(Strategy)))


# ---- rollout, probes, security, volumes -----------------------------------------------------------------


_ZERO_AMOUNT: dict[str, Any] = {"anyOf": [{"const": 0}, {"type": "string", "pattern": "^0+%$"}]}


@dataclass(frozen=True, slots=True)
class RolloutSpec(Checked):
    """How a changed spec replaces running replicas (maxSurge and maxUnavailable cannot both be 0)."""

    strategy: RolloutStrategy = field(
        default=RolloutStrategy.ROLLING_UPDATE, metadata=spec_field(Choice(RolloutStrategy))
    )
    max_surge: IntOrPercent = field(default=IntOrPercent(25, percent=True), metadata=spec_field(Amount()))
    max_unavailable: IntOrPercent = field(default=IntOrPercent(25, percent=True), metadata=spec_field(Amount()))
    min_available: IntOrPercent | None = field(default=None, metadata=spec_field(Amount()))
    progress_deadline_seconds: int = field(default=600, metadata=spec_field(Int(1, 86400)))
    auto_rollback: bool = field(default=True, metadata=spec_field(Bool()))

    SCHEMA_EXTRA: ClassVar[dict[str, Any]] = {
        "not": {
            "required": ["maxSurge", "maxUnavailable"],
            "properties": {"maxSurge": _ZERO_AMOUNT, "maxUnavailable": _ZERO_AMOUNT},
        }
    }

    def _problems(self) -> Iterator[tuple[str, str]]:
        if self.max_surge.value == 0 and self.max_unavailable.value == 0:
            yield "maxUnavailable", "maxSurge and maxUnavailable cannot both be 0"


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
        for i in _duplicates(list[object]([it.path for it in self.items])):
            yield f"items[{i}].path", "duplicate path"
        paths = [it.path for it in self.items]
        for i, p in enumerate(paths):
            if any(other.startswith(p + "/") for other in paths):
                yield f"items[{i}].path", "is also used as a directory by another item"


# ---- the workload ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkloadSpec(Checked):
    """What to run, how much of it, and where (names of env vars, ports, volumes and mount paths are unique)."""

    image: str = field(metadata=spec_field(Str(512, 1, r"[^\s]+", "image reference")))
    command: tuple[str, ...] = field(default=(), metadata=spec_field(ARGV))
    args: tuple[str, ...] = field(default=(), metadata=spec_field(ARGV))
    env: tuple[EnvVar, ...] = field(default=(), metadata=spec_field(ListOf(Obj(EnvVar), 256)))
    replicas: int = field(default=1, metadata=spec_field(Int(0, 1000)))
    resources: Resources = field(default_factory=Resources, metadata=spec_field(Obj(Resources)))
    ports: tuple[ContainerPort, ...] = field(default=(), metadata=spec_field(ListOf(Obj(ContainerPort), 64)))
    placement: PlacementSpec = field(default_factory=PlacementSpec, metadata=spec_field(Obj(PlacementSpec)))
    restart_policy: RestartPolicy = field(default=RestartPolicy.ALWAYS, metadata=spec_field(Choice(RestartPolicy)))
    rollout: RolloutSpec = field(default_factory=RolloutSpec, metadata=spec_field(Obj(RolloutSpec)))
    liveness_probe: ProbeSpec | None = field(default=None, metadata=spec_field(Obj(ProbeSpec)))
    readiness_probe: ProbeSpec | None = field(default=None, metadata=spec_field(Obj(ProbeSpec)))
    security_context: SecurityContext = field(
        default_factory=SecurityContext, metadata=spec_field(Obj(SecurityContext))
    )
    volumes: tuple[VolumeSpec, ...] = field(default=(), metadata=spec_field(ListOf(Obj(VolumeSpec), 32)))
    secret_volumes: tuple[SecretVolumeSpec, ...] = field(
        default=(), metadata=spec_field(ListOf(Obj(SecretVolumeSpec), 16)))
    # what a new version of a secret does to a running replica: restart it (default), or rewrite its secret
    # files in place ("files"; secrets in env always restart: a process's environment cannot change)
    secret_update: SecretUpdate = field(default=SecretUpdate.RESTART, metadata=spec_field(Choice(SecretUpdate)))

    def _problems(self) -> Iterator[tuple[str, str]]:
        mounts: list[object] = [*(v.mount_path for v in self.volumes), *(v.mount_path for v in self.secret_volumes)]
        for i in _duplicates(mounts):
            if i >= len(self.volumes):
                yield f"secretVolumes[{i - len(self.volumes)}].mountPath", "duplicate mountPath"
        secrets = {e.value_from.secret_key_ref.name for e in self.env if e.value_from is not None}
        secrets |= {v.secret for v in self.secret_volumes}
        if len(secrets) > 16:
            yield "secretVolumes", "at most 16 different secrets per workload"
        checks: list[tuple[str, str, list[object], str]] = [
            ("env", "name", [e.name for e in self.env], "duplicate environment variable"),
            ("ports", "containerPort", [(p.container_port, p.protocol) for p in self.ports], "duplicate port"),
            ("ports", "name", [p.name or object() for p in self.ports], "duplicate port name"),
            (
                "ports",
                "hostPort",
                [(p.host_port, p.protocol) if p.host_port else object() for p in self.ports],
                "duplicate hostPort",
            ),
            ("volumes", "name", [v.name for v in self.volumes], "duplicate volume name"),
            ("volumes", "mountPath", [v.mount_path for v in self.volumes], "duplicate mountPath"),
        ]
        for where, key, values, message in checks:
            for i in _duplicates(values):
                yield f"{where}[{i}].{key}", message


@dataclass(frozen=True, slots=True)
class Workload(Checked):
    """A workload document (`apiVersion: cloudless/v1`, `kind: Workload`)."""

    metadata: Metadata = field(metadata=spec_field(Obj(Metadata)))
    spec: WorkloadSpec = field(metadata=spec_field(Obj(WorkloadSpec)))
    api_version: str = field(default=API_VERSION, metadata=spec_field(Const(API_VERSION), required=True))
    kind: str = field(default=KIND, metadata=spec_field(Const(KIND), required=True))

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def key(self) -> str:
        """`namespace/name`: the workload's identity in the cluster and in the scheduler."""
        return f"{self.metadata.namespace}/{self.metadata.name}"


_WORKLOAD = Obj(Workload)
# Document order for the canonical form: apiVersion and kind first, as people write them.
_DOC_ORDER = ("apiVersion", "kind", "metadata", "spec")

# What a replica's container is made of: a change to any of these needs a restart (see `spec_hash`).
RESTART_FIELDS: Final = (
    "image",
    "command",
    "args",
    "env",
    "resources",
    "ports",
    "livenessProbe",
    "readinessProbe",
    "securityContext",
    "volumes",
    "restartPolicy",
    "secretVolumes",
)


def parse_workload(doc: object) -> Workload:
    """Validate a parsed YAML/JSON document and build the Workload; raises SpecError listing every problem."""
    problems: Problems = []
    result = _WORKLOAD.parse(doc, "", problems)
    if problems or not isinstance(result, Workload):
        raise SpecError.collected(problems or [("", "invalid workload")])
    return result


def workload_to_doc(workload: Workload) -> dict[str, Any]:
    """The canonical document: defaults omitted, quantities canonical; `parse_workload` inverts it exactly."""
    doc = _WORKLOAD.dump(workload)
    assert isinstance(doc, dict)
    return {k: doc[k] for k in _DOC_ORDER if k in doc}


def spec_hash(workload: Workload) -> str:
    """A stable digest of what a replica's container is made of (RESTART_FIELDS).

    Replica count, rollout parameters, placement and metadata are left out: changing them must not restart
    replicas. Computed over the canonical document with defaults omitted, so adding a new optional field with
    a default later does not change existing hashes.
    """
    spec = Obj(WorkloadSpec).dump(workload.spec)
    assert isinstance(spec, dict)
    subset = {k: spec[k] for k in RESTART_FIELDS if k in spec}
    canonical = json.dumps(subset, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()


def workload_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a workload document, generated from the parser's own field tables."""
    defs: dict[str, Any] = {}
    ref = _WORKLOAD.schema(defs)
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": "https://cloudless.dev/schemas/workload/v1",
        "title": "Cloudless Workload (cloudless/v1)",
        **ref,
        "$defs": defs,
    }

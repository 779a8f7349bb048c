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

The field tables are split by part of the document: `spec_values` (enums and shared value kinds),
`spec_placement`, `spec_container` (probes, security context, volumes) and this module (metadata, env, resources,
ports, rollout and the workload itself, plus the three functions). Pure: no I/O, no clocks.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from broker.wire.messages import Protocol as PortProtocol
from broker.wire.messages import RestartPolicy
from coordinator.errors import SpecError
from coordinator.spec_container import (
    Capabilities,
    EmptyDir,
    ExecAction,
    HTTPGetAction,
    ProbeSpec,
    SeccompProfile,
    SecretItem,
    SecretVolumeSpec,
    SecurityContext,
    TCPSocketAction,
    VolumeSpec,
)
from coordinator.spec_kinds import (
    MAX_REPLICAS,
    Amount,
    Bool,
    Checked,
    Choice,
    Const,
    Int,
    IntOrPercent,
    ListOf,
    MapOf,
    Obj,
    Problems,
    Str,
    spec_field,
)
from coordinator.spec_placement import (
    AntiAffinity,
    NodeAffinity,
    NodeSelectorRequirement,
    PlacementSpec,
    PreferredTerm,
    Toleration,
)
from coordinator.spec_service import ServicePortSpec, ServiceSpec, service_problems
from coordinator.spec_values import (
    ARGV,
    CPU,
    ENV_NAME,
    LABEL_KEY,
    LABEL_VALUE,
    MEMORY,
    NAME,
    PORT,
    SECRET_ENV_NAME,
    TEXT,
    Medium,
    Operator,
    RolloutStrategy,
    Runtime,
    Scope,
    SeccompType,
    SecretUpdate,
    Spread,
    Strategy,
    TaintEffect,
    TolerationOperator,
    duplicates,
)
from firmware_profiles import units as quantity

__all__ = [
    "API_VERSION",
    "KIND",
    "MAX_REPLICAS",
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
    "Runtime",
    "Scope",
    "SeccompProfile",
    "SeccompType",
    "SecretItem",
    "SecretKeyRef",
    "SecretUpdate",
    "SecretVolumeSpec",
    "SecurityContext",
    "ServicePortSpec",
    "ServiceSpec",
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


# ---- the workload ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkloadSpec(Checked):
    """What to run, how much of it, and where (names of env vars, ports, volumes and mount paths are unique).

    `image` is what a container runs; a process workload (`runtime: process`, or no image at all) has none and
    runs its `command` on the node. What the spec needs decides where it may run: `runtime: any` (the default)
    with an image and no command, remapped ports or volumes needs a container; see
    `coordinator.scheduler.abilities`."""

    image: str = field(default="", metadata=spec_field(Str(512, 1, r"[^\s]+", "image reference")))
    runtime: Runtime = field(default=Runtime.ANY, metadata=spec_field(Choice(Runtime)))
    command: tuple[str, ...] = field(default=(), metadata=spec_field(ARGV))
    args: tuple[str, ...] = field(default=(), metadata=spec_field(ARGV))
    env: tuple[EnvVar, ...] = field(default=(), metadata=spec_field(ListOf(Obj(EnvVar), 256)))
    replicas: int = field(default=1, metadata=spec_field(Int(0, MAX_REPLICAS)))
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
    # the service the ready replicas are endpoints of (coordinator.spec_service); changing it restarts nothing
    service: ServiceSpec | None = field(default=None, metadata=spec_field(Obj(ServiceSpec)))

    # the runtime rules (`_runtime_problems`) as JSON Schema says them
    SCHEMA_EXTRA: ClassVar[dict[str, Any]] = {
        "allOf": [
            {"if": {"required": ["runtime"], "properties": {"runtime": {"const": "container"}}},
             "then": {"required": ["image"]}},
            {"if": {"not": {"required": ["image"]}},
             "then": {"required": ["command"], "properties": {"command": {"minItems": 1}}}},
            {"if": {"anyOf": [{"required": ["runtime"], "properties": {"runtime": {"const": "process"}}},
                              {"not": {"required": ["image"]}}]},
             "then": {"properties": {"volumes": {"maxItems": 0}, "secretVolumes": {"maxItems": 0}}}},
        ],
    }

    def _problems(self) -> Iterator[tuple[str, str]]:
        yield from self._runtime_problems()
        mounts: list[object] = [*(v.mount_path for v in self.volumes), *(v.mount_path for v in self.secret_volumes)]
        for i in duplicates(mounts):
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
            for i in duplicates(values):
                yield f"{where}[{i}].{key}", message

    def _runtime_problems(self) -> Iterator[tuple[str, str]]:
        """A container needs an image; a process needs a command and cannot mount volumes. (A process binds its host
        port itself, so it cannot remap one either: that the scheduler says, as no process node has `port-remap`.)"""
        if not self.image:
            if self.runtime is Runtime.CONTAINER:
                yield "image", "a container workload (runtime: container) needs an image"
            elif not self.command:
                yield "command", ("a workload without an image runs as a process (runtime: process) and needs a "
                                  "command; or name the image to run in a container")
        if self.runtime is not Runtime.PROCESS and self.image:
            return
        why = "runtime: process" if self.runtime is Runtime.PROCESS else "no image: it runs as a process"
        if self.volumes:
            yield "volumes", f"{why}, and a process cannot mount volumes (use its working directory)"
        if self.secret_volumes:
            yield "secretVolumes", f"{why}, and a process cannot mount secret volumes (use env valueFrom)"


@dataclass(frozen=True, slots=True)
class Workload(Checked):
    """A workload document (`apiVersion: cloudless/v1`, `kind: Workload`)."""

    metadata: Metadata = field(metadata=spec_field(Obj(Metadata)))
    spec: WorkloadSpec = field(metadata=spec_field(Obj(WorkloadSpec)))
    api_version: str = field(default=API_VERSION, metadata=spec_field(Const(API_VERSION), required=True))
    kind: str = field(default=KIND, metadata=spec_field(Const(KIND), required=True))

    def _problems(self) -> Iterator[tuple[str, str]]:
        if self.spec.service is not None:
            yield from service_problems(self.spec.service, workload=self.metadata.name,
                                        namespace=self.metadata.namespace,
                                        container_ports=[(p.container_port, p.protocol) for p in self.spec.ports])

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
    "runtime",
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

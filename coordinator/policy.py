"""Admission policy: whether a workload may run, as a pure function of the policies and the workload.

Theory of operation. A `Policy` is a document (`apiVersion: cloudless/v1`, `kind: Policy`) parsed strictly by the
same field tables as workload specs (`coordinator.spec_kinds`): unknown keys, wrong types and bad patterns are errors
with their field path, collected in one pass and raised as one `PolicyError` naming the file (`policies.yaml#2`).

    spec:
      action: deny             # deny | warn | audit: the default of the rules below
      namespaces: ["*"]        # exact namespace names, or "*" for every namespace
      rules:                   # each rule is optional; a present rule is on, with secure defaults
        images: {allowedRegistries: [...], allowedImages: [...], requireDigest: false}
        privileged: {allowed: false}
        hostNamespaces: {allowed: false}             # hostNetwork, hostPID, hostIPC
        capabilities: {requireDropAll: true, allowedAdd: []}
        runAsNonRoot: {required: true}
        readOnlyRootFilesystem: {required: true}
        seccomp: {allowedTypes: [RuntimeDefault, Localhost]}
        allowPrivilegeEscalation: {allowed: false}
        resources: {requireLimits: true, maxCpu: "2", maxMemory: "1Gi"}

Every rule takes its own `action`, overriding the policy's. `evaluate(policies, workload)` runs every rule of
every policy whose `namespaces` match the workload's and returns a `Decision`: one `Violation` per finding (policy,
rule, action, spec field path, message). A workload is allowed unless some violation's action is `deny`; `warn`
and `audit` violations are returned for the caller to show (warn) or only record (audit). Rejection is a value,
never an exception. Order is deterministic: policies by name, rules in the table order above, findings in field
order; so the Decision depends on the set of policies, not on the order they were loaded in.

Image references (`ImageRef`, `parse_image_ref`) follow Docker's reference grammar and defaults
(github.com/distribution/reference, `ParseNormalizedNamed`): `[registry/]path[:tag][@digest]`; the first path
component is a registry if it contains "." or ":", is "localhost", or has an upper-case letter; otherwise the
registry is docker.io, and a single-component name gets the `library/` namespace (`nginx` ->
`docker.io/library/nginx`); `index.docker.io` means docker.io; with neither tag nor digest the tag is `latest`.
Registry and image patterns are globs (`fnmatch`, case-sensitive) matched component by component, so `*` never
crosses a "/": `allowedRegistries` entries match a prefix of the normalised name (`docker.io/library` admits
`docker.io/library/nginx`, not `docker.io/libraryx/nginx`); `allowedImages` patterns match the whole name, with
or without its tag or digest (`localhost/cloudless/*` admits `localhost/cloudless/busybox:latest`). Patterns are
written fully qualified (they start with a registry or a glob); the parser refuses `nginx`, which would never match.

Pure: no I/O, except that `default_policies()` reads the packaged `policies/default.yaml` once: read-only data
that ships with the code, like a module (PyYAML, when installed, is imported with this module, not on first use).
The engine calls `evaluate` on every apply and records the Decision.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import importlib
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from coordinator.errors import SpecError
from coordinator.spec import API_VERSION, SeccompType, SecurityContext, Workload, WorkloadSpec
from coordinator.spec_kinds import Bool, Choice, Const, ListOf, Obj, Str, field_table, spec_field
from coordinator.spec_values import CAPABILITY, CPU, MEMORY, NAME
from firmware_profiles import units as quantity

__all__ = [
    "DEFAULT_REGISTRY",
    "DEFAULT_TAG",
    "POLICY_KIND",
    "Action",
    "Decision",
    "ImageRef",
    "Policy",
    "PolicyError",
    "RuleName",
    "Violation",
    "default_policies",
    "evaluate",
    "load_policies",
    "parse_image_ref",
    "parse_policy",
]

POLICY_KIND: Final = "Policy"
DEFAULT_REGISTRY: Final = "docker.io"
OFFICIAL_NAMESPACE: Final = "library"
DEFAULT_TAG: Final = "latest"
DEFAULT_RESOURCE: Final = "policies/default.yaml"  # package data of `coordinator`

Finding = tuple[str, str]  # (spec field path, message)


class Action(StrEnum):
    DENY = "deny"  # the workload is refused
    WARN = "warn"  # admitted; the user is told
    AUDIT = "audit"  # admitted; only recorded


class RuleName(StrEnum):
    """The rule keys under `spec.rules`, in evaluation order."""

    IMAGES = "images"
    PRIVILEGED = "privileged"
    HOST_NAMESPACES = "hostNamespaces"
    CAPABILITIES = "capabilities"
    RUN_AS_NON_ROOT = "runAsNonRoot"
    READ_ONLY_ROOT_FILESYSTEM = "readOnlyRootFilesystem"
    SECCOMP = "seccomp"
    ALLOW_PRIVILEGE_ESCALATION = "allowPrivilegeEscalation"
    RESOURCES = "resources"


# ---- image references ------------------------------------------------------------------------------------

# distribution/reference's grammar (regexp.go).
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN = re.compile(
    r"(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*"
    r"|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
)
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{32,}")
_NAME_MAX = 255
_GLOB = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class ImageRef:
    """A normalised image reference: `registry/repository[:tag][@digest]`."""

    registry: str  # "docker.io", "localhost", "ghcr.io", "registry.lan:5000"
    repository: str  # the path under the registry: "library/nginx"
    tag: str = ""  # "" only when pinned by digest without a tag
    digest: str = ""  # "sha256:<hex>"

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    def forms(self) -> tuple[str, ...]:
        """The strings an `allowedImages` pattern is matched against: the name, with tag, with digest, with both."""
        tagged = [f"{self.name}:{self.tag}"] if self.tag else []
        pinned = [f"{self.name}@{self.digest}", str(self)] if self.digest else []
        return tuple(dict.fromkeys([self.name, *tagged, *pinned]))

    def __str__(self) -> str:
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


def _is_registry(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost" or component.lower() != component


def parse_image_ref(text: str) -> ImageRef | None:
    """Normalise `text` with Docker's defaults (see the module docstring); None if it is not a valid reference."""
    rest, _, digest = text.partition("@")
    if ("@" in text and _DIGEST.fullmatch(digest) is None) or re.fullmatch(r"[a-f0-9]{64}", rest):
        return None  # Docker refuses a bare 64-hex name: it would be mistaken for an image id
    name, tag = rest, ""
    colon, slash = rest.rfind(":"), rest.rfind("/")
    if colon > slash:
        name, tag = rest[:colon], rest[colon + 1 :]
        if _TAG.fullmatch(tag) is None:
            return None
    first, sep, path = name.partition("/")
    if sep and _is_registry(first):
        registry = DEFAULT_REGISTRY if first == "index.docker.io" else first
    else:
        registry, path = DEFAULT_REGISTRY, name
    if registry == DEFAULT_REGISTRY and "/" not in path:
        path = f"{OFFICIAL_NAMESPACE}/{path}"
    valid = _DOMAIN.fullmatch(registry) is not None and all(_PATH_COMPONENT.fullmatch(c) for c in path.split("/"))
    if not valid or len(f"{registry}/{path}") > _NAME_MAX:
        return None
    return ImageRef(registry, path, tag or ("" if digest else DEFAULT_TAG), digest)


def _glob_prefix(pattern: str, value: str, *, whole: bool) -> bool:
    """Component-wise glob: every "/"-component of `pattern` matches its counterpart in `value`; with `whole`,
    both have as many components, else `pattern` matches a proper prefix (a registry and path under it)."""
    want, have = pattern.split("/"), value.split("/")
    fits = len(have) == len(want) if whole else len(have) > len(want)
    if not fits:
        return False
    return all(fnmatch.fnmatchcase(h, w) for h, w in zip(have, want, strict=False))


def _canonical_pattern(pattern: str) -> str:
    first, sep, rest = pattern.partition("/")
    return f"{DEFAULT_REGISTRY}{sep}{rest}" if first == "index.docker.io" else pattern


def _qualified(pattern: str) -> bool:
    first = pattern.split("/", 1)[0]
    return _is_registry(first) or bool(_GLOB & set(first))


# ---- the policy document ---------------------------------------------------------------------------------

REGISTRY_PATTERN = Str(256, 1, r"[^\s/]+(?:/[^\s/]+)*", "registry pattern (e.g. docker.io/library)")
IMAGE_PATTERN = Str(512, 1, r"[^\s/]+(?:/[^\s/]+)*", "image pattern (e.g. localhost/cloudless/*)")
NAMESPACE = Str(63, 1, rf"\*|(?:{NAME.pattern})", 'namespace (a name, or "*" for all)')
ADDABLE = Str(64, 1, rf"\*|(?:{CAPABILITY.pattern})", "capability (e.g. NET_BIND_SERVICE, or * for any)")
_ACTION: Final = spec_field(Choice(Action))
_CTX: Final = "spec.securityContext"


class _Doc:
    """Mixin: `coordinator.spec_kinds.Obj` calls `_problems` on each object it builds, for cross-field rules."""

    __slots__ = ()

    def _problems(self) -> Iterator[Finding]:
        return iter(())


class _Rule(_Doc):
    """A rule: what it finds wrong with a workload spec, and the action that overrides its policy's."""

    __slots__ = ()
    action: Action | None

    def findings(self, spec: WorkloadSpec) -> Iterator[Finding]:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class ImagesRule(_Rule):
    """Where images may come from (any listed registry prefix or image pattern) and whether digests are required."""

    allowed_registries: tuple[str, ...] | None = field(default=None, metadata=spec_field(ListOf(REGISTRY_PATTERN)))
    allowed_images: tuple[str, ...] | None = field(default=None, metadata=spec_field(ListOf(IMAGE_PATTERN)))
    require_digest: bool = field(default=False, metadata=spec_field(Bool()))
    action: Action | None = field(default=None, metadata=_ACTION)

    def findings(self, spec: WorkloadSpec) -> Iterator[Finding]:
        if not spec.image:
            return  # a process workload runs no image: there is nothing to pull, so nothing to allow
        ref = parse_image_ref(spec.image)
        if ref is None:
            yield "spec.image", f"{spec.image[:80]!r} is not a valid image reference ([registry/]name[:tag][@digest])"
            return
        if not self._source_allowed(ref):
            yield "spec.image", f"image {ref} is not from an allowed source ({self._sources()})"
        if self.require_digest and not ref.digest:
            yield "spec.image", f"image {ref} is not pinned by digest (append @sha256:...)"

    def _source_allowed(self, ref: ImageRef) -> bool:
        if self.allowed_registries is None and self.allowed_images is None:
            return True
        registries = (_canonical_pattern(p) for p in self.allowed_registries or ())
        images = (_canonical_pattern(p) for p in self.allowed_images or ())
        return any(_glob_prefix(p, ref.name, whole=False) for p in registries) or any(
            _glob_prefix(p, form, whole=True) for p in images for form in ref.forms()
        )

    def _sources(self) -> str:
        parts = [
            f"{what}: {', '.join(items) or 'none'}"
            for what, items in (("registries", self.allowed_registries), ("images", self.allowed_images))
            if items is not None
        ]
        return "; ".join(parts)

    def _problems(self) -> Iterator[Finding]:
        if self.allowed_registries is None and self.allowed_images is None and not self.require_digest:
            yield "", "checks nothing: set allowedRegistries, allowedImages or requireDigest"
        for key, patterns in (("allowedRegistries", self.allowed_registries), ("allowedImages", self.allowed_images)):
            for i, pattern in enumerate(patterns or ()):
                if not _qualified(pattern):
                    yield (f"{key}[{i}]", f"{pattern!r} does not start with a registry and would never match: "
                           f"write it in full, e.g. docker.io/library/{pattern}")


@dataclass(frozen=True, slots=True)
class PrivilegedRule(_Rule):
    """Privileged containers get every capability and the host's devices."""

    allowed: bool = field(default=False, metadata=spec_field(Bool()))
    action: Action | None = field(default=None, metadata=_ACTION)

    def findings(self, spec: WorkloadSpec) -> Iterator[Finding]:
        if spec.security_context.privileged and not self.allowed:
            yield f"{_CTX}.privileged", "privileged containers are not allowed: they control the whole device"


@dataclass(frozen=True, slots=True)
class HostNamespacesRule(_Rule):
    """Sharing the node's network, process or IPC namespace (hostNetwork, hostPID, hostIPC)."""

    allowed: bool = field(default=False, metadata=spec_field(Bool()))
    action: Action | None = field(default=None, metadata=_ACTION)

    def findings(self, spec: WorkloadSpec) -> Iterator[Finding]:
        sc = spec.security_context
        for key, shared, what in (
            ("hostNetwork", sc.host_network, "network"),
            ("hostPID", sc.host_pid, "process"),
            ("hostIPC", sc.host_ipc, "IPC"),
        ):
            if shared and not self.allowed:
                yield f"{_CTX}.{key}", f"sharing the node's {what} namespace is not allowed"


def _cap(name: str) -> str:
    return name.removeprefix("CAP_")  # Podman and Docker accept both spellings


@dataclass(frozen=True, slots=True)
class CapabilitiesRule(_Rule):
    """Drop every Linux capability and add back only allowed ones (`*` allows any)."""

    require_drop_all: bool = field(default=True, metadata=spec_field(Bool()))
    allowed_add: tuple[str, ...] = field(default=(), metadata=spec_field(ListOf(ADDABLE)))
    action: Action | None = field(default=None, metadata=_ACTION)

    def findings(self, spec: WorkloadSpec) -> Iterator[Finding]:
        caps = spec.security_context.capabilities
        allowed = {_cap(c) for c in self.allowed_add}
        shown = ", ".join(self.allowed_add) or "none"
        if self.require_drop_all and "ALL" not in {_cap(c) for c in caps.drop}:
            yield f"{_CTX}.capabilities.drop", f"must include ALL, then add back only what is needed (allowed: {shown})"
        for i, cap in enumerate(caps.add):
            if "*" not in allowed and _cap(cap) not in allowed:
                yield f"{_CTX}.capabilities.add[{i}]", f"capability {cap} may not be added (allowed: {shown})"


@dataclass(frozen=True, slots=True)
class RunAsNonRootRule(_Rule):
    """The process must not run as root: runAsNonRoot: true, or a non-zero runAsUser."""

    required: bool = field(default=True, metadata=spec_field(Bool()))
    action: Action | None = field(default=None, metadata=_ACTION)

    def findings(self, spec: WorkloadSpec) -> Iterator[Finding]:
        sc = spec.security_context
        if not self.required:
            return
        if sc.run_as_user == 0:
            yield f"{_CTX}.runAsUser", "runs as root (UID 0); use a non-zero UID"
        elif sc.run_as_user is None and not sc.run_as_non_root:
            yield f"{_CTX}.runAsNonRoot", "must be true (or set runAsUser to a non-zero UID): images often run as root"


@dataclass(frozen=True, slots=True)
class ReadOnlyRootFilesystemRule(_Rule):
    """The image's filesystem must be mounted read-only (writable places come from volumes)."""

    required: bool = field(default=True, metadata=spec_field(Bool()))
    action: Action | None = field(default=None, metadata=_ACTION)

    def findings(self, spec: WorkloadSpec) -> Iterator[Finding]:
        if self.required and not spec.security_context.read_only_root_filesystem:
            yield (f"{_CTX}.readOnlyRootFilesystem",
                   "must be true; mount an emptyDir volume where the program writes")


@dataclass(frozen=True, slots=True)
class SeccompRule(_Rule):
    """Which seccomp profile types are allowed (an absent profile is RuntimeDefault)."""

    allowed_types: tuple[SeccompType, ...] = field(
        default=(SeccompType.RUNTIME_DEFAULT, SeccompType.LOCALHOST), metadata=spec_field(ListOf(Choice(SeccompType)))
    )
    action: Action | None = field(default=None, metadata=_ACTION)

    def findings(self, spec: WorkloadSpec) -> Iterator[Finding]:
        kind = spec.security_context.seccomp_profile.profile_type
        if kind not in self.allowed_types:
            shown = ", ".join(self.allowed_types) or "none"
            yield f"{_CTX}.seccompProfile.type", f"seccomp profile {kind} is not allowed (allowed: {shown})"


@dataclass(frozen=True, slots=True)
class AllowPrivilegeEscalationRule(_Rule):
    """With `allowed: false`, allowPrivilegeEscalation must be set to false (no-new-privileges)."""

    allowed: bool = field(default=False, metadata=spec_field(Bool()))
    action: Action | None = field(default=None, metadata=_ACTION)

    def findings(self, spec: WorkloadSpec) -> Iterator[Finding]:
        sc: SecurityContext = spec.security_context
        if self.allowed or sc.allow_privilege_escalation is False:
            return
        if sc.privileged:
            why = "privileged containers always can"
        elif sc.allow_privilege_escalation:
            why = "it is true"
        else:
            why = "unset, the runtime lets setuid programs gain privileges"
        yield f"{_CTX}.allowPrivilegeEscalation", f"must be false ({why})"


@dataclass(frozen=True, slots=True)
class ResourcesRule(_Rule):
    """CPU and memory limits are required and bounded (the limit, or the request when no limit is set)."""

    require_limits: bool = field(default=True, metadata=spec_field(Bool()))
    max_cpu_millis: int | None = field(default=None, metadata=spec_field(CPU, key="maxCpu"))
    max_memory_bytes: int | None = field(default=None, metadata=spec_field(MEMORY, key="maxMemory"))
    action: Action | None = field(default=None, metadata=_ACTION)

    def findings(self, spec: WorkloadSpec) -> Iterator[Finding]:
        req, lim = spec.resources.requests, spec.resources.limits
        for key, what, asked, limit, cap, show in (
            ("cpu", "CPU", req.cpu_millis, lim.cpu_millis, self.max_cpu_millis, quantity.format_cpu),
            ("memory", "memory", req.memory_bytes, lim.memory_bytes, self.max_memory_bytes, quantity.format_memory),
        ):
            if self.require_limits and limit is None:
                yield f"spec.resources.limits.{key}", f"no {what} limit: set one so a replica cannot fill a device"
            value, where = (limit, "limits") if limit is not None else (asked, "requests")
            if cap is not None and value is not None and value > cap:
                yield f"spec.resources.{where}.{key}", f"{what} {show(value)} is above the maximum {show(cap)}"


@dataclass(frozen=True, slots=True)
class Rules(_Doc):
    """The rules of a policy; an absent rule is off, a present one is on with its secure defaults."""

    images: ImagesRule | None = field(default=None, metadata=spec_field(Obj(ImagesRule)))
    privileged: PrivilegedRule | None = field(default=None, metadata=spec_field(Obj(PrivilegedRule)))
    host_namespaces: HostNamespacesRule | None = field(default=None, metadata=spec_field(Obj(HostNamespacesRule)))
    capabilities: CapabilitiesRule | None = field(default=None, metadata=spec_field(Obj(CapabilitiesRule)))
    run_as_non_root: RunAsNonRootRule | None = field(default=None, metadata=spec_field(Obj(RunAsNonRootRule)))
    read_only_root_filesystem: ReadOnlyRootFilesystemRule | None = field(
        default=None, metadata=spec_field(Obj(ReadOnlyRootFilesystemRule))
    )
    seccomp: SeccompRule | None = field(default=None, metadata=spec_field(Obj(SeccompRule)))
    allow_privilege_escalation: AllowPrivilegeEscalationRule | None = field(
        default=None, metadata=spec_field(Obj(AllowPrivilegeEscalationRule))
    )
    resources: ResourcesRule | None = field(default=None, metadata=spec_field(Obj(ResourcesRule)))

    def active(self) -> Iterator[tuple[RuleName, _Rule]]:
        """The present rules, in table order."""
        for row in field_table(Rules):
            rule = getattr(self, row.attr)
            if rule is not None:
                yield RuleName(row.key), rule

    def _problems(self) -> Iterator[Finding]:
        if next(self.active(), None) is None:
            yield "", f"no rules: set at least one of {', '.join(RuleName)}"


@dataclass(frozen=True, slots=True)
class PolicySpec(_Doc):
    """Where a policy applies and what it checks."""

    rules: Rules = field(metadata=spec_field(Obj(Rules)))
    action: Action = field(default=Action.DENY, metadata=spec_field(Choice(Action)))
    namespaces: tuple[str, ...] = field(default=("*",), metadata=spec_field(ListOf(NAMESPACE, min_items=1)))


@dataclass(frozen=True, slots=True)
class PolicyMetadata(_Doc):
    """A policy's identity: its name is unique among the policies in force."""

    name: str = field(metadata=spec_field(NAME))


@dataclass(frozen=True, slots=True)
class Policy(_Doc):
    """A policy document (`apiVersion: cloudless/v1`, `kind: Policy`)."""

    metadata: PolicyMetadata = field(metadata=spec_field(Obj(PolicyMetadata)))
    spec: PolicySpec = field(metadata=spec_field(Obj(PolicySpec)))
    api_version: str = field(default=API_VERSION, metadata=spec_field(Const(API_VERSION), required=True))
    kind: str = field(default=POLICY_KIND, metadata=spec_field(Const(POLICY_KIND), required=True))

    @property
    def name(self) -> str:
        return self.metadata.name

    def applies_to(self, namespace: str) -> bool:
        return "*" in self.spec.namespaces or namespace in self.spec.namespaces


_POLICY = Obj(Policy)


class PolicyError(SpecError):
    """A policy document is invalid. `source` names the file and document (`policies.yaml#2`); `errors` lists
    every problem as `(field path, message)`, like `SpecError`, whose JSON shape it keeps."""

    def __init__(self, source: str, errors: Sequence[Finding]) -> None:
        path, message = errors[0]
        super().__init__(path, message, errors=errors)
        self.source = source
        self.args = (f"{source}: {self.args[0]}",)


def parse_policy(doc: object, *, source: str = "<policy>") -> Policy:
    """Validate one parsed YAML/JSON document; raises PolicyError listing every problem."""
    problems: list[Finding] = []
    result = _POLICY.parse(doc, "", problems)
    if problems or not isinstance(result, Policy):
        raise PolicyError(source, problems or [("", "invalid policy")])
    return result


def load_policies(
    docs: Iterable[object], *, source: str = "<policies>", known: Iterable[Policy] = ()
) -> tuple[Policy, ...]:
    """The policies of one file's documents (`None` documents, i.e. empty YAML ones, are skipped). Documents are
    named `source#N` in errors when there are several. Names must be unique, also against `known` (the policies
    already loaded from other files); only the new policies are returned."""
    items = [d for d in docs if d is not None]
    seen = {p.name for p in known}
    out: list[Policy] = []
    for i, doc in enumerate(items, 1):
        where = f"{source}#{i}" if len(items) > 1 else source
        policy = parse_policy(doc, source=where)
        if policy.name in seen:
            raise PolicyError(where, [("metadata.name", f"a policy named {policy.name!r} is already defined")])
        seen.add(policy.name)
        out.append(policy)
    return tuple(out)


# PyYAML is optional (only the default set needs it), so it is imported in `default_policies`. But importing it costs
# 11-17 ms of CPU, which the coordinator's first PUT /v1/workloads paid inside one step of its event loop (issue 17):
# when it is installed, it is imported with this module, at start-up, and the first call only parses (~1 ms).
with contextlib.suppress(ImportError):
    importlib.import_module("yaml")


@functools.cache
def default_policies() -> tuple[Policy, ...]:
    """The secure default set, `coordinator/policies/default.yaml` (read and parsed once, with libyaml's loader
    when PyYAML has it: the same documents as the pure-Python SafeLoader, in a sixth of its time)."""
    # Imported here too: only the default set needs PyYAML (ImportError here says it is missing), and the packaged
    # file is read-only data that ships with the code (the one read this core does; see the module docstring).
    from importlib import resources

    import yaml

    text = resources.files("coordinator").joinpath(DEFAULT_RESOURCE).read_text(encoding="utf-8")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return load_policies(yaml.load_all(text, Loader=loader), source=f"coordinator/{DEFAULT_RESOURCE}")


# ---- evaluation ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Violation:
    """One finding: `policy`'s `rule` objects to `field` (a spec path, e.g. spec.securityContext.privileged)."""

    policy: str
    rule: RuleName
    action: Action
    field: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"policy": self.policy, "rule": str(self.rule), "action": str(self.action), "field": self.field,
                "message": self.message}


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict on one workload. `allowed` is False iff some violation's action is deny; `policies` names the
    policies that applied to the workload's namespace (sorted), so a record shows what was checked."""

    allowed: bool
    violations: tuple[Violation, ...] = ()
    policies: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.allowed == any(v.action is Action.DENY for v in self.violations):
            raise ValueError("allowed must be False exactly when some violation's action is deny")

    def with_action(self, action: Action) -> tuple[Violation, ...]:
        return tuple(v for v in self.violations if v.action is action)

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why the workload was refused, as `field: message (policy/rule)` lines; empty when allowed."""
        return tuple(f"{v.field}: {v.message} ({v.policy}/{v.rule})" for v in self.with_action(Action.DENY))

    def to_json(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "policies": list(self.policies),
                "violations": [v.to_json() for v in self.violations]}


def evaluate(policies: Iterable[Policy], workload: Workload) -> Decision:
    """Check `workload` against every policy that applies to its namespace; never raises for a parsed workload."""
    applied = sorted((p for p in policies if p.applies_to(workload.namespace)), key=lambda p: p.name)
    violations = tuple(v for p in applied for v in _violations(p, workload.spec))
    allowed = not any(v.action is Action.DENY for v in violations)
    return Decision(allowed, violations, tuple(p.name for p in applied))


def _violations(policy: Policy, spec: WorkloadSpec) -> Iterator[Violation]:
    for name, rule in policy.spec.rules.active():
        action = rule.action or policy.spec.action
        for path, message in rule.findings(spec):
            yield Violation(policy.name, name, action, path, message)

"""The runtime port: what the agent needs from a container engine or a process supervisor.

Every Cloudless-managed instance (container or supervised process) carries labels naming the cluster, the node,
the replica, the workload, the spec hash and the desired-state generation it was created for. `list()` returns
only instances that are *this* agent's (`Owner.owns`): its node id in its cluster, so several agents sharing one
Podman never touch each other's containers — two clusters on one machine may both have a node called `local`, and
the cluster id (`edge_agent.cluster`, from the cluster CA) tells them apart — and a restarted agent re-adopts its
instances instead of recreating them.

Adapters implement `Runtime`; the reconciler (a pure core) only ever sees `Instance` values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from broker.wire import NodeFacts, ReplicaSpec
from broker.wire import Protocol as PortProtocol
from edge_agent.errors import SpecUnsupported

if TYPE_CHECKING:
    from edge_agent.secret_layout import Materialized

# Label keys (also used as Podman container labels).
LABEL_CLUSTER = "cloudless.cluster"
LABEL_NODE = "cloudless.node"
LABEL_REPLICA = "cloudless.replica"
LABEL_WORKLOAD = "cloudless.workload"
LABEL_NAMESPACE = "cloudless.namespace"
LABEL_SPEC_HASH = "cloudless.spec-hash"
LABEL_GENERATION = "cloudless.generation"
LABEL_SECRETS = "cloudless.secrets"  # "name:version,..." of the secrets the instance was created with


def refused(exc: SpecUnsupported) -> SpecUnsupported:
    """`exc` as the agent reports it: its message marked as this node's refusal (`NodeFacts.REFUSED`), which the
    coordinator reads as "place this replica elsewhere" rather than as a crash to wait out."""
    text = str(exc)
    return exc if text.startswith(NodeFacts.REFUSED) else SpecUnsupported(NodeFacts.REFUSED + text)


class InstanceState(StrEnum):
    CREATED = "created"  # exists, never started
    RUNNING = "running"
    EXITED = "exited"  # stopped or finished; exit_code says how
    UNKNOWN = "unknown"  # the runtime reports a state we do not map (paused, removing, ...)


@dataclass(frozen=True, slots=True)
class Instance:
    """One container or supervised process as the runtime sees it now."""

    instance_id: str
    replica_id: str
    workload: str
    namespace: str
    spec_hash: str
    generation: int
    state: InstanceState
    exit_code: int | None = None
    started_at: float | None = None  # Unix seconds of the current run's start
    finished_at: float | None = None
    error: str = ""  # the runtime's own error text (OOM killed, exec format error, ...)
    secrets: str = ""  # LABEL_SECRETS: which secret versions it was created with


@dataclass(frozen=True, slots=True)
class ExecResult:
    exit_code: int
    output: bytes


@dataclass(frozen=True, slots=True)
class TtyCommand:
    """How to start an interactive command in an instance (`cloudless exec -it`): the runtime says what to run,
    where and as whom; edge_agent.tty runs it on a pseudo-terminal (or pipes) and relays its bytes.

    `preexec` runs in the child after fork (and after the session/terminal setup), before exec: the confinement
    the instance's own processes get. `after_spawn` runs in the agent once the child exists (close a ruleset fd)."""

    argv: tuple[str, ...]
    cwd: str | None = None
    env: Mapping[str, str] | None = None  # None: the agent's own environment
    user: int | None = None
    group: int | None = None
    preexec: Callable[[], None] | None = None
    after_spawn: Callable[[], None] | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    cpu_percent: float | None = None
    memory_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class RuntimeInfo:
    name: str  # "podman" | "process" | "fake"
    version: str = ""
    rootless: bool | None = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the agent can reach a replica's container port from the host (for http/tcp probes)."""

    host: str
    port: int


ProgressFn = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Owner:
    """Whose instances a runtime lists and touches: one node of one cluster.

    `adopt`: replica ids this agent's own local state knows. An instance made before instances carried a cluster
    label is this agent's only if it is one of those (its replica ids are random per coordinator, so another
    cluster's instance on the same host and node name is never among them)."""

    cluster: str
    node: str
    adopt: frozenset[str] = frozenset()

    def owns(self, labels: Mapping[str, str]) -> bool:
        if labels.get(LABEL_NODE) != self.node:
            return False
        cluster = labels.get(LABEL_CLUSTER)
        if cluster is None:
            return labels.get(LABEL_REPLICA) in self.adopt
        return cluster == self.cluster


def instance_labels(owner: Owner, spec: ReplicaSpec, generation: int, secrets: str = "") -> dict[str, str]:
    """The labels every instance of `spec` carries (user labels first, ours win)."""
    return {
        **({LABEL_SECRETS: secrets} if secrets else {}),
        **spec.labels,
        LABEL_CLUSTER: owner.cluster,
        LABEL_NODE: owner.node,
        LABEL_REPLICA: spec.replica_id,
        LABEL_WORKLOAD: spec.workload,
        LABEL_NAMESPACE: spec.namespace,
        LABEL_SPEC_HASH: spec.spec_hash,
        LABEL_GENERATION: str(generation),
    }


def instance_from_labels(
    instance_id: str, labels: Mapping[str, str], state: InstanceState, **kw: object
) -> Instance | None:
    """Build an Instance from labels; None when the labels are not ours (or are damaged)."""
    try:
        generation = int(labels.get(LABEL_GENERATION, "0"))
        return Instance(
            instance_id=instance_id,
            replica_id=labels[LABEL_REPLICA],
            workload=labels.get(LABEL_WORKLOAD, ""),
            namespace=labels.get(LABEL_NAMESPACE, "default"),
            spec_hash=labels.get(LABEL_SPEC_HASH, ""),
            generation=generation,
            secrets=labels.get(LABEL_SECRETS, ""),
            state=state,
            **kw,  # type: ignore[arg-type]
        )
    except (KeyError, ValueError):
        return None


class Runtime(Protocol):
    """A container engine or process supervisor. All methods may raise `edge_agent.errors.RuntimeError_`."""

    async def info(self) -> RuntimeInfo: ...

    async def list(self) -> list[Instance]:
        """Every instance of this agent (`Owner.owns`), running or not."""
        ...

    async def ensure_image(self, image: str, progress: ProgressFn | None = None) -> None:
        """Make `image` available locally (pull if missing). Raises ImageUnavailable while it cannot."""
        ...

    async def create(self, spec: ReplicaSpec, generation: int, secrets: Materialized | None = None) -> Instance:
        """Create (not start) an instance for `spec`. Raises SpecUnsupported if it cannot honour the spec.
        `secrets`: where the replica's secret files and env fragment are (edge_agent.secrets), to mount/source."""
        ...

    async def start(self, instance_id: str) -> Instance:
        """Start a created or exited instance (a restart keeps the instance id)."""
        ...

    async def stop(self, instance_id: str, timeout_s: float) -> None:
        """SIGTERM, then SIGKILL after `timeout_s`. Stopping a stopped instance is not an error."""
        ...

    async def remove(self, instance_id: str) -> None:
        """Remove a stopped instance and its scratch volumes. Removing a missing one is not an error."""
        ...

    async def logs(self, instance_id: str, tail: int) -> bytes: ...

    async def exec(self, instance_id: str, argv: Sequence[str], timeout_s: float) -> ExecResult: ...

    async def endpoint(self, instance_id: str, container_port: int,
                       protocol: PortProtocol = PortProtocol.TCP) -> Endpoint | None:
        """Host address for a container port of `protocol`, or None if the host cannot reach it (probe via exec
        then). A port published for TCP and UDP has a host port for each: they differ."""
        ...

    async def usage(self) -> dict[str, Usage]:
        """Current CPU/memory usage per instance id (missing entries: unknown)."""
        ...

    async def maintain(self) -> None:
        """Upkeep the agent runs every reconcile round (cheap when there is nothing to do), such as rotating
        the logs of running instances the runtime writes itself. Never raises."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class TtyRuntime(Protocol):
    """A runtime that can give a command a terminal in an instance (optional: one without it refuses `exec -it`)."""

    async def tty_command(self, instance_id: str, argv: Sequence[str], *, tty: bool, term: str) -> TtyCommand:
        """What to run for `argv` in the instance. Raises RuntimeError_ (InstanceNotFound, RuntimeFailed)."""
        ...

"""An in-memory runtime implementing the `Runtime` Protocol, for the pair harness and unit tests (STYLE §5:
fakes are maintained classes, not mocks). Operations take effect at once; time comes from the injected clock;
`crash()` and `fail_next()` inject faults."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace

from broker.wire import Protocol as PortProtocol
from broker.wire import ReplicaSpec
from edge_agent.errors import ImageUnavailable, InstanceNotFound, RuntimeFailed
from edge_agent.runtime.base import (
    Endpoint,
    ExecResult,
    Instance,
    InstanceState,
    Owner,
    ProgressFn,
    RuntimeInfo,
    TtyCommand,
    Usage,
    instance_from_labels,
    instance_labels,
)
from edge_agent.secret_layout import Materialized


class FakeRuntime:
    def __init__(self, *, node_id: str, clock: Callable[[], float], images: Sequence[str] = (),
                 cluster: str = "fake-cluster") -> None:
        self.node_id = node_id
        self.owner = Owner(cluster, node_id)
        self.clock = clock
        self.images = set(images)
        self.instances: dict[str, Instance] = {}
        self.secret_mounts: dict[str, Materialized] = {}  # instance -> the secrets it was created with
        self.logs_by_id: dict[str, bytes] = {}
        self.calls: list[tuple[str, str]] = []  # (operation, instance or image) in order
        self._next = 0
        self._fail: dict[str, str] = {}
        self.exec_results: dict[tuple[str, ...], ExecResult] = {}
        # exec -it runs the command for real, on the host, in this directory (None: the agent's): a terminal cannot
        # be faked usefully, and the session code under test is the agent's, not the runtime's
        self.tty_cwd: str | None = None
        self.maintained = 0  # rounds of upkeep the agent ran

    # ---- fault injection -----------------------------------------------------------------------------------

    def crash(self, instance_id: str, exit_code: int = 1, error: str = "") -> None:
        inst = self.instances[instance_id]
        self.instances[instance_id] = replace(inst, state=InstanceState.EXITED, exit_code=exit_code,
                                              finished_at=self.clock(), error=error)

    def fail_next(self, operation: str, message: str = "injected failure") -> None:
        self._fail[operation] = message

    def _maybe_fail(self, operation: str) -> None:
        message = self._fail.pop(operation, None)
        if message is not None:
            raise RuntimeFailed(f"{operation} failed", detail=message)

    def _get(self, instance_id: str) -> Instance:
        try:
            return self.instances[instance_id]
        except KeyError:
            raise InstanceNotFound(f"no instance {instance_id}") from None

    # ---- the Runtime Protocol ---------------------------------------------------------------------------

    async def info(self) -> RuntimeInfo:
        return RuntimeInfo(name="fake", version="0", rootless=True)

    async def list(self) -> list[Instance]:
        return list(self.instances.values())

    async def ensure_image(self, image: str, progress: ProgressFn | None = None) -> None:
        self.calls.append(("ensure_image", image))
        if image not in self.images:
            raise ImageUnavailable(f"image {image} not found")

    async def create(self, spec: ReplicaSpec, generation: int, secrets: Materialized | None = None) -> Instance:
        self._maybe_fail("create")
        self._next += 1
        iid = f"fake-{self._next}"
        labels = instance_labels(self.owner, spec, generation, secrets.versions if secrets else "")
        inst = instance_from_labels(iid, labels, InstanceState.CREATED)
        assert inst is not None
        self.instances[iid] = inst
        if secrets is not None:
            self.secret_mounts[iid] = secrets
        self.calls.append(("create", iid))
        return inst

    async def start(self, instance_id: str) -> Instance:
        self._maybe_fail("start")
        inst = replace(self._get(instance_id), state=InstanceState.RUNNING, started_at=self.clock(),
                       finished_at=None, exit_code=None, error="")
        self.instances[instance_id] = inst
        self.calls.append(("start", instance_id))
        return inst

    async def stop(self, instance_id: str, timeout_s: float) -> None:
        inst = self.instances.get(instance_id)
        self.calls.append(("stop", instance_id))
        if inst is not None and inst.state is InstanceState.RUNNING:
            self.instances[instance_id] = replace(inst, state=InstanceState.EXITED, exit_code=143,
                                                  finished_at=self.clock())

    async def remove(self, instance_id: str) -> None:
        self.calls.append(("remove", instance_id))
        self.instances.pop(instance_id, None)

    async def logs(self, instance_id: str, tail: int) -> bytes:
        self._get(instance_id)
        lines = self.logs_by_id.get(instance_id, b"").splitlines(keepends=True)
        return b"".join(lines[-tail:]) if tail > 0 else b""

    async def exec(self, instance_id: str, argv: Sequence[str], timeout_s: float) -> ExecResult:
        inst = self._get(instance_id)
        if inst.state is not InstanceState.RUNNING:
            raise RuntimeFailed("exec", detail=f"{instance_id} is not running")
        return self.exec_results.get(tuple(argv), ExecResult(0, b""))

    async def tty_command(self, instance_id: str, argv: Sequence[str], *, tty: bool, term: str) -> TtyCommand:
        inst = self._get(instance_id)
        if inst.state is not InstanceState.RUNNING:
            raise RuntimeFailed("exec", detail=f"{instance_id} is not running")
        self.calls.append(("tty", instance_id))
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.tty_cwd or "/", "TERM": term}
        return TtyCommand(argv=tuple(argv), cwd=self.tty_cwd, env=env)

    async def endpoint(self, instance_id: str, container_port: int,
                       protocol: PortProtocol = PortProtocol.TCP) -> Endpoint | None:
        return None

    async def usage(self) -> dict[str, Usage]:
        return {iid: Usage(cpu_percent=1.0, memory_bytes=1 << 20)
                for iid, inst in self.instances.items() if inst.state is InstanceState.RUNNING}

    async def maintain(self) -> None:
        self.maintained += 1

    async def close(self) -> None:
        return None

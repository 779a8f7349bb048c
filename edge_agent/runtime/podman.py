"""The Podman runtime: `Runtime` through podman-py against the Podman REST socket (an adapter, STYLE §1).

Every call is synchronous podman-py/requests work run in a thread (`asyncio.to_thread`); every podman-py,
requests, urllib3 or OS exception is converted at this boundary into `edge_agent.errors` types (STYLE §4):
transport failures -> RuntimeUnavailable, 404 -> InstanceNotFound (ImageUnavailable for images), anything
else -> RuntimeFailed with Podman's own message.

What to post is decided elsewhere: the container body by the pure `runtime.podman_spec`, the sandbox
(`ReplicaSpec.security`, already admitted by the coordinator's policy) by the pure `edge_agent.sandbox`, restarts
(restart policy is always "no" here) and pull retries (one pull per `ensure_image`) by the agent
(`edge_agent.images`). Capability facts are the one thing settled here: rootless Podman on cgroup v1 cannot apply
CPU/memory limits (it ignores them) nor report stats (it refuses), so limits are left out with one warning and
`usage()` returns nothing there; a Localhost seccomp profile must exist in the seccomp directory.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import requests
import urllib3
from podman import PodmanClient
from podman.errors import APIError

from broker.wire import Protocol as PortProtocol
from broker.wire import ReplicaSpec, SeccompType
from edge_agent.errors import (
    ImageUnavailable,
    InstanceNotFound,
    RuntimeError_,
    RuntimeFailed,
    RuntimeUnavailable,
    SpecUnsupported,
)
from edge_agent.runtime import podman_tty
from edge_agent.runtime.base import (
    LABEL_NODE,
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
    refused,
)
from edge_agent.runtime.podman_net import with_services
from edge_agent.runtime.podman_service import PodmanService, default_socket_path, socket_answers
from edge_agent.runtime.podman_spec import (
    DEFAULT_ULIMITS,
    ContainerSecurity,
    clamp_ulimits,
    container_name,
    container_spec,
    demux,
    image_argv_of,
    image_user_of,
    instance_state,
    security_fields,
    unix_time,
)
from edge_agent.sandbox import ContainerHost, decide, needs_image_user
from edge_agent.secret_layout import Materialized

log = logging.getLogger(__name__)
T = TypeVar("T")
Json = dict[str, Any]

EXEC_OUTPUT_MAX = 1024 * 1024  # what a CommandReply can carry
_JSON = {"content-type": "application/json"}


def default_seccomp_dir(environ: Mapping[str, str], euid: int, home: Path) -> Path:
    """`/etc/cloudless/seccomp` for root, else `$XDG_CONFIG_HOME/cloudless/seccomp` (~/.config by default)."""
    if euid == 0:
        return Path("/etc/cloudless/seccomp")
    return Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / "cloudless" / "seccomp"


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

def _own_ulimits() -> dict[str, tuple[int, int]]:
    """The agent's own open-file and process limits (a rootless container cannot be given more)."""
    import resource

    return {name: resource.getrlimit(which) for name, which in
            (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC))}


def published_endpoint(network: Mapping[str, Any], container_port: int, protocol: PortProtocol) -> Endpoint | None:
    """Where the host reaches `container_port`/`protocol` from an inspect's NetworkSettings (None: not published)."""
    for binding in (network.get("Ports") or {}).get(f"{container_port}/{protocol.value.lower()}") or ():
        if str(binding.get("HostPort", "")).isdigit() and int(binding["HostPort"]) > 0:
            host = binding.get("HostIp") or ""
            return Endpoint("127.0.0.1" if host in ("", "0.0.0.0", "::") else host, int(binding["HostPort"]))
    return None


class PodmanRuntime:
    """`Runtime` on Podman. Containers carry `base.instance_labels`; only this node's are ever listed."""

    def __init__(
        self,
        *,
        node_id: str,
        cluster: str,
        adopt: frozenset[str] = frozenset(),
        socket_path: Path | None = None,
        containers_conf: Path | None = None,
        start_service: bool = True,
        stop_timeout_default: float = 5.0,
        api_timeout_s: float = 30.0,
        log_max_bytes: int | None = 8 * 1024 * 1024,
        podman_binary: str = "podman",
        service_start_timeout_s: float = 20.0,
        seccomp_dir: Path | None = None,
        services: bool = False,
    ) -> None:
        self.node_id = node_id
        self.owner = Owner(cluster, node_id, adopt)
        # The only environment reads: Podman's own default socket location and the default seccomp directory
        # (Localhost profiles), when none is configured.
        self.socket_path = socket_path or default_socket_path(os.environ, os.geteuid())
        self.seccomp_dir = seccomp_dir or default_seccomp_dir(os.environ, os.geteuid(), Path.home())
        self.start_service = start_service
        self.stop_timeout_default = stop_timeout_default
        self.api_timeout_s = api_timeout_s
        self.log_max_bytes = log_max_bytes
        self.services = services  # containers resolve through the agent and publish their ports (podman_net)
        self._service = PodmanService(socket_path=self.socket_path, containers_conf=containers_conf,
                                      podman_binary=podman_binary, start_timeout_s=service_start_timeout_s)
        self._client = PodmanClient(base_url=f"unix://{self.socket_path}", timeout=api_timeout_s)
        self._ready = False
        self._connect_lock = asyncio.Lock()
        self._facts: Json | None = None  # from `podman info`: rootless, cgroup version
        self._warned: set[str] = set()

    # ---- plumbing ---------------------------------------------------------------------------------------

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
            if not self.owner.owns(attrs.get("Labels") or {}):
                continue  # another cluster's node of the same name on this Podman
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
        retrying after a failure, with back-off, is the agent's job (`edge_agent.images`)."""
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
        try:
            return await self._create(spec, generation, secrets)
        except SpecUnsupported as exc:  # what this runtime cannot honour: the node refuses the replica
            raise refused(exc) from exc

    async def _create(self, spec: ReplicaSpec, generation: int, secrets: Materialized | None) -> Instance:
        labels = instance_labels(self.owner, spec, generation, secrets.versions if secrets else "")
        limits = await self._limits_supported()
        if not limits and (spec.cpu_millis or spec.memory_bytes):
            self._warn_once("limits", "rootless Podman on cgroup v1 cannot apply CPU/memory limits: "
                            "containers run without them (use cgroup v2 or rootful Podman to enforce them)")
        image_argv: tuple[Sequence[str], Sequence[str]] = ((), ())
        if secrets is not None and secrets.env_dir is not None and not spec.command:
            image_argv = await self._call(f"inspect image {spec.image}",
                                          lambda c: image_argv_of(c.images.get(spec.image).attrs),
                                          missing=ImageUnavailable)
        name = container_name(self.owner.cluster, self.node_id, spec.replica_id)
        body = container_spec(spec, name=name, labels=labels,
                              stop_timeout_s=self.stop_timeout_default, limits=limits,
                              log_max_bytes=self.log_max_bytes, security=await self._sandbox(spec), secrets=secrets,
                              image_argv=image_argv, ulimits=clamp_ulimits(DEFAULT_ULIMITS, _own_ulimits()))
        if self.services:
            body = with_services(body, spec)

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
        decided = decide(sec, ContainerHost(str(self.seccomp_dir), seccomp=facts["seccomp"]), image_user=user)
        assert decided is not None  # sec is not None
        profile = decided.seccomp_profile
        if profile is not None and profile != "unconfined" and not await asyncio.to_thread(Path(profile).is_file):
            raise SpecUnsupported(f"security.seccompProfile: no profile {sec.seccomp_profile!r} in {self.seccomp_dir}")
        for what in decided.widened:
            log.warning("replica %s runs with %s (admitted by the policy)", spec.replica_id, what)
        return security_fields(decided)

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

    async def tty_command(self, instance_id: str, argv: Sequence[str], *, tty: bool, term: str) -> TtyCommand:
        """`podman exec -i [-t]` against this runtime's service socket (edge_agent.runtime.podman_tty)."""
        await self._connected()  # the service the command talks to is up
        return podman_tty.tty_command(instance_id, argv, tty=tty, term=term, socket_path=self.socket_path,
                                      containers_conf=self._service.containers_conf)

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

    async def endpoint(self, instance_id: str, container_port: int,
                       protocol: PortProtocol = PortProtocol.TCP) -> Endpoint | None:
        """The host address of a port published for `protocol` (53/tcp and 53/udp are published on different host
        ports), else the container's own address (rootful)."""
        attrs = await self._call(f"inspect {instance_id}", lambda c: c.containers.get(instance_id).attrs)
        network = attrs.get("NetworkSettings") or {}
        published = published_endpoint(network, container_port, protocol)
        if published is not None:
            return published
        if (await self._host_facts())["rootless"]:
            return None  # a rootless container's addresses live in its user's network namespace
        addresses = [network.get("IPAddress")] + [n.get("IPAddress") for n in (network.get("Networks") or {}).values()]
        ip = next((a for a in addresses if a), None)
        return Endpoint(ip, container_port) if ip else None

    async def netns_pid(self, instance_id: str) -> int | None:
        """The host pid of a running container's init process (its network namespace's holder), None when it does
        not run or has no namespace of its own (host network); for edge_agent.netns."""
        attrs = await self._call(f"inspect {instance_id}", lambda c: c.containers.get(instance_id).attrs)
        if str((attrs.get("HostConfig") or {}).get("NetworkMode", "")) == "host":
            return None  # the host's own namespace: nothing of the agent's may be bound there for it
        state = attrs.get("State") or {}
        pid = state.get("Pid")
        return pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 1 and state.get("Running") else None

    async def usage(self) -> dict[str, Usage]:
        """CPU % and memory per running instance; {} when Podman cannot tell (rootless on cgroup v1) or fails."""
        try:
            return await self._call("container stats", self._usage_sync)
        except RuntimeError_ as exc:
            self._warn_once("usage", "container usage unavailable: %s", exc)
            return {}

    def _usage_sync(self, client: PodmanClient) -> dict[str, Usage]:
        running = [c for c in client.containers.list(filters={"label": f"{LABEL_NODE}={self.node_id}",
                                                              "status": "running"})
                   if self.owner.owns(c.attrs.get("Labels") or {})]
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

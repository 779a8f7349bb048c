"""The process runtime: workloads as plain supervised processes, for hosts without containers (Termux).

Each instance is a directory under DATA_DIR/process/<instance-id>/ holding `meta.json` (labels, argv, env,
working dir, limits), `run.json` (pid, its start time, when it started/finished) and `exit` (the exit code,
written by the wrapper), plus `log` (stdout and stderr). The process runs in its own session under a tiny
`sh` wrapper that records the exit code, so it outlives an agent restart and the next agent re-adopts it from
the directory — the same model as Podman's conmon, with no extra daemon.

What it honours: command + args (required: there is no image to take a default from), env, working dir,
memory limit (RLIMIT_AS — an address-space cap, stricter than a container's RSS limit), open-file limit,
host ports equal to the container port (the process binds the host port itself). What it refuses
(`SpecUnsupported`, reported as the replica's error): port remapping and volumes. CPU limits are not
enforceable without cgroups; the process runs at lower priority (nice 10) when a CPU limit is set.

The sandbox (`ReplicaSpec.security`) is decided by the pure `edge_agent.sandbox` (the policy both runtimes
share) and honoured only as far as a plain process can be confined, never weaker: user/group (switched with
util-linux `setpriv` when the agent is root; otherwise only the agent's own ids), runAsNonRoot, no_new_privs
(prctl) and dropped capabilities (a non-root uid, no ambient capabilities, no_new_privs). It refuses a read-only
root, added capabilities, privileged and Localhost seccomp.
A plain process always shares the host's network, PID and IPC namespaces: hostNetwork/hostPID/hostIPC are
trivially true, and since the wire has no "isolated namespaces required" field, a spec that leaves them false
is accepted — this runtime never isolates namespaces. Its "RuntimeDefault" seccomp profile is no filter.

What keeps a workload from the agent's own files (its private key, state, other instances, other replicas'
secrets): as root, a workload with a non-root runAsUser runs as that user (the agent's files are root's); a
workload running as root is not separated. An unprivileged agent cannot switch users, so where the kernel has
Landlock every workload (and every exec in it) is confined to stay out of the agent's private directories but in
its own (`runtime.landlock`); without Landlock nothing separates them, and the node's facts say so.
A process that exits non-zero on its own reports its code and its log's last line as the instance's error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from secrets import token_hex
from typing import Any

from broker.wire import Protocol as PortProtocol
from broker.wire import ReplicaSpec
from edge_agent.atomic import atomic_write
from edge_agent.errors import InstanceNotFound, RuntimeFailed, SpecUnsupported
from edge_agent.runtime import landlock
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
    refused,
)
from edge_agent.runtime.process_confine import (
    ProcessSandbox,
    child_setup,
    confine,
    libc_prctl,
    primary_gid,
    process_sandbox,
    setpriv_argv,
)
from edge_agent.secret_layout import ENV_FILE, WRAPPER, Materialized
from edge_agent.secrets import secrets_tops

log = logging.getLogger(__name__)

# "$0" is the exit-code file, "$@" the workload's argv; the code is written atomically (tmp + mv).
_WRAPPER = '"$@"; code=$?; echo "$code" > "$0.tmp" && mv "$0.tmp" "$0"; exit "$code"'
LOG_ROTATE_BYTES = 4 * 1024 * 1024


def _check(spec: ReplicaSpec) -> None:
    if not spec.command and not spec.args:
        raise SpecUnsupported("the process runtime needs `command` (there is no image to provide a default)")
    for port in spec.ports:
        if port.host_port not in (0, port.container_port):
            raise SpecUnsupported(
                f"the process runtime cannot remap ports: hostPort {port.host_port} != containerPort "
                f"{port.container_port} (a process binds the host port itself)")
    if spec.volumes:
        raise SpecUnsupported("the process runtime cannot mount volumes; use the working directory instead")


def default_private(root: Path) -> tuple[Path, ...]:
    """What a confined workload must never read: the agent's data directory (its key, state, other instances), the
    secrets roots, and — when the agent lives inside a `cloudless up` data directory, next to the coordinator's CA key
    and the admin credentials — that whole directory, plus the admin CLI's config (its token)."""
    agent_dir = root.parent
    private = [agent_dir, *secrets_tops()]
    cluster_dir = agent_dir.parent
    if any((cluster_dir / part).exists() for part in ("coordinator", "credentials")):
        private.append(cluster_dir)
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "cloudless"
    private.append(config)
    return tuple(private)


class ProcessRuntime:
    def __init__(self, *, node_id: str, cluster: str, root: Path, clock: Callable[[], float] = time.time,
                 log_rotate_bytes: int = LOG_ROTATE_BYTES, adopt: frozenset[str] = frozenset(),
                 private: Sequence[Path] | None = None, landlock_abi: int | None = None) -> None:
        """`private`: the agent's directories a workload must not touch (default: the data directory, `root`'s
        parent, and the secrets root on the tmpfs); `landlock_abi`: the Landlock ABI to confine workloads with
        (default: the kernel's when the agent is not root — a root agent separates workloads by runAsUser)."""
        self.node_id = node_id
        self.owner = Owner(cluster, node_id, adopt)
        self.root = root
        self.log_rotate_bytes = log_rotate_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._ps: dict[str, Any] = {}  # psutil.Process per instance, for cpu_percent deltas
        self._sh = shutil.which("sh") or "/bin/sh"
        self._setpriv = shutil.which("setpriv")
        self._env = shutil.which("env") or "/usr/bin/env"
        self.private = tuple(private) if private is not None else default_private(root)
        self.landlock_abi = landlock_abi if landlock_abi is not None else 0 if os.geteuid() == 0 else landlock.abi()

    # ---- files -------------------------------------------------------------------------------------------

    def _dir(self, instance_id: str) -> Path:
        if "/" in instance_id or instance_id in ("", ".", ".."):
            raise InstanceNotFound(f"bad instance id {instance_id!r}")
        return self.root / instance_id

    @staticmethod
    def _read_json(path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    @staticmethod
    def _write_json(path: Path, data: dict[str, Any]) -> None:
        atomic_write(path, json.dumps(data).encode(), 0o644, sync=False)  # rewritten on every start: no fsync

    def _meta(self, instance_id: str) -> dict[str, Any]:
        meta = self._read_json(self._dir(instance_id) / "meta.json")
        if not meta:
            raise InstanceNotFound(f"no process instance {instance_id}")
        return meta

    # ---- state ---------------------------------------------------------------------------------------------

    def _alive(self, instance_id: str, run: dict[str, Any]) -> bool:
        child = self._children.get(instance_id)
        if child is not None:
            return child.poll() is None  # also reaps our own exited children
        pid = run.get("pid")
        if not isinstance(pid, int):
            return False
        try:
            import psutil

            proc = psutil.Process(pid)
            same = abs(proc.create_time() - float(run.get("pid_created", 0))) < 1.0
            return bool(same and proc.status() != psutil.STATUS_ZOMBIE)
        except Exception:  # NoSuchProcess, AccessDenied, no psutil: treat as gone
            return False

    def _landlock(self, d: Path, meta: dict[str, Any]) -> int | None:
        """The Landlock ruleset (a fd to close after the spawn) that keeps this instance's processes out of the
        agent's private directories but in its own: read its instance directory, write `work` and `status`, read
        its own secret files. None when workloads are not confined with Landlock here."""
        if self.landlock_abi < 1:
            return None
        everything = landlock.rights(self.landlock_abi)
        private = list(self.private)
        own = [(d, landlock.READ), (d / "work", everything), (d / "status", everything)]
        if meta.get("secret_env_file"):
            replica = Path(meta["secret_env_file"]).parent.parent  # <top>/cluster-<id>/<node>/<replica>/env/env.sh
            private.append(replica.parent.parent.parent)
            own.append((replica, landlock.READ))
        try:
            return landlock.ruleset_fd(landlock.plan(private, own, everything=everything), self.landlock_abi)
        except OSError as exc:  # never start it unconfined
            raise RuntimeFailed(f"cannot confine {d.name}", detail=f"Landlock: {exc}") from exc

    def _instance(self, instance_id: str) -> Instance | None:
        d = self._dir(instance_id)
        meta = self._read_json(d / "meta.json")
        if not meta or not self.owner.owns(meta.get("labels", {})):
            return None
        run = self._read_json(d / "run.json")
        exit_code = _exit_code(d)
        state, error = InstanceState.CREATED, ""
        if run.get("pid") is not None:
            if exit_code is None and self._alive(instance_id, run):
                state = InstanceState.RUNNING
            else:
                state = InstanceState.EXITED
                exit_code = _exit_code(d)  # the wrapper may have written it just now
                if exit_code is None:
                    exit_code, error = 137, "process vanished without an exit code (killed)"
                elif exit_code != 0 and not run.get("stopped"):
                    error = _exit_error(exit_code, _tail(d / "log", 1))
                if run.get("finished_at") is None:
                    run["finished_at"] = self.clock()
                    self._write_json(d / "run.json", run)
        return instance_from_labels(
            instance_id, meta.get("labels", {}), state, exit_code=exit_code if state is InstanceState.EXITED else None,
            started_at=run.get("started_at"), finished_at=run.get("finished_at"), error=error,
        )

    # ---- the Runtime Protocol ---------------------------------------------------------------------------

    async def info(self) -> RuntimeInfo:
        return RuntimeInfo(name="process", version="1", rootless=os.geteuid() != 0)

    async def list(self) -> list[Instance]:
        out = []
        for d in sorted(self.root.iterdir()) if self.root.exists() else []:
            if d.is_dir():
                inst = self._instance(d.name)
                if inst is not None:
                    out.append(inst)
        return out

    async def ensure_image(self, image: str, progress: ProgressFn | None = None) -> None:
        return None  # no images: the command runs on the host

    def _sandbox(self, spec: ReplicaSpec) -> ProcessSandbox:
        box = process_sandbox(spec.security, agent_uid=os.geteuid(), agent_gid=os.getegid(),
                              primary_gid=primary_gid)
        if box.switches and self._setpriv is None:
            raise SpecUnsupported("security.runAsUser: switching users needs `setpriv` (util-linux), not found")
        if (box.no_new_privs or box.clear_ambient) and libc_prctl() is None:
            raise SpecUnsupported("security.allowPrivilegeEscalation: cannot call prctl() on this host")
        return box

    async def create(self, spec: ReplicaSpec, generation: int, secrets: Materialized | None = None) -> Instance:
        try:
            return await self._create(spec, generation, secrets)
        except SpecUnsupported as exc:  # what this runtime cannot honour: the node refuses the replica
            raise refused(exc) from exc

    async def _create(self, spec: ReplicaSpec, generation: int, secrets: Materialized | None) -> Instance:
        _check(spec)
        if spec.secret_volumes:
            raise SpecUnsupported("the process runtime cannot mount secretVolumes (there is no mount namespace); "
                                  "take the secret in env (env[].valueFrom.secretKeyRef) instead")
        box = self._sandbox(spec)
        instance_id = f"p-{spec.replica_id}-{token_hex(3)}"
        d = self._dir(instance_id)
        (d / "work").mkdir(parents=True)
        if box.switches:  # its HOME and default cwd; the instance dir itself stays the agent's
            os.chown(d / "work", -1 if box.uid is None else box.uid, -1 if box.gid is None else box.gid)
        meta = {
            "labels": instance_labels(self.owner, spec, generation, secrets.versions if secrets else ""),
            # a path on a tmpfs, never the values (edge_agent.secrets): sourced right before the workload's exec
            "secret_env_file": str(secrets.env_dir / ENV_FILE) if secrets and secrets.env_dir else "",
            "argv": [*spec.command, *spec.args],
            "env": dict(spec.env),
            "working_dir": spec.working_dir,
            "memory_bytes": spec.memory_bytes,
            "cpu_millis": spec.cpu_millis,
            "sandbox": asdict(box),
            "created_at": self.clock(),
        }
        self._write_json(d / "meta.json", meta)
        inst = self._instance(instance_id)
        assert inst is not None
        return inst

    async def start(self, instance_id: str) -> Instance:
        meta = self._meta(instance_id)
        d = self._dir(instance_id)
        if (inst := self._instance(instance_id)) is not None and inst.state is InstanceState.RUNNING:
            return inst
        for old in (d / "exit", d / "status" / "exit"):
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
        (d / "status").mkdir(exist_ok=True)  # the wrapper's exit code: the one place in d a confined process writes
        logf = d / "log"
        with contextlib.suppress(OSError):
            if logf.stat().st_size > self.log_rotate_bytes:
                logf.replace(d / "log.1")  # nothing writes to it now
        cwd = meta.get("working_dir") or str(d / "work")
        # The wrapper (and setpriv, as root) run with a fixed minimal environment; the workload's own variables
        # are applied by `env -i` at its final exec, so e.g. LD_PRELOAD from a spec never reaches a root process.
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(d / "work")}
        workload_env = [f"{k}={v}" for k, v in {**base, **meta.get("env", {})}.items()]
        box = ProcessSandbox(**meta.get("sandbox") or {})
        limits = child_setup(int(meta.get("memory_bytes") or 0), int(meta.get("cpu_millis") or 0), box)
        if box.switches and self._setpriv is None:
            raise RuntimeFailed(f"cannot start {instance_id}", detail="setpriv (util-linux) is not installed")
        # The wrapper stays the agent's (it records the exit code in the agent's directory); setpriv switches
        # ids for the workload alone, so a workload running as another uid cannot rewrite meta.json.
        command = list(meta["argv"])
        if meta.get("secret_env_file"):
            workload_env.append(f"CLOUDLESS_SECRET_ENV={meta['secret_env_file']}")
            command = [self._sh, "-c", WRAPPER, "cloudless-secret-env", *command]
        argv = [*setpriv_argv(self._setpriv or "setpriv", box), self._env, "-i", *workload_env, *command]
        ruleset = self._landlock(d, meta)
        lock = landlock.restrict_self(ruleset) if ruleset is not None else None
        try:
            child = _spawn([self._sh, "-c", _WRAPPER, str(d / "status" / "exit"), *argv], cwd=cwd, env=base,
                           log=logf, limits=_then(limits, lock), what=instance_id)
        finally:
            if ruleset is not None:
                os.close(ruleset)
        self._children[instance_id] = child
        self._ps.pop(instance_id, None)
        self._write_json(d / "run.json", {"pid": child.pid, "pid_created": _create_time(child.pid),
                                          "started_at": self.clock(), "finished_at": None})
        inst = self._instance(instance_id)
        assert inst is not None
        return inst

    async def stop(self, instance_id: str, timeout_s: float) -> None:
        d = self._dir(instance_id)
        run = self._read_json(d / "run.json")
        if not run.get("pid") or not self._alive(instance_id, run):
            return
        pgid = int(run["pid"])
        _killpg(pgid, signal.SIGTERM)

        def running() -> bool:
            # the wrapper shell dies at once on SIGTERM; the workload (same process group) may not
            return self._alive(instance_id, run) or _group_alive(pgid)

        deadline = time.monotonic() + max(0.0, timeout_s)
        while time.monotonic() < deadline and running():  # noqa: ASYNC110 - polling a process group
            await asyncio.sleep(0.05)
        killed = running()
        if killed:
            _killpg(pgid, signal.SIGKILL)
            for _ in range(100):
                if not running():
                    break
                await asyncio.sleep(0.02)
        if _exit_code(d) is None:  # the wrapper died with its child: record how it ended
            (d / "status").mkdir(exist_ok=True)
            (d / "status" / "exit").write_text("137\n" if killed else "143\n")
        run["finished_at"] = self.clock()
        run["stopped"] = True  # the agent ended it: its exit code is no failure of the workload's own
        self._write_json(d / "run.json", run)

    async def remove(self, instance_id: str) -> None:
        d = self._dir(instance_id)
        if not d.exists():
            return
        await self.stop(instance_id, 1.0)
        self._children.pop(instance_id, None)
        self._ps.pop(instance_id, None)
        shutil.rmtree(d, ignore_errors=True)

    async def logs(self, instance_id: str, tail: int) -> bytes:
        self._meta(instance_id)
        d = self._dir(instance_id)
        recent = _tail(d / "log", tail)
        missing = tail - recent.count(b"\n")  # just rotated: the rest of the tail is in log.1
        return (_tail(d / "log.1", missing) if missing > 0 else b"") + recent

    def _exec_setup(self, instance_id: str, argv: Sequence[str]) -> TtyCommand:
        """How a command runs in an instance, as the workload does: its working dir and env, same ids, flags and
        Landlock ruleset (whose fd the caller closes with `after_spawn` once the child runs)."""
        meta = self._meta(instance_id)
        if not argv:
            raise RuntimeFailed("exec", detail="empty command")
        d = self._dir(instance_id)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(d / "work"), **meta.get("env", {})}
        box = ProcessSandbox(**meta.get("sandbox") or {})
        ruleset = self._landlock(d, meta)
        flags = confine(box) if box.no_new_privs or box.clear_ambient else None
        return TtyCommand(argv=tuple(argv), cwd=meta.get("working_dir") or str(d / "work"), env=env,
                          user=box.uid, group=box.gid,
                          preexec=_then(flags, landlock.restrict_self(ruleset) if ruleset is not None else None),
                          after_spawn=(lambda: os.close(ruleset)) if ruleset is not None else None)

    async def tty_command(self, instance_id: str, argv: Sequence[str], *, tty: bool, term: str) -> TtyCommand:
        cmd = self._exec_setup(instance_id, argv)
        return replace(cmd, env={**(cmd.env or {}), "TERM": term}) if tty else cmd

    async def exec(self, instance_id: str, argv: Sequence[str], timeout_s: float) -> ExecResult:
        cmd = self._exec_setup(instance_id, argv)
        switches = cmd.user is not None or cmd.group is not None
        ids: dict[str, Any] = {"user": cmd.user, "group": cmd.group, "extra_groups": []} if switches else {}
        try:
            proc = await asyncio.create_subprocess_exec(  # runs as the workload does: same ids, flags, Landlock
                *cmd.argv, cwd=cmd.cwd, env=cmd.env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=cmd.preexec, **ids)
        except (OSError, subprocess.SubprocessError) as exc:
            raise RuntimeFailed(f"exec in {instance_id}", detail=str(exc)) from exc
        finally:
            if cmd.after_spawn is not None:
                cmd.after_spawn()
        try:
            async with asyncio.timeout(timeout_s):
                out, _ = await proc.communicate()
        except TimeoutError:
            _killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise RuntimeFailed(f"exec in {instance_id}", detail=f"timed out after {timeout_s}s") from None
        return ExecResult(proc.returncode if proc.returncode is not None else -1, out[-1024 * 1024:])

    async def endpoint(self, instance_id: str, container_port: int,
                       protocol: PortProtocol = PortProtocol.TCP) -> Endpoint | None:
        return Endpoint("127.0.0.1", container_port)

    async def usage(self) -> dict[str, Usage]:
        out: dict[str, Usage] = {}
        try:
            import psutil
        except ImportError:
            return out
        for inst in await self.list():
            if inst.state is not InstanceState.RUNNING:
                continue
            run = self._read_json(self._dir(inst.instance_id) / "run.json")
            try:
                proc = self._ps.get(inst.instance_id)
                if proc is None or proc.pid != run.get("pid"):
                    proc = self._ps[inst.instance_id] = psutil.Process(int(run["pid"]))
                procs = [proc, *proc.children(recursive=True)]
                rss = sum(p.memory_info().rss for p in procs)
                out[inst.instance_id] = Usage(cpu_percent=proc.cpu_percent(interval=None), memory_bytes=rss)
            except Exception:  # noqa: S112 - gone, or /proc unreadable (Android): leave it out
                continue
        return out

    async def maintain(self) -> None:
        """Rotate every instance's log past `log_rotate_bytes`: its last `log_rotate_bytes` are copied to log.1,
        then it is truncated. The process keeps its file open in append mode, so its next write lands at the start
        of the emptied file; what it writes between the copy and the truncation is lost, as with logrotate's
        copytruncate. When the copy fails (a full disk) the log is truncated all the same: old lines are worth
        less than the space a workload needs."""
        try:
            dirs = sorted(d for d in self.root.iterdir() if d.is_dir())
        except OSError as exc:
            log.warning("cannot list %s for log rotation: %s", self.root, exc)
            return
        for d in dirs:
            logf = d / "log"
            try:
                if logf.stat().st_size <= self.log_rotate_bytes:
                    continue
                await asyncio.to_thread(_copy_truncate, logf, d / "log.1", self.log_rotate_bytes)
            except FileNotFoundError:
                continue  # created, never started: no log yet
            except OSError as exc:
                log.warning("cannot rotate %s: %s", logf, exc)

    async def close(self) -> None:
        self._children.clear()  # the processes keep running: they belong to the node, not to this agent run


def _spawn(argv: list[str], *, cwd: str, env: dict[str, str], log: Path, limits: Callable[[], None] | None,
           what: str) -> subprocess.Popen[bytes]:
    try:
        with open(log, "ab") as out:
            return subprocess.Popen(
                argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=limits,  # noqa: PLW1509 - setrlimit, nice, prctl, Landlock
            )
    except (OSError, subprocess.SubprocessError) as exc:  # SubprocessError: preexec_fn failed (prctl)
        raise RuntimeFailed(f"cannot start {what}", detail=str(exc)) from exc


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _create_time(pid: int) -> float:
    try:
        import psutil

        return float(psutil.Process(pid).create_time())
    except Exception:
        return 0.0


def _then(first: Callable[[], None] | None, second: Callable[[], None] | None) -> Callable[[], None] | None:
    """Two preexec steps in order (either may be None)."""
    if first is None or second is None:
        return first or second

    def both() -> None:
        first()
        second()

    return both


def _exit_code(d: Path) -> int | None:
    """What the wrapper recorded: `status/exit`, or `exit` for an instance started by an older agent."""
    code = _read_int(d / "status" / "exit")
    return code if code is not None else _read_int(d / "exit")


def _exit_error(code: int, last: bytes) -> str:
    """Why a process ended on its own with a non-zero code: the code and its log's last line (what a shell or the
    workload itself said last), so a crash loop never reports an empty message."""
    line = last.decode(errors="replace").strip()[-512:]
    return f"exited with code {code}: {line}" if line else f"exited with code {code}"


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _copy_truncate(path: Path, rotated: Path, keep: int) -> None:
    """The last `keep` bytes of `path` into `rotated` (through a temporary file), then `path` emptied — emptied
    even when the copy fails, the partial copy removed."""
    tmp = rotated.with_name(rotated.name + ".tmp")
    try:
        with open(path, "rb") as src, open(tmp, "wb") as dst:
            src.seek(max(0, os.fstat(src.fileno()).st_size - keep))
            shutil.copyfileobj(src, dst, 1024 * 1024)
        tmp.replace(rotated)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        os.truncate(path, 0)
        raise
    os.truncate(path, 0)


def _tail(path: Path, lines: int) -> bytes:
    if lines <= 0:
        return b""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            chunk = min(size, max(4096, lines * 256))
            while True:
                f.seek(size - chunk)
                data = f.read(chunk)
                if data.count(b"\n") > lines or chunk >= size:
                    break
                chunk = min(size, chunk * 2)
    except FileNotFoundError:
        return b""
    return b"".join(data.splitlines(keepends=True)[-lines:])

"""Sockets bound inside a running container's network namespace, served by the agent's own event loop (adapter).

A socket keeps the network namespace it was created in. So the agent never enters a container's namespace itself:
a one-shot helper (`edge_agent/netns_bind.py`, stdlib only) is started *inside* it with `nsenter`, binds the
requested (ip, port, tcp|udp) list there and passes the file descriptors back over a unix socketpair with
SCM_RIGHTS (`socket.send_fds`/`recv_fds`), then exits. The agent serves those sockets like any other: a workload
connecting to 127.0.0.1:53 or to a service address from 127/8 inside its container reaches the agent.

How the helper gets into the namespace (checked on Podman 4.3, rootful and rootless):
- agent is root: `nsenter --target PID --net` (CAP_SYS_ADMIN in the initial user namespace covers every netns);
- agent is not root (rootless Podman: this user owns the containers' user namespace):
  `nsenter --target PID --user --net --preserve-credentials` — setns into a user namespace we own gives us its
  capabilities, among them CAP_NET_BIND_SERVICE for :53 in the netns it owns; if that fails,
  `podman unshare nsenter --target PID --net` (Podman's own way into its user namespace).
PID is the container's init process as the host sees it (`podman inspect` State.Pid).

Every failure is a value: `bind_in_netns` returns one entry per request, a socket or the reason it is missing; the
helper runs within a bounded time and is killed past it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

HELPER = Path(__file__).with_name("netns_bind.py")
MAX_BINDS = 64  # per helper run (netns_bind.MAX_BINDS); longer lists are split into several runs
TIMEOUT_S = 10.0
REPLY_MAX = 64 * 1024

Proto = Literal["tcp", "udp"]
Bound = socket.socket | str  # a socket bound in the namespace, or why it is not


@dataclass(frozen=True, slots=True)
class BindSpec:
    ip: str
    port: int
    proto: Proto


def check(spec: BindSpec) -> str | None:
    """Why `spec` is not a bind request we send to a helper (None: it is)."""
    try:
        ipaddress.ip_address(spec.ip)
    except ValueError:
        return f"ip: not an IP address: {spec.ip[:64]!r}"
    if isinstance(spec.port, bool) or not isinstance(spec.port, int) or not 1 <= spec.port <= 65535:
        return f"port: expected 1-65535, got {spec.port!r}"
    if spec.proto not in ("tcp", "udp"):
        return f"proto: expected tcp or udp, got {spec.proto!r}"
    return None


def entry_commands(pid: int, *, as_root: bool, podman: str = "podman") -> list[list[str]]:
    """The ways into `pid`'s network namespace to try, in order (module docstring)."""
    if as_root:
        return [["nsenter", f"--target={pid}", "--net"]]
    return [["nsenter", f"--target={pid}", "--user", "--net", "--preserve-credentials"],
            [podman, "unshare", "nsenter", f"--target={pid}", "--net"]]


async def bind_in_netns(pid: int, specs: Sequence[BindSpec], *, as_root: bool | None = None,
                        timeout_s: float = TIMEOUT_S, python: str = sys.executable,
                        podman: str = "podman") -> list[Bound]:
    """Bind `specs` inside the network namespace of process `pid`; one result per spec, in order."""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 1:
        return [f"pid: expected a container's process id, got {pid!r}"] * len(specs)
    results: list[Bound] = []
    for start in range(0, len(specs), MAX_BINDS):
        chunk = list(specs[start:start + MAX_BINDS])
        results += await _bind_chunk(pid, chunk, as_root=os.geteuid() == 0 if as_root is None else as_root,
                                     timeout_s=timeout_s, python=python, podman=podman)
    return results


async def _bind_chunk(pid: int, specs: list[BindSpec], *, as_root: bool, timeout_s: float, python: str,
                      podman: str) -> list[Bound]:
    problems = [check(s) for s in specs]
    valid = [s for s, p in zip(specs, problems, strict=True) if p is None]
    got: list[Bound] = []
    if valid:
        why = ""
        for entry in entry_commands(pid, as_root=as_root, podman=podman):
            answer = await _run_helper(entry, valid, timeout_s=timeout_s, python=python)
            if not isinstance(answer, str):
                got = answer
                break
            why = f"{why}; {answer}" if why else answer
            log.debug("netns: %s into pid %d failed: %s", entry[0], pid, answer)
        else:
            got = [f"no way into the network namespace of pid {pid}: {why}"] * len(valid)
    out: list[Bound] = []
    it = iter(got)
    for problem in problems:
        out.append(problem if problem is not None else next(it))
    return out


async def _run_helper(entry: list[str], specs: list[BindSpec], *, timeout_s: float,
                      python: str) -> list[Bound] | str:
    """Run the helper through `entry`; its sockets, or why the whole run failed."""
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    request = json.dumps({"binds": [{"ip": s.ip, "port": s.port, "proto": s.proto} for s in specs]}).encode()
    argv = [*entry, "--", python, "-I", "-S", str(HELPER), str(theirs.fileno())]
    try:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, pass_fds=(theirs.fileno(),), cwd="/", start_new_session=True)
        except OSError as exc:
            return f"{entry[0]}: cannot run: {exc.strerror or exc}"
        finally:
            theirs.close()
        try:
            async with asyncio.timeout(timeout_s):
                _, err = await proc.communicate(request)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # its own group: nsenter/podman unshare and the helper alike
            await proc.wait()
            return f"{entry[0]}: no answer within {timeout_s:g}s"
        return _read_reply(mine, specs, proc.returncode, err)
    finally:
        mine.close()


def _read_reply(channel: socket.socket, specs: list[BindSpec], returncode: int | None,
                err: bytes) -> list[Bound] | str:
    """The helper's reply, already queued on `channel` (the helper sends it before it exits)."""
    stderr = err.decode(errors="replace").strip().splitlines()
    said = stderr[-1][:300] if stderr else f"exit status {returncode}"
    try:
        data, fds, _flags, _addr = socket.recv_fds(channel, REPLY_MAX, MAX_BINDS, socket.MSG_DONTWAIT)
    except OSError:  # BlockingIOError included: nothing queued
        return said
    if not data and not fds:  # the helper closed its end without a reply
        return said
    sockets = [socket.socket(fileno=fd) for fd in fds]  # owned from here: closed on any error below
    try:
        reply = json.loads(data)
        if "error" in reply:
            raise ValueError(str(reply["error"])[:300])
        ok, errors = reply["ok"], reply["errors"]
        if len(ok) != len(specs) or len(errors) != len(specs) or sum(1 for o in ok if o is True) != len(sockets):
            raise ValueError(f"{len(ok)} results and {len(sockets)} sockets for {len(specs)} requests")
    except (ValueError, KeyError, TypeError) as exc:
        for s in sockets:
            s.close()
        return f"bad reply from the helper: {exc}"
    it = iter(sockets)
    out: list[Bound] = []
    for spec, good, why in zip(specs, ok, errors, strict=True):
        if good is not True:
            out.append(str(why)[:300] or "not bound")
            continue
        sock = next(it)
        if not _matches(sock, spec):
            sock.close()
            out.append(f"the helper passed a socket that is not {spec.proto} {spec.ip}:{spec.port}")
            continue
        out.append(sock)
    return out


def _matches(sock: socket.socket, spec: BindSpec) -> bool:
    """The socket we were handed is the one we asked for (type and address): never serve a surprise."""
    kind = socket.SOCK_STREAM if spec.proto == "tcp" else socket.SOCK_DGRAM
    try:
        host, port = sock.getsockname()[:2]
        return bool(sock.type == kind and port == spec.port
                    and ipaddress.ip_address(host) == ipaddress.ip_address(spec.ip))
    except (OSError, ValueError):
        return False

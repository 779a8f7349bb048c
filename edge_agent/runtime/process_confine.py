"""How the process runtime confines a process (adapter): the sandbox decision (`edge_agent.sandbox`) mapped onto
a plain process's mechanisms — ids switched with util-linux `setpriv` right before the workload's exec (root
agent only), and, between fork and exec, resource limits (open files, address space, nice) and the prctl flags
no_new_privs and "clear ambient capabilities", which setpriv and the wrapper's exec inherit.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import resource
from collections.abc import Callable
from dataclasses import dataclass

from broker.wire import Security
from edge_agent.sandbox import ProcessHost, decide

NOFILE_LIMIT = 1024
PR_SET_NO_NEW_PRIVS = 38  # <linux/prctl.h>
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4


@dataclass(frozen=True, slots=True)
class ProcessSandbox:
    """How one process is confined: the uid/gid it switches to (None: the agent's own), no_new_privs, and
    whether its ambient capabilities are cleared. Stored in meta.json so a restart confines it the same way."""

    uid: int | None = None
    gid: int | None = None
    no_new_privs: bool = False
    clear_ambient: bool = False

    @property
    def switches(self) -> bool:
        return self.uid is not None or self.gid is not None


def process_sandbox(security: Security | None, *, agent_uid: int, agent_gid: int,
                    primary_gid: Callable[[int], int | None]) -> ProcessSandbox:
    """`security` decided for a plain process (`edge_agent.sandbox.decide`, which documents each field) and
    mapped onto ids and flags, or SpecUnsupported naming the first field it cannot honour. `primary_gid(uid)`
    is the host's passwd group of a uid (None: no entry). Dropped capabilities are honoured by running as a
    non-root uid with ambient capabilities cleared and no_new_privs."""
    box = decide(security, ProcessHost(agent_uid, agent_gid, primary_gid))
    if box is None:
        return ProcessSandbox()
    return ProcessSandbox(box.uid, box.gid, no_new_privs=box.no_new_privs, clear_ambient=bool(box.cap_drop))


def primary_gid(uid: int) -> int | None:
    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        return None


def setpriv_argv(setpriv: str, box: ProcessSandbox) -> list[str]:
    """The `setpriv` prefix that switches ids right before the workload's exec (util-linux; root only)."""
    if not box.switches:
        return []
    ids = [f"--reuid={box.uid}"] if box.uid is not None else []
    ids += [f"--regid={box.gid}"] if box.gid is not None else []
    return [setpriv, *ids, "--clear-groups", "--"]


def child_setup(memory_bytes: int, cpu_millis: int, box: ProcessSandbox) -> Callable[[], None]:
    flags = confine(box)

    def apply() -> None:  # runs in the child between fork and exec
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE_LIMIT, NOFILE_LIMIT))
        if memory_bytes > 0:
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        if 0 < cpu_millis < 1000 * (os.cpu_count() or 1):
            os.nice(10)
        flags()

    return apply


def libc_prctl() -> Callable[..., int] | None:
    """libc's prctl(2), or None where ctypes cannot reach libc."""
    try:
        fn: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return fn


def confine(box: ProcessSandbox) -> Callable[[], None]:
    """A preexec step applying `box`'s flags; they are inherited through setpriv and the wrapper's exec."""
    call = libc_prctl() if box.no_new_privs or box.clear_ambient else None  # looked up before the fork
    zero = ctypes.c_ulong(0)

    def apply() -> None:
        if not (box.no_new_privs or box.clear_ambient):
            return
        if call is None:  # create() refuses such a spec; never start one unconfined
            raise OSError("prctl() is not available")
        if box.clear_ambient:  # fails (EINVAL) only before Linux 4.3, which has no ambient capabilities
            call(PR_CAP_AMBIENT, ctypes.c_ulong(PR_CAP_AMBIENT_CLEAR_ALL), zero, zero, zero)
        if box.no_new_privs and call(PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), zero, zero, zero) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")

    return apply

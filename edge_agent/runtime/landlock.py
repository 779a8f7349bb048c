"""Landlock for the process runtime (adapter: syscalls through ctypes): keep a workload that runs as the agent's
own user out of the agent's private files — its data directory (the node's private key, its state, the other
instances' directories) and the secrets root on the tmpfs — except its own instance and secret directories.

Landlock (Linux 5.13+) is unprivileged and allow-list based: a restricted process may only touch paths beneath a
rule, and a rule covers everything beneath it. So the plan (`plan`) grants every right on each sibling of every
directory on the way down to a private path, only directory listing on those directories themselves (names,
never contents), and the workload's own directories on top. What the workload may do elsewhere is unchanged;
what is created later directly in one of those directories (e.g. a new entry in /dev/shm when the secrets root is
there) is out of its reach. The parent builds the ruleset (`ruleset_fd`); the child, between fork and exec, sets
no_new_privs (Landlock requires it of an unprivileged process) and restricts itself (`restrict_self`), so the
wrapper, env and the workload's exec all run restricted. With ABI 6 (Linux 6.12) signals are scoped too: the
workload cannot signal the agent. The restriction is inherited by every descendant and cannot be lifted.
"""

from __future__ import annotations

import ctypes
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

# <linux/landlock.h>; the syscall numbers are the same on every architecture (added after the unification)
SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446
CREATE_RULESET_VERSION = 1
RULE_PATH_BENEATH = 1
SCOPE_SIGNAL = 1 << 1
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV  # the only rights a rule on a file may hold
READ = READ_FILE | READ_DIR
PR_SET_NO_NEW_PRIVS = 38


def rights(abi: int) -> int:
    """Every filesystem right the kernel's Landlock ABI knows (13 bits in ABI 1, + REFER, TRUNCATE, IOCTL_DEV)."""
    handled = (1 << 13) - 1
    if abi >= 2:
        handled |= REFER
    if abi >= 3:
        handled |= TRUNCATE
    if abi >= 5:
        handled |= IOCTL_DEV
    return handled


class _RulesetAttr(ctypes.Structure):
    _fields_ = (("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64))


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


def _syscall() -> Callable[..., int] | None:
    try:
        fn: Callable[..., int] = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None
    return fn


def abi() -> int:
    """The kernel's Landlock ABI version; 0 when it has none (too old, disabled at boot, or not Linux)."""
    call = _syscall()
    if call is None:
        return 0
    version = call(ctypes.c_long(SYS_CREATE_RULESET), None, ctypes.c_size_t(0),
                   ctypes.c_uint32(CREATE_RULESET_VERSION))
    return max(0, int(version))


@dataclass(frozen=True, slots=True)
class Rule:
    path: str
    access: int  # the rights beneath `path` (cut to FILE_RIGHTS for a file)


def plan(private: Iterable[Path], own: Sequence[tuple[Path, int]], *, everything: int,
         listdir: Callable[[str], list[str]] = os.listdir) -> tuple[Rule, ...]:
    """The rules that keep `private` directories out of reach and grant the `own` (path, rights) on top:
    `everything` on each sibling along the way, READ_DIR on the directories on the way."""
    denied = sorted({os.path.realpath(p) for p in private} - {"/"})
    denied = [p for p in denied if not any(p.startswith(q.rstrip("/") + "/") for q in denied if q != p)]
    along = {"/"}
    for p in denied:
        parent = os.path.dirname(p)
        while parent not in along:
            along.add(parent)
            parent = os.path.dirname(parent)
    rules = []
    for d in sorted(along):
        rules.append(Rule(d, READ_DIR))
        try:
            names = listdir(d)
        except OSError:
            continue
        for name in sorted(names):
            p = os.path.join(d, name)
            if p not in along and p not in denied:
                rules.append(Rule(p, everything))
    rules += [Rule(os.path.realpath(p), access & everything) for p, access in own]
    return tuple(rules)


def ruleset_fd(rules: Sequence[Rule], version: int) -> int:
    """A Landlock ruleset (a close-on-exec fd the caller closes) holding `rules`; raises OSError."""
    call = _syscall()
    if call is None or version < 1:
        raise OSError("Landlock is not available")
    attr = _RulesetAttr(rights(version), 0, SCOPE_SIGNAL if version >= 6 else 0)
    size = ctypes.sizeof(ctypes.c_uint64) * (3 if version >= 6 else 2 if version >= 4 else 1)
    fd = call(ctypes.c_long(SYS_CREATE_RULESET), ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        for rule in rules:
            _add(call, fd, rule)
    except BaseException:
        os.close(fd)
        raise
    return int(fd)


def _add(call: Callable[..., int], fd: int, rule: Rule) -> None:
    try:
        target = os.open(rule.path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return  # gone since it was listed: nothing to grant
    try:
        mode = os.fstat(target).st_mode
        if stat.S_ISLNK(mode):
            return  # a link is followed at use and its target checked; never grant through one
        access = rule.access if stat.S_ISDIR(mode) else rule.access & FILE_RIGHTS
        if not access:
            return
        beneath = _PathBeneath(access, target)
        if call(ctypes.c_long(SYS_ADD_RULE), ctypes.c_int(fd), ctypes.c_int(RULE_PATH_BENEATH),
                ctypes.byref(beneath), ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule({rule.path}) failed")
    finally:
        os.close(target)


def restrict_self(fd: int) -> Callable[[], None]:
    """A preexec step: no_new_privs, then restrict the calling process (and all it execs) to ruleset `fd`."""
    lib = ctypes.CDLL(None, use_errno=True)  # looked up before the fork
    call, prctl = lib.syscall, lib.prctl
    zero = ctypes.c_ulong(0)

    def apply() -> None:
        if prctl(PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), zero, zero, zero) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if call(ctypes.c_long(SYS_RESTRICT_SELF), ctypes.c_int(fd), ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")

    return apply

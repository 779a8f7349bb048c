"""The sandbox policy (pure core): one `ReplicaSpec.security` → one `Sandbox` decision, for every runtime.

The security context was admitted by the coordinator's policy; this module decides how it is honoured on this
host, and each runtime only maps the decision onto its mechanism (Podman: SpecGenerator fields in
`runtime.podman_spec`; the process runtime: setpriv ids and prctl flags in `runtime.process`). The rule is the
wire's: never run weaker than asked. What the runtime's mechanism cannot enforce is refused with
`SpecUnsupported` naming the field (always starting "security.").

The runtime is described by a host value: `ContainerHost` (a container engine: own root filesystem, capability
sets, seccomp, namespaces; users map through the image) or `ProcessHost` (a plain process: it can only switch
ids when the agent is root, and shares the host's namespaces).

Field by field:
- runAsUser/runAsGroup → `user` "UID[:GID]" for containers (group alone: the image's user with that group; in
  rootless Podman uids map through the user's subuid range) or the (uid, gid) a process switches to (root agent
  only; runAsUser without runAsGroup takes the user's passwd group, since root's group 0 would be weaker).
- runAsNonRoot: refused when the workload would run as root — runAsUser 0; for containers with no runAsUser, an
  image user that is root ("", "0", "root") or a name (not verifiable numerically, as Kubernetes says); for a
  process, the agent's own uid 0.
- readOnlyRootFilesystem → a read-only root (plus a tmpfs /tmp, see the container body); refused for a process.
- capabilities: names with or without CAP_, and ALL, normalised; added ones need a container. A process drops
  capabilities by running as a non-root uid with ambient capabilities cleared and no_new_privs, so it needs a
  non-root uid and allowPrivilegeEscalation not true; a privileged container keeps every capability, so a drop
  with privileged is refused.
- allowPrivilegeEscalation false → no_new_privs; also by default (None) with runAsNonRoot (a non-root workload
  has no reason to regain privileges through setuid binaries) and, for a process, with dropped capabilities.
- seccomp RuntimeDefault → the runtime's default (a process: none); Localhost → `<seccomp dir>/<name>` (plain
  file names only; the runtime checks it exists), containers with kernel seccomp only; Unconfined.
- privileged, hostNetwork/hostPID/hostIPC → as admitted for containers, named in `widened` (the runtime logs
  them). A process refuses privileged; it always shares the host's namespaces, so those flags are trivially
  true and a spec that leaves them false is accepted (the wire has no "isolation required" field).
- AppArmor/SELinux: nothing is decided; the runtime's default applies.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from broker.wire import SeccompType, Security
from edge_agent.errors import SpecUnsupported

ROOT_USERS = ("", "0", "root")
_CAPABILITY = re.compile(r"ALL|CAP_[A-Z0-9_]+")
UNCONFINED = "unconfined"


@dataclass(frozen=True, slots=True)
class ContainerHost:
    """A container runtime's host: where Localhost seccomp profiles live and whether the engine can apply seccomp
    at all (Podman's `host.security.seccompEnabled`)."""

    seccomp_dir: str
    seccomp: bool = True


@dataclass(frozen=True, slots=True)
class ProcessHost:
    """The process runtime's host: the agent's own ids (an unprivileged agent can only keep them) and the host's
    passwd lookup of a uid's primary group (None: no entry)."""

    agent_uid: int
    agent_gid: int
    primary_gid: Callable[[int], int | None]


Host = ContainerHost | ProcessHost


@dataclass(frozen=True, slots=True)
class Sandbox:
    """How one replica is confined. `user` is the container user ("" = the image's); `uid`/`gid` the ids a
    process switches to (None: the agent's own); `seccomp_profile` is None for the runtime's default, else
    `UNCONFINED` or a profile path; `widened` names what goes beyond a normal container."""

    user: str = ""
    uid: int | None = None
    gid: int | None = None
    read_only_root: bool = False
    cap_drop: tuple[str, ...] = ()
    cap_add: tuple[str, ...] = ()
    no_new_privs: bool = False
    seccomp_profile: str | None = None
    privileged: bool = False
    host_network: bool = False
    host_pid: bool = False
    host_ipc: bool = False
    widened: tuple[str, ...] = ()


def needs_image_user(security: Security) -> bool:
    """Whether `decide` must know the image's configured user (`Config.User`) for a container."""
    return security.run_as_user is None and (security.run_as_non_root or security.run_as_group is not None)


def decide(security: Security | None, host: Host, *, image_user: str | None = None) -> Sandbox | None:
    """The sandbox for `security` on `host` (None: no security context, the runtime's defaults), or
    SpecUnsupported naming the first field that cannot be honoured. `image_user`: a container image's user."""
    if security is None:
        return None
    sec = security
    if isinstance(host, ProcessHost):
        _refuse_for_process(sec)
        uid, gid = _process_ids(sec, host)
        user = ""
        _check_non_root_process(sec, host.agent_uid if uid is None else uid)
    else:
        uid = gid = None
        user = _container_user(sec, image_user)
        _check_non_root_container(sec, image_user)
    cap_drop = _capabilities(sec.capabilities_drop, "capabilitiesDrop")
    cap_add = _capabilities(sec.capabilities_add, "capabilitiesAdd")
    _check_drop(sec, host, host.agent_uid if isinstance(host, ProcessHost) and uid is None else uid)
    drop_needs_nnp = isinstance(host, ProcessHost) and bool(sec.capabilities_drop)
    escalation = sec.allow_privilege_escalation
    nnp = escalation is False or (escalation is None and (sec.run_as_non_root or drop_needs_nnp))
    contained = isinstance(host, ContainerHost)
    widened = [what for flag, what in ((sec.privileged, "privileged"), (sec.host_network, "hostNetwork"),
                                       (sec.host_pid, "hostPID"), (sec.host_ipc, "hostIPC")) if flag and contained]
    return Sandbox(
        user=user, uid=uid, gid=gid, read_only_root=sec.read_only_root_filesystem, cap_drop=cap_drop,
        cap_add=cap_add, no_new_privs=nnp, seccomp_profile=_seccomp(sec, host), privileged=sec.privileged,
        host_network=sec.host_network, host_pid=sec.host_pid, host_ipc=sec.host_ipc, widened=tuple(widened),
    )


def _refuse_for_process(sec: Security) -> None:
    if sec.privileged:
        raise SpecUnsupported("security.privileged: the process runtime does not run privileged workloads")
    if sec.read_only_root_filesystem:
        raise SpecUnsupported("security.readOnlyRootFilesystem: the process runtime cannot make the root "
                              "filesystem read-only")
    if sec.capabilities_add:
        raise SpecUnsupported("security.capabilitiesAdd: the process runtime cannot grant capabilities")
    if sec.seccomp is SeccompType.LOCALHOST:
        raise SpecUnsupported("security.seccompProfile: the process runtime cannot apply a seccomp profile")


def _container_user(sec: Security, image_user: str | None) -> str:
    if sec.run_as_user is not None:
        return f"{sec.run_as_user}" if sec.run_as_group is None else f"{sec.run_as_user}:{sec.run_as_group}"
    if sec.run_as_group is not None:  # Kubernetes: the image's user, with this primary group
        return f"{(image_user or '').split(':', 1)[0] or '0'}:{sec.run_as_group}"
    return ""


def _process_ids(sec: Security, host: ProcessHost) -> tuple[int | None, int | None]:
    """(uid, gid) a process switches to; None where the agent's own id stays."""
    if host.agent_uid != 0:  # an unprivileged agent can only start processes as itself
        if sec.run_as_user not in (None, host.agent_uid):
            raise SpecUnsupported(f"security.runAsUser: the agent runs as uid {host.agent_uid} (not root) and "
                                  f"cannot start a process as uid {sec.run_as_user}")
        if sec.run_as_group not in (None, host.agent_gid):
            raise SpecUnsupported(f"security.runAsGroup: the agent runs as gid {host.agent_gid} (not root) and "
                                  f"cannot start a process as gid {sec.run_as_group}")
        return None, None
    if sec.run_as_user in (None, 0):
        return None, sec.run_as_group
    gid = sec.run_as_group if sec.run_as_group is not None else host.primary_gid(sec.run_as_user)
    if gid is None:
        raise SpecUnsupported(f"security.runAsGroup: uid {sec.run_as_user} has no passwd entry on this host to "
                              "take its group from; set runAsGroup")
    return sec.run_as_user, gid


def _check_non_root_container(sec: Security, image_user: str | None) -> None:
    if not sec.run_as_non_root:
        return
    if sec.run_as_user is not None:
        if sec.run_as_user == 0:
            raise SpecUnsupported("security.runAsNonRoot: runAsUser is 0 (root)")
        return
    name = (image_user or "").split(":", 1)[0].strip()
    if name in ROOT_USERS:
        raise SpecUnsupported("security.runAsNonRoot: the image runs as root and no runAsUser is set")
    if not name.isdigit():
        raise SpecUnsupported(f"security.runAsNonRoot: the image's user {name!r} is not numeric, so it cannot be "
                              "verified as non-root; set runAsUser")
    if int(name) == 0:
        raise SpecUnsupported("security.runAsNonRoot: the image runs as root and no runAsUser is set")


def _check_non_root_process(sec: Security, runs_as: int) -> None:
    if sec.run_as_non_root and runs_as == 0:
        raise SpecUnsupported("security.runAsNonRoot: the process would run as root (uid 0); set runAsUser")


def _check_drop(sec: Security, host: Host, runs_as: int | None) -> None:
    if not sec.capabilities_drop:
        return
    if isinstance(host, ContainerHost):
        if sec.privileged:  # Podman gives a privileged container every capability, drops or not
            raise SpecUnsupported("security.capabilitiesDrop: a privileged container keeps every capability")
        return
    if runs_as == 0:
        raise SpecUnsupported("security.capabilitiesDrop: a process running as root keeps its capabilities; "
                              "set a non-root runAsUser")
    if sec.allow_privilege_escalation:
        raise SpecUnsupported("security.capabilitiesDrop: the process runtime drops capabilities with "
                              "no_new_privs, which allowPrivilegeEscalation=true forbids")


def _capabilities(names: Sequence[str], what: str) -> tuple[str, ...]:
    out = []
    for name in names:
        cap = name.strip().upper()
        cap = cap if cap == "ALL" or cap.startswith("CAP_") else f"CAP_{cap}"
        if not _CAPABILITY.fullmatch(cap):
            raise SpecUnsupported(f"security.{what}: {name!r} is not a capability name")
        out.append(cap)
    return tuple(out)


def _seccomp(sec: Security, host: Host) -> str | None:
    match sec.seccomp:
        case SeccompType.UNCONFINED:
            return UNCONFINED if isinstance(host, ContainerHost) else None
        case SeccompType.LOCALHOST if isinstance(host, ContainerHost):
            name = sec.seccomp_profile
            if not name or "/" in name or ".." in name or name.startswith("."):
                raise SpecUnsupported(f"security.seccompProfile: {name!r} must be a plain file name in the "
                                      f"agent's seccomp directory ({host.seccomp_dir})")
            if not host.seccomp:
                raise SpecUnsupported("security.seccompProfile: Podman reports no seccomp support on this host")
            return f"{host.seccomp_dir.rstrip('/')}/{name}"
        case _:
            return None  # RuntimeDefault: the runtime's default profile (a process: none)

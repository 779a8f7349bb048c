"""The sandbox mapping (ReplicaSpec.security) as tables: Podman SpecGenerator fields from `container_security` and
`container_spec`, and what the process runtime accepts or refuses (`process_sandbox`). Pure: no Podman, no
processes — tests/integration/test_sandbox.py checks the same settings from inside real containers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broker.wire import PortMapping, ReplicaSpec, SeccompType, Security, VolumeMount
from edge_agent.errors import SpecUnsupported
from edge_agent.runtime.podman import default_seccomp_dir
from edge_agent.runtime.podman_spec import (
    ContainerSecurity,
    container_security,
    container_spec,
    image_user_of,
    tmp_mount,
)
from edge_agent.runtime.process_confine import ProcessSandbox, process_sandbox, setpriv_argv
from edge_agent.sandbox import ContainerHost, needs_image_user

SECCOMP_DIR = Path("/etc/cloudless/seccomp")
HOST = ContainerHost(str(SECCOMP_DIR))
IMAGE = "localhost/cloudless/busybox:latest"


def sec(**kw: Any) -> Security:
    return Security(**kw)


def make_spec(security: Security | None = None, **kw: Any) -> ReplicaSpec:
    fields: dict[str, Any] = {"workload": "web", "image": IMAGE, "command": ("sleep", "300")}
    fields.update(kw)
    return ReplicaSpec(replica_id="web-0", security=security, **fields)


def body_for(spec: ReplicaSpec, image_user: str | None = "") -> dict[str, Any]:
    security = container_security(spec.security, image_user, HOST) if spec.security is not None else None
    return container_spec(spec, name="c", labels={}, stop_timeout_s=1, limits=True, log_max_bytes=None,
                          security=security)


# ---- Podman: fields ------------------------------------------------------------------------------------

DEFAULT = {"seccomp_policy": "default"}

PODMAN_FIELDS = [
    ("defaults", sec(), "", {}),
    ("user", sec(run_as_user=1000), "", {"user": "1000"}),
    ("user-and-group", sec(run_as_user=1000, run_as_group=2000), "", {"user": "1000:2000"}),
    ("group-only-keeps-image-user", sec(run_as_group=2000), "app:app", {"user": "app:2000"}),
    ("group-only-root-image", sec(run_as_group=2000), "", {"user": "0:2000"}),
    ("non-root-with-user-sets-nnp", sec(run_as_user=1000, run_as_non_root=True), "",
     {"user": "1000", "no_new_privileges": True}),
    ("non-root-numeric-image-user", sec(run_as_non_root=True), "1000:1000", {"no_new_privileges": True}),
    ("non-root-but-escalation-allowed", sec(run_as_user=7, run_as_non_root=True, allow_privilege_escalation=True),
     "", {"user": "7"}),
    ("no-escalation", sec(allow_privilege_escalation=False), "", {"no_new_privileges": True}),
    ("read-only-root", sec(read_only_root_filesystem=True), "", {"read_only_filesystem": True}),
    ("drop-all-add-one", sec(capabilities_drop=("ALL",), capabilities_add=("NET_BIND_SERVICE",)), "",
     {"cap_drop": ["ALL"], "cap_add": ["CAP_NET_BIND_SERVICE"]}),
    ("cap-prefix-kept", sec(capabilities_drop=("CAP_NET_RAW", "chown")), "",
     {"cap_drop": ["CAP_NET_RAW", "CAP_CHOWN"]}),
    ("seccomp-localhost", sec(seccomp=SeccompType.LOCALHOST, seccomp_profile="strict.json"), "",
     {"seccomp_profile_path": str(SECCOMP_DIR / "strict.json")}),
    ("seccomp-unconfined", sec(seccomp=SeccompType.UNCONFINED), "", {"seccomp_profile_path": "unconfined"}),
    ("privileged", sec(privileged=True), "", {"privileged": True}),
    ("host-namespaces", sec(host_network=True, host_pid=True, host_ipc=True), "",
     {"netns": {"nsmode": "host"}, "pidns": {"nsmode": "host"}, "ipcns": {"nsmode": "host"}}),
]


@pytest.mark.parametrize(("security", "image_user", "expected"), [c[1:] for c in PODMAN_FIELDS],
                         ids=[c[0] for c in PODMAN_FIELDS])
def test_container_security_fields(security: Security, image_user: str, expected: dict[str, Any]) -> None:
    assert container_security(security, image_user, HOST).fields == {**DEFAULT, **expected}


def test_no_security_maps_to_nothing() -> None:
    assert container_security(None, None, HOST) == ContainerSecurity()
    body = body_for(make_spec())  # the body is exactly what it was before the sandbox existed
    assert not {"user", "seccomp_policy", "read_only_filesystem", "cap_drop", "no_new_privileges"} & set(body)


def test_widened_names_privileged_and_host_namespaces() -> None:
    mapped = container_security(sec(privileged=True, host_network=True, host_ipc=True), "", HOST)
    assert mapped.widened == ("privileged", "hostNetwork", "hostIPC")
    assert container_security(sec(run_as_user=5), "", HOST).widened == ()


PODMAN_REFUSED = [
    ("non-root-user-0", sec(run_as_user=0, run_as_non_root=True), "1000", "runAsUser is 0"),
    ("non-root-image-empty", sec(run_as_non_root=True), "", "the image runs as root and no runAsUser is set"),
    ("non-root-image-root", sec(run_as_non_root=True), "root", "the image runs as root"),
    ("non-root-image-0-group", sec(run_as_non_root=True), "0:1000", "the image runs as root"),
    ("non-root-image-00", sec(run_as_non_root=True), "00", "the image runs as root"),
    ("non-root-image-name", sec(run_as_non_root=True), "nobody", "not numeric"),
    ("seccomp-slash", sec(seccomp=SeccompType.LOCALHOST, seccomp_profile="a/b.json"), "", "plain file name"),
    ("seccomp-dotdot", sec(seccomp=SeccompType.LOCALHOST, seccomp_profile="..json"), "", "plain file name"),
    ("seccomp-parent", sec(seccomp=SeccompType.LOCALHOST, seccomp_profile=".."), "", "plain file name"),
    ("seccomp-empty", sec(seccomp=SeccompType.LOCALHOST), "", "plain file name"),
    ("bad-capability", sec(capabilities_add=("NET ADMIN",)), "", "capabilitiesAdd: 'NET ADMIN'"),
    ("privileged-with-drop", sec(privileged=True, capabilities_drop=("ALL",)), "", "privileged container keeps"),
]


@pytest.mark.parametrize(("security", "image_user", "message"), [c[1:] for c in PODMAN_REFUSED],
                         ids=[c[0] for c in PODMAN_REFUSED])
def test_container_security_refuses(security: Security, image_user: str, message: str) -> None:
    with pytest.raises(SpecUnsupported, match=message) as err:
        container_security(security, image_user, HOST)
    assert str(err.value).startswith("security.")


def test_localhost_seccomp_refused_without_kernel_seccomp() -> None:
    security = sec(seccomp=SeccompType.LOCALHOST, seccomp_profile="p.json")
    with pytest.raises(SpecUnsupported, match="no seccomp support"):
        container_security(security, "", ContainerHost(str(SECCOMP_DIR), seccomp=False))
    assert container_security(sec(), "", ContainerHost(str(SECCOMP_DIR), seccomp=False)).fields == DEFAULT


@pytest.mark.parametrize(("security", "needed"), [
    (sec(), False), (sec(run_as_non_root=True), True), (sec(run_as_group=3), True),
    (sec(run_as_user=3, run_as_non_root=True), False), (sec(run_as_user=3, run_as_group=4), False),
], ids=["defaults", "non-root", "group-only", "user-given", "user-and-group"])
def test_needs_image_user(security: Security, needed: bool) -> None:
    assert needs_image_user(security) is needed


def test_image_user_of_inspect_data() -> None:
    assert image_user_of({"Config": {"Cmd": ["/bin/sh"]}}) == ""
    assert image_user_of({"Config": {"User": "1000:1000"}}) == "1000:1000"
    assert image_user_of({}) == ""


# ---- Podman: the container body ------------------------------------------------------------------------

def test_read_only_root_gets_a_tmp_tmpfs_and_keeps_volumes() -> None:
    spec = make_spec(sec(read_only_root_filesystem=True, run_as_user=1000),
                     volumes=(VolumeMount("scratch", "/data", medium="Memory"), VolumeMount("cache", "/cache")))
    body = body_for(spec)
    assert body["read_only_filesystem"] is True and body["user"] == "1000"
    assert [m["destination"] for m in body["mounts"]] == ["/data", "/tmp"]
    assert body["mounts"][1] == tmp_mount() and "rw" in tmp_mount()["options"]
    assert body["volumes"] == [{"Name": "", "Dest": "/cache", "Options": ["U"]}]  # chowned to the user


def test_a_tmp_volume_replaces_the_tmp_tmpfs() -> None:
    for vol in (VolumeMount("t", "/tmp", medium="Memory"), VolumeMount("t", "/tmp")):
        body = body_for(make_spec(sec(read_only_root_filesystem=True), volumes=(vol,)))
        assert [m["destination"] for m in body["mounts"]] + [v["Dest"] for v in body["volumes"]] == ["/tmp"]


def test_volumes_unchanged_without_security() -> None:
    assert body_for(make_spec(volumes=(VolumeMount("cache", "/cache"),)))["volumes"] == [
        {"Name": "", "Dest": "/cache", "Options": []}]


def test_host_network_drops_port_mappings_and_refuses_remapping() -> None:
    body = body_for(make_spec(sec(host_network=True), ports=(PortMapping(8080, host_port=8080), PortMapping(9090))))
    assert body["portmappings"] == [] and body["netns"] == {"nsmode": "host"}
    with pytest.raises(SpecUnsupported, match="hostNetwork: hostPort 18080 != containerPort 8080"):
        body_for(make_spec(sec(host_network=True), ports=(PortMapping(8080, host_port=18080),)))


def test_runs_as_non_root_refusal_reaches_container_spec_callers() -> None:
    with pytest.raises(SpecUnsupported, match="runAsNonRoot"):
        body_for(make_spec(sec(run_as_non_root=True)), image_user="")


@pytest.mark.parametrize(("environ", "euid", "expected"), [
    ({}, 0, "/etc/cloudless/seccomp"),
    ({"XDG_CONFIG_HOME": "/x"}, 0, "/etc/cloudless/seccomp"),
    ({"XDG_CONFIG_HOME": "/x"}, 1000, "/x/cloudless/seccomp"),
    ({}, 1000, "/home/u/.config/cloudless/seccomp"),
], ids=["root", "root-ignores-xdg", "xdg", "home-config"])
def test_default_seccomp_dir(environ: dict[str, str], euid: int, expected: str) -> None:
    assert default_seccomp_dir(environ, euid, Path("/home/u")) == Path(expected)


# ---- the process runtime -------------------------------------------------------------------------------

PASSWD = {65534: 65534, 1000: 1000}


def box(security: Security | None, *, agent_uid: int = 0, agent_gid: int = 0) -> ProcessSandbox:
    return process_sandbox(security, agent_uid=agent_uid, agent_gid=agent_gid, primary_gid=PASSWD.get)


PROCESS_ACCEPTED = [
    ("none", None, 0, ProcessSandbox()),
    ("defaults", sec(), 0, ProcessSandbox()),
    ("root-switches-user-passwd-group", sec(run_as_user=65534), 0, ProcessSandbox(65534, 65534)),
    ("root-switches-user-and-group", sec(run_as_user=1000, run_as_group=5), 0, ProcessSandbox(1000, 5)),
    ("root-group-only", sec(run_as_group=5), 0, ProcessSandbox(None, 5)),
    ("root-user-0-is-no-switch", sec(run_as_user=0), 0, ProcessSandbox()),
    ("root-non-root-user", sec(run_as_user=65534, run_as_non_root=True), 0,
     ProcessSandbox(65534, 65534, no_new_privs=True)),
    ("root-drop-all-as-user", sec(run_as_user=1000, capabilities_drop=("ALL",)), 0,
     ProcessSandbox(1000, 1000, no_new_privs=True, clear_ambient=True)),
    ("unprivileged-own-ids", sec(run_as_user=1000, run_as_group=1000), 1000, ProcessSandbox()),
    ("unprivileged-non-root", sec(run_as_non_root=True), 1000, ProcessSandbox(no_new_privs=True)),
    ("unprivileged-drop-all", sec(capabilities_drop=("ALL",)), 1000,
     ProcessSandbox(no_new_privs=True, clear_ambient=True)),
    ("unprivileged-drop-no-escalation", sec(capabilities_drop=("NET_RAW",), allow_privilege_escalation=False),
     1000, ProcessSandbox(no_new_privs=True, clear_ambient=True)),
    ("no-escalation", sec(allow_privilege_escalation=False), 0, ProcessSandbox(no_new_privs=True)),
    ("non-root-escalation-allowed", sec(run_as_non_root=True, allow_privilege_escalation=True), 1000,
     ProcessSandbox()),
    ("host-namespaces-are-trivially-true", sec(host_network=True, host_pid=True, host_ipc=True), 0,
     ProcessSandbox()),
    ("seccomp-unconfined", sec(seccomp=SeccompType.UNCONFINED), 0, ProcessSandbox()),
]


@pytest.mark.parametrize(("security", "agent_uid", "expected"), [c[1:] for c in PROCESS_ACCEPTED],
                         ids=[c[0] for c in PROCESS_ACCEPTED])
def test_process_sandbox_accepts(security: Security | None, agent_uid: int, expected: ProcessSandbox) -> None:
    assert box(security, agent_uid=agent_uid, agent_gid=agent_uid) == expected


PROCESS_REFUSED = [
    ("read-only-root", sec(read_only_root_filesystem=True), 1000,
     "security.readOnlyRootFilesystem: the process runtime cannot make the root filesystem read-only"),
    ("privileged", sec(privileged=True), 0, "security.privileged"),
    ("cap-add", sec(capabilities_add=("NET_BIND_SERVICE",)), 0, "security.capabilitiesAdd"),
    ("seccomp-localhost", sec(seccomp=SeccompType.LOCALHOST, seccomp_profile="p.json"), 0,
     "security.seccompProfile"),
    ("unprivileged-other-user", sec(run_as_user=65534), 1000, "security.runAsUser: the agent runs as uid 1000"),
    ("unprivileged-other-group", sec(run_as_group=0), 1000, "security.runAsGroup: the agent runs as gid 1000"),
    ("root-non-root-without-user", sec(run_as_non_root=True), 0, "security.runAsNonRoot: .*uid 0"),
    ("root-non-root-user-0", sec(run_as_user=0, run_as_non_root=True), 0, "security.runAsNonRoot"),
    ("root-drop-as-root", sec(capabilities_drop=("ALL",)), 0, "security.capabilitiesDrop: a process running as root"),
    ("drop-with-escalation", sec(capabilities_drop=("ALL",), allow_privilege_escalation=True), 1000,
     "security.capabilitiesDrop: .*allowPrivilegeEscalation=true"),
    ("root-user-without-passwd-entry", sec(run_as_user=4242), 0, "security.runAsGroup: uid 4242 has no passwd"),
]


@pytest.mark.parametrize(("security", "agent_uid", "message"), [c[1:] for c in PROCESS_REFUSED],
                         ids=[c[0] for c in PROCESS_REFUSED])
def test_process_sandbox_refuses(security: Security, agent_uid: int, message: str) -> None:
    with pytest.raises(SpecUnsupported, match=message):
        box(security, agent_uid=agent_uid, agent_gid=agent_uid)


@pytest.mark.parametrize(("sandbox", "argv"), [
    (ProcessSandbox(), []),
    (ProcessSandbox(no_new_privs=True), []),
    (ProcessSandbox(65534, 65534), ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]),
    (ProcessSandbox(None, 5), ["setpriv", "--regid=5", "--clear-groups", "--"]),
], ids=["none", "flags-only", "user-and-group", "group-only"])
def test_setpriv_prefix(sandbox: ProcessSandbox, argv: list[str]) -> None:
    assert setpriv_argv("setpriv", sandbox) == argv

"""The one sandbox policy (`edge_agent.sandbox.decide`) as a table: the same security context on a container host
and on a process host, side by side. The runtime mappings are in test_sandbox_mapping.py."""

from __future__ import annotations

from typing import Any

import pytest

from broker.wire import SeccompType, Security
from edge_agent.errors import SpecUnsupported
from edge_agent.sandbox import UNCONFINED, ContainerHost, ProcessHost, Sandbox, decide

CONTAINER = ContainerHost("/etc/cloudless/seccomp")
ROOT_PROCESS = ProcessHost(0, 0, {1000: 1000}.get)
USER_PROCESS = ProcessHost(1000, 1000, {1000: 1000}.get)


def sec(**kw: Any) -> Security:
    return Security(**kw)


DECIDED = [
    ("container-user", sec(run_as_user=1000), CONTAINER, Sandbox(user="1000")),
    ("process-user", sec(run_as_user=1000), ROOT_PROCESS, Sandbox(uid=1000, gid=1000)),
    ("container-drop-normalised", sec(capabilities_drop=("net_raw",)), CONTAINER, Sandbox(cap_drop=("CAP_NET_RAW",))),
    ("process-drop-implies-nnp", sec(capabilities_drop=("ALL",)), USER_PROCESS,
     Sandbox(cap_drop=("ALL",), no_new_privs=True)),
    ("container-drop-no-nnp", sec(capabilities_drop=("ALL",)), CONTAINER, Sandbox(cap_drop=("ALL",))),
    ("non-root-nnp-container", sec(run_as_user=5, run_as_non_root=True), CONTAINER,
     Sandbox(user="5", no_new_privs=True)),
    ("non-root-nnp-process", sec(run_as_non_root=True), USER_PROCESS, Sandbox(no_new_privs=True)),
    ("unconfined-container", sec(seccomp=SeccompType.UNCONFINED), CONTAINER, Sandbox(seccomp_profile=UNCONFINED)),
    ("unconfined-process-is-default", sec(seccomp=SeccompType.UNCONFINED), ROOT_PROCESS, Sandbox()),
    ("localhost-profile-path", sec(seccomp=SeccompType.LOCALHOST, seccomp_profile="p.json"), CONTAINER,
     Sandbox(seccomp_profile="/etc/cloudless/seccomp/p.json")),
    ("host-network-widens-container", sec(host_network=True), CONTAINER,
     Sandbox(host_network=True, widened=("hostNetwork",))),
    ("host-network-trivial-for-process", sec(host_network=True), ROOT_PROCESS, Sandbox(host_network=True)),
]


@pytest.mark.parametrize(("security", "host", "expected"), [c[1:] for c in DECIDED], ids=[c[0] for c in DECIDED])
def test_decide(security: Security, host: ContainerHost | ProcessHost, expected: Sandbox) -> None:
    assert decide(security, host, image_user="") == expected


def test_no_security_is_no_decision() -> None:
    assert decide(None, CONTAINER) is None
    assert decide(None, ROOT_PROCESS) is None


REFUSED = [
    ("read-only-process", sec(read_only_root_filesystem=True), ROOT_PROCESS, "readOnlyRootFilesystem"),
    ("cap-add-process", sec(capabilities_add=("NET_ADMIN",)), ROOT_PROCESS, "capabilitiesAdd"),
    ("bad-capability-either", sec(capabilities_drop=("NET ADMIN",)), CONTAINER, "'NET ADMIN' is not a capability"),
    ("privileged-drop-container", sec(privileged=True, capabilities_drop=("ALL",)), CONTAINER, "keeps every"),
    ("non-root-root-image", sec(run_as_non_root=True), CONTAINER, "the image runs as root"),
    ("non-root-root-agent", sec(run_as_non_root=True), ROOT_PROCESS, r"would run as root \(uid 0\)"),
    ("no-seccomp-localhost", sec(seccomp=SeccompType.LOCALHOST, seccomp_profile="p"),
     ContainerHost("/d", seccomp=False), "no seccomp support"),
]


@pytest.mark.parametrize(("security", "host", "message"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_refused(security: Security, host: ContainerHost | ProcessHost, message: str) -> None:
    with pytest.raises(SpecUnsupported, match=message) as err:
        decide(security, host, image_user="")
    assert str(err.value).startswith("security.")

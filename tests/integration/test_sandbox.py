"""The sandbox (ReplicaSpec.security) as the workload sees it, against real Podman services (rootful and rootless,
see podman_env.py) and real processes: every check runs inside the container or process, not on the spec.

Each test gets its own node id and removes its containers by label. The Localhost seccomp profile lives in a
directory the rootless service's user can read (the service, not the agent, opens the file)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from broker.wire import ReplicaSpec, SeccompType, Security, VolumeMount
from edge_agent.errors import SpecUnsupported
from edge_agent.runtime.base import Instance, InstanceState
from edge_agent.runtime.podman import PodmanRuntime
from edge_agent.runtime.process import ProcessRuntime
from tests.integration.podman_env import IMAGE, PodmanTarget, podman_target
from tests.need import require_root

pytestmark = pytest.mark.integration
__all__ = ["podman_target"]  # the fixture, imported for pytest

BLOCK_MKDIR = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}
RESTRICTED = Security(run_as_user=1000, run_as_non_root=True, read_only_root_filesystem=True,
                      capabilities_drop=("ALL",))
# What the workload reports about itself; each line is checked below.
PROBE = ("id -u; touch /x 2>/dev/null && echo root-writable || echo root-read-only; "
         "touch /tmp/x && echo tmp-writable; touch /cache/x && echo cache-writable; "
         "touch /data/x && echo data-writable; grep -E '^(CapEff|NoNewPrivs):' /proc/self/status")


def make_spec(replica: str = "r1", **kw: object) -> ReplicaSpec:
    fields: dict[str, object] = {"workload": "web", "namespace": "team", "spec_hash": "h1", "image": IMAGE,
                                 "command": ("sleep",), "args": ("300",)}
    fields.update(kw)
    return ReplicaSpec(replica_id=replica, **fields)  # type: ignore[arg-type]


def new_node() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def seccomp_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cloudless-seccomp-"))
    try:
        path.chmod(0o755)  # the rootless service runs as another user and opens the profile itself
        (path / "block-mkdir.json").write_text(json.dumps(BLOCK_MKDIR))
        (path / "block-mkdir.json").chmod(0o644)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def rt(podman_target: PodmanTarget, seccomp_dir: Path) -> AsyncIterator[PodmanRuntime]:
    runtime = podman_target.runtime(new_node(), seccomp_dir=seccomp_dir)
    try:
        yield runtime
    finally:
        await runtime.close()
        podman_target.cleanup(runtime.node_id)


async def run(rt: PodmanRuntime | ProcessRuntime, spec: ReplicaSpec) -> Instance:
    inst = await rt.create(spec, 1)
    return await rt.start(inst.instance_id)


async def run_to_end(rt: PodmanRuntime | ProcessRuntime, spec: ReplicaSpec, timeout: float = 15) -> list[str]:
    """Run `spec` until it exits; its output lines."""
    inst = await run(rt, spec)
    deadline = time.monotonic() + timeout
    while True:
        found = {i.instance_id: i for i in await rt.list()}.get(inst.instance_id)
        if found is not None and found.state is InstanceState.EXITED:
            return (await rt.logs(inst.instance_id, tail=100)).decode().splitlines()
        assert time.monotonic() < deadline, f"{inst.instance_id} did not exit within {timeout}s: {found}"
        await asyncio.sleep(0.1)


# ---- Podman --------------------------------------------------------------------------------------------

async def test_restricted_container_runs_restricted(rt: PodmanRuntime, podman_target: PodmanTarget) -> None:
    spec = make_spec(security=RESTRICTED, command=("sh", "-c"), args=(PROBE,),
                     volumes=(VolumeMount("cache", "/cache"), VolumeMount("data", "/data", medium="Memory")))
    lines = await run_to_end(rt, spec)
    assert lines == ["1000", "root-read-only", "tmp-writable", "cache-writable", "data-writable",
                     "CapEff:\t0000000000000000", "NoNewPrivs:\t1"], (podman_target.mode, lines)


async def test_exec_runs_inside_the_same_sandbox(rt: PodmanRuntime) -> None:
    inst = await run(rt, make_spec(security=RESTRICTED))
    result = await rt.exec(inst.instance_id, ["sh", "-c", "id -u; touch /x 2>&1; touch /tmp/y && echo ok"], 10)
    assert result.output.decode().splitlines() == ["1000", "touch: /x: Read-only file system", "ok"]


async def test_localhost_seccomp_profile_is_enforced(rt: PodmanRuntime, podman_target: PodmanTarget) -> None:
    script = ("mkdir /tmp/d && echo made",)
    blocked = make_spec("r1", command=("sh", "-c"), args=script,
                        security=Security(seccomp=SeccompType.LOCALHOST, seccomp_profile="block-mkdir.json"))
    lines = await run_to_end(rt, blocked)
    assert lines == ["mkdir: can't create directory '/tmp/d': Operation not permitted"], (podman_target.mode, lines)
    allowed = make_spec("r2", command=("sh", "-c"), args=script, security=Security())  # RuntimeDefault
    assert await run_to_end(rt, allowed) == ["made"]


async def test_seccomp_profiles_that_cannot_be_used_are_refused(rt: PodmanRuntime) -> None:
    missing = Security(seccomp=SeccompType.LOCALHOST, seccomp_profile="absent.json")
    with pytest.raises(SpecUnsupported, match=r"security\.seccompProfile: no profile 'absent\.json'"):
        await rt.create(make_spec(security=missing), 1)
    escaping = Security(seccomp=SeccompType.LOCALHOST, seccomp_profile="../block-mkdir.json")
    with pytest.raises(SpecUnsupported, match="plain file name"):
        await rt.create(make_spec(security=escaping), 1)
    assert await rt.list() == []


async def test_run_as_non_root_refuses_a_root_image(rt: PodmanRuntime) -> None:
    with pytest.raises(SpecUnsupported, match="runAsNonRoot: the image runs as root and no runAsUser is set"):
        await rt.create(make_spec(security=Security(run_as_non_root=True)), 1)
    with pytest.raises(SpecUnsupported, match="runAsNonRoot: runAsUser is 0"):
        await rt.create(make_spec(security=Security(run_as_non_root=True, run_as_user=0)), 1)
    assert await rt.list() == []


async def test_host_namespaces_are_shared_and_logged(
    rt: PodmanRuntime, podman_target: PodmanTarget, caplog: pytest.LogCaptureFixture
) -> None:
    # hostNetwork: hostIPC fails in rootless Podman on hosts without /dev/mqueue (statfs), a Podman limitation.
    caplog.set_level(logging.WARNING, logger="edge_agent.runtime.podman")
    spec = make_spec("wide", security=Security(host_network=True), command=("ls", "-l"), args=("/proc/self/ns/net",))
    [line] = await run_to_end(rt, spec)
    assert line.endswith(os.readlink("/proc/self/ns/net")), (podman_target.mode, line)
    assert any("replica wide runs with hostNetwork" in r.getMessage() for r in caplog.records)


async def test_missing_lsm_is_one_warning(
    rt: PodmanRuntime, podman_target: PodmanTarget, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="edge_agent.runtime.podman")
    await rt.create(make_spec("r1"), 1)
    await rt.create(make_spec("r2", security=RESTRICTED), 1)
    with podman_target.client() as client:
        security = client.info()["host"]["security"]
    warnings = [r for r in caplog.records if "no AppArmor/SELinux on this host" in r.getMessage()]
    lsm = security.get("apparmorEnabled") or security.get("selinuxEnabled")
    assert len(warnings) == (0 if lsm else 1)


# ---- the process runtime -------------------------------------------------------------------------------

@pytest.fixture
async def proc_rt() -> AsyncIterator[ProcessRuntime]:
    # Not tmp_path: pytest's 0700 directories would keep uid 65534 out of its own work directory.
    root = Path(tempfile.mkdtemp(prefix="cloudless-process-"))
    root.chmod(0o755)
    runtime = ProcessRuntime(node_id=new_node(), cluster="c1", root=root / "process")
    try:
        yield runtime
    finally:
        for inst in await runtime.list():
            await runtime.remove(inst.instance_id)
        await runtime.close()
        shutil.rmtree(root, ignore_errors=True)


async def test_process_runs_as_the_requested_user(proc_rt: ProcessRuntime) -> None:
    require_root("switching users in the process runtime needs the agent (this test) to be root")
    security = Security(run_as_user=65534, run_as_non_root=True, capabilities_drop=("ALL",))
    spec = make_spec(image="", command=("sh", "-c"), security=security,
                     args=("id -u; id -g; id -G; grep -E '^(CapEff|NoNewPrivs):' /proc/self/status; touch f && "
                           "echo home-writable",))
    lines = await run_to_end(proc_rt, spec)
    assert lines == ["65534", "65534", "65534", "CapEff:\t0000000000000000", "NoNewPrivs:\t1", "home-writable"]
    [inst] = await proc_rt.list()
    assert inst.exit_code == 0  # the exit code still reaches the agent's directory


async def test_process_exec_runs_as_the_workload(proc_rt: ProcessRuntime) -> None:
    require_root("switching users in the process runtime needs the agent (this test) to be root")
    inst = await run(proc_rt, make_spec(image="", command=("sleep", "30"), security=Security(run_as_user=65534)))
    result = await proc_rt.exec(inst.instance_id, ["id", "-u"], 10)
    assert result.output == b"65534\n"


async def test_process_refuses_what_it_cannot_enforce(proc_rt: ProcessRuntime) -> None:
    with pytest.raises(SpecUnsupported, match=r"security\.readOnlyRootFilesystem: the process runtime cannot make"):
        await proc_rt.create(make_spec(image="", security=Security(read_only_root_filesystem=True)), 1)
    with pytest.raises(SpecUnsupported, match=r"security\.capabilitiesAdd"):
        await proc_rt.create(make_spec(image="", security=Security(capabilities_add=("NET_ADMIN",))), 1)
    assert await proc_rt.list() == []

"""PodmanRuntime against real Podman services, rootful and rootless (see podman_env.py), with the local busybox
test image (scripts/build-test-image.sh; no registry pulls). Every test gets its own node id and removes its
containers by label afterwards. busybox `sh`/`sleep` as PID 1 ignore SIGTERM, hence 1 s stop timeouts."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.wire import PortMapping, Probe, ProbeKind, ReplicaSpec, VolumeMount
from edge_agent.errors import ImageUnavailable, InstanceNotFound, RuntimeFailed, RuntimeUnavailable
from edge_agent.images import retry_delay
from edge_agent.probes import run_probe
from edge_agent.runtime.base import (
    LABEL_NODE,
    Endpoint,
    Instance,
    InstanceState,
)
from edge_agent.runtime.podman import PodmanRuntime
from edge_agent.runtime.podman_service import socket_answers
from edge_agent.runtime.podman_spec import container_name
from tests.integration.conftest import require_binary
from tests.integration.podman_env import CONF, IMAGE, TEST_CLUSTER, PodmanTarget, podman_target, require_podman

pytestmark = pytest.mark.integration
__all__ = ["podman_target"]  # the fixture, imported for pytest

MiB = 1024 * 1024


def make_spec(replica: str = "r1", **kw: object) -> ReplicaSpec:
    fields: dict[str, object] = {"workload": "web", "namespace": "team", "spec_hash": "h1", "image": IMAGE,
                                 "command": ("sleep",), "args": ("300",)}
    fields.update(kw)
    return ReplicaSpec(replica_id=replica, **fields)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def new_node() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def rt(podman_target: PodmanTarget) -> AsyncIterator[PodmanRuntime]:
    runtime = podman_target.runtime(new_node())
    try:
        yield runtime
    finally:
        await runtime.close()
        podman_target.cleanup(runtime.node_id)


async def run(rt: PodmanRuntime, spec: ReplicaSpec, generation: int = 1) -> Instance:
    inst = await rt.create(spec, generation)
    return await rt.start(inst.instance_id)


async def wait_state(rt: PodmanRuntime, instance_id: str, state: InstanceState, timeout: float = 10) -> Instance:
    deadline = time.monotonic() + timeout
    while True:
        found = {i.instance_id: i for i in await rt.list()}.get(instance_id)
        if found is not None and found.state is state:
            return found
        assert time.monotonic() < deadline, f"{instance_id[:12]} not {state} after {timeout}s: {found}"
        await asyncio.sleep(0.1)


def http_get(url: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return str(resp.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


async def test_info_reports_podman_and_mode(rt: PodmanRuntime, podman_target: PodmanTarget) -> None:
    info = await rt.info()
    assert info.name == "podman"
    assert info.version
    assert info.rootless is podman_target.rootless


async def test_lifecycle_list_exec_stop_restart_remove(rt: PodmanRuntime, podman_target: PodmanTarget) -> None:
    t0 = time.monotonic()
    created = await rt.create(make_spec(labels={"team": "a"}), generation=7)
    assert created.state is InstanceState.CREATED
    started = await rt.start(created.instance_id)
    print(f"create+start: {time.monotonic() - t0:.3f}s")
    assert started.state is InstanceState.RUNNING and started.started_at is not None

    [listed] = await rt.list()
    assert listed.instance_id == created.instance_id
    assert (listed.replica_id, listed.workload, listed.namespace, listed.spec_hash, listed.generation) == (
        "r1", "web", "team", "h1", 7)
    assert listed.state is InstanceState.RUNNING
    with podman_target.client() as client:  # labels and name as Podman sees them
        attrs = client.containers.get(created.instance_id).attrs
    assert attrs["Config"]["Labels"][LABEL_NODE] == rt.node_id and attrs["Config"]["Labels"]["team"] == "a"
    assert attrs["Name"] == container_name(rt.owner.cluster, rt.node_id, "r1")
    assert attrs["HostConfig"]["RestartPolicy"]["Name"] in ("", "no")

    result = await rt.exec(created.instance_id, ["id"], timeout_s=10)
    assert result.exit_code == 0 and b"uid=0(root)" in result.output
    failing = await rt.exec(created.instance_id, ["sh", "-c", "echo out; echo err >&2; exit 3"], timeout_s=10)
    assert failing.exit_code == 3 and b"out" in failing.output and b"err" in failing.output

    t0 = time.monotonic()
    await rt.stop(created.instance_id, timeout_s=1)
    assert time.monotonic() - t0 < 8
    stopped = await wait_state(rt, created.instance_id, InstanceState.EXITED)
    assert stopped.exit_code == 137  # sleep as PID 1 ignores SIGTERM: killed after the timeout
    assert stopped.finished_at is not None and stopped.started_at is not None
    await rt.stop(created.instance_id, timeout_s=1)  # stopping a stopped instance is fine

    restarted = await rt.start(created.instance_id)
    assert restarted.instance_id == created.instance_id and restarted.state is InstanceState.RUNNING

    await rt.remove(created.instance_id)
    assert await rt.list() == []
    await rt.remove(created.instance_id)  # removing a missing one is fine
    await rt.stop(created.instance_id, timeout_s=1)


async def test_other_nodes_instances_are_not_listed(rt: PodmanRuntime, podman_target: PodmanTarget) -> None:
    other = podman_target.runtime(new_node())
    try:
        theirs = await other.create(make_spec("r1"), 1)
        ours = await rt.create(make_spec("r2"), 1)
        assert [i.instance_id for i in await rt.list()] == [ours.instance_id]
        assert [i.instance_id for i in await other.list()] == [theirs.instance_id]
    finally:
        await other.close()
        podman_target.cleanup(other.node_id)


async def test_logs_tail_and_env_args_workdir(rt: PodmanRuntime) -> None:
    script = 'for i in 1 2 3 4 5; do echo "line$i"; done; echo "$GREETING $0 $1 $(pwd)"; echo oops >&2'
    inst = await run(rt, make_spec(command=("sh", "-c"), args=(script, "a0", "a1"), env={"GREETING": "hi"},
                                   working_dir="/www"))
    exited = await wait_state(rt, inst.instance_id, InstanceState.EXITED)
    assert exited.exit_code == 0
    assert (await rt.logs(inst.instance_id, tail=3)).splitlines() == [b"line5", b"hi a0 a1 /www", b"oops"]
    assert len((await rt.logs(inst.instance_id, tail=100)).splitlines()) == 7
    assert await rt.logs(inst.instance_id, tail=0) == b""


async def test_published_port_endpoint_serves_http(rt: PodmanRuntime, podman_target: PodmanTarget) -> None:
    port = free_port()
    inst = await run(rt, make_spec(command=("httpd", "-f", "-p", "8080", "-h", "/www"), args=(),
                                   ports=(PortMapping(8080, host_port=port), PortMapping(9090))))
    endpoint = await rt.endpoint(inst.instance_id, 8080)
    assert endpoint == Endpoint("127.0.0.1", port)
    assert "cloudless test image" in http_get(f"http://127.0.0.1:{port}/")

    unpublished = await rt.endpoint(inst.instance_id, 9090)
    if podman_target.rootless:
        assert unpublished is None  # its address lives in the user's network namespace
    else:
        assert unpublished is not None and unpublished.port == 9090 and unpublished.host != "127.0.0.1"
        assert "cloudless test image" in http_get(f"http://{unpublished.host}:8080/")  # the bridge address


async def test_an_http_probe_on_an_unpublished_port_passes(rt: PodmanRuntime, podman_target: PodmanTarget) -> None:
    """Rootless, the port is reachable only inside the container: the probe runs wget there (busybox 1.35's
    `wget -T` crashes, so the exec's own timeout bounds it); rootful, it uses the bridge address."""
    inst = await run(rt, make_spec(command=("httpd", "-f", "-p", "8080", "-h", "/www"), args=(),
                                   ports=(PortMapping(8080),)))
    probe = Probe(kind=ProbeKind.HTTP, port=8080, path="/", timeout_s=5.0)
    deadline = time.monotonic() + 30
    result = await run_probe(rt, inst.instance_id, probe)
    while not result.success and time.monotonic() < deadline:  # httpd may still be starting
        await asyncio.sleep(0.5)
        result = await run_probe(rt, inst.instance_id, probe)
    assert result.success, result
    missing = await run_probe(rt, inst.instance_id, Probe(kind=ProbeKind.HTTP, port=8080, path="/nope", timeout_s=5.0))
    assert not missing.success


async def test_empty_dir_volumes(rt: PodmanRuntime, podman_target: PodmanTarget) -> None:
    spec = make_spec(volumes=(VolumeMount("scratch", "/data", medium="Memory", size_limit_bytes=4 * MiB),
                              VolumeMount("cache", "/cache")))
    inst = await run(rt, spec)
    mounts = await rt.exec(inst.instance_id, ["grep", "-E", " /(data|cache) ", "/proc/mounts"], timeout_s=10)
    lines = mounts.output.decode().splitlines()
    data = [line for line in lines if " /data " in line]
    assert data and data[0].startswith("tmpfs /data tmpfs") and "size=4096k" in data[0], lines
    assert any(" /cache " in line for line in lines), lines
    write = await rt.exec(inst.instance_id, ["sh", "-c", "echo x > /cache/f && cat /cache/f"], timeout_s=10)
    assert write.output == b"x\n"

    with podman_target.client() as client:
        attrs = client.containers.get(inst.instance_id).attrs
        volumes = [m["Name"] for m in attrs["Mounts"] if m["Type"] == "volume"]
        assert len(volumes) == 1
        await rt.remove(inst.instance_id)
        assert not client.volumes.exists(volumes[0])  # anonymous: removed with the container


async def test_limits_applied_or_skipped_with_one_warning(
    rt: PodmanRuntime, podman_target: PodmanTarget, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="edge_agent.runtime.podman")
    inst = await run(rt, make_spec(memory_bytes=64 * MiB, cpu_millis=500))
    await run(rt, make_spec("r2", memory_bytes=32 * MiB))
    with podman_target.client() as client:
        host = client.info()["host"]
        hc = client.containers.get(inst.instance_id).attrs["HostConfig"]
    limit = await rt.exec(inst.instance_id, ["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"], timeout_s=10)
    warnings = [r for r in caplog.records if "cannot apply CPU/memory limits" in r.getMessage()]
    if podman_target.rootless and host["cgroupVersion"] == "v1":
        assert hc["Memory"] == 0 and hc["CpuQuota"] == 0
        assert len(warnings) == 1  # once per runtime, not per container
    else:
        assert hc["Memory"] == 64 * MiB and (hc["CpuQuota"], hc["CpuPeriod"]) == (50_000, 100_000)
        if host["cgroupVersion"] == "v1":
            assert limit.output.strip() == str(64 * MiB).encode()
        assert warnings == []
    assert (await wait_state(rt, inst.instance_id, InstanceState.RUNNING)).state is InstanceState.RUNNING


async def test_usage_of_running_instances(rt: PodmanRuntime, podman_target: PodmanTarget) -> None:
    inst = await run(rt, make_spec())
    usage = await rt.usage()  # never raises; rootless on cgroup v1 Podman has no stats at all
    if usage:
        assert set(usage) == {inst.instance_id}
        assert usage[inst.instance_id].memory_bytes and usage[inst.instance_id].cpu_percent is not None
    else:
        assert podman_target.rootless


async def test_killed_from_outside_shows_exited_with_code(rt: PodmanRuntime, podman_target: PodmanTarget) -> None:
    inst = await run(rt, make_spec())
    podman_target.cli("kill", "--signal", "KILL", inst.instance_id)
    exited = await wait_state(rt, inst.instance_id, InstanceState.EXITED)
    assert exited.exit_code == 137 and exited.finished_at is not None


async def test_exec_is_bounded_by_its_timeout(rt: PodmanRuntime) -> None:
    inst = await run(rt, make_spec())
    t0 = time.monotonic()
    with pytest.raises(RuntimeFailed, match="timed out"):
        await rt.exec(inst.instance_id, ["sleep", "30"], timeout_s=1)
    assert time.monotonic() - t0 < 4


async def test_missing_instances(rt: PodmanRuntime) -> None:
    with pytest.raises(InstanceNotFound):
        await rt.start("nope")
    with pytest.raises(InstanceNotFound):
        await rt.logs("nope", 5)
    with pytest.raises(InstanceNotFound):
        await rt.exec("nope", ["id"], 5)
    with pytest.raises(InstanceNotFound):
        await rt.endpoint("nope", 80)
    await rt.stop("nope", 1)
    await rt.remove("nope")


async def test_failed_start_and_missing_image(rt: PodmanRuntime) -> None:
    with pytest.raises(ImageUnavailable, match="not present"):
        await rt.create(make_spec(image="localhost/cloudless/absent:1"), 1)
    inst = await rt.create(make_spec(command=("/does-not-exist",)), 1)
    with pytest.raises(RuntimeFailed, match="does-not-exist"):
        await rt.start(inst.instance_id)


async def test_ensure_image(rt: PodmanRuntime) -> None:
    await rt.ensure_image(IMAGE)  # present: no pull
    lines: list[str] = []
    t0 = time.monotonic()
    with pytest.raises(ImageUnavailable, match=r"127\.0\.0\.1:1/nope:latest.*connection refused"):
        await rt.ensure_image("127.0.0.1:1/nope:latest", progress=lines.append)
    assert time.monotonic() - t0 < 15
    assert any("Trying to pull" in line for line in lines), lines
    assert [retry_delay(n, 1.0, 60.0) for n in range(9)] == [0, 1, 2, 4, 8, 16, 32, 60, 60]


async def test_runtime_starts_and_stops_its_own_service(tmp_path: Path) -> None:
    # root only (not parametrized over the podman_target fixture): a rootless service would belong to the test
    # user, whom this root test process does not impersonate; the rootless agent tests cover that path
    require_binary("podman")
    sock = tmp_path / "own" / "podman.sock"
    unreachable = PodmanRuntime(node_id="x", cluster=TEST_CLUSTER, socket_path=sock, start_service=False)
    with pytest.raises(RuntimeUnavailable, match="no Podman service"):
        await unreachable.list()
    await unreachable.close()

    runtime = PodmanRuntime(node_id=new_node(), cluster=TEST_CLUSTER, socket_path=sock, containers_conf=CONF,
                            podman_binary=require_podman())
    t0 = time.monotonic()
    assert (await runtime.info()).rootless is False
    print(f"service start + info: {time.monotonic() - t0:.3f}s")
    assert runtime._service.running
    await runtime.close()
    assert not socket_answers(sock)


async def test_the_fixtures_cleanup_removes_a_nodes_containers(podman_target: PodmanTarget) -> None:
    """The teardown every Podman test relies on: it removed nothing while its label filter matched nothing, and each
    run left dozens of containers behind, some running."""
    runtime = podman_target.runtime(new_node())
    try:
        await run(runtime, make_spec())
        assert len(await runtime.list()) == 1
        podman_target.cleanup(runtime.node_id)
        assert await runtime.list() == []
    finally:
        await runtime.close()
        podman_target.cleanup(runtime.node_id)

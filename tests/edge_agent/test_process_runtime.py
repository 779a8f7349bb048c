"""ProcessRuntime with real processes (fast, no daemons): lifecycle, a workload that ignores SIGTERM, the
workload's environment kept away from the wrapper, re-adoption by a new runtime on the same directory, and the
log of a running workload rotated by the agent's upkeep."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from broker.wire import ReplicaSpec
from edge_agent.runtime.base import InstanceState
from edge_agent.runtime.process import ProcessRuntime


def spec(rid: str, *command: str, env: dict[str, str] | None = None) -> ReplicaSpec:
    return ReplicaSpec(replica_id=rid, workload=rid.split("-", maxsplit=1)[0], spec_hash="h", command=command,
                       env=env or {})


async def test_lifecycle_and_re_adoption(tmp_path: Path) -> None:
    rt = ProcessRuntime(node_id="n", cluster="c1", root=tmp_path)
    inst = await rt.create(spec("web-0", "sh", "-c", "echo hello; sleep 30"), 1)
    await rt.start(inst.instance_id)
    (running,) = await rt.list()
    assert running.state is InstanceState.RUNNING
    again = ProcessRuntime(node_id="n", cluster="c1", root=tmp_path)  # a restarted agent finds it from the directory
    assert [(i.instance_id, i.state) for i in await again.list()] == [(inst.instance_id, InstanceState.RUNNING)]
    await asyncio.sleep(0.2)
    assert b"hello" in await again.logs(inst.instance_id, 5)
    await again.stop(inst.instance_id, 2.0)
    (stopped,) = await again.list()
    assert stopped.state is InstanceState.EXITED
    await again.remove(inst.instance_id)
    assert await again.list() == []
    assert await ProcessRuntime(node_id="other", cluster="c1", root=tmp_path).list() == []


async def test_a_workload_ignoring_sigterm_is_killed_at_the_deadline(tmp_path: Path) -> None:
    rt = ProcessRuntime(node_id="n", cluster="c1", root=tmp_path)
    inst = await rt.create(spec("stubborn-0", "sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"), 1)
    await rt.start(inst.instance_id)
    await asyncio.sleep(0.3)
    pid = json.loads((tmp_path / inst.instance_id / "run.json").read_text())["pid"]
    await rt.stop(inst.instance_id, 0.5)
    await asyncio.sleep(0.1)
    try:
        os.killpg(pid, 0)
        alive = [p for p in psutil.process_iter(["pid"]) if os.getpgid(p.pid) == pid]
    except ProcessLookupError:
        alive = []
    assert alive == [], "a process of the stopped workload is still running"
    (stopped,) = await rt.list()
    assert stopped.state is InstanceState.EXITED and stopped.exit_code == 137


async def test_the_workload_env_reaches_the_workload_only(tmp_path: Path) -> None:
    rt = ProcessRuntime(node_id="n", cluster="c1", root=tmp_path)
    inst = await rt.create(spec("env-0", "sh", "-c", "echo V=$MY_VAR; sleep 30", env={"MY_VAR": "x1"}), 1)
    await rt.start(inst.instance_id)
    await asyncio.sleep(0.3)
    wrapper = psutil.Process(json.loads((tmp_path / inst.instance_id / "run.json").read_text())["pid"])
    assert "MY_VAR" not in wrapper.environ()  # the wrapper (root when switching users) never sees it
    assert b"V=x1" in await rt.logs(inst.instance_id, 5)
    await rt.remove(inst.instance_id)


async def wait_for_file(path: Path, check: Callable[[bytes], bool], what: str) -> bytes:
    for _ in range(200):  # 10 s at most
        data = path.read_bytes() if path.exists() else b""
        if check(data):
            return data
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within 10 s: {what}")


async def test_a_running_workloads_log_is_rotated_and_it_keeps_writing_to_the_emptied_file(tmp_path: Path) -> None:
    """Past `log_rotate_bytes` the log is copied to log.1 and emptied while the process runs on; its next line
    lands at the start of the emptied file (append mode: no hole of NUL bytes), and `logs` spans both files."""
    rt = ProcessRuntime(node_id="n", cluster="c1", root=tmp_path, log_rotate_bytes=4096)
    go = tmp_path / "go"
    script = f"i=0; while [ $i -lt 600 ]; do echo line-$i; i=$((i+1)); done; " \
             f"while [ ! -e {go} ]; do sleep 0.05; done; echo after-rotation; sleep 30"
    inst = await rt.create(spec("chatty-0", "sh", "-c", script), 1)
    await rt.start(inst.instance_id)
    try:
        d = tmp_path / inst.instance_id
        await wait_for_file(d / "log", lambda data: b"line-599\n" in data, "600 lines logged (over 4 KiB)")
        await rt.maintain()
        assert (d / "log.1").read_bytes().splitlines()[-1] == b"line-599" and (d / "log").read_bytes() == b""
        go.touch()
        after = await wait_for_file(d / "log", lambda data: data != b"", "a line after the rotation")
        assert after == b"after-rotation\n"
        assert await rt.logs(inst.instance_id, 3) == b"line-598\nline-599\nafter-rotation\n"
        await rt.maintain()  # under the limit: left alone
        rotated = (d / "log.1").read_bytes()  # the newest 4 KiB of what was rotated away
        assert (d / "log").read_bytes() == b"after-rotation\n"
        assert 0 < len(rotated) <= 4096 and b"line-0\n" not in rotated
    finally:
        await rt.stop(inst.instance_id, 2.0)


async def test_upkeep_skips_instances_without_a_log_and_a_failed_copy_still_empties_the_log(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An instance created but never started has no log; a stray file in the root is no instance: both are
    skipped quietly. When the copy to log.1 fails (here: log.1.tmp is a directory, as a full disk would fail
    it), the log is emptied anyway and nothing half-copied is left behind."""
    rt = ProcessRuntime(node_id="n", cluster="c1", root=tmp_path, log_rotate_bytes=10)
    await rt.create(spec("idle-0", "sleep", "1"), 1)  # never started
    (tmp_path / "stray").write_text("x")
    broken = tmp_path / "p-broken"
    broken.mkdir()
    (broken / "log").write_bytes(b"x" * 100)
    (broken / "log.1.tmp").mkdir()
    with caplog.at_level(logging.WARNING):
        await rt.maintain()
    assert (broken / "log").read_bytes() == b"" and not (broken / "log.1").exists()
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [f"cannot rotate {broken / 'log'}"]


async def test_another_cluster_s_node_of_the_same_name_is_never_listed(tmp_path: Path) -> None:
    """Issue 16: two clusters on one machine, both with a node `local`: neither agent sees (and so never stops as an
    orphan) the other's instances; one made before instances carried a cluster label is adopted only by the agent
    whose local state knows its replica."""
    ours = ProcessRuntime(node_id="local", cluster="aaaa", root=tmp_path)
    inst = await ours.create(spec("web-0", "sleep", "30"), 1)
    assert [i.instance_id for i in await ours.list()] == [inst.instance_id]
    assert await ProcessRuntime(node_id="local", cluster="bbbb", root=tmp_path).list() == []
    meta = tmp_path / inst.instance_id / "meta.json"
    doc = json.loads(meta.read_text())
    del doc["labels"]["cloudless.cluster"]  # as an agent before cluster ids wrote it
    meta.write_text(json.dumps(doc))
    assert await ProcessRuntime(node_id="local", cluster="bbbb", root=tmp_path).list() == []
    knows = ProcessRuntime(node_id="local", cluster="aaaa", root=tmp_path, adopt=frozenset({"web-0"}))
    assert [i.instance_id for i in await knows.list()] == [inst.instance_id]

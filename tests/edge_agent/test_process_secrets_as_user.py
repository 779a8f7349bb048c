"""Issue 16, Medium 8: a root agent on the process runtime runs a workload as another uid (runAsUser) with a secret
in env — the workload, after setpriv switched its ids, must reach and source its env.sh (it crash-looped on
`env.sh: Permission denied`, because the directories above the file were root's 0700); and a process that exits
non-zero says why in the instance's error (exit code and last log line), never an empty message."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker import wire
from edge_agent.runtime.base import Instance, InstanceState
from edge_agent.runtime.process import ProcessRuntime
from edge_agent.secrets import SecretFiles, SecretVault
from tests.edge_agent.builders import make_spec
from tests.edge_agent.test_secrets import KEY, NODE, box
from tests.need import require_root, unavailable

NOBODY = 65534


@pytest.fixture
def shm() -> Iterator[Path]:
    """A tmpfs directory like /dev/shm itself (world-traversable), so only our own modes decide who gets in."""
    d = Path(tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def proc_root() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp())
    d.chmod(0o711)
    yield d / "process"
    shutil.rmtree(d, ignore_errors=True)


async def exited(rt: ProcessRuntime, instance_id: str) -> Instance:
    for _ in range(200):
        (inst,) = [i for i in await rt.list() if i.instance_id == instance_id]
        if inst.state is InstanceState.EXITED:
            return inst
        await asyncio.sleep(0.05)
    raise AssertionError(f"{instance_id} did not exit")


async def test_root_agent_runs_a_workload_as_another_user_with_its_secret_env(shm: Path, proc_root: Path) -> None:
    require_root("a root agent switches a workload to another user")
    if shutil.which("setpriv") is None:
        unavailable("setpriv is missing: install util-linux")
    value = "pa55-" + os.urandom(6).hex()
    files = SecretFiles(NODE, SecretVault(NODE, lambda: KEY), shm, cluster="c1")
    spec = make_spec("job-0", command=("/bin/sh", "-c", 'printf "uid=%s pw=%s\\n" "$(id -u)" "$DB_PASSWORD"'),
                     secrets=(box("db", 1, {"password": value.encode()}),),
                     secret_env=(wire.SecretEnv(name="DB_PASSWORD", secret="db", key="password"),),
                     security=wire.Security(run_as_user=NOBODY))
    other = make_spec("other-0", secrets=(box("db", 1, {"password": b"not-yours"}),),
                      secret_env=(wire.SecretEnv(name="DB_PASSWORD", secret="db", key="password"),))
    files.materialize(other)  # a replica running as root: its files stay root's alone
    rt = ProcessRuntime(node_id=NODE, cluster="c1", root=proc_root)
    inst = await rt.create(spec, 1, files.materialize(spec, owner=(NOBODY, NOBODY)))
    await rt.start(inst.instance_id)
    done = await exited(rt, inst.instance_id)
    log = (await rt.logs(inst.instance_id, 20)).decode()
    assert (done.exit_code, log) == (0, f"uid={NOBODY} pw={value}\n"), done.error
    env_file = files.replica_dir("job-0") / "env" / "env.sh"  # type: ignore[operator]
    st = env_file.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (NOBODY, 0o400)  # the file is its user's alone
    other_dir = files.replica_dir("other-0")
    assert other_dir is not None and stat.S_IMODE(other_dir.stat().st_mode) == 0o700  # a root replica's stays shut
    await rt.remove(inst.instance_id)


async def test_a_process_that_fails_says_why(tmp_path: Path) -> None:
    rt = ProcessRuntime(node_id=NODE, cluster="c1", root=tmp_path)
    inst = await rt.create(make_spec("bad-0", command=("/bin/sh", "-c", "echo starting; echo 'db: refused' >&2; "
                                                       "exit 3")), 1)
    await rt.start(inst.instance_id)
    done = await exited(rt, inst.instance_id)
    assert done.exit_code == 3
    assert done.error == "exited with code 3: db: refused"
    ok = await rt.create(make_spec("ok-0", command=("true",)), 1)
    await rt.start(ok.instance_id)
    assert (await exited(rt, ok.instance_id)).error == ""

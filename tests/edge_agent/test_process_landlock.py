"""Issue 16, Medium 8: a process workload that runs as the agent's own user (an unprivileged agent cannot switch
users) cannot read the agent's private key, the agent's other files or another replica's secrets, nor rewrite its
own instance's metadata — Landlock, built by the runtime and applied between fork and exec — while its own secret
env, its work directory and the rest of the host stay as they were. Real processes; skipped without Landlock."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from broker import wire
from edge_agent.runtime import landlock
from edge_agent.runtime.base import InstanceState
from edge_agent.runtime.process import ProcessRuntime
from edge_agent.secrets import SecretFiles, SecretVault
from tests.edge_agent.builders import make_spec
from tests.edge_agent.test_secrets import KEY, NODE, box
from tests.need import unavailable

ABI = landlock.abi()
ENV = (wire.SecretEnv(name="DB_PASSWORD", secret="db", key="password"),)

PROBE = """
try() { if "$@" >/dev/null 2>&1; then echo "$1 $2: yes"; else echo "$1 $2: no"; fi; }
try cat "$AGENT_KEY"
try cat "$OTHER_ENV"
try ls "$AGENT_DIR/identity"  # names are listable (READ_DIR is inherited), never contents
try cat /etc/passwd
try tee "$HOME/mine" </dev/null
try tee -a "$HOME/../meta.json" </dev/null
printf 'secret: %s\\n' "$DB_PASSWORD"
"""


def test_the_plan_grants_the_way_down_but_never_the_private_dirs(tmp_path: Path) -> None:
    tree = {"/": ["usr", "home", "tmp"], "/home": ["u", "v"], "/home/u": ["data", "src"]}
    rules = landlock.plan([Path("/home/u/data"), Path("/home/u/data/sub")], [(Path("/home/u/data/p/1"), 5)],
                          everything=7, listdir=lambda d: tree.get(d, []))
    assert [(r.path, r.access) for r in rules] == [
        ("/", landlock.READ_DIR), ("/tmp", 7), ("/usr", 7),  # /home is on the way down: listed, not granted
        ("/home", landlock.READ_DIR), ("/home/v", 7),
        ("/home/u", landlock.READ_DIR), ("/home/u/src", 7),  # data (and data/sub beneath it): no rule
        ("/home/u/data/p/1", 5)]  # what is the workload's own, on top


async def test_a_confined_workload_reads_its_own_secret_and_nothing_of_the_agent_s(tmp_path: Path) -> None:
    if ABI < 1:
        unavailable("the kernel has no Landlock (5.13+ with CONFIG_SECURITY_LANDLOCK)")
    agent = tmp_path / "agent"
    (agent / "identity").mkdir(parents=True)
    key = agent / "identity" / "node.key"
    key.write_text("PRIVATE KEY")
    (tmp_path / "shm").mkdir()
    files = SecretFiles(NODE, SecretVault(NODE, lambda: KEY), tmp_path / "shm", cluster="c1")
    other = files.materialize(make_spec("other-0", secrets=(box("db", 1, {"password": b"theirs"}),), secret_env=ENV))
    spec = make_spec("job-0", command=("/bin/sh", "-c", PROBE), secrets=(box("db", 1, {"password": b"mine"}),),
                     secret_env=ENV, env={"AGENT_KEY": str(key), "AGENT_DIR": str(agent),
                                          "OTHER_ENV": str(other.env_dir / "env.sh")})  # type: ignore[operator]
    assert files.top is not None
    rt = ProcessRuntime(node_id=NODE, cluster="c1", root=agent / "process", private=(agent, files.top),
                        landlock_abi=ABI)
    inst = await rt.create(spec, 1, files.materialize(spec))
    d = agent / "process" / inst.instance_id
    await rt.start(inst.instance_id)
    for _ in range(200):
        (done,) = await rt.list()
        if done.state is InstanceState.EXITED:
            break
        await asyncio.sleep(0.05)
    assert done.exit_code == 0, done.error
    assert (await rt.logs(inst.instance_id, 20)).decode().splitlines() == [
        f"cat {key}: no", f"cat {spec.env['OTHER_ENV']}: no", f"ls {agent}/identity: yes",
        "cat /etc/passwd: yes", f"tee {d}/work/mine: yes", "tee -a: no", "secret: mine"]
    probe = await rt.exec(inst.instance_id, ["cat", str(key)], 5.0)  # a probe or `cloudless exec` is confined too
    assert probe.exit_code != 0 and b"PRIVATE" not in probe.output
    assert (await rt.exec(inst.instance_id, ["cat", "/etc/hostname"], 5.0)).exit_code == 0
    assert key.read_text() == "PRIVATE KEY"  # the agent itself is not confined


async def test_a_root_agent_does_not_confine_with_landlock(tmp_path: Path) -> None:
    rt = ProcessRuntime(node_id=NODE, cluster="c1", root=tmp_path / "p")
    assert rt.landlock_abi == (0 if os.geteuid() == 0 else ABI)


def test_the_node_says_what_separates_process_workloads_from_the_agent() -> None:
    from cloudless import render
    from edge_agent.facts import workload_isolation

    assert workload_isolation("podman", 1000, 0) == ""
    assert workload_isolation("process", 1000, 6).startswith("landlock (ABI 6)")
    assert workload_isolation("process", 0, 6).startswith("by user")
    none = workload_isolation("process", 1000, 0)
    assert none.startswith("none: workloads run as the agent's user and can read its files") and len(none) <= 160
    shown = render.describe_node({"id": "n", "runtime": "process", "workloadIsolation": none}, [], [], 0.0)
    assert f"Isolation:     {none}" in shown


def test_the_default_private_list_covers_an_up_data_dir_and_the_cli_config(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Under `cloudless up` the agent's data dir sits next to the coordinator's CA key and the admin credentials;
    a confined workload must not read those, nor the CLI's config (its admin token) — review finding."""
    from edge_agent.runtime.process import default_private

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    (tmp_path / "data" / "coordinator" / "pki").mkdir(parents=True)
    (tmp_path / "data" / "agent" / "instances").mkdir(parents=True)
    private = default_private(tmp_path / "data" / "agent" / "instances")
    assert tmp_path / "data" in private and tmp_path / "data" / "agent" in private
    assert tmp_path / "cfg" / "cloudless" in private
    alone = default_private(tmp_path / "solo" / "instances")  # a device's own agent dir: no cluster dir around it
    assert tmp_path not in alone

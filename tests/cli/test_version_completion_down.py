"""`cloudless version`, `cloudless completion bash|zsh` (run in a real bash) and `cloudless down` (a real process
of the process runtime; Podman through a fake `podman` on PATH that records what it is asked)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from cloudless import __version__
from cloudless.client import write_config
from cloudless.down import containers_to_stop, processes_to_stop
from tests.cli.fake_coordinator import FakeCoordinator
from tests.integration.conftest import require_binary

# ---- version -----------------------------------------------------------------------------------------------------


def test_version_prints_the_client_and_the_coordinator(fake: FakeCoordinator, cli) -> None:
    r = cli("version")
    assert r.code == 0
    assert r.out.splitlines() == [f"client       cloudless {__version__}",
                                  f"coordinator  cloudless 9.9.9-fake at {fake.url}"]  # type: ignore[attr-defined]


def test_version_without_a_coordinator_still_prints_the_client(cli) -> None:
    r = cli("version", "--server", "http://127.0.0.1:1")
    assert r.code == 1
    assert r.out == f"client       cloudless {__version__}\n"
    assert "coordinator  not reachable" in r.err


def test_version_client_only_asks_nothing(fake: FakeCoordinator, cli) -> None:
    r = cli("version", "--client")
    assert (r.code, r.out) == (0, f"client       cloudless {__version__}\n")
    assert fake.requests == []


# ---- completion ----------------------------------------------------------------------------------------------------

def _complete(script: str, line: str) -> list[str]:
    """What bash completes for `line` (the last word is being completed), with the generated script loaded."""
    words = line.split(" ")
    program = (script + "\nCOMP_WORDS=(" + " ".join(f"'{w}'" for w in words) + f")\nCOMP_CWORD={len(words) - 1}\n"
               "_cloudless\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n")
    out = subprocess.run(["bash", "--norc", "--noprofile", "-c", program], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    return [w for w in out.splitlines() if w]


@pytest.fixture(scope="module")
def bash_script() -> str:
    require_binary("bash")  # skips on a developer machine without it, fails under CI
    from cloudless.cli import build_parser
    from cloudless.completion import script
    return script("bash", build_parser([]))


@pytest.mark.parametrize(("line", "expected", "absent"), [
    ("cloudless ge", {"get"}, {"apply"}),
    ("cloudless ", {"apply", "get", "logs", "version", "completion", "down", "token", "up"}, set()),
    ("cloudless get ", {"nodes", "workloads", "events"}, {"apply"}),
    ("cloudless token ", {"create", "list", "revoke"}, {"get"}),
    ("cloudless token create --t", {"--ttl"}, set()),
    ("cloudless logs --f", {"--follow"}, set()),
    ("cloudless --server x logs web --ta", {"--tail"}, set()),
    ("cloudless completion ", {"bash", "zsh"}, set()),
], ids=["prefix", "commands", "kinds", "subcommands", "nested-option", "option", "after-options", "choices"])
def test_bash_completion(bash_script: str, line: str, expected: set[str], absent: set[str]) -> None:
    got = set(_complete(bash_script, line))
    assert expected <= got, (line, sorted(got))
    assert not absent & got


def test_completion_command_prints_scripts(cli) -> None:
    bash = cli("completion", "bash")
    assert bash.code == 0 and "complete -o default -F _cloudless cloudless" in bash.out
    zsh = cli("completion", "zsh")
    assert zsh.code == 0 and zsh.out.startswith("#compdef cloudless") and "bashcompinit" in zsh.out
    assert cli("completion", "fish").code == 2


# ---- down ------------------------------------------------------------------------------------------------------------

def test_containers_to_stop_takes_only_this_nodes() -> None:
    listing = [{"Id": "a" * 64, "Labels": {"cloudless.node": "local-1", "cloudless.namespace": "default",
                                           "cloudless.workload": "hello", "cloudless.replica": "hello-1"}},
               {"Id": "b" * 64, "Labels": {"cloudless.node": "other"}}, {"Id": "c" * 64, "Labels": None}]
    assert [(r.ident, r.what) for r in containers_to_stop(listing, "local-1")] == [
        ("a" * 12, "default/hello replica hello-1")]


def test_processes_to_stop_skips_dead_and_reused_pids() -> None:
    instances = {"p-live": ({"labels": {}}, {"pid": 10, "pid_created": 100.0}),
                 "p-reused": ({"labels": {}}, {"pid": 11, "pid_created": 100.0}),
                 "p-dead": ({"labels": {}}, {"pid": 12, "pid_created": 100.0}),
                 "p-never": ({"labels": {}}, {"pid": None})}
    assert [r.ident for r in processes_to_stop(instances, {10: 100.4, 11: 500.0})] == ["p-live"]


def _cluster_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    (data / "agent").mkdir(parents=True)
    (data / "agent" / "node-id").write_text("local-test\n")
    return data


def _fake_podman(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listing: list[dict[str, object]]) -> Path:
    bin_dir, calls = tmp_path / "bin", tmp_path / "podman-calls"
    bin_dir.mkdir()
    (tmp_path / "listing.json").write_text(json.dumps(listing))
    script = bin_dir / "podman"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n"
                      f"[ \"$1\" = ps ] && cat {tmp_path / 'listing.json'}\nexit 0\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return calls


def test_down_stops_the_local_nodes_processes_and_containers(tmp_path: Path, cli,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    data = _cluster_dir(tmp_path)
    calls = _fake_podman(tmp_path, monkeypatch, [{"Id": "f" * 64, "Labels": {
        "cloudless.node": "local-test", "cloudless.namespace": "default", "cloudless.workload": "hello",
        "cloudless.replica": "hello-1"}}])
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        inst = data / "agent" / "process" / "p-hello-2-abc"
        inst.mkdir(parents=True)
        (inst / "meta.json").write_text(json.dumps({"labels": {"cloudless.namespace": "default",
                                                               "cloudless.workload": "hello",
                                                               "cloudless.replica": "hello-2"}}))
        (inst / "run.json").write_text(json.dumps({"pid": sleeper.pid,
                                                   "pid_created": psutil.Process(sleeper.pid).create_time()}))
        dry = cli("down", "--data-dir", str(data), "--dry-run")
        assert dry.code == 0 and sleeper.poll() is None
        assert "would stop process p-hello-2-abc (default/hello replica hello-2)" in dry.out
        r = cli("down", "--data-dir", str(data))
        assert r.code == 0, r.err
        assert "stopped container ffffffffffff (default/hello replica hello-1)" in r.out
        assert "stopped process p-hello-2-abc (default/hello replica hello-2)" in r.out
        deadline = time.monotonic() + 15
        while sleeper.poll() is None:
            assert time.monotonic() < deadline, "the process was not stopped"
            time.sleep(0.05)
        assert "ps --all --format json --filter label=cloudless.node=local-test" in calls.read_text()
        assert f"rm --force --time 10 {'f' * 12}" in calls.read_text()
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
        sleeper.wait()


def test_down_with_nothing_running_says_so(tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _cluster_dir(tmp_path)
    _fake_podman(tmp_path, monkeypatch, [])
    r = cli("down", "--data-dir", str(data))
    assert (r.code, r.out) == (0, f"nothing of node local-test is running (data dir {data.resolve()})\n")


def test_down_refuses_while_the_cluster_answers(fake: FakeCoordinator, tmp_path: Path, cli,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(Path(os.environ["XDG_CONFIG_HOME"]) / "cloudless" / "config.json",
                 fake.url, fake.token)  # type: ignore[attr-defined]
    calls = _fake_podman(tmp_path, monkeypatch, [])
    r = cli("down", "--data-dir", str(_cluster_dir(tmp_path)))
    assert r.code == 1 and "stop `cloudless up` first" in r.err
    assert not calls.exists(), "nothing may be stopped while the agent would start it again"

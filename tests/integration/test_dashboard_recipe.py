"""docs/observability.md's `mosquitto_sub` recipe works as written against a real `cloudless up`, from another machine.

The recipe is read from the document itself (the shell block that runs `mosquitto_sub`), so the document and this
test cannot drift: only `DATA_DIR`, `ADDR` and the port are filled in, and `-W`/`-C` bound the run. The "other
machine" is a network namespace joined to this host by a veth pair (its own network stack: it reaches the host only
at the host end's address, never over loopback); `cloudless up --advertise` names that address, and the client runs
inside the namespace with the dashboard identity's files `cloudless up` wrote. So the broker must listen there, its
certificate must name the address, and the ACL must let the dashboard read the mirror and the Home Assistant
discovery topics, and nothing else."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.integration.conftest import require_binary
from tests.integration.test_up import Up
from tests.need import require_root

pytestmark = pytest.mark.integration
DOC = Path(__file__).resolve().parents[2] / "docs" / "observability.md"


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)
    assert proc.returncode == 0, f"ip {' '.join(args)}: {proc.stderr}"


@contextlib.contextmanager
def other_machine() -> Iterator[tuple[str, list[str]]]:
    """A network namespace behind a veth pair: (this host's address as the namespace sees it, argv prefix that runs
    a command there). Removed afterwards."""
    n = os.getpid() % 250
    ns, host_if, peer_if = f"cl-dash-{os.getpid()}", f"cldh{os.getpid() % 100000}", f"cldn{os.getpid() % 100000}"
    host_ip, peer_ip = f"10.231.{n}.1", f"10.231.{n}.2"
    _ip("netns", "add", ns)
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", peer_if)
        _ip("link", "set", peer_if, "netns", ns)
        _ip("addr", "add", f"{host_ip}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        for args in (("addr", "add", f"{peer_ip}/30", "dev", peer_if), ("link", "set", peer_if, "up"),
                     ("link", "set", "lo", "up")):
            _ip("netns", "exec", ns, "ip", *args)
        yield host_ip, ["ip", "netns", "exec", ns]
    finally:
        subprocess.run(["ip", "link", "delete", host_if], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)


def documented_recipe() -> list[str]:
    """The `mosquitto_sub` command of docs/observability.md as argv, with `$D`/`DATA_DIR` left as `{D}`."""
    blocks = re.findall(r"```sh\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    block = next(b for b in blocks if "mosquitto_sub" in b)
    lines = block.replace("\\\n", " ").splitlines()
    data_var = next(line for line in lines if re.match(r"\s*D=", line))
    assert "DATA_DIR" in data_var, "the recipe says which directory D is"
    command = next(line for line in lines if line.strip().startswith("mosquitto_sub"))
    return [w.replace("$D", "{D}") for w in shlex.split(command, comments=True)]


@pytest.fixture
def up() -> Iterator[tuple[Up, str, list[str]]]:
    require_root("a network namespace plays the other machine")
    require_binary("mosquitto_sub")
    require_binary("ip")
    u = Up(Path(tempfile.mkdtemp(prefix="cl-dash-")))
    try:
        with other_machine() as (address, there):
            u.extra = ["--advertise", address, "--agent-runtime", "process", "--no-relay"]
            u.start()
            yield u, address, there
    finally:
        if u.proc is not None and u.proc.poll() is None:
            u.stop()
        for proc in u.processes():
            with contextlib.suppress(psutil.Error):
                proc.kill()
        for run in (u.data / "agent" / "process").glob("*/run.json"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                os.killpg(json.loads(run.read_text())["pid"], signal.SIGKILL)
        shutil.rmtree(u.workdir, ignore_errors=True)


def _run(argv: list[str], *, topic: str | None, count: int, wait_s: int) -> list[str]:
    """Run `argv` (prefixed to run on the other machine), with `topic` in place of its `-t` topic."""
    if topic is not None:
        argv = [*argv[: argv.index("-t") + 1], topic, *argv[argv.index("-t") + 2:]]
    proc = subprocess.run([*argv, "-C", str(count), "-W", str(wait_s)], capture_output=True, text=True,
                          timeout=wait_s + 30, check=False)
    assert "Error" not in proc.stderr and "error" not in proc.stderr, f"{shlex.join(argv)}: {proc.stderr}"
    return proc.stdout.splitlines()


def test_documented_mosquitto_sub_recipe_reads_the_mirror_from_another_machine(
    up: tuple[Up, str, list[str]],
) -> None:
    u, address, there = up
    recipe = documented_recipe()
    assert recipe[0] == "mosquitto_sub" and "ADDR" in recipe and "1883" in recipe, recipe
    assert recipe[recipe.index("-t") + 1] == "cloudless/v1/dash/#"
    argv = [w.format(D=u.data) for w in recipe]
    argv = [*there, *(address if w == "ADDR" else str(u.mqtt) if w == "1883" else w for w in argv)]
    # the namespace reaches this host only at the advertised address: not over its own loopback
    local = subprocess.run([*argv[: argv.index("-h") + 1], "127.0.0.1", *argv[argv.index("-h") + 2:], "-C", "1",
                            "-W", "5"], capture_output=True, text=True, timeout=40, check=False)
    assert local.returncode != 0 and local.stdout == "", local

    # the cluster document and the local node's, retained (published once the coordinator has seen the node)
    lines = _run(argv, topic=None, count=2, wait_s=90)
    got = {line.split(" ", 1)[0]: json.loads(line.split(" ", 1)[1]) for line in lines}
    assert got.get("cloudless/v1/dash/cluster", {}).get("nodes_total", 0) >= 1, lines
    node = got.get(f"cloudless/v1/dash/node/{u.node}") or json.loads(
        _run(argv, topic=f"cloudless/v1/dash/node/{u.node}", count=1, wait_s=60)[0].split(" ", 1)[1])
    assert node["node"] == u.node and "online" in node

    # Home Assistant discovery: the same identity reads homeassistant/#, one config per entity of the node
    discovery = _run(argv, topic="homeassistant/#", count=6, wait_s=60)
    assert len(discovery) == 6, discovery
    for line in discovery:
        topic, payload = line.split(" ", 1)
        assert re.fullmatch(r"homeassistant/(sensor|binary_sensor)/cloudless_[a-z0-9_]+/\w+/config", topic), topic
        assert json.loads(payload)["state_topic"] == f"cloudless/v1/dash/node/{u.node}"

    # nothing else: the nodes' own topics are refused to the dashboard (it sees nothing, not an error)
    assert _run(argv, topic="cloudless/v1/node/#", count=1, wait_s=5) == []

    # the rules the document states for MQTT Explorer and Home Assistant: `#` alone is refused, and so is a client
    # with a last will (Home Assistant's default, on homeassistant/status)
    everything = subprocess.run([*argv[: argv.index("-t")], "-t", "#", "-C", "1", "-W", "10"], capture_output=True,
                                text=True, timeout=40, check=False)
    assert everything.stdout == "" and "denied" in everything.stderr, everything
    will = subprocess.run([*argv, "--will-topic", "homeassistant/status", "--will-payload", "offline", "-C", "1",
                           "-W", "10"], capture_output=True, text=True, timeout=40, check=False)
    assert will.returncode != 0 and "not authorised" in will.stderr, will

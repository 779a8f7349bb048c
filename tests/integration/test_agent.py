"""The edge agent end to end: a real `cloudless agent` process, a real broker, real Podman (as root and as a
rootless user) and the process runtime. Desired state is published by hand, as a coordinator would."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest

from broker.wire import Presence, ReplicaState
from tests.edge_agent.builders import exec_probe, make_desired, make_spec
from tests.integration.agent_env import IMAGE, AgentProc, Observer, podman_ids, run_podman
from tests.integration.conftest import BrokerUnderTest, make_auth

pytestmark = pytest.mark.integration

MODES = ["podman-root", "podman-rootless", "process"]


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[BrokerUnderTest]:
    b = BrokerUnderTest(kind="embedded", workdir=tmp_path)
    b.passwords = make_auth(tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(params=MODES)
def agent(request: pytest.FixtureRequest, embedded: BrokerUnderTest) -> Iterator[AgentProc]:
    mode = request.param
    a = AgentProc(node_id="A", broker=embedded, runtime="process" if mode == "process" else "podman",
                  rootless=mode == "podman-rootless")
    if a.runtime == "podman":  # its own Podman service (stopped with the agent), never a stale shared one
        a.extra += ["--podman-socket", str(a.workdir / "podman.sock")]
    try:
        yield a
    finally:
        a.cleanup()


@pytest.fixture
async def observer(embedded: BrokerUnderTest) -> AsyncIterator[Observer]:
    async with Observer(embedded) as obs:
        yield obs


def spec(rid: str, agent: AgentProc, **kw: object):  # type: ignore[no-untyped-def]
    return make_spec(rid, workload=rid.rsplit("-", 1)[0], image=IMAGE if agent.runtime == "podman" else "",
                     command=("sleep", "300"), **kw)  # type: ignore[arg-type]


def kill_workload(agent: AgentProc, rid: str) -> None:
    """Kill a replica's process from outside the agent, as a crash would."""
    if agent.runtime == "podman":
        cid = podman_ids(agent.node_id, user=agent.user)[rid]
        run_podman(["kill", cid], user=agent.user)
        return
    for d in (agent.data_dir / "process").glob(f"p-{rid}-*"):
        wrapper = json.loads((d / "run.json").read_text())["pid"]
        for child in psutil.Process(wrapper).children():
            child.kill()
        return
    raise AssertionError(f"no process instance for {rid}")


def scrape(agent: AgentProc) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The agent's /metrics, parsed by prometheus-client's own parser: (name, sorted labels) -> value."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    assert agent.metrics_url.startswith("http://127.0.0.1:"), agent.metrics_url
    text = urllib.request.urlopen(agent.metrics_url, timeout=10).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def running_ids(agent: AgentProc) -> dict[str, tuple[str, float | None]]:
    """replica -> (instance id, start time) for running replicas, as the runtime itself reports them."""
    if agent.runtime == "podman":
        out = run_podman(["ps", "--filter", f"label=cloudless.node={agent.node_id}", "--format", "json"],
                         user=agent.user)
        return {c["Labels"]["cloudless.replica"]: (c["Id"], float(c["StartedAt"])) for c in json.loads(out or "[]")}
    result = {}
    for d in (agent.data_dir / "process").glob("p-*"):
        run = json.loads((d / "run.json").read_text())
        if not (d / "exit").exists() and psutil.pid_exists(run["pid"]):
            rid = json.loads((d / "meta.json").read_text())["labels"]["cloudless.replica"]
            result[rid] = (d.name, run["started_at"])
    return result


async def test_agent_runs_restarts_and_survives_the_control_plane(
    agent: AgentProc, observer: Observer, embedded: BrokerUnderTest
) -> None:
    agent.start()
    await observer.until(lambda: observer.status.get("A") is not None
                         and observer.status["A"].presence is Presence.ONLINE, 30, "agent online", agent)
    facts = observer.status["A"].facts
    assert facts.runtime == ("process" if agent.runtime == "process" else "podman")
    assert facts.rootless is (agent.rootless or (agent.runtime == "process" and os.geteuid() != 0))
    assert facts.cpu_count and facts.memory_bytes and facts.profile == "vps"

    # 1. desired state published by hand -> running -> observed
    web = spec("web-0", agent)
    t0 = time.monotonic()
    await observer.publish_desired(make_desired("A", web, generation=1))
    await observer.until(lambda: (r := observer.replica("A", "web-0")) is not None and r.state is ReplicaState.RUNNING,
                         60, "web-0 running", agent)
    print(f"\n[{agent.runtime}{'-rootless' if agent.rootless else ''}] desired publish -> running observed: "
          f"{time.monotonic() - t0:.2f}s")
    assert "web-0" in running_ids(agent)

    # 2. killed from outside -> restarted per policy (Always)
    kill_workload(agent, "web-0")
    await observer.until(lambda: (r := observer.replica("A", "web-0")) is not None and r.restarts >= 1
                         and r.state is ReplicaState.RUNNING, 30, "web-0 restarted after a kill", agent)

    # 3. a liveness probe that always fails -> restarted by the agent
    live = spec("live-0", agent, liveness=exec_probe("cat", "/nonexistent-cloudless", period=0.5, failures=2))
    await observer.publish_desired(make_desired("A", web, live, generation=2))
    await observer.until(lambda: (r := observer.replica("A", "live-0")) is not None and r.restarts >= 1,
                         60, "live-0 restarted for failing liveness", agent)
    assert "liveness" in observer.replica("A", "live-0").last_error  # type: ignore[union-attr]
    # the agent's own metrics tell the same story
    m = scrape(agent)
    assert m[("cloudless_agent_replica_restarts_total", (("replica", "web-0"),))] >= 1
    assert m[("cloudless_agent_replica_restarts_total", (("replica", "live-0"),))] >= 1
    assert m[("cloudless_agent_probe_failures_total", (("probe", "liveness"), ("replica", "live-0")))] >= 2
    assert m[("cloudless_agent_mqtt_connected", ())] == 1
    assert m[("cloudless_agent_local_state_writes_total", ())] >= 2
    assert m[("cloudless_agent_desired_generation", ())] == 2
    assert m[("cloudless_agent_memory_total_bytes", ())] > 0
    await observer.publish_desired(make_desired("A", web, generation=3))
    await observer.until(lambda: observer.replica("A", "live-0") is None, 30, "live-0 removed", agent)

    # 4. broker stopped -> the workload keeps running, untouched
    before = running_ids(agent)["web-0"]
    embedded.stop()
    await asyncio.sleep(3)
    assert running_ids(agent).get("web-0") == before

    # 5. agent killed while the broker is down, and the workload dies with the device's power cut;
    #    the agent restarts and restores it from local state alone
    agent.kill(signal.SIGKILL)
    kill_workload(agent, "web-0")
    agent.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and running_ids(agent).get("web-0", before) == before:
        await asyncio.sleep(0.2)
    restored = running_ids(agent).get("web-0")
    assert restored is not None and restored != before, f"not restored from local state:\n{agent.log_tail()}"

    # 6. broker back (with an empty retained store): the agent reconnects, reports, restarts nothing healthy
    embedded.start()
    observer.observed.clear()
    await observer.until(lambda: observer.replica("A", "web-0") is not None
                         and observer.replica("A", "web-0").state is ReplicaState.RUNNING,  # type: ignore[union-attr]
                         60, "observed state after the broker came back", agent)
    await asyncio.sleep(3)
    assert running_ids(agent).get("web-0") == restored, "a healthy workload was restarted on reconnect"

    # 7. a gate tripped through injected sensor readings -> unschedulable within a heartbeat; then recovers
    agent.set_sensors(json.dumps({"temperatures": {"cpu": 120.0}}))
    await observer.until(lambda: not observer.status["A"].schedulable, 10, "unschedulable on overheat", agent)
    assert any("cpu" in g for g in observer.status["A"].gates), observer.status["A"].gates
    m = scrape(agent)
    assert m[("cloudless_agent_temperature_celsius", (("sensor", "cpu"),))] == 120.0
    assert m[("cloudless_agent_schedulable", ())] == 0
    agent.set_sensors(json.dumps({"temperatures": {"cpu": 40.0}}))
    await observer.until(lambda: observer.status["A"].schedulable, 10, "schedulable again", agent)

"""End to end: a real broker, a real coordinator process and three real agents on real (rootful) Podman.

The tests share one cluster (module scope) and run in file order: each builds on the state the previous one
left, as an operator's session would. Every wait is bounded."""

from __future__ import annotations

import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coordinator.dashboard import NodeSummary, discovery
from tests.integration.agent_env import AgentProc
from tests.integration.cluster_env import ApiError, CoordinatorProc, agents_for, httpd_workload, until
from tests.integration.conftest import BrokerUnderTest, make_auth, require_binary

pytestmark = pytest.mark.integration
NODES = ["A", "B", "C"]


class Cluster:
    def __init__(self, broker: BrokerUnderTest, coord: CoordinatorProc, agents: list[AgentProc]) -> None:
        self.broker, self.coord, self.agents = broker, coord, agents
        self.victim = ""  # the node the kill test killed

    def logs(self) -> str:
        return self.coord.log_tail() + "".join(f"\n--- agent {a.node_id} ---\n{a.log_tail(30)}" for a in self.agents)

    def ready(self, name: str) -> int:
        return int(self.coord.workload(name)["status"]["ready"])

    def replicas(self, name: str) -> list[dict[str, Any]]:
        return list(self.coord.workload(name)["status"]["replicas"])


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    require_binary("podman")
    workdir = Path(tempfile.mkdtemp(prefix="cl-cluster-"))
    broker = BrokerUnderTest(kind="embedded", workdir=workdir)
    broker.passwords = make_auth(workdir)
    broker.start()
    coord = CoordinatorProc(broker, workdir, extra=["--lost-after", "5"])
    agents = agents_for(broker, NODES)
    try:
        coord.start()
        for a in agents:
            a.start()
        until(lambda: len([n for n in coord.request("GET", "/v1/nodes")["items"] if n["online"]]) == 3, 30,
              "3 nodes online", coord.log_tail)
        yield Cluster(broker, coord, agents)
    finally:
        for a in agents:
            a.cleanup()
        coord.stop()
        broker.stop()


def test_three_replicas_run_and_answer_http(cluster: Cluster) -> None:
    c = cluster.coord
    t0 = time.monotonic()
    created = c.apply(httpd_workload("web"))
    assert created["metadata"]["revision"] == 1
    until(lambda: cluster.ready("web") == 3, 60, "3 ready replicas of web", cluster.logs)
    print(f"\napply -> 3/3 ready (HTTP readiness probes passing): {time.monotonic() - t0:.2f}s")
    reps = cluster.replicas("web")
    assert sorted(r["node"] for r in reps) == NODES, "spread: node puts one replica on each node"
    assert all(r["state"] == "running" and r["ready"] for r in reps)
    # every replica serves HTTP (checked from inside, through the API's exec, over MQTT to each agent)
    for r in reps:
        out = c.request("POST", f"/v1/workloads/default/web/replicas/{r['id']}/exec",
                        {"command": ["wget", "-qO-", "http://127.0.0.1:8080/"], "timeoutSeconds": 10})
        assert out == {"exitCode": 0, "output": "cloudless test image\n"}
    logs = c.request("GET", f"/v1/workloads/default/web/replicas/{reps[0]['id']}/logs?tail=5")
    assert logs["node"] == reps[0]["node"]


def test_a_published_port_answers_on_the_node(cluster: Cluster) -> None:
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    doc = httpd_workload("pub", replicas=1, ports=[{"containerPort": 8080, "hostPort": port}])
    cluster.coord.apply(doc)
    until(lambda: cluster.ready("pub") == 1, 60, "pub ready", cluster.logs)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
    assert body == b"cloudless test image\n"
    cluster.coord.request("DELETE", "/v1/workloads/default/pub")
    until(lambda: _gone(cluster, "pub"), 30, "pub deleted", cluster.logs)


def _gone(cluster: Cluster, name: str) -> bool:
    try:
        cluster.coord.workload(name)
    except ApiError as exc:
        return exc.status == 404
    return False


def test_a_misspelled_field_is_rejected_with_its_path(cluster: Cluster) -> None:
    doc = httpd_workload("typo")
    doc["spec"]["replicaz"] = 2
    with pytest.raises(ApiError) as info:
        cluster.coord.apply(doc)
    assert info.value.status == 400
    err = info.value.body["error"]
    assert err["field"] == "spec.replicaz"
    assert "replicas" in err["errors"][0]["message"]  # the suggestion


def test_the_admission_policy_refuses_an_unsafe_workload_and_records_why(cluster: Cluster) -> None:
    doc = httpd_workload("unsafe")
    doc["spec"]["securityContext"] = {**doc["spec"]["securityContext"], "hostNetwork": True}
    with pytest.raises(ApiError) as info:
        cluster.coord.apply(doc)
    assert info.value.status == 403
    assert info.value.body["error"]["field"] == "spec.securityContext.hostNetwork"
    events = cluster.coord.request("GET", "/v1/events?object=workload/default/unsafe")["items"]
    reasons = [e["reason"] for e in events]
    assert "PolicyDeny" in reasons and reasons[-1] == "PolicyDenied"
    assert any("hostNetwork" in e["message"] for e in events if e["reason"] == "PolicyDeny")
    with pytest.raises(ApiError):
        cluster.coord.workload("unsafe")  # nothing was stored


def test_unauthenticated_requests_are_refused(cluster: Cluster) -> None:
    with pytest.raises(ApiError) as info:
        cluster.coord.request("GET", "/v1/nodes", token="wrong")
    assert info.value.status == 401


def test_an_unschedulable_spec_says_why_per_node(cluster: Cluster) -> None:
    doc = httpd_workload("nowhere", replicas=1, placement={"nodeSelector": {"disk": "nvme"}})
    cluster.coord.apply(doc)
    w = until(lambda: (x := cluster.coord.workload("nowhere"))["status"]["unschedulable"] and x, 20,
              "unschedulable reasons", cluster.logs)
    entry = w["status"]["unschedulable"][0]
    assert set(entry["reasons"]) == set(NODES)
    assert all("disk" in reason for reason in entry["reasons"].values())
    assert "0/3 nodes" in entry["summary"]
    events = cluster.coord.request("GET", "/v1/events?object=workload/default/nowhere&type=Warning")["items"]
    assert any(e["reason"] == "Unschedulable" for e in events)
    cluster.coord.request("DELETE", "/v1/workloads/default/nowhere")


def test_rolling_update_never_drops_below_min_available(cluster: Cluster) -> None:
    c = cluster.coord
    doc = httpd_workload("web", rollout={"maxSurge": 1, "maxUnavailable": 0, "minAvailable": 3})
    doc["spec"]["env"] = [{"name": "VERSION", "value": "2"}]
    samples: list[int] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                samples.append(cluster.ready("web"))
            except Exception:
                continue
            time.sleep(0.05)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        w = c.apply(doc)
        rev = w["metadata"]["revision"]
        assert rev == 2
        until(lambda: (s := c.request("GET", "/v1/workloads/default/web/rollout"))["phase"] == "complete"
              and s["updated"] == 3 and s["ready"] == 3, 90, "rollout complete", cluster.logs)
    finally:
        stop.set()
        poller.join(5)
    assert samples and min(samples) >= 3, f"ready dipped below minAvailable: min {min(samples)}"
    active = [r for r in cluster.replicas("web") if r["state"] != "stopping"]
    assert len(active) == 3 and all(r["revision"] == 2 for r in active)
    until(lambda: len(cluster.replicas("web")) == 3, 30, "old replicas gone from their nodes", cluster.logs)


def test_an_update_that_never_gets_ready_is_rolled_back(cluster: Cluster) -> None:
    c = cluster.coord
    before = {r["id"] for r in cluster.replicas("web")}
    doc = httpd_workload("web", readiness_path="/does-not-exist",
                         rollout={"maxSurge": 1, "maxUnavailable": 0, "progressDeadlineSeconds": 8,
                                  "autoRollback": True})
    doc["spec"]["env"] = [{"name": "VERSION", "value": "3-broken"}]
    c.apply(doc)
    until(lambda: c.request("GET", "/v1/workloads/default/web/rollout")["phase"] == "rolled-back", 60,
          "automatic rollback", cluster.logs)
    w = c.workload("web")
    assert w["status"]["ready"] == 3
    assert {r["id"] for r in w["status"]["replicas"] if r["state"] != "stopping"} == before, "healthy ones kept"
    until(lambda: {r["id"] for r in cluster.replicas("web")} == before, 30, "the broken replica gone", cluster.logs)
    history = c.request("GET", "/v1/workloads/default/web/history")["items"]
    assert history[-1]["cause"].startswith("rollback to")
    reasons = [e["reason"] for e in c.request("GET", "/v1/events?object=workload/default/web")["items"]]
    assert "RollingBack" in reasons and "RolloutRolledBack" in reasons


def test_killing_an_agent_reschedules_its_replicas(cluster: Cluster) -> None:
    c = cluster.coord
    # a node that holds a replica (placement spreads them, but a rollback may have left one node without any)
    holders = {r["node"] for r in cluster.replicas("web")}
    victim = next(a for a in cluster.agents if a.node_id in holders)
    cluster.victim = victim.node_id
    lost = [r["id"] for r in cluster.replicas("web") if r["node"] == victim.node_id]
    assert lost
    t0 = time.monotonic()
    victim.kill(signal.SIGKILL)
    until(lambda: cluster.ready("web") == 3 and all(r["node"] != victim.node_id for r in cluster.replicas("web")),
          60, "replicas replaced on the surviving nodes", cluster.logs)
    print(f"\nagent kill -9 -> replacement ready: {time.monotonic() - t0:.2f}s")
    node = c.request("GET", f"/v1/nodes/{victim.node_id}")
    assert node["state"] == "lost"
    # the node comes back: the surplus (its old replicas) is stopped, the replacements stay
    replacements = {r["id"] for r in cluster.replicas("web")}
    victim.start()
    until(lambda: c.request("GET", f"/v1/nodes/{victim.node_id}")["online"], 30, "node back", cluster.logs)
    time.sleep(3)
    assert {r["id"] for r in cluster.replicas("web")} == replacements
    from tests.integration.agent_env import podman_ids

    until(lambda: not set(podman_ids(victim.node_id)) & set(lost), 30, "old replicas stopped on the returning node",
          cluster.logs)


def test_drain_moves_replicas_without_dropping_below_min_available(cluster: Cluster) -> None:
    c = cluster.coord
    # a node holding a replica: which ones do depends on the kill test above (the node it killed comes back empty)
    holders = {r["node"] for r in cluster.replicas("web")}
    target = next(a.node_id for a in [*cluster.agents[1:], cluster.agents[0]] if a.node_id in holders)
    samples: list[int] = []
    c.request("POST", f"/v1/nodes/{target}/drain")

    def drained() -> bool:
        samples.append(cluster.ready("web"))
        reps = cluster.replicas("web")
        return all(r["node"] != target for r in reps) and len(reps) == 3 and samples[-1] == 3

    until(drained, 60, "drained", cluster.logs)
    assert min(samples) >= 3
    assert c.request("GET", f"/v1/nodes/{target}")["cordoned"] is True
    c.request("POST", f"/v1/nodes/{target}/uncordon")


def test_metrics_and_events_tell_what_happened(cluster: Cluster) -> None:
    """After the scenario above (apply, unschedulable spec, rollouts, a killed node, a drain), the coordinator's
    metrics and events match it."""
    import re
    import urllib.request

    text = urllib.request.urlopen(cluster.coord.url + "/metrics", timeout=10).read().decode()

    def value(series: str) -> float:
        m = re.search(rf"^{re.escape(series)} ([0-9.e+]+)$", text, re.M)
        assert m, f"{series} not exported:\n{text[:2000]}"
        return float(m.group(1))

    assert value('cloudless_nodes{state="online"}') == 3
    assert value("cloudless_workloads") == 1  # web (the others were deleted)
    assert value('cloudless_replicas{phase="assigned"}') == 3
    assert value('cloudless_scheduling_decisions_total{result="placed"}') >= 6  # 3 + replacements + rollouts
    assert value('cloudless_scheduling_decisions_total{result="unschedulable"}') >= 1
    assert re.search(r'^cloudless_unschedulable_total\{reason="[^"]+"\} [1-9]', text, re.M)
    assert value('cloudless_api_requests_total{method="PUT",route="apply",status="201"}') >= 1
    assert value('cloudless_api_requests_total{method="PUT",route="apply",status="400"}') >= 1  # the typo
    assert value('cloudless_mqtt_messages_total{channel="heartbeat",direction="in"}') > 0
    assert value('cloudless_mqtt_messages_total{channel="desired",direction="out"}') > 0
    assert value("cloudless_scheduling_pass_duration_seconds_count") >= 1
    # events, in order: the killed node was lost, its replica replaced, then placed elsewhere
    events = cluster.coord.request("GET", "/v1/events?limit=5000")["items"]
    reasons = [(e["reason"], e["object"]) for e in events]
    lost = reasons.index(("NodeLost", f"node/{cluster.victim}"))
    replaced = next(i for i, r in enumerate(reasons) if i > lost and r[0] == "ReplicaLost")
    placed = next(i for i, r in enumerate(reasons) if i > replaced and r[0] == "Placed")
    assert lost < replaced < placed
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    assert reasons.index(("NodeJoined", f"node/{cluster.victim}")) < lost


def test_events_stream_live_to_the_cli_and_resume_after_an_id(cluster: Cluster) -> None:
    """`cloudless get events --watch` prints an event the moment it is recorded (server-sent events), and the
    stream resumes after a given id (Last-Event-ID)."""
    import json
    import os
    import subprocess
    import sys
    import urllib.request

    c = cluster.coord
    env = {**os.environ, "CLOUDLESS_SERVER": c.url, "CLOUDLESS_TOKEN": c.token,
           "XDG_CONFIG_HOME": tempfile.mkdtemp(prefix="cl-cli-")}
    proc = subprocess.Popen([sys.executable, "-m", "cloudless", "get", "events", "--watch", "-o", "json",
                             "--limit", "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    lines: list[dict[str, Any]] = []

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.append(json.loads(raw))
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        until(lambda: len(lines) >= 3, 20, "the newest 3 events",
              lambda: proc.stderr.read1().decode() if proc.poll() is not None and proc.stderr else c.log_tail())
        target = cluster.agents[1].node_id
        c.request("POST", f"/v1/nodes/{target}/cordon")
        until(lambda: any(e["reason"] == "Cordoned" and e["object"] == f"node/{target}" for e in lines[3:]), 10,
              "the cordon event streamed to the CLI", c.log_tail)
        c.request("POST", f"/v1/nodes/{target}/uncordon")
        until(lambda: any(e["reason"] == "Uncordoned" for e in lines[3:]), 10, "the uncordon event", c.log_tail)
        ids = [e["id"] for e in lines]
        assert ids == sorted(set(ids)), "each event once, in order"
    finally:
        proc.terminate()
        proc.wait(10)
    # resume: the first event after Last-Event-ID is the next one, as text/event-stream
    last = lines[-1]["id"]
    req = urllib.request.Request(c.url + "/v1/events/stream", headers={
        "Authorization": f"Bearer {c.token}", "Last-Event-ID": str(last - 1)})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        first = next(line for line in resp if line.startswith(b"id:"))
        assert int(first.split(b":", 1)[1]) == last
    with pytest.raises(ApiError) as bad:
        c.request("GET", "/v1/events/stream?after=yesterday")
    assert bad.value.status == 400


def test_deleting_a_gone_node_removes_its_home_assistant_entities(cluster: Cluster) -> None:
    c = cluster.coord
    agent = cluster.agents[2]
    node = agent.node_id
    with pytest.raises(ApiError) as online:
        c.request("DELETE", f"/v1/nodes/{node}")
    assert online.value.status == 409
    raw, rc = cluster.broker.raw("dashboard@test")  # what Home Assistant would connect as
    try:
        assert rc == 0
        slug = node.lower()
        raw.subscribe(f"homeassistant/+/cloudless_{slug}/+/config", qos=0)
        configs = {p.publish_fields()[0] for p in raw.publishes(3) if p.publish_fields()[2]}
        # every entity the coordinator announces for a node (its sensors and the online binary_sensor)
        assert configs == set(discovery(NodeSummary(node, online=True, state="online"))), configs
        agent.kill(signal.SIGTERM)
        until(lambda: not c.request("GET", f"/v1/nodes/{node}")["online"]
              and all(r["node"] != node for r in cluster.replicas("web")), 60,
              "the stopped node's replicas moved", cluster.logs)
        c.request("DELETE", f"/v1/nodes/{node}")
        cleared = {t for p in raw.publishes(3) for t, _, payload in [p.publish_fields()] if not payload}
        assert configs <= cleared, "every discovery config is removed with an empty retained payload"
    finally:
        raw.close()
    with pytest.raises(ApiError) as gone:
        c.request("GET", f"/v1/nodes/{node}")
    assert gone.value.status == 404
    assert any(e["reason"] == "NodeDeleted" for e in c.request("GET", f"/v1/events?object=node/{node}")["items"])
    agent.start()  # the device comes back: it joins again as a new node

    def joined() -> bool:
        try:
            return bool(c.request("GET", f"/v1/nodes/{node}")["online"])
        except ApiError:
            return False
    until(joined, 30, "node joined again", cluster.logs)
    until(lambda: cluster.ready("web") == 3, 60, "web ready", cluster.logs)


def test_state_survives_a_coordinator_restart(cluster: Cluster) -> None:
    c = cluster.coord
    before = {r["id"]: r["node"] for r in cluster.replicas("web")}
    c.stop()
    c.start()
    until(lambda: cluster.ready("web") == 3, 30, "web ready after the coordinator restart", cluster.logs)
    assert {r["id"]: r["node"] for r in cluster.replicas("web")} == before
    c.request("POST", "/v1/workloads/default/web/scale", {"replicas": 1})
    until(lambda: len(cluster.replicas("web")) == 1, 30, "scaled down to 1", cluster.logs)
    c.request("DELETE", "/v1/workloads/default/web")
    until(lambda: _gone(cluster, "web"), 30, "web deleted", cluster.logs)

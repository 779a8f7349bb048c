"""Replicated coordinators end to end: a real 3-member etcd on loopback, the embedded broker, three `cloudless
coordinator --store etcd://...` processes and two real agents (process runtime).

The tests share one cluster (module scope) and run in file order; each leaves it with a leader and quorum. Every
wait is bounded; the bounds are generous (the machine is shared) — the failover numbers are measured by
bench/failover.py, not asserted here."""

from __future__ import annotations

import json
import signal
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker import wire
from broker.wire import topics
from tests.integration.agent_env import AgentProc, process_instances
from tests.integration.cluster_env import ApiError, CoordinatorProc, sleeper, until
from tests.integration.conftest import BrokerUnderTest, make_auth, require_binary
from tests.integration.etcd_env import EtcdCluster, running_etcd_cluster
from tests.integration.rawmqtt import RawClient

pytestmark = pytest.mark.integration
NODES = ["A", "B"]


class Ha:
    def __init__(self, broker: BrokerUnderTest, etcd: EtcdCluster, coords: list[CoordinatorProc],
                 agents: list[AgentProc]) -> None:
        self.broker, self.etcd, self.coords, self.agents = broker, etcd, coords, agents

    def logs(self) -> str:
        return "".join(f"\n--- {c.cid} ---\n{c.log_tail(30)}" for c in self.coords)

    def ready(self, c: CoordinatorProc) -> dict[str, Any]:
        """GET /readyz with a short timeout (a frozen coordinator does not answer at all)."""
        if c.proc is None:
            return {}
        try:
            with urllib.request.urlopen(c.url + "/readyz", timeout=2) as resp:
                return json.loads(resp.read())  # type: ignore[no-any-return]
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read() or b"{}")  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return {}

    def leader(self) -> CoordinatorProc | None:
        """The coordinator that leads and has run a round since (None while there is none)."""
        leading = [c for c in self.coords if c.proc is not None and self.ready(c).get("leader")
                   and self.ready(c).get("rounds", 0) > 0]
        return leading[0] if len(leading) == 1 else None

    def followers(self) -> list[CoordinatorProc]:
        lead = self.leader()
        return [c for c in self.coords if c is not lead and c.proc is not None]

    def replicas(self, via: CoordinatorProc, name: str) -> list[dict[str, Any]]:
        """Read from any coordinator (a follower's view trails the leader's by up to a second: 404 reads as [])."""
        try:
            return list(via.workload(name)["status"]["replicas"])
        except ApiError as exc:
            if exc.status == 404:
                return []
            raise

    def instances_if(self, count: int) -> dict[str, tuple[int, float]] | None:
        found = self.instances()
        return found if len(found) == count else None

    def instances(self) -> dict[str, tuple[int, float]]:
        return process_instances(self.agents)


@pytest.fixture(scope="module")
def ha() -> Iterator[Ha]:
    require_binary("etcd")
    workdir = Path(tempfile.mkdtemp(prefix="cl-ha-"))
    broker = BrokerUnderTest(kind="embedded", workdir=workdir)
    broker.passwords = make_auth(workdir)
    broker.start()
    agents = [AgentProc(node_id=n, broker=broker, runtime="process") for n in NODES]
    with running_etcd_cluster(workdir / "etcd") as etcd:
        token = "ha-admin-token-0123456789abcdef"
        coords = [CoordinatorProc(broker, workdir, cid=f"c{i}", token=token,
                                  extra=["--store", etcd.url, "--lost-after", "5"]) for i in (1, 2, 3)]
        h = Ha(broker, etcd, coords, agents)
        try:
            for c in coords:
                c.start()
            for a in agents:
                a.start()
            until(h.leader, 30, "a leader", h.logs)
            yield h
        finally:
            for a in agents:
                a.cleanup()
            for c in coords:
                c.stop()
            broker.stop()


def test_one_leader_reads_anywhere_and_a_write_to_a_follower_lands(ha: Ha) -> None:
    leader = until(ha.leader, 30, "a leader", ha.logs)
    states = [ha.ready(c) for c in ha.coords]
    assert sum(1 for s in states if s.get("leader")) == 1
    assert {s.get("leaderId") for s in states} == {leader.cid}
    follower = ha.followers()[0]
    created = follower.apply(sleeper("sl", 2))  # forwarded to the leader
    assert created["metadata"]["name"] == "sl"
    other = ha.followers()[-1]
    until(lambda: len([r for r in ha.replicas(other, "sl") if r["state"] == "running"]) == 2, 30,
          "2 replicas running, read from another follower", ha.logs)
    with pytest.raises(ApiError) as bad:  # the leader's answers come back through the follower as they are
        follower.request("PUT", "/v1/workloads/default/bad", {"apiVersion": "cloudless/v1", "kind": "Workload",
                                                               "metadata": {"name": "bad"}, "spec": {"imagee": "x"}})
    assert bad.value.status == 400


def test_leader_killed_another_leads_and_nothing_restarts(ha: Ha) -> None:
    old = until(ha.leader, 30, "a leader", ha.logs)
    old_epoch = ha.ready(old)["epoch"]
    before = until(lambda: ha.instances_if(2), 30, "2 instances", ha.logs)
    t0 = time.monotonic()
    old.stop(signal.SIGKILL)
    new = until(ha.leader, 20, "a new leader after kill -9", ha.logs)
    print(f"\nleader kill -9 -> another leads and reconciles: {time.monotonic() - t0:.2f}s")
    assert new is not old and ha.ready(new)["epoch"] > old_epoch
    new.request("POST", "/v1/workloads/default/sl/scale", {"replicas": 3})  # it acts
    until(lambda: len(ha.instances()) == 3, 30, "scaled to 3 by the new leader", ha.logs)
    after = ha.instances()
    assert {k: after[k] for k in before} == before, "leadership changed and a workload was restarted"
    assert len(ha.replicas(new, "sl")) == 3, "no replica twice"
    old.start()  # back as a follower
    until(lambda: ha.ready(old).get("leaderId") == new.cid and not ha.ready(old).get("leader"), 20,
          "the old leader follows", ha.logs)


def test_a_frozen_leader_that_wakes_is_not_obeyed(ha: Ha) -> None:
    """Split brain attempt: SIGSTOP the leader past its lease, another takes over and changes the desired state,
    SIGCONT the old one. Nothing it publishes afterwards carries the new epoch, and the agents follow the new
    leader only."""
    old = until(ha.leader, 30, "a leader", ha.logs)
    old_epoch = ha.ready(old)["epoch"]
    seen: list[tuple[float, str, int, int]] = []  # (time, node, epoch, replicas)
    stop = threading.Event()
    raw = RawClient(ha.broker.host, ha.broker.port)
    assert raw.connect("split-watch", username="coordinator@other",
                       password=ha.broker.passwords["coordinator@other"]) == 0
    raw.subscribe(topics.node_channel_filter(topics.Channel.DESIRED), qos=0)

    def watch() -> None:
        while not stop.is_set():
            for p in raw.publishes(0.5):
                _, _, payload = p.publish_fields()
                if payload:
                    msg = wire.decode(payload)
                    assert isinstance(msg, wire.DesiredState)
                    seen.append((time.monotonic(), msg.node_id, msg.epoch, len(msg.replicas)))
    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        assert old.proc is not None
        old.proc.send_signal(signal.SIGSTOP)
        try:
            new = until(lambda: (lead := ha.leader()) is not None and lead is not old and lead, 20,
                        "another leader while the old one is frozen", ha.logs)
            new_epoch = ha.ready(new)["epoch"]
            assert new_epoch > old_epoch
            new.request("POST", "/v1/workloads/default/sl/scale", {"replicas": 1})
            until(lambda: len(ha.instances()) == 1, 30, "scaled to 1 by the new leader", ha.logs)
            time.sleep(3)  # the old one stays frozen well past its lease
        finally:
            old.proc.send_signal(signal.SIGCONT)
        woke = time.monotonic()
        until(lambda: not ha.ready(old).get("leader"), 10, "the woken leader steps down", ha.logs)
        time.sleep(4)  # whatever it would do, it does now
    finally:
        stop.set()
        t.join(5)
        raw.close()
    late_old = [s for s in seen if s[0] >= woke and s[2] < new_epoch]
    assert not late_old, f"the deposed leader published after waking: {late_old}"
    assert len(ha.instances()) == 1, "the agents follow the new leader only"
    assert ha.leader() is new


def test_losing_one_etcd_member_changes_nothing(ha: Ha) -> None:
    lead = until(ha.leader, 30, "a leader", ha.logs)
    victim = next(i for i in range(3) if i != ha.etcd.raft_leader())
    ha.etcd.kill(victim)
    try:
        for _ in range(10):  # ~5 s of no interruption
            assert ha.leader() is lead
            time.sleep(0.5)
        lead.request("POST", "/v1/workloads/default/sl/scale", {"replicas": 2})
        until(lambda: len(ha.instances()) == 2, 30, "a write with one member down", ha.logs)
    finally:
        ha.etcd.restart(victim, wait=True)


def test_quorum_lost_refuses_writes_keeps_workloads_and_resumes(ha: Ha) -> None:
    until(ha.leader, 30, "a leader", ha.logs)
    before = until(lambda: ha.instances_if(2), 30, "2 instances", ha.logs)
    ha.etcd.kill(1)
    ha.etcd.kill(2)
    try:
        until(lambda: all(not ha.ready(c).get("ready") for c in ha.coords), 20, "every coordinator not ready",
              ha.logs)
        with pytest.raises(ApiError) as refused:
            ha.coords[0].request("POST", "/v1/workloads/default/sl/scale", {"replicas": 3})
        assert refused.value.status == 503
        assert "retry" in refused.value.body["error"]["message"]
        time.sleep(3)
        assert ha.instances() == before, "agents keep their workloads while the control plane is down"
    finally:
        ha.etcd.restart(1)
        ha.etcd.restart(2)
        ha.etcd.wait_healthy()
    lead = until(ha.leader, 30, "a leader after quorum returns", ha.logs)
    lead.request("POST", "/v1/workloads/default/sl/scale", {"replicas": 3})
    until(lambda: len(ha.instances()) == 3, 30, "writes work again", ha.logs)
    assert {k: ha.instances()[k] for k in before} == before


def test_a_broker_restarted_empty_is_refilled_and_nothing_restarts(ha: Ha) -> None:
    lead = until(ha.leader, 30, "a leader", ha.logs)
    want = len(ha.replicas(lead, "sl"))
    before = until(lambda: ha.instances_if(want), 30, f"{want} instances", ha.logs)
    nodes = {r["node"] for r in ha.replicas(lead, "sl")}
    ha.broker.stop()
    ha.broker.start()  # the embedded broker keeps retained messages in memory only: this one is empty
    t0 = time.monotonic()
    last: set[str] = set()

    def refilled() -> bool:
        raw = RawClient(ha.broker.host, ha.broker.port)
        try:
            if raw.connect("refill-check", username="coordinator@other",
                           password=ha.broker.passwords["coordinator@other"]) != 0:
                return False
            raw.subscribe(topics.node_channel_filter(topics.Channel.DESIRED), qos=0, pid=1)
            raw.subscribe(topics.coord_status_filter(), qos=0, pid=2)
            got = {p.publish_fields()[0] for p in raw.publishes(1.0) if p.retain}
        except OSError:
            return False
        finally:
            raw.close()
        last.clear()
        last.update(got)
        return {topics.node_desired(n) for n in nodes} <= got and topics.coord_status(lead.cid) in got
    until(refilled, 30, "retained desired state and presence republished", ha.logs,
          lambda: f"retained now: {sorted(last)}; wanted desired of {sorted(nodes)} and {lead.cid}'s status")
    print(f"\nbroker restarted empty -> retained state refilled: {time.monotonic() - t0:.2f}s")
    time.sleep(3)
    assert ha.instances() == before, "a healthy workload was restarted after the broker came back"

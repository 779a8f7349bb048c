"""`cloudless logs`, `cloudless exec` and the node commands `cordon`, `uncordon`, `drain`."""

from __future__ import annotations

import pytest

from cloudless.ctl import exit_status
from tests.cli.conftest import FakeClock
from tests.cli.fake_coordinator import FakeCoordinator


@pytest.fixture
def web(fake: FakeCoordinator) -> FakeCoordinator:
    fake.add_node("pi-1", replicas=3)
    fake.add_workload("web", replicas=2)
    fake.logs["web-0"] = "".join(f"line {i}\n" for i in range(10))
    fake.logs["web-1"] = "other replica"
    return fake


def test_logs_of_the_first_replica_with_tail(web: FakeCoordinator, cli) -> None:
    r = cli("logs", "web", "--tail", "2")
    assert (r.code, r.out) == (0, "line 8\nline 9\n")
    assert "using replica web-0 on pi-1 (2 replicas; name one to choose)" in r.err
    assert web.requests[-1].query == {"tail": "2"}


def test_logs_of_a_named_replica(web: FakeCoordinator, cli) -> None:
    r = cli("logs", "web", "web-1")
    assert (r.code, r.out, r.err) == (0, "other replica\n", "")
    assert [q.path for q in web.requests] == ["/v1/workloads/default/web/replicas/web-1/logs"]


def test_logs_missing_replica(web: FakeCoordinator, cli) -> None:
    r = cli("logs", "web", "web-7")
    assert r.code == 1 and "replica web-7 of workload default/web not found" in r.err
    assert "cloudless get replicas --workload NAME" in r.err


def test_logs_of_a_workload_without_placed_replicas(fake: FakeCoordinator, cli) -> None:
    fake.add_workload("idle", replicas=0)
    r = cli("logs", "idle")
    assert r.code == 1 and "has no replica running on a node" in r.err and "--replicas 1" in r.err


@pytest.mark.parametrize("tail", ["0", "10001", "x"])
def test_logs_tail_is_checked(web: FakeCoordinator, cli, tail: str) -> None:
    web.requests.clear()
    assert cli("logs", "web", "--tail", tail).code == 2 and web.requests == []


@pytest.mark.parametrize(("code", "expected"), [("0", 0), ("3", 3), ("255", 255)])
def test_exec_exit_code_passthrough(web: FakeCoordinator, cli, code: str, expected: int) -> None:
    r = cli("exec", "web", "--", "exit", code)
    assert r.code == expected


def test_exec_output_and_options_on_either_side(web: FakeCoordinator, cli) -> None:
    r = cli("exec", "--timeout", "5", "web", "web-1", "--", "echo", "hi", "-n", "there")
    assert (r.code, r.out) == (0, "hi -n there\n")
    assert web.requests[-1].body == {"command": ["echo", "hi", "-n", "there"], "timeoutSeconds": 5}
    r = cli("exec", "web", "web-1", "-n", "default", "--timeout", "7", "--", "echo")
    assert r.code == 0 and web.requests[-1].body["timeoutSeconds"] == 7


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [(["web", "ls"], "put the command after `--`"), (["web", "--"], "no command after `--`"),
     (["--", "ls"], "required: WORKLOAD"), (["bad/name", "--", "ls"], "is invalid"),
     (["web", "--timeout", "301", "--", "ls"], "must be 1..300")],
    ids=["no-dashes", "no-command", "no-workload", "bad-name", "timeout"],
)
def test_exec_usage_errors(web: FakeCoordinator, cli, argv: list[str], fragment: str) -> None:
    web.requests.clear()
    r = cli("exec", *argv)
    assert r.code == 2 and fragment in r.err and web.requests == []


@pytest.mark.parametrize(("code", "status"), [(0, 0), (1, 1), (-9, 137), (300, 255), (None, 1)])
def test_exit_status(code: object, status: int) -> None:
    assert exit_status(code) == status


def test_cordon_uncordon(web: FakeCoordinator, cli) -> None:
    assert cli("cordon", "pi-1").out == "node/pi-1 cordoned\n"
    assert web.nodes["pi-1"]["cordoned"] is True
    assert cli("uncordon", "pi-1").out == "node/pi-1 uncordoned\n"
    assert web.nodes["pi-1"]["cordoned"] is False
    r = cli("cordon", "ghost")
    assert r.code == 1 and "node ghost not found" in r.err and "cloudless get nodes" in r.err


def test_drain_waits_showing_progress(web: FakeCoordinator, cli, clock: FakeClock) -> None:
    r = cli("drain", "pi-1")
    assert (r.code, r.out) == (0, "node/pi-1 drained\n")
    assert r.err.splitlines() == ["node/pi-1: draining, 2 replicas left", "node/pi-1: draining, 1 replicas left",
                                  "node/pi-1: draining, 0 replicas left"]
    assert clock.sleeps == [1.0, 1.0]


def test_drain_no_wait(web: FakeCoordinator, cli) -> None:
    r = cli("drain", "pi-1", "--no-wait")
    assert (r.code, r.out) == (0, "node/pi-1 draining (3 replicas to move)\n")


def test_drain_cancelled_by_uncordon(web: FakeCoordinator, cli, clock: FakeClock) -> None:
    clock.on_sleep.append(lambda n: web.nodes["pi-1"].update(draining=False))
    r = cli("drain", "pi-1")
    assert r.code == 1 and "no longer draining" in r.err


def test_drain_timeout(web: FakeCoordinator, cli, clock: FakeClock) -> None:
    web.nodes["pi-1"]["replicas"] = 10_000
    r = cli("drain", "pi-1", "--timeout", "3s")
    assert r.code == 1 and "still has replicas after 3s" in r.err
    assert sum(clock.sleeps) == 3


def test_delete_node(fake: FakeCoordinator, cli) -> None:
    fake.add_node("pi-1")
    fake.add_node("old-pi", online=False)
    r = cli("delete", "node", "pi-1")
    assert r.code == 1 and "is online" in r.err and "pi-1" in fake.nodes
    assert cli("delete", "node", "old-pi").out == "node/old-pi deleted\n"
    assert "old-pi" not in fake.nodes
    assert cli("delete", "node", "old-pi").code == 1
    assert cli("delete", "node", "old-pi", "--ignore-not-found").code == 0
    assert [(q.method, q.path) for q in fake.requests][-1] == ("DELETE", "/v1/nodes/old-pi")

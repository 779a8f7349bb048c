"""`cloudless scale` and `cloudless rollout status|history|undo`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cloudless.ctl import rollout_verdict
from tests.cli.conftest import FakeClock
from tests.cli.fake_coordinator import FakeCoordinator


def status(phase: str, updated: int, *, ready: int | None = None, revision: int = 2,
           message: str = "") -> dict[str, Any]:
    return {"revision": revision, "phase": phase, "desired": 3, "updated": updated,
            "ready": updated if ready is None else ready, "available": updated, "message": message}


@pytest.fixture
def web(fake: FakeCoordinator) -> FakeCoordinator:
    fake.add_node("pi-1")
    fake.add_workload("web", replicas=3)
    return fake


def test_scale(web: FakeCoordinator, cli) -> None:
    r = cli("scale", "workload", "web", "--replicas", "5")
    assert (r.code, r.out) == (0, "workload/web scaled to 5 replicas\n")
    assert web.requests[-1].body == {"replicas": 5}
    assert web.workloads[("default", "web")]["spec"]["replicas"] == 5


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        pytest.param(["workload", "web", "--replicas", "10001"], "must be 0..10000, got 10001", id="too-many"),
        pytest.param(["workload", "web", "--replicas", "-1"], "must be 0..10000, got -1", id="negative"),
        pytest.param(["workload", "web", "--replicas", "two"], "must be a whole number", id="not-number"),
        pytest.param(["workload", "web"], "--replicas", id="missing"),
        pytest.param(["workload", "Web!", "--replicas", "1"], "'Web!' is invalid", id="bad-name"),
        pytest.param(["node", "web", "--replicas", "1"], "expected workload, got 'node'", id="kind"),
        pytest.param(["workload", "web", "--replicas", "1", "-n", "a" * 64], "is invalid", id="long-namespace"),
    ],
)
def test_scale_arguments_are_checked_before_any_request(web: FakeCoordinator, cli, argv: list[str],
                                                        fragment: str) -> None:
    web.requests.clear()
    r = cli("scale", *argv)
    assert r.code == 2 and fragment in r.err
    assert web.requests == []


def test_rollout_status_waits_through_progress_to_complete(web: FakeCoordinator, cli, clock: FakeClock) -> None:
    web.rollout_script[("default", "web")] = [status("progressing", 1), status("progressing", 1),
                                              status("progressing", 2), status("complete", 3)]
    r = cli("rollout", "status", "workload", "web")
    assert (r.code, r.out) == (0, "workload/web successfully rolled out (revision 2)\n")
    assert r.err.splitlines() == [
        "workload/web revision 2: progressing, 1 of 3 updated, 1 ready, 1 available",  # printed once, not twice
        "workload/web revision 2: progressing, 2 of 3 updated, 2 ready, 2 available",
        "workload/web revision 2: complete, 3 of 3 updated, 3 ready, 3 available",
    ]
    assert clock.sleeps == [1.0, 1.0, 1.0]


def test_rollout_status_failed_exits_1(web: FakeCoordinator, cli) -> None:
    web.rollout_script[("default", "web")] = [status("progressing", 1),
                                              status("failed", 1, message="replica web-1 crash-looping")]
    r = cli("rollout", "status", "workload", "web")
    assert r.code == 1 and r.out == ""
    assert "rollout of workload/web failed: replica web-1 crash-looping" in r.err
    assert "cloudless rollout undo workload web" in r.err


def test_rollout_status_automatic_rollback_is_a_failure(web: FakeCoordinator, cli) -> None:
    web.rollout_script[("default", "web")] = [status("progressing", 1),
                                              status("rolling-back", 0, revision=3, message="probe failed")]
    r = cli("rollout", "status", "workload", "web")
    assert r.code == 1 and "rollout of workload/web was rolled back: probe failed" in r.err


def test_rollout_status_after_undo_succeeds_when_rolled_back(web: FakeCoordinator, cli) -> None:
    web.rollout_script[("default", "web")] = [status("rolling-back", 1, revision=3),
                                              status("rolled-back", 3, revision=3)]
    r = cli("rollout", "status", "workload", "web")
    assert (r.code, r.out) == (0, "workload/web successfully rolled back (revision 3)\n")


def test_rollout_status_times_out(web: FakeCoordinator, cli, clock: FakeClock) -> None:
    web.rollout_script[("default", "web")] = [status("progressing", 1)]
    r = cli("rollout", "status", "workload", "web", "--timeout", "1m")
    assert r.code == 1 and "timed out after 60s" in r.err and "goes on without you" in r.err
    assert sum(clock.sleeps) == 60
    assert "(still waiting, 15s)" in r.err  # an unchanged line is repeated, so the wait never looks hung


def test_rollout_status_pinned_revision(web: FakeCoordinator, cli) -> None:
    web.rollout_script[("default", "web")] = [status("complete", 3, revision=4)]
    r = cli("rollout", "status", "workload", "web", "--revision", "2")
    assert r.code == 1 and "is at revision 4, not 2" in r.err


def test_rollout_status_rides_out_a_503(web: FakeCoordinator, cli) -> None:
    web.fail_once("GET", "/v1/workloads/default/web/rollout", 503)
    r = cli("rollout", "status", "workload", "web")
    assert r.code == 0 and "injected 503; retrying" in r.err


@pytest.mark.parametrize(
    ("first", "phase", "verdict"),
    [("progressing", "progressing", None), ("progressing", "complete", "ok"), ("progressing", "failed", "failed"),
     ("progressing", "rolling-back", "failed"), ("progressing", "rolled-back", "failed"),
     ("rolling-back", "rolling-back", None), ("rolling-back", "rolled-back", "ok"),
     ("rolled-back", "rolled-back", "ok"), ("complete", "complete", "ok")],
    ids=str,
)
def test_rollout_verdict(first: str, phase: str, verdict: str | None) -> None:
    assert rollout_verdict(first, phase) == verdict


def test_rollout_history_and_undo(web: FakeCoordinator, cli) -> None:
    web.add_workload("web", replicas=3, image="nginx:1.26")  # revision 2
    rows = [line.split() for line in cli("rollout", "history", "workload", "web").out.splitlines()]
    assert [r[0] for r in rows] == ["REVISION", "1", "2"] and rows[2][1] == "(current)"
    one = json.loads(cli("rollout", "history", "workload", "web", "--revision", "1", "-o", "json").out)
    assert [i["image"] for i in one["items"]] == ["nginx:1.25"]
    assert web.requests[-1].path == "/v1/workloads/default/web/history"
    r = cli("rollout", "undo", "workload", "web")
    assert (r.code, r.out) == (0, "workload/web rolled back to the previous revision (now revision 3)\n")
    assert web.requests[-1].body == {"revision": None}
    assert "rollout status workload web" in r.err
    r = cli("rollout", "undo", "workload", "web", "--revision", "9")
    assert r.code == 1 and "no revision to roll back to" in r.err


def test_rollout_history_missing_revision(web: FakeCoordinator, cli) -> None:
    r = cli("rollout", "history", "workload", "web", "--revision", "7")
    assert r.code == 1 and "has no revision 7" in r.err

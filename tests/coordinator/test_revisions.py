"""Workload revisions (coordinator.revisions): numbering, history trimming, the rollback target."""

from __future__ import annotations

from typing import Any

import pytest

from coordinator import revisions
from coordinator.model import RolloutPhase, WorkloadRecord
from coordinator.revisions import HISTORY_LIMIT

NOW = 500.0


def make_doc(image: str = "img:1", replicas: int = 2) -> dict[str, Any]:
    return {"apiVersion": "cloudless/v1", "kind": "Workload", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"image": image, "replicas": replicas}}


def make_history(*hashes: str) -> tuple[dict[str, Any], ...]:
    return tuple(revisions.entry(i + 1, h, make_doc(f"img:{h}"), float(i), "apply") for i, h in enumerate(hashes))


def make_record(spec_hash: str = "h1", *, revision: int = 1, history: tuple[dict[str, Any], ...] = (),
                replicas: int = 2) -> WorkloadRecord:
    return WorkloadRecord(namespace="default", name="web", doc=make_doc(f"img:{spec_hash}", replicas),
                          spec_hash=spec_hash, revision=revision, generation=revision, created_at=0.0,
                          history=history)


def test_created_is_revision_one_with_its_history() -> None:
    rec = revisions.created("default", "web", doc=make_doc(), spec_hash="h1", now=NOW)
    assert (rec.revision, rec.generation, rec.rollout_phase, rec.rollout_message) == (
        1, 1, RolloutPhase.PROGRESSING, "creating")
    assert rec.history == ({"revision": 1, "spec_hash": "h1", "doc": make_doc(), "created_at": NOW,
                            "cause": "created"},)


def test_a_new_spec_is_the_next_revision_and_a_same_spec_only_a_new_generation() -> None:
    old = make_record(history=make_history("h1"))
    out = revisions.rolled_out(old, doc=make_doc("img:h2"), spec_hash="h2", now=NOW, in_use=set())
    assert (out.revision, out.generation, out.rollout_message) == (2, 2, "rolling out revision 2")
    assert [h["revision"] for h in out.history] == [1, 2] and out.history[-1]["cause"] == "apply"
    same = revisions.updated(out, doc=make_doc("img:h2", replicas=5))
    assert (same.revision, same.generation, same.history) == (2, 3, out.history)


@pytest.mark.parametrize(("count", "in_use", "kept"), [
    pytest.param(HISTORY_LIMIT, set(), list(range(1, HISTORY_LIMIT + 1)), id="at-limit"),
    pytest.param(HISTORY_LIMIT + 2, set(), list(range(3, HISTORY_LIMIT + 3)), id="oldest-go"),
    pytest.param(HISTORY_LIMIT + 1, {"h1"}, [1, *range(3, HISTORY_LIMIT + 2)], id="in-use-stays"),
    pytest.param(HISTORY_LIMIT + 1, {f"h{i}" for i in range(1, HISTORY_LIMIT + 2)},
                 list(range(1, HISTORY_LIMIT + 2)), id="all-in-use"),
])
def test_trim(count: int, in_use: set[str], kept: list[int]) -> None:
    history = make_history(*(f"h{i}" for i in range(1, count + 1)))
    assert [h["revision"] for h in revisions.trim(history, in_use)] == kept


@pytest.mark.parametrize(("current", "revision", "target"), [
    pytest.param("h3", None, 2, id="newest-other-spec"),
    pytest.param("h2", None, 3, id="newest-other-even-if-newer"),
    pytest.param("h3", 1, 1, id="named"),
    pytest.param("h3", 9, None, id="named-missing"),
    pytest.param("h1", None, None, id="only-one-spec"),
])
def test_rollback_target(current: str, revision: int | None, target: int | None) -> None:
    hashes = ("h1", "h1", "h1") if current == "h1" else ("h1", "h2", "h3")
    w = make_record(current, revision=3, history=make_history(*hashes))
    found = revisions.rollback_target(w, revision)
    assert (found["revision"] if found else None) == target


def test_rolled_back_keeps_the_replica_count_and_is_a_new_revision() -> None:
    w = make_record("h2", revision=2, history=make_history("h1", "h2"), replicas=7)
    target = revisions.rollback_target(w, None)
    assert target is not None
    doc = revisions.rollback_doc(w, target)
    assert doc["spec"] == {"image": "img:h1", "replicas": 7}
    rec = revisions.rolled_back(w, target, doc=doc, spec_hash="h1", now=NOW, in_use=set())
    assert (rec.revision, rec.generation, rec.spec_hash, rec.rollout_phase) == (
        3, 3, "h1", RolloutPhase.ROLLING_BACK)
    assert rec.rollout_message == "rolling back to revision 1"
    assert rec.history[-1] == {"revision": 3, "spec_hash": "h1", "doc": doc, "created_at": NOW,
                               "cause": "rollback to 1"}

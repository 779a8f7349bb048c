"""Failures a user can see (issue 15): a replica the runtime refuses is reported with the refusal marker the
coordinator acts on; a start that fails is `failed` with its reason (not `starting` forever) and backs off; a pull
that fails reports the registry's message as ErrImagePull / ImagePullBackOff; containers carry explicit ulimits."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.wire import NodeFacts, PortMapping, ReplicaState, VolumeMount
from edge_agent import images
from edge_agent.errors import SpecUnsupported
from edge_agent.reconcile import ReplicaRecord, action_failed, observe, reconcile
from edge_agent.runtime.base import InstanceState, refused
from edge_agent.runtime.podman_spec import DEFAULT_ULIMITS, clamp_ulimits, container_spec
from edge_agent.runtime.process import ProcessRuntime
from tests.edge_agent.builders import NOW, make_instance, make_spec

# ---- refusals ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("more", [
    {"ports": (PortMapping(container_port=8080, host_port=18081),)},
    {"volumes": (VolumeMount(name="d", mount_path="/d"),)},
    {"command": ()},
], ids=["remapped-port", "volume", "no-command"])
async def test_the_process_runtime_refusal_carries_the_marker(more: dict[str, object], tmp_path: Path) -> None:
    runtime = ProcessRuntime(node_id="n1", cluster="c1", root=tmp_path / "process")
    with pytest.raises(SpecUnsupported) as err:
        await runtime.create(make_spec(**more), 1)  # type: ignore[arg-type]
    assert str(err.value).startswith(NodeFacts.REFUSED)
    record = action_failed(ReplicaRecord("web-0"), str(err.value), NOW)
    [seen] = observe([make_spec(**more)], [], {"web-0": record}, {})  # type: ignore[arg-type]
    assert seen.state is ReplicaState.FAILED and seen.last_error.startswith(NodeFacts.REFUSED)


def test_refused_marks_once() -> None:
    once = refused(SpecUnsupported("cannot remap ports"))
    assert str(once) == NodeFacts.REFUSED + "cannot remap ports"
    assert str(refused(once)) == str(once)


# ---- a start that fails --------------------------------------------------------------------------------------

RUNC = "cannot start c-web-0: crun: error setting rlimit type 7: operation not permitted"


def test_a_failed_start_is_reported_failed_and_retried_with_backoff() -> None:
    spec, created = make_spec(), make_instance(state=InstanceState.CREATED, started_at=None)
    plan = reconcile([spec], [created], {}, NOW)
    assert [a.replica_id for a in plan.start] == ["web-0"]
    [before] = observe([spec], [created], plan.records, {})
    assert before.state is ReplicaState.STARTING  # not failed yet: nothing went wrong

    record = action_failed(plan.records["web-0"], RUNC, NOW)  # the adapter's start raised
    [seen] = observe([spec], [created], {"web-0": record}, {})
    assert (seen.state, seen.last_error) == (ReplicaState.FAILED, RUNC)

    later = reconcile([spec], [created], {"web-0": record}, NOW + 0.1)
    assert later.start == () and [rid for rid, _ in later.waiting] == ["web-0"]
    due = reconcile([spec], [created], {"web-0": record}, record.next_start_at)
    assert [a.replica_id for a in due.start] == ["web-0"]


# ---- image pulls ---------------------------------------------------------------------------------------------

UNKNOWN = "docker.io/library/nosuchimage: manifest unknown"


@pytest.mark.parametrize(("state", "expected"), [
    (None, ""),
    (images.started(images.PullState()), ""),
    (images.failed(images.started(images.PullState()), NOW, UNKNOWN),
     f"ImagePullBackOff: {UNKNOWN} (attempt 1, next retry at 22:13:22 UTC)"),
    (images.started(images.failed(images.started(images.PullState()), NOW, UNKNOWN)), f"ErrImagePull: {UNKNOWN}"),
    (images.succeeded(images.PullState()), ""),
], ids=["unknown", "first-pull", "backing-off", "retrying", "ready"])
def test_pull_message(state: images.PullState | None, expected: str) -> None:
    assert images.pull_message(state, NOW) == expected


def test_a_failed_pull_shows_in_the_replicas_state() -> None:
    spec = make_spec(image="docker.io/library/nosuchimage")
    message = images.pull_message(images.failed(images.started(images.PullState()), NOW, UNKNOWN), NOW)
    [seen] = observe([spec], [], {}, {}, pulling={"web-0": message})
    assert seen.state is ReplicaState.PULLING and seen.last_error.startswith("ImagePullBackOff: " + UNKNOWN)
    [plain] = observe([spec], [], {}, {}, pulling=frozenset({"web-0"}))  # the old form still works
    assert plain.state is ReplicaState.PULLING and plain.last_error == ""


# ---- ulimits -------------------------------------------------------------------------------------------------


def test_every_container_carries_explicit_ulimits() -> None:
    body = container_spec(make_spec(), name="c", labels={}, stop_timeout_s=1, limits=True, log_max_bytes=None)
    assert body["r_limits"] == [{"type": "nofile", "soft": 1024, "hard": 1024},
                                {"type": "nproc", "soft": 4096, "hard": 4096}]
    lowered = container_spec(make_spec(), name="c", labels={}, stop_timeout_s=1, limits=True, log_max_bytes=None,
                             ulimits=clamp_ulimits(DEFAULT_ULIMITS, {"nofile": (256, 512), "nproc": (-1, -1)}))
    assert lowered["r_limits"] == [{"type": "nofile", "soft": 512, "hard": 512},
                                   {"type": "nproc", "soft": 4096, "hard": 4096}]

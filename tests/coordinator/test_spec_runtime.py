"""`spec.runtime` and the optional `spec.image` (issue 15, items 4 and 10): a process workload names no image; a
container workload without one is refused at admission with the field named; parser and JSON Schema agree."""

from __future__ import annotations

from typing import Any

import pytest

from coordinator.errors import SpecError
from coordinator.policy import evaluate
from coordinator.spec import Runtime, parse_workload, spec_hash, workload_json_schema, workload_to_doc
from tests.coordinator.policy_builders import fields_of, make_policy
from tests.coordinator.schema_check import validate


def doc(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "cloudless/v1", "kind": "Workload", "metadata": {"name": "w"}, "spec": spec}


def schema_errors(d: dict[str, Any]) -> list[str]:
    return validate(d, workload_json_schema())


def test_a_process_workload_needs_no_image_and_round_trips() -> None:
    d = doc(runtime="process", command=["python3", "-m", "http.server", "8000"],
            ports=[{"containerPort": 8000, "hostPort": 8000}])
    w = parse_workload(d)
    assert (w.spec.image, w.spec.runtime) == ("", Runtime.PROCESS)
    assert parse_workload(workload_to_doc(w)) == w
    assert "image" not in workload_to_doc(w)["spec"]
    assert schema_errors(d) == []


REFUSED = [
    ("container-without-image", doc(runtime="container", command=["x"]),
     ("spec.image", "a container workload (runtime: container) needs an image")),
    ("no-image-no-command", doc(),
     ("spec.command", "a workload without an image runs as a process (runtime: process) and needs a command; or "
                      "name the image to run in a container")),
    ("process-with-volumes", doc(runtime="process", image="x", command=["x"],
                                 volumes=[{"name": "d", "mountPath": "/d"}]),
     ("spec.volumes", "runtime: process, and a process cannot mount volumes (use its working directory)")),
    ("no-image-with-secret-volumes", doc(command=["x"], secretVolumes=[{"secret": "s", "mountPath": "/s"}]),
     ("spec.secretVolumes", "no image: it runs as a process, and a process cannot mount secret volumes (use env "
                            "valueFrom)")),
    ("bad-runtime", doc(image="x", runtime="vm"), None),
]


@pytest.mark.parametrize(("d", "expected"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_refused_with_the_field_named_and_by_the_schema_too(d: dict[str, Any],
                                                            expected: tuple[str, str] | None) -> None:
    with pytest.raises(SpecError) as err:
        parse_workload(d)
    if expected is not None:
        assert expected in err.value.errors
    else:
        assert [p for p, _ in err.value.errors] == ["spec.runtime"]
    assert schema_errors(d) != []


def test_a_container_workload_with_an_image_and_the_default_runtime_is_unchanged() -> None:
    """Existing documents keep their spec hash: `runtime` is omitted at its default."""
    w = parse_workload(doc(image="busybox", command=["sh"]))
    assert w.spec.runtime is Runtime.ANY and "runtime" not in workload_to_doc(w)["spec"]
    changed = parse_workload(doc(image="busybox", command=["sh"], runtime="container"))
    assert spec_hash(changed) != spec_hash(w)  # a runtime change replaces the replicas (they may have to move)


def test_the_image_rule_of_the_admission_policy_leaves_a_process_workload_alone() -> None:
    policy = make_policy({"images": {"allowedRegistries": ["localhost"]}})
    process = parse_workload(doc(runtime="process", command=["true"]))
    container = parse_workload(doc(image="docker.io/library/busybox", command=["true"]))
    assert "spec.image" not in fields_of(evaluate([policy], process))
    assert fields_of(evaluate([policy], container)) == ["spec.image"]

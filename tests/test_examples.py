"""Every examples/*.yaml is a workload the coordinator accepts: parsed by the real spec parser (coordinator.spec),
admitted by the secure default admission policy (coordinator/policy.py), and — for the process-runtime examples —
accepted by a non-root process-runtime agent (the scheduler's runtime needs and the agent's sandbox decision).
Together the examples show every feature the docs point to them for; a broken or missing one fails here.
(tests/integration/test_process_example.py runs the process example on a real non-root agent.)"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudless.cli import build_parser
from coordinator import translate
from coordinator.policy import Action, default_policies, evaluate
from coordinator.scheduler import abilities
from coordinator.spec import Runtime, Workload, parse_workload, spec_hash
from edge_agent.errors import SpecUnsupported
from edge_agent.sandbox import ProcessHost, decide

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FILES = sorted(EXAMPLES.glob("*.yaml"))
AGENT_UID = 10_123  # a non-root agent (Termux gives each app its own uid in this range)


def _documents(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def _workloads() -> list[tuple[str, Workload]]:
    return [(p.name, parse_workload(d)) for p in FILES for d in _documents(p)]


def _runs_as_process(w: Workload) -> bool:
    return w.spec.runtime is Runtime.PROCESS or not w.spec.image


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_example_parses_and_is_admitted_by_the_default_policy(path: Path) -> None:
    docs = _documents(path)
    assert docs, f"{path.name} holds no document"
    for doc in docs:
        w = parse_workload(doc)  # raises SpecError naming every bad field
        decision = evaluate(default_policies(), w)
        assert decision.allowed, f"{path.name}: the default admission policy refuses it: {decision.reasons}"
        # an example shows good hygiene: no warning either, except what a process cannot do (a read-only root)
        allowed_warnings = {"spec.securityContext.readOnlyRootFilesystem"} if _runs_as_process(w) else set()
        warnings = [f"{v.field}: {v.message}" for v in decision.violations
                    if v.action is not Action.DENY and v.field not in allowed_warnings]
        assert not warnings, f"{path.name}: admitted with warnings: {warnings}"


def test_hello_is_still_the_make_up_example() -> None:
    w = parse_workload(_documents(EXAMPLES / "hello.yaml")[0])
    assert (w.name, w.spec.image, w.spec.ports[0].host_port) == ("hello", "localhost/cloudless/busybox:latest", 18081)


def test_example_names_and_host_ports_do_not_clash() -> None:
    """`cloudless apply -f examples/` applies them all to one cluster."""
    workloads = _workloads()
    keys = [w.key for _, w in workloads]
    assert len(keys) == len(set(keys)), keys
    ports = [p.host_port for _, w in workloads for p in w.spec.ports if p.host_port]
    assert len(ports) == len(set(ports)), ports


def test_a_non_root_process_agent_accepts_the_process_examples() -> None:
    process = [(name, w) for name, w in _workloads() if _runs_as_process(w)]
    assert any(name == "termux-process.yaml" for name, _ in process)
    host = ProcessHost(AGENT_UID, AGENT_UID, lambda uid: None)
    for name, w in process:
        assert w.spec.image == "", f"{name}: a process example names no image"
        # the scheduler places it on a node that has only the process runtime
        assert abilities.missing(frozenset({abilities.PROCESS}), abilities.needs(w.spec)) is None, name
        spec = translate.replica_spec(w, "r-1", spec_hash(w))
        assert all(p.host_port in (0, p.container_port) for p in spec.ports), f"{name}: a process cannot remap"
        assert not spec.volumes and not spec.secret_volumes, name
        try:
            box = decide(spec.security, host)
        except SpecUnsupported as exc:
            pytest.fail(f"{name}: a non-root process agent refuses it: {exc}")
        assert box is not None and box.no_new_privs and box.uid is None, name


def test_a_root_process_agent_refuses_the_termux_example_with_the_reason() -> None:
    """The example's runAsNonRoot has teeth: as root the agent would run it as root, so it says no."""
    w = parse_workload(_documents(EXAMPLES / "termux-process.yaml")[0])
    spec = translate.replica_spec(w, "r-1", spec_hash(w))
    with pytest.raises(SpecUnsupported, match="runAsNonRoot"):
        decide(spec.security, ProcessHost(0, 0, lambda uid: 0))


def _set(doc: Any, path: str) -> bool:
    head, _, rest = path.partition(".")
    if isinstance(doc, list):
        return any(_set(item, path) for item in doc)
    if not isinstance(doc, dict) or head not in doc:
        return False
    return not rest or _set(doc[head], rest)


FEATURES = {
    "process runtime": "spec.runtime",
    "volumes (emptyDir)": "spec.volumes.emptyDir.medium",
    "secret files": "spec.secretVolumes.items",
    "env from a secret": "spec.env.valueFrom.secretKeyRef",
    "http probe": "spec.readinessProbe.httpGet",
    "tcp probe": "spec.livenessProbe.tcpSocket",
    "exec probe": "spec.livenessProbe.exec",
    "placement by arch": "spec.placement.arch",
    "placement by labels": "spec.placement.nodeSelector",
    "label affinity": "spec.placement.nodeAffinity.required",
    "spread": "spec.placement.spread",
    "anti-affinity": "spec.placement.antiAffinity.workloads",
    "tolerations": "spec.placement.tolerations",
    "rollout": "spec.rollout.maxSurge",
    "auto rollback": "spec.rollout.autoRollback",
    "service": "spec.service.ports",
    "ingress": "spec.service.ingress",
}


@pytest.mark.parametrize(("feature", "path"), FEATURES.items(), ids=list(FEATURES))
def test_some_example_shows_each_feature(feature: str, path: str) -> None:
    docs = [d for p in FILES for d in _documents(p)]
    assert any(_set(d, path) for d in docs), f"no example under examples/ shows {feature} ({path})"


def _commands() -> list[tuple[str, list[str]]]:
    """The `cloudless ...` lines of the examples' header comments, as argv."""
    out = []
    for path in FILES:
        for line in path.read_text(encoding="utf-8").splitlines():
            text = line.lstrip("#").strip()
            if line.startswith("#") and text.startswith("cloudless "):
                out.append((path.name, shlex.split(text, comments=True)[1:]))
    return out


@pytest.mark.parametrize(("name", "argv"), _commands(), ids=[" ".join(a) for _, a in _commands()])
def test_commands_in_example_comments_are_valid_cli_calls(name: str, argv: list[str],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    try:
        build_parser(argv).parse_args(argv)
    except SystemExit:
        pytest.fail(f"{name}: `cloudless {shlex.join(argv)}` is not a valid command: {capsys.readouterr().err}")

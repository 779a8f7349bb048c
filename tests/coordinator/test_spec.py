from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings

from broker.wire import Probe, ProbeKind
from coordinator.errors import CoordinatorError, SpecError
from coordinator.spec import (
    Medium,
    Operator,
    PortProtocol,
    RestartPolicy,
    Scope,
    SeccompType,
    Spread,
    Strategy,
    TaintEffect,
    TolerationOperator,
    parse_workload,
    spec_hash,
    workload_json_schema,
    workload_to_doc,
)
from coordinator.spec_kinds import IntOrPercent
from tests.coordinator.documents import FULL_EXAMPLE, example, minimal, set_path
from tests.coordinator.schema_check import validate
from tests.coordinator.spec_strategies import workload_docs

MI = 2**20


def errors_of(doc: Any) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as info:
        parse_workload(doc)
    return info.value.errors


# ---- the happy path --------------------------------------------------------------------------------------


def test_full_example_parses_into_typed_fields() -> None:
    w = parse_workload(example())
    assert (w.name, w.namespace, w.key) == ("web", "shop", "shop/web")
    assert w.metadata.labels == {"app": "web", "tier": "frontend"}
    s = w.spec
    assert s.image == "ghcr.io/example/web:1.4.2"
    assert (s.command, s.args, s.replicas) == (("/bin/web",), ("--port", "8080"), 3)
    assert s.env[0].value == "production"
    secret = s.env[1].value_from
    assert secret is not None and (secret.secret_key_ref.name, secret.secret_key_ref.key) == ("db", "password")
    assert (s.resources.requests.cpu_millis, s.resources.requests.memory_bytes) == (250, 64 * MI)
    assert (s.resources.limits.cpu_millis, s.resources.limits.memory_bytes) == (1000, 256 * MI)
    port = s.ports[0]
    assert (port.container_port, port.host_port, port.protocol, port.name) == (8080, 80, PortProtocol.TCP, "http")
    p = s.placement
    assert p.node_selector == {"disk": "ssd"} and p.zones == ("home", "office") and p.regions == ("eu",)
    assert (p.spread, p.strategy) == (Spread.ZONE, Strategy.BINPACK)
    assert p.node_affinity.required[0].operator is Operator.NOT_IN
    assert p.node_affinity.preferred[0].weight == 50
    assert (p.anti_affinity.workloads, p.anti_affinity.scope) == (("web",), Scope.NODE)
    assert p.tolerations[0].operator is TolerationOperator.EXISTS
    assert p.tolerations[1].effect is TaintEffect.NO_SCHEDULE
    assert s.restart_policy is RestartPolicy.ON_FAILURE
    r = s.rollout
    assert (r.max_surge, r.max_unavailable, r.min_available) == (
        IntOrPercent(1),
        IntOrPercent(25, percent=True),
        IntOrPercent(50, percent=True),
    )
    assert (r.progress_deadline_seconds, r.auto_rollback) == (300, False)
    assert s.liveness_probe is not None and s.liveness_probe.http_get is not None
    assert s.liveness_probe.http_get.path == "/healthz" and s.liveness_probe.period_seconds == 5.0
    assert s.readiness_probe is not None and s.readiness_probe.exec is not None
    sc = s.security_context
    assert (sc.run_as_user, sc.run_as_non_root, sc.capabilities.drop) == (1000, True, ("ALL",))
    assert sc.seccomp_profile.profile_type is SeccompType.LOCALHOST
    assert s.volumes[0].empty_dir.medium is Medium.MEMORY and s.volumes[0].empty_dir.size_limit_bytes == 64 * MI
    assert s.volumes[1].empty_dir.medium is Medium.DISK


def test_minimal_document_takes_the_defaults() -> None:
    w = parse_workload(minimal())
    assert (w.namespace, w.spec.replicas, w.spec.restart_policy) == ("default", 1, RestartPolicy.ALWAYS)
    assert w.spec.placement.strategy is Strategy.SPREAD and w.spec.placement.spread is Spread.NONE
    assert w.spec.rollout.max_surge == IntOrPercent(25, percent=True)
    assert w.spec.liveness_probe is None and w.spec.resources.cpu_request_millis == 0


def test_a_fleet_workload_may_ask_for_ten_thousand_replicas() -> None:
    """Issue 17: 2,500 replicas on 5,000 nodes is a normal fleet workload; the cap is 10,000 (a node's share is
    bounded by its desired-state message, in the scheduler)."""
    w = parse_workload(example(**{"spec.replicas": 10_000, "spec.rollout.maxSurge": 2_500}))
    assert (w.spec.replicas, w.spec.rollout.max_surge) == (10_000, IntOrPercent(2_500))


def test_requests_default_to_limits_for_scheduling() -> None:
    w = parse_workload(minimal(resources={"limits": {"cpu": "500m", "memory": "128Mi"}}))
    assert (w.spec.resources.cpu_request_millis, w.spec.resources.memory_request_bytes) == (500, 128 * MI)


# ---- unknown and misspelled fields: rejected at every depth, with the path and a suggestion ----------

MISSPELLED = [
    ("apiVersion", "apiVersoin"),
    ("metadata.name", "nmae"),
    ("metadata.labels", "label"),
    ("spec.image", "imagee"),
    ("spec.image", "Image"),
    ("spec.replicas", "replica"),
    ("spec.resources.requests", "requets"),
    ("spec.resources.requests.memory", "memroy"),
    ("spec.ports[0].containerPort", "containerport"),
    ("spec.placement.nodeSelector", "nodeSelectr"),
    ("spec.placement.nodeAffinity.required[0].operator", "operater"),
    ("spec.placement.nodeAffinity.preferred[0].weight", "wieght"),
    ("spec.placement.antiAffinity.scope", "scop"),
    ("spec.placement.tolerations[1].effect", "efect"),
    ("spec.rollout.maxSurge", "maxSurg"),
    ("spec.livenessProbe.httpGet.path", "paht"),
    ("spec.readinessProbe.exec.command", "comand"),
    ("spec.securityContext.capabilities.drop", "dorp"),
    ("spec.securityContext.seccompProfile.type", "typ"),
    ("spec.securityContext.hostPID", "hostPid"),
    ("spec.volumes[0].emptyDir.sizeLimit", "sizelimit"),
    ("spec.env[1].valueFrom.secretKeyRef.key", "kee"),
]


def _rename(doc: dict[str, Any], path: str, new_key: str) -> str:
    parent_path, _, key = path.rpartition(".")
    parent: Any = doc
    for part in filter(None, parent_path.replace("[", ".[").split(".")):
        parent = parent[int(part[1:-1])] if part.startswith("[") else parent[part]
    parent[new_key] = parent.pop(key)
    return f"{parent_path}.{new_key}" if parent_path else new_key


@pytest.mark.parametrize(("path", "typo"), MISSPELLED, ids=[f"{p}<-{t}" for p, t in MISSPELLED])
def test_misspelled_field_is_rejected_with_path_and_suggestion(path: str, typo: str) -> None:
    doc = example()
    bad_path = _rename(doc, path, typo)
    right = path.rpartition(".")[2]
    assert (bad_path, f'unknown field (did you mean "{right}"?)') in errors_of(doc)


def test_unknown_field_without_a_close_match_has_no_suggestion() -> None:
    assert errors_of(example(**{"spec.zzqqxx": 1})) == [("spec.zzqqxx", "unknown field")]


def test_unknown_field_is_never_dropped_even_when_everything_else_is_valid() -> None:
    doc = example(**{"spec.placement.nodeAffinity.required[0].color": "red"})
    assert errors_of(doc) == [("spec.placement.nodeAffinity.required[0].color", "unknown field")]


# ---- types, ranges, names, required --------------------------------------------------------------------

BAD_VALUES = [
    ("spec.replicas", "3", "expected integer, got string"),
    ("spec.replicas", True, "expected integer, got boolean"),
    ("spec.replicas", 10_001, "must be between 0 and 10000, got 10001"),
    ("spec.replicas", -1, "must be between 0 and 10000, got -1"),
    ("spec.rollout.maxSurge", 10_001, "must be between 0 and 10000, got 10001"),
    ("spec.replicas", 2.5, "expected integer, got number"),
    ("metadata.name", "Bad Name!", "invalid name"),
    ("metadata.name", "", "must not be empty"),
    ("metadata.name", "a" * 64, "too long: 64 characters, at most 63"),
    ("metadata.namespace", "-shop", "invalid name"),
    ("metadata.labels", {"app": 3}, "expected string, got integer"),
    ("spec.image", None, "expected string, got null"),
    ("spec.image", "has space", "invalid image reference"),
    ("spec.command", "run", "expected array, got string"),
    ("spec.command", [1], "expected string, got integer"),
    ("spec.resources.requests.cpu", "lots", "invalid cpu quantity"),
    ("spec.resources.requests.memory", "64MB", "unknown memory suffix"),
    ("spec.resources.requests.memory", "0.5", "not a whole number of bytes"),
    ("spec.ports[0].containerPort", 0, "must be between 1 and 65535, got 0"),
    ("spec.ports[0].protocol", "tcp", 'must be one of "TCP", "UDP"; got "tcp" (did you mean "TCP"?)'),
    ("spec.placement.spread", "zones", '"none", "zone", "node"; got "zones" (did you mean "zone"?)'),
    ("spec.placement.zones", ["ok", "not ok"], "invalid zone or region name"),
    ("spec.placement.nodeSelector", {"bad key!": "x"}, "invalid label key"),
    ("spec.placement.nodeAffinity.preferred[0].weight", 0, "must be between 1 and 100"),
    ("spec.rollout.maxSurge", "25", 'expected an integer or a percentage like "25%"'),
    ("spec.rollout.maxUnavailable", "150%", "expected an integer or a percentage"),
    ("spec.livenessProbe.periodSeconds", 0, "must be between 0.1 and 86400"),
    ("spec.livenessProbe.periodSeconds", "10", "expected number, got string"),
    ("spec.securityContext.runAsUser", -1, "must be between 0 and 2147483647"),
    ("spec.securityContext.privileged", "yes", "expected boolean, got string"),
    ("spec.securityContext.capabilities.add", ["net_admin"], "invalid capability"),
    ("spec.volumes[0].mountPath", "relative/path", "invalid absolute path"),
    ("spec.env[0].name", "1BAD", "invalid environment variable name"),
    ("apiVersion", "v1", 'must be "cloudless/v1", got "v1"'),
    ("kind", "Deployment", 'must be "Workload", got "Deployment"'),
    ("spec.placement", [], "expected object, got array"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD_VALUES, ids=[f"{p}={v!r}" for p, v, _ in BAD_VALUES])
def test_bad_value_is_rejected_with_its_path(path: str, value: Any, message: str) -> None:
    errs = errors_of(example(**{path: value}))
    assert len(errs) == 1, errs
    where, text = errs[0]
    assert where.startswith(path) and message in text


def test_map_and_list_paths_name_the_entry() -> None:
    errs = errors_of(example(**{"spec.placement.nodeSelector": {"ok": "x", "bad key!": "y"}}))
    assert errs[0][0] == 'spec.placement.nodeSelector["bad key!"]'
    assert errors_of(example(**{"spec.placement.zones": ["ok", "not ok"]}))[0][0] == "spec.placement.zones[1]"


MISSING = ["apiVersion", "kind", "metadata", "spec", "metadata.name", "spec.ports[0].containerPort"]


@pytest.mark.parametrize("path", MISSING)
def test_required_field_missing(path: str) -> None:
    doc = example()
    parent_path, _, key = path.rpartition(".")
    parent: Any = doc
    for part in filter(None, parent_path.replace("[", ".[").split(".")):
        parent = parent[int(part[1:-1])] if part.startswith("[") else parent[part]
    del parent[key]
    assert (path, "required field is missing") in errors_of(doc)


def test_document_must_be_an_object() -> None:
    assert errors_of(["not", "a", "mapping"]) == [("", "expected object, got array")]


def test_all_problems_are_collected_into_one_error() -> None:
    doc = example(**{"spec.imagee": "x", "spec.replicas": -1, "metadata.name": "no way"})
    with pytest.raises(SpecError) as info:
        parse_workload(doc)
    err = info.value
    assert isinstance(err, CoordinatorError)
    assert {p for p, _ in err.errors} == {"spec.imagee", "spec.replicas", "metadata.name"}
    assert (err.path, err.message) == err.errors[0]
    assert str(err).endswith("(and 2 more)")
    body = err.to_json()
    assert json.loads(json.dumps(body)) == body and len(body["errors"]) == 3


# ---- cross-field rules -----------------------------------------------------------------------------------

CROSS = [
    ("limits below requests", {"spec.resources.limits.cpu": "100m"}, "spec.resources.limits.cpu", "below"),
    ("memory limit below request", {"spec.resources.limits.memory": "1Mi"}, "spec.resources.limits.memory", ""),
    (
        "two probe handlers",
        {"spec.livenessProbe.tcpSocket": {"port": 1}},
        "spec.livenessProbe",
        "exactly one of exec, httpGet, tcpSocket",
    ),
    ("no probe handler", {"spec.livenessProbe": {"periodSeconds": 3}}, "spec.livenessProbe", "(got 0)"),
    (
        "In without values",
        {"spec.placement.nodeAffinity.required[0].values": []},
        "spec.placement.nodeAffinity.required[0].values",
        "needs at least one value",
    ),
    (
        "Exists with values",
        {"spec.placement.nodeAffinity.preferred[0].operator": "Exists"},
        "spec.placement.nodeAffinity.preferred[0].values",
        "takes no values",
    ),
    (
        "toleration Exists with value",
        {"spec.placement.tolerations[0].value": "x"},
        "spec.placement.tolerations[0].value",
        "",
    ),
    (
        "toleration Equal without key",
        {"spec.placement.tolerations[1]": {"operator": "Equal", "value": "x"}},
        "spec.placement.tolerations[1].key",
        "",
    ),
    (
        "Localhost seccomp without profile",
        {"spec.securityContext.seccompProfile": {"type": "Localhost"}},
        "spec.securityContext.seccompProfile.localhostProfile",
        "needs",
    ),
    (
        "RuntimeDefault seccomp with profile",
        {"spec.securityContext.seccompProfile.type": "RuntimeDefault"},
        "spec.securityContext.seccompProfile.localhostProfile",
        "only type Localhost",
    ),
    ("non-root as root", {"spec.securityContext.runAsUser": 0}, "spec.securityContext.runAsUser", ""),
    (
        "privileged without escalation",
        {"spec.securityContext.privileged": True},
        "spec.securityContext.allowPrivilegeEscalation",
        "",
    ),
    ("env value and valueFrom", {"spec.env[1].value": "x"}, "spec.env[1].valueFrom", "not both"),
    ("duplicate env", {"spec.env[1]": {"name": "MODE"}}, "spec.env[1].name", "duplicate environment variable"),
    (
        "duplicate port",
        {"spec.ports": [{"containerPort": 1}, {"containerPort": 1}]},
        "spec.ports[1].containerPort",
        "duplicate port",
    ),
    (
        "duplicate hostPort",
        {"spec.ports": [{"containerPort": 1, "hostPort": 80}, {"containerPort": 2, "hostPort": 80}]},
        "spec.ports[1].hostPort",
        "",
    ),
    ("duplicate volume name", {"spec.volumes[1].name": "cache"}, "spec.volumes[1].name", ""),
    ("duplicate mountPath", {"spec.volumes[1].mountPath": "/var/cache/web"}, "spec.volumes[1].mountPath", ""),
    (
        "no surge and no unavailability",
        {"spec.rollout.maxSurge": 0, "spec.rollout.maxUnavailable": "0%"},
        "spec.rollout.maxUnavailable",
        "cannot both be 0",
    ),
]


@pytest.mark.parametrize(("overrides", "path", "message"), [c[1:] for c in CROSS], ids=[c[0] for c in CROSS])
def test_cross_field_rule(overrides: dict[str, Any], path: str, message: str) -> None:
    errs = errors_of(example(**overrides))
    assert [p for p, _ in errs] == [path]
    assert message in errs[0][1]


# ---- canonical documents and round trips -----------------------------------------------------------------


def test_to_doc_is_canonical() -> None:
    w = parse_workload(
        minimal(resources={"requests": {"cpu": 0.5, "memory": "1024Mi"}}, replicas=1, restartPolicy="Always")
    )
    doc = workload_to_doc(w)
    assert doc["spec"] == {"image": "x", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}
    assert list(doc) == ["apiVersion", "kind", "metadata", "spec"]


@pytest.mark.parametrize("doc", [FULL_EXAMPLE, minimal()], ids=["full", "minimal"])
def test_round_trip(doc: dict[str, Any]) -> None:
    w = parse_workload(copy.deepcopy(doc))
    again = workload_to_doc(w)
    assert parse_workload(again) == w
    assert workload_to_doc(parse_workload(again)) == again
    assert json.loads(json.dumps(again)) == again


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(workload_docs)
def test_generated_documents_round_trip_and_match_the_schema(doc: dict[str, Any]) -> None:
    try:
        w = parse_workload(copy.deepcopy(doc))
    except SpecError as exc:
        # the generator avoids most cross-field conflicts; what it cannot avoid the schema must also reject,
        # except the parser-only rules across list items (unique names, a secret file path that is another's
        # directory), limits >= requests, and the service's rules against the rest of the document (its target
        # ports among spec.ports, DNS-label names)
        parser_only = all("duplicate" in m or "below the request" in m or "used as a directory" in m
                          or path.startswith("spec.service") or "DNS label" in m for path, m in exc.errors)
        assert parser_only or validate(doc, workload_json_schema()), exc.errors
        assume(False)
    assert validate(doc, workload_json_schema()) == []
    again = workload_to_doc(w)
    assert parse_workload(again) == w
    assert validate(again, workload_json_schema()) == []


# ---- spec_hash -------------------------------------------------------------------------------------------

RESTARTS = [
    ("spec.image", "ghcr.io/example/web:1.4.3"),
    ("spec.command", ["/bin/other"]),
    ("spec.args", []),
    ("spec.env[0].value", "staging"),
    ("spec.resources.limits.memory", "512Mi"),
    ("spec.ports[0].hostPort", 81),
    ("spec.livenessProbe.periodSeconds", 6),
    ("spec.readinessProbe", {"tcpSocket": {"port": 8080}}),
    ("spec.securityContext.readOnlyRootFilesystem", False),
    ("spec.volumes[0].mountPath", "/cache"),
    ("spec.restartPolicy", "Always"),
]
NO_RESTART = [
    ("spec.replicas", 7),
    ("spec.rollout.maxSurge", 2),
    ("spec.placement.strategy", "spread"),
    ("spec.placement.zones", ["home"]),
    ("metadata.labels", {"app": "web2"}),
]


@pytest.mark.parametrize(("path", "value"), RESTARTS, ids=[p for p, _ in RESTARTS])
def test_spec_hash_changes_with_what_needs_a_restart(path: str, value: Any) -> None:
    assert spec_hash(parse_workload(example(**{path: value}))) != spec_hash(parse_workload(example()))


@pytest.mark.parametrize(("path", "value"), NO_RESTART, ids=[p for p, _ in NO_RESTART])
def test_spec_hash_ignores_scaling_rollout_and_placement(path: str, value: Any) -> None:
    assert spec_hash(parse_workload(example(**{path: value}))) == spec_hash(parse_workload(example()))


def test_spec_hash_is_stable_and_fits_the_wire() -> None:
    a = parse_workload(example())
    reordered = dict(reversed(list(example().items())))
    assert spec_hash(a) == spec_hash(parse_workload(reordered))
    # explicit defaults and equivalent quantities hash the same as omitted / canonical ones
    explicit = example(**{"spec.resources.requests.cpu": 0.25, "spec.livenessProbe.timeoutSeconds": 1})
    assert spec_hash(parse_workload(explicit)) == spec_hash(a)
    assert len(spec_hash(a)) == 32 and int(spec_hash(a), 16) >= 0  # fits ReplicaSpec.spec_hash (Text(64))


# ---- JSON Schema -----------------------------------------------------------------------------------------


def _objects(node: Any) -> list[dict[str, Any]]:
    found = []
    if isinstance(node, dict):
        if node.get("type") == "object":
            found.append(node)
        for v in node.values():
            found += _objects(v)
    elif isinstance(node, list):
        for v in node:
            found += _objects(v)
    return found


def test_json_schema_structure() -> None:
    schema = workload_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$ref"] == "#/$defs/Workload"
    objects = _objects(schema)
    assert len(objects) > 25
    for obj in objects:
        if "properties" in obj:
            assert obj["additionalProperties"] is False, obj.get("description")
        else:  # maps: values and key syntax constrained instead
            assert isinstance(obj["additionalProperties"], dict) and "propertyNames" in obj
    defs = schema["$defs"]
    assert defs["Workload"]["required"] == ["metadata", "spec", "apiVersion", "kind"]
    assert "required" not in defs["WorkloadSpec"] and "allOf" in defs["WorkloadSpec"]
    assert defs["Metadata"]["required"] == ["name"]
    assert "hostPID" in defs["SecurityContext"]["properties"]
    assert json.loads(json.dumps(schema)) == schema


@pytest.mark.parametrize("doc", [FULL_EXAMPLE, minimal()], ids=["full", "minimal"])
def test_json_schema_accepts_valid_documents(doc: dict[str, Any]) -> None:
    assert validate(doc, workload_json_schema()) == []


SCHEMA_REJECTS = [
    ("spec.imagee", "x"),
    ("spec.placement.nodeAffinity.required[0].operater", "In"),
    ("spec.replicas", 10_001),
    ("spec.resources.requests.cpu", "lots"),
    ("spec.livenessProbe.exec", {"command": ["x"]}),
    ("spec.rollout.maxUnavailable", "150%"),
    ("metadata.name", "no spaces"),
    ("kind", "Deployment"),
]


@pytest.mark.parametrize(("path", "value"), SCHEMA_REJECTS, ids=[p for p, _ in SCHEMA_REJECTS])
def test_json_schema_and_parser_both_reject(path: str, value: Any) -> None:
    doc = example()
    set_path(doc, path, value)
    assert validate(doc, workload_json_schema())
    assert errors_of(doc)


# ---- bridge to the wire -------------------------------------------------------------


def test_probe_to_wire() -> None:
    w = parse_workload(example())
    assert w.spec.liveness_probe is not None and w.spec.readiness_probe is not None
    live = w.spec.liveness_probe.to_wire()
    assert live == Probe(ProbeKind.HTTP, path="/healthz", port=8080, period_s=5.0, failure_threshold=4)
    assert w.spec.readiness_probe.to_wire().command == ("/bin/check",)


# ---- the wire's string rules hold at apply time (issue 16, High 1) ----------------------------------------


@pytest.mark.parametrize(("path", "value"), [
    ("spec.command", ["sleep", "a\x00b"]),
    ("spec.args", ["\udcff"]),
    ("metadata.labels", {"app": "x\x00"}),
    ("spec.env", [{"name": "A", "value": "\ud800"}]),
    ("spec.image", "busybox\udcff"),
], ids=["nul-command", "surrogate-arg", "nul-label", "surrogate-env", "surrogate-image"])
def test_strings_the_wire_cannot_carry_are_refused_naming_the_field(path: str, value: Any) -> None:
    doc = minimal()
    set_path(doc, path, value)
    problems = errors_of(doc)
    assert len(problems) == 1, problems
    where, message = problems[0]
    assert where.startswith(path) and ("NUL" in message or "surrogate" in message), problems[0]

"""Admission policy core: strict parsing of policy documents, the default set, and the property that `evaluate`
never raises."""

from __future__ import annotations

import copy
import subprocess
import sys
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator.errors import SpecError
from coordinator.policy import (
    Action,
    Decision,
    PolicyError,
    RuleName,
    default_policies,
    evaluate,
    load_policies,
    parse_policy,
)
from coordinator.spec import Resources, SecurityContext, Workload, parse_workload
from tests.coordinator import spec_strategies
from tests.coordinator.policy_builders import (
    CTX,
    DIGEST,
    REPO,
    SECURE_CONTEXT,
    hello,
    make_policy,
    make_workload,
    policy_doc,
)

# ---- strict parsing ----------------------------------------------------------------------------------------------

def _set(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    *parents, last = path.split(".")
    target = out
    for key in parents:
        target = target[key]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value
    return out


_DELETE = object()
BASE = policy_doc({"privileged": {}, "images": {"allowedRegistries": ["localhost"]}})


@pytest.mark.parametrize(("path", "value", "error_path", "fragment"), [
    pytest.param("spec.rules.imagez", {}, "spec.rules.imagez", 'unknown field (did you mean "images"?)',
                 id="unknown-rule"),
    pytest.param("spec.rules.privileged.alowed", True, "spec.rules.privileged.alowed", 'did you mean "allowed"',
                 id="unknown-rule-field"),
    pytest.param("spec.extra", 1, "spec.extra", "unknown field", id="unknown-spec-field"),
    pytest.param("status", {}, "status", "unknown field", id="unknown-top-level"),
    pytest.param("metadata.labels", {}, "metadata.labels", "unknown field", id="metadata-only-name"),
    pytest.param("spec.rules.privileged.allowed", "no", "spec.rules.privileged.allowed", "expected boolean",
                 id="wrong-type"),
    pytest.param("spec.rules.privileged", True, "spec.rules.privileged", "expected object", id="rule-not-object"),
    pytest.param("spec.action", "block", "spec.action", 'must be one of "deny", "warn", "audit"', id="bad-action"),
    pytest.param("spec.rules.privileged.action", "Deny", "spec.rules.privileged.action", 'did you mean "deny"',
                 id="bad-rule-action"),
    pytest.param("spec.namespaces", [], "spec.namespaces", "needs at least 1 item", id="no-namespaces"),
    pytest.param("spec.namespaces", ["prod/*"], "spec.namespaces[0]", "invalid namespace", id="bad-namespace"),
    pytest.param("spec.namespaces", "prod", "spec.namespaces", "expected array", id="namespaces-not-list"),
    pytest.param("spec.rules", {}, "spec.rules", "no rules", id="empty-rules"),
    pytest.param("spec.rules", _DELETE, "spec.rules", "required field is missing", id="missing-rules"),
    pytest.param("spec.rules.images", {}, "spec.rules.images", "checks nothing", id="images-checks-nothing"),
    pytest.param("spec.rules.images.allowedRegistries", ["localhost", "library"],
                 "spec.rules.images.allowedRegistries[1]", "does not start with a registry", id="unqualified-registry"),
    pytest.param("spec.rules.images.allowedImages", ["nginx"], "spec.rules.images.allowedImages[0]",
                 "docker.io/library/nginx", id="unqualified-image"),
    pytest.param("spec.rules.images.allowedImages", ["a b"], "spec.rules.images.allowedImages[0]",
                 "invalid image pattern", id="image-pattern-space"),
    pytest.param("spec.rules.capabilities", {"allowedAdd": ["net_admin"]}, "spec.rules.capabilities.allowedAdd[0]",
                 "invalid capability", id="bad-capability"),
    pytest.param("spec.rules.seccomp", {"allowedTypes": ["Default"]}, "spec.rules.seccomp.allowedTypes[0]",
                 "must be one of", id="bad-seccomp-type"),
    pytest.param("spec.rules.resources", {"maxCpu": "lots"}, "spec.rules.resources.maxCpu", "invalid cpu quantity",
                 id="bad-max-cpu"),
    pytest.param("spec.rules.resources", {"maxMemory": -1}, "spec.rules.resources.maxMemory", "negative",
                 id="bad-max-memory"),
    pytest.param("kind", "Workload", "kind", 'must be "Policy"', id="wrong-kind"),
    pytest.param("apiVersion", "v1", "apiVersion", 'must be "cloudless/v1"', id="wrong-api-version"),
    pytest.param("kind", _DELETE, "kind", "required field is missing", id="missing-kind"),
    pytest.param("metadata.name", "-bad", "metadata.name", "invalid name", id="bad-name"),
    pytest.param("metadata", _DELETE, "metadata", "required field is missing", id="missing-metadata"),
    pytest.param("spec.rules.privileged.allowed", None, "spec.rules.privileged.allowed", "got null", id="null"),
])
def test_strict_parsing(path: str, value: Any, error_path: str, fragment: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(_set(BASE, path, value), source="team.yaml")
    exc = info.value
    assert isinstance(exc, SpecError) and exc.source == "team.yaml"
    assert exc.path == error_path and fragment in exc.message, exc.errors
    assert str(exc).startswith(f"team.yaml: {error_path}: ")


def test_all_problems_are_collected_in_one_error() -> None:
    doc = _set(_set(BASE, "spec.action", "nope"), "spec.rules.privileged", {"allowed": 1, "x": 2})
    with pytest.raises(PolicyError) as info:
        parse_policy(doc)
    assert sorted(p for p, _ in info.value.errors) == [
        "spec.action", "spec.rules.privileged.allowed", "spec.rules.privileged.x"]
    assert "(and 2 more)" in str(info.value)
    assert info.value.to_json()["errors"][0].keys() == {"path", "message"}


@pytest.mark.parametrize("doc", [None, [], "policy", 3], ids=["null", "list", "string", "number"])
def test_a_document_must_be_an_object(doc: object) -> None:
    with pytest.raises(PolicyError, match="expected object"):
        parse_policy(doc)


def test_load_policies_names_the_document_and_skips_empty_ones() -> None:
    good, bad = policy_doc({"privileged": {}}, name="a"), policy_doc({"nope": {}}, name="b")
    assert [p.name for p in load_policies([good, None], source="one.yaml")] == ["a"]
    with pytest.raises(PolicyError) as info:
        load_policies([good, bad], source="two.yaml")
    assert info.value.source == "two.yaml#2" and info.value.path == "spec.rules.nope"
    with pytest.raises(PolicyError) as info:
        load_policies([bad], source="single.yaml")
    assert info.value.source == "single.yaml"
    assert load_policies([]) == ()


def test_policy_names_are_unique_within_and_across_files() -> None:
    a = policy_doc({"privileged": {}}, name="a")
    with pytest.raises(PolicyError) as info:
        load_policies([a, a], source="dup.yaml")
    assert (info.value.source, info.value.path) == ("dup.yaml#2", "metadata.name")
    first = load_policies([a], source="first.yaml")
    with pytest.raises(PolicyError, match=r"^second\.yaml: metadata\.name: a policy named 'a' is already defined$"):
        load_policies([a], source="second.yaml", known=first)


def test_rule_defaults_are_secure() -> None:
    rules = make_policy({name: {} for name in RuleName if name != "images"}).spec.rules
    assert rules.images is None
    assert rules.privileged is not None and rules.privileged.allowed is False
    assert rules.capabilities is not None and rules.capabilities.require_drop_all
    assert rules.capabilities.allowed_add == ()
    assert rules.run_as_non_root is not None and rules.run_as_non_root.required
    assert rules.resources is not None and rules.resources.require_limits
    assert [name for name, _ in rules.active()] == [n for n in RuleName if n != "images"]


# ---- the default set ---------------------------------------------------------------------------------------------

def test_default_policies_load_from_the_package() -> None:
    policies = default_policies()
    assert [p.name for p in policies] == ["secure-defaults", "image-provenance"]
    assert default_policies() is policies  # parsed once
    assert all(p.applies_to("anything") for p in policies)


def test_pyyaml_is_imported_with_the_module_not_in_the_first_apply() -> None:
    """Importing PyYAML takes 11-17 ms of CPU: the coordinator's first PUT /v1/workloads paid it inside one step of
    the event loop (issue 17). It is imported with coordinator.operations (the coordinator's start-up), so the first
    default_policies() only parses, and still gives the packaged set."""
    code = ("import sys\nimport coordinator.operations\nprint('yaml' in sys.modules)\n"
            "from coordinator.policy import default_policies\nprint([p.name for p in default_policies()])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["True", "['secure-defaults', 'image-provenance']"], out.stdout


def test_default_yaml_parses_like_load_policies() -> None:
    text = (REPO / "coordinator" / "policies" / "default.yaml").read_text(encoding="utf-8")
    assert load_policies(yaml.safe_load_all(text)) == default_policies()


# examples/hello.yaml as it was before it declared a securityContext (everything else as in the example)
HELLO_WITHOUT_SECURITY_CONTEXT = """
apiVersion: cloudless/v1
kind: Workload
metadata:
  name: hello
  labels:
    app: hello
spec:
  image: localhost/cloudless/busybox:latest
  command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
  replicas: 1
  resources:
    requests: {cpu: 50m, memory: 16Mi}
    limits: {cpu: 200m, memory: 64Mi}
  ports:
    - containerPort: 8080
      hostPort: 18081
  readinessProbe:
    httpGet: {path: /, port: 8080}
    periodSeconds: 2
  livenessProbe:
    tcpSocket: {port: 8080}
    periodSeconds: 5
  rollout:
    maxSurge: 0
    maxUnavailable: 1
"""


def hello_without_security_context() -> dict[str, Any]:
    doc = yaml.safe_load(HELLO_WITHOUT_SECURITY_CONTEXT)
    assert isinstance(doc, dict)
    return doc


def test_inline_hello_copy_is_the_example_minus_its_security_context() -> None:
    doc = hello()
    assert "securityContext" in doc["spec"]
    del doc["spec"]["securityContext"]
    assert doc == hello_without_security_context()


def test_default_policy_admits_hello_example_with_its_security_context() -> None:
    decision = evaluate(default_policies(), parse_workload(hello()))
    assert decision.allowed
    assert [v.field for v in decision.violations if v.action is Action.DENY] == []
    assert decision == Decision(True, (), ("image-provenance", "secure-defaults"))  # not even a warning


def test_default_policy_on_hello_without_security_context() -> None:
    decision = evaluate(default_policies(), parse_workload(hello_without_security_context()))
    assert not decision.allowed
    assert [(v.action, v.field) for v in decision.violations] == [
        (Action.DENY, f"{CTX}.capabilities.drop"),
        (Action.WARN, f"{CTX}.runAsNonRoot"),
        (Action.WARN, f"{CTX}.readOnlyRootFilesystem"),
        (Action.DENY, f"{CTX}.allowPrivilegeEscalation"),
    ]


def test_default_policy_admits_hello_with_a_proper_security_context() -> None:
    doc = hello_without_security_context()
    doc["spec"]["securityContext"] = SECURE_CONTEXT
    assert evaluate(default_policies(), parse_workload(doc)) == Decision(
        True, (), ("image-provenance", "secure-defaults"))


@pytest.mark.parametrize(("image", "security", "resources", "expected"), [
    pytest.param("docker.io/library/nginx:1.25", {}, None, [("image-provenance", "warn", "spec.image")],
                 id="docker-hub-warns"),
    pytest.param("grafana/grafana", {}, None, [("image-provenance", "warn", "spec.image")], id="docker-hub-user"),
    pytest.param("ghcr.io/org/app:1", {}, None,
                 [("image-provenance", "warn", "spec.image"), ("secure-defaults", "deny", "spec.image")],
                 id="other-registry-denied"),
    pytest.param("localhost/app", {"privileged": True, "allowPrivilegeEscalation": None}, None,
                 [("secure-defaults", "deny", f"{CTX}.privileged"),
                  ("secure-defaults", "deny", f"{CTX}.allowPrivilegeEscalation")], id="privileged-denied"),
    pytest.param("localhost/app", {"hostNetwork": True}, None,
                 [("secure-defaults", "deny", f"{CTX}.hostNetwork")], id="host-network-denied"),
    pytest.param("localhost/app", {"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}, None, [],
                 id="net-bind-service-allowed"),
    pytest.param("localhost/app", {"capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]}}, None,
                 [("secure-defaults", "deny", f"{CTX}.capabilities.add[0]")], id="net-admin-denied"),
    pytest.param("localhost/app", {"seccompProfile": {"type": "Unconfined"}}, None,
                 [("secure-defaults", "deny", f"{CTX}.seccompProfile.type")], id="unconfined-denied"),
    pytest.param("localhost/app", {"runAsNonRoot": False, "runAsUser": None, "readOnlyRootFilesystem": False},
                 None, [("secure-defaults", "warn", f"{CTX}.runAsNonRoot"),
                        ("secure-defaults", "warn", f"{CTX}.readOnlyRootFilesystem")], id="root-and-rw-warn"),
    pytest.param("localhost/app", {}, {}, [("secure-defaults", "warn", "spec.resources.limits.cpu"),
                                           ("secure-defaults", "warn", "spec.resources.limits.memory")],
                 id="no-limits-warn"),
    pytest.param("localhost/app", {}, {"limits": {"cpu": "4", "memory": "4Gi"}},
                 [("secure-defaults", "warn", "spec.resources.limits.cpu"),
                  ("secure-defaults", "warn", "spec.resources.limits.memory")], id="big-limits-warn"),
])
def test_default_policy_table(image: str, security: dict[str, Any], resources: dict[str, Any] | None,
                              expected: list[tuple[str, str, str]]) -> None:
    context = {k: v for k, v in {**SECURE_CONTEXT, **security}.items() if v is not None}
    limits = {"limits": {"cpu": "500m", "memory": "128Mi"}} if resources is None else resources
    decision = evaluate(default_policies(), make_workload(image, security=context, resources=limits))
    assert [(v.policy, v.action, v.field) for v in decision.violations] == expected
    assert decision.allowed is not any(action == "deny" for _, action, _ in expected)


# ---- property: evaluate never raises ------------------------------------------------------------------------------

IMAGES = st.one_of(
    st.sampled_from(["nginx", "localhost/cloudless/busybox:latest", f"ghcr.io/o/a@{DIGEST}", "Reg/x", "a" * 64,
                     "x@y", "UPPER", "::", "a:b:c", "[::1]/x", "docker.io/library/nginx:1.25"]),
    st.from_regex(r"^[^\s]{1,40}$", fullmatch=True),
)
WORKLOAD_DOCS = st.fixed_dictionaries(
    {"apiVersion": st.just("cloudless/v1"), "kind": st.just("Workload"),
     "metadata": st.fixed_dictionaries({"name": st.just("w")},
                                       optional={"namespace": st.sampled_from(["default", "prod", "dev"])}),
     "spec": st.fixed_dictionaries(
         {"image": IMAGES},
         optional={"securityContext": spec_strategies.for_class(SecurityContext),
                   "resources": spec_strategies.for_class(Resources)},
     )},
)
REGISTRY_PATTERNS = ["localhost", "docker.io", "*", "*.io", "docker.io/library"]
IMAGE_PATTERNS = ["localhost/*", "docker.io/library/nginx:*", "[a-z]*/x"]


def _switch(key: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={key: st.booleans()})


RULE_STRATEGIES: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "images": st.fixed_dictionaries({"allowedRegistries": st.lists(st.sampled_from(REGISTRY_PATTERNS))}, optional={
        "requireDigest": st.booleans(), "allowedImages": st.lists(st.sampled_from(IMAGE_PATTERNS))}),
    "privileged": _switch("allowed"),
    "hostNamespaces": _switch("allowed"),
    "capabilities": st.fixed_dictionaries({}, optional={
        "requireDropAll": st.booleans(), "allowedAdd": st.lists(st.sampled_from(["NET_BIND_SERVICE", "*", "CHOWN"]))}),
    "runAsNonRoot": _switch("required"),
    "readOnlyRootFilesystem": _switch("required"),
    "seccomp": st.fixed_dictionaries({}, optional={
        "allowedTypes": st.lists(st.sampled_from(["RuntimeDefault", "Localhost", "Unconfined"]))}),
    "allowPrivilegeEscalation": _switch("allowed"),
    "resources": st.fixed_dictionaries({}, optional={
        "requireLimits": st.booleans(), "maxCpu": st.sampled_from(["100m", "2", 1]),
        "maxMemory": st.sampled_from(["64Mi", "1Gi"])}),
}
ACTIONS = st.sampled_from(["deny", "warn", "audit"])
POLICY_RULES = st.fixed_dictionaries({}, optional={
    name: st.tuples(rule, st.one_of(st.none(), ACTIONS)).map(
        lambda t: t[0] if t[1] is None else {**t[0], "action": t[1]})
    for name, rule in RULE_STRATEGIES.items()
}).filter(bool)


def _parse_or_none(doc: dict[str, Any]) -> Workload | None:
    try:
        return parse_workload(doc)
    except SpecError:
        return None


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(WORKLOAD_DOCS, st.lists(st.tuples(POLICY_RULES, ACTIONS,
                                         st.sampled_from([["*"], ["prod"], ["dev", "default"]])), max_size=3))
def test_evaluate_never_raises(doc: dict[str, Any], specs: list[tuple[dict[str, Any], str, list[str]]]) -> None:
    workload = _parse_or_none(doc)
    if workload is None:
        return  # cross-field spec rules (limits >= requests, Localhost needs a profile) filter a few out
    policies = [parse_policy(policy_doc(rules, name=f"p{i}", action=action, namespaces=namespaces))
                for i, (rules, action, namespaces) in enumerate(specs)]
    for chosen in (policies, default_policies()):
        decision = evaluate(chosen, workload)
        assert decision.allowed == (not decision.with_action(Action.DENY))
        assert all(v.field.startswith("spec.") and v.message for v in decision.violations)
        assert evaluate(list(reversed(chosen)), workload) == decision

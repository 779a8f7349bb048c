"""Admission policy core: image references, each rule, actions, namespaces, strict parsing, the default set."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator.errors import SpecError
from coordinator.policy import (
    Action,
    Decision,
    ImageRef,
    Policy,
    PolicyError,
    RuleName,
    Violation,
    default_policies,
    evaluate,
    load_policies,
    parse_image_ref,
    parse_policy,
)
from coordinator.spec import Resources, SecurityContext, Workload, parse_workload
from tests.coordinator import spec_strategies

REPO = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "ab" * 32
CTX = "spec.securityContext"
# Passes every rule of the default set (the example in coordinator/policies/default.yaml).
SECURE_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": 65534,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}


# ---- builders ----------------------------------------------------------------------------------------------------

def make_workload(image: str = "localhost/app:1", *, namespace: str = "default", security: dict[str, Any] | None = None,
                  resources: dict[str, Any] | None = None) -> Workload:
    spec: dict[str, Any] = {"image": image}
    if security is not None:
        spec["securityContext"] = security
    if resources is not None:
        spec["resources"] = resources
    return parse_workload({"apiVersion": "cloudless/v1", "kind": "Workload",
                           "metadata": {"name": "web", "namespace": namespace}, "spec": spec})


def policy_doc(rules: dict[str, Any], *, name: str = "p", action: str | None = None,
               namespaces: list[str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"rules": rules}
    if action is not None:
        spec["action"] = action
    if namespaces is not None:
        spec["namespaces"] = namespaces
    return {"apiVersion": "cloudless/v1", "kind": "Policy", "metadata": {"name": name}, "spec": spec}


def make_policy(rules: dict[str, Any], **kwargs: Any) -> Policy:
    return parse_policy(policy_doc(rules, **kwargs))


def fields_of(decision: Decision) -> list[str]:
    return [v.field for v in decision.violations]


def hello() -> dict[str, Any]:
    doc = yaml.safe_load((REPO / "examples" / "hello.yaml").read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


# ---- image references --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("nginx", "docker.io/library/nginx:latest", id="official-image"),
    pytest.param("nginx:1.25", "docker.io/library/nginx:1.25", id="official-with-tag"),
    pytest.param("library/nginx", "docker.io/library/nginx:latest", id="library-namespace"),
    pytest.param("grafana/grafana:10", "docker.io/grafana/grafana:10", id="user-image"),
    pytest.param("docker.io/nginx", "docker.io/library/nginx:latest", id="docker.io-single-component"),
    pytest.param("index.docker.io/foo/bar", "docker.io/foo/bar:latest", id="legacy-index"),
    pytest.param("localhost/cloudless/busybox:latest", "localhost/cloudless/busybox:latest", id="localhost"),
    pytest.param("localhost/app", "localhost/app:latest", id="localhost-default-tag"),
    pytest.param("localhost:5000/a/b:v1", "localhost:5000/a/b:v1", id="registry-port"),
    pytest.param("registry.lan:5000/x", "registry.lan:5000/x:latest", id="domain-port"),
    pytest.param("[::1]:5000/x", "[::1]:5000/x:latest", id="ipv6-registry"),
    pytest.param("Registry/app", "Registry/app:latest", id="uppercase-first-component-is-a-registry"),
    pytest.param(f"ghcr.io/org/app@{DIGEST}", f"ghcr.io/org/app@{DIGEST}", id="digest-only-no-default-tag"),
    pytest.param(f"ghcr.io/org/app:1.0@{DIGEST}", f"ghcr.io/org/app:1.0@{DIGEST}", id="tag-and-digest"),
    pytest.param("a.b/c/d/e:f", "a.b/c/d/e:f", id="deep-path"),
    pytest.param("my_app-x__y.z", "docker.io/library/my_app-x__y.z:latest", id="path-separators"),
])
def test_image_ref_normalisation(text: str, expected: str) -> None:
    ref = parse_image_ref(text)
    assert ref is not None and str(ref) == expected


def test_image_ref_parts() -> None:
    assert parse_image_ref("nginx") == ImageRef("docker.io", "library/nginx", "latest", "")
    ref = parse_image_ref(f"ghcr.io/org/app:1@{DIGEST}")
    assert ref is not None and ref.name == "ghcr.io/org/app"
    assert ref.forms() == ("ghcr.io/org/app", "ghcr.io/org/app:1", f"ghcr.io/org/app@{DIGEST}",
                           f"ghcr.io/org/app:1@{DIGEST}")


@pytest.mark.parametrize("text", [
    pytest.param("", id="empty"),
    pytest.param("NGINX", id="uppercase-name"),
    pytest.param("nginx:", id="empty-tag"),
    pytest.param("nginx:-x", id="tag-starts-with-dash"),
    pytest.param("nginx:\u00e9t\u00e9", id="non-ascii-tag"),
    pytest.param("nginx@sha256:abc", id="short-digest"),
    pytest.param("nginx@", id="empty-digest"),
    pytest.param("ab" * 32, id="64-hex-looks-like-an-id"),
    pytest.param("foo//bar", id="empty-component"),
    pytest.param("/foo", id="leading-slash"),
    pytest.param("foo/", id="trailing-slash"),
    pytest.param(":tag", id="no-name"),
    pytest.param("-bad/x", id="component-starts-with-dash"),
    pytest.param("bad_host.com:x/app", id="bad-registry"),
    pytest.param("a" * 300, id="too-long"),
])
def test_image_ref_invalid(text: str) -> None:
    assert parse_image_ref(text) is None


# ---- rules: table tests ------------------------------------------------------------------------------------------

IMAGE_CASES = [
    # (rule, image, expected messages as substrings; [] = allowed)
    ({"allowedRegistries": ["localhost"]}, "localhost/cloudless/busybox:latest", []),
    ({"allowedRegistries": ["localhost"]}, "localhost:5000/x", ["not from an allowed source"]),
    ({"allowedRegistries": ["docker.io/library"]}, "nginx", []),
    ({"allowedRegistries": ["docker.io/library"]}, "grafana/grafana", ["not from an allowed source"]),
    ({"allowedRegistries": ["docker.io/library"]}, "docker.io/libraryx/a", ["not from an allowed source"]),
    ({"allowedRegistries": ["docker.io"]}, "grafana/grafana", []),
    ({"allowedRegistries": ["index.docker.io"]}, "nginx", []),
    ({"allowedRegistries": ["*.corp.example"]}, "reg.corp.example/team/app:1", []),
    ({"allowedRegistries": ["*.corp.example"]}, "evil.com/x.corp.example/app", ["not from an allowed source"]),
    ({"allowedRegistries": ["*"]}, "ghcr.io/anything/at/all", []),
    ({"allowedRegistries": []}, "localhost/app", ["registries: none"]),
    ({"allowedImages": ["localhost/cloudless/*"]}, "localhost/cloudless/busybox:latest", []),
    ({"allowedImages": ["localhost/cloudless/*"]}, "localhost/cloudless/sub/img", ["not from an allowed source"]),
    ({"allowedImages": ["localhost/cloudless/*"]}, "localhost/other/busybox", ["not from an allowed source"]),
    ({"allowedImages": ["docker.io/library/nginx:1.*"]}, "nginx:1.25", []),
    ({"allowedImages": ["docker.io/library/nginx:1.*"]}, "nginx:2.0", ["not from an allowed source"]),
    ({"allowedImages": ["docker.io/library/nginx"]}, "nginx:any", []),
    ({"allowedImages": [f"ghcr.io/org/app@{DIGEST}"]}, f"ghcr.io/org/app:1@{DIGEST}", []),
    ({"allowedRegistries": ["ghcr.io"], "allowedImages": ["localhost/app"]}, "localhost/app", []),
    ({"allowedRegistries": ["ghcr.io"], "allowedImages": ["localhost/app"]}, "quay.io/x/y", ["registries: ghcr.io"]),
    ({"requireDigest": True}, f"ghcr.io/org/app@{DIGEST}", []),
    ({"requireDigest": True}, "ghcr.io/org/app:1", ["not pinned by digest"]),
    ({"allowedRegistries": ["localhost"], "requireDigest": True}, "nginx",
     ["not from an allowed source", "not pinned by digest"]),
    ({"requireDigest": True}, "NOT/Valid", ["not a valid image reference"]),
]


@pytest.mark.parametrize(("rule", "image", "expected"), [
    pytest.param(rule, image, expected, id=f"{image}-{'ok' if not expected else 'violates'}-{i}")
    for i, (rule, image, expected) in enumerate(IMAGE_CASES)
])
def test_images_rule(rule: dict[str, Any], image: str, expected: list[str]) -> None:
    decision = evaluate([make_policy({"images": rule})], make_workload(image))
    assert fields_of(decision) == ["spec.image"] * len(expected)
    for violation, fragment in zip(decision.violations, expected, strict=True):
        assert fragment in violation.message
        assert violation.rule is RuleName.IMAGES


SECURITY_CASES = [
    # id, rules, securityContext, expected violating fields (relative to spec.securityContext)
    ("privileged-denied", {"privileged": {}}, {"privileged": True}, ["privileged"]),
    ("privileged-off", {"privileged": {"allowed": False}}, {}, []),
    ("privileged-allowed", {"privileged": {"allowed": True}}, {"privileged": True}, []),
    ("host-network", {"hostNamespaces": {}}, {"hostNetwork": True}, ["hostNetwork"]),
    ("host-all-three", {"hostNamespaces": {"allowed": False}},
     {"hostNetwork": True, "hostPID": True, "hostIPC": True}, ["hostNetwork", "hostPID", "hostIPC"]),
    ("host-allowed", {"hostNamespaces": {"allowed": True}}, {"hostPID": True}, []),
    ("host-none", {"hostNamespaces": {}}, {}, []),
    ("caps-drop-missing", {"capabilities": {}}, {}, ["capabilities.drop"]),
    ("caps-drop-all", {"capabilities": {}}, {"capabilities": {"drop": ["ALL"]}}, []),
    ("caps-drop-cap-prefix", {"capabilities": {}}, {"capabilities": {"drop": ["CAP_ALL"]}}, []),
    ("caps-drop-some", {"capabilities": {}}, {"capabilities": {"drop": ["NET_RAW"]}}, ["capabilities.drop"]),
    ("caps-drop-not-required", {"capabilities": {"requireDropAll": False}}, {}, []),
    ("caps-add-allowed", {"capabilities": {"allowedAdd": ["NET_BIND_SERVICE"]}},
     {"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE", "CAP_NET_BIND_SERVICE"]}}, []),
    ("caps-add-refused", {"capabilities": {"allowedAdd": ["NET_BIND_SERVICE"]}},
     {"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE", "SYS_ADMIN", "NET_RAW"]}},
     ["capabilities.add[1]", "capabilities.add[2]"]),
    ("caps-add-none-allowed", {"capabilities": {"requireDropAll": False}},
     {"capabilities": {"add": ["CHOWN"]}}, ["capabilities.add[0]"]),
    ("caps-add-any", {"capabilities": {"allowedAdd": ["*"]}},
     {"capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}}, []),
    ("caps-add-ALL", {"capabilities": {"allowedAdd": ["NET_BIND_SERVICE"]}},
     {"capabilities": {"drop": ["ALL"], "add": ["ALL"]}}, ["capabilities.add[0]"]),
    ("non-root-missing", {"runAsNonRoot": {}}, {}, ["runAsNonRoot"]),
    ("non-root-set", {"runAsNonRoot": {"required": True}}, {"runAsNonRoot": True}, []),
    ("non-root-by-uid", {"runAsNonRoot": {}}, {"runAsUser": 1000}, []),
    ("non-root-uid-0", {"runAsNonRoot": {}}, {"runAsUser": 0}, ["runAsUser"]),
    ("non-root-not-required", {"runAsNonRoot": {"required": False}}, {"runAsUser": 0}, []),
    ("ro-root-missing", {"readOnlyRootFilesystem": {}}, {}, ["readOnlyRootFilesystem"]),
    ("ro-root-set", {"readOnlyRootFilesystem": {}}, {"readOnlyRootFilesystem": True}, []),
    ("ro-root-not-required", {"readOnlyRootFilesystem": {"required": False}}, {}, []),
    ("seccomp-default-type", {"seccomp": {}}, {}, []),
    ("seccomp-unconfined", {"seccomp": {}}, {"seccompProfile": {"type": "Unconfined"}},
     ["seccompProfile.type"]),
    ("seccomp-localhost", {"seccomp": {"allowedTypes": ["RuntimeDefault", "Localhost"]}},
     {"seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}}, []),
    ("seccomp-only-runtime-default", {"seccomp": {"allowedTypes": ["RuntimeDefault"]}},
     {"seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}}, ["seccompProfile.type"]),
    ("escalation-unset", {"allowPrivilegeEscalation": {}}, {}, ["allowPrivilegeEscalation"]),
    ("escalation-true", {"allowPrivilegeEscalation": {}}, {"allowPrivilegeEscalation": True},
     ["allowPrivilegeEscalation"]),
    ("escalation-false", {"allowPrivilegeEscalation": {"allowed": False}}, {"allowPrivilegeEscalation": False}, []),
    ("escalation-privileged", {"allowPrivilegeEscalation": {}}, {"privileged": True}, ["allowPrivilegeEscalation"]),
    ("escalation-allowed", {"allowPrivilegeEscalation": {"allowed": True}}, {"allowPrivilegeEscalation": True}, []),
]


@pytest.mark.parametrize(("rules", "security", "expected"),
                         [pytest.param(r, s, e, id=i) for i, r, s, e in SECURITY_CASES])
def test_security_rules(rules: dict[str, Any], security: dict[str, Any], expected: list[str]) -> None:
    decision = evaluate([make_policy(rules)], make_workload(security=security))
    assert fields_of(decision) == [f"{CTX}.{f}" for f in expected]
    assert decision.allowed is not expected
    assert all(v.rule == next(iter(rules)) and v.message for v in decision.violations)


RESOURCE_CASES = [
    ("limits-missing", {}, None, ["limits.cpu", "limits.memory"]),
    ("limits-set", {}, {"limits": {"cpu": "1", "memory": "1Gi"}}, []),
    ("cpu-limit-missing", {}, {"limits": {"memory": "64Mi"}, "requests": {"cpu": "1"}}, ["limits.cpu"]),
    ("limits-not-required", {"requireLimits": False}, None, []),
    ("under-max", {"maxCpu": "2", "maxMemory": "1Gi"}, {"limits": {"cpu": "2", "memory": "1Gi"}}, []),
    ("over-max", {"maxCpu": "2", "maxMemory": "1Gi"}, {"limits": {"cpu": "2001m", "memory": "2Gi"}},
     ["limits.cpu", "limits.memory"]),
    ("request-over-max-without-limit", {"requireLimits": False, "maxCpu": 1},
     {"requests": {"cpu": "1500m"}}, ["requests.cpu"]),
    ("missing-and-over", {"maxMemory": "64Mi"}, {"requests": {"memory": "128Mi"}},
     ["limits.cpu", "limits.memory", "requests.memory"]),
]


@pytest.mark.parametrize(("rule", "resources", "expected"),
                         [pytest.param(r, res, e, id=i) for i, r, res, e in RESOURCE_CASES])
def test_resources_rule(rule: dict[str, Any], resources: dict[str, Any] | None, expected: list[str]) -> None:
    decision = evaluate([make_policy({"resources": rule})], make_workload(resources=resources))
    assert fields_of(decision) == [f"spec.resources.{f}" for f in expected]


def test_resource_messages_use_canonical_quantities() -> None:
    decision = evaluate([make_policy({"resources": {"maxCpu": "2", "maxMemory": "1Gi"}})],
                        make_workload(resources={"limits": {"cpu": "2500m", "memory": "2048Mi"}}))
    assert [v.message for v in decision.violations] == ["CPU 2500m is above the maximum 2",
                                                        "memory 2Gi is above the maximum 1Gi"]


# ---- actions, namespaces, order ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("policy_action", "rule_action", "expected", "allowed"), [
    pytest.param(None, None, Action.DENY, False, id="default-deny"),
    pytest.param("deny", None, Action.DENY, False, id="policy-deny"),
    pytest.param("warn", None, Action.WARN, True, id="policy-warn"),
    pytest.param("audit", None, Action.AUDIT, True, id="policy-audit"),
    pytest.param("warn", "deny", Action.DENY, False, id="rule-overrides-to-deny"),
    pytest.param("deny", "warn", Action.WARN, True, id="rule-overrides-to-warn"),
    pytest.param("deny", "audit", Action.AUDIT, True, id="rule-overrides-to-audit"),
])
def test_actions(policy_action: str | None, rule_action: str | None, expected: Action, allowed: bool) -> None:
    rule: dict[str, Any] = {} if rule_action is None else {"action": rule_action}
    decision = evaluate([make_policy({"privileged": rule}, action=policy_action)],
                        make_workload(security={"privileged": True}))
    assert [v.action for v in decision.violations] == [expected]
    assert decision.allowed is allowed
    assert decision.reasons == (() if allowed else (
        f"{CTX}.privileged: privileged containers are not allowed: they control the whole device (p/privileged)",))


def test_one_deny_among_warnings_denies() -> None:
    policies = [make_policy({"privileged": {}, "runAsNonRoot": {"action": "warn"}}, name="a"),
                make_policy({"readOnlyRootFilesystem": {}}, name="b", action="audit")]
    decision = evaluate(policies, make_workload(security={"privileged": True}))
    assert [(v.policy, v.action) for v in decision.violations] == [
        ("a", Action.DENY), ("a", Action.WARN), ("b", Action.AUDIT)]
    assert not decision.allowed
    assert [v.rule for v in decision.with_action(Action.WARN)] == [RuleName.RUN_AS_NON_ROOT]


@pytest.mark.parametrize(("namespaces", "workload_ns", "applies"), [
    pytest.param(None, "default", True, id="default-is-every-namespace"),
    pytest.param(["*"], "prod", True, id="star"),
    pytest.param(["prod"], "prod", True, id="listed"),
    pytest.param(["prod", "staging"], "staging", True, id="listed-second"),
    pytest.param(["prod"], "default", False, id="not-listed"),
    pytest.param(["prod"], "production", False, id="exact-not-prefix"),
    pytest.param(["dev", "*"], "other", True, id="star-among-names"),
])
def test_namespace_scoping(namespaces: list[str] | None, workload_ns: str, applies: bool) -> None:
    policy = make_policy({"privileged": {}}, namespaces=namespaces)
    assert policy.applies_to(workload_ns) is applies
    decision = evaluate([policy], make_workload(namespace=workload_ns, security={"privileged": True}))
    assert decision.allowed is not applies
    assert decision.policies == (("p",) if applies else ())


def test_only_applicable_policies_are_listed_and_order_is_by_name() -> None:
    policies = [make_policy({"privileged": {}}, name="zeta"), make_policy({"privileged": {}}, name="alpha"),
                make_policy({"privileged": {}}, name="prod-only", namespaces=["prod"])]
    workload = make_workload(security={"privileged": True})
    decision = evaluate(policies, workload)
    assert decision.policies == ("alpha", "zeta")
    assert [v.policy for v in decision.violations] == ["alpha", "zeta"]
    assert evaluate(list(reversed(policies)), workload) == decision


def test_rules_are_evaluated_in_table_order() -> None:
    rules = {"resources": {}, "seccomp": {}, "privileged": {}, "images": {"allowedRegistries": ["ghcr.io"]},
             "hostNamespaces": {}}
    workload = make_workload(security={"privileged": True, "hostNetwork": True,
                                       "seccompProfile": {"type": "Unconfined"}})
    assert [v.rule for v in evaluate([make_policy(rules)], workload).violations] == [
        RuleName.IMAGES, RuleName.PRIVILEGED, RuleName.HOST_NAMESPACES, RuleName.SECCOMP,
        RuleName.RESOURCES, RuleName.RESOURCES]


def test_no_policies_allows() -> None:
    assert evaluate([], make_workload(security={"privileged": True})) == Decision(True, (), ())


def test_decision_invariant_and_json() -> None:
    deny = Violation("p", RuleName.PRIVILEGED, Action.DENY, f"{CTX}.privileged", "no")
    warn = Violation("p", RuleName.SECCOMP, Action.WARN, f"{CTX}.seccompProfile.type", "hm")
    with pytest.raises(ValueError, match="allowed must be False"):
        Decision(True, (deny,))
    with pytest.raises(ValueError, match="allowed must be False"):
        Decision(False, (warn,))
    assert Decision(False, (deny, warn), ("p",)).to_json() == {
        "allowed": False,
        "policies": ["p"],
        "violations": [
            {"policy": "p", "rule": "privileged", "action": "deny", "field": f"{CTX}.privileged", "message": "no"},
            {"policy": "p", "rule": "seccomp", "action": "warn", "field": f"{CTX}.seccompProfile.type",
             "message": "hm"},
        ],
    }


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

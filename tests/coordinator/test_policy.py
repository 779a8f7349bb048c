"""Admission policy core: image references, each rule, actions, namespaces and order (parsing and the default set
are in test_policy_parsing.py)."""

from __future__ import annotations

from typing import Any

import pytest

from coordinator.policy import (
    Action,
    Decision,
    ImageRef,
    RuleName,
    Violation,
    evaluate,
    parse_image_ref,
)
from tests.coordinator.policy_builders import CTX, DIGEST, fields_of, make_policy, make_workload

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

"""`cloudless policy check`: a local dry run; exit 0 allowed, 1 denied, 2 usage or invalid documents."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coordinator.policy import default_policies
from tests.cli.conftest import Result

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "hello.yaml"


def _bare_hello() -> str:
    """The example as a newcomer first writes it: without its securityContext block."""
    lines, skip = [], False
    for line in EXAMPLE.read_text().splitlines():
        if line.startswith("  securityContext:"):
            skip = True
            continue
        if skip and line.startswith("    "):
            continue
        skip = False
        lines.append(line)
    path = Path(tempfile.mkdtemp(prefix="cl-policy-")) / "hello.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


HELLO = _bare_hello()
SECURE = """\
apiVersion: cloudless/v1
kind: Workload
metadata: {name: web}
spec:
  image: localhost/web:1
  resources: {limits: {cpu: 500m, memory: 128Mi}}
  securityContext:
    runAsNonRoot: true
    runAsUser: 1000
    readOnlyRootFilesystem: true
    allowPrivilegeEscalation: false
    capabilities: {drop: [ALL]}
"""
PRIVILEGED = SECURE.replace("name: web", "name: root").replace(
    "    allowPrivilegeEscalation: false\n", "    privileged: true\n")
STRICT_PROD = """\
apiVersion: cloudless/v1
kind: Policy
metadata: {name: prod-privileged}
spec:
  namespaces: [prod]
  rules:
    privileged: {}
"""
WARN_ONLY = """\
apiVersion: cloudless/v1
kind: Policy
metadata: {name: advice}
spec:
  action: warn
  rules:
    readOnlyRootFilesystem: {}
    runAsNonRoot: {action: audit}
"""

Cli = Callable[..., Result]


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_the_shipped_example_passes_the_default_set(cli: Cli) -> None:
    r = cli("policy", "check", "-f", str(EXAMPLE))
    assert r.code == 0, r.out + r.err
    assert "DENY" not in r.out


def test_hello_example_without_its_security_context_is_denied_by_the_default_set(cli: Cli) -> None:
    r = cli("policy", "check", "-f", HELLO)
    assert r.code == 1, r.err
    lines = r.out.splitlines()
    assert lines[0] == f"{HELLO}: workload/hello in namespace default: denied (2 deny, 2 warn)"
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "DENY spec.securityContext.capabilities.drop",
        "WARN spec.securityContext.runAsNonRoot",
        "WARN spec.securityContext.readOnlyRootFilesystem",
        "DENY spec.securityContext.allowPrivilegeEscalation",
    ]
    assert lines[1].endswith("[secure-defaults/capabilities]")
    assert r.err == ""


def test_secure_workload_is_allowed(cli: Cli, tmp_path: Path) -> None:
    path = write(tmp_path, "web.yaml", SECURE)
    r = cli("policy", "check", "-f", path)
    assert (r.code, r.out, r.err) == (0, f"{path}: workload/web in namespace default: allowed\n", "")


def test_privileged_line_format(cli: Cli, tmp_path: Path) -> None:
    r = cli("policy", "check", "-f", write(tmp_path, "root.yaml", PRIVILEGED))
    assert r.code == 1
    assert ("  DENY spec.securityContext.privileged: privileged containers are not allowed: they control the whole "
            "device [secure-defaults/privileged]") in r.out.splitlines()


def test_warnings_alone_exit_zero(cli: Cli, tmp_path: Path) -> None:
    image = SECURE.replace("localhost/web:1", "nginx:1.25")
    r = cli("policy", "check", "-f", write(tmp_path, "web.yaml", image))
    assert r.code == 0
    assert "allowed (1 warn)" in r.out
    assert "  WARN spec.image: image docker.io/library/nginx:1.25 is not from an allowed source (registries: " \
           "localhost) [image-provenance/images]" in r.out


def test_several_documents_and_files(cli: Cli, tmp_path: Path) -> None:
    both = write(tmp_path, "both.yaml", SECURE + "---\n" + PRIVILEGED)
    r = cli("policy", "check", "-f", both, "-f", HELLO)
    assert r.code == 1
    verdicts = [line for line in r.out.splitlines() if not line.startswith(" ")]
    assert verdicts == [f"{both}#1: workload/web in namespace default: allowed",
                        f"{both}#2: workload/root in namespace default: denied (2 deny)",
                        f"{HELLO}: workload/hello in namespace default: denied (2 deny, 2 warn)"]


def test_json_output(cli: Cli, tmp_path: Path) -> None:
    r = cli("policy", "check", "-f", write(tmp_path, "root.yaml", PRIVILEGED), "-o", "json")
    assert r.code == 1
    data: dict[str, Any] = json.loads(r.out)
    assert data["allowed"] is False and data["policySource"] == "default"
    [result] = data["results"]
    assert (result["name"], result["namespace"], result["allowed"]) == ("root", "default", False)
    assert result["policies"] == ["image-provenance", "secure-defaults"]
    assert {"policy": "secure-defaults", "rule": "privileged", "action": "deny",
            "field": "spec.securityContext.privileged",
            "message": "privileged containers are not allowed: they control the whole device"} in result["violations"]


def test_policy_files_replace_the_default_set(cli: Cli, tmp_path: Path) -> None:
    advice = write(tmp_path, "advice.yaml", WARN_ONLY)
    r = cli("policy", "check", "-f", HELLO, "--policy", advice)
    assert r.code == 0, r.out + r.err
    assert r.out.splitlines() == [
        f"{HELLO}: workload/hello in namespace default: allowed (1 warn, 1 audit)",
        "  AUDIT spec.securityContext.runAsNonRoot: must be true (or set runAsUser to a non-zero UID): images often "
        "run as root [advice/runAsNonRoot]",
        "  WARN spec.securityContext.readOnlyRootFilesystem: must be true; mount an emptyDir volume where the program "
        "writes [advice/readOnlyRootFilesystem]",
    ]
    r = cli("policy", "check", "-f", HELLO, "--policy", advice, "-o", "json")
    assert json.loads(r.out)["policySource"] == [advice]


@pytest.mark.parametrize(("namespace", "code", "verdict"), [
    pytest.param("prod", 1, "denied (1 deny)", id="in-scope"),
    pytest.param("dev", 0, "allowed (no policy applies to this namespace)", id="out-of-scope"),
])
def test_namespace_flag_scopes_policies(cli: Cli, tmp_path: Path, namespace: str, code: int, verdict: str) -> None:
    policy = write(tmp_path, "prod.yaml", STRICT_PROD)
    r = cli("policy", "check", "-f", write(tmp_path, "root.yaml", PRIVILEGED), "--policy", policy, "-n", namespace)
    assert r.code == code
    assert r.out.splitlines()[0].endswith(f"workload/root in namespace {namespace}: {verdict}")


def test_json_policy_and_workload_from_stdin(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = {"apiVersion": "cloudless/v1", "kind": "Policy", "metadata": {"name": "j"},
              "spec": {"rules": {"hostNamespaces": {}}}}
    workload = {"apiVersion": "cloudless/v1", "kind": "Workload", "metadata": {"name": "net"},
                "spec": {"image": "x", "securityContext": {"hostNetwork": True}}}
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(workload)))
    r = cli("policy", "check", "-f", "-", "--policy", write(tmp_path, "p.json", json.dumps([policy])))
    assert r.code == 1
    assert r.out.splitlines() == [
        "<stdin>: workload/net in namespace default: denied (1 deny)",
        "  DENY spec.securityContext.hostNetwork: sharing the node's network namespace is not allowed "
        "[j/hostNamespaces]",
    ]


def test_invalid_policy_is_a_usage_error_naming_file_and_field(cli: Cli, tmp_path: Path) -> None:
    bad = WARN_ONLY.replace("name: advice", "name: second").replace("readOnlyRootFilesystem: {}",
                                                                    "readOnlyRootFilesytem: {}")
    path = write(tmp_path, "team.yaml", STRICT_PROD + "---\n" + bad)
    r = cli("policy", "check", "-f", HELLO, "--policy", path)
    assert r.code == 2 and r.out == ""
    assert r.err.splitlines() == [
        f"cloudless: error: {path}#2: invalid policy:",
        '  spec.rules.readOnlyRootFilesytem: unknown field (did you mean "readOnlyRootFilesystem"?)',
    ]


def test_duplicate_policy_names_across_files(cli: Cli, tmp_path: Path) -> None:
    one, two = write(tmp_path, "one.yaml", STRICT_PROD), write(tmp_path, "two.yaml", STRICT_PROD)
    r = cli("policy", "check", "-f", HELLO, "--policy", one, "--policy", two)
    assert r.code == 2
    assert f"{two}: invalid policy:\n  metadata.name: a policy named 'prod-privileged' is already defined" in r.err


def test_invalid_workloads_are_all_reported(cli: Cli, tmp_path: Path) -> None:
    broken = SECURE.replace("image:", "imagee:")
    path = write(tmp_path, "bad.yaml", broken + "---\n" + SECURE.replace("runAsUser: 1000", "runAsUser: -1"))
    r = cli("policy", "check", "-f", path)
    assert r.code == 2 and r.out == ""
    assert f"cloudless: error: {path}#1: invalid workload:\n  spec.imagee: unknown field" in r.err
    assert f"{path}#2: invalid workload:\n  spec.securityContext.runAsUser: must be between" in r.err
    assert "cloudless: hint: fix the documents" in r.err


@pytest.mark.parametrize(("argv", "fragment"), [
    pytest.param(["policy"], "required: ACTION", id="no-action"),
    pytest.param(["policy", "check"], "required: -f/--filename", id="no-file"),
    pytest.param(["policy", "check", "-f", HELLO, "-o", "yaml"], "invalid choice: 'yaml'", id="bad-output"),
    pytest.param(["policy", "check", "-f", "/nonexistent.yaml"], "-f /nonexistent.yaml: No such file",
                 id="no-such-file"),
    pytest.param(["policy", "check", "-f", HELLO, "--policy", "/nope.yaml"], "--policy /nope.yaml: No such file",
                 id="no-such-policy"),
    pytest.param(["policy", "check", "-f", HELLO, "-n", "bad/ns"], "metadata.namespace 'bad/ns' is invalid",
                 id="bad-namespace"),
])
def test_usage_errors_exit_2(cli: Cli, argv: list[str], fragment: str) -> None:
    r = cli(*argv)
    assert r.code == 2
    assert fragment in r.err


def test_policy_file_without_documents(cli: Cli, tmp_path: Path) -> None:
    r = cli("policy", "check", "-f", HELLO, "--policy", write(tmp_path, "empty.yaml", "# nothing\n"))
    assert r.code == 2 and "holds no documents" in r.err


def test_not_a_workload_document(cli: Cli, tmp_path: Path) -> None:
    r = cli("policy", "check", "-f", write(tmp_path, "p.yaml", STRICT_PROD))
    assert r.code == 2 and "kind 'Policy' is not supported" in r.err


def test_default_set_without_pyyaml_says_what_to_do(cli: Cli, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    default_policies.cache_clear()
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml now raises ImportError
    try:
        doc = write(tmp_path, "w.json", json.dumps({"kind": "Workload", "apiVersion": "cloudless/v1",
                                                    "metadata": {"name": "w"}, "spec": {"image": "x"}}))
        r = cli("policy", "check", "-f", doc)
        assert r.code == 2
        assert "needs PyYAML" in r.err and "--policy FILE.json" in r.err
    finally:
        default_policies.cache_clear()


def test_module_imports_no_coordinator_or_yaml() -> None:
    code = ("import sys\nimport cloudless.policy_cli\n"
            "print(','.join(m for m in ('coordinator', 'yaml', 'aiohttp') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

"""`cloudless apply -f` and `cloudless delete`: documents in, one line per workload out."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from tests.cli.fake_coordinator import FakeCoordinator

WEB = """\
apiVersion: cloudless/v1
kind: Workload
metadata:
  name: web
spec:
  image: nginx:1.25
  replicas: 2
"""
DB = """\
apiVersion: cloudless/v1
kind: Workload
metadata:
  name: db
  namespace: prod
spec:
  image: postgres:16
"""


def _file(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_apply_created_configured_unchanged(fake: FakeCoordinator, cli, tmp_path: Path) -> None:
    path = _file(tmp_path, "web.yaml", WEB)
    assert cli("apply", "-f", path).out == "workload/web created\n"
    assert cli("apply", "-f", path).out == "workload/web unchanged\n"
    Path(path).write_text(WEB.replace("replicas: 2", "replicas: 3"))
    r = cli("apply", "-f", path)
    assert (r.code, r.out) == (0, "workload/web configured\n")
    put = fake.requests[-1]
    assert (put.method, put.path) == ("PUT", "/v1/workloads/default/web")
    assert put.body["spec"] == {"image": "nginx:1.25", "replicas": 3}


def test_apply_multi_document_yaml(fake: FakeCoordinator, cli, tmp_path: Path) -> None:
    path = _file(tmp_path, "all.yaml", f"---\n{WEB}---\n{DB}---\n")
    r = cli("apply", "-f", path)
    assert (r.code, r.out) == (0, "workload/web created\nworkload/db created\n")
    assert set(fake.workloads) == {("default", "web"), ("prod", "db")}


def test_apply_json_list_from_stdin(fake: FakeCoordinator, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = [{"apiVersion": "cloudless/v1", "kind": "Workload", "metadata": {"name": n}, "spec": {"image": "x"}}
            for n in ("a", "b")]
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(docs)))
    r = cli("apply", "-f", "-")
    assert r.out == "workload/a created\nworkload/b created\n"


def test_apply_namespace_flag_fills_in_a_missing_namespace(fake: FakeCoordinator, cli, tmp_path: Path) -> None:
    r = cli("apply", "-f", _file(tmp_path, "web.yaml", WEB), "-n", "staging")
    assert r.code == 0 and ("staging", "web") in fake.workloads
    assert fake.requests[-1].body["metadata"]["namespace"] == "staging"


def test_apply_namespace_conflict_is_caught_before_sending(fake: FakeCoordinator, cli, tmp_path: Path) -> None:
    r = cli("apply", "-f", _file(tmp_path, "db.yaml", DB), "-n", "staging")
    assert r.code == 2 and "metadata.namespace is 'prod' but -n says 'staging'" in r.err
    assert fake.requests == []


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param("kind: Node\nmetadata: {name: x}\n", "kind 'Node' is not supported", id="kind"),
        pytest.param("kind: Workload\nspec: {}\n", "metadata.name is required", id="no-name"),
        pytest.param("kind: Workload\nmetadata: {name: -bad}\n", "metadata.name '-bad' is invalid", id="bad-name"),
        pytest.param("kind: Workload\nmetadata: {name: a\n", "invalid YAML", id="yaml-syntax"),
        pytest.param("- 1\n- 2\n", "expected a mapping", id="not-mapping"),
        pytest.param("# nothing\n", "holds no documents", id="empty"),
    ],
)
def test_apply_bad_documents(fake: FakeCoordinator, cli, tmp_path: Path, text: str, fragment: str) -> None:
    r = cli("apply", "-f", _file(tmp_path, "bad.yaml", text))
    assert r.code == 2 and fragment in r.err
    assert fake.requests == []


def test_apply_checks_every_document_before_sending_any(fake: FakeCoordinator, cli, tmp_path: Path) -> None:
    path = _file(tmp_path, "two.yaml", f"{WEB}---\nkind: Workload\nmetadata: {{name: 'x y'}}\n")
    r = cli("apply", "-f", path)
    assert r.code == 2 and "two.yaml#2" in r.err
    assert fake.requests == []


def test_apply_missing_file(cli, tmp_path: Path) -> None:
    r = cli("apply", "-f", str(tmp_path / "nope.yaml"))
    assert r.code == 2 and "nope.yaml" in r.err and "No such file" in r.err


def test_apply_server_validation_errors_list_each_path(fake: FakeCoordinator, cli, tmp_path: Path) -> None:
    bad = WEB.replace("replicas: 2", "replicas: 50000").replace("image: nginx:1.25", "image: 5")
    path = _file(tmp_path, "all.yaml", f"{bad}---\n{DB}")
    r = cli("apply", "-f", path)
    assert r.code == 1
    assert "cloudless: error: " in r.err and "all.yaml#1 (workload/web): invalid workload default/web" in r.err
    assert "  spec.image: required" in r.err
    assert "  spec.replicas: must be an integer from 0 to 10000" in r.err
    assert r.out == "workload/db created\n"  # the other document still went through


def test_delete_by_name(fake: FakeCoordinator, cli) -> None:
    fake.add_workload("web", replicas=3)
    r = cli("delete", "workload", "web")
    assert (r.code, r.out) == (0, "workload/web deleted (3 replicas stopping)\n")
    assert ("default", "web") not in fake.workloads


def test_delete_from_file_in_its_namespace(fake: FakeCoordinator, cli, tmp_path: Path) -> None:
    fake.add_workload("db", namespace="prod", replicas=1)
    r = cli("delete", "-f", _file(tmp_path, "db.yaml", DB))
    assert (r.code, r.out) == (0, "workload/db deleted (1 replicas stopping)\n")
    assert fake.requests[-1].path == "/v1/workloads/prod/db"


def test_delete_missing(fake: FakeCoordinator, cli) -> None:
    r = cli("delete", "workload", "ghost", "-n", "prod")
    assert r.code == 1 and "workload prod/ghost not found" in r.err and "cloudless get workloads -A" in r.err
    assert cli("delete", "workload", "ghost", "--ignore-not-found").code == 0


def test_delete_wait_polls_until_gone(fake: FakeCoordinator, cli) -> None:
    fake.add_workload("web")
    r = cli("delete", "workload", "web", "--wait")
    assert r.code == 0 and fake.requests[-1].method == "GET"


@pytest.mark.parametrize(
    "argv",
    [["delete"], ["delete", "workload"], ["delete", "workload", "web", "-f", "x.yaml"]],
    ids=["nothing", "no-name", "both"],
)
def test_delete_needs_exactly_one_target(fake: FakeCoordinator, cli, argv: list[str]) -> None:
    r = cli(*argv)
    assert r.code == 2 and "cloudless: error:" in r.err
    assert fake.requests == []


def test_apply_prints_admission_warnings_on_stderr(fake: FakeCoordinator, cli, tmp_path: Path) -> None:
    r = cli("apply", "-f", _file(tmp_path, "web.yaml", WEB))
    assert (r.code, r.out) == (0, "workload/web created\n")
    assert r.err.startswith("Warning: workload/web: spec.securityContext.runAsNonRoot: must be true"), r.err
    assert "(secure-defaults/runAsNonRoot)" in r.err


def test_apply_without_warnings_prints_none(fake: FakeCoordinator, cli, tmp_path: Path) -> None:
    secure = WEB + "  securityContext:\n    runAsNonRoot: true\n"
    r = cli("apply", "-f", _file(tmp_path, "web.yaml", secure))
    assert (r.code, r.out, r.err) == (0, "workload/web created\n", "")

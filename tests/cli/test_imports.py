"""The admin CLI runs where neither aiohttp nor the coordinator is installed, and loads PyYAML only on demand."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.fake_coordinator import FakeCoordinator

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = ("aiohttp", "coordinator", "yaml")
CTL_MODULES = ("core", "documents", "get", "operate", "overlay", "rollout")


def test_cli_modules_import_no_server_side_package() -> None:
    # every module of the cloudless.ctl package, so one added later is checked too
    code = ("import importlib, pkgutil, sys\nimport cloudless.ctl, cloudless.client, cloudless.render\n"
            "ctl = [m.name for m in pkgutil.iter_modules(cloudless.ctl.__path__, 'cloudless.ctl.')]\n"
            "for name in ctl: importlib.import_module(name)\n"
            f"print(','.join(m for m in {FORBIDDEN!r} if m in sys.modules))\nprint(','.join(sorted(ctl)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    forbidden, modules = out.stdout.split("\n")[:2]
    assert forbidden == ""
    assert modules == ",".join(f"cloudless.ctl.{m}" for m in CTL_MODULES)


def test_yaml_missing_gives_clear_errors_before_any_request(fake: FakeCoordinator, cli, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml now raises ImportError
    r = cli("get", "nodes", "-o", "yaml")
    assert r.code == 2 and "-o yaml needs PyYAML" in r.err and "pip install pyyaml" in r.err
    doc = tmp_path / "web.yaml"
    doc.write_text("kind: Workload\nmetadata: {name: web}\n")
    r = cli("apply", "-f", str(doc))
    assert r.code == 2 and "reading YAML from" in r.err
    assert fake.requests == []
    doc.write_text('{"kind": "Workload", "metadata": {"name": "web"}, "spec": {"image": "x"}}')
    assert cli("apply", "-f", str(doc)).out == "workload/web created\n"  # JSON needs no PyYAML


def test_the_clis_replica_cap_is_the_specs() -> None:
    from cloudless.ctl.rollout import MAX_REPLICAS
    from coordinator.spec import MAX_REPLICAS as SPEC_MAX
    assert MAX_REPLICAS == SPEC_MAX

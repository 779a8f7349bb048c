"""`--log-format json`: one JSON object per line, with the daemon's identity and tracebacks."""

from __future__ import annotations

import json
import logging

import pytest

from broker.client import Secret
from cloudless import logs


@pytest.fixture(autouse=True)
def _restore_logging():  # type: ignore[no-untyped-def]
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logs._identity.clear()


def test_json_lines_carry_the_identity_and_never_a_secret(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", "json")
    logs.set_identity("node", "pi-kitchen")
    log = logging.getLogger("edge_agent.test")
    log.info("connected with %r", Secret("hunter2"))
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0]["node"] == "pi-kitchen" and lines[0]["level"] == "info" and lines[0]["logger"] == "edge_agent.test"
    assert "hunter2" not in json.dumps(lines)
    assert "ValueError: boom" in lines[1]["exc"]


def test_text_lines_are_prefixed_with_the_identity(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", "text")
    logs.set_identity("coordinator", "main")
    logging.getLogger("coordinator.test").warning("hello")
    assert capsys.readouterr().err.startswith("[coordinator=main] ")
    logs._identity.clear()


def test_the_agent_log_file_rotates(tmp_path):  # type: ignore[no-untyped-def]
    logs.configure("INFO", "text")
    logs.to_file(tmp_path / "logs" / "agent.log", max_bytes=2000, backups=2)
    log = logging.getLogger("edge_agent.test")
    for i in range(200):
        log.info("line %d %s", i, "x" * 40)
    files = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert files == ["agent.log", "agent.log.1", "agent.log.2"]
    assert sum((tmp_path / "logs" / f).stat().st_size for f in files) <= 3 * 2000 + 200
    assert "line 199" in (tmp_path / "logs" / "agent.log").read_text()

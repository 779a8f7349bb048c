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

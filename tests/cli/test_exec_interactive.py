"""`cloudless exec -i/-t` in the CLI: what it asks the coordinator for, and what a user sees when it cannot start.
The session itself (a real terminal through a real coordinator and agent) is tests/integration/test_exec_tty.py."""

from __future__ import annotations

import sys

import pytest

from cloudless import terminal
from tests.cli.fake_coordinator import FakeCoordinator


@pytest.fixture
def web(fake: FakeCoordinator) -> FakeCoordinator:
    fake.add_node("pi-1", replicas=1)
    fake.add_workload("web", replicas=1)
    return fake


def test_without_aiohttp_interactive_exec_says_what_to_install(web: FakeCoordinator, cli,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aiohttp", None)  # import aiohttp now raises ImportError
    r = cli("exec", "-i", "web", "--", "sh")
    assert r.code == 1
    assert "needs aiohttp" in r.err and "cloudless[coordinator]" in r.err
    assert not [q for q in web.requests if q.path.endswith(("/exec", "/tty"))], "nothing may run half-interactive"


@pytest.mark.parametrize("words", [["-it", "web"], ["web", "-t"], ["--tty", "-i", "web"]], ids=str)
def test_tty_without_a_terminal_goes_on_without_one_and_says_so(web: FakeCoordinator, cli, words: list[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aiohttp", None)  # stop before connecting: only the decision is tested here
    r = cli("exec", *words, "--", "sh")  # pytest's stdin is no terminal
    assert "-t needs a terminal on standard input and output; running without one" in r.err


def test_the_session_is_asked_for_on_the_replicas_tty_route(web: FakeCoordinator, cli) -> None:
    """The fake coordinator has no such route: the upgrade is refused, and the CLI shows the coordinator's own message
    (read by asking the same URL without the upgrade), not just a status."""
    r = cli("exec", "-i", "web", "--", "sh", "-c", "echo a b")
    assert r.code == 1 and r.err == "cloudless: error: GET /v1/workloads/default/web/replicas/web-0/tty: Not Found\n"
    tty = [q for q in web.requests if q.path.endswith("/tty")]
    assert tty and tty[0].path == "/v1/workloads/default/web/replicas/web-0/tty"
    assert tty[0].query["tty"] == "0" and tty[0].query["stdin"] == "1"


def test_the_query_carries_one_command_parameter_per_word() -> None:
    query = terminal.session_query(["sh", "-c", "echo a b"], tty=True, stdin=False, rows=40, cols=120,
                                   term="xterm-256color")
    assert query == [("command", "sh"), ("command", "-c"), ("command", "echo a b"), ("tty", "1"), ("stdin", "0"),
                     ("rows", "40"), ("cols", "120"), ("term", "xterm-256color")]


def test_window_size_of_something_that_is_no_terminal_is_the_classic_one(tmp_path) -> None:
    with open(tmp_path / "f", "wb") as f:
        assert terminal.window_size(f.fileno()) == (24, 80)

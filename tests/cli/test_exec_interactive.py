"""`cloudless exec -i/-t` in the CLI: what it asks the coordinator for, and what a user sees when it cannot start.
The session itself (a real terminal through a real coordinator and agent) is tests/integration/test_exec_tty.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import termios
import threading
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web as aioweb

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


class _Coordinator:
    """A WebSocket server on its own thread standing in for the coordinator's tty route: on connect it calls
    `on_open` (in that thread), then answers the exit code it returns (None: keeps the session open)."""

    def __init__(self, on_open: Callable[[aioweb.WebSocketResponse], Awaitable[int | None]]) -> None:
        self.on_open = on_open
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.port = 0

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def tty(request: aioweb.Request) -> aioweb.WebSocketResponse:
            ws = aioweb.WebSocketResponse()
            await ws.prepare(request)
            code = await self.on_open(ws)
            if code is not None:
                await ws.send_str(json.dumps({"exit": code}))
            async for _ in ws:  # until the client closes
                pass
            return ws

        app = aioweb.Application()
        app.router.add_get("/v1/workloads/{ns}/{name}/replicas/{replica}/tty", tty)
        self.runner = aioweb.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = aioweb.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.ready.set()
        self.loop.run_forever()

    def __enter__(self) -> terminal.SessionTarget:
        self.thread.start()
        assert self.ready.wait(30)
        return terminal.SessionTarget(f"http://127.0.0.1:{self.port}", None, None, "default", "web", "web-0")

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


@pytest.mark.parametrize(("tty", "stdin", "raw"), [(True, True, True), (True, False, False), (False, True, False)],
                         ids=["-it", "-t", "-i"])
def test_the_local_terminal_is_raw_only_with_both_t_and_i(tty: bool, stdin: bool, raw: bool) -> None:
    """-t without -i reads no keys: a raw terminal would swallow Ctrl-C (kubectl keeps it cooked too)."""
    master, slave = os.openpty()
    seen: list[int] = []
    try:
        before = termios.tcgetattr(slave)
        async def record(_: aioweb.WebSocketResponse) -> int:
            seen.append(termios.tcgetattr(slave)[3])
            return 0

        with _Coordinator(record) as target:
            assert terminal.run(target, ["sh"], tty=tty, stdin=stdin, in_fd=slave, out_fd=slave) == 0
        assert seen and bool(seen[0] & termios.ISIG) is not raw and bool(seen[0] & termios.ICANON) is not raw
        assert termios.tcgetattr(slave) == before  # restored
    finally:
        os.close(master)
        os.close(slave)


def test_ctrl_c_with_t_alone_ends_the_session_with_130() -> None:
    """The terminal is not raw (-t without -i): the user's Ctrl-C is SIGINT to the CLI, which ends the session."""
    master, slave = os.openpty()
    try:
        async def interrupt(ws: aioweb.WebSocketResponse) -> None:
            for _ in range(60):  # a resize shows the CLI's signal handlers are in place (SIGWINCH is ignored before)
                os.kill(os.getpid(), signal.SIGWINCH)
                with contextlib.suppress(TimeoutError):
                    msg = await ws.receive(timeout=0.5)
                    assert msg.type is aiohttp.WSMsgType.TEXT and "resize" in json.loads(msg.data), msg
                    break
            os.kill(os.getpid(), signal.SIGINT)

        with _Coordinator(interrupt) as target:  # the session stays open
            assert terminal.run(target, ["top"], tty=True, stdin=False, in_fd=slave, out_fd=slave) == 130
    finally:
        os.close(master)
        os.close(slave)

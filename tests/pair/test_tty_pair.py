"""`exec -it` through the pair harness: the real REST route (a WebSocket from aiohttp's test client), the real
coordinator and agent engines, the in-memory broker with the real codec, and a real command on a real pty (the
fake runtime runs it on the host). Faster than tests/integration/test_exec_tty.py and able to look inside: the
agent's session table, the frames on the bus."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from broker import wire
from broker.wire import TtyInput, TtyOutput, topics
from coordinator.api import Api
from coordinator.http import token_digest
from coordinator.rest import tty as rest_tty
from tests.pair.test_pair import Pair, _pair, until, workload

ADMIN, VIEWER = "admin-token-for-tty", "viewer-token-for-tty"


@dataclass
class TtyPair:
    pair: Pair
    client: TestClient[Any, Any]
    path: str
    seen: dict[str, list[bytes]]  # topic -> payloads an observer on the bus saw

    def headers(self, token: str = ADMIN) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def sessions(self) -> dict[str, Any]:
        return self.pair.nodes["a"].agent.commands.tty.sessions



@pytest.fixture
async def tty(tmp_path: Path) -> AsyncIterator[TtyPair]:
    async for p in _pair(tmp_path, 5.0):
        rid, seen = await _one_replica(p, tmp_path)
        api = Api(p.coord, token_digests={token_digest(ADMIN): ("admin", "admin"),
                                          token_digest(VIEWER): ("viewer", "viewer")})
        client: TestClient[Any, Any] = TestClient(TestServer(api.app()))
        await client.start_server()
        try:
            yield TtyPair(p, client, f"/v1/workloads/default/sh/replicas/{rid}/tty", seen)
        finally:
            await client.close()


async def _one_replica(p: Pair, tmp_path: Path) -> tuple[str, dict[str, list[bytes]]]:
    """Node a running the one replica of `sh`; an observer recording every tty frame on the bus."""
    node = p.add_node("a")
    node.runtime.tty_cwd = str(tmp_path)
    await node.agent.start()
    await until(lambda: len(p.coord.members) == 1, what="node a a member")
    await p.coord.ops.apply(workload("sh", 1))
    await until(lambda: p.ready("sh") == 1, what="the replica of sh ready")
    seen: dict[str, list[bytes]] = {topics.node_tty_in("a"): [], topics.node_tty_out("a"): []}
    observer = p.bus.client("observer")
    await observer.start()
    for topic, payloads in seen.items():
        await observer.subscribe(topic, lambda m, payloads=payloads: payloads.append(m.payload))
    return next(iter(p.placement("sh"))), seen


async def _collect(ws: aiohttp.ClientWebSocketResponse, until_text: bytes | None = None,
                   timeout: float = 20.0) -> tuple[bytes, dict[str, Any] | None]:
    """Output bytes until a control message (returned) or until `until_text` was seen."""
    out = b""
    async with asyncio.timeout(timeout):
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.BINARY:
                out += msg.data
                if until_text is not None and until_text in out:
                    return out, None
            elif msg.type is aiohttp.WSMsgType.TEXT:
                return out, msg.json()
    return out, None


async def test_a_session_runs_on_a_terminal_follows_resizes_and_ends_with_the_exit_code(tty: TtyPair) -> None:
    params = [("command", "sh"), ("rows", "30"), ("cols", "100")]
    async with tty.client.ws_connect(tty.path, params=params, headers=tty.headers()) as ws:
        await ws.send_bytes(b"stty size; test -t 0 && echo on-a-tty-$((6*7))\n")
        out, _ = await _collect(ws, b"on-a-tty-42\r\n")
        assert b"30 100\r\n" in out
        await ws.send_json({"resize": [50, 132]})
        await ws.send_bytes(b"stty size\n")
        out, _ = await _collect(ws, b"50 132\r\n")
        await ws.send_bytes(b"echo hi; exit 3\n")
        out, end = await _collect(ws)
        assert b"hi\r\n" in out and end == {"exit": 3}
    await until(lambda: not tty.sessions(), what="the agent's session table empty")
    # both directions numbered from 0 without gaps: what the receivers check
    ins = [wire.decode_as(p, TtyInput) for p in tty.seen[topics.node_tty_in("a")]]
    outs = [wire.decode_as(p, TtyOutput) for p in tty.seen[topics.node_tty_out("a")]]
    assert [f.seq for f in ins] == list(range(len(ins))) and [f.seq for f in outs] == list(range(len(outs)))
    assert any(f.rows == 50 and f.cols == 132 for f in ins)
    assert outs[-1].exit_code == 3 and all(f.exit_code is None for f in outs[:-1])


async def test_without_a_terminal_stdin_is_a_pipe_and_eof_ends_it(tty: TtyPair) -> None:
    params = [("command", "sh"), ("command", "-c"), ("command", "test -t 0 || echo piped; cat; exit 5"),
              ("tty", "0")]
    async with tty.client.ws_connect(tty.path, params=params, headers=tty.headers()) as ws:
        await ws.send_bytes(b"line one\n")
        await ws.send_json({"eof": True})
        out, end = await _collect(ws)
    assert out == b"piped\nline one\n" and end == {"exit": 5}


async def test_a_client_that_leaves_gets_its_command_killed(tty: TtyPair) -> None:
    params = [("command", "sh"), ("command", "-c"), ("command", "echo started; exec sleep 300"), ("tty", "0")]
    async with tty.client.ws_connect(tty.path, params=params, headers=tty.headers()) as ws:
        await _collect(ws, b"started\n")
        [session] = tty.sessions().values()
        pid = session.terminal.proc.pid
    await until(lambda: not tty.sessions(), what="the agent ending the session")
    assert session.closed_by_peer and session.terminal.proc.returncode == -9, pid


@pytest.mark.parametrize(("token", "params", "status", "words"), [
    pytest.param(VIEWER, [("command", "sh")], 403, "admin credential", id="viewer"),
    pytest.param(ADMIN, [], 400, "command", id="no-command"),
    pytest.param(ADMIN, [("command", "sh"), ("rows", "0")], 400, "rows", id="bad-rows"),
    pytest.param(ADMIN, [("command", "sh"), ("rows", "\u00b2")], 400, "rows", id="superscript-rows"),  # not a 500
    pytest.param(ADMIN, [("command", "sh"), ("term", "x;rm")], 400, "term", id="bad-term"),
    pytest.param(ADMIN, [("command", "sh")], 400, "WebSocket", id="no-upgrade"),
])
async def test_refusals_are_json_errors_before_any_upgrade(tty: TtyPair, token: str, params: list[tuple[str, str]],
                                                           status: int, words: str) -> None:
    resp = await tty.client.get(tty.path, params=params, headers=tty.headers(token))
    assert resp.status == status
    assert words in (await resp.json())["error"]["message"] + str((await resp.json())["error"].get("field"))
    assert not tty.sessions()


async def test_an_unknown_replica_is_a_404(tty: TtyPair) -> None:
    resp = await tty.client.get("/v1/workloads/default/sh/replicas/nope/tty", params=[("command", "sh")],
                                headers=tty.headers())
    assert resp.status == 404


async def test_a_command_that_cannot_start_is_reported_on_the_socket(tty: TtyPair) -> None:
    params = [("command", "/nonexistent/binary")]
    async with tty.client.ws_connect(tty.path, params=params, headers=tty.headers()) as ws:
        _, end = await _collect(ws)
    assert end is not None and "/nonexistent/binary" in end["error"]
    assert not tty.sessions()


async def test_a_start_that_times_out_after_the_node_started_the_command_ends_it(
        tty: TtyPair, monkeypatch: pytest.MonkeyPatch) -> None:
    """The node starts the command but its answer comes too late: the coordinator gives up on the session and tells
    the node to end it, instead of leaving the command to run until the node's silence timeout (45 s)."""
    sessions = tty.pair.nodes["a"].agent.commands.tty
    opened = sessions.open
    answered = asyncio.Event()

    async def slow_answer(req: Any, instance_id: str) -> str:
        why = await opened(req, instance_id)
        await answered.wait()  # the answer is late: only after the coordinator gave up
        return why

    monkeypatch.setattr(sessions, "open", slow_answer)
    monkeypatch.setattr(rest_tty, "START_TIMEOUT_S", 1.0)
    params = [("command", "sh"), ("command", "-c"), ("command", "exec sleep 300"), ("tty", "0")]
    try:
        async with tty.client.ws_connect(tty.path, params=params, headers=tty.headers()) as ws:
            _, end = await _collect(ws)
        assert end is not None and "error" in end, end  # the agent's own deadline, or the coordinator's
        await until(lambda: not tty.sessions(), 20, what="the node ending the session it started (well before 45 s)")
        ins = [wire.decode_as(p, TtyInput) for p in tty.seen[topics.node_tty_in("a")]]
        assert [f.close for f in ins] == [True]
    finally:
        answered.set()

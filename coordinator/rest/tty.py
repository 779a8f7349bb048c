"""`cloudless exec -it` over the API: a WebSocket per interactive session, relayed to the replica's node over MQTT
(adapter; the session rules are coordinator.tty's and broker.wire.stream's).

GET /v1/workloads/{namespace}/{name}/replicas/{replica}/tty?command=sh&command=-l&tty=1&stdin=1&rows=24&cols=80
&term=xterm, upgraded to a WebSocket. Everything is checked before the upgrade, so a refusal is an ordinary JSON
error with its status (a client that failed the handshake can ask the same URL without upgrading to read it).

On the socket: binary messages are bytes, both ways (what the user types; what the command writes). Text
messages are JSON control: from the client `{"resize": [rows, cols]}` and `{"eof": true}` (no more input); from
the coordinator, last, `{"exit": code}` (negative: killed by that signal) or `{"error": "why"}`; then it closes.

Admin only (the middleware lets any role GET; a session runs commands, so this route checks the role itself).
A follower refuses with 409 and the leader's address (the session's MQTT traffic is the acting coordinator's;
forwarding a long-lived socket through a follower would double every frame's path). aiohttp pings the client every
`HEARTBEAT_S`: a client that stops answering is gone, and the node is told to kill the command.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from aiohttp import WSMsgType, web

from broker import wire
from broker.client import Message
from broker.errors import MqttError, WireError
from broker.wire import CommandName, TtyOutput, topics
from coordinator.errors import SpecError
from coordinator.http import bearer_token, error, token_digest
from coordinator.operations import CommandFailed, NotFound
from coordinator.rest.ports import Engine
from coordinator.rest.routes import Route, path_name
from coordinator.tty import OpenRequest, Sessions, TtySession, chunks, parse_open

log = logging.getLogger(__name__)

HEARTBEAT_S = 15.0  # WebSocket ping interval; no pong within half of it ends the session
MAX_MESSAGE = 64 * 1024
START_TIMEOUT_S = 15.0

ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/workloads/{namespace}/{name}/replicas/{replica}/tty", "tty",
          "Interactive session in a replica (WebSocket; admin): ?command= (one per word), tty, stdin, rows, cols, "
          "term", ok=(101,), media="application/octet-stream"),
)


@runtime_checkable
class TtyBus(Protocol):
    """What a session needs of the MQTT client (broker.client.MqttClient)."""

    async def publish(self, topic: str, payload: bytes, *, qos: int = ..., retain: bool = ...) -> object: ...

    def publish_nowait(self, topic: str, payload: bytes, *, qos: int = ..., retain: bool = ...) -> object: ...

    async def subscribe(self, topic_filter: str, handler: Any, *, qos: int = ...) -> int: ...


class TtyHandlers:
    """`tokens`: the API's sha256 token digests -> (name, role), to let only admins in."""

    def __init__(self, coord: Engine, *, tokens: Mapping[str, tuple[str, str]], bus: TtyBus | None = None) -> None:
        self.coord = coord
        self.tokens = tokens
        self._bus = bus
        self.sessions = Sessions()
        self.inbound: dict[str, asyncio.Queue[TtyOutput]] = {}  # session id -> output frames from its node
        self.listening: set[str] = set()  # nodes whose tty-out this coordinator subscribed to

    @property
    def bus(self) -> TtyBus:
        bus = self._bus if self._bus is not None else self.coord.mqtt
        if not isinstance(bus, TtyBus):
            raise CommandFailed("this coordinator has no MQTT client for interactive sessions")
        return bus

    def _admin(self, request: web.Request) -> bool:
        token = bearer_token(request.headers.get("Authorization", ""))
        if not token:
            return False
        digest = token_digest(token)
        return any(hmac.compare_digest(digest, known) and role == "admin" for known, (_, role) in self.tokens.items())

    async def tty(self, request: web.Request) -> web.StreamResponse:
        if not self._admin(request):
            return error(403, "an interactive session runs commands in a replica: it needs an admin credential")
        if not self.coord.acting:
            leader = self.coord.leadership.leader_api
            return error(409, "interactive sessions are served by the leader coordinator, not a follower" +
                         (f": connect to {leader} (--server {leader})" if leader else "; none is elected right now, "
                          "retry in a few seconds"))
        ns, name, rid = (path_name(request, k) for k in ("namespace", "name", "replica"))
        r = self.coord.cluster.replicas.get(rid)
        if r is None or r.namespace != ns or r.workload != name:
            raise NotFound(f"replica {rid} of workload {ns}/{name} not found")
        if r.node is None:
            raise CommandFailed(f"replica {rid} has no node yet")
        opened = parse_open({k: request.query.getall(k) for k in request.query})
        if isinstance(opened, tuple):
            raise SpecError(*opened)
        full = self.sessions.refusal(r.node)  # before the upgrade check: a client that failed the handshake
        if full:  # reads the reason by asking again without upgrading
            return error(429, full + "; end one first")
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=MAX_MESSAGE)
        if not ws.can_prepare(request).ok:
            return error(400, "this route is a WebSocket: connect with `Upgrade: websocket` (cloudless exec -it)")
        session = self.sessions.open(secrets.token_hex(8), r.node, rid, self.coord.clock())
        if isinstance(session, str):
            return error(429, session + "; end one first")
        try:
            bus = self.bus
            try:
                await self._listen(bus, r.node)
            except MqttError as exc:
                raise CommandFailed(f"cannot listen to node {r.node}: {exc}") from None
            self.inbound[session.session_id] = asyncio.Queue(maxsize=1024)
            await ws.prepare(request)
            log.info("tty session %s: %s on %s (%s)", session.session_id, rid, r.node, opened.command[0][:64])
            with contextlib.suppress(ConnectionError):  # the client went away while we wrote to it
                await self._run(ws, bus, session, opened)
        finally:
            self.sessions.close(session.session_id)
            self.inbound.pop(session.session_id, None)
            if ws.prepared:
                await ws.close()
        return ws

    async def _listen(self, bus: TtyBus, node_id: str) -> None:
        """Subscribe to the node's tty-out once (kept across reconnects); frames go to their session's queue."""
        if node_id in self.listening:
            return
        await bus.subscribe(topics.node_tty_out(node_id), self._on_output, qos=1)
        self.listening.add(node_id)

    def _on_output(self, m: Message) -> None:
        try:
            msg = wire.decode_node_message(m.topic, m.payload)
        except WireError as exc:
            log.warning("ignored a tty frame on %s: %s", m.topic[:120], exc)
            return
        if not isinstance(msg, TtyOutput):
            return
        queue = self.inbound.get(msg.session)
        session = self.sessions.by_id.get(msg.session)
        if queue is None or session is None or session.node_id != msg.node_id:
            return  # a session that ended (late frames), or another node naming a session not its own
        with contextlib.suppress(asyncio.QueueFull):  # a full queue: the client stopped reading; frames are lost and
            queue.put_nowait(msg)  # the gap ends the session

    async def _run(self, ws: web.WebSocketResponse, bus: TtyBus, session: TtySession, opened: OpenRequest) -> None:
        replica = self.coord.cluster.replicas.get(session.replica_id)
        if replica is None:
            await ws.send_json({"error": f"replica {session.replica_id} is gone"})
            return
        try:
            reply = await self.coord.ops.command(replica, CommandName.TTY, args={
                "session": session.session_id, "tty": "1" if opened.tty else "0", "rows": str(opened.rows),
                "cols": str(opened.cols), "term": opened.term}, argv=opened.command, timeout_s=START_TIMEOUT_S)
        except (CommandFailed, NotFound) as exc:
            await self._abandon(bus, ws, session, str(exc))
            return
        if not reply.ok:
            await self._abandon(bus, ws, session, f"node {session.node_id}: {reply.error}")
            return
        relay = Relay(self.coord, bus, ws, session, self.inbound[session.session_id])
        await relay.run(stdin=opened.stdin)

    async def _abandon(self, bus: TtyBus, ws: web.WebSocketResponse, session: TtySession, why: str) -> None:
        """The start failed as far as we know, yet the node may have started the command all the same (its answer
        too late, or its own deadline cut the answer short): tell it to end the session, which would otherwise run
        until its silence timeout (a node that never started it ignores the frame); then the client is told why."""
        await Relay(self.coord, bus, ws, session, self.inbound[session.session_id]).send(close=True)
        await ws.send_json({"error": why})


class Relay:
    """One running session: client input -> TtyInput frames; TtyOutput frames -> the client."""

    def __init__(self, coord: Engine, bus: TtyBus, ws: web.WebSocketResponse, session: TtySession,
                 inbound: asyncio.Queue[TtyOutput]) -> None:
        self.coord, self.bus, self.ws, self.session, self.inbound = coord, bus, ws, session, inbound
        self.settled = False  # the node's command is over (its last frame came) or it was told to end it

    async def send(self, **kw: Any) -> None:
        frame = self.session.frame(self.coord.clock(), **kw)
        try:
            await self.bus.publish(topics.node_tty_in(self.session.node_id), wire.encode(frame), qos=1)
        except MqttError as exc:
            log.warning("tty session %s: cannot send to %s: %s", self.session.session_id, self.session.node_id, exc)

    async def run(self, *, stdin: bool) -> None:
        """Until the node's last frame, the client leaving (or its connection failing), or `_end`; whatever the
        way — aiohttp cancels the handler when the client's connection drops — a node whose command may still run
        is told to kill it (handed to the MQTT client at once: no await that a cancellation could skip)."""
        reader = asyncio.create_task(self.from_client(stdin=stdin))
        writer = asyncio.create_task(self.to_client())
        try:
            await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, writer):
                task.cancel()
            if not self.settled:
                self.settled = True
                self.send_nowait(close=True)
        for task in (reader, writer):
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):  # a client gone mid-write
                await task

    def send_nowait(self, **kw: Any) -> None:
        frame = self.session.frame(self.coord.clock(), **kw)
        try:
            self.bus.publish_nowait(topics.node_tty_in(self.session.node_id), wire.encode(frame), qos=1)
        except MqttError as exc:
            log.warning("tty session %s: cannot send to %s: %s", self.session.session_id, self.session.node_id, exc)

    async def from_client(self, *, stdin: bool) -> None:
        async for msg in self.ws:
            if msg.type is WSMsgType.BINARY:
                if not stdin:
                    continue  # -t without -i: the command reads nothing from the user
                for piece in chunks(msg.data):
                    wait = self.session.pace.delay(len(piece), self.coord.clock())
                    if wait > 0:
                        await asyncio.sleep(wait)
                    await self.send(data=piece)
            elif msg.type is WSMsgType.TEXT:
                control = _control(msg.data)
                if control is None:
                    await self.ws.send_json({"error": "bad control message: expected {\"resize\": [rows, cols]} "
                                             "or {\"eof\": true}"})
                    return
                await self.send(**control)
            else:
                return

    async def to_client(self) -> None:
        s = self.session
        while True:
            try:
                async with asyncio.timeout(s.live.next_check(self.coord.clock())):
                    msg: TtyOutput | None = await self.inbound.get()
            except TimeoutError:
                msg = None
            now = self.coord.clock()
            if msg is not None:
                accepted = s.on_output(msg, now)
                for frame in accepted.items:
                    if frame.data:
                        await self.ws.send_bytes(frame.data)
                    if frame.last:
                        self.settled = True
                        await self.ws.send_json({"exit": frame.exit_code} if frame.exit_code is not None
                                                else {"error": f"node {s.node_id}: {frame.error}"})
                        return
                if accepted.lost:
                    await self._end(f"output {accepted.lost}")
                    return
            why = s.expired(now)
            if why:
                await self._end(why)
                return
            if s.live.keepalive_due(now):
                await self.send()

    async def _end(self, why: str) -> None:
        self.session.ended = why
        self.settled = True
        await self.send(close=True)
        await self.ws.send_json({"error": f"session ended: {why}"})


def _control(text: str) -> dict[str, Any] | None:
    """A client's control message as frame fields, or None if it is not one."""
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    size = doc.get("resize")
    if isinstance(size, list) and len(size) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4096 for v in size):
        return {"rows": size[0], "cols": size[1]}
    if doc.get("eof") is True:
        return {"eof": True}
    return None

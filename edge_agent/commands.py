"""One-off commands from the coordinator (`node/<id>/cmd`): logs, exec, ping, drain, overlay-ping, and the start of
an interactive session (tty: edge_agent.tty runs it; the reply only says it started) (adapter).

Each request names a replica and carries a deadline and a reply topic; the reply always goes to this node's
own reply topic (the only one the broker lets it write), tagged with the request id. A bad or expired request
gets an error reply, never a crash. Output is capped to what a reply can carry.

Deadlines are on the coordinator's clock (`time_left`): a request that arrives past its deadline is refused
(a late delivery nobody waits for, or this node's clock is ahead — the refusal says to check it), and none runs
longer than the coordinator allowed, even on a node whose clock is behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from broker import wire
from broker.client import Message, MqttClient
from broker.errors import MqttError, WireError
from broker.wire import CommandName, CommandReply, CommandRequest, topics
from edge_agent.errors import RuntimeError_
from edge_agent.runtime.base import Instance, Runtime
from edge_agent.tty import TtySessions

if TYPE_CHECKING:
    from edge_agent.overlay import AgentOverlay

log = logging.getLogger(__name__)

MAX_OUTPUT = 1024 * 1024 - 1024
MAX_TAIL = 10_000
MAX_CONCURRENT = 4
CLOCK_AGREEMENT_S = 30.0  # lateness past this is worth a hint that the clocks may disagree


def time_left(req: CommandRequest, now: float) -> tuple[float, str | None]:
    """(seconds this node may spend on `req`, None) or (0, why it is refused); `now` is this node's clock.

    The deadline is on the coordinator's clock. A request that arrives past it was queued while the node was
    away (nobody waits for it any more) — or this node's clock is ahead: the two look alike, so the refusal
    names both. A node whose clock is behind never spends more than the coordinator allowed (deadline - sent)."""
    left = req.deadline - now
    if req.sent is not None:
        left = min(left, req.deadline - req.sent)
    if left >= 0:
        return left, None
    if -left > CLOCK_AGREEMENT_S:
        return 0.0, (f"request expired {-left:.1f}s ago: delivered late, or this node's clock is ahead of the "
                     "coordinator's — check it (timedatectl; NTP)")
    return 0.0, f"request expired {-left:.1f}s ago (delivered late: the coordinator no longer waits for it)"


class CommandHost(Protocol):
    """What a command needs of the agent: its clock and node id, the instances it last listed, the runtime
    that runs them, and the MQTT client the reply goes out on."""

    @property
    def clock(self) -> Callable[[], float]: ...

    @property
    def node_id(self) -> str: ...

    @property
    def instances(self) -> Sequence[Instance]: ...

    @property
    def runtime(self) -> Runtime: ...

    @property
    def mqtt(self) -> MqttClient: ...

    @property
    def overlay(self) -> AgentOverlay: ...


class CommandHandler:
    def __init__(self, agent: CommandHost) -> None:
        self.agent = agent
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_CONCURRENT)
        self.tty = TtySessions(agent)

    def on_message(self, message: Message) -> None:
        try:
            request = wire.decode_node_message(message.topic, message.payload)
            if not isinstance(request, CommandRequest):
                raise WireError(f"expected a command request, got {type(request).__name__}")
        except WireError as exc:
            log.warning("ignored a command on %s: %s", message.topic, exc)
            return
        task = asyncio.create_task(self._handle(request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()
        self.tty.cancel()

    async def _handle(self, req: CommandRequest) -> None:
        async with self._slots:
            now = self.agent.clock()
            left, refused = time_left(req, now)
            if refused is not None:
                reply = self._reply(req, ok=False, error=refused)
            else:
                try:
                    async with asyncio.timeout(max(0.1, left)):
                        reply = await self._run(req, now + left)
                except TimeoutError:
                    reply = self._reply(req, ok=False, error="deadline passed before the command finished")
                except RuntimeError_ as exc:
                    reply = self._reply(req, ok=False, error=str(exc)[:4000])
            with contextlib.suppress(MqttError):
                await self.agent.mqtt.publish(topics.node_reply(self.agent.node_id), wire.encode(reply), qos=1)

    def _reply(self, req: CommandRequest, *, ok: bool, output: bytes = b"", error: str = "",
               exit_code: int | None = None) -> CommandReply:
        return CommandReply(request_id=req.request_id, node_id=self.agent.node_id, ok=ok, ts=self.agent.clock(),
                            exit_code=exit_code, output=output[-MAX_OUTPUT:], error=error[:4000])

    def _instance_id(self, req: CommandRequest) -> str | None:
        replica = req.args.get("replica", "")
        for inst in self.agent.instances:
            if inst.replica_id == replica:
                return inst.instance_id
        return None

    async def _run(self, req: CommandRequest, deadline: float) -> CommandReply:
        """`deadline`: on this node's clock (see `time_left`)."""
        match req.command:
            case CommandName.PING:
                return self._reply(req, ok=True, output=b"pong")
            case CommandName.LOGS:
                iid = self._instance_id(req)
                if iid is None:
                    return self._reply(req, ok=False, error=f"no replica {req.args.get('replica', '')!r} on this node")
                try:
                    tail = max(1, min(MAX_TAIL, int(req.args.get("tail", "100"))))
                except ValueError:
                    return self._reply(req, ok=False, error="args.tail: expected a number of lines")
                return self._reply(req, ok=True, output=await self.agent.runtime.logs(iid, tail))
            case CommandName.EXEC:
                iid = self._instance_id(req)
                if iid is None:
                    return self._reply(req, ok=False, error=f"no replica {req.args.get('replica', '')!r} on this node")
                if not req.argv:
                    return self._reply(req, ok=False, error="argv: a command is required")
                timeout = max(0.5, deadline - self.agent.clock())
                result = await self.agent.runtime.exec(iid, list(req.argv), timeout)
                return self._reply(req, ok=True, output=result.output, exit_code=result.exit_code)
            case CommandName.TTY:  # args: session, replica, tty, rows, cols, term; the bytes flow on tty-in/out
                iid = self._instance_id(req)
                if iid is None:
                    return self._reply(req, ok=False, error=f"no replica {req.args.get('replica', '')!r} on this node")
                error = await self.tty.open(req, iid)
                return self._reply(req, ok=not error, error=error, output=b"" if error else b"started")
            case CommandName.OVERLAY_PING:  # args: peer, count; output: the OverlayPingResult as JSON
                output, error = await self.agent.overlay.answer_ping(dict(req.args),
                                                                     seconds=deadline - self.agent.clock() - 0.5)
                return self._reply(req, ok=not error, output=output, error=error)
            case CommandName.DRAIN:
                # Draining is the coordinator's decision (it moves replicas through desired state); the agent
                # acknowledges so the coordinator knows the node is reachable.
                return self._reply(req, ok=True, output=b"drain acknowledged")
        return self._reply(req, ok=False, error=f"unknown command {req.command}")

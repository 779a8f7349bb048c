"""One-off commands on the agent: how long a command may run, a late delivery refused with a hint at the clock,
a node whose clock is behind bounded by what the coordinator allowed — through the real CommandHandler."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import SimpleNamespace

import pytest

from broker import wire
from broker.wire import CommandName, CommandReply, CommandRequest, ReplicaSpec, topics
from edge_agent.commands import CommandHandler, time_left
from edge_agent.runtime.base import ExecResult
from edge_agent.runtime.fake import FakeRuntime

T = 1_800_000_000.0  # the coordinator's clock when it sent the request
NODE = "pi-1"


def request(*, deadline: float = T + 30, sent: float | None = T, argv: tuple[str, ...] = ("date",)) -> CommandRequest:
    return CommandRequest(request_id="r1", node_id=NODE, command=CommandName.EXEC, reply_to=topics.node_reply(NODE),
                          deadline=deadline, sent=sent, args={"replica": "web-0"}, argv=argv)


@pytest.mark.parametrize(("now", "sent", "left", "refusal"), [
    (T + 1, T, 29.0, None),  # in time: what is left of the coordinator's deadline
    (T + 31, T, 0.0, "expired 1.0s ago (delivered late"),  # came late: nobody waits for it
    (T + 3600, T, 0.0, "or this node's clock is ahead of the coordinator's"),  # late or skewed: both named
    (T - 3600, T, 30.0, None),  # this node's clock an hour behind: still only the 30 s allowed, not 3630
    (T + 10, None, 20.0, None),  # an older coordinator (no `sent`): its deadline as before
    (T - 3600, None, 3630.0, None),  # ... which cannot bound a clock that is behind
], ids=["in-time", "late", "far-late-or-clock-ahead", "clock-behind", "old-in-time", "old-clock-behind"])
def test_time_left(now: float, sent: float | None, left: float, refusal: str | None) -> None:
    got_left, why = time_left(request(sent=sent), now)
    assert got_left == pytest.approx(left)
    assert (why is None) if refusal is None else (why is not None and refusal in why), why


class Agent(SimpleNamespace):
    """What CommandHandler uses of the agent: its clock, node id, instances, runtime and MQTT client."""


class Replies:
    def __init__(self) -> None:
        self.sent: list[CommandReply] = []

    async def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        assert topic == topics.node_reply(NODE)
        reply = wire.decode(payload)
        assert isinstance(reply, CommandReply)
        self.sent.append(reply)


async def handle(now: float, req: CommandRequest) -> tuple[CommandReply, list[float]]:
    """The reply to `req` on a node whose clock says `now`, and the timeouts its execs were given."""
    timeouts: list[float] = []
    runtime = FakeRuntime(node_id=NODE, clock=lambda: now)
    inst = await runtime.create(ReplicaSpec(replica_id="web-0", workload="web", spec_hash="h", image="busybox"), 1)
    await runtime.start(inst.instance_id)
    runtime.exec_results[("date",)] = ExecResult(0, b"Thu\n")
    real_exec = runtime.exec

    async def exec_(instance_id: str, argv: Sequence[str], timeout_s: float) -> ExecResult:
        timeouts.append(timeout_s)
        return await real_exec(instance_id, argv, timeout_s)

    runtime.exec = exec_  # type: ignore[method-assign]
    replies = Replies()
    handler = CommandHandler(Agent(clock=lambda: now, node_id=NODE, runtime=runtime, mqtt=replies,  # type: ignore[arg-type]
                                   instances=await runtime.list()))
    handler.on_message(SimpleNamespace(topic=topics.node_cmd(NODE), payload=wire.encode(req)))
    async with asyncio.timeout(5):
        while not replies.sent:
            await asyncio.sleep(0.01)
    return replies.sent[0], timeouts


async def test_exec_on_a_node_whose_clock_is_behind_runs_and_is_bounded_by_the_time_allowed() -> None:
    reply, timeouts = await handle(T - 3600, request())
    assert (reply.ok, reply.output, reply.exit_code) == (True, b"Thu\n", 0), reply.error
    assert timeouts == [30.0]


async def test_a_command_delivered_late_to_a_node_in_sync_is_refused_not_run() -> None:
    reply, timeouts = await handle(T + 45, request())
    assert not reply.ok and "delivered late" in reply.error and reply.output == b"" and timeouts == []

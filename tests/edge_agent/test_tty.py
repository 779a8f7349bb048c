"""edge_agent.tty: interactive sessions on the agent, through the real TtySessions with a real pty and command (the
fake runtime runs it on the host) and the in-memory bus with the real codec. Timeouts are driven by the clock the
agent is given, not by waiting them out."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from broker import wire
from broker.wire import CommandName, CommandRequest, ReplicaSpec, TtyInput, TtyOutput, topics
from edge_agent.runtime.base import TtyCommand
from edge_agent.runtime.fake import FakeRuntime
from edge_agent.tty import MAX_SESSIONS, TtySessions, marked, session_members, spawn
from tests.pair.fakebus import FakeBroker

NODE = "pi-1"


@dataclass
class Host:
    """What TtySessions uses of the agent: clock, node id, runtime, MQTT client."""

    runtime: Any
    mqtt: Any
    node_id: str = NODE
    now: list[float] = field(default_factory=lambda: [1000.0])

    @property
    def clock(self) -> Any:
        return lambda: self.now[0]


@dataclass
class Rig:
    host: Host
    sessions: TtySessions
    instance_id: str
    coord: Any  # the coordinator's end of the bus
    out: list[TtyOutput]
    seq: int = 0

    def request(self, *argv: str, session: str = "s1", **args: str) -> CommandRequest:
        return CommandRequest(request_id="r1", node_id=NODE, command=CommandName.TTY, reply_to=topics.node_reply(NODE),
                              deadline=2e9, args={"replica": "web-0", "session": session, **args}, argv=argv)

    async def type(self, session: str = "s1", **kw: Any) -> None:
        frame = TtyInput(node_id=NODE, session=session, seq=kw.pop("seq", self.seq), ts=1.0, **kw)
        self.seq = frame.seq + 1
        await self.coord.publish(topics.node_tty_in(NODE), wire.encode(frame), qos=1)

    def text(self) -> bytes:
        return b"".join(f.data for f in self.out)

    async def until(self, pred: Any, what: str, timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout):
            while not pred():
                await asyncio.sleep(0.02)
        assert pred(), what


@pytest.fixture
async def rig(tmp_path: Path) -> Any:
    bus = FakeBroker()
    runtime = FakeRuntime(node_id=NODE, clock=lambda: 0.0)
    runtime.tty_cwd = str(tmp_path)
    inst = await runtime.create(ReplicaSpec(replica_id="web-0", workload="web", spec_hash="h", image="busybox"), 1)
    await runtime.start(inst.instance_id)
    agent_bus, coord = bus.client(NODE), bus.client("coordinator@t")
    await agent_bus.start()
    await coord.start()
    out: list[TtyOutput] = []
    await coord.subscribe(topics.node_tty_out(NODE), lambda m: out.append(wire.decode_as(m.payload, TtyOutput)))
    host = Host(runtime, agent_bus)
    sessions = TtySessions(host)
    yield Rig(host, sessions, inst.instance_id, coord, out)
    sessions.cancel()
    await asyncio.sleep(0.05)


async def test_a_command_on_a_pty_gets_input_in_order_a_window_size_and_reports_its_exit_code(rig: Rig) -> None:
    req = rig.request("sh", "-c", "stty size; read a; read b; echo got $a $b; exit 3", rows="33", cols="99")
    assert await rig.sessions.open(req, rig.instance_id) == ""
    await rig.until(lambda: b"33 99" in rig.text(), "stty size to print the window size")
    await rig.type(seq=1, data=b"second\r")  # arrives first: held until frame 0 comes
    await asyncio.sleep(0.1)
    assert b"second" not in rig.text()
    await rig.type(seq=0, data=b"first\r")
    await rig.type(seq=0, data=b"first\r")  # a repeat: dropped
    await rig.until(lambda: rig.out and rig.out[-1].last, "the last frame")
    assert b"got first second\r\n" in rig.text()
    assert rig.out[-1].exit_code == 3 and [f.seq for f in rig.out] == list(range(len(rig.out)))
    assert not rig.sessions.sessions


async def test_a_resize_reaches_the_terminal(rig: Rig) -> None:
    assert await rig.sessions.open(rig.request("sh", "-c", "read x; stty size"), rig.instance_id) == ""
    await rig.type(rows=50, cols=160)
    await rig.type(data=b"go\r")
    await rig.until(lambda: rig.out and rig.out[-1].last, "the last frame")
    assert b"50 160\r\n" in rig.text() and rig.out[-1].exit_code == 0


async def test_without_a_terminal_eof_closes_the_input(rig: Rig) -> None:
    assert await rig.sessions.open(rig.request("sh", "-c", "test -t 0 || echo pipe; cat", tty="0"),
                                   rig.instance_id) == ""
    await rig.type(data=b"abc\n", eof=True)
    await rig.until(lambda: rig.out and rig.out[-1].last, "the last frame")
    assert rig.text() == b"pipe\nabc\n" and rig.out[-1].exit_code == 0


async def test_close_kills_the_command(rig: Rig) -> None:
    assert await rig.sessions.open(rig.request("sleep", "300", tty="0"), rig.instance_id) == ""
    await rig.type(close=True)
    await rig.until(lambda: rig.out and rig.out[-1].last, "the last frame")
    assert rig.out[-1].exit_code == -9  # SIGKILL


async def test_a_silent_coordinator_ends_the_session_with_the_reason(rig: Rig) -> None:
    assert await rig.sessions.open(rig.request("sleep", "300", tty="0"), rig.instance_id) == ""
    rig.host.now[0] += 46.0  # no frame from the coordinator for longer than SILENCE_S
    await rig.until(lambda: rig.out and rig.out[-1].last, "the last frame")
    assert "went silent" in rig.out[-1].error and rig.out[-1].exit_code is None


async def test_an_input_gap_that_does_not_fill_ends_the_session(rig: Rig) -> None:
    assert await rig.sessions.open(rig.request("sleep", "300", tty="0"), rig.instance_id) == ""
    await rig.type(seq=2, data=b"x")
    await asyncio.sleep(0.05)
    rig.host.now[0] += 11.0
    await rig.type(seq=3)  # a keepalive: the coordinator is alive, but frames 0..1 never came
    await rig.until(lambda: rig.out and rig.out[-1].last, "the last frame")
    assert rig.out[-1].error.startswith("input frames 0..1 lost")


@pytest.mark.parametrize(("argv", "args", "why"), [
    pytest.param(("sh",), {"session": ""}, "args.session", id="no-session"),
    pytest.param((), {}, "argv", id="no-command"),
    pytest.param(("sh",), {"rows": "0"}, "args.rows", id="bad-rows"),
    pytest.param(("sh",), {"cols": "\u00b2"}, "args.rows, args.cols", id="superscript-digit"),
    pytest.param(("/nonexistent/cmd",), {}, "/nonexistent/cmd", id="cannot-start"),
])
async def test_refusals_say_why(rig: Rig, argv: tuple[str, ...], args: dict[str, str], why: str) -> None:
    assert why in await rig.sessions.open(rig.request(*argv, **args), rig.instance_id)
    assert not rig.sessions.sessions


async def test_at_most_max_sessions_and_one_session_id_once(rig: Rig) -> None:
    for i in range(MAX_SESSIONS):
        assert await rig.sessions.open(rig.request("sleep", "300", session=f"s{i}", tty="0"), rig.instance_id) == ""
    assert "already runs" in await rig.sessions.open(rig.request("sleep", "1", session="s0"), rig.instance_id)
    assert "the most it allows" in await rig.sessions.open(rig.request("sleep", "1", session="s9"), rig.instance_id)
    pids = [s.terminal.proc.pid for s in rig.sessions.sessions.values()]
    rig.sessions.cancel()  # the agent stops: every command killed
    assert not rig.sessions.sessions
    await rig.until(lambda: not any(_alive(pid) for pid in pids), "every command killed")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def test_a_runtime_without_terminals_says_so(rig: Rig) -> None:
    class Plain:  # a Runtime with no tty_command
        pass
    rig.host.runtime = Plain()
    assert "cannot run an interactive command" in await rig.sessions.open(rig.request("sh"), rig.instance_id)


def test_session_members_reads_the_session_field_of_proc_stat(tmp_path: Path) -> None:
    for pid, comm, sid in ((10, "sh", 10), (11, "sleep (x) y", 10), (12, "other", 12)):
        (tmp_path / str(pid)).mkdir()
        # pid (comm) state ppid pgrp session ...; a ')' inside comm must not confuse the parser
        (tmp_path / str(pid) / "stat").write_text(f"{pid} ({comm}) S 1 {pid} {sid} 0 -1 0\n")
    (tmp_path / "self").mkdir()
    assert sorted(session_members(10, str(tmp_path))) == [10, 11]
    assert session_members(10, str(tmp_path / "missing")) == []


def test_marked_reads_the_environment_of_proc(tmp_path: Path) -> None:
    for pid, env in ((10, b"A=1\0CLOUDLESS_TTY_SESSION=s1.ab\0"), (11, b"CLOUDLESS_TTY_SESSION=s1.abc\0"),
                     (12, b"X=CLOUDLESS_TTY_SESSION=s1.ab\0")):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "environ").write_bytes(env)
    (tmp_path / "self").mkdir()
    assert marked("CLOUDLESS_TTY_SESSION", "s1.ab", proc=str(tmp_path)) == [10]


async def test_kill_reaches_processes_outside_the_session_that_carry_its_marker() -> None:
    """What `podman exec` starts is conmon's child, in no session of ours: found by the marker it inherited."""
    cmd = TtyCommand(argv=("sh", "-c", "setsid sleep 1000 & echo $!; wait"))
    term = await spawn(cmd, tty=False, rows=24, cols=80, marker="t1.feedbeef")
    try:
        escaped = int((await term.read()).split()[0])
        assert escaped in marked("CLOUDLESS_TTY_SESSION", "t1.feedbeef")
        term.kill()
        assert await asyncio.wait_for(term.proc.wait(), 30) == -signal.SIGKILL
        for _ in range(300):  # bounded: SIGKILL is delivered, then the process is reaped (by init)
            if not _alive(escaped):
                break
            await asyncio.sleep(0.05)
        assert not _alive(escaped)
    finally:
        term.kill()
        term.close()


async def test_after_the_leader_is_reaped_and_its_session_is_empty_its_pid_is_not_signalled_again() -> None:
    """A pid the kernel may hand to an unrelated process (here: a process standing in for one that got it)."""
    done = await spawn(TtyCommand(argv=("true",)), tty=False, rows=24, cols=80)
    await done.proc.wait()
    done.kill()  # reaped, nothing of its session left: from now on its pid is not ours
    other = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    try:
        done.proc = cast(Any, SimpleNamespace(pid=other.pid, returncode=0))  # as if `other` got the reused pid
        done.kill()
        assert other.poll() is None, "an unrelated process group was killed"
    finally:
        other.kill()
        other.wait()
        done.close()


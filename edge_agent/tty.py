"""Interactive sessions on the agent (`cloudless exec -it`): a command on a pseudo-terminal, or on pipes without
`-t`, in a replica, its bytes relayed over MQTT (adapter; the stream rules are broker.wire.stream's).

A TTY command (node/<id>/cmd) names the session, the replica, the command and the window size. The agent asks the
runtime how the command runs in that replica (`TtyRuntime.tty_command`: the process runtime's working dir, env, ids
and confinement; `podman exec -it` for a container), starts it on a fresh pty (the child gets it as its controlling
terminal, so Ctrl-C typed by the user is the line discipline's SIGINT to the foreground job, Ctrl-D its EOF), and
answers ok. From then on:

- input arrives as TtyInput frames on node/<id>/tty-in, released in sequence order (`Reorder`): bytes go to the
  terminal, a window size to TIOCSWINSZ (the kernel sends SIGWINCH to the foreground job), `eof` closes the input,
  `close` kills the command (the user left);
- output goes out as TtyOutput frames of at most READ_CHUNK bytes, paced to OUTPUT_RATE bytes/s (a pty the agent
  does not read blocks its writer: the pace is backpressure, not loss); the last frame carries the exit code, or an
  error when the session ended otherwise;
- an empty frame every KEEPALIVE_S when quiet; a coordinator unheard for SILENCE_S, an input gap that does not
  fill, or an hour without a byte either way ends the session and kills the command (its session, and every process
  whose environment carries the session's marker: what `podman exec` started in a container is not our child).

At most MAX_SESSIONS at once; stopping the agent kills them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import secrets
import signal
import struct
import subprocess
import termios
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from broker import wire
from broker.client import Message, MqttClient
from broker.errors import MqttError, WireError
from broker.wire import CommandRequest, TtyInput, TtyOutput, topics
from broker.wire.stream import Liveness, Pace, Reorder
from edge_agent.errors import RuntimeError_, RuntimeFailed
from edge_agent.runtime.base import Runtime, TtyCommand, TtyRuntime
from edge_agent.runtime.podman_tty import MARK_VAR

log = logging.getLogger(__name__)

MAX_SESSIONS = 4
READ_CHUNK = 4096
OUTPUT_RATE = 256 * 1024  # bytes/s one session's output may carry
OUTPUT_BURST = 64 * 1024
DRAIN_S = 2.0  # after the command exits, what it left in the terminal is still sent for at most this long
PENDING_MAX = 256 * 1024  # input the command has not read yet (the coordinator paces input, so rarely reached)


class TtyHost(Protocol):
    @property
    def clock(self) -> Callable[[], float]: ...

    @property
    def node_id(self) -> str: ...

    @property
    def runtime(self) -> Runtime: ...

    @property
    def mqtt(self) -> MqttClient: ...


def set_window(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class Terminal:
    """A started command and the agent's ends of its terminal (one fd both ways) or of its pipes."""

    def __init__(self, proc: asyncio.subprocess.Process, *, read_fd: int, write_fd: int, pty: bool,
                 marker: str = "") -> None:
        self.proc, self.read_fd, self.write_fd, self.pty = proc, read_fd, write_fd, pty
        self.marker = marker  # MARK_VAR's value in the environment of the session's processes
        self._reaped = False  # the leader was reaped and nothing of its session is left: its pid may be reused
        self._pending = bytearray()
        self._eof = False
        self._writing = False

    async def read(self) -> bytes:
        """The next bytes the command wrote; b"" once every writer is gone (EIO on a pty whose slave is closed)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bytes] = loop.create_future()

        def ready() -> None:
            try:
                data = os.read(self.read_fd, READ_CHUNK)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not fut.done():
                fut.set_result(data)
        fd = self.read_fd
        if fd < 0:
            return b""
        loop.add_reader(fd, ready)
        try:
            return await fut
        finally:
            if self.read_fd == fd:  # not closed meanwhile (`close` removes it itself)
                loop.remove_reader(fd)

    def write(self, data: bytes) -> None:
        if self.write_fd < 0 or len(self._pending) + len(data) > PENDING_MAX:
            return  # input closed, or the command reads nothing: typed bytes have nowhere to go
        self._pending += data
        self._flush()

    def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending and self.write_fd >= 0:
            try:
                n = os.write(self.write_fd, self._pending)
            except BlockingIOError:
                if not self._writing:
                    loop.add_writer(self.write_fd, self._flush)
                    self._writing = True
                return
            except OSError:
                self._pending.clear()
                break
            del self._pending[:n]
        if self._writing and self.write_fd >= 0:
            loop.remove_writer(self.write_fd)
            self._writing = False
        if self._eof and not self._pending:
            self._close_input()

    def eof(self) -> None:
        """No more input: ^D on a terminal (the line discipline's end of file), closing the pipe otherwise."""
        if self.pty:
            self.write(b"\x04")
            return
        self._eof = True
        self._flush()

    def _close_input(self) -> None:
        if not self.pty and self.write_fd >= 0:
            if self._writing:
                asyncio.get_running_loop().remove_writer(self.write_fd)
                self._writing = False
            os.close(self.write_fd)
            self.write_fd = -1

    def resize(self, rows: int, cols: int) -> None:
        if self.pty:
            with contextlib.suppress(OSError):
                set_window(self.read_fd, rows, cols)

    def kill(self) -> None:
        """SIGKILL the command's session: its process group, and the jobs an interactive shell put in groups of
        their own (`sleep 1000 &` under job control) — every process whose session is the one the command leads;
        then every process that carries the session's marker, which is how the command `podman exec` started in a
        container is found (conmon's child, not ours: killing the client leaves it running).

        Once the leader is reaped (returncode set) and no process of its session is left, its pid is free for
        the kernel to reuse (a pid stays taken while a group or session of that id exists): it is not used again."""
        if not self._reaped:
            leader_gone = self.proc.returncode is not None
            if not leader_gone:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
            members = session_members(self.proc.pid)
            for pid in members:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            self._reaped = leader_gone and not members
        if self.marker:
            for _ in range(2):  # a process forking meanwhile: its child carries the marker too
                for pid in marked(MARK_VAR, self.marker):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        if self._writing and self.write_fd >= 0:
            loop.remove_writer(self.write_fd)
        if self.read_fd >= 0:
            loop.remove_reader(self.read_fd)
        for fd in {self.read_fd, self.write_fd}:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.read_fd = self.write_fd = -1


def session_members(sid: int, proc: str = "/proc") -> list[int]:
    """The processes of session `sid` (field 6 of /proc/<pid>/stat, proc(5)); none where /proc cannot say."""
    members = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(proc):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"{entry.path}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if len(fields) > 3 and fields[3] == str(sid).encode():
                members.append(int(entry.name))
    return members


def marked(name: str, value: str, proc: str = "/proc") -> list[int]:
    """The processes whose environment has `name`=`value` (none where /proc does not let us read it)."""
    entry_wanted = f"{name}={value}".encode()
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(proc):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"{entry.path}/environ", "rb") as f:
                    env = f.read()
            except OSError:
                continue
            if entry_wanted in env.split(b"\0"):
                found.append(int(entry.name))
    return found


async def spawn(cmd: TtyCommand, *, tty: bool, rows: int, cols: int, marker: str = "") -> Terminal:
    """Start `cmd` on a new pty of `rows` x `cols` (tty) or on pipes, in its own session and process group;
    with `marker`, MARK_VAR=`marker` in its environment (the runtime passes it on into a container)."""
    if tty:
        ours, theirs = os.openpty()
        set_window(ours, rows, cols)
        child_fds: tuple[int, ...] = (theirs,)
        stdin = stdout = theirs
        preexec: Callable[[], None] | None = _controlling_then(cmd.preexec)
    else:
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        child_fds = (in_r, out_w)
        stdin, stdout = in_r, out_w
        preexec = cmd.preexec
    switches = cmd.user is not None or cmd.group is not None
    ids: dict[str, Any] = {"user": cmd.user, "group": cmd.group, "extra_groups": []} if switches else {}
    try:
        proc = await asyncio.create_subprocess_exec(
            *cmd.argv, stdin=stdin, stdout=stdout, stderr=stdout, cwd=cmd.cwd,
            env=_with_marker(cmd.env, marker), start_new_session=True,
            preexec_fn=preexec, **ids)  # the controlling terminal, then the runtime's confinement
    except (OSError, subprocess.SubprocessError) as exc:
        for fd in (ours,) if tty else (in_w, out_r):
            os.close(fd)
        raise RuntimeFailed("exec -it", detail=f"{cmd.argv[0]}: {exc}") from exc
    finally:
        for fd in child_fds:
            os.close(fd)
        if cmd.after_spawn is not None:
            cmd.after_spawn()
    if tty:
        os.set_blocking(ours, False)
        return Terminal(proc, read_fd=ours, write_fd=ours, pty=True, marker=marker)
    os.set_blocking(in_w, False)
    os.set_blocking(out_r, False)
    return Terminal(proc, read_fd=out_r, write_fd=in_w, pty=False, marker=marker)


def _with_marker(env: Mapping[str, str] | None, marker: str) -> dict[str, str] | None:
    if not marker:
        return dict(env) if env is not None else None
    return {**(os.environ if env is None else env), MARK_VAR: marker}


def _controlling_then(then: Callable[[], None] | None) -> Callable[[], None]:
    def child() -> None:  # after setsid (start_new_session): stdin, the pty, becomes the controlling terminal
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        if then is not None:
            then()
    return child


@dataclass
class Session:
    """One running session: its terminal and the stream state of both directions."""

    session_id: str
    terminal: Terminal
    started: float
    inputs: Reorder[TtyInput] = field(default_factory=Reorder)
    pace: Pace = field(default_factory=lambda: Pace(OUTPUT_RATE, OUTPUT_BURST))
    live: Liveness = field(init=False)
    next_seq: int = 0
    ended: str = ""  # why it ended other than by the command exiting ("" while it did not)
    closed_by_peer: bool = False

    def __post_init__(self) -> None:
        self.live = Liveness(self.started)

    def end(self, why: str) -> None:
        if not self.ended:
            self.ended = why
        self.terminal.kill()

    def apply(self, msg: TtyInput) -> None:
        """One input frame, in order."""
        if msg.data:
            self.terminal.write(msg.data)
        if msg.rows and msg.cols:
            self.terminal.resize(msg.rows, msg.cols)
        if msg.eof:
            self.terminal.eof()
        if msg.close:
            self.closed_by_peer = True
            self.end("the user left")


class TtySessions:
    """The agent's interactive sessions: started by CommandHandler on a TTY command, fed from tty-in."""

    def __init__(self, host: TtyHost) -> None:
        self.host = host
        self.sessions: dict[str, Session] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._listening = False

    async def open(self, req: CommandRequest, instance_id: str) -> str:
        """Start the session `req` asks for in `instance_id`; "" when it runs, else why not."""
        session_id, args = req.args.get("session", ""), req.args
        if not wire.valid_id(session_id):
            return "args.session: a session id is required"
        if session_id in self.sessions:
            return f"session {session_id} already runs"
        if len(self.sessions) >= MAX_SESSIONS:
            return f"this node already runs {len(self.sessions)} interactive sessions (the most it allows)"
        if not req.argv:
            return "argv: a command is required"
        size = [args.get(k, d) for k, d in (("rows", "24"), ("cols", "80"))]
        if not all(v.isascii() and v.isdigit() and 1 <= int(v) <= 4096 for v in size):  # not '²'
            return "args.rows, args.cols: numbers from 1 to 4096"
        runtime = self.host.runtime
        if not isinstance(runtime, TtyRuntime):
            return f"the {type(runtime).__name__} runtime cannot run an interactive command"
        tty = args.get("tty", "1") == "1"
        try:
            if not self._listening:  # before the first frame can be sent to us: we answer ok only after this
                await self.host.mqtt.subscribe(topics.node_tty_in(self.host.node_id), self.on_input, qos=1)
                self._listening = True
            cmd = await runtime.tty_command(instance_id, req.argv, tty=tty, term=args.get("term", "xterm")[:64])
            terminal = await spawn(cmd, tty=tty, rows=int(size[0]), cols=int(size[1]),
                                   marker=f"{session_id}.{secrets.token_hex(8)}")
        except RuntimeError_ as exc:
            return str(exc)[:4000]
        except MqttError as exc:
            return f"cannot listen for input: {exc}"
        session = Session(session_id, terminal, self.host.clock())
        self.sessions[session_id] = session
        task = asyncio.create_task(self._run(session))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.info("tty session %s: %s in %s (pid %d)", session_id, req.argv[0][:64], instance_id, terminal.proc.pid)
        return ""

    def on_input(self, message: Message) -> None:
        try:
            msg = wire.decode_node_message(message.topic, message.payload)
        except WireError as exc:
            log.warning("ignored a tty frame on %s: %s", message.topic[:120], exc)
            return
        session = self.sessions.get(msg.session) if isinstance(msg, TtyInput) else None
        if session is None or not isinstance(msg, TtyInput):
            return  # a session that ended: late frames
        now = self.host.clock()
        session.live.on_heard(now, data=bool(msg.data))
        accepted = session.inputs.accept(msg.seq, msg, now)
        for frame in accepted.items:
            session.apply(frame)
        if accepted.lost:
            session.end(f"input {accepted.lost}")

    def cancel(self) -> None:
        """The agent stops: every command is killed, every session task ends."""
        for session in self.sessions.values():
            session.end("the agent stopped")
            session.terminal.close()  # here: a task cancelled before its first step never runs its `finally`
        self.sessions.clear()
        for task in self._tasks:
            task.cancel()

    async def _send(self, session: Session, **kw: Any) -> None:
        now = self.host.clock()
        frame = TtyOutput(node_id=self.host.node_id, session=session.session_id, seq=session.next_seq, ts=now, **kw)
        session.next_seq += 1
        session.live.on_sent(now, data=bool(frame.data))
        with contextlib.suppress(MqttError):
            await self.host.mqtt.publish(topics.node_tty_out(self.host.node_id), wire.encode(frame), qos=1)

    async def _run(self, session: Session) -> None:
        ticker = asyncio.create_task(self._tick(session))
        try:
            await self._pump(session)
            session.terminal.kill()  # what is left of its process group (the command itself has exited)
            code = await session.terminal.proc.wait()
            if session.ended and not session.closed_by_peer:
                await self._send(session, error=session.ended)
            else:
                await self._send(session, exit_code=code)
            log.info("tty session %s ended: %s", session.session_id, session.ended or f"exit {code}")
        finally:
            ticker.cancel()
            session.terminal.kill()
            session.terminal.close()
            self.sessions.pop(session.session_id, None)

    async def _pump(self, session: Session) -> None:
        """Output until the terminal is closed; once the command exited, for at most DRAIN_S more (a background
        job of its may keep the terminal open)."""
        loop = asyncio.get_running_loop()
        waiter = asyncio.ensure_future(session.terminal.proc.wait())
        reading = True
        try:
            async with asyncio.timeout(None) as deadline:
                def exited(_: object) -> None:
                    if reading:
                        deadline.reschedule(loop.time() + DRAIN_S)
                waiter.add_done_callback(exited)
                while data := await session.terminal.read():
                    wait = session.pace.delay(len(data), self.host.clock())
                    if wait > 0:
                        await asyncio.sleep(wait)
                    await self._send(session, data=data)
                reading = False
        except TimeoutError:
            pass
        finally:
            reading = False
            if not waiter.done():
                waiter.cancel()

    async def _tick(self, session: Session) -> None:
        """Keepalives while quiet; the end of a session whose coordinator went silent, whose input has a gap that
        does not fill, or that nobody used for IDLE_S."""
        while True:
            await asyncio.sleep(min(2.0, session.live.next_check(self.host.clock())))
            now = self.host.clock()
            why = session.inputs.check(now) or session.live.expired(now)
            if why:
                session.end(f"input {why}" if why.startswith("frames") else why)
                return
            if session.live.keepalive_due(now):
                await self._send(session)

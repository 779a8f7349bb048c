"""Interactive sessions as the coordinator keeps them (pure core; `now` is passed in).

Theory of operation. `cloudless exec -it` opens a WebSocket to the coordinator (coordinator.rest.tty, the adapter);
the coordinator starts the command on the replica's node with a TTY command and relays bytes: the user's input as
`TtyInput` frames on node/<id>/tty-in, the node's output back from `TtyOutput` frames on node/<id>/tty-out.

States of one session: open (admitted by `Sessions.open`, the node not yet asked) -> running (the node answered
ok) -> ended (the node sent its last frame, the user left, a frame was lost, or the peer or the user went
quiet; `TtySession.ended` says why). Invariants:
- at most `max_sessions` sessions at once, and at most `max_per_node` on one node (a shell is cheap, a thousand are
  not; the node has its own, lower, cap too);
- input frames carry seq 0, 1, 2, ... in the order they were made (`frame`), so the node can tell a repeat from a
  loss; output frames are released in order (`on_output`), repeats dropped, a gap older than the reorder window's
  timeout ends the session;
- the user's bytes are paced (`pace`: `INPUT_RATE` bytes/s) before they become frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from broker.wire import TtyInput, TtyOutput
from broker.wire.stream import Accepted, Liveness, Pace, Reorder

MAX_SESSIONS = 16
MAX_PER_NODE = 4
INPUT_RATE = 64 * 1024  # bytes/s a user's input may carry (a paste is fine, a flood is slowed)
INPUT_BURST = 64 * 1024
CHUNK = 4096  # bytes of input per frame
MAX_COMMAND_WORDS = 256
MAX_WORD = 4096


@dataclass
class TtySession:
    session_id: str
    node_id: str
    replica_id: str
    started: float
    live: Liveness = field(init=False)
    output: Reorder[TtyOutput] = field(default_factory=Reorder)
    pace: Pace = field(default_factory=lambda: Pace(INPUT_RATE, INPUT_BURST))
    next_seq: int = 0
    ended: str = ""

    def __post_init__(self) -> None:
        self.live = Liveness(self.started)

    def frame(self, now: float, *, data: bytes = b"", rows: int = 0, cols: int = 0, eof: bool = False,
              close: bool = False) -> TtyInput:
        """The next input frame (an empty one is a keepalive)."""
        msg = TtyInput(node_id=self.node_id, session=self.session_id, seq=self.next_seq, ts=now, data=data,
                       rows=rows, cols=cols, eof=eof, close=close)
        self.next_seq += 1
        self.live.on_sent(now, data=bool(data))
        return msg

    def on_output(self, msg: TtyOutput, now: float) -> Accepted[TtyOutput]:
        """An output frame from the node: the frames it releases, in order (or why the stream broke)."""
        self.live.on_heard(now, data=bool(msg.data))
        return self.output.accept(msg.seq, msg, now)

    def expired(self, now: float) -> str:
        """Why the session must end now ("" while it may go on)."""
        return self.output.check(now) or self.live.expired(now)


@dataclass
class Sessions:
    """Every open session of this coordinator, by id."""

    max_sessions: int = MAX_SESSIONS
    max_per_node: int = MAX_PER_NODE
    by_id: dict[str, TtySession] = field(default_factory=dict)

    def refusal(self, node_id: str) -> str:
        """Why a session on `node_id` would be refused now ("" if it would not): the caps."""
        if len(self.by_id) >= self.max_sessions:
            return f"this coordinator already runs {len(self.by_id)} interactive sessions (the most it allows)"
        on_node = self.on_node(node_id)
        if on_node >= self.max_per_node:
            return f"node {node_id} already has {on_node} interactive sessions (the most allowed per node)"
        return ""

    def open(self, session_id: str, node_id: str, replica_id: str, now: float) -> TtySession | str:
        """A new session, or why not (a value: the API answers 429 with it)."""
        refused = self.refusal(node_id)
        if refused:
            return refused
        if session_id in self.by_id:
            return f"session {session_id} already exists"
        session = TtySession(session_id, node_id, replica_id, now)
        self.by_id[session_id] = session
        return session

    def close(self, session_id: str) -> TtySession | None:
        return self.by_id.pop(session_id, None)

    def on_node(self, node_id: str) -> int:
        return sum(1 for s in self.by_id.values() if s.node_id == node_id)


def chunks(data: bytes, size: int = CHUNK) -> list[bytes]:
    """`data` in pieces of at most `size` bytes (one frame each)."""
    return [data[i:i + size] for i in range(0, len(data), size)]


@dataclass(frozen=True, slots=True)
class OpenRequest:
    """What the client asked for, checked (`parse_open`)."""

    command: tuple[str, ...]
    tty: bool
    stdin: bool
    rows: int
    cols: int
    term: str


def parse_open(query: dict[str, list[str]]) -> OpenRequest | tuple[str, str]:
    """The session's parameters from the URL query (`command` repeated, one word each; `tty`, `stdin`: 0|1;
    `rows`, `cols`: 1..4096; `term`: the client's $TERM), or (field, why) for the 400."""
    command = tuple(query.get("command", []))
    if not command:
        return "command", "give the command as one `command` parameter per word"
    if len(command) > MAX_COMMAND_WORDS or any(len(w) > MAX_WORD or "\x00" in w for w in command):
        return "command", f"at most {MAX_COMMAND_WORDS} words of at most {MAX_WORD} characters, no NUL"
    flags: dict[str, bool] = {}
    for name in ("tty", "stdin"):
        value = (query.get(name) or ["1"])[-1]
        if value not in ("0", "1"):
            return name, "must be 0 or 1"
        flags[name] = value == "1"
    size: dict[str, int] = {}
    for name, default in (("rows", 24), ("cols", 80)):
        raw = (query.get(name) or [str(default)])[-1]
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 4096:  # '²'.isdigit(), int('²') fails
            return name, "must be a number from 1 to 4096"
        size[name] = int(raw)
    term = (query.get("term") or ["xterm"])[-1]
    if not term or len(term) > 64 or not all(c.isalnum() or c in "-_.+" for c in term):
        return "term", "a terminal type such as xterm-256color (letters, digits, '-', '_', '.', '+')"
    return OpenRequest(command, flags["tty"], flags["stdin"], size["rows"], size["cols"], term)

"""coordinator.tty: session bookkeeping and the open request's checks (pure)."""

from __future__ import annotations

import pytest

from broker.wire import TtyOutput
from coordinator.tty import OpenRequest, Sessions, TtySession, chunks, parse_open


def _out(seq: int, data: bytes = b"x", **kw: object) -> TtyOutput:
    return TtyOutput(node_id="pi-1", session="s1", seq=seq, ts=1.0, data=data, **kw)  # type: ignore[arg-type]


def test_sessions_are_capped_in_total_and_per_node() -> None:
    s = Sessions(max_sessions=3, max_per_node=2)
    assert isinstance(s.open("a", "pi-1", "r1", 0.0), TtySession)
    assert isinstance(s.open("b", "pi-1", "r1", 0.0), TtySession)
    assert s.open("c", "pi-1", "r2", 0.0) == "node pi-1 already has 2 interactive sessions (the most allowed per node)"
    assert isinstance(s.open("c", "pi-2", "r3", 0.0), TtySession)
    assert "already runs 3 interactive sessions" in str(s.open("d", "pi-3", "r4", 0.0))
    s.close("a")
    assert isinstance(s.open("d", "pi-1", "r1", 0.0), TtySession)
    assert s.open("d", "pi-9", "r1", 0.0) != "" and s.on_node("pi-1") == 2
    assert s.refusal("pi-9") == s.open("e", "pi-9", "r1", 0.0) != ""
    assert Sessions().refusal("pi-1") == ""


def test_input_frames_are_numbered_from_zero_and_keepalives_are_not_use() -> None:
    t = TtySession("s1", "pi-1", "r1", started=0.0)
    frames = [t.frame(1.0, data=b"ls\r"), t.frame(2.0), t.frame(3.0, rows=40, cols=120), t.frame(4.0, close=True)]
    assert [f.seq for f in frames] == [0, 1, 2, 3]
    assert frames[2].rows == 40 and frames[3].close and frames[0].node_id == "pi-1" and frames[0].session == "s1"
    assert t.live.active == 1.0 and t.live.sent == 4.0


def test_output_is_released_in_order_and_a_lasting_gap_ends_the_session() -> None:
    t = TtySession("s1", "pi-1", "r1", started=0.0)
    assert t.on_output(_out(1, b"b"), 1.0).items == ()
    assert [m.data for m in t.on_output(_out(0, b"a"), 1.5).items] == [b"a", b"b"]
    t.on_output(_out(4), 2.0)
    assert t.expired(11.0) == ""
    assert t.expired(12.5) == "frames 2..3 lost (1 later ones arrived)"


def test_a_node_heard_only_from_long_ago_has_gone_silent() -> None:
    t = TtySession("s1", "pi-1", "r1", started=0.0)
    t.on_output(_out(0, b""), 10.0)  # a keepalive
    assert t.expired(50.0) == ""
    assert "went silent" in t.expired(56.0)


def test_the_last_frame_says_so() -> None:
    assert _out(0, exit_code=0).last and _out(0, error="lost").last and not _out(0).last


def test_chunks_split_input_into_frames() -> None:
    assert chunks(b"") == []
    assert chunks(b"abcde", 2) == [b"ab", b"cd", b"e"]


def test_parse_open_defaults() -> None:
    assert parse_open({"command": ["sh"]}) == OpenRequest(("sh",), tty=True, stdin=True, rows=24, cols=80,
                                                          term="xterm")


@pytest.mark.parametrize(("query", "field"), [
    pytest.param({}, "command", id="no-command"),
    pytest.param({"command": ["x"] * 257}, "command", id="too-many-words"),
    pytest.param({"command": ["a\x00b"]}, "command", id="nul"),
    pytest.param({"command": ["sh"], "tty": ["yes"]}, "tty", id="tty-word"),
    pytest.param({"command": ["sh"], "stdin": ["2"]}, "stdin", id="stdin-2"),
    pytest.param({"command": ["sh"], "rows": ["0"]}, "rows", id="rows-0"),
    pytest.param({"command": ["sh"], "rows": ["\u00b2"]}, "rows", id="rows-superscript-digit"),  # isdigit, not int
    pytest.param({"command": ["sh"], "cols": ["\u0663"]}, "cols", id="cols-arabic-indic-digit"),  # int() takes it
    pytest.param({"command": ["sh"], "cols": ["4097"]}, "cols", id="cols-big"),
    pytest.param({"command": ["sh"], "cols": ["-1"]}, "cols", id="cols-negative"),
    pytest.param({"command": ["sh"], "term": ["xterm; rm -rf /"]}, "term", id="term-shell"),
    pytest.param({"command": ["sh"], "term": [""]}, "term", id="term-empty"),
])
def test_parse_open_refuses_naming_the_field(query: dict[str, list[str]], field: str) -> None:
    got = parse_open(query)
    assert isinstance(got, tuple) and got[0] == field and got[1]


def test_parse_open_takes_every_word_and_the_last_of_each_flag() -> None:
    got = parse_open({"command": ["sh", "-c", "echo a b"], "tty": ["1", "0"], "rows": ["50"], "cols": ["132"],
                      "term": ["xterm-256color"], "stdin": ["0"]})
    assert got == OpenRequest(("sh", "-c", "echo a b"), tty=False, stdin=False, rows=50, cols=132,
                              term="xterm-256color")

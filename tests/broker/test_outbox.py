"""The disconnected-time outbox (broker/outbox.py): its three rules as tables, and a model-checked property that
the bounds hold and no message is ever lost silently."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from broker.outbox import Outbox, Outcome, Outgoing, Queued, Rejected

DROPPED, SUPERSEDED = Outcome.DROPPED, Outcome.SUPERSEDED


def heartbeat(ref: int, size: int = 10, topic: str = "hb") -> Outgoing:
    """A droppable QoS 0 message."""
    return Outgoing(ref=ref, topic=topic, payload=b"h" * size, qos=0, retain=False, droppable=True)


def state(ref: int, topic: str = "status", size: int = 10, *, retain: bool = True) -> Outgoing:
    """A non-droppable QoS 1 (by default retained) state message."""
    return Outgoing(ref=ref, topic=topic, payload=b"s" * size, qos=1, retain=retain)


def filled(box: Outbox, *messages: Outgoing) -> Outbox:
    for msg in messages:
        assert isinstance(box.offer(msg), Queued)
    return box


def refs(box: Outbox) -> list[int]:
    return [m.ref for m in box.drain()]


# ---- basics ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("max_messages", "max_bytes"), [(0, 10), (10, 0), (-1, 10)], ids=str)
def test_bounds_must_be_positive(max_messages: int, max_bytes: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        Outbox(max_messages=max_messages, max_bytes=max_bytes)


def test_drain_returns_everything_oldest_first_and_empties() -> None:
    box = filled(Outbox(), state(1, "a"), heartbeat(2), state(3, "b", retain=False))
    assert (len(box), box.size_bytes) == (3, 30)
    assert refs(box) == [1, 2, 3]
    assert (len(box), box.size_bytes, box.drain()) == (0, 0, [])


def test_drain_forgets_retained_slots() -> None:
    box = filled(Outbox(), state(1, "a"))
    box.drain()
    assert box.offer(state(2, "a")) == Queued(())
    assert refs(box) == [2]


# ---- rule 1: a retained message supersedes the queued retained message on its topic ---------------------------

@pytest.mark.parametrize(
    ("queued", "offered", "settled", "order"),
    [
        pytest.param([state(1, "a")], state(2, "a"), ((1, SUPERSEDED),), [2], id="same-topic"),
        pytest.param([state(1, "a"), heartbeat(2), state(3, "b")], state(4, "a"), ((1, SUPERSEDED),), [4, 2, 3],
                     id="keeps-the-original-slot"),
        pytest.param([state(1, "a"), state(2, "a")], state(3, "a"), ((2, SUPERSEDED),), [3], id="chain"),
        pytest.param([state(1, "a")], state(2, "b"), (), [1, 2], id="other-topic"),
        pytest.param([state(1, "a")], state(2, "a", retain=False), (), [1, 2], id="new-not-retained"),
        pytest.param([state(1, "a", retain=False)], state(2, "a"), (), [1, 2], id="queued-not-retained"),
        pytest.param([state(1, "a", retain=False), state(2, "a")], state(3, "a"), ((2, SUPERSEDED),), [1, 3],
                     id="only-the-retained-one"),
    ],
)
def test_rule1_retained_supersedes(queued: list[Outgoing], offered: Outgoing, settled: tuple[object, ...],
                                   order: list[int]) -> None:
    box = filled(Outbox(), *queued)
    assert box.offer(offered) == Queued(settled)  # type: ignore[arg-type]
    assert refs(box) == order


def test_rule1_supersession_needs_no_room_and_tracks_bytes() -> None:
    box = filled(Outbox(max_messages=2, max_bytes=100), state(1, "a", size=40), state(2, "b", size=40))
    assert box.offer(state(3, "a", size=30)) == Queued(((1, SUPERSEDED),))
    assert (len(box), box.size_bytes) == (2, 70)
    assert refs(box) == [3, 2]


@pytest.mark.parametrize(
    ("second", "expected", "order"),
    [
        pytest.param(85, Queued(((1, SUPERSEDED),)), [3, 2], id="grows-within-bound"),
        pytest.param(96, Queued(((1, SUPERSEDED), (2, DROPPED))), [3], id="grows-past-bound-drops-a-heartbeat"),
        pytest.param(200, "rejected", [1, 2], id="alone-oversized"),
    ],
)
def test_rule1_supersession_respects_the_byte_bound(second: int, expected: object, order: list[int]) -> None:
    box = filled(Outbox(max_messages=10, max_bytes=100), state(1, "a", size=10), heartbeat(2, size=5))
    result = box.offer(state(3, "a", size=second))
    assert box.size_bytes <= box.max_bytes
    if expected == "rejected":
        assert isinstance(result, Rejected)
    else:
        assert result == expected
    assert refs(box) == order


def test_rule1_supersession_that_cannot_fit_is_rejected_and_keeps_the_older_message() -> None:
    box = filled(Outbox(max_messages=10, max_bytes=100), state(1, "a", size=10), state(2, "b", size=80))
    result = box.offer(state(3, "a", size=30))
    assert isinstance(result, Rejected)
    assert "full" in result.reason
    assert (box.size_bytes, refs(box)) == (90, [1, 2])


# ---- rule 2: when full, the oldest droppable message goes first -----------------------------------------------

@pytest.mark.parametrize(
    ("bounds", "queued", "offered", "settled", "order"),
    [
        pytest.param((3, 10_000), [state(1, "a"), heartbeat(2), heartbeat(3)], state(4, "b"), ((2, DROPPED),),
                     [1, 3, 4], id="count-full-drops-oldest-droppable"),
        pytest.param((3, 10_000), [heartbeat(1), state(2, "a"), heartbeat(3)], heartbeat(4), ((1, DROPPED),),
                     [2, 3, 4], id="count-full-new-heartbeat"),
        pytest.param((10, 30), [heartbeat(1), heartbeat(2), state(3, "a")], state(4, "b", size=20),
                     ((1, DROPPED), (2, DROPPED)), [3, 4], id="bytes-full-drops-until-it-fits"),
        pytest.param((10, 30), [state(1, "a"), heartbeat(2, size=5), heartbeat(3, size=15)], state(4, "b"),
                     ((2, DROPPED), (3, DROPPED)), [1, 4], id="bytes-oldest-first-not-biggest-first"),
        pytest.param((2, 10_000), [state(1, "a"), heartbeat(2)], state(3, "a"), ((1, SUPERSEDED),), [3, 2],
                     id="supersession-beats-dropping"),
    ],
)
def test_rule2_oldest_droppable_is_dropped_first(bounds: tuple[int, int], queued: list[Outgoing],
                                                 offered: Outgoing, settled: tuple[object, ...],
                                                 order: list[int]) -> None:
    box = filled(Outbox(max_messages=bounds[0], max_bytes=bounds[1]), *queued)
    assert box.offer(offered) == Queued(settled)  # type: ignore[arg-type]
    assert refs(box) == order


# ---- rule 3: full of state messages: a heartbeat drops itself, a state message is rejected ---------------------

@pytest.mark.parametrize(
    ("bounds", "offered", "expected"),
    [
        pytest.param((2, 10_000), heartbeat(9), Queued(((9, DROPPED),)), id="count-heartbeat-drops-itself"),
        pytest.param((2, 10_000), state(9, "c"), "rejected", id="count-state-rejected"),
        pytest.param((10, 25), heartbeat(9), Queued(((9, DROPPED),)), id="bytes-heartbeat-drops-itself"),
        pytest.param((10, 25), state(9, "c"), "rejected", id="bytes-state-rejected"),
        pytest.param((10, 25), state(9, "c", size=5), Queued(()), id="bytes-small-state-still-fits"),
    ],
)
def test_rule3_full_of_state_messages(bounds: tuple[int, int], offered: Outgoing, expected: object) -> None:
    box = filled(Outbox(max_messages=bounds[0], max_bytes=bounds[1]), state(1, "a"), state(2, "b"))
    result = box.offer(offered)
    if expected == "rejected":
        assert isinstance(result, Rejected)
        assert "full" in result.reason
    else:
        assert result == expected
    assert refs(box) == ([1, 2, 9] if result == Queued(()) else [1, 2])


@pytest.mark.parametrize("msg", [state(1, "a", size=101), heartbeat(1, size=101)], ids=["state", "heartbeat"])
def test_a_message_larger_than_the_whole_outbox_is_rejected(msg: Outgoing) -> None:
    box = Outbox(max_messages=10, max_bytes=100)
    result = box.offer(msg)
    assert isinstance(result, Rejected)
    assert "101" in result.reason
    assert len(box) == 0


@pytest.mark.parametrize("offered", [heartbeat(3, size=50), state(3, "b", size=50)], ids=["heartbeat", "state"])
def test_rule3_after_partial_dropping_nothing_is_removed(offered: Outgoing) -> None:
    """Dropping heartbeat 1 would not make room for 50 bytes, so the offer decides before dropping anything."""
    box = filled(Outbox(max_messages=10, max_bytes=100), heartbeat(1, size=10), state(2, "a", size=80))
    result = box.offer(offered)
    if offered.droppable:
        assert result == Queued(((3, DROPPED),))
    else:
        assert isinstance(result, Rejected)
    assert (box.size_bytes, refs(box)) == (90, [1, 2])


# ---- the property: bounds hold, nothing is lost silently, FIFO -------------------------------------------------

Op = tuple[str, bool, bool, int] | None  # (topic, retain, droppable, size), or None for drain()


@dataclass
class Model:
    """What the test knows about every ref it offered."""

    max_messages: int
    max_bytes: int
    offered: dict[int, Outgoing] = field(default_factory=dict)
    fate: dict[int, object] = field(default_factory=dict)  # "queued" | "delivered" | "rejected" | Outcome
    slot: dict[int, int] = field(default_factory=dict)  # FIFO position: the offer index its chain started at

    def queued(self) -> list[int]:
        return [r for r, f in self.fate.items() if f == "queued"]

    def settle(self, msg: Outgoing, ref: int, outcome: Outcome) -> None:
        assert self.fate.get(ref) == "queued" or ref == msg.ref, f"{ref} settled twice or never queued"
        if outcome is SUPERSEDED:
            old = self.offered[ref]
            assert ref != msg.ref and old.retain and msg.retain and old.topic == msg.topic
            self.slot[msg.ref] = self.slot[ref]
        else:
            assert outcome is DROPPED and self.offered[ref].droppable, f"non-droppable {ref} was dropped"
        self.fate[ref] = outcome

    def could_fit(self, msg: Outgoing) -> bool:
        """Would `msg` fit if every queued droppable message were dropped?"""
        keep = [self.offered[r] for r in self.queued() if not self.offered[r].droppable]
        return len(keep) + 1 <= self.max_messages and sum(len(m.payload) for m in keep) + len(msg.payload) <= \
            self.max_bytes

    def offer(self, box: Outbox, msg: Outgoing) -> None:
        self.offered[msg.ref] = msg
        could_fit = self.could_fit(msg)
        result = box.offer(msg)
        if isinstance(result, Rejected):
            assert not msg.droppable or len(msg.payload) > self.max_bytes, "a droppable message was rejected"
            assert not could_fit, "rejected although dropping heartbeats would have made room"
            self.fate[msg.ref] = "rejected"
            return
        self.fate[msg.ref] = "queued"
        self.slot.setdefault(msg.ref, msg.ref)
        for ref, outcome in result.settled:
            self.settle(msg, ref, outcome)

    def drain(self, box: Outbox) -> None:
        drained = [m.ref for m in box.drain()]
        assert sorted(drained) == sorted(self.queued()), "drain() differs from what the offers reported"
        assert [self.slot[r] for r in drained] == sorted(self.slot[r] for r in drained), "FIFO order broken"
        for ref in drained:
            self.fate[ref] = "delivered"

    def check_bounds(self, box: Outbox) -> None:
        queued = self.queued()
        assert len(box) == len(queued) <= self.max_messages
        assert box.size_bytes == sum(len(self.offered[r].payload) for r in queued) <= self.max_bytes


def run(max_messages: int, max_bytes: int, ops: list[Op]) -> None:
    box, model = Outbox(max_messages=max_messages, max_bytes=max_bytes), Model(max_messages, max_bytes)
    for ref, op in enumerate(ops):
        if op is None:
            model.drain(box)
        else:
            topic, retain, droppable, size = op
            model.offer(box, Outgoing(ref, topic, b"x" * size, qos=0 if droppable else 1, retain=retain,
                                      droppable=droppable))
        model.check_bounds(box)
    model.drain(box)
    assert set(model.fate) == set(model.offered)
    assert all(f != "queued" for f in model.fate.values())


def ops(sizes: st.SearchStrategy[int]) -> st.SearchStrategy[list[Op]]:
    offer = st.tuples(st.sampled_from(["a", "b", "c", "hb"]), st.booleans(), st.booleans(), sizes)
    return st.lists(st.one_of(offer, offer, offer, st.none()), max_size=40)


PROPERTY = settings(max_examples=300, deadline=None)


@PROPERTY
@given(max_messages=st.integers(1, 6), size=st.integers(0, 40), max_bytes=st.integers(1, 200), data=st.data())
def test_property_with_uniform_message_sizes(max_messages: int, size: int, max_bytes: int,
                                             data: st.DataObject) -> None:
    """Bounds hold, every ref is accounted for exactly once, droppable-only drops, FIFO (equal-size payloads)."""
    run(max_messages, max_bytes, data.draw(ops(st.just(size))))


@PROPERTY
@example(max_messages=10, max_bytes=100, ops=[("a", True, False, 10), ("a", True, False, 200)])
@example(max_messages=10, max_bytes=100, ops=[("hb", False, True, 10), ("a", True, False, 80),
                                              ("hb", False, True, 50)])
@given(max_messages=st.integers(1, 6), max_bytes=st.integers(1, 200), ops=ops(st.integers(0, 60)))
def test_property_with_any_message_sizes(max_messages: int, max_bytes: int, ops: list[Op]) -> None:
    run(max_messages, max_bytes, ops)

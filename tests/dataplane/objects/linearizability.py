"""A linearizability checker for a key-value register history (S3 object metadata: PUT, GET, DELETE, LIST).

Theory of operation. A history is a list of operations, each with the client's invoke and return times and an
outcome. The checker searches for a linearization: a total order of the operations that respects real time (an
operation that returned before another was invoked comes first) and in which every operation's result is the one
the sequential model gives. The search is Wing & Gong's, with Lowe's memoization as porcupine does it: walk a
doubly linked list of call and return entries in time order; linearize a pending call when the model accepts it and
the pair (set of linearized operations, model state) was not seen before, lifting its call and return out of the
list; reaching a return entry whose call is not yet linearized means the last choice was wrong: backtrack.

The sequential model of one key: the state is the object's value (a token, e.g. a digest of the body) or None
(missing). PUT(k, v) sets v; DELETE(k) sets None; GET(k) -> r is legal iff r equals the state; a LIST(prefix) ->
keys, projected onto key k (k starts with prefix), is legal iff "k in keys" equals "state is not None".

Outcomes (what a client can know):
- OK: the operation took effect (a write) or returned its result (a read) between invoke and return.
- FAIL: it definitely did not take effect (an S3 4xx such as 412 PreconditionFailed); dropped from the history.
- UNKNOWN: a write whose reply was lost (timeout, connection reset, 5xx): it may or may not have taken effect, at any
  time after its invocation. It is given return time +inf, so it can be linearized anywhere after its invocation,
  including after everything else (which is the same as never taking effect). A read without a result constrains
  nothing and is dropped.

What is checked, exactly (`check`):
1. **Per key** (linearizability is local, Herlihy & Wing, so the per-key check of PUT/GET/DELETE is exact): the
   operations on key k plus every OK LIST whose prefix covers k, projected onto k as a presence read, must be
   linearizable against the one-key model.
2. **Phantoms**: a key a LIST returned must have been written by some PUT in the history (or be in `initial`).
The per-key LIST projection is a necessary condition, not a sufficient one: each key may place a LIST at a
different instant. `check_global` closes that gap: one search over the whole map (state = all keys' values, a
LIST must match the keys present at one instant), bounded by `budget` search steps; it says `inconclusive` when the
budget runs out rather than guessing. A LIST result must be one complete page (S3 pages are not one snapshot).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar


class Kind(enum.StrEnum):
    PUT = "put"
    GET = "get"
    DELETE = "delete"
    LIST = "list"


class Outcome(enum.StrEnum):
    OK = "ok"
    FAIL = "fail"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Op:
    """One client operation. key: the object key (LIST: the prefix). value: the value written (PUT) or read (GET;
    None = NoSuchKey). keys: a LIST's result. ret: the return time (ignored for UNKNOWN, which never returned)."""

    client: int
    kind: Kind
    key: str
    invoke: float
    ret: float
    outcome: Outcome = Outcome.OK
    value: str | None = None
    keys: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not isinstance(self.kind, Kind) or not isinstance(self.outcome, Outcome):
            raise ValueError(f"op: kind and outcome must be Kind and Outcome, got {self.kind!r}, {self.outcome!r}")
        if self.outcome is not Outcome.UNKNOWN and not self.invoke <= self.ret:
            raise ValueError(f"op: ret ({self.ret}) is before invoke ({self.invoke}) in {self}")
        if self.kind is Kind.PUT and self.value is None:
            raise ValueError(f"op: a PUT needs a value: {self}")

    def __str__(self) -> str:
        match self.kind:
            case Kind.PUT:
                what = f"PUT {self.key}={self.value}"
            case Kind.GET:
                what = f"GET {self.key} -> {'missing' if self.value is None else self.value}"
            case Kind.DELETE:
                what = f"DELETE {self.key}"
            case Kind.LIST:
                what = f"LIST {self.key!r} -> {sorted(self.keys)}"
        end = "?" if self.outcome is Outcome.UNKNOWN else f"{self.ret:.6f}"
        return f"c{self.client} [{self.invoke:.6f}, {end}] {what} ({self.outcome})"


@dataclass(frozen=True, slots=True)
class Verdict:
    """ok: a linearization exists. inconclusive: the search budget ran out (only `check_global`). failures: per
    failed partition (a key, "phantom", or "global"), why, with the operations that partition held."""

    ok: bool
    checked_ops: int
    partitions: int
    inconclusive: bool = False
    failures: tuple[str, ...] = ()
    steps: int = 0

    def explain(self) -> str:
        if self.ok:
            return f"linearizable: {self.checked_ops} operations in {self.partitions} partitions ({self.steps} steps)"
        head = "inconclusive" if self.inconclusive else "NOT linearizable"
        return f"{head}: {self.checked_ops} operations, {self.partitions} partitions\n" + "\n".join(self.failures)


S = TypeVar("S", bound=Hashable)


@dataclass(slots=True)
class _Search(Generic[S]):
    """Wing & Gong with memoization over (linearized set, state) on a linked list of call/return entries."""

    ops: Sequence[Op]
    step: Callable[[S, Op], tuple[bool, S]]
    budget: int | None = None
    steps: int = 0
    stuck_at: int = -1  # the return entry that forced the deepest backtrack (for the explanation)
    deepest: int = 0
    _next: list[int] = field(default_factory=list)
    _prev: list[int] = field(default_factory=list)

    def run(self, init: S) -> bool | None:
        """True: linearizable; False: not; None: the budget ran out."""
        n = len(self.ops)
        # entries: 2i = call of op i, 2i+1 = its return. Calls before returns at equal times: touching intervals
        # count as concurrent (the lenient reading: clocks of separate processes are not that precise).
        order = sorted(range(2 * n), key=lambda e: (self._time(e), e % 2, e))
        head = 2 * n  # sentinel
        self._next = [-1] * (2 * n + 1)
        self._prev = [-1] * (2 * n + 1)
        last = head
        for e in order:
            self._next[last], self._prev[e] = e, last
            last = e
        linearized = 0
        state = init
        seen: set[tuple[int, S]] = set()
        stack: list[tuple[int, S, int]] = []
        unknown = [op.outcome is Outcome.UNKNOWN for op in self.ops]
        # Two passes over each window of candidate calls (those before the first pending return): operations with a
        # known outcome first, then the unknown writes. Still every candidate is tried (complete), but a write that
        # may never have happened is not tried first at every step while it stays pending, which made the global
        # search explode on histories with a few dozen of them.
        phase = 0
        entry = self._next[head]
        while self._next[head] != -1:
            self.steps += 1
            if self.budget is not None and self.steps > self.budget:
                return None
            if entry % 2 == 0:  # a call: try to linearize it now (in its pass)
                op_i = entry // 2
                if unknown[op_i] == (phase == 1):
                    legal, after = self.step(state, self.ops[op_i])
                    if legal:
                        key = (linearized | 1 << op_i, after)
                        if key not in seen:
                            seen.add(key)
                            stack.append((entry, state, phase))
                            state, linearized = after, key[0]
                            self._lift(entry)
                            self.deepest = max(self.deepest, len(stack))
                            entry, phase = self._next[head], 0
                            continue
                entry = self._next[entry]
            elif phase == 0:  # end of the window: now the unknown writes in it
                entry, phase = self._next[head], 1
            else:  # a return before its call was linearized: undo the last choice
                if len(stack) == self.deepest:
                    self.stuck_at = entry // 2
                if not stack:
                    return False
                entry, state, phase = stack.pop()
                linearized &= ~(1 << (entry // 2))
                self._unlift(entry)
                entry = self._next[entry]
        return True

    def _time(self, entry: int) -> float:
        op = self.ops[entry // 2]
        if entry % 2 == 0:
            return op.invoke
        return math.inf if op.outcome is Outcome.UNKNOWN else op.ret

    def _lift(self, call: int) -> None:
        for e in (call, call + 1):
            self._next[self._prev[e]] = self._next[e]
            if self._next[e] != -1:
                self._prev[self._next[e]] = self._prev[e]

    def _unlift(self, call: int) -> None:
        for e in (call + 1, call):
            self._next[self._prev[e]] = e
            if self._next[e] != -1:
                self._prev[self._next[e]] = e


def _key_step(key: str) -> Callable[[str | None, Op], tuple[bool, str | None]]:
    def step(state: str | None, op: Op) -> tuple[bool, str | None]:
        match op.kind:
            case Kind.PUT:
                return True, op.value
            case Kind.DELETE:
                return True, None
            case Kind.GET:
                return op.value == state, state
            case Kind.LIST:
                return (key in op.keys) == (state is not None), state

    return step


def _global_step(state: tuple[tuple[str, str], ...], op: Op) -> tuple[bool, tuple[tuple[str, str], ...]]:
    current = dict(state)
    match op.kind:
        case Kind.PUT:
            assert op.value is not None
            current[op.key] = op.value
            return True, tuple(sorted(current.items()))
        case Kind.DELETE:
            current.pop(op.key, None)
            return True, tuple(sorted(current.items()))
        case Kind.GET:
            return current.get(op.key) == op.value, state
        case Kind.LIST:
            return {k for k in current if k.startswith(op.key)} == op.keys, state


def relevant(history: Iterable[Op]) -> list[Op]:
    """The operations that constrain anything: failed operations and reads without a result are dropped."""
    kept = []
    for op in history:
        if op.outcome is Outcome.FAIL:
            continue
        if op.outcome is Outcome.UNKNOWN and op.kind in (Kind.GET, Kind.LIST):
            continue
        kept.append(op)
    return kept


def check(history: Iterable[Op], *, initial: Mapping[str, str] | None = None) -> Verdict:
    """Per-key linearizability of PUT/GET/DELETE with every LIST projected onto each key it covers, plus the
    phantom check (see the module's docstring for the exact model)."""
    ops = relevant(history)
    init = dict(initial or {})
    keys = sorted({op.key for op in ops if op.kind is not Kind.LIST} | set(init))
    lists = [op for op in ops if op.kind is Kind.LIST]
    failures: list[str] = []
    steps = 0
    written = {op.key for op in ops if op.kind is Kind.PUT} | set(init)
    for op in lists:
        phantoms = op.keys - written
        if phantoms:
            failures.append(f"phantom keys {sorted(phantoms)} listed by {op}, never written")
        outside = {k for k in op.keys if not k.startswith(op.key)}
        if outside:
            failures.append(f"keys {sorted(outside)} outside the prefix listed by {op}")
    for key in keys:
        part = [op for op in ops if op.kind is not Kind.LIST and op.key == key]
        part += [op for op in lists if key.startswith(op.key)]
        search: _Search[str | None] = _Search(part, _key_step(key))
        result = search.run(init.get(key))
        steps += search.steps
        if not result:
            failures.append(_explain(f"key {key!r}", part, search))
    return Verdict(not failures, len(ops), len(keys), failures=tuple(failures), steps=steps)


def check_global(history: Iterable[Op], *, initial: Mapping[str, str] | None = None,
                 budget: int = 2_000_000) -> Verdict:
    """One search over the whole map: every LIST at one instant for all keys. Bounded by `budget` steps."""
    ops = relevant(history)
    search: _Search[tuple[tuple[str, str], ...]] = _Search(ops, _global_step, budget=budget)
    result = search.run(tuple(sorted((initial or {}).items())))
    if result is None:
        return Verdict(False, len(ops), 1, inconclusive=True, steps=search.steps,
                       failures=(f"budget of {budget} search steps exhausted",))
    if not result:
        return Verdict(False, len(ops), 1, failures=(_explain("global", ops, search),), steps=search.steps)
    return Verdict(True, len(ops), 1, steps=search.steps)


def _explain(name: str, part: Sequence[Op], search: _Search[S]) -> str:
    lines = [f"{name}: no linearization of {len(part)} operations (deepest prefix {search.deepest})"]
    if search.stuck_at >= 0:
        lines.append(f"  cannot be placed before it returned: {part[search.stuck_at]}")
    shown = sorted(part, key=lambda op: op.invoke)
    lines += [f"  {op}" for op in shown[:40]]
    if len(shown) > 40:
        lines.append(f"  ... and {len(shown) - 40} more")
    return "\n".join(lines)

"""Sorted key orders for the REST lists, kept between requests (pure; issue 17, "a page costs what it holds").

A page of a list starts after its cursor in key order. Sorting the whole table for every page costs O(N log N)
per page (100,000 replica keys: ~100 ms of CPU, past the 50 ms loop budget) and makes a walk O(N²/limit). These
orders are built once and kept: a page bisects to its cursor and walks forward from there (`from_cursor`).

- `SortedKeys`: the keys of a dict in order, rebuilt only when the key set changed. Whether it changed is a
  C-level comparison of the dict's key view with the set the order was built from (~50 us at 5,000 keys; the
  dicts it serves, nodes and workloads, have no change counter of their own), so a page never sorts unless a key
  came or went since the last one.
- `ReplicaOrder`: replicas in (namespace, workload, id) order without sorting them at all. The replica table
  keeps each workload's replicas in id order (`ReplicaTable.of_workload`), so the list is the workloads that hold
  replicas, in (namespace, name) order, each followed by its own replicas. The workloads are kept from the
  table's change feed (`ReplicaTable.watch`): only workloads whose replicas changed are looked at again.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from typing import Generic, TypeVar

from coordinator.model import ReplicaRecord
from coordinator.replica_table import Changes, ReplicaTable

H = TypeVar("H", bound=Hashable)
K = TypeVar("K", bound=tuple[str, ...])
ReplicaKey = tuple[str, str, str]
SCAN_STEP = 5000  # replicas read per step of a first scan (~1 us each)


class SortedKeys(Generic[H, K]):
    """The keys of a mapping as sort keys (`key_of`), in order; rebuilt only when the mapping's key set changed
    (or another mapping is asked about). The list handed out is never changed afterwards: a walk that yields to the
    loop keeps reading a consistent order while a later request builds a new one."""

    def __init__(self, key_of: Callable[[H], K]) -> None:
        self._key_of = key_of
        self._source: Mapping[H, object] | None = None
        self._members: frozenset[H] = frozenset()
        self._order: list[K] = []

    def of(self, mapping: Mapping[H, object]) -> list[K]:
        if mapping is not self._source or mapping.keys() != self._members:
            self._members = frozenset(mapping)
            self._order = sorted(map(self._key_of, self._members))
            self._source = mapping
        return self._order


def from_cursor(order: Sequence[K], after: K | None) -> Iterator[K]:
    """The keys of `order` after `after` (None: all of them), by bisection: O(log N) to start."""
    start = 0 if after is None else bisect_right(order, after)
    return (order[i] for i in range(start, len(order)))


def split_key(key: str) -> tuple[str, str]:
    """A workload key "ns/name" as its sort key (namespace, name): "a/x" sorts before "a-b/y" as tuples do."""
    ns, _, name = key.partition("/")
    return ns, name


class ReplicaOrder:
    """Replicas in (namespace, workload, id) order, from a `ReplicaTable`'s own indexes (see the module's doc)."""

    def __init__(self) -> None:
        self._table: ReplicaTable | None = None
        self._changes: Changes | None = None
        self._workloads: list[tuple[str, str]] = []  # the workloads holding replicas, sorted; replaced, never edited

    def refresh(self, table: ReplicaTable) -> Iterator[None]:
        """Bring the order up to date with `table`, in steps: the caller may give the loop back at each `None`
        (an adapter: `for _ in order.refresh(t): await asyncio.sleep(0)`). The first refresh for a table reads
        every replica once, SCAN_STEP at a time; after that only the workloads whose replicas changed since the
        last refresh are looked at."""
        if table is not self._table or self._changes is None:
            changes = table.watch()  # first: whatever changes during the scan is looked at again next time
            ids = list(table)  # the ids now (C speed); each is read below, and may be gone by then
            present: set[tuple[str, str]] = set()
            for start in range(0, len(ids), SCAN_STEP):
                if start:
                    yield None
                for rid in ids[start:start + SCAN_STEP]:
                    r = table.get(rid)
                    if r is not None:
                        present.add((r.namespace, r.workload))
            self._table, self._changes, self._workloads = table, changes, sorted(present)
        _, changed = self._changes.take()
        if not changed:
            return
        present = set(self._workloads)
        for key in changed:
            if table.of_workload(key):
                present.add(split_key(key))
            else:
                present.discard(split_key(key))
        if len(present) != len(self._workloads) or not present.issuperset(self._workloads):
            self._workloads = sorted(present)

    def workloads(self, table: ReplicaTable) -> list[tuple[str, str]]:
        """The workloads that hold replicas, in (namespace, name) order, brought up to date in one go."""
        for _ in self.refresh(table):
            pass
        return self._workloads

    def walk(self, table: ReplicaTable, after: tuple[str, ...] | None, *, namespace: str | None = None,
             workload: str | None = None) -> Iterator[ReplicaRecord]:
        """The replicas after the cursor `after` (a (namespace, workload, id) key; None: from the start), in key
        order, only `namespace`'s and/or only workloads named `workload` when given. Starting costs a bisection;
        each step one replica (or one workload skipped by the name filter)."""
        order = self.workloads(table)
        low: tuple[str, ...] = (namespace,) if namespace is not None else ()
        if after is not None and (not low or after[:1] >= low):
            low = after[:2]
        for ns_name in order[bisect_left(order, low):]:
            if namespace is not None and ns_name[0] != namespace:
                return
            if workload is not None and ns_name[1] != workload:
                continue
            reps = table.of_workload(f"{ns_name[0]}/{ns_name[1]}")
            start = 0
            if after is not None and ns_name == after[:2]:
                start = bisect_right(reps, after[2], key=_rid)
            for i in range(start, len(reps)):
                yield reps[i]

    def remaining(self, table: ReplicaTable, after: tuple[str, ...] | None) -> int:
        """How many replicas follow `after` in the whole (unfiltered) list: the table's size less those up to
        the cursor, counted a workload at a time (O(workloads before the cursor))."""
        if after is None:
            return len(table)
        order = self.workloads(table)
        at = bisect_left(order, after[:2])
        upto = sum(len(table.of_workload(f"{ns}/{name}")) for ns, name in order[:at])
        if at < len(order) and order[at] == after[:2]:
            reps = table.of_workload(f"{after[0]}/{after[1]}")
            upto += bisect_right(reps, after[2], key=_rid)
        return len(table) - upto


def _rid(r: ReplicaRecord) -> str:
    return r.replica_id

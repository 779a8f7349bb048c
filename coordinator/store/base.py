"""The coordinator's state store port: keys with revisions, compare-and-swap, transactions and watches.

Modelled on etcd's data model so an etcd backend fits behind the same Protocol (replicated coordinators): one
store-wide revision counter that every write advances; each key remembers the revision of its last change
(`mod_revision`) and of its creation. A write may demand the key's current revision (`expect`): 0 means "must
not exist", N means "must still be at revision N" — the optimistic concurrency that lets a scheduling plan be
committed only if the snapshot it came from is still current (STYLE §3). Values are bytes (JSON documents).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from coordinator.errors import CoordinatorError


class StoreError(CoordinatorError):
    """The store failed (I/O, corruption, unreachable backend)."""


class StoreUnavailable(StoreError):
    """The backend cannot serve requests now (e.g. etcd without quorum); callers report not-ready."""


class Conflict(StoreError):
    """A compare-and-swap expectation did not hold; `key` is the first key whose revision differed."""

    def __init__(self, key: str, expected: int, actual: int) -> None:
        self.key, self.expected, self.actual = key, expected, actual
        super().__init__(f"{key}: expected revision {expected}, found {actual}")


@dataclass(frozen=True, slots=True)
class Entry:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int


class OpKind(StrEnum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Op:
    kind: OpKind
    key: str
    value: bytes = b""
    expect: int | None = None  # None: unconditional; 0: must not exist; N: must be at mod_revision N


def put(key: str, value: bytes, expect: int | None = None) -> Op:
    return Op(OpKind.PUT, key, value, expect)


def delete(key: str, expect: int | None = None) -> Op:
    return Op(OpKind.DELETE, key, b"", expect)


@dataclass(frozen=True, slots=True)
class Change:
    kind: OpKind
    key: str
    value: bytes
    revision: int


class Fenced(StoreError):
    """A write refused because the store's fence no longer holds: another coordinator leads now."""

    def __init__(self, guard: tuple[str, int]) -> None:
        self.key, self.epoch = guard
        super().__init__(f"write refused: {self.key} is no longer at epoch {self.epoch} (another coordinator leads)")


class Store(Protocol):
    async def get(self, key: str) -> Entry | None: ...

    async def list(self, prefix: str) -> list[Entry]:
        """Entries whose key starts with `prefix`, in key order."""
        ...

    async def txn(self, ops: Sequence[Op]) -> int:
        """Apply every op atomically, or none if any expectation fails (raises Conflict). Returns the new
        store revision."""
        ...

    async def revision(self) -> int: ...

    def watch(self, prefix: str) -> AsyncIterator[Change]:
        """Changes under `prefix` committed after the call, in revision order."""
        ...

    def fence(self, guard: tuple[str, int] | None) -> None:
        """From now on every `txn` also requires key `guard[0]` to have create revision `guard[1]` — the election
        key at this leader's epoch — and raises Fenced, writing nothing, when it does not (None: no guard)."""
        ...

    async def close(self) -> None: ...

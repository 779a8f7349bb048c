"""Builders for the secrets service tests: a fake clock, callers, a service over SqliteStore(":memory:")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import TypeVar

from coordinator.secrets.envelope import Keyring, MasterKey
from coordinator.secrets.service import Caller, Rejection, Role, SecretsService
from coordinator.store import Change, Conflict, Entry, Op, SqliteStore, Store, StoreError

T0 = 1_700_000_000.0
ADMIN = Caller("alice", "10.0.0.1", Role.ADMIN)
VIEWER = Caller("viewer", "10.0.0.2", Role.VIEWER)
ANON = Caller("anonymous", "10.0.0.3", Role.NONE)
K1 = MasterKey("k1", bytes(range(32)))
K2 = MasterKey("k2", bytes(range(100, 132)))
T = TypeVar("T")


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class YieldingStore:
    """A real SqliteStore that yields to the event loop before every call, so concurrent requests interleave
    between their reads and their compare-and-swap writes (fault injection, STYLE §5)."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner
        self.conflicts = 0  # compare-and-swap failures seen: proof that a test really raced

    async def get(self, key: str) -> Entry | None:
        await asyncio.sleep(0)
        return await self.inner.get(key)

    async def list(self, prefix: str) -> list[Entry]:
        await asyncio.sleep(0)
        return await self.inner.list(prefix)

    async def txn(self, ops: Sequence[Op]) -> int:
        await asyncio.sleep(0)
        try:
            return await self.inner.txn(ops)
        except Conflict:
            self.conflicts += 1
            raise

    async def revision(self) -> int:
        return await self.inner.revision()

    def watch(self, prefix: str) -> AsyncIterator[Change]:
        return self.inner.watch(prefix)

    async def close(self) -> None:
        await self.inner.close()


class OpLimitedStore(YieldingStore):
    """A real SqliteStore that refuses a transaction of more than `max_ops` operations, as etcd does (its
    --max-txn-ops, 128 by default; EtcdStore raises StoreError before sending one)."""

    def __init__(self, inner: SqliteStore, max_ops: int = 128) -> None:
        super().__init__(inner)
        self.max_ops = max_ops
        self.largest = 0

    async def txn(self, ops: Sequence[Op]) -> int:
        if len(ops) > self.max_ops:
            raise StoreError(f"txn writes {len(ops)} keys; at most {self.max_ops} per transaction")
        self.largest = max(self.largest, len(ops))
        return await super().txn(ops)


async def make_service(store: Store | None = None, *, clock: FakeClock | None = None,
                       keyring: Keyring | None = None, **kw: object) -> SecretsService:
    return await SecretsService.open(store or SqliteStore(":memory:"), keyring or Keyring.of(K1),
                                     clock=clock or FakeClock(), **kw)  # type: ignore[arg-type]


def ok(result: T | Rejection) -> T:
    assert not isinstance(result, Rejection), result
    return result


def rejected(result: object) -> Rejection:
    assert isinstance(result, Rejection), result
    return result

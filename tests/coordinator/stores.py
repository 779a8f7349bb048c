"""Store fakes for fault tests: the real SQLite store, with a switch that makes every write fail as a full disk
does (STYLE §5: a maintained fake implementing the Store protocol, not a mock)."""

from __future__ import annotations

from collections.abc import Sequence

from coordinator.store import Op, SqliteStore, StoreError


class FullDiskStore(SqliteStore):
    """`full = True`: every transaction with writes fails with StoreError, and nothing of it is written."""

    def __init__(self) -> None:
        super().__init__(":memory:")
        self.full = False
        self.refused = 0

    async def txn(self, ops: Sequence[Op]) -> int:
        if self.full and ops:
            self.refused += 1
            raise StoreError("database or disk is full")
        return await super().txn(ops)

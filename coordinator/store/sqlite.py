"""SQLite store (the embedded default): one file, WAL journal, every transaction durable before it returns.

Single process: the coordinator that opened the file is its only writer, so change notifications are
in-process queues fed after each commit. `SqliteStore(":memory:")` serves tests with the very same code.
"""

from __future__ import annotations

import asyncio
import builtins
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from coordinator.store.base import Change, Conflict, Entry, Fenced, Op, OpKind, StoreError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    mod_revision INTEGER NOT NULL,
    create_revision INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0);
"""
WATCH_QUEUE_MAX = 10_000


class SqliteStore:
    def __init__(self, path: Path | str) -> None:
        try:
            if isinstance(path, Path):
                path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the state database {path}: {exc}") from exc
        self._watchers: builtins.list[tuple[str, asyncio.Queue[Change | None]]] = []
        self._lock = asyncio.Lock()
        self._fence: tuple[str, int] | None = None

    def fence(self, guard: tuple[str, int] | None) -> None:
        self._fence = guard

    async def get(self, key: str) -> Entry | None:
        row = self._db.execute("SELECT key, value, mod_revision, create_revision FROM kv WHERE key = ?",
                               (key,)).fetchone()
        return Entry(row[0], bytes(row[1]), row[2], row[3]) if row else None

    async def list(self, prefix: str) -> builtins.list[Entry]:
        # key >= prefix AND key < prefix + U+10FFFF: an index range scan, no LIKE escaping issues
        rows = self._db.execute(
            "SELECT key, value, mod_revision, create_revision FROM kv WHERE key >= ? AND key < ? ORDER BY key",
            (prefix, prefix + "\U0010ffff"),
        ).fetchall()
        return [Entry(r[0], bytes(r[1]), r[2], r[3]) for r in rows]

    async def revision(self) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()[0])

    async def txn(self, ops: Sequence[Op]) -> int:
        if not ops:
            return await self.revision()  # as etcd: nothing to write, nothing to fence
        async with self._lock:
            changes: builtins.list[Change] = []
            try:
                self._db.execute("BEGIN IMMEDIATE")
                rev = int(self._db.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()[0]) + 1
                fence = self._fence
                if fence is not None:  # judged before the ops, like etcd's compares; a Conflict is told first
                    row = self._db.execute("SELECT create_revision FROM kv WHERE key = ?", (fence[0],)).fetchone()
                    fence = None if (row[0] if row else 0) == fence[1] else fence
                for op in ops:
                    row = self._db.execute("SELECT mod_revision, create_revision FROM kv WHERE key = ?",
                                           (op.key,)).fetchone()
                    current = row[0] if row else 0
                    if op.expect is not None and op.expect != current:
                        raise Conflict(op.key, op.expect, current)
                    if op.kind is OpKind.PUT:
                        created = row[1] if row else rev
                        self._db.execute(
                            "INSERT OR REPLACE INTO kv (key, value, mod_revision, create_revision) VALUES (?,?,?,?)",
                            (op.key, op.value, rev, created))
                    elif row:
                        self._db.execute("DELETE FROM kv WHERE key = ?", (op.key,))
                    changes.append(Change(op.kind, op.key, op.value, rev))
                if fence is not None:
                    raise Fenced(fence)
                self._db.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (rev,))
                self._db.execute("COMMIT")
            except (Conflict, Fenced):
                self._db.execute("ROLLBACK")
                raise
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise StoreError(f"state database write failed: {exc}") from exc
        self._notify(changes)
        return rev

    def _notify(self, changes: builtins.list[Change]) -> None:
        for prefix, queue in list(self._watchers):
            for change in changes:
                if change.key.startswith(prefix):
                    if queue.qsize() >= WATCH_QUEUE_MAX:  # a stuck watcher must not grow memory forever
                        queue.put_nowait(None)
                        break
                    queue.put_nowait(change)

    async def watch(self, prefix: str) -> AsyncIterator[Change]:
        queue: asyncio.Queue[Change | None] = asyncio.Queue()
        entry = (prefix, queue)
        self._watchers.append(entry)
        try:
            while True:
                change = await queue.get()
                if change is None:
                    raise StoreError(f"watch on {prefix!r} fell behind; re-list and watch again")
                yield change
        finally:
            self._watchers.remove(entry)

    async def close(self) -> None:
        for _, queue in self._watchers:
            queue.put_nowait(None)
        self._db.close()

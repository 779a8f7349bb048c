"""The secrets audit log: who did what to which secret, when, from where, and whether it was allowed.

A record names the action, the actor (credential name, `coordinator`, ...), the time, the source (client IP or
`node:<id>`), the secret (namespace/name/version), the token or audience involved, and the result (`ok` or
`denied` with the reason). It has no field that could hold a value, and every reason string the service writes
is built from names and sizes only.

Records live in the Store under `/secrets/audit/<microseconds since epoch, 17 digits>-<unique suffix>`, so key
order is time order and retention can be decided from keys alone. The record model, the query filter and the
retention decision are pure functions; `AuditLog` is the small adapter that writes and reads them.

Durability. Records of changes (create/update/delete/token/token-revoke/rotate-master-key) are written in the
same store transaction as the change (`AuditLog.op`), so there is never a change without its record. Records of
value reads (access, deliver) are written before the value is returned (`durable=True`). Metadata reads and
refusals are buffered and written in batches (at `flush_after` records, when the oldest is `max_delay_s` old, at
`flush()`): a refusal costs no fsync, so a client hammering the API with bad tokens cannot turn the audit log
into a disk-bound denial of service; a crash can lose at most the last batch of those.
"""

from __future__ import annotations

import itertools
import json
import logging
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from coordinator.store import Op, Store, delete, put

PREFIX = "/secrets/audit/"
MAX_FIELD = 256
MAX_QUERY_LIMIT = 10_000


class AuditAction(StrEnum):
    CREATE = "create"
    GET = "get"  # metadata
    ACCESS = "access"  # a value read through the API
    UPDATE = "update"
    DELETE = "delete"
    TOKEN = "token"  # noqa: S105 - an action name: an access token was issued
    TOKEN_REVOKE = "token-revoke"  # noqa: S105
    ROTATE_MASTER_KEY = "rotate-master-key"
    DELIVER = "deliver"  # values released for sealing to a node


class AuditResult(StrEnum):
    OK = "ok"
    DENIED = "denied"


@dataclass(frozen=True, slots=True)
class AuditRecord:
    at: float
    action: AuditAction
    actor: str
    source: str
    namespace: str = ""
    name: str = ""
    version: int | None = None
    result: AuditResult = AuditResult.OK
    reason: str = ""
    token_id: str = ""
    audience: str = ""
    detail: str = ""  # what an "ok" changed, e.g. "keys: user,password" (names and counts only)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"at": self.at, "action": self.action.value, "actor": self.actor,
                               "source": self.source, "result": self.result.value}
        for key, value in (("namespace", self.namespace), ("name", self.name), ("version", self.version),
                           ("reason", self.reason), ("tokenId", self.token_id), ("audience", self.audience),
                           ("detail", self.detail)):
            if value not in ("", None):
                doc[key] = value
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> AuditRecord:
        version = doc.get("version")
        return cls(float(doc["at"]), AuditAction(doc["action"]), str(doc["actor"]), str(doc["source"]),
                   str(doc.get("namespace", "")), str(doc.get("name", "")),
                   int(version) if version is not None else None, AuditResult(doc.get("result", "ok")),
                   str(doc.get("reason", "")), str(doc.get("tokenId", "")), str(doc.get("audience", "")),
                   str(doc.get("detail", "")))

    def clipped(self) -> AuditRecord:
        """Every free-text field cut to MAX_FIELD characters (actor names and paths can come from outside)."""
        return AuditRecord(self.at, self.action, self.actor[:MAX_FIELD], self.source[:MAX_FIELD],
                           self.namespace[:MAX_FIELD], self.name[:MAX_FIELD], self.version, self.result,
                           self.reason[:1024], self.token_id[:MAX_FIELD], self.audience[:MAX_FIELD],
                           self.detail[:1024])


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Filters (all optional, combined with AND); results are newest first, at most `limit`."""

    namespace: str | None = None
    name: str | None = None
    actor: str | None = None
    action: AuditAction | None = None
    result: AuditResult | None = None
    since: float | None = None  # inclusive
    until: float | None = None  # exclusive
    limit: int = 100

    def matches(self, record: AuditRecord) -> bool:
        return ((self.namespace is None or record.namespace == self.namespace)
                and (self.name is None or record.name == self.name)
                and (self.actor is None or record.actor == self.actor)
                and (self.action is None or record.action == self.action)
                and (self.result is None or record.result == self.result)
                and (self.since is None or record.at >= self.since)
                and (self.until is None or record.at < self.until))


@dataclass(frozen=True, slots=True)
class AuditRetention:
    """Keep records younger than `max_age_s` and at most the newest `max_count` (None: no limit)."""

    max_age_s: float | None = 90 * 86400.0
    max_count: int | None = 100_000

    def __post_init__(self) -> None:
        if self.max_age_s is not None and self.max_age_s <= 0:
            raise ValueError("audit retention max_age_s: must be positive (or None for no age limit)")
        if self.max_count is not None and self.max_count < 1:
            raise ValueError("audit retention max_count: must be at least 1 (or None for no count limit)")


def record_key(at: float, suffix: str) -> str:
    return f"{PREFIX}{max(0, int(at * 1_000_000)):017d}-{suffix}"


def key_time(key: str) -> float:
    """The time encoded in a record key (0.0 for a key that is not one)."""
    stamp = key[len(PREFIX):].split("-", 1)[0]
    return int(stamp) / 1_000_000 if stamp.isascii() and stamp.isdigit() else 0.0


def expired(keys: Sequence[str], now: float, retention: AuditRetention) -> list[str]:
    """Which of `keys` (in key order, i.e. oldest first) retention removes."""
    doomed = 0
    if retention.max_count is not None:
        doomed = max(0, len(keys) - retention.max_count)
    if retention.max_age_s is not None:
        cutoff = now - retention.max_age_s
        while doomed < len(keys) and key_time(keys[doomed]) < cutoff:
            doomed += 1
    return list(keys[:doomed])


def select(records: Iterable[AuditRecord], query: AuditQuery) -> list[AuditRecord]:
    """The records matching `query`, newest first, at most `query.limit`."""
    found = sorted((r for r in records if query.matches(r)), key=lambda r: r.at, reverse=True)
    return found[:max(0, min(query.limit, MAX_QUERY_LIMIT))]


log = logging.getLogger(__name__)
TXN_CHUNK = 100  # records per store transaction (etcd's default limit is 128 ops)
MAX_BUFFERED = 50_000  # unwritten records kept while the store refuses writes


class AuditLog:
    """Writes and reads audit records in the store (adapter; see the module docstring for durability)."""

    def __init__(self, store: Store, *, clock: Callable[[], float], retention: AuditRetention | None = None,
                 flush_after: int = 256, max_delay_s: float = 1.0, prune_every: int = 10_000) -> None:
        self.store = store
        self.clock = clock
        self.retention = retention or AuditRetention()
        self.flush_after = flush_after
        self.max_delay_s = max_delay_s
        self.prune_every = prune_every
        self._pending: list[Op] = []
        self._oldest_pending = 0.0
        self._since_prune = 0
        self._prefix = secrets.token_hex(4)  # unique per process: coordinators sharing a store never collide
        self._counter = itertools.count()

    def op(self, record: AuditRecord) -> Op:
        """The store write for `record`, to commit in the same transaction as the change it describes."""
        self._since_prune += 1
        key = record_key(record.at, f"{self._prefix}{next(self._counter):08x}")
        return put(key, json.dumps(record.clipped().to_json(), separators=(",", ":")).encode())

    async def add(self, record: AuditRecord, *, durable: bool = False) -> None:
        """Write `record` now (`durable`) or in the next batch."""
        if durable:
            await self.store.txn([self.op(record)])
        else:
            if not self._pending:
                self._oldest_pending = self.clock()
            self._pending.append(self.op(record))
            if len(self._pending) >= self.flush_after or self.clock() - self._oldest_pending >= self.max_delay_s:
                await self.flush()
        await self.maybe_prune()

    async def maybe_prune(self) -> None:
        """Apply retention if `prune_every` records were written since the last time."""
        if self._since_prune >= self.prune_every:
            await self.prune()

    async def flush(self) -> None:
        """Write the buffered records (call periodically, e.g. every second, and at shutdown), in transactions of
        at most TXN_CHUNK (etcd refuses more than 128 ops). A chunk that fails stays buffered for the next flush;
        the buffer is capped at MAX_BUFFERED (the oldest go first, with a log line saying how many)."""
        while self._pending:
            chunk = self._pending[:TXN_CHUNK]
            try:
                await self.store.txn(chunk)
            except Exception:
                if len(self._pending) > MAX_BUFFERED:
                    dropped = len(self._pending) - MAX_BUFFERED
                    del self._pending[:dropped]
                    log.error("secrets audit: the store refused writes; %d oldest unwritten records dropped", dropped)
                raise
            del self._pending[:len(chunk)]

    async def query(self, query: AuditQuery) -> list[AuditRecord]:
        await self.flush()
        entries = await self.store.list(PREFIX)
        if query.since is not None:
            entries = [e for e in entries if key_time(e.key) >= query.since]
        records = []
        for entry in entries:
            try:
                records.append(AuditRecord.from_json(json.loads(entry.value)))
            except (ValueError, KeyError, TypeError):
                continue  # a damaged record must not hide the others
        return select(records, query)

    async def prune(self) -> int:
        """Apply retention now; returns how many records were removed."""
        self._since_prune = 0
        await self.flush()
        keys = [e.key for e in await self.store.list(PREFIX)]
        doomed = expired(keys, self.clock(), self.retention)
        for start in range(0, len(doomed), TXN_CHUNK):
            await self.store.txn([delete(k) for k in doomed[start:start + TXN_CHUNK]])
        return len(doomed)

"""Audit records (pure parts): JSON round trip, query filters, retention by age and count; the log adapter's
buffering and pruning over a real SqliteStore."""

from __future__ import annotations

import pytest

from coordinator.secrets import audit
from coordinator.secrets.audit import AuditAction, AuditLog, AuditQuery, AuditRecord, AuditResult, AuditRetention
from coordinator.store import SqliteStore, put

T0 = 1_700_000_000.0


def rec(at: float = T0, **kw: object) -> AuditRecord:
    fields: dict[str, object] = {"action": AuditAction.ACCESS, "actor": "alice", "source": "10.0.0.1",
                                 "namespace": "prod", "name": "db", "version": 1, **kw}
    return AuditRecord(at, **fields)  # type: ignore[arg-type]


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_json_round_trip() -> None:
    r = rec(result=AuditResult.DENIED, reason="token-expired: ...", token_id="t1", audience="billing", detail="x")
    assert AuditRecord.from_json(r.to_json()) == r
    assert AuditRecord.from_json(rec(version=None).to_json()).version is None


def test_record_has_no_value_field() -> None:
    assert not {"value", "data", "values", "plaintext"} & set(AuditRecord.__dataclass_fields__)


RECORDS = [rec(T0, actor="alice"), rec(T0 + 1, actor="bob", action=AuditAction.CREATE),
           rec(T0 + 2, namespace="dev", action=AuditAction.GET), rec(T0 + 3, name="api", result=AuditResult.DENIED)]


@pytest.mark.parametrize(("query", "expected"), [
    pytest.param(AuditQuery(), [3, 2, 1, 0], id="all-newest-first"),
    pytest.param(AuditQuery(actor="bob"), [1], id="actor"),
    pytest.param(AuditQuery(action=AuditAction.GET), [2], id="action"),
    pytest.param(AuditQuery(namespace="prod"), [3, 1, 0], id="namespace"),
    pytest.param(AuditQuery(namespace="prod", name="db"), [1, 0], id="name"),
    pytest.param(AuditQuery(since=T0 + 2), [3, 2], id="since"),
    pytest.param(AuditQuery(until=T0 + 1), [0], id="until"),
    pytest.param(AuditQuery(result=AuditResult.DENIED), [3], id="result"),
    pytest.param(AuditQuery(limit=2), [3, 2], id="limit"),
])
def test_select(query: AuditQuery, expected: list[int]) -> None:
    assert audit.select(RECORDS, query) == [RECORDS[i] for i in expected]


KEYS = [audit.record_key(T0 + i, f"s{i}") for i in range(10)]


@pytest.mark.parametrize(("retention", "now", "removed"), [
    pytest.param(AuditRetention(None, None), T0 + 100, 0, id="unlimited"),
    pytest.param(AuditRetention(None, 4), T0, 6, id="count"),
    pytest.param(AuditRetention(5.0, None), T0 + 10, 5, id="age"),
    pytest.param(AuditRetention(5.0, 8), T0 + 8, 3, id="age-wins"),
    pytest.param(AuditRetention(100.0, 3), T0 + 7, 7, id="count-wins"),
])
def test_retention(retention: AuditRetention, now: float, removed: int) -> None:
    assert audit.expired(KEYS, now, retention) == KEYS[:removed]


def test_keys_sort_by_time_and_carry_it() -> None:
    assert sorted(KEYS) == KEYS and audit.key_time(KEYS[3]) == T0 + 3


@pytest.mark.parametrize("kw", [{"max_age_s": 0}, {"max_count": 0}], ids=str)
def test_retention_validation(kw: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="retention"):
        AuditRetention(**kw)


async def test_buffered_records_are_written_by_size_age_or_flush() -> None:
    store, clock = SqliteStore(":memory:"), Clock()
    log = AuditLog(store, clock=clock, flush_after=3, max_delay_s=1.0)
    await log.add(rec())
    await log.add(rec())
    assert await store.list(audit.PREFIX) == []
    await log.add(rec())  # third: batch full
    assert len(await store.list(audit.PREFIX)) == 3
    await log.add(rec())
    clock.now += 1.5
    await log.add(rec())  # the oldest buffered is older than max_delay_s
    assert len(await store.list(audit.PREFIX)) == 5
    await log.add(rec(), durable=True)
    assert len(await store.list(audit.PREFIX)) == 6
    await log.add(rec())
    assert len(await log.query(AuditQuery(limit=100))) == 7  # a query flushes first


async def test_pruning_runs_every_n_records() -> None:
    store, clock = SqliteStore(":memory:"), Clock()
    log = AuditLog(store, clock=clock, retention=AuditRetention(None, 5), flush_after=1, prune_every=10)
    for _ in range(12):
        await log.add(rec())
    assert len(await store.list(audit.PREFIX)) == 7  # pruned to 5 at the 10th, then two more
    assert await log.prune() == 2


async def test_a_damaged_record_does_not_hide_the_others() -> None:
    store = SqliteStore(":memory:")
    log = AuditLog(store, clock=Clock())
    await log.add(rec(), durable=True)
    await store.txn([put(audit.record_key(T0, "zz"), b"{not json")])
    assert len(await log.query(AuditQuery())) == 1


def test_clipping() -> None:
    assert len(rec(actor="x" * 5000).clipped().actor) == audit.MAX_FIELD

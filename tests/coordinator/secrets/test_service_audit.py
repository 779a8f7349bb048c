"""Audit records for every action (ok and denied), queryable by filters, and the plaintext never at rest: not in
any store entry, not in the SQLite files, not in any audit record."""

from __future__ import annotations

import base64
from pathlib import Path

from coordinator.secrets import AuditAction, AuditQuery, AuditResult, SecretsService
from coordinator.secrets.audit import AuditRetention
from coordinator.secrets.envelope import Keyring
from coordinator.store import SqliteStore
from tests.coordinator.secrets.builders import ADMIN, ANON, K1, K2, VIEWER, FakeClock, make_service, ok, rejected

PLAIN = b"correct-horse-battery-staple-4711"
PLAIN2 = b"Tr0ub4dor&3-second-version-value"


def forms(value: bytes) -> list[bytes]:
    """The plaintext as it could leak: raw, hex, base64 (standard and url-safe, at each 3-byte alignment)."""
    out = [value, value.hex().encode()]
    for shift in range(3):
        chunk = value[shift:]
        for enc in (base64.b64encode, base64.urlsafe_b64encode):
            out.append(enc(chunk[: len(chunk) // 3 * 3])[:16])
    return out


async def every_action(svc: SecretsService) -> None:
    ok(await svc.create("prod", "db", {"password": PLAIN}, caller=ADMIN, audiences=["billing"], ttl="90d"))
    ok(await svc.get("prod", "db", caller=VIEWER))
    ok(await svc.read("prod", "db", caller=ADMIN))
    ok(await svc.update("prod", "db", caller=ADMIN, data={"password": PLAIN2}))
    issued = ok(await svc.issue_token("prod", "db", caller=ADMIN, audience="billing", max_uses=3))
    ok(await svc.read("prod", "db", caller=ANON, token=issued.token, audience="billing"))
    rejected(await svc.read("prod", "db", caller=ANON, token=issued.token, audience="reports"))
    ok(await svc.revoke_token(issued.record.token_id, caller=ADMIN))
    ok(await svc.values_for_delivery("prod", "db", node_id="pi-1", version=1))
    ok(await svc.rotate_master_key(Keyring.of(K1).with_active(K2), caller=ADMIN))
    rejected(await svc.update("prod", "db", caller=VIEWER, data={"password": PLAIN}))
    ok(await svc.create("prod", "gone", {"password": PLAIN}, caller=ADMIN))
    ok(await svc.delete("prod", "gone", caller=ADMIN))
    await svc.flush_audit()


async def test_every_action_is_audited() -> None:
    svc = await make_service()
    await every_action(svc)
    records = ok(await svc.audit_log(AuditQuery(limit=1000), caller=ADMIN))
    seen = {(r.action, r.result) for r in records}
    for action in AuditAction:
        assert (action, AuditResult.OK) in seen, action
    assert (AuditAction.ACCESS, AuditResult.DENIED) in seen and (AuditAction.UPDATE, AuditResult.DENIED) in seen

    [denied] = ok(await svc.audit_log(AuditQuery(action=AuditAction.ACCESS, result=AuditResult.DENIED),
                                      caller=ADMIN))
    assert (denied.actor, denied.source, denied.audience) == ("anonymous", "10.0.0.3", "reports")
    assert denied.reason.startswith("token-wrong-audience") and denied.token_id

    [deliver] = ok(await svc.audit_log(AuditQuery(action=AuditAction.DELIVER), caller=ADMIN))
    assert (deliver.actor, deliver.source, deliver.namespace, deliver.name, deliver.version) == (
        "coordinator", "node:pi-1", "prod", "db", 1)

    [token_read] = [r for r in records if r.action is AuditAction.ACCESS and r.token_id and r.result == "ok"]
    assert token_read.audience == "billing" and "use 1 of 3" in token_read.detail
    assert records == sorted(records, key=lambda r: r.at, reverse=True)


async def test_audit_queries_filter() -> None:
    clock = FakeClock()
    svc = await make_service(clock=clock)
    ok(await svc.create("prod", "db", {"k": b"v"}, caller=ADMIN))
    clock.advance(100)
    ok(await svc.create("dev", "db", {"k": b"v"}, caller=ADMIN))
    ok(await svc.get("dev", "db", caller=VIEWER))
    by = {q: ok(await svc.audit_log(q, caller=ADMIN)) for q in (
        AuditQuery(namespace="dev"), AuditQuery(actor="viewer"), AuditQuery(since=clock.now),
        AuditQuery(action=AuditAction.CREATE, limit=1))}
    assert [len(v) for v in by.values()] == [2, 1, 2, 1]
    assert by[AuditQuery(action=AuditAction.CREATE, limit=1)][0].namespace == "dev"  # newest first
    assert rejected(await svc.audit_log(AuditQuery(), caller=VIEWER)).status == 403


async def test_audit_retention() -> None:
    clock = FakeClock()
    svc = await make_service(clock=clock, audit_retention=AuditRetention(max_age_s=3600, max_count=None))
    ok(await svc.create("prod", "db", {"k": b"v"}, caller=ADMIN))
    clock.advance(7200)
    ok(await svc.get("prod", "db", caller=ADMIN))
    assert (await svc.prune())[0] == 1
    assert [r.action for r in ok(await svc.audit_log(AuditQuery(), caller=ADMIN))] == [AuditAction.GET]


async def test_the_plaintext_is_in_no_stored_byte(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    svc = await SecretsService.open(store, Keyring.of(K1), clock=FakeClock())
    await every_action(svc)
    entries = await store.list("")
    assert len(entries) > 10
    blob = b"\n".join(e.key.encode() + b"=" + e.value for e in entries)
    for value in (PLAIN, PLAIN2):
        for form in forms(value):
            assert form not in blob, form
    await store.close()
    for file in tmp_path.iterdir():  # the database, its WAL and shared memory: every byte on disk
        raw = file.read_bytes()
        for value in (PLAIN, PLAIN2):
            assert value not in raw and value.hex().encode() not in raw, file.name
    # and yet it is all there, encrypted
    store = SqliteStore(tmp_path / "state.db")
    svc = await SecretsService.open(store, Keyring.of(K1).with_active(K2), clock=FakeClock())
    assert dict(ok(await svc.read("prod", "db", caller=ADMIN, version=1)).data) == {"password": PLAIN}


async def test_audit_records_never_hold_the_value() -> None:
    svc = await make_service()
    await every_action(svc)
    text = repr(ok(await svc.audit_log(AuditQuery(limit=1000), caller=ADMIN)))
    for value in (PLAIN, PLAIN2):
        for form in forms(value):
            assert form.decode() not in text

"""Access tokens through the service: audience, TTL, max uses (with real concurrency), revocation, expiry,
re-created secrets; every refusal is a 403 rejection whose code names the failure."""

from __future__ import annotations

import asyncio

import pytest

from coordinator.secrets import IssuedToken, SecretsService
from coordinator.store import SqliteStore
from tests.coordinator.secrets.builders import ADMIN, ANON, T0, FakeClock, YieldingStore, make_service, ok, rejected

DB = {"password": b"hunter2"}


async def secret_and_token(clock: FakeClock | None = None, **token_kw: object) -> tuple[SecretsService, IssuedToken]:
    svc = await make_service(clock=clock)
    ok(await svc.create("prod", "db", DB, caller=ADMIN, audiences=["billing", "reports"]))
    kw: dict[str, object] = {"audience": "billing", **token_kw}
    return svc, ok(await svc.issue_token("prod", "db", caller=ADMIN, **kw))  # type: ignore[arg-type]


async def test_a_token_reads_the_value_for_its_audience() -> None:
    svc, issued = await secret_and_token()
    assert issued.record.expires_at == T0 + 3600  # default TTL 1h
    revealed = ok(await svc.read("prod", "db", caller=ANON, token=issued.token, audience="billing"))
    assert dict(revealed.data) == DB
    assert issued.token not in repr(issued)


async def test_wrong_audience_is_refused() -> None:
    svc, issued = await secret_and_token()
    rej = rejected(await svc.read("prod", "db", caller=ANON, token=issued.token, audience="reports"))
    assert (rej.status, rej.code, rej.field) == (403, "token-wrong-audience", "token")


async def test_a_token_is_for_one_secret() -> None:
    svc, issued = await secret_and_token()
    ok(await svc.create("prod", "other", DB, caller=ADMIN, audiences=["billing"]))
    rej = rejected(await svc.read("prod", "other", caller=ANON, token=issued.token, audience="billing"))
    assert rej.code == "token-wrong-secret"


async def test_token_expiry_follows_the_clock() -> None:
    clock = FakeClock()
    svc, issued = await secret_and_token(clock, ttl="10m")
    clock.advance(599)
    ok(await svc.read("prod", "db", caller=ANON, token=issued.token, audience="billing"))
    clock.advance(1)
    assert rejected(await svc.read("prod", "db", caller=ANON, token=issued.token,
                                   audience="billing")).code == "token-expired"


async def test_max_uses() -> None:
    svc, issued = await secret_and_token(max_uses=2)
    for _ in range(2):
        ok(await svc.read("prod", "db", caller=ANON, token=issued.token, audience="billing"))
    rej = rejected(await svc.read("prod", "db", caller=ANON, token=issued.token, audience="billing"))
    assert (rej.status, rej.code) == (403, "token-exhausted")
    assert ok(await svc.list_tokens("prod", "db", caller=ADMIN))[0].uses == 2


async def test_concurrent_uses_never_exceed_max_uses() -> None:
    store = YieldingStore(SqliteStore(":memory:"))
    svc = await make_service(store)
    ok(await svc.create("prod", "db", DB, caller=ADMIN, audiences=["billing"]))
    issued = ok(await svc.issue_token("prod", "db", caller=ADMIN, audience="billing", max_uses=5))
    results = await asyncio.gather(*(svc.read("prod", "db", caller=ANON, token=issued.token, audience="billing")
                                     for _ in range(30)))
    granted = [r for r in results if not hasattr(r, "kind")]
    assert len(granted) == 5 and store.conflicts > 0
    assert {rejected(r).code for r in results if hasattr(r, "kind")} <= {"token-exhausted", "busy"}


async def test_revocation() -> None:
    svc, issued = await secret_and_token()
    record = ok(await svc.revoke_token(issued.record.token_id, caller=ADMIN))
    assert record.revoked
    assert rejected(await svc.read("prod", "db", caller=ANON, token=issued.token,
                                   audience="billing")).code == "token-revoked"
    assert rejected(await svc.revoke_token("f" * 32, caller=ADMIN)).status == 404
    assert rejected(await svc.revoke_token("../x", caller=ADMIN)).status == 404


async def test_removing_an_audience_from_the_secret_stops_its_tokens() -> None:
    svc, issued = await secret_and_token()
    ok(await svc.update("prod", "db", caller=ADMIN, audiences=["reports"]))
    assert rejected(await svc.read("prod", "db", caller=ANON, token=issued.token,
                                   audience="billing")).code == "token-wrong-audience"


async def test_tokens_die_with_their_secret_even_if_it_is_re_created() -> None:
    svc, issued = await secret_and_token()
    ok(await svc.delete("prod", "db", caller=ADMIN))
    ok(await svc.create("prod", "db", DB, caller=ADMIN, audiences=["billing"]))
    assert rejected(await svc.read("prod", "db", caller=ANON, token=issued.token,
                                   audience="billing")).code == "token-unknown"


async def test_a_forged_token_is_refused() -> None:
    svc, issued = await secret_and_token()
    forged = issued.token[:-4] + ("AAAA" if not issued.token.endswith("AAAA") else "BBBB")
    assert rejected(await svc.read("prod", "db", caller=ANON, token=forged,
                                   audience="billing")).code == "token-signature-invalid"
    assert rejected(await svc.read("prod", "db", caller=ANON, token="junk", audience="billing")).status == 403


@pytest.mark.parametrize(("kw", "field", "message"), [
    pytest.param({"audience": "*"}, "audience", "wildcards", id="wildcard"),
    pytest.param({"audience": "billing-*"}, "audience", "wildcards", id="pattern"),
    pytest.param({"audience": "ops"}, "audience", "not one the secret allows", id="not-allowed"),
    pytest.param({"ttl": "25h"}, "ttl", "between 1s and 1d", id="ttl-over-24h"),
    pytest.param({"ttl": "soon"}, "ttl", "duration", id="ttl-syntax"),
    pytest.param({"max_uses": 0}, "maxUses", "1 to", id="zero-uses"),
])
async def test_issue_validation(kw: dict[str, object], field: str, message: str) -> None:
    svc = await make_service()
    ok(await svc.create("prod", "db", DB, caller=ADMIN, audiences=["billing"]))
    args: dict[str, object] = {"audience": "billing", **kw}
    rej = rejected(await svc.issue_token("prod", "db", caller=ADMIN, **args))  # type: ignore[arg-type]
    assert (rej.status, rej.field) == (400, field) and message in rej.reason


async def test_a_24h_token_is_the_maximum() -> None:
    svc = await make_service()
    ok(await svc.create("prod", "db", DB, caller=ADMIN, audiences=["billing"]))
    assert ok(await svc.issue_token("prod", "db", caller=ADMIN, audience="billing", ttl="24h")).record.expires_at \
        == T0 + 86400


async def test_a_token_needs_the_audience_it_acts_as() -> None:
    svc, issued = await secret_and_token()
    rej = rejected(await svc.read("prod", "db", caller=ANON, token=issued.token))
    assert (rej.status, rej.field) == (400, "audience")


async def test_tokens_for_a_missing_secret() -> None:
    svc = await make_service()
    assert rejected(await svc.issue_token("prod", "nope", caller=ADMIN, audience="billing")).status == 404


async def test_prune_drops_long_expired_token_records() -> None:
    clock = FakeClock()
    svc, _ = await secret_and_token(clock)
    clock.advance(3600 + 86400 + 1)
    assert (await svc.prune())[1] == 1
    assert ok(await svc.list_tokens("prod", "db", caller=ADMIN)) == []

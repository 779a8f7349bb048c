"""Access tokens (pure): signature, secret, audience and expiry checks as values; record admission; validation."""

from __future__ import annotations

import dataclasses

import jwt
import pytest

from coordinator.secrets import tokens
from coordinator.secrets.envelope import Keyring, MasterKey
from coordinator.secrets.tokens import Claims, SigningKeys, TokenFailure, TokenRecord, TokenRejected

NOW = 1_700_000_000.0
K1 = MasterKey("k1", bytes(range(32)))
K2 = MasterKey("k2", bytes(range(1, 33)))
KEYS = SigningKeys(Keyring.of(K1))


def make_record(**kw: object) -> TokenRecord:
    base = TokenRecord("a" * 32, "prod", "db", "uid1", "billing", NOW, NOW + 3600)
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def check(token: str, *, now: float = NOW, ns: str = "prod", name: str = "db",
          audience: str = "billing", keys: SigningKeys = KEYS) -> Claims | TokenRejected:
    return tokens.verify(keys, token, now=now, namespace=ns, name=name, audience=audience)


def failure(result: Claims | TokenRejected) -> TokenFailure | None:
    return result.failure if isinstance(result, TokenRejected) else None


def test_a_good_token_verifies() -> None:
    claims = check(tokens.mint(KEYS, make_record()))
    assert claims == Claims("a" * 32, "prod", "db", "uid1", "billing", NOW + 3600)


@pytest.mark.parametrize(("kw", "expected"), [
    pytest.param({"now": NOW + 3600}, TokenFailure.EXPIRED, id="expired-at-exp"),
    pytest.param({"now": NOW + 10**6}, TokenFailure.EXPIRED, id="expired"),
    pytest.param({"audience": "billing2"}, TokenFailure.WRONG_AUDIENCE, id="audience"),
    pytest.param({"name": "db2"}, TokenFailure.WRONG_SECRET, id="name"),
    pytest.param({"ns": "staging"}, TokenFailure.WRONG_SECRET, id="namespace"),
    pytest.param({"keys": SigningKeys(Keyring.of(MasterKey("k1", bytes(32))))}, TokenFailure.SIGNATURE,
                 id="other-key-same-id"),
    pytest.param({"keys": SigningKeys(Keyring.of(K2))}, TokenFailure.SIGNATURE, id="unknown-key-id"),
])
def test_verify_rejections(kw: dict[str, object], expected: TokenFailure) -> None:
    assert failure(check(tokens.mint(KEYS, make_record()), **kw)) is expected  # type: ignore[arg-type]


def test_tampered_claims_fail_the_signature() -> None:
    header, _payload, sig = tokens.mint(KEYS, make_record()).split(".")
    forged = jwt.encode({"sub": "prod/other"}, "x" * 32, algorithm="HS256").split(".")[1]
    assert failure(check(f"{header}.{forged}.{sig}", name="other")) is TokenFailure.SIGNATURE


@pytest.mark.parametrize("token", ["", "x", "a.b.c", "x" * 5000,
                                   jwt.encode({"sub": "prod/db"}, "k" * 32, algorithm="HS256"),
                                   jwt.encode({"sub": "prod/db"}, None, algorithm="none")],  # type: ignore[arg-type]
                         ids=["empty", "junk", "three-parts", "huge", "no-kid", "alg-none"])
def test_garbage_tokens_are_rejected_values(token: str) -> None:
    assert failure(check(token)) in (TokenFailure.MALFORMED, TokenFailure.SIGNATURE)


def test_tokens_from_a_rotated_out_key_still_verify_while_it_is_in_the_keyring() -> None:
    token = tokens.mint(KEYS, make_record())
    rotated = SigningKeys(Keyring.of(K1).with_active(K2))
    assert isinstance(check(token, keys=rotated), Claims)
    assert jwt.get_unverified_header(tokens.mint(rotated, make_record()))["kid"] == "k2"


CLAIMS = Claims("a" * 32, "prod", "db", "uid1", "billing", NOW + 3600)


@pytest.mark.parametrize(("record", "uid", "allowed", "expected"), [
    pytest.param(make_record(), "uid1", ("billing",), None, id="ok"),
    pytest.param(None, "uid1", ("billing",), TokenFailure.UNKNOWN, id="unknown"),
    pytest.param(make_record(revoked=True), "uid1", ("billing",), TokenFailure.REVOKED, id="revoked"),
    pytest.param(make_record(max_uses=2, uses=2), "uid1", ("billing",), TokenFailure.EXHAUSTED, id="exhausted"),
    pytest.param(make_record(max_uses=2, uses=1), "uid1", ("billing",), None, id="one-use-left"),
    pytest.param(make_record(expires_at=NOW), "uid1", ("billing",), TokenFailure.EXPIRED, id="record-expired"),
    pytest.param(make_record(), "uid2", ("billing",), TokenFailure.WRONG_SECRET, id="re-created"),
    pytest.param(make_record(), "uid1", ("other",), TokenFailure.WRONG_AUDIENCE, id="audience-removed"),
])
def test_admit(record: TokenRecord | None, uid: str, allowed: tuple[str, ...], expected: TokenFailure | None) -> None:
    result = tokens.admit(CLAIMS, record, now=NOW, secret_uid=uid, allowed_audiences=allowed)
    assert (result.failure if result else None) is expected


@pytest.mark.parametrize(("audience", "ok"), [
    ("billing", True), ("workload:prod/web", True), ("node:pi-1", True), ("svc@team", True),
    ("*", False), ("billing-*", False), ("a?", False), ("[ab]", False), ("node/+", False), ("#", False),
    ("", False), (" spaced", False), ("x" * 254, False), (5, False), ("-lead", False),
], ids=repr)
def test_audience_rules(audience: object, ok: bool) -> None:
    assert (tokens.audience_problem(audience) is None) is ok


def test_wildcards_get_a_clear_message() -> None:
    assert "wildcards" in (tokens.audience_problem("team-*") or "")


@pytest.mark.parametrize(("ttl", "ok"), [(1, True), (3600, True), (86400, True), (86401, False), (0, False)])
def test_ttl_rules(ttl: float, ok: bool) -> None:
    assert (tokens.ttl_problem(ttl) is None) is ok


@pytest.mark.parametrize(("uses", "ok"), [(None, True), (1, True), (10**6, True), (0, False), (True, False),
                                          (1.5, False), (10**6 + 1, False)], ids=repr)
def test_max_uses_rules(uses: object, ok: bool) -> None:
    assert (tokens.max_uses_problem(uses) is None) is ok


def test_record_json_round_trip_and_redacted_keys() -> None:
    record = make_record(max_uses=3, uses=1, issued_by="alice")
    assert TokenRecord.from_json(record.to_json()) == record
    assert "redacted" in repr(KEYS)

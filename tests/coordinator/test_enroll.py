"""The enrolment verdict (`enroll.check`, pure): which token may enrol which node id, and why not."""

from __future__ import annotations

import pytest

from coordinator.enroll import Issue, NodeCertRecord, Refuse, TokenRecord, check

NOW = 1_800_000_000.0
CLAIMS = {"labels": {"site": "attic"}, "zone": "home"}


def token(**kw: object) -> TokenRecord:
    return TokenRecord(**{"token_id": "t1", "max_uses": 5, "expires_at": NOW + 3600, "created_at": NOW - 600, **kw})


def cert(**kw: object) -> NodeCertRecord:
    return NodeCertRecord(**{"node_id": "pi-1", "serial": 7, "not_after": NOW + 86400, **kw})


@pytest.mark.parametrize(("record", "existing", "status", "why"), [
    (None, None, 401, "unknown"),
    (token(revoked=True), None, 401, "token was revoked"),
    (token(expires_at=NOW - 3600), None, 401, "expired"),
    (token(uses=5), None, 401, "already used 5"),
    (token(), cert(), 409, "already has a valid certificate"),
    (token(), cert(revoked=True, revoked_at=NOW - 60), 403, "revoked after this token was created"),
    (token(created_at=NOW - 60), cert(revoked=True, revoked_at=NOW - 60), 403, "only a token created since"),
], ids=["unknown-token", "revoked-token", "expired-token", "used-up", "valid-cert", "revoked-after-the-token",
        "revoked-the-same-second"])
def test_refusals_say_why(record: TokenRecord | None, existing: NodeCertRecord | None, status: int, why: str) -> None:
    verdict = check(CLAIMS, record, existing, "pi-1", NOW)
    assert isinstance(verdict, Refuse) and verdict.status == status and why in verdict.reason, verdict


@pytest.mark.parametrize("existing", [
    None,
    cert(not_after=NOW - 1),  # offline past expiry: re-enrols with any valid token
    cert(revoked=True, revoked_at=NOW - 600 - 1),  # revoked, and this token was made after that
    cert(revoked=True),  # revoked before revocation times were kept: unknown, not held against it
], ids=["new-node", "expired-cert", "token-created-after-the-revocation", "revocation-time-unknown"])
def test_enrolment_is_issued(existing: NodeCertRecord | None) -> None:
    assert check(CLAIMS, token(), existing, "pi-1", NOW) == Issue("pi-1", {"site": "attic"}, "home")


def test_a_bad_node_id_is_refused_before_anything_else() -> None:
    verdict = check(CLAIMS, None, None, "../etc", NOW)
    assert isinstance(verdict, Refuse) and verdict.status == 400 and "nodeId" in verdict.reason


def test_records_a_newer_coordinator_wrote_still_load() -> None:
    """During a rolling upgrade (or after a downgrade) a stored record may carry fields this version does not
    know: they are ignored, not a crash of every enrolment and renewal."""
    from coordinator.identity import _cert, _token

    cert_raw = b'{"node_id": "pi-1", "serial": 7, "not_after": 1.0, "revoked": true, "revoked_at": 2.0, "new": 1}'
    assert _cert(cert_raw) == NodeCertRecord("pi-1", 7, 1.0, revoked=True, revoked_at=2.0)
    assert _token(b'{"token_id": "t1", "max_uses": 1, "nodes": ["a"], "future": []}') == TokenRecord(
        "t1", 1, nodes=("a",))

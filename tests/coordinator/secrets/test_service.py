"""SecretsService: create/get/update/delete/list, versions, immutability, expiry, roles, delivery, validation."""

from __future__ import annotations

import pytest

from coordinator.secrets import Caller, Rejection, RejectKind, SecretInfo, parse_duration
from coordinator.secrets.service import Limits, meta_key, version_key
from coordinator.store import SqliteStore
from tests.coordinator.secrets.builders import (
    ADMIN,
    ANON,
    T0,
    VIEWER,
    FakeClock,
    OpLimitedStore,
    make_service,
    ok,
    rejected,
)

DB = {"user": b"app", "password": b"hunter2"}


async def test_create_get_read_list() -> None:
    svc = await make_service()
    info = ok(await svc.create("prod", "db", DB, caller=ADMIN, audiences=["billing"], ttl="90d"))
    assert (info.active_version, info.keys, info.audiences, info.immutable) == (1, ("password", "user"),
                                                                                ("billing",), False)
    assert info.expires_at == T0 + 90 * 86400
    assert ok(await svc.get("prod", "db", caller=VIEWER)) == info
    revealed = ok(await svc.read("prod", "db", caller=ADMIN))
    assert (revealed.version, dict(revealed.data)) == (1, DB)
    ok(await svc.create("prod", "api", {"KEY": b"k"}, caller=ADMIN))
    ok(await svc.create("dev", "db", {"KEY": b"k"}, caller=ADMIN))
    assert [s.name for s in ok(await svc.list("prod", caller=VIEWER))] == ["api", "db"]
    assert [(s.namespace, s.name) for s in ok(await svc.list(caller=VIEWER))] == [("dev", "db"), ("prod", "api"),
                                                                                  ("prod", "db")]
    assert ok(await svc.list("pro", caller=VIEWER)) == []  # a namespace prefix is not a namespace


async def test_metadata_json_round_trip_and_never_values() -> None:
    svc = await make_service()
    info = ok(await svc.create("prod", "db", DB, caller=ADMIN, audiences=["billing"]))
    doc = info.to_json()
    assert SecretInfo.from_json(doc) == info
    assert "hunter2" not in repr(doc) and "hunter2" not in repr(info)


async def test_create_twice_is_a_conflict() -> None:
    svc = await make_service()
    ok(await svc.create("prod", "db", DB, caller=ADMIN))
    rej = rejected(await svc.create("prod", "db", DB, caller=ADMIN))
    assert (rej.kind, rej.status, rej.code) == (RejectKind.CONFLICT, 409, "exists")


async def test_update_makes_a_new_version_and_old_ones_stay_readable() -> None:
    clock = FakeClock()
    svc = await make_service(clock=clock)
    ok(await svc.create("prod", "db", DB, caller=ADMIN))
    clock.advance(10)
    info = ok(await svc.update("prod", "db", caller=ADMIN, data={"password": b"new"}))
    assert info.active_version == 2 and info.keys == ("password",) and info.updated_at == T0 + 10
    assert [v.version for v in info.versions] == [1, 2]
    assert dict(ok(await svc.read("prod", "db", caller=ADMIN)).data) == {"password": b"new"}
    assert dict(ok(await svc.read("prod", "db", caller=ADMIN, version=1)).data) == DB
    rej = rejected(await svc.read("prod", "db", caller=ADMIN, version=7))
    assert (rej.status, rej.field) == (404, "version")


async def test_metadata_only_update_keeps_the_version() -> None:
    svc = await make_service()
    ok(await svc.create("prod", "db", DB, caller=ADMIN, audiences=["a"]))
    info = ok(await svc.update("prod", "db", caller=ADMIN, audiences=["a", "b"], ttl="1h"))
    assert (info.active_version, info.audiences, info.ttl_s) == (1, ("a", "b"), 3600)


async def test_expect_version_is_optimistic_concurrency() -> None:
    svc = await make_service()
    ok(await svc.create("prod", "db", DB, caller=ADMIN))
    ok(await svc.update("prod", "db", caller=ADMIN, data=DB, expect_version=1))
    rej = rejected(await svc.update("prod", "db", caller=ADMIN, data=DB, expect_version=1))
    assert (rej.status, rej.code, rej.field) == (409, "version-mismatch", "expectVersion")
    rej = rejected(await svc.update("prod", "db", caller=ADMIN, data=DB, expect_version=0))
    assert (rej.status, rej.field) == (400, "expectVersion")


async def test_immutable_secrets_refuse_updates_with_409_but_can_be_deleted() -> None:
    svc = await make_service()
    ok(await svc.create("prod", "tls", {"key": b"k"}, caller=ADMIN, immutable=True))
    for kw in ({"data": {"key": b"other"}}, {"audiences": ["x"]}):
        rej = rejected(await svc.update("prod", "tls", caller=ADMIN, **kw))
        assert (rej.kind, rej.status, rej.code) == (RejectKind.CONFLICT, 409, "immutable")
    assert dict(ok(await svc.read("prod", "tls", caller=ADMIN)).data) == {"key": b"k"}
    ok(await svc.delete("prod", "tls", caller=ADMIN))


async def test_delete_removes_every_version_and_token() -> None:
    store = SqliteStore(":memory:")
    svc = await make_service(store)
    ok(await svc.create("prod", "db", DB, caller=ADMIN, audiences=["billing"]))
    ok(await svc.update("prod", "db", caller=ADMIN, data=DB))
    ok(await svc.issue_token("prod", "db", caller=ADMIN, audience="billing"))
    ok(await svc.create("prod", "db2", DB, caller=ADMIN))
    deleted = ok(await svc.delete("prod", "db", caller=ADMIN))
    assert deleted.active_version == 2
    left = [e.key for e in await store.list("/secrets/") if "/audit/" not in e.key and "/keys/" not in e.key]
    assert sorted(left) == sorted([version_key("prod", "db2", 1), meta_key("prod", "db2")])
    assert rejected(await svc.get("prod", "db", caller=ADMIN)).status == 404
    assert rejected(await svc.delete("prod", "db", caller=ADMIN)).status == 404


async def test_delete_of_more_keys_than_one_transaction_takes() -> None:
    """etcd refuses transactions of more than 128 operations: a secret with hundreds of tokens and versions is
    still deleted whole, and a new secret of the same name inherits none of its tokens or versions."""
    store = OpLimitedStore(SqliteStore(":memory:"))
    svc = await make_service(store, limits=Limits(max_versions=100))  # type: ignore[arg-type]
    ok(await svc.create("prod", "db", DB, caller=ADMIN, audiences=["billing"]))
    for _ in range(60):
        ok(await svc.update("prod", "db", caller=ADMIN, data=DB))
    for _ in range(250):
        ok(await svc.issue_token("prod", "db", caller=ADMIN, audience="billing"))
    ok(await svc.delete("prod", "db", caller=ADMIN))
    assert store.largest <= store.max_ops
    left = [e.key for e in await store.list("/secrets/") if "/audit/" not in e.key and "/keys/" not in e.key]
    assert left == []
    ok(await svc.create("prod", "db", DB, caller=ADMIN, audiences=["billing"]))
    assert [v.version for v in ok(await svc.get("prod", "db", caller=ADMIN)).versions] == [1]
    assert ok(await svc.list_tokens("prod", "db", caller=ADMIN)) == []


async def test_old_versions_are_dropped_past_max_versions() -> None:
    store = SqliteStore(":memory:")
    svc = await make_service(store, limits=Limits(max_versions=3))
    ok(await svc.create("prod", "db", {"v": b"1"}, caller=ADMIN))
    for n in range(2, 6):
        ok(await svc.update("prod", "db", caller=ADMIN, data={"v": str(n).encode()}))
    info = ok(await svc.get("prod", "db", caller=ADMIN))
    assert [v.version for v in info.versions] == [3, 4, 5]
    assert len(await store.list("/secrets/v/prod/db/")) == 3
    assert dict(ok(await svc.read("prod", "db", caller=ADMIN, version=3)).data) == {"v": b"3"}
    assert rejected(await svc.read("prod", "db", caller=ADMIN, version=2)).status == 404


async def test_an_expired_secret_is_gone_until_updated() -> None:
    clock = FakeClock()
    svc = await make_service(clock=clock)
    ok(await svc.create("prod", "db", DB, caller=ADMIN, ttl="1h"))
    clock.advance(3600)
    rej = rejected(await svc.read("prod", "db", caller=ADMIN))
    assert (rej.kind, rej.status, rej.code) == (RejectKind.EXPIRED, 410, "secret-expired")
    assert rejected(await svc.values_for_delivery("prod", "db", node_id="pi-1")).status == 410
    ok(await svc.get("prod", "db", caller=ADMIN))  # metadata stays visible
    ok(await svc.update("prod", "db", caller=ADMIN, data=DB))  # a new version renews the TTL
    assert ok(await svc.read("prod", "db", caller=ADMIN)).version == 2


@pytest.mark.parametrize("caller", [VIEWER, ANON], ids=["viewer", "none"])
async def test_only_admins_change_secrets_or_read_values_without_a_token(caller: Caller) -> None:
    svc = await make_service()
    ok(await svc.create("prod", "db", DB, caller=ADMIN))
    results = [await svc.create("prod", "x", DB, caller=caller),
               await svc.update("prod", "db", caller=caller, data=DB),
               await svc.read("prod", "db", caller=caller),
               await svc.delete("prod", "db", caller=caller),
               await svc.issue_token("prod", "db", caller=caller, audience="a")]
    assert [rejected(r).status for r in results] == [403] * 5
    assert ok(await svc.get("prod", "db", caller=ADMIN)).active_version == 1


async def test_viewer_reads_metadata_but_not_values() -> None:
    svc = await make_service()
    ok(await svc.create("prod", "db", DB, caller=ADMIN))
    ok(await svc.get("prod", "db", caller=VIEWER))
    rej = rejected(await svc.read("prod", "db", caller=VIEWER))
    assert (rej.status, rej.code) == (403, "token-required")
    assert rejected(await svc.get("prod", "db", caller=ANON)).status == 403
    assert rejected(await svc.create("prod", "x", DB, caller=VIEWER)).code == "admin-required"


BIG = 64 * 1024


@pytest.mark.parametrize(("kw", "field"), [
    pytest.param({"namespace": "Bad/ns"}, "namespace", id="namespace-slash"),
    pytest.param({"namespace": ""}, "namespace", id="namespace-empty"),
    pytest.param({"name": "-lead"}, "name", id="name-lead"),
    pytest.param({"name": "x" * 64}, "name", id="name-long"),
    pytest.param({"data": {}}, "data", id="no-keys"),
    pytest.param({"data": {"..": b"x"}}, "data...", id="dotdot"),
    pytest.param({"data": {"a/b": b"x"}}, "data.a/b", id="slash-key"),
    pytest.param({"data": {"k": "str"}}, "data.k", id="str-value"),
    pytest.param({"data": {"k": b"x" * (BIG + 1)}}, "data.k", id="value-too-big"),
    pytest.param({"data": {f"k{i}": b"x" * BIG for i in range(5)}}, "data", id="total-too-big"),
    pytest.param({"data": {f"k{i}": b"" for i in range(65)}}, "data", id="too-many-keys"),
    pytest.param({"data": [("k", b"v")]}, "data", id="not-a-mapping"),
    pytest.param({"audiences": ["*"]}, "audiences[0]", id="wildcard"),
    pytest.param({"audiences": ["a", "team-*"]}, "audiences[1]", id="pattern"),
    pytest.param({"audiences": ["a", "a"]}, "audiences[1]", id="duplicate"),
    pytest.param({"audiences": "billing"}, "audiences", id="string-not-list"),
    pytest.param({"ttl": "90x"}, "ttl", id="ttl-unit"),
    pytest.param({"ttl": "10s"}, "ttl", id="ttl-short"),
    pytest.param({"ttl": "4000d"}, "ttl", id="ttl-long"),
    pytest.param({"immutable": "yes"}, "immutable", id="immutable-type"),
])
async def test_validation_names_the_field(kw: dict[str, object], field: str) -> None:
    svc = await make_service()
    args: dict[str, object] = {"namespace": "prod", "name": "db", "data": DB, **kw}
    rej = rejected(await svc.create(args.pop("namespace"), args.pop("name"), args.pop("data"),  # type: ignore[arg-type]
                                    caller=ADMIN, **args))  # type: ignore[arg-type]
    assert (rej.kind, rej.status, rej.field) == (RejectKind.INVALID, 400, field)
    assert rej.to_json()["errors"][0]["path"] == field
    assert "hunter2" not in rej.reason


async def test_all_problems_are_reported_at_once() -> None:
    svc = await make_service()
    rej = rejected(await svc.create("Bad/", "-x", {"..": b""}, caller=ADMIN, audiences=["*"]))
    assert [p for p, _ in rej.errors] == ["namespace", "name", "data...", "audiences[0]"]
    assert "(and 3 more)" in rej.reason


async def test_update_with_nothing_is_invalid() -> None:
    svc = await make_service()
    ok(await svc.create("prod", "db", DB, caller=ADMIN))
    assert rejected(await svc.update("prod", "db", caller=ADMIN)).status == 400


async def test_delivery_returns_values_for_a_node() -> None:
    svc = await make_service()
    ok(await svc.create("prod", "db", DB, caller=ADMIN, audiences=["workload:prod/web"]))
    ok(await svc.update("prod", "db", caller=ADMIN, data={"password": b"v2"}))
    assert dict(ok(await svc.values_for_delivery("prod", "db", node_id="pi-1")).data) == {"password": b"v2"}
    assert dict(ok(await svc.values_for_delivery("prod", "db", node_id="pi-1", version=1)).data) == DB
    ok(await svc.values_for_delivery("prod", "db", node_id="pi-1", audience="workload:prod/web"))
    rej = rejected(await svc.values_for_delivery("prod", "db", node_id="pi-1", audience="workload:prod/other"))
    assert (rej.status, rej.code) == (403, "wrong-audience")
    assert rejected(await svc.values_for_delivery("prod", "db", node_id="bad/node")).field == "nodeId"
    assert rejected(await svc.values_for_delivery("prod", "nope", node_id="pi-1")).status == 404


async def test_revealed_values_never_show_in_repr() -> None:
    svc = await make_service()
    ok(await svc.create("prod", "db", DB, caller=ADMIN))
    revealed = ok(await svc.read("prod", "db", caller=ADMIN))
    assert "hunter2" not in repr(revealed) and "hunter2" not in str(revealed.data)


@pytest.mark.parametrize(("text", "seconds"), [("90d", 90 * 86400), ("1h30m", 5400), ("45s", 45), ("2w", 14 * 86400),
                                               ("3600", 3600), (120, 120), ("1.5h", 5400)], ids=str)
def test_parse_duration(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "90x", "-5m", "1h 30m", True, None, 0, "0s"], ids=repr)
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(("kind", "status"), [(RejectKind.INVALID, 400), (RejectKind.DENIED, 403),
                                              (RejectKind.NOT_FOUND, 404), (RejectKind.CONFLICT, 409),
                                              (RejectKind.EXPIRED, 410)])
def test_rejection_status(kind: RejectKind, status: int) -> None:
    assert Rejection(kind, "r").status == status

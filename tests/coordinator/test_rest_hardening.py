"""Issue 16, Low: what the REST fuzzing found. Unauthenticated 500s on hostile JSON, a Unicode digit taken for
a number, enrolment tokens granting what a node can never publish, a 405 without `Allow`, a token minted from no
body, and a lowercase `bearer` refused. Each through the real app of a real coordinator."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.coordinator.rest_harness import ADMIN, AUTH, rest

DEEP = "[" * 100_000 + "]" * 100_000
SURROGATE = '"\\udcff"'


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/enroll", DEEP),
    ("/v1/enroll", '{"token": ' + SURROGATE + ', "nodeId": "n1", "csr": "x"}'),
    ("/v1/secrets/default/db/reveal", DEEP),
    ("/v1/secrets/default/db/reveal", '{"token": ' + SURROGATE + ', "audience": "x"}'),
    ("/v1/workloads/default/w", DEEP),
], ids=["enroll-deep", "enroll-surrogate", "reveal-deep", "reveal-surrogate", "apply-deep"])
async def test_hostile_json_is_a_400_not_a_500(tmp_path: Path, path: str, body: str) -> None:
    async with rest(pki=tmp_path, start=False) as r:
        admin = path.startswith("/v1/workloads")
        headers = {"Content-Type": "application/json", **(AUTH if admin else {})}
        resp = await r.client.request("PUT" if admin else "POST", path, data=body.encode(), headers=headers)
        assert resp.status == 400, await resp.text()
        assert "Traceback" not in await resp.text()


@pytest.mark.parametrize("limit", ["²", "\u0661\u0660", "0", "x"])
async def test_secrets_audit_limit_must_be_an_ascii_number(tmp_path: Path, limit: str) -> None:
    async with rest(pki=tmp_path, start=False) as r:
        resp = await r.client.get("/v1/secrets-audit", params={"limit": limit}, headers=AUTH)
        assert resp.status == 400, await resp.text()


@pytest.mark.parametrize(("body", "field"), [
    ({"zone": "z" * 65}, "zone"),
    ({"zone": "home\x00"}, "zone"),
    ({"labels": {"k": "v" * 129}}, "labels.k"),
    ({"labels": {f"k{i}": "v" for i in range(65)}}, "labels"),
], ids=["zone-long", "zone-nul", "label-long", "too-many-labels"])
async def test_a_token_cannot_grant_what_a_node_can_never_publish(tmp_path: Path, body: dict[str, object],
                                                                   field: str) -> None:
    async with rest(pki=tmp_path, start=False) as r:
        resp = await r.client.post("/v1/tokens", json=body, headers=AUTH)
        assert resp.status == 400, await resp.text()
        assert (await resp.json())["error"]["field"] == field


async def test_a_token_needs_a_body_and_takes_the_defaults_from_an_empty_one(tmp_path: Path) -> None:
    async with rest(pki=tmp_path, start=False) as r:
        assert (await r.client.post("/v1/tokens", headers=AUTH)).status == 400
        assert (await r.client.post("/v1/tokens", json={}, headers=AUTH)).status == 201


async def test_a_405_says_which_methods_are_allowed() -> None:
    async with rest(start=False) as r:
        resp = await r.client.put("/v1/events", headers=AUTH)
        assert resp.status == 405
        assert set(resp.headers["Allow"].replace(" ", "").split(",")) >= {"GET"}


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
async def test_the_bearer_scheme_is_case_insensitive(scheme: str) -> None:
    async with rest(start=False) as r:
        resp = await r.client.get("/v1/nodes", headers={"Authorization": f"{scheme} {ADMIN}"})
        assert resp.status == 200, await resp.text()
        assert (await r.client.get("/v1/nodes", headers={"Authorization": f"Basic {ADMIN}"})).status == 401

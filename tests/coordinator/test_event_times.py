"""Event messages and refusals that name a time give it as people read it (ISO 8601, UTC), not as unix seconds."""

from __future__ import annotations

import re
from pathlib import Path

from coordinator.enroll import utc_time
from tests.coordinator.rest_harness import AUTH, rest

ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
EPOCH = re.compile(r"\b\d{9,}\b")


def test_utc_time() -> None:
    assert utc_time(1_796_642_844) == "2026-12-07T11:27:24Z"
    assert utc_time(0.9) == "1970-01-01T00:00:00Z"


async def test_the_token_created_event_says_when_it_expires_in_iso(tmp_path: Path) -> None:
    async with rest(pki=tmp_path, start=False) as r:
        resp = await r.client.post("/v1/tokens", json={"ttlSeconds": 600}, headers=AUTH)
        assert resp.status == 201, await resp.text()
        expires = (await resp.json())["expiresAt"]
        events = (await (await r.client.get("/v1/events", headers=AUTH)).json())["items"]
        created = next(e for e in events if e["reason"] == "TokenCreated")
        assert re.search(f"expires {ISO}", created["message"]), created["message"]
        assert utc_time(expires) in created["message"]
        assert not EPOCH.search(created["message"]), created["message"]

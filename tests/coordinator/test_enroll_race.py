"""Two devices enrolling with one token at the same moment (issue 20's lab saw it under etcd: three agents, one
token of three uses, the third got 503 "state store unavailable ... expected revision 6, found 8"). The use count is a
compare-and-swap; losing that race to another use must mean reading the count again, not an error."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from coordinator.enroll import Refuse
from coordinator.identity import IdentityConfig, IdentityService, token_key
from coordinator.pki import make_csr, new_key
from coordinator.store import Entry, SqliteStore


class RacingStore(SqliteStore):
    """Between one enrolment's read of the token and its write, another enrolment with the same token completes."""

    def __init__(self) -> None:
        super().__init__(":memory:")
        self.rival: asyncio.Future[None] | None = None
        self.identity: IdentityService | None = None
        self.token = ""

    async def get(self, key: str) -> Entry | None:
        entry = await super().get(key)
        if key.startswith("/tokens/") and self.rival is None and self.identity is not None:
            self.rival = asyncio.get_running_loop().create_future()
            won = await self.identity.enroll(self.token, "rival", make_csr(new_key(), "rival"))
            assert not isinstance(won, Refuse), won
            self.rival.set_result(None)
        return entry


async def _race(tmp_path: Path, max_uses: int) -> tuple[object, list[str], int]:
    store = RacingStore()
    identity = IdentityService(tmp_path / "pki", store, IdentityConfig(), clock=lambda: 1_000_000.0)
    token, record = await identity.create_token(ttl_s=3600, max_uses=max_uses, labels={}, zone="")
    store.identity, store.token = identity, token
    result = await identity.enroll(token, "device", make_csr(new_key(), "device"))
    entry = await SqliteStore.get(store, token_key(record.token_id))
    assert entry is not None
    doc = json.loads(entry.value)
    return result, list(doc["nodes"]), int(doc["uses"])


def test_a_device_that_loses_the_race_to_another_use_of_a_many_use_token_enrols(tmp_path: Path) -> None:
    result, nodes, uses = asyncio.run(_race(tmp_path, max_uses=3))
    assert not isinstance(result, Refuse), result
    assert sorted(nodes) == ["device", "rival"] and uses == 2


def test_a_one_use_token_still_enrols_only_one_of_two_racing_devices(tmp_path: Path) -> None:
    result, nodes, uses = asyncio.run(_race(tmp_path, max_uses=1))
    assert isinstance(result, Refuse) and result.status == 401, result
    assert "already used" in result.reason
    assert nodes == ["rival"] and uses == 1

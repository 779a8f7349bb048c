"""The agent's storage (edge_agent.storage) over a real chunk store on disk, with a fake clock: the scrub finds a
flipped byte and the status lists the chunk until a good copy is stored again; a peer's read of a rotten copy is
listed too; the scrub resumes where it stopped after a restart and waits out its period between passes; quota 0
opens nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from edge_agent.chunks import ChunkCorrupt
from edge_agent.config import StorageSettings
from edge_agent.storage import NodeStorage, load_state, progress
from edge_agent.storage_plan import MIB, ScrubSettings


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def chunk(n: int, size: int = 4096) -> tuple[str, bytes]:
    data = (hashlib.sha256(str(n).encode()).digest() * (size // 32 + 1))[:size]
    return hashlib.sha256(data).hexdigest(), data


def settings(tmp: Path, *, quota: int | None = 64 * MIB, profile_quota: int = 0,
             scrub: ScrubSettings | None = None) -> StorageSettings:
    return StorageSettings(root=tmp / "chunks", state_file=tmp / "storage-state.json", quota_flag=quota,
                           profile_quota=profile_quota, profile="vps",
                           scrub=scrub or ScrubSettings(period_s=3600.0, rate_bytes_s=MIB, slice_chunks=2,
                                                        slice_bytes=MIB, min_pause_s=0.5))


async def opened(tmp: Path, clock: Clock, **kw: object) -> NodeStorage:
    storage = await NodeStorage.open(settings(tmp, **kw), clock=clock)  # type: ignore[arg-type]
    assert storage is not None
    return storage


def flip(storage: NodeStorage, chunk_id: str) -> None:
    path = storage.store.path(chunk_id)
    data = bytearray(path.read_bytes())
    data[7] ^= 0x01
    path.write_bytes(bytes(data))


async def test_quota_zero_opens_nothing(tmp_path: Path) -> None:
    assert await NodeStorage.open(settings(tmp_path, quota=0, profile_quota=10 * MIB), clock=Clock()) is None
    assert await NodeStorage.open(settings(tmp_path, quota=None, profile_quota=0), clock=Clock()) is None
    assert not (tmp_path / "chunks").exists()


async def test_the_profile_quota_is_capped_by_the_free_disk(tmp_path: Path) -> None:
    storage = await opened(tmp_path, Clock(), quota=None, profile_quota=2**61)
    assert 0 < storage.facts().quota_bytes < 2**61
    assert "capped" in storage.quota.why


async def test_the_scrub_finds_a_flipped_byte_and_the_status_lists_it_until_stored_again(tmp_path: Path) -> None:
    clock = Clock()
    storage = await opened(tmp_path, clock)
    chunks = dict(chunk(i) for i in range(5))
    for cid, data in chunks.items():
        assert storage.store.put(cid, data) is None
    bad = sorted(chunks)[3]
    flip(storage, bad)
    assert storage.facts().chunks == 5 and storage.facts().used_bytes == 5 * 4096

    while storage.scrub.passes == 0:  # slices of 2 chunks: three slices, each when the clock says it is due
        assert storage.scrub.next_at <= clock.now
        await storage.scrub_once()
        clock.now = storage.scrub.next_at
    assert storage.scrub.checked == 5 and storage.scrub.corrupt_found == 1
    facts = storage.facts()
    assert facts.corrupt == (bad,) and facts.chunks == 4 and facts.used_bytes == 4 * 4096
    assert load_state(tmp_path / "storage-state.json")[2].ids == (bad,)  # kept on disk at once
    assert storage.sample().scrub_passes == 1 and storage.sample().corrupt_listed == 1

    # the next pass waits out the hour from the last pass's start
    assert storage.scrub.next_at == pytest.approx(1_000.0 + 3600.0)

    # a repair stores a good copy here again: no longer reported
    assert storage.server.store.put(bad, chunks[bad]) is None
    assert storage.facts().corrupt == ()


async def test_a_peers_read_of_a_rotten_copy_is_listed(tmp_path: Path) -> None:
    storage = await opened(tmp_path, Clock())
    cid, data = chunk(1)
    storage.store.put(cid, data)
    flip(storage, cid)
    with pytest.raises(ChunkCorrupt):
        storage.server.store.get(cid)  # what the chunk server calls for a peer's get
    assert storage.facts().corrupt == (cid,)


async def test_the_scrub_resumes_after_a_restart_and_keeps_the_corrupt_list(tmp_path: Path) -> None:
    clock = Clock()
    storage = await opened(tmp_path, clock)
    chunks = dict(chunk(i) for i in range(6))
    for cid, data in chunks.items():
        storage.store.put(cid, data)
    ordered = sorted(chunks)
    flip(storage, ordered[0])
    await storage.scrub_once()  # checks ordered[0:2]
    assert storage.scrub.position == ordered[1] and storage.facts().corrupt == (ordered[0],)
    storage.save()  # as the loop does at stop
    assert 0 < progress(storage.scrub.position) < 1

    clock.now += 10
    again = await opened(tmp_path, clock)
    assert again.scrub.position == ordered[1] and again.scrub.next_at == clock.now
    assert again.facts().corrupt == (ordered[0],)
    await again.scrub_once()
    assert again.scrub.checked == 2 and again.scrub.position == ordered[3]  # went on, not from the start


@pytest.mark.parametrize("content", [b"{not json", b'{"position": "../../etc", "corrupt": []}', b"[1, 2]",
                                     b'{"position": "", "pass_started": "x"}'])
def test_an_unreadable_state_file_starts_afresh(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "state.json").write_bytes(content)
    position, started, ledger = load_state(tmp_path / "state.json")
    assert (position, started, ledger.ids) == ("", None, ())

"""The node's share of the object store as the agent runs it (adapter, issue 20): the chunk store on disk, served to
peers as overlay service "chunks", scrubbed in the background, and summed up for the node's status.

- **Open** (`NodeStorage.open`): the quota (`storage_plan.resolve_quota`: `--storage-quota`, else the profile's
  capped at half the free disk); with a quota of 0 nothing is opened and the node reports quota 0 (it offers no
  storage). Otherwise `DiskChunkStore.open` rescans the directory in a worker thread (a big store takes a while).
  One NodeStorage lives as long as the agent: its store's accounting is in memory, so the overlay registers the
  same `handler` every time it starts (`AgentOverlay.serve`).
- **Serve**: the chunk server (dataplane.objects.peer) over a thin wrapper of the store that notes what peers' reads
  find corrupt and what puts store again, for the corrupt list.
- **Scrub** (`run`): slices of `DiskChunkStore.scrub` in a worker thread, paced by `storage_plan.after_slice`
  (an average read rate, at most one full pass per period). Corrupt copies (already deleted by the store) go into the
  corrupt ledger reported in the status.
- **Kept on disk** (`state_file`, JSON, written atomically): the scrub's position and pass start (a restart
  resumes the pass) and the corrupt ledger (a restart before the coordinator heard of a bad copy loses nothing).
  Written at once when the ledger changes, else at most every `SAVE_EVERY_S` while the scrub moves, and at stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from dataplane.objects.chunking import is_chunk_id
from dataplane.objects.peer import ChunkServer, Limits, is_gateway
from edge_agent.atomic import atomic_write
from edge_agent.chunks import ChunkCorrupt, DiskChunkStore
from edge_agent.config import StorageSettings
from edge_agent.metrics import StorageSample
from edge_agent.storage_plan import (
    CorruptLedger,
    Quota,
    ScrubState,
    StorageFacts,
    after_slice,
    resolve_quota,
    resumed,
)

log = logging.getLogger(__name__)

SAVE_EVERY_S = 60.0
RETRY_AFTER_FAILURE_S = 60.0
MAX_STATE_BYTES = 256 * 1024


class _Watched:
    """The store as the chunk server sees it (dataplane.objects.peer.ChunkStore), telling the NodeStorage what
    peers' reads found corrupt and which chunks were stored again. Called from worker threads."""

    def __init__(self, owner: NodeStorage) -> None:
        self.owner = owner

    def put(self, chunk_id: str, data: bytes) -> str | None:
        refusal = self.owner.store.put(chunk_id, data)
        if refusal is None:
            self.owner.stored(chunk_id)
        return refusal

    def get(self, chunk_id: str) -> bytes | None:
        try:
            return self.owner.store.get(chunk_id)
        except ChunkCorrupt:
            self.owner.found_corrupt([chunk_id])
            raise

    def delete(self, chunk_id: str) -> bool:
        return self.owner.store.delete(chunk_id)

    def has(self, chunk_ids: Sequence[str]) -> frozenset[str]:
        return self.owner.store.has(chunk_ids)


class NodeStorage:
    def __init__(self, store: DiskChunkStore, settings: StorageSettings, *, quota: Quota,
                 clock: Callable[[], float], limits: Limits | None = None) -> None:
        self.store = store
        self.settings = settings
        self.quota = quota
        self.clock = clock
        self._lock = threading.Lock()  # the ledger: changed from the chunk server's worker threads
        position, pass_started, self._ledger = load_state(settings.state_file)
        self.scrub = resumed(position, pass_started, now=clock(), settings=settings.scrub)
        # only the storage gateways: a device never reads, fills or deletes another device's chunks
        self.server = ChunkServer(_Watched(self), limits or Limits(), allowed=is_gateway)
        self.handler = self.server.handle
        self._saved_at = clock()
        self._dirty = False

    @classmethod
    async def open(cls, settings: StorageSettings, *, clock: Callable[[], float],
                   limits: Limits | None = None) -> NodeStorage | None:
        """The node's storage, or None when its quota is 0 (it offers none); raises OSError/StateError when the
        directory cannot be used."""
        if not settings.wanted:
            quota = resolve_quota(settings.quota_flag, settings.profile_quota, profile=settings.profile,
                                  free_bytes=0, used_bytes=0)
            log.info("storage: none offered (%s)", quota.why)
            return None
        wanted = settings.quota_flag if settings.quota_flag is not None else settings.profile_quota
        store = await asyncio.to_thread(DiskChunkStore.open, settings.root, quota=wanted)
        free = (await asyncio.to_thread(shutil.disk_usage, settings.root)).free
        quota = resolve_quota(settings.quota_flag, settings.profile_quota, profile=settings.profile,
                              free_bytes=free, used_bytes=store.used_bytes)
        store.quota = quota.bytes
        log.info("storage: %d bytes offered in %s (%s); %d chunks, %d bytes held", quota.bytes, settings.root,
                 quota.why, store.chunk_count, store.used_bytes)
        if store.used_bytes > quota.bytes:
            log.warning("storage: the chunks held (%d bytes) exceed the quota (%d): no new chunk is taken until "
                        "repair moves some away", store.used_bytes, quota.bytes)
        return cls(store, settings, quota=quota, clock=clock, limits=limits)

    # ---- what the status and the metrics say -------------------------------------------------------------

    def facts(self) -> StorageFacts:
        with self._lock:
            self._ledger = self._ledger.expire(self.clock())
            corrupt = self._ledger.ids
        return StorageFacts(quota_bytes=self.store.quota, used_bytes=max(0, self.store.used_bytes),
                            chunks=max(0, self.store.chunk_count), corrupt=corrupt)

    def sample(self) -> StorageSample:
        facts, scrub = self.facts(), self.scrub
        return StorageSample(quota_bytes=facts.quota_bytes, used_bytes=facts.used_bytes, chunks=facts.chunks,
                             corrupt_listed=len(facts.corrupt), scrub_passes=scrub.passes,
                             scrub_checked=scrub.checked, scrub_bytes=scrub.bytes_read,
                             scrub_corrupt=scrub.corrupt_found, scrub_progress=progress(scrub.position),
                             buffered_bytes=self.server.buffered.held, busy_refused=self.server.buffered.refused)

    # ---- the corrupt ledger (any thread) ----------------------------------------------------------------

    def found_corrupt(self, chunk_ids: Sequence[str]) -> None:
        with self._lock:
            self._ledger = self._ledger.add(list(chunk_ids), self.clock())
            self._dirty = True

    def stored(self, chunk_id: str) -> None:
        with self._lock:
            before = self._ledger
            self._ledger = before.stored(chunk_id)
            self._dirty = self._dirty or self._ledger is not before

    # ---- the scrub -----------------------------------------------------------------------------------------

    async def run(self) -> None:
        """The scrub loop: runs until cancelled (then saves its state)."""
        try:
            while True:
                await self._flush_if_dirty()
                wait = self.scrub.next_at - self.clock()
                if wait > 0:
                    await asyncio.sleep(min(wait, 5.0))  # short naps: the ledger is saved promptly meanwhile
                    continue
                await self.scrub_once()
        finally:
            with contextlib.suppress(OSError):
                self.save()

    async def scrub_once(self) -> ScrubState:
        """One slice now (in a worker thread); a failing disk pauses the scrub for RETRY_AFTER_FAILURE_S."""
        cfg, started = self.settings.scrub, self.clock()
        try:
            step = await asyncio.to_thread(self.store.scrub, self.scrub.position, max_chunks=cfg.slice_chunks,
                                           max_bytes=cfg.slice_bytes)
        except Exception as exc:  # the store's I/O failure must not end the scrub for good
            log.error("storage scrub: slice after %r failed: %s; retrying in %.0fs", self.scrub.position[:12], exc,
                      RETRY_AFTER_FAILURE_S)
            self.scrub = replace(self.scrub, next_at=started + RETRY_AFTER_FAILURE_S)
            return self.scrub
        if step.corrupt:
            log.warning("storage scrub: %d corrupt chunks removed: %s", len(step.corrupt),
                        ", ".join(c[:12] for c in step.corrupt))
            self.found_corrupt(step.corrupt)
        self.scrub = after_slice(self.scrub, cfg, now=self.clock(), started=started, checked=step.checked,
                                 bytes_read=step.bytes_read, corrupt=len(step.corrupt), position=step.position,
                                 wrapped=step.wrapped)
        if step.wrapped:
            log.info("storage scrub: pass %d done (%d chunks checked in all, %d corrupt found in all)",
                     self.scrub.passes, self.scrub.checked, self.scrub.corrupt_found)
        if step.wrapped or self.clock() - self._saved_at >= SAVE_EVERY_S:
            self._save_quietly()
        await self._flush_if_dirty()
        return self.scrub

    async def _flush_if_dirty(self) -> None:
        if self._dirty:  # the corrupt list changed: kept at once (the status takes it at the agent's next tick)
            self._dirty = False
            await asyncio.to_thread(self._save_quietly)

    def _save_quietly(self) -> None:
        try:
            self.save()
        except OSError as exc:
            log.warning("storage: state not saved to %s: %s", self.settings.state_file, exc)

    def save(self) -> None:
        with self._lock:
            found = [list(entry) for entry in self._ledger.found]
        doc = {"position": self.scrub.position, "pass_started": self.scrub.pass_started, "corrupt": found}
        atomic_write(self.settings.state_file, json.dumps(doc).encode())
        self._saved_at = self.clock()


def progress(position: str) -> float:
    """How far a pass is at `position` (0-1): chunk ids are SHA-256 digests, uniform over the id space."""
    digits = position[:8]
    return int(digits, 16) / 16 ** len(digits) if digits else 0.0


def load_state(path: Path) -> tuple[str, float | None, CorruptLedger]:
    """(scrub position, pass start, corrupt ledger) from the state file; a missing or unreadable one starts
    afresh (logged): it is bookkeeping, the chunks themselves are what the rescan counts."""
    try:
        raw = path.read_bytes()[:MAX_STATE_BYTES]
        doc = json.loads(raw)
        position = doc.get("position", "")
        started = doc.get("pass_started")
        found = doc.get("corrupt", [])
        if not (position == "" or is_chunk_id(position)) or \
                not (started is None or isinstance(started, int | float)) or not isinstance(found, list):
            raise ValueError("unexpected shape")
        entries = [(c, float(t)) for c, t in found if is_chunk_id(c) and isinstance(t, int | float)]
    except FileNotFoundError:
        return "", None, CorruptLedger()
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        log.warning("storage: %s unreadable (%s): the scrub starts a new pass", path, exc)
        return "", None, CorruptLedger()
    ledger = CorruptLedger()
    for chunk_id, at in entries:
        ledger = ledger.add([chunk_id], at)
    return position, float(started) if started is not None else None, ledger

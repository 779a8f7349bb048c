"""The agent's chunk store on disk (adapter: files), serving the object store's chunks to peers
(dataplane.objects.peer.ChunkStore).

Layout: `ROOT/ab/<sha256 hex>` where `ab` is the id's first two characters (256 directories, so none grows past a
few thousand entries). A chunk's name is the SHA-256 of its bytes, so every read can be checked:

- **put** is idempotent (a good copy already here is kept; a corrupt one is replaced) and refuses (a value: the
  reason) a bad id, bytes that do not hash to the id, a chunk over `max_chunk`, and
  one that would take the store past its quota (counting writes in progress); else writes a temp file
  (`.<id>.<random>.tmp`, same directory), fsyncs it, renames it into place and fsyncs the directory. A crash leaves
  either no chunk or the whole chunk, never a torn one; the temp files a crash leaves are removed by the rescan.
- **get** re-hashes what it read; a copy that fails is deleted and `ChunkCorrupt` raised (the node no longer claims
  it, and the caller fetches it elsewhere).
- **scrub** re-hashes chunks in id order in bounded slices (at most `max_chunks` chunks or `max_bytes` bytes a
  step), resuming after the last id it checked; corrupt copies found are deleted and returned. A copy that cannot
  be read (EIO on a bad sector) counts as corrupt, in `get` too, so the scrub moves past it and the reader looks
  elsewhere.
- **used bytes** are tracked on every put/delete and rebuilt by the rescan `open` runs.

Thread-safe (the chunk server calls it from worker threads): a lock guards the accounting (and the
rename that makes a chunk visible), never a chunk's bytes being written or read.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import secrets
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from dataplane.objects.chunking import is_chunk_id
from dataplane.objects.peer import MAX_CHUNK, CopyCorrupt
from edge_agent.errors import StateError

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".tmp"


class ChunkCorrupt(StateError, CopyCorrupt):
    """A stored copy did not hash to its id; it has been deleted."""

    def __init__(self, chunk_id: str) -> None:
        self.chunk_id = chunk_id
        super().__init__(f"stored chunk {chunk_id[:12]} failed its SHA-256 check; the copy was removed")


@dataclass(frozen=True, slots=True)
class Rescan:
    chunks: int
    used_bytes: int
    temps_removed: int


@dataclass(frozen=True, slots=True)
class ScrubStep:
    """One slice of a scrub: `position` is where the next step resumes ("" once the pass wrapped around)."""

    checked: int
    bytes_read: int
    corrupt: tuple[str, ...]
    position: str
    wrapped: bool


def admit(size: int, *, used: int, pending: int, quota: int) -> str | None:
    """Whether a chunk of `size` bytes fits the quota, counting writes in progress: None, or why not."""
    if used + pending + size > quota:
        return (f"quota full: {size} bytes would take the store to {used + pending + size} of its {quota} "
                f"({used} used, {pending} being written)")
    return None


def put_problem(chunk_id: str, data: bytes, max_chunk: int) -> str | None:
    """What is wrong with a chunk offered for storing (pure), or None."""
    if not is_chunk_id(chunk_id):
        return "chunk id: must be 64 lowercase hex characters (a SHA-256)"
    if len(data) > max_chunk:
        return f"chunk size: {len(data)} bytes exceeds the {max_chunk}-byte cap"
    if hashlib.sha256(data).hexdigest() != chunk_id:
        return "chunk data: the bytes do not hash to the chunk id"
    return None


class DiskChunkStore:
    """Chunks under `root` with `quota` bytes. Build it with `open` (which rescans)."""

    def __init__(self, root: Path, *, quota: int, max_chunk: int = MAX_CHUNK, sync: bool = True) -> None:
        if quota < 0:
            raise ValueError(f"quota must be >= 0 bytes, got {quota}")
        self.root = root
        self.quota = quota
        self.max_chunk = max_chunk
        self.sync = sync
        self._lock = threading.Lock()
        self._used = 0
        self._count = 0
        self._pending = 0

    @classmethod
    def open(cls, root: Path, *, quota: int, max_chunk: int = MAX_CHUNK, sync: bool = True) -> DiskChunkStore:
        store = cls(root, quota=quota, max_chunk=max_chunk, sync=sync)
        found = store.rescan()
        log.info("chunk store %s: %d chunks, %d of %d bytes; %d stale temp files removed", root, found.chunks,
                 found.used_bytes, quota, found.temps_removed)
        return store

    @property
    def used_bytes(self) -> int:
        return self._used

    @property
    def chunk_count(self) -> int:
        return self._count

    def path(self, chunk_id: str) -> Path:
        return self.root / chunk_id[:2] / chunk_id

    # ---- startup -------------------------------------------------------------------------------------------

    def rescan(self) -> Rescan:
        """Count what is on disk and remove the temp files a crash left (nothing else is touched)."""
        self.root.mkdir(parents=True, exist_ok=True)
        used = count = temps = 0
        for directory in sorted(self.root.iterdir()):
            if not directory.is_dir() or len(directory.name) != 2:
                continue
            for entry in os.scandir(directory):
                if entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                    temps += 1
                elif is_chunk_id(entry.name) and entry.name.startswith(directory.name) and entry.is_file():
                    used += entry.stat().st_size
                    count += 1
        with self._lock:
            self._used, self._count = used, count
        return Rescan(count, used, temps)

    # ---- the ChunkStore port -------------------------------------------------------------------------------

    def put(self, chunk_id: str, data: bytes) -> str | None:
        """Store the chunk (idempotent): None once it is durably on disk, else the refusal's reason."""
        problem = put_problem(chunk_id, data, self.max_chunk)
        if problem is not None:
            return problem
        target = self.path(chunk_id)
        if self._held_intact(chunk_id):
            return None
        with self._lock:
            if target.exists():  # a concurrent put of the same chunk got there first
                return None
            refusal = admit(len(data), used=self._used, pending=self._pending, quota=self.quota)
            if refusal is not None:
                return refusal
            self._pending += len(data)
        released = [False]  # the reservation goes over to `_used` in the same critical section (never counted twice)
        try:
            return self._write(target, data, released)
        finally:
            if not released[0]:
                with self._lock:
                    self._pending -= len(data)

    def _write(self, target: Path, data: bytes, released: list[bool]) -> str | None:
        target.parent.mkdir(exist_ok=True)
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if self.sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            with self._lock:
                self._pending -= len(data)
                released[0] = True
                if target.exists():  # a concurrent put of the same chunk won
                    tmp.unlink()
                    return None
                os.replace(tmp, target)
                self._used += len(data)
                self._count += 1
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if exc.errno == errno.ENOSPC:  # the disk is fuller than the quota allows for
                return "no space left on the device"
            raise StateError(f"writing chunk {target.name[:12]} under {self.root}: {exc}") from exc
        if self.sync:
            self._sync_dir(target.parent)
        return None

    def get(self, chunk_id: str) -> bytes | None:
        """The chunk's bytes, verified; None if not held. Raises ChunkCorrupt (the bad copy removed)."""
        if not is_chunk_id(chunk_id):
            return None
        try:
            data, seen = self._read(chunk_id)
        except FileNotFoundError:
            return None
        except OSError as exc:  # EIO: a bad copy like one that fails its hash (the caller reads another)
            log.warning("chunk store: %s unreadable (%s); removed", chunk_id, exc)
            self._drop_unreadable(chunk_id)
            raise ChunkCorrupt(chunk_id) from exc
        if hashlib.sha256(data).hexdigest() != chunk_id:
            if not self._drop_if_same(chunk_id, seen):
                return self.get(chunk_id)  # a put replaced the bad copy meanwhile: read the new one
            log.warning("chunk store: %s was corrupt on disk; removed", chunk_id)
            raise ChunkCorrupt(chunk_id)
        return data

    def _read(self, chunk_id: str) -> tuple[bytes, tuple[int, int]]:
        """The file's bytes and its identity (inode, mtime) as read: a copy found bad is removed only if it is still
        that file (a concurrent put may have replaced it with a good one: review 3, L4)."""
        with open(self.path(chunk_id), "rb") as f:
            st = os.fstat(f.fileno())
            return f.read(), (st.st_ino, st.st_mtime_ns)

    def _drop_if_same(self, chunk_id: str, seen: tuple[int, int]) -> bool:
        """Remove the copy if it is still the file read (`seen`); whether it was (else it is gone or replaced)."""
        target = self.path(chunk_id)
        with self._lock:
            try:
                st = target.stat()
                if (st.st_ino, st.st_mtime_ns) != seen:
                    return False
                target.unlink()
            except FileNotFoundError:
                return True  # deleted meanwhile: the bad copy is gone all the same
            except OSError as exc:
                raise StateError(f"deleting chunk {chunk_id[:12]} under {self.root}: {exc}") from exc
            self._used -= st.st_size
            self._count -= 1
        return True

    def _held_intact(self, chunk_id: str) -> bool:
        """Whether a good copy is already here. A bad one is removed, so a repair's put replaces it rather than
        being acknowledged over it."""
        try:
            return self.get(chunk_id) is not None
        except ChunkCorrupt:
            return False

    def delete(self, chunk_id: str) -> bool:
        """Remove the chunk; whether there was a copy."""
        if not is_chunk_id(chunk_id):
            return False
        target = self.path(chunk_id)
        with self._lock:
            try:
                size = target.stat().st_size
                target.unlink()
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise StateError(f"deleting chunk {chunk_id[:12]} under {self.root}: {exc}") from exc
            self._used -= size
            self._count -= 1
        return True

    def _drop_unreadable(self, chunk_id: str) -> None:
        """Remove a copy that cannot be read; one that cannot even be unlinked stays (logged), counted as held."""
        try:
            self.delete(chunk_id)
        except StateError as exc:
            log.error("chunk store: %s", exc)

    def has(self, chunk_ids: Sequence[str]) -> frozenset[str]:
        return frozenset(c for c in chunk_ids if is_chunk_id(c) and self.path(c).is_file())

    # ---- scrub ---------------------------------------------------------------------------------------------

    def scrub(self, position: str = "", *, max_chunks: int = 64, max_bytes: int = 64 * 1024 * 1024) -> ScrubStep:
        """Re-hash the chunks after `position` (id order) until `max_chunks` chunks or `max_bytes` bytes were read;
        delete the corrupt ones. The step's `position` is where the next one starts."""
        checked = read = 0
        corrupt: list[str] = []
        for chunk_id in self._ids_after(position):
            try:
                data, seen = self._read(chunk_id)
            except FileNotFoundError:
                continue  # deleted meanwhile
            except OSError as exc:  # EIO on a bad sector: the rot the scrub is for; the copy is as good as gone
                log.warning("chunk store scrub: %s unreadable (%s); removed", chunk_id, exc)
                self._drop_unreadable(chunk_id)
                corrupt.append(chunk_id)
                checked += 1
                continue
            checked += 1
            read += len(data)
            if hashlib.sha256(data).hexdigest() != chunk_id and self._drop_if_same(chunk_id, seen):
                log.warning("chunk store scrub: %s is corrupt on disk; removed", chunk_id)
                corrupt.append(chunk_id)
            if checked >= max_chunks or read >= max_bytes:
                return ScrubStep(checked, read, tuple(corrupt), chunk_id, wrapped=False)
        return ScrubStep(checked, read, tuple(corrupt), "", wrapped=True)

    def _ids_after(self, position: str) -> Iterator[str]:
        prefixes = sorted(d.name for d in self.root.iterdir() if d.is_dir() and len(d.name) == 2)
        for prefix in prefixes:
            if prefix < position[:2]:
                continue
            names = sorted(n for n in os.listdir(self.root / prefix) if is_chunk_id(n) and n.startswith(prefix))
            yield from (n for n in names if n > position)

    @staticmethod
    def _sync_dir(directory: Path) -> None:
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

"""The agent's storage decisions (pure core, issue 20): the quota it offers, when the scrub runs its next slice,
which corrupt chunks it still reports, and when its storage numbers moved enough to republish the status.

- **Quota** (`resolve_quota`): `--storage-quota` is the owner's word and taken as given (0: this node offers no
  storage). Without it, the profile's `[storage] quota`, but never more than half of what the disk has free (plus
  what the chunks already take): a default must not fill the owner's disk.
- **Scrub** (`ScrubClock`): the scrub re-hashes the store in slices (`ScrubSettings.slice_chunks`/`slice_bytes`,
  each in a worker thread), paced so it reads at most `rate_bytes_s` on average, and starts a new full pass at most
  once per `period_s` (measured from the previous pass's start). The position is where the next slice resumes;
  the adapter keeps it on disk so a restart resumes the pass instead of starting over.
- **Corrupt chunks** (`CorruptLedger`): every chunk found corrupt here (by the scrub or by a peer's read) is reported
  in the node's retained status until it is stored here again (a repair put a good copy back), it is older than
  `retention_s`, or the list is full (the oldest go first). The coordinator reads the list from the latest status,
  so a status it missed loses nothing.
- **Republishing** (`storage_moved`): a new status goes out when the quota or the corrupt list changed, when the
  store became empty or non-empty, or when the used bytes moved by at least 1 % of the quota (at least 1 MiB) since
  the last status sent: placement needs free space to within a percent, not to the byte.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

MIB = 1024 * 1024
MAX_CORRUPT = 256  # the wire's bound (broker.wire.messages.MAX_CORRUPT_REPORTED)
MIN_USED_STEP = MIB
CORRUPT_PACE_BYTES = MIB  # the scrub's pacing counts a corrupt copy as at least this (a whole chunk)


@dataclass(frozen=True, slots=True)
class Quota:
    bytes: int
    why: str


def resolve_quota(flag: int | None, profile_quota: int, *, profile: str, free_bytes: int,
                  used_bytes: int) -> Quota:
    """The quota this node offers: the flag's, else the profile's capped at half the disk's free space."""
    if flag is not None:
        return Quota(flag, "--storage-quota" if flag else "--storage-quota 0: this node offers no storage")
    if profile_quota <= 0:
        return Quota(0, f"profile {profile} offers no storage (--storage-quota SIZE offers some)")
    cap = max(0, (free_bytes + used_bytes) // 2)
    if profile_quota > cap:
        return Quota(cap, f"profile {profile}'s {profile_quota} bytes capped at half the disk's free space")
    return Quota(profile_quota, f"profile {profile}")


# ---- the scrub's pace --------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ScrubSettings:
    period_s: float = 3600.0  # a full pass starts at most this often
    rate_bytes_s: float = 16 * MIB  # average read rate while a pass runs
    slice_chunks: int = 32  # per slice (one worker-thread call)
    slice_bytes: int = 32 * MIB
    min_pause_s: float = 0.05  # between slices even when the rate allows more: the loop and the disk breathe

    def problem(self) -> str | None:
        if not self.period_s > 0 or not self.rate_bytes_s > 0 or self.min_pause_s < 0:
            return "scrub: period_s and rate_bytes_s must be positive, min_pause_s not negative"
        if self.slice_chunks < 1 or self.slice_bytes < 1:
            return "scrub: slice_chunks and slice_bytes must be at least 1"
        return None


@dataclass(frozen=True, slots=True)
class ScrubState:
    position: str = ""  # where the next slice starts ("": a new pass)
    pass_started: float | None = None  # when the current (or last) pass started
    passes: int = 0  # full passes finished
    checked: int = 0  # chunks checked, all passes
    bytes_read: int = 0
    corrupt_found: int = 0
    next_at: float = 0.0  # the next slice is due then


def after_slice(state: ScrubState, settings: ScrubSettings, *, now: float, started: float, checked: int,
                bytes_read: int, corrupt: int, position: str, wrapped: bool) -> ScrubState:
    """The state after a slice that began at `started` (a pass begins with the first slice of a new position)."""
    pass_started = started if state.position == "" or state.pass_started is None else state.pass_started
    # a corrupt copy counts at least a whole chunk: an unreadable one (EIO) reads no bytes, and on a failing disk
    # unpaced slices would find corrupt copies faster than statuses can carry them (the ledger keeps the newest 256)
    paced_bytes = max(bytes_read, corrupt * CORRUPT_PACE_BYTES)
    paced = started + max(settings.min_pause_s, paced_bytes / settings.rate_bytes_s)
    if wrapped:
        next_at = max(now + settings.min_pause_s, paced, pass_started + settings.period_s)
    else:
        next_at = max(now + settings.min_pause_s, paced)
    return ScrubState(position="" if wrapped else position, pass_started=pass_started,
                      passes=state.passes + (1 if wrapped else 0), checked=state.checked + checked,
                      bytes_read=state.bytes_read + bytes_read, corrupt_found=state.corrupt_found + corrupt,
                      next_at=next_at)


def resumed(position: str, pass_started: float | None, *, now: float, settings: ScrubSettings) -> ScrubState:
    """The state at start-up from what was kept on disk: mid-pass, the pass goes on now; between passes, the next
    starts a period after the last one started (at once if that is past or the clock went back)."""
    if position or pass_started is None or pass_started > now:
        return ScrubState(position=position, pass_started=pass_started if position else None, next_at=now)
    return ScrubState(pass_started=pass_started, next_at=max(now, pass_started + settings.period_s))


# ---- corrupt chunks reported ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CorruptLedger:
    """Chunk id -> when it was found corrupt here, oldest first; at most `limit` entries."""

    found: tuple[tuple[str, float], ...] = ()
    limit: int = MAX_CORRUPT
    retention_s: float = 7 * 86400.0

    def add(self, chunk_ids: tuple[str, ...] | list[str], now: float) -> CorruptLedger:
        if not chunk_ids:
            return self
        fresh = set(chunk_ids)
        kept = [(c, t) for c, t in self.found if c not in fresh]
        kept += [(c, now) for c in dict.fromkeys(chunk_ids)]
        return replace(self, found=tuple(kept[-self.limit:]))

    def stored(self, chunk_id: str) -> CorruptLedger:
        """A good copy is here again: no longer reported."""
        if all(c != chunk_id for c, _ in self.found):
            return self
        return replace(self, found=tuple((c, t) for c, t in self.found if c != chunk_id))

    def expire(self, now: float) -> CorruptLedger:
        kept = tuple((c, t) for c, t in self.found if now - t < self.retention_s)
        return self if kept == self.found else replace(self, found=kept)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.found)


# ---- what the status says ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StorageFacts:
    quota_bytes: int
    used_bytes: int
    chunks: int
    corrupt: tuple[str, ...] = ()


def used_step(quota_bytes: int) -> int:
    return max(MIN_USED_STEP, quota_bytes // 100)


def storage_moved(sent: StorageFacts | None, now: StorageFacts | None) -> bool:
    """Whether the status should go out again for the storage facts alone."""
    if sent is None or now is None:
        return sent != now
    if sent.quota_bytes != now.quota_bytes or sent.corrupt != now.corrupt or (sent.chunks == 0) != (now.chunks == 0):
        return True
    return abs(now.used_bytes - sent.used_bytes) >= used_step(now.quota_bytes)

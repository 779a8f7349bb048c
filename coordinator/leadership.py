"""Leader election among replicated coordinators, on etcd leases (issue 8).

Theory of operation
-------------------
States: FOLLOWER (someone else holds the election key, or nobody is known to), LEADER, STOPPED (after `resign`).

- Campaign: grant a lease (TTL `ttl_s`, 2 s by default), then one etcd txn: if the election key's create_revision
  is 0 (it does not exist), put {"id", "api"} under it, bound to the lease. Winning makes us LEADER with
  **epoch = the key's create_revision**. etcd revisions only grow, and a new key can only be created after the old
  one was deleted (at a later revision), so epochs strictly increase from leader to leader: at most one leader per
  epoch, and agents fence a deposed leader by ignoring lower epochs.
- Leading: keep the lease alive every TTL/3 and check the key is still ours (same create_revision). The lease —
  and with it the key — expires at etcd no earlier than TTL after the etcd member *received* our last successful
  keep-alive, hence no earlier than TTL after we *sent* it. `may_act` therefore allows acting only until
  sent + TTL - margin: `still_leader()` turns False by itself, with no network round trip, when keep-alives stop
  getting through (a frozen process, a partition, a lost quorum), before anyone else can have won.
  Past sent + TTL the lease may have expired: leadership is given up (LeadershipLost) and we campaign again.
- Following: watch the key from the revision of our failed campaign; when it is deleted (lease expired or
  revoked), campaign again. A broken watch (etcd member lost, compaction) also leads back to campaigning, which
  re-reads the key. Failover after a leader is killed: lease expiry (≤ TTL) + etcd's expiry check (≤ 0.5 s) + one
  txn, so about 2.5 s with the defaults.
- Resign: stop and revoke the lease: the key disappears at once and a follower takes over in milliseconds.

The decisions (`may_act`, `lease_may_have_expired`, `keepalive_interval`, the key's value format) are pure functions
over times passed in; `Elector` is the asyncio/etcd adapter that drives them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from coordinator.store.base import OpKind, StoreError

if TYPE_CHECKING:  # the adapter needs an EtcdStore at run time only; importing this module needs no aetcd
    from coordinator.store.etcd import EtcdStore

log = logging.getLogger(__name__)

ELECTION_KEY = "/leader/coordinator"
DEFAULT_TTL_S = 2
RETRY_MIN_S, RETRY_MAX_S = 0.1, 1.0


# ---- the decisions (pure) ---------------------------------------------------------------------------------------

def default_margin(ttl_s: float) -> float:
    """How long before the earliest possible expiry a leader stops acting: a quarter of the TTL (0.5 s for 2 s),
    room for clock-rate differences and for the publish that follows the check."""
    return ttl_s / 4


def keepalive_interval(ttl_s: float) -> float:
    """Three keep-alives per TTL: one lost or slow keep-alive does not stop a leader from acting."""
    return ttl_s / 3


def may_act(*, renewed_at: float | None, ttl_s: float, now: float, margin_s: float) -> bool:
    """Whether a leader may still act at `now`, given when it *sent* its last keep-alive (or grant) that succeeded.

    The lease cannot expire before renewed_at + ttl_s (etcd restarts the TTL when it receives the request, which is
    after it was sent); acting stops `margin_s` earlier.
    """
    return renewed_at is not None and now < renewed_at + ttl_s - margin_s


def lease_may_have_expired(*, renewed_at: float, ttl_s: float, now: float) -> bool:
    """Past this point another candidate may hold the key: leadership must be given up, not just paused."""
    return now >= renewed_at + ttl_s


@dataclass(frozen=True, slots=True)
class LeaderRecord:
    """The election key's value: who leads, and where its REST API is (followers forward writes there)."""

    id: str
    api: str | None = None

    def encode(self) -> bytes:
        return json.dumps({"id": self.id, "api": self.api}, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> LeaderRecord | None:
        """None for anything that is not a record this module wrote (never raises)."""
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(doc, dict) or not isinstance(doc.get("id"), str) or not doc["id"]:
            return None
        api = doc.get("api")
        return cls(doc["id"], api if isinstance(api, str) and api else None)


class ElectionState(StrEnum):
    FOLLOWER = "follower"
    LEADER = "leader"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class LeadershipGained:
    epoch: int


@dataclass(frozen=True, slots=True)
class LeadershipLost:
    epoch: int
    reason: str


@dataclass(frozen=True, slots=True)
class LeaderObserved:
    """A follower learnt who leads (`leader_id` None: nobody right now)."""

    leader_id: str | None
    api: str | None
    epoch: int | None


LeadershipEvent = LeadershipGained | LeadershipLost | LeaderObserved


# ---- the adapter -------------------------------------------------------------------------------------------------

class _Lost(Exception):
    """Internal: leadership ended; the message says why."""


class Elector:
    """Campaigns for `key` on etcd until `resign()`; implements `Leadership` (below).

    `epoch` and `leader_id`/`leader_api` describe the current leadership as this process knows it (its own when
    leading). `on_change` is called (synchronously, in the event loop) with each LeadershipEvent.
    """

    def __init__(self, store: EtcdStore, *, candidate_id: str, api_url: str | None = None, key: str = ELECTION_KEY,
                 ttl_s: int = DEFAULT_TTL_S, margin_s: float | None = None,
                 on_change: Callable[[LeadershipEvent], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_s < 1:
            raise ValueError(f"lease TTL must be at least 1 s (etcd counts in whole seconds), not {ttl_s}")
        self.store, self.candidate_id, self.key = store, candidate_id, key
        self.record = LeaderRecord(candidate_id, api_url)
        self.ttl_s = ttl_s
        self.margin_s = default_margin(ttl_s) if margin_s is None else margin_s
        self.recheck_s = 2.0 * ttl_s
        self.on_change, self._clock = on_change, clock
        self.state = ElectionState.FOLLOWER
        self._epoch: int | None = None
        self._leader: LeaderRecord | None = None
        self._lease: int | None = None
        self._lease_ttl = float(ttl_s)  # what etcd granted (it may raise a small TTL)
        self._renewed_at: float | None = None
        self._task: asyncio.Task[None] | None = None

    # ---- the Leadership protocol ---------------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.state is ElectionState.LEADER and self._may_act()

    @property
    def epoch(self) -> int | None:
        return self._epoch

    @property
    def leader_id(self) -> str | None:
        return self._leader.id if self._leader else None

    @property
    def leader_api(self) -> str | None:
        return self._leader.api if self._leader else None

    async def still_leader(self) -> bool:
        """Local check, no I/O: False as soon as the lease might have expired (see `may_act`)."""
        return self.is_leader

    def _may_act(self) -> bool:
        return may_act(renewed_at=self._renewed_at, ttl_s=self._lease_ttl, now=self._clock(), margin_s=self.margin_s)

    # ---- lifecycle -----------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self.state = ElectionState.FOLLOWER
            self._task = asyncio.create_task(self._run(), name=f"elector-{self.candidate_id}")

    async def resign(self, timeout_s: float = 2.0) -> None:
        """Stop campaigning; if leading, revoke the lease so a follower takes over at once. Leadership ends (for
        `still_leader`) before the lease is revoked, never after."""
        self._give_up("resigned")
        self.state = ElectionState.STOPPED
        task, self._task = self._task, None
        if task is not None:
            task.cancel()  # a campaign in flight revokes its lease on the way out
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._lease is not None:
            await self._revoke_quietly(self._lease, timeout_s)

    # ---- campaigning ---------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = RETRY_MIN_S
        failing = False
        while True:
            try:
                await self._campaign()
                delay, failing = RETRY_MIN_S, False
            except StoreError as exc:
                self._give_up(f"etcd: {exc}")
                # once per outage at WARNING (an etcd without quorum would otherwise log every second)
                log.log(logging.DEBUG if failing else logging.WARNING, "election on %s: %s; retrying every %.1f s "
                        "or less", self.key, exc, RETRY_MAX_S)
                failing = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    async def _campaign(self) -> None:
        sent = self._clock()
        lease, granted = await self.store.grant_lease(self.ttl_s)
        self._lease = lease
        try:
            won, entry, revision = await self.store.create_leased(self.key, self.record.encode(), lease)
        except BaseException:
            await self._revoke_quietly(lease)
            raise
        if won and entry is not None:
            try:
                await self._lead(lease, float(granted), sent, entry.create_revision)
            finally:  # cancelled or lost: stop claiming leadership *before* the key can go
                self._give_up("stopped")
                await self._revoke_quietly(lease)
            return
        await self._revoke_quietly(lease)
        self._observe(LeaderRecord.decode(entry.value) if entry else None, entry.create_revision if entry else None)
        await self._follow(revision + 1)

    async def _revoke_quietly(self, lease: int, timeout_s: float = 1.0) -> None:
        if self._lease == lease:
            self._lease = None
        try:
            await self.store.revoke_lease(lease, timeout_s=timeout_s)
        except StoreError as exc:  # it expires by itself within the TTL
            log.debug("revoking lease %x: %s", lease, exc)

    async def _follow(self, start_revision: int | None) -> None:
        """Until the key is deleted (then return: campaign again); a broken watch raises StoreError.

        Every `recheck_s` (2 TTL) without news the key is read again: a watch held by a frozen or cut-off etcd
        member stays silent until gRPC's keep-alive notices (15 s), which must not delay a failover that long."""
        while True:
            watch = self.store.watch(self.key, start_revision=start_revision)
            try:
                while True:
                    async with asyncio.timeout(self.recheck_s):
                        change = await anext(watch)
                    if change.key != self.key:
                        continue
                    if change.kind is OpKind.DELETE:
                        self._observe(None, None)
                        return
                    self._observe(LeaderRecord.decode(change.value), change.revision)
            except TimeoutError:
                pass
            finally:
                await watch.aclose()
            entry = await self.store.get(self.key)
            if entry is None:
                self._observe(None, None)
                return
            self._observe(LeaderRecord.decode(entry.value), entry.create_revision)
            start_revision = None  # from what this store has seen: the read above at least

    def _observe(self, record: LeaderRecord | None, epoch: int | None) -> None:
        if (record, epoch) != (self._leader, self._epoch):
            self._leader, self._epoch = record, epoch
            self._emit(LeaderObserved(record.id if record else None, record.api if record else None, epoch))

    # ---- leading -------------------------------------------------------------------------------------------------

    async def _lead(self, lease: int, granted_ttl: float, sent: float, epoch: int) -> None:
        self.state, self._epoch, self._leader = ElectionState.LEADER, epoch, self.record
        self._lease_ttl, self._renewed_at = granted_ttl, sent
        log.info("%s leads (epoch %d, lease %x, TTL %g s)", self.candidate_id, epoch, lease, granted_ttl)
        self._emit(LeadershipGained(epoch))
        try:
            await self._keep_leading(lease, epoch)
        except _Lost as lost:
            self._give_up(str(lost))

    async def _keep_leading(self, lease: int, epoch: int) -> None:
        """Keep-alive every TTL/3 and check the key is still ours; raise _Lost when leadership ends."""
        interval = keepalive_interval(self._lease_ttl)
        while True:
            await asyncio.sleep(max(0.0, (self._renewed_at or 0.0) + interval - self._clock()))
            sent = self._clock()
            try:
                async with asyncio.timeout(interval):
                    ttl = await self.store.keep_alive(lease, timeout_s=interval)
                if ttl <= 0:
                    raise _Lost("the lease expired")
                async with asyncio.timeout(interval):
                    entry = await self.store.get(self.key)
                if entry is None or entry.create_revision != epoch:
                    raise _Lost("the election key was deleted or replaced")
                self._renewed_at, self._lease_ttl = sent, float(ttl)
            except (StoreError, TimeoutError) as exc:
                renewed = self._renewed_at or sent
                if lease_may_have_expired(renewed_at=renewed, ttl_s=self._lease_ttl, now=self._clock()):
                    why = str(exc) or "no answer in time"
                    raise _Lost(f"no keep-alive got through for {self._lease_ttl:g} s ({why})") from exc
                log.debug("keep-alive of lease %x failed, retrying: %s", lease, exc)
                await asyncio.sleep(min(interval / 2, max(0.0, renewed + self._lease_ttl - self._clock())))

    def _give_up(self, reason: str) -> None:
        if self.state is ElectionState.LEADER:
            epoch = self._epoch or 0
            self.state, self._renewed_at, self._leader = ElectionState.FOLLOWER, None, None
            log.warning("%s no longer leads (epoch %d): %s", self.candidate_id, epoch, reason)
            self._emit(LeadershipLost(epoch, reason))

    def _emit(self, event: LeadershipEvent) -> None:
        if self.on_change is not None:
            try:
                self.on_change(event)
            except Exception:
                log.exception("leadership callback failed on %s", event)


class Leadership(Protocol):
    """Who may act. One coordinator on SQLite always leads (`SoloLeadership`); replicated coordinators elect a
    leader in etcd (coordinator.leadership). `epoch` orders leaders: it only grows, and every desired-state
    message carries it, so agents ignore a deposed leader. `still_leader()` is awaited before each publish batch
    and must turn False as soon as leadership MAY have been lost."""

    @property
    def is_leader(self) -> bool: ...

    @property
    def epoch(self) -> int | None: ...

    @property
    def leader_api(self) -> str | None:
        """The leader's REST URL (followers forward writes there); None while no leader is known."""
        ...

    @property
    def leader_id(self) -> str | None: ...

    @property
    def key(self) -> str | None:
        """The store key whose create revision is the epoch: the leader's writes are fenced on it (None: nothing
        to fence on, as for the only coordinator)."""
        ...

    async def still_leader(self) -> bool: ...


class SoloLeadership:
    """The embedded default: a single coordinator always leads; its epoch is a counter in its own store."""

    def __init__(self) -> None:
        self.epoch: int | None = None
        self.leader_api: str | None = None
        self.leader_id: str | None = None
        self.key: str | None = None

    @property
    def is_leader(self) -> bool:
        return True

    async def still_leader(self) -> bool:
        return True

"""Concurrent S3 clients that record a history for the linearizability checker
(tests/dataplane/objects/linearizability.py): PUT, GET, DELETE and LIST on a few keys, each with its invoke and
return time (one monotonic clock: the clients are threads of this process) and its outcome as a client can know it.

Outcomes: a 2xx is OK; an S3 error below 500 (an answer that says no) is FAIL for a write; a 5xx, a timeout, a
reset or a refused connection is UNKNOWN for a write (it may have taken effect) and drops a read. A client whose
endpoint stops answering moves on to the next one (a user's retry elsewhere), so some clients go through followers
and every coordinator's endpoint is used."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from tests.dataplane.objects.linearizability import Kind, Op, Outcome
from tests.storage_lab.world import World


@dataclass
class Recorder:
    w: World
    bucket: str
    endpoints: Sequence[str]
    clients: int = 6
    keys: int = 5
    prefix: str = "lin/"
    seed: int = 20
    history: list[Op] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _futures: list[Future[None]] = field(default_factory=list)

    def start(self) -> Recorder:
        self._futures = [self.w.net.submit(self._run, c) for c in range(self.clients)]
        time.sleep(1)
        broken = [f.exception() for f in self._futures if f.done()]
        assert not broken, f"a client stopped at once: {broken}"
        return self

    def stop(self) -> list[Op]:
        self._stop.set()
        for f in self._futures:
            f.result(timeout=300)
        with self._lock:
            return list(self.history)

    def ok_since(self, t: float, kind: Kind) -> int:
        with self._lock:
            return sum(1 for op in self.history if op.kind is kind and op.outcome is Outcome.OK and op.invoke >= t)

    def summary(self, since: float) -> str:
        """What the clients saw before and after `since`: outcomes per kind, and the errors."""
        with self._lock:
            ops, errors = list(self.history), list(self.errors)
        before = Counter((op.kind.value, op.outcome.value) for op in ops if op.invoke < since)
        after = Counter((op.kind.value, op.outcome.value) for op in ops if op.invoke >= since)
        return (f"clients before: {dict(sorted(before.items()))}\nclients after: {dict(sorted(after.items()))}\n"
                f"client errors: {Counter(errors).most_common(8)}")

    def _client(self, endpoint: str) -> Any:
        # short timeouts, no retries: every attempt is one operation of the history
        return self.w.s3(endpoint, connect_timeout=5, read_timeout=20)

    def _run(self, me: int) -> None:
        rng = random.Random(self.seed * 1000 + me)
        at = me % len(self.endpoints)
        s3 = self._client(self.endpoints[at])
        n = 0
        while not self._stop.is_set():
            key = f"{self.prefix}k{rng.randrange(self.keys)}"
            roll = rng.random()
            n += 1
            if roll < 0.4:
                op, moved = self._put(s3, me, key, f"c{me}-{n}")
            elif roll < 0.45:
                op, moved = self._delete(s3, me, key)
            elif roll < 0.8:
                op, moved = self._get(s3, me, key)
            else:
                op, moved = self._list(s3, me)
            with self._lock:
                self.history.append(op)
            if moved:  # the endpoint did not answer: the next coordinator's
                at = (at + 1) % len(self.endpoints)
                s3 = self._client(self.endpoints[at])
                time.sleep(0.2)

    def _put(self, s3: Any, me: int, key: str, value: str) -> tuple[Op, bool]:
        t0 = time.monotonic()
        outcome, moved = self._call(lambda: s3.put_object(Bucket=self.bucket, Key=key, Body=value.encode()))
        return Op(me, Kind.PUT, key, t0, time.monotonic(), outcome, value=value), moved

    def _delete(self, s3: Any, me: int, key: str) -> tuple[Op, bool]:
        t0 = time.monotonic()
        outcome, moved = self._call(lambda: s3.delete_object(Bucket=self.bucket, Key=key))
        return Op(me, Kind.DELETE, key, t0, time.monotonic(), outcome), moved

    def _get(self, s3: Any, me: int, key: str) -> tuple[Op, bool]:
        got: list[str | None] = []

        def read() -> None:
            try:
                got.append(s3.get_object(Bucket=self.bucket, Key=key)["Body"].read().decode())
            except s3.exceptions.NoSuchKey:
                got.append(None)

        t0 = time.monotonic()
        outcome, moved = self._call(read)
        t1 = time.monotonic()
        if outcome is not Outcome.OK:
            outcome = Outcome.UNKNOWN  # a read that said nothing constrains nothing
        return Op(me, Kind.GET, key, t0, t1, outcome, value=got[0] if got else None), moved

    def _list(self, s3: Any, me: int) -> tuple[Op, bool]:
        keys: list[str] = []

        def listing() -> None:
            page = s3.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1000)
            assert not page.get("IsTruncated"), "one page must hold every key"
            keys.extend(o["Key"] for o in page.get("Contents", []))

        t0 = time.monotonic()
        outcome, moved = self._call(listing)
        t1 = time.monotonic()
        if outcome is not Outcome.OK:
            outcome = Outcome.UNKNOWN
        return Op(me, Kind.LIST, self.prefix, t0, t1, outcome, keys=frozenset(keys)), moved

    def _call(self, fn: Any) -> tuple[Outcome, bool]:
        """(outcome, whether the endpoint stopped answering)."""
        from botocore.exceptions import ClientError

        try:
            fn()
        except ClientError as exc:
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            err = exc.response.get("Error", {})
            self._error(f"{status} {err.get('Code')}: {str(err.get('Message'))[:160]}")
            return (Outcome.FAIL if 0 < status < 500 else Outcome.UNKNOWN), status >= 500
        except Exception as exc:  # a timeout, a reset, a refused connection: the answer is unknown
            self._error(f"{type(exc).__name__}: {str(exc)[:160]}")
            return Outcome.UNKNOWN, True
        return Outcome.OK, False

    def _error(self, what: str) -> None:
        with self._lock:
            self.errors.append(what)

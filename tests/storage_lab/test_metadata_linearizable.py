"""Object metadata is linearizable across a leader kill (issue 20, Tests): `cloudless up --coordinators 3
--s3-port 9000` (three local etcd members, three coordinators, each serving S3) and three storage agents in the
namespace lab. Six boto3 clients, two per coordinator's S3 endpoint, run PUT / DELETE / GET / LIST on five keys for
~20 s, the leading coordinator is killed with SIGKILL, and they go on for ~40 s (a client whose endpoint dies moves
to the next one). The recorded history must be accepted by the checker (tests/dataplane/objects/linearizability.py:
exact per key, LISTs projected on every key, no phantoms) and not be refuted by the global check (every LIST at one
instant; bounded, may be inconclusive). Writes must resume after the kill."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.dataplane.objects.linearizability import Kind, Outcome, check, check_global
from tests.storage_lab.history import Recorder
from tests.storage_lab.world import API_PORT, World, world

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

COORDINATORS = 3
BUCKET = "lin"
BEFORE_S = 20.0
AFTER_S = 40.0
RESUME_BOUND_S = 60.0  # kill -9 of the leader -> a PUT succeeds again (lease TTL 2 s, loaded CI)


@pytest.fixture(scope="module")
def w(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with world(tmp_path_factory.mktemp("storage-lin"), storage_nodes=3, coordinators=COORDINATORS) as built:
        yield built
        print("\n[storage lab] measured:\n" + "\n".join(f"  {k}: {v}" for k, v in built.numbers.items()))


def leader(w: World) -> tuple[str, int] | None:
    """(leader id, its index) as every coordinator that answers agrees, from /readyz on each API port
    (API_PORT + i); a killed one does not answer and is left out."""
    states = [(i, s) for i in range(COORDINATORS) if (s := w.rest("/readyz", port=API_PORT + i, timeout=3))]
    ids = {s.get("leaderId") for _, s in states}
    leading = [i for i, s in states if s.get("leader")]
    if not states or len(ids) != 1 or len(leading) != 1 or None in ids:
        return None
    return str(ids.pop()), leading[0]


def test_metadata_history_is_linearizable_across_a_leader_kill(w: World) -> None:
    endpoints = [f"https://{w.coord.addr}:{w.coord.s3_port + i}" for i in range(COORDINATORS)]
    (lead_id, _), _ = w.until(lambda: leader(w), 60, "one leader every coordinator agrees on")
    w.net.call(lambda: w.s3().create_bucket(Bucket=BUCKET))
    rec = Recorder(w, BUCKET, endpoints).start()
    try:
        time.sleep(BEFORE_S)  # load, not an assertion: the clients work meanwhile
        pids = w.coord.coordinator_pids()
        assert lead_id in pids, f"no process of coordinator {lead_id} among {pids}"
        killed = time.monotonic()
        os.kill(pids[lead_id], signal.SIGKILL)
        (new_id, _), took = w.until(lambda: (got := leader(w)) and got[0] != lead_id and got, 60,
                                    "another coordinator leading")
        w.note("leader failover", f"{lead_id} killed, {new_id} leads after {took:.1f} s")
        try:
            _, resumed = w.until(lambda: rec.ok_since(killed, Kind.PUT) > 0, RESUME_BOUND_S,
                                 "a PUT succeeding after the kill")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{rec.summary(killed)}") from None
        w.note("writes resumed", f"{resumed:.1f} s after the kill (bound {RESUME_BOUND_S:.0f} s)")
        time.sleep(max(0.0, AFTER_S - (time.monotonic() - killed)))
    finally:
        history = rec.stop()
    outcomes = Counter((op.kind.value, op.outcome.value) for op in history)
    w.note("history", f"{len(history)} operations: {dict(sorted(outcomes.items()))}; client errors "
                      f"{dict(Counter(rec.errors).most_common(6))}")
    after = [op for op in history if op.invoke > killed and op.outcome is Outcome.OK]
    assert sum(1 for op in after if op.kind is Kind.PUT) >= 20, "too few writes after the kill to say anything"
    assert sum(1 for op in after if op.kind is Kind.GET) >= 20 and any(op.kind is Kind.LIST for op in after)
    started = time.monotonic()
    verdict = check(history)
    w.note("checker", f"{verdict.explain().splitlines()[0]} in {time.monotonic() - started:.1f} s")
    assert verdict.ok, verdict.explain()
    started = time.monotonic()
    glob = check_global(history, budget=3_000_000)
    w.note("global checker", f"{glob.explain().splitlines()[0]} in {time.monotonic() - started:.1f} s")
    assert glob.ok or glob.inconclusive, glob.explain()

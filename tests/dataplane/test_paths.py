"""The path core: relay first, direct when a probe is answered (LAN first, then RTT, with hysteresis), heartbeats,
fall back to the relay within 7 s of silence, punch again within the retry period. Time is passed in."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dataplane.paths import Candidate, CandidateKind, Direct, PathState, Relay, SendProbe, Timers

LAN = Candidate(("192.168.1.20", 41641), CandidateKind.LAN)
WAN = Candidate(("198.19.7.3", 41641), CandidateKind.REFLEXIVE)
WAN2 = Candidate(("198.19.8.4", 50000), CandidateKind.REFLEXIVE)
T = Timers()


def fresh(*candidates: Candidate, now: float = 0.0) -> PathState:
    state = PathState(relay="vps", now=now)
    state.set_candidates(candidates, now)
    return state


def answer(state: PathState, probes: list[SendProbe], addr: tuple[str, int], now: float) -> None:
    for p in probes:
        if p.addr == addr:
            state.answered(p.txid, now)


def test_a_connection_starts_on_the_relay_and_punches_every_candidate_at_once() -> None:
    state = fresh(LAN, WAN)
    assert state.path() == Relay("vps")
    assert {p.addr for p in state.poll(0.0)} == {LAN.addr, WAN.addr}
    assert state.poll(0.1) == []  # not before the probe interval
    assert {p.addr for p in state.poll(T.probe_interval_s)} == {LAN.addr, WAN.addr}


def test_an_answered_probe_moves_traffic_to_the_direct_path_with_an_event() -> None:
    state = fresh(WAN)
    probes = state.poll(0.0)
    state.answered(probes[0].txid, 0.02)
    assert state.path() == Direct(WAN.addr, CandidateKind.REFLEXIVE)
    (event,) = state.events()
    assert (event.old, event.new) == (Relay("vps"), Direct(WAN.addr, CandidateKind.REFLEXIVE))
    assert "20.0 ms" in event.reason
    assert state.rtt_s() is not None and abs(state.rtt_s() - 0.02) < 1e-9  # type: ignore[operator]


def test_a_lan_path_wins_over_a_faster_reflexive_one() -> None:
    state = fresh(LAN, WAN)
    probes = state.poll(0.0)
    answer(state, probes, WAN.addr, 0.001)
    answer(state, probes, LAN.addr, 0.009)
    assert state.path() == Direct(LAN.addr, CandidateKind.LAN)


def test_a_slightly_faster_path_does_not_take_over_but_a_much_faster_one_does() -> None:
    state = fresh(WAN, WAN2)
    probes = state.poll(0.0)
    answer(state, probes, WAN.addr, 0.010)
    answer(state, probes, WAN2.addr, 0.009)  # 90 % of the current RTT: not worth a switch
    assert state.path() == Direct(WAN.addr, CandidateKind.REFLEXIVE)
    state2 = fresh(WAN, WAN2)
    probes = state2.poll(0.0)
    answer(state2, probes, WAN.addr, 0.010)
    answer(state2, probes, WAN2.addr, 0.002)
    assert state2.path() == Direct(WAN2.addr, CandidateKind.REFLEXIVE)


def test_the_chosen_path_is_heartbeated_and_stays_while_it_answers() -> None:
    state = fresh(WAN)
    state.answered(state.poll(0.0)[0].txid, 0.01)
    now = 0.01
    for _ in range(10):  # 10 heartbeats, each answered
        now += T.heartbeat_s
        probes = state.poll(now)
        assert [p.addr for p in probes] == [WAN.addr]
        state.answered(probes[0].txid, now + 0.01)
    assert state.path() == Direct(WAN.addr, CandidateKind.REFLEXIVE)
    assert state.events()[1:] == []  # one change (to direct) and no flapping


def test_a_silent_direct_path_falls_back_to_the_relay_within_seven_seconds() -> None:
    state = fresh(WAN)
    state.answered(state.poll(0.0)[0].txid, 0.01)
    state.events()
    now = 0.01
    fell_back_at = None
    while now < 20 and fell_back_at is None:  # the path dies: nothing is answered any more
        now = min(state.next_deadline(), now + 0.25)
        state.poll(now)
        if isinstance(state.path(), Relay):
            fell_back_at = now
    assert fell_back_at is not None and fell_back_at - 0.01 <= 7.0
    (event,) = state.events()
    assert event.new == Relay("vps") and "no answer" in event.reason


def test_after_a_fallback_punching_resumes_within_the_retry_period() -> None:
    state = fresh(WAN)
    state.answered(state.poll(0.0)[0].txid, 0.01)
    now = 0.01
    while isinstance(state.path(), Direct):
        now += 0.5
        state.poll(now)
    punched_again = None
    while now < 0.01 + T.trust_s + T.retry_s + 1:
        now += 0.5
        if any(p.addr == WAN.addr for p in state.poll(now)):
            punched_again = now
            break
    assert punched_again is not None


def test_a_probe_from_an_unknown_address_becomes_a_peer_reflexive_candidate_probed_at_once() -> None:
    state = fresh(WAN)  # the peer is behind a symmetric NAT: its reflexive address is useless to us
    state.poll(0.0)
    fresh_port = ("198.19.7.3", 61234)
    state.heard(fresh_port, 0.3)
    assert state.path() == Relay("vps")  # one direction proves nothing yet
    probes = [p for p in state.poll(0.3) if p.addr == fresh_port]
    assert probes
    state.answered(probes[0].txid, 0.31, from_addr=fresh_port)
    assert state.path() == Direct(fresh_port, CandidateKind.PEER_REFLEXIVE)


def test_probes_still_arriving_do_not_keep_a_path_that_stopped_answering() -> None:
    state = fresh(WAN)
    state.answered(state.poll(0.0)[0].txid, 0.01)
    now = 0.01
    while now < 7.0:  # our probes go unanswered (the path died one way) while the peer's still reach us
        now += 0.5
        state.poll(now)
        state.heard(WAN.addr, now)
    assert state.path() == Relay("vps")


def test_an_answer_from_another_address_proves_nothing() -> None:
    state = fresh(WAN)
    txid = state.poll(0.0)[0].txid
    state.answered(txid, 0.01, from_addr=("203.0.113.9", 1))
    assert state.path() == Relay("vps")


def test_unknown_late_or_repeated_answers_are_ignored() -> None:
    state = fresh(WAN)
    txid = state.poll(0.0)[0].txid
    state.answered(txid + 1000, 0.01)
    assert state.path() == Relay("vps")
    state.answered(txid, 0.01)
    state.answered(txid, 0.02)  # the same answer again changes nothing
    assert len(state.events()) == 1


def test_new_candidates_start_a_punch_and_drop_paths_no_longer_offered() -> None:
    state = fresh(WAN)
    state.answered(state.poll(0.0)[0].txid, 0.01)
    state.set_candidates((WAN2,), 1.0)
    assert state.path() == Relay("vps")
    assert [p.addr for p in state.poll(1.0)] == [WAN2.addr]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["poll", "answer", "heard", "candidates"]), st.floats(0, 3),
                          st.integers(0, 2)), max_size=60))
def test_the_chosen_direct_path_is_always_one_heard_within_the_trust_period(
        steps: list[tuple[str, float, int]]) -> None:
    pool = [LAN, WAN, WAN2]
    state = fresh(LAN, WAN)
    now, probes, heard_at = 0.0, [], {}
    for op, dt, i in steps:
        now += dt
        match op:
            case "poll":
                probes = state.poll(now)
            case "answer" if probes:
                p = probes[i % len(probes)]
                state.answered(p.txid, now)
                heard_at[p.addr] = now
            case "heard":
                state.heard(pool[i].addr, now)
            case "candidates":
                state.set_candidates(tuple(pool[: i + 1]), now)
        state.poll(now)
        path = state.path()
        if isinstance(path, Direct):
            assert now - heard_at[path.addr] < T.trust_s
            assert path.addr in {c.addr for c in state.candidates}


def test_peer_reflexive_candidates_are_bounded() -> None:
    state = fresh(WAN)
    for port in range(1000, 1100):
        state.heard(("198.19.7.3", port), 0.1)
    assert sum(1 for c in state.candidates if c.kind is CandidateKind.PEER_REFLEXIVE) == 8


# ---- extra sockets (birthday punching) ----------------------------------------------------------------------------

HARD_HIT = ("198.19.9.9", 40123)  # a port of the peer's symmetric NAT that a spray probe found


def test_an_answered_spray_probe_makes_a_peer_reflexive_direct_path_on_the_main_socket() -> None:
    state = fresh(WAN)
    spray = state.probe(HARD_HIT, 0.0)
    assert spray.via_socket is None
    state.answered(spray.txid, 0.03, from_addr=HARD_HIT)
    assert state.path() == Direct(HARD_HIT, CandidateKind.PEER_REFLEXIVE)
    assert Candidate(HARD_HIT, CandidateKind.PEER_REFLEXIVE) in state.candidates


def test_an_answer_from_a_non_candidate_to_a_planned_probe_is_still_ignored() -> None:
    state = fresh(WAN)
    probe = state.poll(0.0)[0]
    state.answered(probe.txid, 0.03, from_addr=HARD_HIT)  # not where the probe went
    assert state.path() == Relay("vps")


def test_a_probe_heard_on_an_extra_socket_binds_the_address_to_it_and_the_path_goes_through_it() -> None:
    state = fresh(WAN)
    state.poll(0.0)
    state.heard(WAN.addr, 1.0, via_socket=7)  # the peer's spray hit our extra socket 7
    probes = [p for p in state.poll(1.0) if p.addr == WAN.addr]
    assert probes and all(p.via_socket == 7 for p in probes)
    state.answered(probes[0].txid, 1.02, from_addr=WAN.addr, via_socket=None)  # an answer on another socket
    assert state.path() == Relay("vps")
    probes = [p for p in state.poll(1.0 + T.probe_interval_s) if p.addr == WAN.addr]
    state.answered(probes[0].txid, 1.6, from_addr=WAN.addr, via_socket=7)
    assert state.path() == Direct(WAN.addr, CandidateKind.REFLEXIVE, via_socket=7)
    heartbeat = state.poll(1.6 + T.heartbeat_s)
    assert heartbeat == [SendProbe(WAN.addr, heartbeat[0].txid, 7)]  # kept alive through the same socket


def test_releasing_the_socket_of_the_path_falls_back_to_the_relay_and_probes_from_the_main_socket_again() -> None:
    state = fresh(WAN)
    state.heard(WAN.addr, 0.0, via_socket=3)
    probe = next(p for p in state.poll(0.0) if p.addr == WAN.addr)
    state.answered(probe.txid, 0.01, from_addr=WAN.addr, via_socket=3)
    assert isinstance(state.path(), Direct)
    state.events()
    state.release(3, 1.0)
    assert state.path() == Relay("vps")
    assert [e.reason for e in state.events()] == ["its socket closed"]
    assert all(p.via_socket is None for p in state.poll(T.retry_s + 1))


def test_a_path_through_an_extra_socket_dies_like_any_other() -> None:
    state = fresh(WAN)
    state.heard(WAN.addr, 0.0, via_socket=3)
    probe = next(p for p in state.poll(0.0) if p.addr == WAN.addr)
    state.answered(probe.txid, 0.01, from_addr=WAN.addr, via_socket=3)
    state.poll(T.trust_s + 0.02)
    assert state.path() == Relay("vps")


def test_a_probe_heard_on_an_extra_socket_does_not_steal_a_working_main_socket_path() -> None:
    state = fresh(WAN)
    probe = state.poll(0.0)[0]
    state.answered(probe.txid, 0.01, from_addr=WAN.addr)
    state.heard(WAN.addr, 0.5, via_socket=9)
    assert state.path() == Direct(WAN.addr, CandidateKind.REFLEXIVE)
    assert all(p.via_socket is None for p in state.poll(T.heartbeat_s + 0.01))

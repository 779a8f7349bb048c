"""Which path carries the traffic to one peer (sans-IO core: candidates, probe answers and `now` in; probes to send,
the chosen path and path-change events out).

Theory of operation (the anchors are Tailscale's magicsock timers, ARCHITECTURE §8):

- A connection starts on the **relay** at once; it never waits for a direct path.
- The peer's **candidates** (its LAN addresses, its reflexive addresses as relays saw them) arrive through the
  control plane. The core **punches**: it probes every candidate every `probe_interval_s` for `punch_window_s`
  (the peer does the same towards us, so both NATs open), then rests and tries again every `retry_s`.
- A probe answered is a **live** direct path, with its round-trip time. The best live path is chosen: a LAN
  candidate first (traffic stays home), then the lowest RTT. The choice moves only for a clear gain
  (`switch_gain`), so two similar paths do not flap.
- The chosen direct path is **heartbeated** every `heartbeat_s` (this also keeps NAT mappings fresh: well under
  the ~25-30 s a home router keeps an idle UDP mapping). A direct path that has answered nothing for `trust_s` is
  dead: traffic falls back to the relay at once (so within `trust_s` + one heartbeat of the path dying), and punching
  resumes at the next retry.
- A probe *from* the peer is authenticated and answered by the adapter and reported here as `heard`. It proves one
  direction only, so it never keeps a path alive; from an address that is no candidate — a symmetric NAT's fresh
  port — it becomes a peer-reflexive candidate (ICE, RFC 8445 §7.3.1.3) and is probed at once: that is how an
  easy NAT meets a hard one.
- **Extra sockets** (birthday punching, dataplane.birthday): the adapter may send probes the core did not plan
  (`probe()`: a spray to random ports, or one from each of many extra sockets). An answer to one from an address that
  is no candidate makes it a peer-reflexive one. A probe *heard on an extra socket* binds the sender's address to that
  socket (`heard(..., via_socket=)`): from then on every probe to that address leaves through it, and a path proven
  through it is `Direct(..., via_socket=)`, so the adapter sends the peer's traffic through that socket. `release()`
  forgets a socket the adapter closed.

Invariants: `path()` is always a usable choice (the relay when no direct path is live); every event names the old
and new path and why; nothing here sends or sleeps — `poll(now)` returns what to send and `next_deadline()` when to
call again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

Address = tuple[str, int]
MAX_PEER_REFLEXIVE = 8


class CandidateKind(StrEnum):
    LAN = "lan"  # an address on the peer's own network (works when we share it)
    REFLEXIVE = "reflexive"  # the peer's address as a relay saw it (its NAT's public mapping)
    PEER_REFLEXIVE = "peer-reflexive"  # where the peer's probe came from (RFC 8445 §7.3.1.3): a symmetric NAT's port


@dataclass(frozen=True, slots=True)
class Candidate:
    addr: Address
    kind: CandidateKind


@dataclass(frozen=True, slots=True)
class Relay:
    """Traffic through the relay (`via` names which one)."""

    via: str

    def __str__(self) -> str:
        return f"relay {self.via}"


@dataclass(frozen=True, slots=True)
class Direct:
    addr: Address
    kind: CandidateKind
    via_socket: int | None = None  # an extra socket of the adapter's (birthday punching); None: the main socket

    def __str__(self) -> str:
        return f"direct {self.kind.value} {self.addr[0]}:{self.addr[1]}"


Path = Relay | Direct


@dataclass(frozen=True, slots=True)
class SendProbe:
    """Send a probe with `txid` to `addr` on the overlay socket (or extra socket `via_socket`); its answer comes back
    as `answered(txid, ...)`."""

    addr: Address
    txid: int
    via_socket: int | None = None


@dataclass(frozen=True, slots=True)
class PathChanged:
    old: Path
    new: Path
    reason: str


@dataclass(frozen=True, slots=True)
class Timers:
    probe_interval_s: float = 0.5
    punch_window_s: float = 5.0
    retry_s: float = 30.0  # Tailscale retries its upgrade within 60 s; the bound
    heartbeat_s: float = 3.0
    trust_s: float = 6.5  # a direct path silent this long is dead
    switch_gain: float = 0.7  # a new path must have < 70 % of the current RTT to take over


@dataclass
class _Live:
    kind: CandidateKind
    rtt_s: float
    last_heard: float
    via: int | None = None


@dataclass
class PathState:
    """The path core for one peer. Create it when a connection to the peer starts (on the relay)."""

    relay: str
    now: float
    timers: Timers = field(default_factory=Timers)
    candidates: tuple[Candidate, ...] = ()
    active: Path = field(init=False)
    _live: dict[Address, _Live] = field(default_factory=dict)
    _sent: dict[int, tuple[Address, float, int | None]] = field(default_factory=dict)  # txid -> (addr, at, via)
    _bound: dict[Address, int] = field(default_factory=dict)  # peer address -> the extra socket that reaches it
    _unplanned: set[int] = field(default_factory=set)  # txids of probes sent through probe()
    _txid: int = 0
    _punch_until: float = 0.0
    _next_probe: float = 0.0
    _next_punch: float = 0.0
    _events: list[PathChanged] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.active = Relay(self.relay)
        self._next_punch = self.now

    # ---- inputs ---------------------------------------------------------------------------------------------

    def set_candidates(self, candidates: tuple[Candidate, ...], now: float) -> None:
        """The peer's candidates changed (from the control plane): punch towards the new set now."""
        if set(candidates) == set(self.candidates):
            return
        self.candidates = candidates
        keep = {c.addr for c in candidates}
        self._live = {a: live for a, live in self._live.items() if a in keep}
        self._next_punch = now
        self._choose(now, "candidates changed")

    def answered(self, txid: int, now: float, *, from_addr: Address | None = None,
                 via_socket: int | None = None) -> None:
        """The answer to probe `txid` arrived (`from_addr`: where from, `via_socket`: on which extra socket, None for
        the main one; an answer from elsewhere or on another socket proves nothing about the path the probe took, and
        is ignored)."""
        sent = self._sent.get(txid)
        if sent is None or (from_addr is not None and from_addr != sent[0]) or via_socket != sent[2]:
            return  # late, duplicated, forged, or from another path: ignored
        del self._sent[txid]
        addr, at, via = sent
        kind = self._kind_of(addr)
        if kind is None and txid in self._unplanned:  # a spray probe hit: the peer's NAT has a mapping there
            kind = CandidateKind.PEER_REFLEXIVE
            self.candidates = (*self.candidates, Candidate(addr, kind))
        self._unplanned.discard(txid)
        if kind is None:
            return
        rtt = max(now - at, 0.0)
        live = self._live.get(addr)
        if live is None or live.via != via:
            self._live[addr] = _Live(kind, rtt, now, via)
        else:  # smoothed like TCP's SRTT (RFC 6298 §2, alpha = 1/8)
            live.rtt_s, live.last_heard = live.rtt_s * 7 / 8 + rtt / 8, now
        self._choose(now, f"probe answered in {rtt * 1000:.1f} ms")

    def heard(self, addr: Address, now: float, *, via_socket: int | None = None) -> None:
        """An authenticated probe from the peer arrived from `addr` (on extra socket `via_socket`, or the main one).
        It proves only one direction, so it keeps no path alive (a path that stopped answering is dead even while the
        peer's probes still arrive); it makes an address that is no candidate — a symmetric NAT's fresh port — a
        peer-reflexive one, and has it probed now. Heard on an extra socket, it binds `addr` to that socket (unless a
        path to `addr` already works without it): probes to `addr` leave through it from now on."""
        if via_socket is not None and addr not in self._bound and addr not in self._live:
            self._bound[addr] = via_socket
            if self._kind_of(addr) is None:
                self.candidates = (*self.candidates, Candidate(addr, CandidateKind.PEER_REFLEXIVE))
            self._next_punch = min(self._next_punch, now)
            return
        if self._kind_of(addr) is None:
            learned = sum(1 for c in self.candidates if c.kind is CandidateKind.PEER_REFLEXIVE)
            if learned >= MAX_PEER_REFLEXIVE:
                return  # bounded: a NAT that keeps changing ports cannot grow the list (nor a replay)
            self.candidates = (*self.candidates, Candidate(addr, CandidateKind.PEER_REFLEXIVE))
            self._next_punch = min(self._next_punch, now)

    def release(self, via_socket: int, now: float) -> None:
        """The adapter closed extra socket `via_socket`: forget what went through it (its addresses are probed from
        the main socket again)."""
        self._bound = {a: s for a, s in self._bound.items() if s != via_socket}
        self._live = {a: live for a, live in self._live.items() if live.via != via_socket}
        self._sent = {t: s for t, s in self._sent.items() if s[2] != via_socket}
        self._choose(now, "its socket closed")

    def probe(self, addr: Address, now: float, *, via_socket: int | None = None) -> SendProbe:
        """A probe the adapter sends on its own account (birthday punching): an answer from an address that is no
        candidate makes it a peer-reflexive one, and a live path."""
        probe = self._probe(addr, now, via=via_socket)
        self._unplanned.add(probe.txid)
        return probe

    # ---- outputs --------------------------------------------------------------------------------------------

    def poll(self, now: float) -> list[SendProbe]:
        """Expire silent paths, then say which probes to send now (punching, or heartbeats on the chosen path)."""
        self._expire(now)
        if now >= self._next_punch and self.candidates:
            self._punch_until = now + self.timers.punch_window_s
            self._next_punch = now + self.timers.retry_s
            self._next_probe = now
        probes: list[SendProbe] = []
        if now >= self._next_probe:
            punching = now < self._punch_until
            targets = [c.addr for c in self.candidates] if punching else self._heartbeat_targets()
            probes = [self._probe(addr, now) for addr in targets]
            interval = self.timers.probe_interval_s if punching else self.timers.heartbeat_s
            self._next_probe = now + interval
        self._sent = {t: s for t, s in self._sent.items() if now - s[1] < self.timers.trust_s}
        self._unplanned &= self._sent.keys()
        return probes

    def next_deadline(self) -> float:
        """When `poll` has something to do next (a probe, a heartbeat, a path that may go silent)."""
        deadlines = [self._next_probe] if self.candidates else []
        if self.candidates:
            deadlines.append(self._next_punch)
        deadlines += [live.last_heard + self.timers.trust_s for live in self._live.values()]
        return min(deadlines, default=float("inf"))

    def path(self) -> Path:
        return self.active

    def events(self) -> list[PathChanged]:
        out, self._events = self._events, []
        return out

    def rtt_s(self) -> float | None:
        live = self._live.get(self.active.addr) if isinstance(self.active, Direct) else None
        return live.rtt_s if live else None

    # ---- decisions ------------------------------------------------------------------------------------------

    def _probe(self, addr: Address, now: float, *, via: int | None = None) -> SendProbe:
        self._txid += 1
        via = self._bound.get(addr, via)
        self._sent[self._txid] = (addr, now, via)
        return SendProbe(addr, self._txid, via)

    def _heartbeat_targets(self) -> list[Address]:
        return [self.active.addr] if isinstance(self.active, Direct) else []

    def _kind_of(self, addr: Address) -> CandidateKind | None:
        return next((c.kind for c in self.candidates if c.addr == addr), None)

    def _expire(self, now: float) -> None:
        dead = [a for a, live in self._live.items() if now - live.last_heard >= self.timers.trust_s]
        for addr in dead:
            del self._live[addr]
        if dead:
            self._choose(now, f"no answer for {self.timers.trust_s:g} s")

    def _choose(self, now: float, why: str) -> None:
        best = self._best()
        current = self.active
        if best is None:
            new: Path = Relay(self.relay)
        elif isinstance(current, Direct) and current.addr in self._live and current.addr != best[0]:
            cur, cand = self._live[current.addr], self._live[best[0]]
            better_kind = cand.kind is CandidateKind.LAN and cur.kind is not CandidateKind.LAN
            new = Direct(best[0], cand.kind, cand.via) \
                if better_kind or cand.rtt_s < cur.rtt_s * self.timers.switch_gain else current
        else:
            new = Direct(best[0], self._live[best[0]].kind, self._live[best[0]].via)
        if new != current:
            self.active = new
            self._events.append(PathChanged(current, new, why))
            if isinstance(new, Direct):
                self._punch_until = now  # found: stop punching, heartbeat from here on
                self._next_probe = now + self.timers.heartbeat_s

    def _best(self) -> tuple[Address, _Live] | None:
        if not self._live:
            return None
        return min(self._live.items(), key=lambda item: (item[1].kind is not CandidateKind.LAN, item[1].rtt_s))

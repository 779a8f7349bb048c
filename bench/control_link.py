"""Control link: what one real idle agent costs on the wire per day and per month, per firmware profile.

A real `cloudless agent` process (the process runtime, its own data dir holding a node certificate from the cluster
CA) runs in a network namespace of its own, joined to the host by a veth pair; Mosquitto (mutual TLS, configured
by `cloudless broker mosquitto-config --cert-auth`'s code) and a real `cloudless coordinator --pki` run on the host
(the harness of the fleet bench, `tests/fleet/env.py`). Everything the device sends or receives crosses the veth:
its counters (`/sys/class/net/<veth>/statistics/{rx,tx}_{bytes,packets}`, both directions) are the measurement.
The veth counts Ethernet frames; the IP level is that minus 14 bytes of Ethernet header per packet.

A day cannot be waited for, and the metered profile's keep-alive (25 minutes) and heartbeat maximum (2 hours) do
not fit a bench run either. So, per profile, the idle link is taken apart into the two things it does, each
measured with that profile's agent and shortened intervals:

1. **keep-alive**: `--keepalive 5 --heartbeat-max-interval 86400 --no-overlay`: the agent only answers the MQTT
   keep-alive (PINGREQ -> PINGRESP -> TCP ACK; the MQTT packets in TLS records). Readings are sampled only hourly
   here, so no threshold-triggered heartbeat falls in the window (one that did, counted by an observer subscribed to the
   node's topics, would be taken out at the cost measured in 2). Bytes per exchange = the window's bytes / the
   exchanges in it; an exchange is counted as one burst of packets on the veth (the counters, polled every 20 ms,
   move and then stay still for at least a second).
2. **heartbeat**: `--keepalive 3600 --heartbeat-interval 2 --no-overlay`: a heartbeat every 2 s and no keep-alive
   exchange in the window. Bytes per heartbeat = the window's bytes / the heartbeats the observer received.
3. **overlay report**: the overlay on, `--heartbeat-max-interval 60`: an unchanged overlay report goes out every
   max(60 s, the heartbeat maximum) (edge_agent.overlay: `OverlaySettings.refresh_s`), here every 60 s, with a
   heartbeat as often. Bytes per report = (the window's bytes - its heartbeats at the cost from 2) / the reports the
   observer received; shown separately ("with the overlay"), at the profile's real refresh.

Then, from the profile's real timers: bytes/day = 86400 / keepalive_s x (bytes per exchange) + 86400 /
heartbeat_max_interval_s x (bytes per heartbeat) — an idle device sends heartbeats only at the maximum interval
(readings that stay within the thresholds are not news), and its status only when it changes (it does not while
idle). A month is 30 days. With `--real-window SECONDS` the default profile also runs once with its real intervals
for that long, and its measured bytes, scaled to a day, are shown next to the computed ones.

Detection of a silent power-off (the device loses power or its link, no FIN reaches the broker) is the broker's
keep-alive expiry, 1.5 x keepalive_s (MQTT 3.1.1 §3.1.2.10), after which it publishes the node's last will and the
coordinator declares the node lost (`coordinator.membership`). A killed agent process on a live device is noticed
at once (its socket closes); a clean stop publishes `offline` itself.

    .venv/bin/python bench/control_link.py                      # ~4 min, both profiles, writes docs/benchmarks.md
    .venv/bin/python bench/control_link.py --real-window 900    # + 15 min of the default profile at its real timers
    .venv/bin/python bench/control_link.py --quick --doc /tmp/b.md    # ~1 min (smoke test)

Needs root (network namespace, veth) and Mosquitto.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # bench/ and tests/ are not installed: make them importable when run as a script
    sys.path.insert(0, str(ROOT))

from bench.report import DOC, table, write_section  # noqa: E402
from broker.client import ClientTls, Message, MqttClient, MqttSettings  # noqa: E402
from broker.wire import topics  # noqa: E402
from coordinator.pki import CertRole, key_pem, make_csr, new_key  # noqa: E402
from firmware_profiles import load_profile  # noqa: E402
from tests.fleet.env import COORD_ID, Broker, Coordinator, Netns, Pki, kill_group  # noqa: E402

MIB = 2**20
DAY_S = 86400.0
MONTH_DAYS = 30
ETHERNET_HEADER = 14
PROFILES = {"default": "vps", "metered": "termux-android"}  # vps: what a device no profile matches falls back to
BUDGETS = {"default": ("day", MIB), "metered": ("month", MIB)}  # issue 17: <= 1 MiB/day; <= 1 MiB/month (balena)
KA_SHORT_S = 5
HB_SHORT_S = 2.0
QUIET_S = 1.0  # a keep-alive exchange takes milliseconds; exchanges come KA_SHORT_S apart
POLL_S = 0.02


@dataclass(frozen=True, slots=True)
class Counters:
    """The veth's counters seen from the device: bytes/packets it sent (host side rx) and received (host side tx)."""

    out_bytes: int
    in_bytes: int
    out_packets: int
    in_packets: int

    @classmethod
    def read(cls, veth: str) -> Counters:
        base = Path("/sys/class/net") / veth / "statistics"

        def get(name: str) -> int:
            return int((base / name).read_text())

        return cls(get("rx_bytes"), get("tx_bytes"), get("rx_packets"), get("tx_packets"))

    def __sub__(self, other: Counters) -> Counters:
        return Counters(self.out_bytes - other.out_bytes, self.in_bytes - other.in_bytes,
                        self.out_packets - other.out_packets, self.in_packets - other.in_packets)

    @property
    def packets(self) -> int:
        return self.out_packets + self.in_packets

    @property
    def link_bytes(self) -> int:
        return self.out_bytes + self.in_bytes

    @property
    def ip_bytes(self) -> int:
        """Both directions at the IP level: the frames less their Ethernet headers."""
        return self.link_bytes - ETHERNET_HEADER * self.packets


@dataclass(frozen=True, slots=True)
class Window:
    """One measured window of an agent: the veth's counter deltas and what the observer received meanwhile."""

    seconds: float
    delta: Counters
    heartbeats: int
    statuses: int
    heartbeat_payload: int  # MQTT payload bytes of those heartbeats
    overlays: int  # overlay reports (edge_agent.overlay republishes an unchanged one every refresh_s)
    bursts: int  # runs of packets separated by at least QUIET_S of silence on the veth (an exchange is one)


@dataclass(frozen=True, slots=True)
class Costs:
    """Per-event bytes at the IP level (both directions), measured; and the per-day/month figures computed from
    them with a profile's real timers."""

    per_exchange: float  # one keep-alive exchange
    per_heartbeat: float
    exchanges: int  # how many were measured
    heartbeats: int
    per_overlay: float = 0.0  # one overlay report (QoS 1: PUBLISH, PUBACK, ACKs)
    overlays: int = 0


@dataclass(frozen=True, slots=True)
class Row:
    label: str
    profile: str
    keepalive_s: int
    heartbeat_max_s: float
    costs: Costs
    keepalive_window: Window
    heartbeat_window: Window
    overlay_window: Window | None = None
    real: Window | None = None

    @property
    def detection_s(self) -> float:
        return 1.5 * self.keepalive_s

    @property
    def per_day(self) -> float:
        return per_day(self.costs, self.keepalive_s, self.heartbeat_max_s)

    @property
    def per_month(self) -> float:
        return self.per_day * MONTH_DAYS

    @property
    def shipped_per_day(self) -> float:
        """With the overlay on (the default): its unchanged report every max(60 s, heartbeat max)."""
        return per_day(self.costs, self.keepalive_s, self.heartbeat_max_s, overlay=True)

    @property
    def within_budget(self) -> bool:
        unit, limit = BUDGETS.get(self.label, ("day", MIB))
        return (self.per_month if unit == "month" else self.per_day) <= limit


OVERLAY_REFRESH_S = 60.0  # edge_agent.overlay.REFRESH_S: an unchanged report's floor; the agent uses max(it, hb max)


def overlay_refresh_s(heartbeat_max_s: float) -> float:
    """How often an idle agent republishes its unchanged overlay report (what edge_agent.agent gives the overlay)."""
    return max(OVERLAY_REFRESH_S, heartbeat_max_s)


def per_day(costs: Costs, keepalive_s: float, heartbeat_max_s: float, *, overlay: bool = False) -> float:
    """Idle bytes per day from the per-event costs and the timers (see the module doc); `overlay`: with the overlay's
    unchanged report every `overlay_refresh_s`."""
    link = DAY_S / keepalive_s * costs.per_exchange + DAY_S / heartbeat_max_s * costs.per_heartbeat
    return link + (DAY_S / overlay_refresh_s(heartbeat_max_s) * costs.per_overlay if overlay else 0.0)


def costs_of(keepalive: Window, heartbeat: Window, overlay: Window | None = None) -> Costs:
    """Per-event bytes from the shortened windows (module doc, steps 1 to 3)."""
    if heartbeat.heartbeats <= 0:
        raise RuntimeError("the heartbeat window received no heartbeat: nothing to divide by")
    per_heartbeat = heartbeat.delta.ip_bytes / heartbeat.heartbeats
    # each exchange is one burst of packets on the veth (PINGREQ, PINGRESP, ACK); a heartbeat would be another
    exchanges = keepalive.bursts - keepalive.heartbeats
    if exchanges <= 0:
        raise RuntimeError("the keep-alive window saw no keep-alive exchange")
    per_exchange = (keepalive.delta.ip_bytes - keepalive.heartbeats * per_heartbeat) / exchanges
    if overlay is None or overlay.overlays <= 0:
        return Costs(per_exchange, per_heartbeat, exchanges, heartbeat.heartbeats)
    rest = overlay.heartbeats * per_heartbeat  # no keep-alive is due in that window either
    return Costs(per_exchange, per_heartbeat, exchanges, heartbeat.heartbeats,
                 (overlay.delta.ip_bytes - rest) / overlay.overlays, overlay.overlays)


# ---- the rig ---------------------------------------------------------------------------------------------------


@dataclass
class Observer:
    """A coordinator-role MQTT client on the host counting the node's heartbeats and status messages."""

    pki: Pki
    broker: Broker
    node: str
    heartbeats: int = 0
    statuses: int = 0
    overlays: int = 0
    payload: int = 0
    client: MqttClient | None = None

    async def start(self) -> None:
        key = new_key()
        identity = f"coordinator@{COORD_ID}"
        issued = self.pki.ca.issue(make_csr(key, identity), identity=identity, role=CertRole.COORDINATOR,
                                   now=time.time(), lifetime_s=86400)
        cert, keyf = self.pki.cert_dir / "observer.pem", self.pki.cert_dir / "observer.key"
        cert.write_bytes(issued.cert_pem)
        keyf.write_bytes(key_pem(key))
        tls = ClientTls(ca_file=self.pki.ca_file, cert_file=cert, key_file=keyf)
        self.client = MqttClient(MqttSettings(self.broker.host, self.broker.port, client_id="bench-observer",
                                              tls=tls, keepalive_s=30))
        await self.client.subscribe(topics.node_heartbeat(self.node), self._on_heartbeat, qos=0)
        await self.client.subscribe(topics.node_status(self.node), self._on_status, qos=0)
        await self.client.subscribe(topics.node_overlay(self.node), self._on_overlay, qos=0)
        await self.client.start()

    def _on_heartbeat(self, m: Message) -> None:
        self.heartbeats += 1
        self.payload += len(m.payload)

    def _on_overlay(self, m: Message) -> None:
        if not m.retain:
            self.overlays += 1

    def _on_status(self, m: Message) -> None:
        if not m.retain:
            self.statuses += 1

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.stop()


@dataclass
class Rig:
    workdir: Path
    netns: Netns = field(default_factory=Netns)
    node: str = field(default_factory=lambda: f"ctl{os.getpid() % 100000}")

    def __post_init__(self) -> None:
        self.pki = Pki(self.workdir, hosts=[self.netns.host_ip])
        self.broker = Broker("mosquitto", self.workdir, self.pki, self.netns.host_ip)
        self.coord = Coordinator(self.workdir, self.pki, self.broker)
        self.observer = Observer(self.pki, self.broker, self.node)
        self.data_dir = self.workdir / "agent"

    async def __aenter__(self) -> Rig:
        await asyncio.to_thread(self._build)
        await self.observer.start()
        return self

    def _build(self) -> None:
        self.netns.create()
        # IPv6 link-local chatter (router solicitations, MLD) on a fresh veth is not the agent's: the device
        # speaks IPv4 to the broker here
        for argv in (["sysctl", "-qw", f"net.ipv6.conf.{self.netns.host_if}.disable_ipv6=1"],
                     self.netns.exec_argv(["sysctl", "-qw", f"net.ipv6.conf.{self.netns.ns_if}.disable_ipv6=1"])):
            subprocess.run(argv, check=False, capture_output=True, timeout=30)
        self.broker.start()
        self.coord.start()
        self._identity()

    async def __aexit__(self, *exc: object) -> None:
        await self.observer.stop()
        await asyncio.to_thread(self._teardown)

    def _teardown(self) -> None:
        self.coord.stop()
        self.broker.stop()
        self.netns.delete()

    def _identity(self) -> None:
        """The node's enrolled identity, as enrolment leaves it (edge_agent.identity), from the cluster CA."""
        self.pki.issue_nodes([self.node])
        d = self.data_dir / "identity"
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copy(self.pki.cert_dir / f"{self.node}.pem", d / "node.pem")
        shutil.copy(self.pki.cert_dir / f"{self.node}.key", d / "node.key")
        shutil.copy(self.pki.ca_file, d / "ca.pem")
        now = time.time()
        meta = {"node_id": self.node, "api_url": self.coord.url, "broker_url": f"mqtts://{self.broker.host}:"
                f"{self.broker.port}", "not_before": now - 60, "not_after": now + 7 * 86400}
        (d / "enrolment.json").write_text(json.dumps(meta))

    def node_view(self) -> dict[str, Any]:
        req = urllib.request.Request(f"{self.coord.url}/v1/nodes/{self.node}",
                                     headers={"Authorization": f"Bearer {self.coord.token}"})
        try:
            with urllib.request.urlopen(req, timeout=10, context=self.coord.ssl_context()) as r:
                return dict(json.loads(r.read()))
        except OSError:
            return {}

    def start_agent(self, profile: str, flags: list[str], log: Path) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "cloudless", "--log-level", "INFO", "agent", "--data-dir", str(self.data_dir),
                "--node-id", self.node, "--profile", profile, "--runtime", "process", "--metrics-listen", "off",
                *flags]
        with log.open("ab") as err:  # the child keeps its own descriptor
            return subprocess.Popen(self.netns.exec_argv(argv), stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT,
                                    start_new_session=True)

    async def measure(self, profile: str, window_s: float, flags: list[str], *, settle_s: float = 3.0) -> Window:
        """Start the agent with `flags`, wait until online and heartbeating, settle, count over `window_s`."""
        log = self.workdir / f"agent-{profile}.log"
        proc = self.start_agent(profile, flags, log)
        try:
            await until(lambda: self.node_view().get("online") is True and self.observer.heartbeats > 0, 60,
                        f"agent {profile} online", log, proc)
            await asyncio.sleep(settle_s)  # the connect burst (retained desired state, peers, services) is over
            before, hb0, st0, pay0, ov0 = (Counters.read(self.netns.host_if), self.observer.heartbeats,
                                           self.observer.statuses, self.observer.payload, self.observer.overlays)
            t0 = time.monotonic()
            bursts = await count_bursts(self.netns.host_if, before, t0 + window_s)
            after = Counters.read(self.netns.host_if)
            return Window(time.monotonic() - t0, after - before, self.observer.heartbeats - hb0,
                          self.observer.statuses - st0, self.observer.payload - pay0,
                          self.observer.overlays - ov0, bursts)
        finally:
            kill_group(proc)


async def count_bursts(veth: str, start: Counters, end: float) -> int:
    """Runs of veth activity separated by at least QUIET_S of silence, until the monotonic time `end`."""
    bursts, last, last_change = 0, start, -QUIET_S
    while (now := time.monotonic()) < end:
        await asyncio.sleep(POLL_S)
        current = Counters.read(veth)
        if current != last:
            if now - last_change >= QUIET_S:
                bursts += 1
            last, last_change = current, now
    return bursts


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"


async def until(pred: Any, seconds: float, what: str, log: Path, proc: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pred():
            return
        if proc.poll() is not None:
            break
        await asyncio.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}\n--- agent log:\n{await asyncio.to_thread(tail, log)}")


async def measure_profile(rig: Rig, label: str, profile_name: str, *, ka_window: float, hb_window: float,
                          overlay_window: float, real_window: float) -> Row:
    profile = load_profile(profile_name)
    ka = await rig.measure(profile_name, ka_window, ["--keepalive", str(KA_SHORT_S), "--heartbeat-interval", "3600",
                                                     "--heartbeat-max-interval", str(int(DAY_S)), "--no-overlay"])
    hb = await rig.measure(profile_name, hb_window, ["--keepalive", "3600", "--heartbeat-interval", str(HB_SHORT_S),
                                                     "--no-overlay"])
    ov = await rig.measure(profile_name, overlay_window, ["--keepalive", "3600", "--heartbeat-interval", "60",
                                                          "--heartbeat-max-interval", "60"]) \
        if overlay_window > 0 else None
    real = await rig.measure(profile_name, real_window, []) if real_window > 0 else None
    return Row(label, profile_name, profile.link.keepalive_s, profile.link.heartbeat_max_interval_s,
               costs_of(ka, hb, ov), ka, hb, ov, real)


async def run(args: argparse.Namespace) -> list[Row]:
    workdir = Path(tempfile.mkdtemp(prefix="cl-bench-ctl-"))
    try:
        async with Rig(workdir) as rig:
            rows = []
            for label in args.profiles:
                real = args.real_window if label == "default" else 0.0
                rows.append(await measure_profile(rig, label, PROFILES[label], ka_window=args.ka_window,
                                                  hb_window=args.hb_window, overlay_window=args.overlay_window,
                                                  real_window=real))
            return rows
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# ---- report ----------------------------------------------------------------------------------------------------


def shipped_target(r: Row) -> str:
    unit, limit = BUDGETS.get(r.label, ("day", MIB))
    value = MONTH_DAYS * r.shipped_per_day if unit == "month" else r.shipped_per_day
    return f"≤ 1 MiB/{unit}: {'met' if value <= limit else '**missed**'}"


def human(n: float) -> str:
    return f"{n / MIB:.2f} MiB" if n >= 0.1 * MIB else f"{n / 1024:.1f} KiB"


def duration(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def others(rows: list[Row]) -> str:
    """Every other shipped profile, computed from the default profile's measured per-event bytes (the messages are
    the same; a heartbeat differs by a few bytes where a battery is read)."""
    from firmware_profiles import load_all

    base = next((r for r in rows if r.label == "default"), rows[0])
    measured = {r.profile for r in rows}
    lines: list[list[object]] = [[f"`{p.name}`", f"{p.link.keepalive_s} s", duration(p.link.heartbeat_max_interval_s),
              duration(1.5 * p.link.keepalive_s), human(per_day(base.costs, p.link.keepalive_s,
                                                                p.link.heartbeat_max_interval_s)),
              human(MONTH_DAYS * per_day(base.costs, p.link.keepalive_s, p.link.heartbeat_max_interval_s)),
              "yes" if p.metered else "no"]
             for p in load_all() if p.name not in measured]
    return (f"The other shipped profiles, computed with the `{base.profile}` run's per-event bytes:\n\n"
            + table(["profile", "keep-alive", "heartbeat max", "silent power-off detected after", "per day",
                     "per month", "metered"], lines))


def body(rows: list[Row], args: argparse.Namespace) -> str:
    main = table(
        ["profile", "keep-alive", "heartbeat max", "silent power-off detected after", "bytes / keep-alive exchange",
         "bytes / heartbeat", "per day", "per month (30 d)", "target"],
        [[f"{r.label} (`{r.profile}`)", f"{r.keepalive_s} s", duration(r.heartbeat_max_s), duration(r.detection_s),
          f"{r.costs.per_exchange:.0f} (n={r.costs.exchanges})",
          f"{r.costs.per_heartbeat:.0f} (n={r.costs.heartbeats})",
          human(r.per_day), human(r.per_month),
          f"≤ 1 MiB/{BUDGETS[r.label][0]}: {'met' if r.within_budget else '**missed**'}"] for r in rows])
    shipped = table(
        ["profile", "bytes / overlay report", "overlay reports / day", "per day with the overlay",
         "per month with the overlay", "target"],
        [[f"{r.label} (`{r.profile}`)", f"{r.costs.per_overlay:.0f} (n={r.costs.overlays})",
          f"{DAY_S / overlay_refresh_s(r.heartbeat_max_s):.0f}", human(r.shipped_per_day),
          human(MONTH_DAYS * r.shipped_per_day), shipped_target(r)] for r in rows])
    text = [main, "", "The table above is the control link itself (keep-alive, heartbeats, status). With the overlay "
            "on (the default), the agent also republishes its unchanged overlay report (retained, QoS 1) every "
            f"max({OVERLAY_REFRESH_S:.0f} s, the profile's heartbeat maximum); path changes go out at once. As the "
            "agent ships:", "", shipped, "",
            others(rows), ""]
    for r in rows:
        if r.real is not None:
            w = r.real
            measured = w.delta.ip_bytes * DAY_S / w.seconds
            text.append(f"Check at the real timers ({r.profile}, {w.seconds:.0f} s window): {w.delta.ip_bytes} bytes "
                        f"at the IP level ({w.delta.out_bytes - ETHERNET_HEADER * w.delta.out_packets} out, "
                        f"{w.delta.in_bytes - ETHERNET_HEADER * w.delta.in_packets} in), {w.heartbeats} heartbeats, "
                        f"{w.statuses} status messages: **{human(measured)}/day** measured, against "
                        f"{human(r.per_day)}/day computed. ")
    text.append(
        f"How: one real `cloudless agent` (process runtime, enrolled certificate, TLS to Mosquitto, a real "
        f"`cloudless coordinator`) in its own network namespace; bytes are the veth's counters, both directions, at "
        f"the IP level (frames less 14 bytes each). Per profile, a {args.ka_window:.0f} s window with "
        f"`--keepalive {KA_SHORT_S}` and no heartbeat due gives the bytes of one keep-alive exchange (PINGREQ, "
        f"PINGRESP, ACK; each one burst of packets on the veth), a {args.hb_window:.0f} s window with a heartbeat "
        f"every {HB_SHORT_S:g} s and no keep-alive due gives the bytes of one heartbeat (counted by an observer on the "
        f"broker); per day = 86400 / keep-alive x exchange + 86400 / heartbeat maximum x heartbeat, with the "
        f"profile's real timers (an idle device heartbeats only at its maximum interval and republishes its status "
        f"only on change). Detection of a silent power-off = 1.5 x keep-alive (the broker publishes the last will). "
        f"Before issue 17 (keep-alive 10 s, a heartbeat and status check every 10 s): 3.5 MiB/day out + 1.5 MiB/day "
        f"in at the IP level, detection 15 s.")
    return "\n".join(text)


def window_json(w: Window) -> dict[str, Any]:
    return {"seconds": w.seconds, "ip_bytes": w.delta.ip_bytes, "link_bytes": w.delta.link_bytes,
            "out_bytes": w.delta.out_bytes, "in_bytes": w.delta.in_bytes, "out_packets": w.delta.out_packets,
            "in_packets": w.delta.in_packets, "heartbeats": w.heartbeats, "statuses": w.statuses,
            "heartbeat_payload": w.heartbeat_payload, "overlays": w.overlays, "bursts": w.bursts}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profiles", nargs="+", choices=sorted(PROFILES), default=["default", "metered"])
    p.add_argument("--ka-window", type=float, default=60.0, help="seconds of the keep-alive window")
    p.add_argument("--hb-window", type=float, default=40.0, help="seconds of the heartbeat window")
    p.add_argument("--overlay-window", type=float, default=125.0, help="seconds of the overlay-report window")
    p.add_argument("--real-window", type=float, default=0.0,
                   help="also run the default profile at its real timers this long (0: not)")
    p.add_argument("--quick", action="store_true", help="short windows (smoke test)")
    p.add_argument("--doc", type=Path, default=DOC)
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = p.parse_args(argv)
    if args.quick:
        args.ka_window, args.hb_window, args.overlay_window = 12.0, 8.0, 0.0  # no overlay window: fast
    rows = asyncio.run(run(args))
    text = body(rows, args)
    print(text)
    command = "python bench/control_link.py" + (f" --real-window {args.real_window:g}" if args.real_window else "")
    write_section("control-link", "Control link: idle traffic per device, per profile", text, command=command,
                  doc=args.doc)
    if args.json is not None:
        args.json.write_text(json.dumps([{
            "label": r.label, "profile": r.profile, "keepalive_s": r.keepalive_s, "heartbeat_max_s": r.heartbeat_max_s,
            "per_exchange": r.costs.per_exchange, "per_heartbeat": r.costs.per_heartbeat,
            "exchanges": r.costs.exchanges, "heartbeats": r.costs.heartbeats, "per_day": r.per_day,
            "per_month": r.per_month, "within_budget": r.within_budget, "detection_s": r.detection_s,
            "per_overlay": r.costs.per_overlay, "overlays": r.costs.overlays, "shipped_per_day": r.shipped_per_day,
            "windows": {name: window_json(w) for name, w in (("keepalive", r.keepalive_window),
                                                             ("heartbeat", r.heartbeat_window),
                                                             ("overlay", r.overlay_window), ("real", r.real))
                        if w is not None},
        } for r in rows], indent=2))
    return 0 if all(r.within_budget for r in rows) else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        sys.exit(main())

"""Broker throughput, latency and memory: the embedded broker (amqtt) against Mosquitto, through `MqttClient`.

Each broker runs as its own process on a free 127.0.0.1 port with the same users and ACL: the embedded one through
`python -m cloudless broker`, Mosquitto with the configuration `broker.mosquitto.write` generates (what production
runs). The benchmark process holds every client, all of them our adapter `broker.client.MqttClient`:

- idle RSS of the broker process (psutil) after startup and a settle pause, then with N idle node clients connected,
  each subscribed to its own `desired` topic as an agent would be;
- QoS 0 and QoS 1 throughput, end to end: a coordinator identity publishes ~100-byte heartbeats on a node topic and
  another coordinator identity counts what it *receives*. QoS 1 keeps at most 100 publishes awaiting PUBACK; QoS 1
  and QoS 0 both keep the publisher at most 500 messages ahead of the subscriber (beyond that a broker may drop
  messages for a slow subscriber and we would time losses, not delivery);
- publish->receive latency of sequential QoS 1 messages at a low rate (P50/P95);
- last, an unpaced QoS 1 burst (PUBACK window only): how many messages a broker drops for a subscriber that falls
  behind although the publisher got its PUBACK.

Every loop stops at a message count or a time limit, whichever comes first; broker processes are always terminated
(then killed). Results go to stdout and to this script's section of docs/benchmarks.md (`bench/report.py`).

    .venv/bin/python bench/broker_throughput.py            # full run, < 2 min on 2 cores
    .venv/bin/python bench/broker_throughput.py --quick --doc /tmp/b.md   # smoke run, < 20 s
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # bench/ is not installed: make `bench` and `broker` importable when run as a script
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from bench.report import DOC, table, write_section  # noqa: E402
from broker import mosquitto  # noqa: E402
from broker.acl import Acl, Role  # noqa: E402
from broker.auth import AuthFiles  # noqa: E402
from broker.client import Message, MqttClient, MqttSettings, Secret  # noqa: E402
from broker.errors import MqttError  # noqa: E402
from broker.outbox import Outcome  # noqa: E402
from broker.passwords import hash_password  # noqa: E402
from broker.wire import codec, messages, topics  # noqa: E402

log = logging.getLogger("bench.broker_throughput")

HOST = "127.0.0.1"
PUBLISHER = "coordinator@bench-pub"
SUBSCRIBER = "coordinator@bench-sub"
QOS1_WINDOW = 100  # publishes awaiting PUBACK (also MqttSettings.max_inflight's default)
RECEIVE_WINDOW = 500  # how far a paced publisher may run ahead of what the subscriber received
BATCH = 50  # publishes handed to paho between two yields to the event loop
STALL_S = 0.5  # no delivery for this long: count what is outstanding as lost and go on
MIB = 1024 * 1024
SATURATED = 85.0  # % of one core from which a process counts as the bottleneck


@dataclass(frozen=True)
class Profile:
    qos0_messages: int
    qos1_messages: int
    phase_limit_s: float  # each throughput phase stops here even if not all messages went out
    latency_messages: int
    latency_gap_s: float
    idle_clients: int
    settle_s: float
    burst_messages: int  # QoS 1 sent with the PUBACK window only, to show what a broker drops
    repeats: int  # throughput runs per QoS; the best is reported (other load on the machine only slows a run)


FULL = Profile(qos0_messages=15_000, qos1_messages=8_000, phase_limit_s=7.0, latency_messages=200,
               latency_gap_s=0.005, idle_clients=50, settle_s=2.0, burst_messages=5_000, repeats=3)
QUICK = Profile(qos0_messages=2_000, qos1_messages=1_000, phase_limit_s=2.0, latency_messages=30,
                latency_gap_s=0.002, idle_clients=5, settle_s=0.5, burst_messages=1_500, repeats=1)


# ---- broker processes ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {HOST}:{port} after {timeout}s")


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
    if found is None:
        raise SystemExit("mosquitto is not installed: run scripts/install-system-deps.sh (make bench does)")
    return found


@dataclass
class BrokerProcess:
    kind: str  # "embedded" | "mosquitto"
    workdir: Path
    auth_dir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_file(self) -> Path:
        return self.workdir / "broker.log"

    def start(self, timeout: float = 20.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.kind == "embedded":
            self._start_embedded(timeout)
        else:
            self._start_mosquitto(timeout)

    def _start_embedded(self, timeout: float) -> None:
        argv = [sys.executable, "-m", "cloudless", "--log-level", "WARNING", "broker", "--host", HOST,
                "--port", "0", "--auth-dir", str(self.auth_dir)]
        with self.log_file.open("ab") as err:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, cwd=ROOT)
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:  # readline() alone could wait forever on a hung broker
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise TimeoutError(f"embedded broker printed nothing in {timeout}s; see {self.log_file}")
        line = self.proc.stdout.readline().decode()
        if "listening on" not in line:
            raise RuntimeError(f"embedded broker did not start: {line!r}; log: {self.log_tail()}")
        self.port = int(line.rsplit(":", 1)[1])

    def _start_mosquitto(self, timeout: float) -> None:
        self.port = free_port()
        settings = mosquitto.MosquittoSettings(
            out_dir=self.workdir / "conf", host=HOST, port=self.port, persistence_dir=self.workdir / "data",
            run_as_user="root" if os.geteuid() == 0 else None,  # as root it would drop to a `mosquitto` user
        )
        mosquitto.write(settings, AuthFiles.load(self.auth_dir))
        with self.log_file.open("ab") as out:
            self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(settings.out_dir / mosquitto.CONF_FILE)],
                                         stdout=out, stderr=subprocess.STDOUT)
        wait_port(self.port, timeout)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def _ps(self) -> psutil.Process:
        assert self.proc is not None
        return psutil.Process(self.proc.pid)

    def rss(self) -> int:
        return int(self._ps().memory_info().rss)

    def cpu_s(self) -> float:
        t = self._ps().cpu_times()
        return float(t.user + t.system)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def make_auth(auth_dir: Path, idle_clients: int) -> dict[str, str]:
    """Two coordinators for the traffic and one node user per idle client (client id = username on both brokers)."""
    passwords = {u: secrets.token_urlsafe(12) for u in (PUBLISHER, SUBSCRIBER, *idle_users(idle_clients))}
    AuthFiles(users={u: hash_password(p, iterations=1000) for u, p in passwords.items()},
              acl=Acl(user_roles={PUBLISHER: Role.COORDINATOR, SUBSCRIBER: Role.COORDINATOR})).save(auth_dir)
    return passwords


def idle_users(n: int) -> list[str]:
    return [f"bench-idle-{i:03d}" for i in range(n)]


# ---- measurements -----------------------------------------------------------------------------------------------


@dataclass
class Counter:
    """Subscriber handler counting deliveries; `waiter` lets the latency phase wait for the next one."""

    count: int = 0
    last: float = 0.0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    waiter: asyncio.Future[float] | None = None

    def __call__(self, _msg: Message) -> None:
        self.count += 1
        self.last = time.perf_counter()
        self.changed.set()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(self.last)


@dataclass
class Throughput:
    sent: int = 0
    received: int = 0
    seconds: float = 0.0
    client_cpu: float = 0.0  # % of one core, the whole benchmark process (publisher + subscriber)
    broker_cpu: float = 0.0  # % of one core
    other_cpu: float = 0.0  # % of one core used by every other process on the machine meanwhile

    @property
    def rate(self) -> float:
        return self.received / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Results:
    idle_rss: int = 0
    clients_rss: int = 0
    after_rss: int = 0
    qos0: list[Throughput] = field(default_factory=list)  # one per repeat
    qos1: list[Throughput] = field(default_factory=list)
    burst: Throughput = field(default_factory=Throughput)
    latency_ms: list[float] = field(default_factory=list)
    latency_lost: int = 0


def heartbeat(node_id: str, seq: int) -> bytes:
    """A real heartbeat as agents send it (~100 bytes); encoded once per phase so the codec is not measured."""
    hb = messages.Heartbeat(node_id=node_id, seq=seq, ts=time.time(), cpu_percent=12.5,
                            memory_used_bytes=123_456_789)
    return codec.encode(hb)


def settings_for(broker: BrokerProcess, user: str, passwords: dict[str, str]) -> MqttSettings:
    return MqttSettings(HOST, broker.port, client_id=user, username=user, password=Secret(passwords[user]))


async def connected(clients: list[MqttClient], *, within_s: float) -> None:
    for c in clients:
        await c.start()
    await asyncio.gather(*(c.wait_connected(within_s) for c in clients))


async def stop_all(clients: list[MqttClient]) -> None:
    await asyncio.gather(*(c.stop() for c in clients), return_exceptions=True)


async def rss_with_idle_clients(broker: BrokerProcess, passwords: dict[str, str], p: Profile) -> int:
    clients = [MqttClient(settings_for(broker, u, passwords)) for u in idle_users(p.idle_clients)]
    try:
        await connected(clients, within_s=20.0)
        for c, user in zip(clients, idle_users(p.idle_clients), strict=True):
            await c.subscribe(topics.node_desired(user), lambda _m: None, qos=1)
        await asyncio.sleep(p.settle_s)
        return broker.rss()
    finally:
        await stop_all(clients)


async def drain(counter: Counter, expected: int, limit: float) -> None:
    """Wait until the subscriber has `expected` messages, progress stalls for STALL_S, or `limit` passes."""
    while counter.count < expected and time.perf_counter() < limit:
        counter.changed.clear()
        try:
            await asyncio.wait_for(counter.changed.wait(), STALL_S)
        except TimeoutError:
            return


def busy_s() -> float:
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


async def measured(broker: BrokerProcess, out: Throughput, phase: Awaitable[None]) -> Throughput:
    """Run `phase` (a coroutine not yet started) and record in `out` the CPU each side used over its wall time."""
    me = psutil.Process()
    c0, b0, s0, t0 = sum(me.cpu_times()[:2]), broker.cpu_s(), busy_s(), time.perf_counter()
    await phase
    wall = max(time.perf_counter() - t0, 1e-9)
    client, brk = sum(me.cpu_times()[:2]) - c0, broker.cpu_s() - b0
    out.client_cpu, out.broker_cpu = 100 * client / wall, 100 * brk / wall
    out.other_cpu = max(0.0, 100 * (busy_s() - s0 - client - brk) / wall)
    return out


@dataclass
class Pacer:
    """Keeps the publisher at most `window` messages ahead of what the subscriber received.

    Without it the brokers drop messages for a slow subscriber (Mosquitto past `max_queued_messages`, QoS 1
    included) and the phase would time the losses. Messages not delivered within STALL_S count as lost and are
    not waited for again."""

    counter: Counter
    window: int
    base: int = 0
    lost: int = 0

    def __post_init__(self) -> None:
        self.base = self.counter.count

    def received(self) -> int:
        return self.counter.count - self.base

    def blocked(self, sent: int) -> bool:
        return sent - self.received() - self.lost >= self.window

    async def wait(self, sent: int) -> None:
        self.counter.changed.clear()
        try:
            await asyncio.wait_for(self.counter.changed.wait(), STALL_S)
        except TimeoutError:
            self.lost = sent - self.received()


async def finish(pacer: Pacer, out: Throughput, start: float, limit: float) -> None:
    await drain(pacer.counter, pacer.base + out.sent, limit)
    out.received = pacer.received()
    out.seconds = (pacer.counter.last - start) if out.received else 0.0


async def qos0_phase(pub: MqttClient, counter: Counter, p: Profile, out: Throughput) -> None:
    topic, payload = topics.node_heartbeat("bench-q0"), heartbeat("bench-q0", 1)
    pacer = Pacer(counter, RECEIVE_WINDOW)
    start = time.perf_counter()
    deadline = start + p.phase_limit_s
    while out.sent < p.qos0_messages and time.perf_counter() < deadline:
        if pacer.blocked(out.sent):
            await pacer.wait(out.sent)
            continue
        for _ in range(min(BATCH, p.qos0_messages - out.sent)):
            pub.publish_nowait(topic, payload, qos=0)  # future settles when written; nothing to wait for
            out.sent += 1
        await asyncio.sleep(0)
    await finish(pacer, out, start, deadline + 5.0)


async def qos1_phase(pub: MqttClient, counter: Counter, p: Profile, out: Throughput, *, messages: int,
                     paced: bool = True) -> None:
    """QoS 1 with at most QOS1_WINDOW publishes awaiting PUBACK; `paced` also applies the receive window."""
    node = "bench-q1" if paced else "bench-burst"
    topic, payload = topics.node_reply(node), heartbeat(node, 1)
    pacer = Pacer(counter, RECEIVE_WINDOW if paced else messages + 1)
    pending: set[asyncio.Future[Outcome]] = set()
    failed = 0
    start = time.perf_counter()
    deadline = start + p.phase_limit_s
    while out.sent < messages and time.perf_counter() < deadline:
        if pacer.blocked(out.sent):
            await pacer.wait(out.sent)
            continue
        if len(pending) >= QOS1_WINDOW:
            done, pending = await asyncio.wait(pending, timeout=max(deadline - time.perf_counter(), 0.01),
                                               return_when=asyncio.FIRST_COMPLETED)
            failed += sum(1 for f in done if f.exception() is not None)
            continue
        pending.add(pub.publish_nowait(topic, payload, qos=1))
        out.sent += 1
        if out.sent % BATCH == 0:
            await asyncio.sleep(0)
    if pending:
        done, pending = await asyncio.wait(pending, timeout=5.0)
        failed += sum(1 for f in done if f.exception() is not None) + len(pending)
    if failed:
        log.warning("%d QoS 1 publishes got no PUBACK", failed)
    await finish(pacer, out, start, deadline + 5.0)


async def latency_phase(pub: MqttClient, counter: Counter, p: Profile, res: Results) -> None:
    topic, payload = topics.node_reply("bench-lat"), heartbeat("bench-lat", 1)
    loop = asyncio.get_running_loop()
    acks: list[asyncio.Future[Outcome]] = []
    deadline = time.perf_counter() + max(p.phase_limit_s, 5.0)
    for _ in range(p.latency_messages):
        if time.perf_counter() > deadline:
            break
        counter.waiter = loop.create_future()
        sent_at = time.perf_counter()
        acks.append(pub.publish_nowait(topic, payload, qos=1))
        try:
            received_at = await asyncio.wait_for(counter.waiter, 2.0)
        except TimeoutError:
            res.latency_lost += 1
            continue
        res.latency_ms.append((received_at - sent_at) * 1000)
        await asyncio.sleep(p.latency_gap_s)
    counter.waiter = None
    if acks:
        await asyncio.wait(acks, timeout=5.0)


async def measure(broker: BrokerProcess, passwords: dict[str, str], p: Profile) -> Results:
    res = Results()
    await asyncio.sleep(p.settle_s)
    res.idle_rss = broker.rss()
    res.clients_rss = await rss_with_idle_clients(broker, passwords, p)

    pub = MqttClient(settings_for(broker, PUBLISHER, passwords))
    sub = MqttClient(settings_for(broker, SUBSCRIBER, passwords))
    counter = Counter()
    try:
        await connected([pub, sub], within_s=20.0)
        for node in ("bench-q0", "bench-q1", "bench-lat", "bench-burst"):
            await sub.subscribe(topics.node_filter(node), counter, qos=1)
        warm = [pub.publish_nowait(topics.node_reply("bench-q1"), b"warm-up", qos=1) for _ in range(100)]
        await asyncio.wait(warm, timeout=5.0)
        await drain(counter, 100, time.perf_counter() + 5.0)

        for _ in range(p.repeats):
            t = Throughput()
            res.qos0.append(await measured(broker, t, qos0_phase(pub, counter, p, t)))
        for _ in range(p.repeats):
            t = Throughput()
            res.qos1.append(await measured(broker, t, qos1_phase(pub, counter, p, t, messages=p.qos1_messages)))
        await latency_phase(pub, counter, p, res)
        await qos1_phase(pub, counter, p, res.burst, messages=p.burst_messages, paced=False)  # last: may drop
        res.after_rss = broker.rss()
    finally:
        await stop_all([pub, sub])
    return res


# ---- report -------------------------------------------------------------------------------------------------------


def quantile(samples: list[float], q: int) -> float:
    if not samples:
        return 0.0
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


def best(runs: list[Throughput]) -> Throughput:
    return max(runs, key=lambda t: t.rate, default=Throughput())


def runs_text(runs: list[Throughput]) -> str:
    return " / ".join(f"{t.rate:,.0f}" for t in runs)


def sent_text(t: Throughput) -> str:
    return f"{t.received:,} / {t.sent:,} in {t.seconds:.1f} s"


def cpu_text(t: Throughput) -> str:
    return f"{t.client_cpu:.0f} / {t.broker_cpu:.0f} / {t.other_cpu:.0f}"


def render(results: dict[str, Results], p: Profile) -> str:
    cols = list(results)
    r = [results[c] for c in cols]

    def row(label: str, fn: Callable[[Results], object]) -> list[object]:
        return [label, *(fn(x) for x in r)]

    def mib(n: int) -> str:
        return f"{n / MIB:.1f}"

    rows = [
        row("QoS 0 msg/s received", lambda x: f"{best(x.qos0).rate:,.0f}"),
        row("QoS 0 msg/s, each run", lambda x: runs_text(x.qos0)),
        row("QoS 0 received / sent (best run)", lambda x: sent_text(best(x.qos0))),
        row("QoS 1 msg/s received", lambda x: f"{best(x.qos1).rate:,.0f}"),
        row("QoS 1 msg/s, each run", lambda x: runs_text(x.qos1)),
        row("QoS 1 received / sent (best run)", lambda x: sent_text(best(x.qos1))),
        row(f"QoS 1 unpaced burst ({p.burst_messages:,}): received", lambda x: f"{x.burst.received:,}"),
        row("CPU % QoS 0, best run (bench / broker / other)", lambda x: cpu_text(best(x.qos0))),
        row("CPU % QoS 1, best run (bench / broker / other)", lambda x: cpu_text(best(x.qos1))),
        row("QoS 1 latency P50 ms", lambda x: f"{quantile(x.latency_ms, 50):.2f}"),
        row("QoS 1 latency P95 ms", lambda x: f"{quantile(x.latency_ms, 95):.2f}"),
        row("latency samples (lost)", lambda x: f"{len(x.latency_ms)} ({x.latency_lost})"),
        row("idle RSS MiB", lambda x: mib(x.idle_rss)),
        row(f"RSS MiB with {p.idle_clients} idle clients", lambda x: mib(x.clients_rss)),
        row("KiB per idle client", lambda x: f"{(x.clients_rss - x.idle_rss) / 1024 / max(p.idle_clients, 1):.0f}"),
        row("RSS MiB after the traffic", lambda x: mib(x.after_rss)),
    ]
    names = {"embedded": "embedded (amqtt 0.12.1)", "mosquitto": "Mosquitto"}
    return table(["", *(names.get(c, c) for c in cols)], rows)


def limit_note(results: dict[str, Results]) -> str:
    """One line naming the saturated side, from the CPU each process used during the throughput phases."""
    parts = []
    for name, x in results.items():
        q0, q1 = best(x.qos0), best(x.qos1)
        client, broker = max(q0.client_cpu, q1.client_cpu), max(q0.broker_cpu, q1.broker_cpu)
        if min(client, broker) >= SATURATED:
            side = "both processes"
        else:
            side = "the client side (paho in Python)" if client >= broker else "the broker process"
        parts.append(f"{name}: {side}, at {client:.0f}% (bench) vs {broker:.0f}% (broker) of a core")
    return (
        "What limits the numbers: publisher and subscriber share one Python process, i.e. at most one core for all "
        f"client-side paho work; {'; '.join(parts)}."
    )


def body(results: dict[str, Results], p: Profile, payload_bytes: int, elapsed: float) -> str:
    return "\n".join([
        f"Publisher and subscriber are `broker.client.MqttClient` (paho 2.x, MQTT 3.1.1) as two coordinator "
        f"identities on 127.0.0.1; payload: a {payload_bytes}-byte heartbeat. Throughput counts messages *received* "
        f"(the publisher stays ≤ {RECEIVE_WINDOW} messages ahead of the subscriber; QoS 1: ≤ {QOS1_WINDOW} awaiting "
        f"PUBACK), "
        f"up to {p.qos0_messages:,} / {p.qos1_messages:,} messages or {p.phase_limit_s:.0f} s per run, best of "
        f"{p.repeats} runs (\"other\" CPU is the rest of the machine: other load only slows a run). Latency: "
        f"{p.latency_messages} sequential QoS 1 messages, publish to delivery. Idle clients are node identities each "
        f"subscribed to its `desired` topic. Mosquitto runs the generated production config "
        f"(`max_inflight_messages 20`, `max_queued_messages {mosquitto.MosquittoSettings.max_queued_messages}`, "
        f"`max_queued_bytes {mosquitto.MosquittoSettings.max_queued_bytes}`, persistence on). "
        f"The unpaced burst sends QoS 1 "
        f"with only the PUBACK window: every message was PUBACKed to the publisher, and what the subscriber did not "
        f"receive the broker dropped (Mosquitto logs `Outgoing messages are being dropped`).",
        "",
        render(results, p),
        "",
        limit_note(results),
        "",
        f"Whole run: {elapsed:.0f} s.",
    ])


# ---- main ---------------------------------------------------------------------------------------------------------


def run(p: Profile, kinds: list[str]) -> dict[str, Results]:
    results: dict[str, Results] = {}
    with tempfile.TemporaryDirectory(prefix="cloudless-bench-") as tmp:
        auth_dir = Path(tmp) / "auth"
        passwords = make_auth(auth_dir, p.idle_clients)
        for kind in kinds:
            broker = BrokerProcess(kind, Path(tmp) / kind, auth_dir)
            try:
                broker.start()
                results[kind] = asyncio.run(measure(broker, passwords, p))
            except (MqttError, OSError, RuntimeError, TimeoutError):
                print(f"--- {kind} broker log (tail) ---\n{broker.log_tail()}", file=sys.stderr)
                raise
            finally:
                broker.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="a few seconds per broker (smoke test), not real numbers")
    ap.add_argument("--doc", type=Path, default=DOC, help=f"markdown file to update (default: {DOC})")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # SIGTERM (e.g. a CI timeout) unwinds through the `finally` blocks, so no broker process outlives us
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    p = QUICK if args.quick else FULL
    mosquitto_binary()  # exits with a message when it is missing, before any broker starts
    started = time.monotonic()
    results = run(p, ["embedded", "mosquitto"])
    elapsed = time.monotonic() - started
    text = body(results, p, len(heartbeat("bench-q0", 1)), elapsed)
    print(text)
    command = "python bench/broker_throughput.py" + (" --quick" if args.quick else "")
    path = write_section(name="broker_throughput", title="MQTT brokers: embedded (amqtt) vs Mosquitto",
                         body=text, command=command, doc=args.doc)
    print(f"\nwrote {path} ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

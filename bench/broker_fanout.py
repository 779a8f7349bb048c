"""Embedded broker at fleet size: amqtt's scan of every subscription per message vs the subscription trie.

Issue 17 found the embedded broker saturating between 500 and 2,000 nodes because amqtt matched every message
against every client's filters. This bench runs the embedded broker as its own process twice per fleet size, once
with the old delivery path (`EmbeddedBrokerSettings.scan_delivery`, kept for this bench only) and once with the
trie (the default), under the same load:

- N simulated nodes, each an MQTT connection whose identity is a node (so the node ACL applies), subscribed like an
  agent to its own `cloudless/v1/node/<id>/desired`, `.../peers` and `.../cmd` (QoS 1);
- one coordinator identity subscribed to `cloudless/v1/node/+/heartbeat`;
- every node publishes a ~100-byte QoS 0 heartbeat every HEARTBEAT_S seconds (phases spread evenly), for a bounded
  time, on its own heartbeat topic; the payload carries the send time (CLOCK_MONOTONIC, shared by both processes).

Measured per run: heartbeats delivered to the coordinator / sent, broker CPU (% of one core, psutil, over the
publishing window), broker RSS, p50/p99 publish->delivery latency, and the time for all N nodes to connect and
have their SUBACK. Clients are a minimal asyncio MQTT 3.1.1 codec in this process (paho's thread per client does
not scale to thousands here); everything is on 127.0.0.1, every loop is bounded, brokers are always stopped.

    .venv/bin/python bench/broker_fanout.py                     # N = 500 and 2,000, both paths (~4 min)
    .venv/bin/python bench/broker_fanout.py --quick --doc /tmp/b.md   # smoke run (N = 30), < 30 s
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import statistics
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # bench/ is not installed: make `bench` and `broker` importable when run as a script
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from bench.report import DOC, table, write_section  # noqa: E402
from broker.wire import topics  # noqa: E402

log = logging.getLogger("bench.broker_fanout")

HOST = "127.0.0.1"
COORDINATOR = "coordinator@bench"
HEARTBEAT_S = 10.0  # the agent's default heartbeat interval: N/10 heartbeats per second reach the coordinator
CONNECT_CONCURRENCY = 64
DRAIN_S = 5.0  # after the last heartbeat, wait at most this long for deliveries still in the broker
MIB = 1024 * 1024


@dataclass(frozen=True)
class Profile:
    sizes: tuple[int, ...]
    publish_s: float  # publishing window per run
    connect_timeout_s: float


FULL = Profile(sizes=(500, 2000), publish_s=30.0, connect_timeout_s=120.0)
QUICK = Profile(sizes=(30,), publish_s=3.0, connect_timeout_s=30.0)


# ---- the broker process ----------------------------------------------------------------------------------------


def serve(scan: bool) -> int:
    """Run the embedded broker on a free port: every username is accepted as who it says (loopback bench), a node
    unless it contains '@' (then a coordinator). Prints the port like `cloudless broker` does."""
    from broker.acl import Acl, Identity, Role
    from broker.auth import AuthRejected, ConnectInfo
    from broker.embedded import EmbeddedBroker, EmbeddedBrokerSettings

    acl = Acl(user_roles={COORDINATOR: Role.COORDINATOR})

    class TrustingAuthenticator:  # bench only: the identity is the username, no password
        def authenticate(self, info: ConnectInfo) -> Identity | AuthRejected:
            return acl.identity(info.username) if info.username else AuthRejected("no username")

    async def run() -> None:
        broker = EmbeddedBroker(EmbeddedBrokerSettings(host=HOST, port=0, scan_delivery=scan),
                                authenticator=TrustingAuthenticator(), acl=acl)
        await broker.start()
        port = broker._servers["default"].instance.sockets[0].getsockname()[1]
        print(f"listening on {port}", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await broker.shutdown()

    logging.basicConfig(level=logging.ERROR)
    asyncio.run(run())
    return 0


@contextlib.contextmanager
def broker_process(scan: bool):  # type: ignore[no-untyped-def]
    argv = [sys.executable, str(Path(__file__).resolve()), "--serve"] + (["--scan"] if scan else [])
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if not line.startswith("listening on"):
            raise RuntimeError(f"broker did not start: {line!r}")
        yield proc, int(line.split()[-1])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- a minimal MQTT 3.1.1 client (§3.1 CONNECT, §3.8 SUBSCRIBE, §3.3 PUBLISH QoS 0) ---------------------------


def _str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def _packet(first: int, body: bytes) -> bytes:
    n, out = len(body), bytearray([first])
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out) + body


async def _read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = (await reader.readexactly(1))[0]
    mult = length = 0
    while True:
        byte = (await reader.readexactly(1))[0]
        length += (byte & 0x7F) << (7 * mult)
        mult += 1
        if not byte & 0x80:
            break
    return head >> 4, await reader.readexactly(length)


async def connect(port: int, username: str, filters: list[str]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(HOST, port)
    body = _str("MQTT") + bytes([4, 0x82]) + struct.pack("!H", 0) + _str(username) + _str(username)
    writer.write(_packet(0x10, body))
    ptype, ack = await _read_packet(reader)
    if ptype != 2 or ack[1] != 0:
        raise RuntimeError(f"{username}: CONNACK {ack!r}")
    if filters:
        sub = struct.pack("!H", 1) + b"".join(_str(f) + b"\x01" for f in filters)
        writer.write(_packet(0x82, sub))
        while True:
            ptype, suback = await _read_packet(reader)
            if ptype == 9:
                break
        if any(code == 0x80 for code in suback[2:]):
            raise RuntimeError(f"{username}: SUBSCRIBE refused {suback!r}")
    return reader, writer


def heartbeat(topic: str) -> bytes:
    payload = struct.pack("!q", time.monotonic_ns()) + b"h" * 92  # ~ a wire Heartbeat's size
    return _packet(0x30, _str(topic) + payload)


# ---- one run -----------------------------------------------------------------------------------------------------


@dataclass
class Result:
    nodes: int
    path: str
    join_s: float
    sent: int
    delivered: int
    cpu_pct: float
    rss_mib: float
    p50_ms: float
    p99_ms: float


async def run_once(port: int, proc: psutil.Process, nodes: int, path: str, p: Profile) -> Result:
    latencies: list[float] = []
    heartbeats = topics.node_channel_filter(topics.Channel.HEARTBEAT)
    coord_reader, coord_writer = await connect(port, COORDINATOR, [heartbeats])
    all_in = asyncio.Event()

    async def count() -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                ptype, body = await _read_packet(coord_reader)
                if ptype == 3:
                    (tlen,) = struct.unpack("!H", body[:2])
                    (sent_ns,) = struct.unpack("!q", body[2 + tlen : 10 + tlen])
                    latencies.append((time.monotonic_ns() - sent_ns) / 1e6)
                    if len(latencies) >= expected:
                        all_in.set()

    rate = nodes / HEARTBEAT_S
    expected = total = int(rate * p.publish_s)
    counter = asyncio.create_task(count())
    ids = [f"n{i:05d}" for i in range(nodes)]
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def node(node_id: str) -> asyncio.StreamWriter:
        async with gate:
            own = [topics.node_desired(node_id), topics.node_peers(node_id), topics.node_cmd(node_id)]
            _, writer = await connect(port, node_id, own)
            return writer

    started = time.monotonic()
    writers = await asyncio.wait_for(asyncio.gather(*(node(i) for i in ids)), p.connect_timeout_s)
    join_s = time.monotonic() - started
    try:
        frames = {i: topics.node_heartbeat(i) for i in ids}
        cpu0 = proc.cpu_times()
        t0 = time.monotonic()
        for k in range(total):  # heartbeats in node order, evenly spaced: each node every HEARTBEAT_S
            due = t0 + k / rate
            if (delay := due - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            idx = k % nodes
            writers[idx].write(heartbeat(frames[ids[idx]]))
        window = time.monotonic() - t0
        cpu1 = proc.cpu_times()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_in.wait(), DRAIN_S)
        rss = proc.memory_info().rss / MIB
    finally:
        counter.cancel()
        for w in [*writers, coord_writer]:
            w.close()
        await asyncio.gather(counter, return_exceptions=True)
    busy = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    qs = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [float("nan")] * 99
    return Result(nodes=nodes, path=path, join_s=join_s, sent=total, delivered=len(latencies),
                  cpu_pct=100 * busy / window, rss_mib=rss, p50_ms=qs[49], p99_ms=qs[98])


def measure(p: Profile) -> list[Result]:
    results = []
    for nodes in p.sizes:
        for path, scan in (("scan (amqtt)", True), ("trie", False)):
            with broker_process(scan) as (proc, port):
                r = asyncio.run(run_once(port, psutil.Process(proc.pid), nodes, path, p))
            print(f"N={nodes} {path}: {r}", flush=True)
            results.append(r)
    return results


def body(results: list[Result], p: Profile) -> str:
    rows: list[list[object]] = [
        [f"{r.nodes:,}", r.path, f"{r.join_s:.1f}", f"{r.delivered:,} / {r.sent:,}",
         f"{100 * r.delivered / r.sent:.1f}" if r.sent else "-", f"{r.cpu_pct:.0f}", f"{r.rss_mib:.0f}",
         f"{r.p50_ms:.1f}", f"{r.p99_ms:.1f}"]
        for r in results
    ]
    headers = ["nodes", "delivery", "all joined s", "heartbeats delivered / sent", "%", "broker CPU % of a core",
               "broker RSS MiB", "latency p50 ms", "p99 ms"]
    return (
        f"The embedded broker (its own process, plain TCP on loopback) with N node connections, each subscribed to "
        f"its own desired/peers/cmd topics under the node ACL, and one coordinator subscribed to "
        f"`cloudless/v1/node/+/heartbeat`. Every node sends a ~100-byte QoS 0 heartbeat every {HEARTBEAT_S:.0f} s "
        f"(N/{HEARTBEAT_S:.0f} per second in all) for {p.publish_s:.0f} s; CPU is the broker's over that window, "
        f"latency is publish -> receipt at the coordinator. `scan (amqtt)` is amqtt's delivery (every filter of "
        f"every client matched per message), `trie` the subscription index (`broker/subtree.py`), the default. "
        f"Both check the reader's ACL per delivery.\n\n{table(headers, rows)}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="N = 30 for a few seconds (smoke test), not real numbers")
    ap.add_argument("--doc", type=Path, default=DOC, help=f"markdown file to update (default: {DOC})")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the broker process itself
    ap.add_argument("--scan", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        return serve(args.scan)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # SIGTERM (e.g. a CI timeout) unwinds through the `finally` blocks, so no broker process outlives us
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    p = QUICK if args.quick else FULL
    started = time.monotonic()
    text = body(measure(p), p)
    print(text)
    command = "python bench/broker_fanout.py" + (" --quick" if args.quick else "")
    path = write_section(name="broker_fanout", title="Embedded broker at fleet size: subscription scan vs trie",
                         body=text, command=command, doc=args.doc)
    print(f"\nwrote {path} ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Service path benchmark: what a connection through the service proxy costs against a direct overlay stream and a
plain local TCP connection, side by side in one run, on loopback.

Four cases, all in one process and one event loop (clients, proxies, overlays and servers share the CPU in every
case, as in bench/overlay.py, so the comparison is fair):

- **local TCP**: a client connects straight to a TCP server on 127.0.0.1 (the floor);
- **overlay stream**: `Overlay.open_stream(node, service)` from node A to a handler on node B over their direct
  (LAN) QUIC path — the connection between the nodes is up already, as it is for the service path;
- **service, cross node**: a client connects to node A's proxy listener for (vip, port) (bound by a loopback binder
  the way the agent's binds inside a workload's namespace); the only endpoint is a TCP server on node B, reached
  over the overlay (ServiceProxy on both nodes: stream `svc`, header, admission, TCP connect on B, splice on both);
- **service, same node**: the same with the endpoint on node A (proxy listener -> TCP to the replica, spliced);
- **overlay stream (relay)** and **service, cross node (relay)**: the two cross node cases again between two nodes
  with direct paths off (as behind two symmetric NATs): every packet goes node -> relay -> node.

Per case: connection setup (connect + one byte there and back, p50/p95/p99 over `--connections` sequential
connections after a short warm-up), the bulk throughput of `--bulk-runs` connections one after the other, each
sending `--mib` MiB to a sink that answers the byte count (the median run is reported), and the process's CPU time
per connection and per MiB. The ServiceProxy's counters are checked after the run: every service connection took
the path its case names (the run fails otherwise).

    .venv/bin/python bench/services.py                # ~2.5 min; writes docs/benchmarks.md "services"
    .venv/bin/python bench/services.py --quick --doc /tmp/b.md --json /tmp/b.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.report import DOC, table, write_section  # noqa: E402
from broker.wire import (  # noqa: E402
    PathKind,
    PeerEntry,
    RelayInfo,
    ServiceEndpoint,
    ServicePort,
    ServiceRecord,
    ServiceTable,
)
from dataplane.services import ServiceProxy  # noqa: E402
from tests.dataplane.servicenet import Binds  # noqa: E402
from tests.dataplane.test_overlay_facade import RELAY, Net, make_net, until  # noqa: E402

MIB = 1 << 20
CHUNK = 64 * 1024
BLOCK = bytes(range(256)) * (CHUNK // 256)
PING, SINK = b"p", b"s"
WARMUP = 5
SETTLE_S = 1.0
CONNECTION_TIMEOUT_S = 30.0  # one connection (setup or the whole bulk transfer) never waits longer than this
BENCH_SERVICE = "bench"  # the overlay stream service of the "overlay stream" case
CROSS_VIP, LOCAL_VIP, PORT, TARGET_PORT = "127.77.0.20", "127.77.0.21", 80, 8080
LOCAL_TCP, STREAM, CROSS, SAME = "local TCP", "overlay stream (direct)", "service, cross node", "service, same node"
STREAM_RELAY, CROSS_RELAY = "overlay stream (relay)", "service, cross node (relay)"

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Opener = Callable[[], Awaitable[Stream]]


@dataclass(frozen=True, slots=True)
class Result:
    case: str
    connections: int
    setup_p50_ms: float
    setup_p95_ms: float
    setup_p99_ms: float
    setup_cpu_ms: float  # this process's CPU time per connection over the setup loop (every side of it)
    mib_s: float  # the median of the bulk runs
    mib_s_runs: tuple[float, ...]
    cpu_ms_per_mib: float  # this process's CPU time per MiB over all bulk runs


# ---- the server every case reaches ---------------------------------------------------------------------------

async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """`p`: answer `p`, then wait for the client's end (a connection setup probe); `s` + bytes: count them to the
    end and answer the count (bulk)."""
    try:
        first = await reader.readexactly(1)
        if first == PING:
            writer.write(PING)
            await reader.read()
        else:
            total = 0
            while chunk := await reader.read(CHUNK):
                total += len(chunk)
            writer.write(str(total).encode())
        writer.write_eof()
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def overlay_serve(_node: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await serve(reader, writer)


# ---- what a client measures ----------------------------------------------------------------------------------

async def setup_once(open_stream: Opener) -> float:
    """Seconds from opening a connection to the first byte answered; then an orderly close (not timed)."""
    async with asyncio.timeout(CONNECTION_TIMEOUT_S):
        started = time.perf_counter()
        reader, writer = await open_stream()
        writer.write(PING)
        if await reader.readexactly(1) != PING:
            raise RuntimeError("the server answered something else than the probe")
        elapsed = time.perf_counter() - started
        writer.write_eof()
        await reader.read()  # the server's end: it is done with this connection before the next one opens
        writer.close()
    return elapsed


async def bulk(open_stream: Opener, size: int) -> float:
    """Send `size` bytes on one connection and wait for the server's count; MiB/s."""
    async with asyncio.timeout(CONNECTION_TIMEOUT_S + size / MIB):  # >= 1 MiB/s or the run fails
        reader, writer = await open_stream()
        started = time.perf_counter()
        writer.write(SINK)
        for _ in range(size // CHUNK):
            writer.write(BLOCK)
            await writer.drain()
        writer.write_eof()
        count = int(await reader.read())
        elapsed = time.perf_counter() - started
        writer.close()
    if count != size:
        raise RuntimeError(f"the sink counted {count} bytes of {size}")
    return size / MIB / elapsed


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) in ms."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def measure(case: str, open_stream: Opener, n: int, size: int, runs: int) -> Result:
    gc.collect()  # a full collection (~30 ms with the overlays' objects) now, not in the first case's timings
    for _ in range(WARMUP):
        await setup_once(open_stream)
    cpu = time.process_time()
    times = [await setup_once(open_stream) for _ in range(n)]
    setup_cpu_ms = (time.process_time() - cpu) * 1000 / n
    cpu = time.process_time()
    speeds = tuple([await bulk(open_stream, size) for _ in range(runs)])
    cpu_ms_per_mib = (time.process_time() - cpu) * 1000 / (runs * size / MIB)
    result = Result(case, n, pct(times, .50), pct(times, .95), pct(times, .99), setup_cpu_ms,
                    sorted(speeds)[len(speeds) // 2], speeds, cpu_ms_per_mib)
    print(f"  {case}: setup p50 {result.setup_p50_ms:.2f} ms, {result.mib_s:.1f} MiB/s", file=sys.stderr, flush=True)
    return result


# ---- the two nodes -------------------------------------------------------------------------------------------

def service(name: str, vip: str, node: str) -> ServiceRecord:
    return ServiceRecord(name=name, namespace="default", vip=vip,
                         ports=(ServicePort(port=PORT, target_port=TARGET_PORT, name="http"),),
                         endpoints=(ServiceEndpoint(node=node, replica=f"{name}-0", zone="home"),))


def service_table(node: str, *services: ServiceRecord) -> ServiceTable:
    return ServiceTable(node_id=node, generation=1, epoch=1, ts=time.time(), zone="home", services=services)


async def two_nodes(*, direct: bool) -> Net:
    """Node A ("pi") and node B ("laptop") with a relay, connected: on their direct (LAN) path, or (`direct=False`:
    no direct paths, as between two symmetric NATs) through the relay."""
    net = await make_net(direct=direct)
    # the directories a coordinator would publish: pi dials laptop, both hold the relay (its UDP address only:
    # Net.connect() lists a dead one first, which tests the fallback and would only slow the start here)
    relays = (RelayInfo(relay_id=RELAY, addresses=(f"127.0.0.1:{net.relay.address[1]}",)),)
    net.pi.apply(relays, (PeerEntry(node_id="laptop", relays=(RELAY,), dial=True),), ())
    net.laptop.apply(relays, (PeerEntry(node_id="pi", relays=(RELAY,)),), ())
    path = PathKind.LAN if direct else PathKind.RELAYED

    def settled() -> bool:
        peers = net.pi.report(time.time()).peers
        return (bool(peers) and peers[0].path is path and "pi" in net.laptop.endpoint.peers  # type: ignore[union-attr]
                and all(RELAY in o.endpoint.relays for o in (net.pi, net.laptop)))  # type: ignore[union-attr]

    await until(settled, f"pi connected to laptop ({path}), both attached to the relay", timeout=30)
    await asyncio.sleep(SETTLE_S)  # the relay links' TLS handshakes and path probing are done before any timing
    return net


@asynccontextmanager
async def service_nodes(target: tuple[str, int], *, direct: bool,
                        expect: dict[str, int]) -> AsyncIterator[tuple[Net, Binds]]:
    """Two nodes with a ServiceProxy each: service `cross` has its replica on B, `local` on A; a client workload
    of A is attached (its listeners at `Binds.tcp(vip, port)`); B serves the overlay stream service `bench`. At the
    end, the connections each service was `expect`ed to carry are checked to have taken its path (`check_paths`)."""
    net = await two_nodes(direct=direct)
    proxies: list[ServiceProxy] = []
    try:
        for overlay in (net.pi, net.laptop):
            proxy = ServiceProxy(overlay, node_id=overlay.identity, local_endpoint=lambda _r, _p, _proto: target,
                                 upstream_dns=[], rng=random.Random(1), clock=time.monotonic,
                                 ingress_host="127.0.0.1")
            await proxy.start()
            proxies.append(proxy)
        a, b = proxies
        cross, local = service("cross", CROSS_VIP, "laptop"), service("local", LOCAL_VIP, "pi")
        await b.update(service_table("laptop", cross))  # B admits streams for the replica it runs
        await a.update(service_table("pi", cross, local))
        binds = Binds()
        await a.attach("client", "default", binds)
        net.laptop.serve(BENCH_SERVICE, overlay_serve)
        yield net, binds
        await until(lambda: all(s.active == 0 for s in a.stats().values()), "the service connections ended")
        check_paths(a, b, expect)
    finally:
        for proxy in proxies:
            await proxy.stop()
        await net.pi.stop()
        await net.laptop.stop()
        net.relay.close()


def check_paths(a: ServiceProxy, b: ServiceProxy, expect: dict[str, int]) -> None:
    """Every service connection took the path its case names (else the numbers would mean something else): the
    `expect[name]` connections of service `cross` to B over the overlay (tier "zone", each served on B), those of
    `local` to A's replica (tier "node"), none failed."""
    stats, served = a.stats(), b.stats()

    def counts(name: str) -> tuple[dict[str, int], int]:
        key = f"default/{name}"
        return (stats[key].connections if key in stats else {"node": 0, "zone": 0, "any": 0},
                served[key].served if key in served else 0)

    problems = []
    if (got := counts("cross")) != ({"node": 0, "zone": expect["cross"], "any": 0}, expect["cross"]):
        problems.append(f"cross node: {got[0]}, served on B {got[1]} (expected {expect['cross']} over the overlay)")
    if (got := counts("local")) != ({"node": expect["local"], "zone": 0, "any": 0}, 0):
        problems.append(f"same node: {got[0]}, served on B {got[1]} (expected {expect['local']} on A)")
    if any(s.connect_failures or s.no_endpoint for s in stats.values()):
        problems.append("connect failures or clients without an endpoint")
    if problems:
        raise RuntimeError("service connections did not take the measured path: " + "; ".join(problems))


def tcp(addr: tuple[str, int]) -> Opener:
    return lambda: asyncio.open_connection(*addr)


async def run(n: int, size: int, runs: int, relay_size: int) -> list[Result]:
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    target: tuple[str, int] = server.sockets[0].getsockname()[:2]
    each = WARMUP + n + runs  # connections per measured case
    try:
        async with service_nodes(target, direct=True, expect={"cross": each, "local": each}) as (net, binds):
            results = [
                await measure(LOCAL_TCP, tcp(target), n, size, runs),
                await measure(STREAM, lambda: net.pi.open_stream("laptop", BENCH_SERVICE), n, size, runs),
                await measure(CROSS, tcp(binds.tcp(CROSS_VIP, PORT)), n, size, runs),
                await measure(SAME, tcp(binds.tcp(LOCAL_VIP, PORT)), n, size, runs),
            ]
        async with service_nodes(target, direct=False, expect={"cross": each, "local": 0}) as (net, binds):
            results += [
                await measure(STREAM_RELAY, lambda: net.pi.open_stream("laptop", BENCH_SERVICE), n, relay_size,
                              runs),
                await measure(CROSS_RELAY, tcp(binds.tcp(CROSS_VIP, PORT)), n, relay_size, runs),
            ]
        return results
    finally:
        server.close()


# ---- the report ----------------------------------------------------------------------------------------------

def share(r: Result, base: Result) -> str:
    """r's throughput as a percentage of base's (a decimal below 10 %: the overlay cases are ~1 % of local TCP)."""
    value = 100 * r.mib_s / base.mib_s
    return f"{value:.1f} %" if value < 10 else f"{value:.0f} %"


RIDES = {STREAM: STREAM, CROSS: STREAM, STREAM_RELAY: STREAM_RELAY, CROSS_RELAY: STREAM_RELAY}


def render(results: list[Result], n: int, mib: int, relay_mib: int, runs: int) -> str:
    by = {r.case: r for r in results}
    tcp, stream, cross, same = by[LOCAL_TCP], by[STREAM], by[CROSS], by[SAME]
    stream_relay, cross_relay = by[STREAM_RELAY], by[CROSS_RELAY]

    def row(r: Result) -> list[object]:
        bases = (tcp, by[RIDES[r.case]] if r.case in RIDES else None)
        ratios = [f"{r.setup_p50_ms / base.setup_p50_ms:.1f}x" if base else "" for base in bases]
        shares = [share(r, base) if base else "" for base in bases]
        return [r.case, f"{r.setup_p50_ms:.2f}", f"{r.setup_p95_ms:.2f}", f"{r.setup_p99_ms:.2f}", *ratios,
                f"{r.setup_cpu_ms:.2f}", f"{r.mib_s:.1f}", *shares, f"{r.cpu_ms_per_mib:.1f}",
                " / ".join(f"{s:.1f}" for s in r.mib_s_runs)]

    def against(r: Result, base: Result) -> str:
        return (f"setup p50 +{r.setup_p50_ms - base.setup_p50_ms:.2f} ms ({r.setup_p50_ms / base.setup_p50_ms:.1f}x), "
                f"throughput {share(r, base)}")

    return "\n".join([
        f"{n} sequential connections per case (after {WARMUP} warm-up ones): setup = connect + one byte there and "
        f"back; then {runs} connection(s) one after the other, each sending {mib} MiB ({relay_mib} MiB through the "
        "relay) to a sink that answers the byte count (MiB/s: the median run; every run in the last column). "
        "Loopback, one process and one event loop (clients, both nodes' proxies and overlays, the relay and the "
        "servers share the CPU in every case). The overlay connection between the two nodes is up before timing "
        "starts: on its direct (LAN) path, or, for the relay rows, with direct paths off (as between two symmetric "
        "NATs) so every packet goes node -> relay -> node. The service path is the ServiceProxy of "
        "dataplane/services.py on both nodes, the client connecting to node A's listener for the service's "
        "(vip, port); \"vs the stream it rides\" compares a cross node service with the overlay stream on the same "
        "path.",
        "",
        table(["case", "setup p50 ms", "p95 ms", "p99 ms", "p50 vs local TCP", "p50 vs the stream it rides",
               "CPU ms per connection", "MiB/s", "of local TCP", "of the stream it rides", "CPU ms per MiB",
               "MiB/s, each run"], [row(r) for r in results]),
        "",
        "CPU is this process's CPU time (every side of the connection: client, proxies, overlays, relay, server) "
        "per connection over the setup loop and per MiB over the bulk runs; it is what limits both numbers here, "
        "since everything shares one event loop, and it is less disturbed by other load on the machine than wall "
        "time.",
        "",
        f"- **Service, cross node** against the direct overlay stream it rides: {against(cross, stream)}; against "
        f"local TCP: setup {cross.setup_p50_ms / tcp.setup_p50_ms:.1f}x, throughput {share(cross, tcp)}. Through "
        f"the relay, against the relayed stream: {against(cross_relay, stream_relay)}.",
        f"- **Service, same node** against local TCP: {against(same, tcp)} (two TCP connections and a splice in "
        "Python instead of one connection" + (
            "; above 100 % because the splice adds a buffer between sender and sink sharing one event loop: read it "
            "as no measurable cost" if same.mib_s > tcp.mib_s else "") + ").",
        f"- The overlay stream against local TCP: setup {stream.setup_p50_ms / tcp.setup_p50_ms:.1f}x, throughput "
        f"{share(stream, tcp)} (QUIC in Python: {stream.cpu_ms_per_mib:.0f} ms of CPU per MiB against "
        f"{tcp.cpu_ms_per_mib:.1f} ms).",
        f"- What the service path adds to a direct overlay stream: {cross.cpu_ms_per_mib - stream.cpu_ms_per_mib:.1f}"
        f" ms of CPU per MiB (two splices, the TCP hops at both ends) and "
        f"{cross.setup_cpu_ms - stream.setup_cpu_ms:.2f} ms per connection (the TCP accept and connect, and the "
        "service header, which rides behind the stream's own header, and its answer: no extra round trip).",
        "- Every service connection was checked against the proxies' counters: cross node ones all went to node B "
        "over the overlay (and were served there), same node ones all to the local replica, none failed.",
    ])


async def main(args: argparse.Namespace) -> int:
    results = await run(args.connections, args.mib * MIB, args.bulk_runs, args.relay_mib * MIB)
    body = render(results, args.connections, args.mib, args.relay_mib, args.bulk_runs)
    print(body)
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    write_section("services", "Service path: connection setup and throughput against an overlay stream and local "
                  "TCP", body, command="python bench/services.py" + (" --quick" if args.quick else ""),
                  doc=args.doc)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--connections", type=int, default=1000, help="connections per case (default 1000)")
    parser.add_argument("--mib", type=int, default=64, help="MiB sent on the bulk connection per case (default 64)")
    parser.add_argument("--relay-mib", type=int, default=16,
                        help="MiB sent per bulk connection through the relay (default 16)")
    parser.add_argument("--bulk-runs", type=int, default=3, help="bulk connections per case (default 3)")
    parser.add_argument("--quick", action="store_true",
                        help="50 connections and one run of 4 MiB (2 through the relay) per case")
    parser.add_argument("--doc", type=Path, default=DOC, help="the document to write (default docs/benchmarks.md)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    ns = parser.parse_args()
    if ns.quick:
        ns.connections, ns.mib, ns.relay_mib, ns.bulk_runs = 50, 4, 2, 1
    if min(ns.connections, ns.mib, ns.relay_mib, ns.bulk_runs) < 1:
        parser.error("--connections, --mib, --relay-mib and --bulk-runs must be at least 1")
    sys.exit(asyncio.run(main(ns)))

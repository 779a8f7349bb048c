"""Fleet benchmark: N simulated devices against a real `cloudless coordinator` and a real broker (issue 17).

Each device is a real MQTT connection over TLS with its own client certificate from the cluster CA, speaking the
real wire contract (tests/fleet/sim.py); the devices live in their own network namespace joined to the host by a
veth pair, so their control traffic is counted at the IP level. For each broker and fleet size it measures:

- join: the devices start connecting -> the coordinator lists all of them `online` (GET /v1/nodes?state=online);
- `GET /v1/nodes`: the first page (p50/p99 of 20) and the full list followed page by page (worst of 3);
- `/healthz` latency, probed every 100 ms throughout the run (p50/p99/max), and whether the coordinator ever lost
  its broker connection (its log);
- CPU (% of one core) and RSS of the coordinator and the broker, idle fleet and with N/2 replicas placed;
- apply N/2 replicas (one process workload; several where N/2 exceeds `spec.replicas`' bound) -> every
  replica in some device's desired state (the devices note when their desired state arrived) -> all ready;
- 10 % of the devices cut at once (sockets closed without DISCONNECT: the broker fires the wills) -> the coordinator
  sees them all gone -> every replica placed elsewhere -> all ready;
- heartbeats: sent by the devices vs received by the coordinator (its cloudless_mqtt_messages_total) in the idle
  window;
- control bytes per idle device per day: veth counters over the idle window / N, extrapolated to a day.

    python bench/fleet.py --nodes 1000 2000 5000 --brokers mosquitto          # writes docs/benchmarks.md
    python bench/fleet.py --quick --doc /tmp/b.md                             # 40 nodes, both brokers

Needs root (network namespace, veth), Mosquitto for the mosquitto runs. Every process runs in its own process group
and is killed with it; the namespace is deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
import shlex
import shutil
import signal
import ssl
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import DOC, table, write_section
from coordinator import spec as _spec
from tests.fleet.env import Broker, Coordinator, Netns, Pki, SimProc, node_names, usage
from tests.fleet.sim import SimConfig

MAX_REPLICAS_PER_WORKLOAD = int(getattr(_spec, "MAX_REPLICAS", 1000))  # spec.replicas' bound (1,000 before issue 17)
SECURITY = {"runAsNonRoot": True, "runAsUser": 65534, "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]}}


def workload_doc(name: str, replicas: int) -> dict[str, Any]:
    return {"apiVersion": "cloudless/v1", "kind": "Workload", "metadata": {"name": name},
            "spec": {"image": "none", "command": ["sleep", "3600"], "replicas": replicas,
                     "resources": {"requests": {"cpu": "10m", "memory": "8Mi"}}, "securityContext": SECURITY}}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


class Api:
    """The coordinator's REST API over HTTPS (the cluster CA), one session for work and one for /healthz so a probe
    never queues behind a long request on the client side."""

    def __init__(self, url: str, token: str, ctx: ssl.SSLContext) -> None:
        self.url, self.ctx = url, ctx
        self.headers = {"Authorization": f"Bearer {token}"}
        self.work = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=8), headers=self.headers)
        self.probe = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=2))

    async def close(self) -> None:
        await self.work.close()
        await self.probe.close()

    async def get(self, path: str) -> Any:
        async with self.work.get(self.url + path, timeout=aiohttp.ClientTimeout(total=600)) as r:
            if r.status >= 400:
                raise RuntimeError(f"GET {path}: {r.status} {(await r.text())[:300]}")
            return await r.json(content_type=None)

    async def text(self, path: str) -> str:
        async with self.work.get(self.url + path, timeout=aiohttp.ClientTimeout(total=600)) as r:
            return await r.text()

    async def put(self, path: str, body: Any) -> Any:
        async with self.work.put(self.url + path, json=body, timeout=aiohttp.ClientTimeout(total=600)) as r:
            if r.status >= 400:
                raise RuntimeError(f"PUT {path}: {r.status} {(await r.text())[:300]}")
            return await r.json(content_type=None)

    async def count_nodes(self, state: str) -> int:
        """Nodes in `state`, from the filtered list followed page by page (a filtered list has no
        remainingItemCount, as in Kubernetes). Cheap for the rare states; for `online` use count_online."""
        n, token, pages = 0, None, 0
        while pages < 1000:
            page = await self.get(f"/v1/nodes?state={state}&limit=5000" + (f"&continue={token}" if token else ""))
            if isinstance(page, list):  # a coordinator without pagination: the whole list, counted here
                return sum(1 for node in page if node.get("state") == state)
            n += len(page.get("items", []))
            pages += 1
            token = page.get("metadata", {}).get("continue")
            if not token:
                return n
        return n

    async def count_online(self) -> int:
        """Members (the unfiltered list's first item and remainingItemCount) minus those in any other state: no
        request renders the online majority."""
        page = await self.get("/v1/nodes?limit=1")
        if isinstance(page, list):
            return sum(1 for node in page if node.get("state") == "online")
        total = len(page.get("items", [])) + int(page.get("metadata", {}).get("remainingItemCount", 0))
        for state in ("suspect", "offline", "lost"):
            total -= await self.count_nodes(state)
        return total

    async def all_nodes(self) -> tuple[int, int]:
        """The whole node list, page by page: (items, pages)."""
        n, pages, token = 0, 0, None
        while pages < 10_000:
            path = "/v1/nodes?limit=500" + (f"&continue={token}" if token else "")
            page = await self.get(path)
            items = page.get("items", []) if isinstance(page, dict) else page
            n += len(items)
            pages += 1
            token = page.get("metadata", {}).get("continue") if isinstance(page, dict) else None
            if not token:
                break
        return n, pages


@dataclass
class Health:
    """/healthz every 100 ms; each latency tagged with the phase it fell in. A probe that times out (30 s) is
    recorded as 30 s."""

    api: Api
    phase: str = "start"
    samples: list[tuple[str, float]] = field(default_factory=list)
    trace: Path | None = None  # --loop-trace: each phase's start goes there too (the same monotonic clock)

    async def run(self) -> None:
        traced = ""
        while True:
            t = time.monotonic()
            if self.trace is not None and self.phase != traced:
                traced = self.phase
                with self.trace.open("a") as f:
                    f.write(f"{t:.3f} phase {traced}\n")
            try:
                async with self.api.probe.get(self.api.url + "/healthz", timeout=aiohttp.ClientTimeout(total=30)) as r:
                    await r.read()
                self.samples.append((self.phase, time.monotonic() - t))
            except (aiohttp.ClientError, TimeoutError):
                self.samples.append((self.phase, time.monotonic() - t))
            await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - t)))

    def of(self, *phases: str) -> list[float]:
        return [s for p, s in self.samples if not phases or p in phases]


async def until(pred: Any, within: float, what: str, every: float = 0.25) -> float:
    """Poll the async predicate until true; returns the time.time() it first was. Raises after `within` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await pred():
            return time.time()
        await asyncio.sleep(every)
    raise TimeoutError(f"timed out after {within:.0f}s waiting for {what}")


async def metric(api: Api, name: str, labels: str = "") -> float:
    text = await api.text("/metrics")
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (not labels or labels in line) and not line.startswith("#"):
            with contextlib.suppress(ValueError):
                total += float(line.rsplit(" ", 1)[1])
    return total


async def window(seconds: float, pids: dict[str, int], netns: Netns) -> dict[str, Any]:
    """CPU % of one core and RSS per process over `seconds`; the veth's byte counters over it."""
    before = {k: usage([p]) for k, p in pids.items()}
    rx0, tx0 = netns.counters()
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    dt = time.monotonic() - t0
    rx1, tx1 = netns.counters()
    out: dict[str, Any] = {"seconds": dt, "rx": rx1 - rx0, "tx": tx1 - tx0}
    for k, p in pids.items():
        cpu, rss = usage([p])
        out[k] = (100.0 * (cpu - before[k][0]) / dt, rss)
    return out


async def sims_stats(sims: list[SimProc]) -> dict[str, Any]:
    merged: dict[str, Any] = {"connected": 0, "heartbeats": 0, "pings": 0, "desired": {}, "failed": 0,
                              "wire_errors": 0, "received": {}}
    for s in sims:
        st = await s.ask({"cmd": "stats"}, timeout=120)
        for k in ("connected", "heartbeats", "pings", "failed", "wire_errors"):
            merged[k] += st[k]
        merged["desired"].update(st["desired"])
        for c, k in st.get("received", {}).items():
            merged.setdefault("received", {})[c] = merged.get("received", {}).get(c, 0) + k
    return merged


async def run_fleet(n: int, broker_kind: str, args: argparse.Namespace, log: Any,
                    profile: str | None = None) -> dict[str, Any]:
    """One fleet through every phase; with `profile` (its link's timers, not the command line's) only the join and
    the idle window: the control traffic of that profile."""
    if profile is not None:
        args = argparse.Namespace(**{**vars(args), "profile": profile, "heartbeat": None, "keepalive": None})
        link_defaults(args)
    res: dict[str, Any] = {"n": n, "broker": broker_kind, "profile": args.profile, "heartbeat": args.heartbeat,
                           "keepalive": args.keepalive, "traffic_only": profile is not None}
    workdir = Path(tempfile.mkdtemp(prefix=f"cl-fleet-{broker_kind}-{n}-"))
    netns = Netns()
    netns.create()
    broker = coord = None
    sims: list[SimProc] = []
    api = None
    health_task = None
    try:
        names = node_names(n)
        t = time.monotonic()
        pki = Pki(workdir, [netns.host_ip])
        pki.issue_nodes(names)
        log(f"[{broker_kind} {n}] {n} client certificates issued in {time.monotonic() - t:.1f}s ({workdir})")
        broker = Broker(broker_kind, workdir, pki, netns.host_ip)
        broker.start()
        coord = Coordinator(workdir, pki, broker, profile=workdir / "coordinator.prof" if args.cprofile else None,
                            trace=args.loop_trace)
        coord.start()
        api = Api(coord.url, coord.token, coord.ssl_context())
        health = Health(api, trace=args.loop_trace)
        health_task = asyncio.create_task(health.run())
        await until(lambda: _true(coord.broker_events()[0] >= 1), 30, "the coordinator's broker connection")

        procs = args.sim_procs or (2 if n >= 2000 else 1)
        chunks = [names[i::procs] for i in range(procs)]
        sims = [SimProc(netns, SimConfig(host=netns.host_ip, port=broker.port, ca_file=pki.ca_file,
                                         cert_dir=pki.cert_dir, nodes=chunk, heartbeat_s=args.heartbeat,
                                         keepalive_s=args.keepalive, profile=args.profile), workdir, f"sim{i}")
                for i, chunk in enumerate(chunks)]
        for s in sims:
            await s.start()
        for s in sims:
            await s.arm(300)
        pids = {"coordinator": coord.proc.pid, "broker": broker.proc.pid}  # type: ignore[union-attr]
        before = {k: usage([p]) for k, p in pids.items()}
        health.phase = "join"
        t0 = time.time()
        for s in sims:
            await s.go()
        try:
            online_at = await until(lambda: _ge(api.count_online(), n), args.join_timeout,
                                    f"{n} nodes online", every=0.25)
        except TimeoutError:
            states = [line for line in (await api.text("/metrics")).splitlines() if line.startswith("cloudless_nodes")]
            page = await api.get("/v1/nodes?limit=1")
            log(f"[{broker_kind} {n}] join timed out: {states}; first node {str(page)[:800]}")
            raise
        res["join_s"] = online_at - t0
        res["join_cpu"] = {k: round(usage([p])[0] - before[k][0], 2) for k, p in pids.items()}
        joined = [await s.wait_joined(120) for s in sims]
        res["sim_connect_s"] = max(j["seconds"] for j in joined)
        res["connect_failed"] = sum(j["failed"] for j in joined)
        res["sim_join_cpu_s"] = [j.get("cpu_s") for j in joined]
        log(f"[{broker_kind} {n}] all {n} online at the coordinator after {res['join_s']:.1f}s "
            f"(simulators connected in {res['sim_connect_s']:.1f}s, their CPU {res['sim_join_cpu_s']} s; "
            f"CPU seconds meanwhile: {res['join_cpu']})")

        sim_pids = [p for s in sims if (p := s.pid()) is not None]
        health.phase = "idle"
        # past the first round's service tables and observed states (a traffic run waits longer: it counts bytes)
        await asyncio.sleep(args.settle if profile is None else max(args.settle, 20.0))
        st0 = await sims_stats(sims)
        hb_sent0 = st0["heartbeats"]
        hb_recv0 = await metric(api, "cloudless_mqtt_messages_total", 'channel="heartbeat"')
        idle_s = args.idle_window or max(args.window, args.keepalive)
        if profile is not None:  # not the keep-alive: a metered profile's is 25 min; the phases make any window fair
            idle_s = args.traffic_window
        idle = await window(idle_s, {**pids, "sims": sim_pids[0]}, netns)
        st1 = await sims_stats(sims)
        hb_sent1 = st1["heartbeats"]
        res["pings"] = st1["pings"] - st0["pings"]
        res["received"] = {c: k - st0["received"].get(c, 0) for c, k in st1["received"].items()}
        hb_recv1 = await metric(api, "cloudless_mqtt_messages_total", 'channel="heartbeat"')
        res["idle"] = idle
        res["hb"] = (hb_recv1 - hb_recv0, hb_sent1 - hb_sent0)
        day = 86400 / idle["seconds"] / n
        res["bytes_day"] = (idle["rx"] * day, idle["tx"] * day)
        log(f"[{broker_kind} {n}] idle: coordinator {idle['coordinator'][0]:.1f}% {idle['coordinator'][1] >> 20} MiB, "
            f"broker {idle['broker'][0]:.1f}% {idle['broker'][1] >> 20} MiB; heartbeats {res['hb'][0]:.0f}/"
            f"{res['hb'][1]}, pings {res['pings']}, received {res['received']} in {idle['seconds']:.0f}s; "
            f"per node per day out {res['bytes_day'][0] / 2**20:.2f} MiB in "
            f"{res['bytes_day'][1] / 2**20:.2f} MiB")

        if profile is not None:
            return res

        health.phase = "list"
        first: list[float] = []
        for _ in range(20):
            t = time.monotonic()
            await api.get("/v1/nodes")
            first.append(time.monotonic() - t)
        full: list[float] = []
        for _ in range(3):
            t = time.monotonic()
            count, pages = await api.all_nodes()
            full.append(time.monotonic() - t)
        res["list_first"] = (pct(first, 0.5), pct(first, 0.99))
        res["list_full"] = (max(full), pages, count)
        log(f"[{broker_kind} {n}] GET /v1/nodes first page p50 {res['list_first'][0] * 1000:.0f} ms p99 "
            f"{res['list_first'][1] * 1000:.0f} ms; full list ({count} in {pages} pages) worst {max(full):.2f}s")

        health.phase = "apply"
        total = n // 2
        sizes = [MAX_REPLICAS_PER_WORKLOAD] * (total // MAX_REPLICAS_PER_WORKLOAD)
        if total % MAX_REPLICAS_PER_WORKLOAD:
            sizes.append(total % MAX_REPLICAS_PER_WORKLOAD)
        wl = [(f"fleet-{i}", size) for i, size in enumerate(sizes)]
        t_apply = time.time()
        for name, size in wl:
            await api.put(f"/v1/workloads/default/{name}", workload_doc(name, size))
        delivered: dict[str, Any] = {}

        async def all_delivered() -> bool:
            st = await sims_stats(sims)
            delivered["st"] = st
            return sum(len(v[2]) for v in st["desired"].values()) >= total

        await until(all_delivered, args.phase_timeout, f"{total} replicas delivered", every=0.5)
        res["apply_delivered_s"] = max(v[1] for v in delivered["st"]["desired"].values()) - t_apply
        ready_state: dict[str, Any] = {}

        async def all_ready() -> bool:
            ready = 0
            for name, _size in wl:
                w = await api.get(f"/v1/workloads/default/{name}")
                ready += int(w["status"]["ready"])
            ready_state["ready"] = ready
            return ready >= total

        res["apply_ready_s"] = await until(all_ready, args.phase_timeout, f"{total} replicas ready", every=0.5) \
            - t_apply
        log(f"[{broker_kind} {n}] apply {total} replicas: delivered {res['apply_delivered_s']:.2f}s, all ready "
            f"{res['apply_ready_s']:.2f}s")

        health.phase = "steady"
        await asyncio.sleep(args.settle)
        steady = await window(args.window, pids, netns)
        res["steady"] = steady
        res["round_s"] = await metric(api, "cloudless_reconcile_duration_seconds")
        log(f"[{broker_kind} {n}] steady with {total} replicas: coordinator {steady['coordinator'][0]:.1f}% "
            f"{steady['coordinator'][1] >> 20} MiB, broker {steady['broker'][0]:.1f}% "
            f"{steady['broker'][1] >> 20} MiB, last round {res['round_s'] * 1000:.0f} ms")

        health.phase = "cut"
        cut = sorted(random.Random(n).sample(names, n // 10))
        cut_set = set(cut)
        t_cut = time.time()
        for s in sims:
            await s.ask({"cmd": "cut", "nodes": [c for c in cut if c in set(s.cfg.nodes)]})
        gone_at = await until(lambda: _ge(_neg(api.count_online()), -(n - len(cut))), args.phase_timeout,
                              "the cut nodes gone from online")
        res["cut_gone_s"] = gone_at - t_cut
        marks: dict[str, float] = {}

        async def replaced_and_ready() -> bool:
            placed = ready = 0
            for name, _size in wl:
                w = await api.get(f"/v1/workloads/default/{name}")
                for r in w["status"]["replicas"]:
                    if r["node"] and r["node"] not in cut_set and r["state"] != "stopping":
                        placed += 1
                        ready += bool(r["ready"])
            now = time.time()
            if placed >= total and "replaced" not in marks:
                marks["replaced"] = now
            if ready >= total:
                marks["ready"] = now
                return True
            return False

        await until(replaced_and_ready, args.phase_timeout, "the cut nodes' replicas ready elsewhere", every=0.25)
        res["cut_replaced_s"] = marks.get("replaced", marks["ready"]) - t_cut
        res["cut_ready_s"] = marks["ready"] - t_cut
        with contextlib.suppress(TimeoutError):
            lost_at = await until(lambda: _ge(api.count_nodes("lost"), len(cut)), 5, "cut nodes lost")
            res["cut_lost_s"] = lost_at - t_cut
        log(f"[{broker_kind} {n}] {len(cut)} nodes cut: gone {res['cut_gone_s']:.2f}s, replaced "
            f"{res['cut_replaced_s']:.2f}s, ready {res['cut_ready_s']:.2f}s")
        if args.silent_cut:
            health.phase = "silent"
            rest = [x for x in names if x not in cut_set]
            silent = sorted(random.Random(n + 1).sample(rest, max(1, n // 100)))
            t_silent = time.time()
            for s in sims:
                await s.ask({"cmd": "cut", "silent": True, "nodes": [c for c in silent if c in set(s.cfg.nodes)]})
            gone_at = await until(lambda: _ge(_neg(api.count_online()), -(n - len(cut) - len(silent))),
                                  args.keepalive * 3 + 60, "the silent nodes gone from online", every=0.5)
            res["silent_gone_s"] = gone_at - t_silent
            log(f"[{broker_kind} {n}] {len(silent)} nodes silent (socket open): gone at the coordinator after "
                f"{res['silent_gone_s']:.1f}s (keep-alive {args.keepalive} s)")
        health.phase = "end"
        await asyncio.sleep(1)
        all_h = health.of()
        res["healthz"] = (pct(all_h, 0.5), pct(all_h, 0.99), max(all_h) if all_h else float("nan"))
        res["healthz_cut"] = pct(health.of("cut"), 0.99)
        res["healthz_phases"] = {ph: (round(pct(health.of(ph), 0.99) * 1000, 1), round(max(health.of(ph)) * 1000))
                                 for ph in dict.fromkeys(p for p, _ in health.samples)}
        log(f"[{broker_kind} {n}] /healthz p99/max ms by phase: {res['healthz_phases']}")
        res["broker_lost"] = coord.broker_events()[1]
        log(f"[{broker_kind} {n}] /healthz p50 {res['healthz'][0] * 1000:.1f} ms p99 {res['healthz'][1] * 1000:.1f} "
            f"ms max {res['healthz'][2] * 1000:.0f} ms; coordinator lost its broker {res['broker_lost']} times")
    except Exception as exc:
        res["error"] = f"{type(exc).__name__}: {exc}"
        log(f"[{broker_kind} {n}] FAILED: {res['error']}")
        if coord is not None:
            log(coord.log_tail(15))
    finally:
        if health_task is not None:
            health_task.cancel()
        for s in sims:
            await s.stop()
        if api is not None:
            await api.close()
        if coord is not None:
            coord.stop()
            if coord.profile is not None and coord.profile.exists():
                log(profile_summary(coord.profile))
        if broker is not None:
            broker.stop()
        netns.delete()
        if "error" not in res:  # a failed run's logs stay for a look
            shutil.rmtree(workdir, ignore_errors=True)
    return res


def profile_summary(path: Path, top: int = 25) -> str:
    """The coordinator's hottest functions (own time) from its cProfile stats."""
    import io
    import pstats

    out = io.StringIO()
    pstats.Stats(str(path), stream=out).sort_stats("tottime").print_stats(top)
    return f"coordinator profile ({path}), by own time:\n" + out.getvalue()


async def _true(v: bool) -> bool:
    return v


async def _ge(aw: Any, n: int) -> bool:
    return bool(await aw >= n)


async def _neg(aw: Any) -> int:
    return -int(await aw)


def fmt_s(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s" if v < 120 else f"{v / 60:.1f} min"


def goals(results: list[dict[str, Any]]) -> str:
    """Issue 17's Done-when, checked against the runs that measure it (met / not met, with the number)."""
    out: list[str] = []

    def check(label: str, ok: bool, value: str) -> None:
        out.append(f"- {label}: {value} — **{'met' if ok else 'not met'}**")

    def find(broker: str, n: int) -> dict[str, Any] | None:
        return next((r for r in results if r["broker"] == broker and r["n"] == n and not r["traffic_only"]
                     and "error" not in r), None)

    if (m := find("mosquitto", 5000)) is not None:
        check("5,000 on Mosquitto, all online ≤ 15 s", m["join_s"] <= 15, fmt_s(m["join_s"]))
        check("first page p99 ≤ 100 ms", m["list_first"][1] <= 0.1, fmt_s(m["list_first"][1]))
        check("full list ≤ 2 s", m["list_full"][0] <= 2, fmt_s(m["list_full"][0]))
        check("`/healthz` p99 ≤ 50 ms throughout", m["healthz"][1] <= 0.05, fmt_s(m["healthz"][1]))
        check("the coordinator never loses its broker connection", m["broker_lost"] == 0,
              f"{m['broker_lost']} losses")
        check("steady coordinator CPU ≤ 25 % with 2,500 replicas", m["steady"]["coordinator"][0] <= 25,
              f"{m['steady']['coordinator'][0]:.1f} %")
        check("apply 2,500 replicas → all ready ≤ 10 s", m["apply_ready_s"] <= 10, fmt_s(m["apply_ready_s"]))
        check("10 % cut → all replicas ready elsewhere ≤ 3 s", m["cut_ready_s"] <= 3, fmt_s(m["cut_ready_s"]))
    if (e := find("embedded", 2000)) is not None:
        check("embedded broker, 2,000: every heartbeat delivered", e["hb"][0] >= e["hb"][1],
              f"{e['hb'][0]:.0f} of {e['hb'][1]}")
        check("embedded broker, 2,000: wills within 2 s (cut → gone)", e["cut_gone_s"] <= 2, fmt_s(e["cut_gone_s"]))
        check("embedded broker, 2,000: all online ≤ 10 s", e["join_s"] <= 10, fmt_s(e["join_s"]))
    for r in results:
        if "bytes_day" not in r or "error" in r:
            continue
        day = (r["bytes_day"][0] + r["bytes_day"][1]) / 2**20
        if r["traffic_only"]:
            check(f"profile `{r['profile']}` ({r['n']:,} nodes): ≤ 1 MiB per month", day * 30 <= 1,
                  f"{day * 30:.2f} MiB/month, a power-off detected within {fmt_s(1.5 * r['keepalive'])}")
        elif r["broker"] == "mosquitto" and r["n"] == 5000:
            check(f"profile `{r['profile']}`: ≤ 1 MiB per day", day <= 1,
                  f"{day:.2f} MiB/day, a power-off detected within {fmt_s(1.5 * r['keepalive'])}")
    return "\n".join(out)


def render(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    results = sorted(results, key=lambda r: (r["traffic_only"], r["broker"] != "mosquitto", r["n"]))
    cols = [f"{r['broker']}, {r['n']:,}" + (f", profile {r['profile']} (traffic only)" if r["traffic_only"] else "")
            for r in results]
    rows: list[list[object]] = []

    def row(label: str, f: Any) -> None:
        cells = []
        for r in results:
            try:
                cells.append(f(r))
            except (KeyError, TypeError, IndexError):
                cells.append("failed" if "error" in r else "—")
        rows.append([label, *cells])

    row("all joined and online at the coordinator", lambda r: fmt_s(r["join_s"]))
    row("`GET /v1/nodes` first page p50 / p99", lambda r: f"{fmt_s(r['list_first'][0])} / {fmt_s(r['list_first'][1])}")
    row("`GET /v1/nodes` full list (pages of 500, worst of 3)",
        lambda r: f"{fmt_s(r['list_full'][0])} ({r['list_full'][1]} pages)")
    row("`/healthz` p50 / p99 / max, whole run",
        lambda r: f"{fmt_s(r['healthz'][0])} / {fmt_s(r['healthz'][1])} / {fmt_s(r['healthz'][2])}")
    row("coordinator lost its broker connection", lambda r: "no" if r["broker_lost"] == 0 else
        f"**yes, {r['broker_lost']} times**")
    row("coordinator CPU / RSS, idle fleet",
        lambda r: f"{r['idle']['coordinator'][0]:.1f} % / {r['idle']['coordinator'][1] >> 20} MiB")
    row("broker CPU / RSS, idle fleet",
        lambda r: f"{r['idle']['broker'][0]:.1f} % / {r['idle']['broker'][1] >> 20} MiB")
    row("heartbeats received / sent (idle window)", lambda r: f"{r['hb'][0]:.0f} / {r['hb'][1]}")
    row("apply N/2 replicas → all desired delivered / all ready",
        lambda r: f"{fmt_s(r['apply_delivered_s'])} / {fmt_s(r['apply_ready_s'])}")
    row("coordinator CPU / RSS with N/2 replicas, steady",
        lambda r: f"{r['steady']['coordinator'][0]:.1f} % / {r['steady']['coordinator'][1] >> 20} MiB")
    row("broker CPU / RSS with N/2 replicas, steady",
        lambda r: f"{r['steady']['broker'][0]:.1f} % / {r['steady']['broker'][1] >> 20} MiB")
    row("last reconcile round (steady)", lambda r: fmt_s(r["round_s"]))
    row("10 % cut at once → gone / replaced / ready",
        lambda r: f"{fmt_s(r['cut_gone_s'])} / {fmt_s(r['cut_replaced_s'])} / {fmt_s(r['cut_ready_s'])}")
    row("`/healthz` p99 while the cut is handled", lambda r: fmt_s(r["healthz_cut"]))
    if any("silent_gone_s" in r for r in results):
        row("1 % fall silent, sockets open (a power cut) → gone at the coordinator",
            lambda r: fmt_s(r["silent_gone_s"]))
    row("device timers: heartbeat (max interval) / keep-alive", lambda r: f"{r['heartbeat']:g} s / {r['keepalive']} s")
    row("control traffic per idle node per day, IP level, out / in",
        lambda r: f"{r['bytes_day'][0] / 2**20:.2f} / {r['bytes_day'][1] / 2**20:.2f} MiB")
    row("… per idle node per 30-day month, both directions",
        lambda r: f"{(r['bytes_day'][0] + r['bytes_day'][1]) * 30 / 2**20:.1f} MiB")
    row("detection of a silent power-off (the broker's keep-alive, 1.5 x keep-alive), worst case",
        lambda r: fmt_s(1.5 * r["keepalive"]))
    body = table(["measured", *cols], rows)
    errors = [f"- {r['broker']}, {r['n']:,}: {r['error']}" for r in results if "error" in r]
    notes = (
        f"\n\nSimulated devices (`tests/fleet/sim.py`): each a real MQTT 3.1.1 connection over TLS with its own client "
        f"certificate from the cluster CA, in one or two asyncio processes inside their own network namespace; "
        f"heartbeat every {args.heartbeat:g} s, keep-alive {args.keepalive} s (profile `{args.profile}`), a retained "
        "status with facts and the agent's last will, an observed state (every replica running and ready) answering "
        "each desired state at once. The coordinator is a real `cloudless coordinator --pki`; the broker Mosquitto "
        "(configuration from `cloudless broker mosquitto-config --cert-auth`) or the embedded `cloudless broker "
        "--cert-auth`. Replicas are process workloads (several workloads only where N/2 exceeds `spec.replicas`' "
        f"bound, {MAX_REPLICAS_PER_WORKLOAD:,}). CPU is % of one core over a "
        f"{args.window:g} s window (psutil); `/healthz` is probed every 100 ms for the whole run. Traffic per node "
        f"per day is the veth's byte counters (IP level, both directions, headers included) over the idle window (at "
        "least one keep-alive) divided by N and **extrapolated** to 24 h — each device's heartbeat and keep-alive "
        "timers run at their own phase, as in a fleet up for a while, so a window shorter than the heartbeat interval "
        "still counts the average device; the simulators run on the same 2-core machine as the "
        "coordinator and the broker, so every number includes that contention."
    )
    checked = goals(results)
    return (body + ("\n\nIssue 17's goals:\n\n" + checked if checked else "") + notes
            + ("\n\nFailed runs:\n" + "\n".join(errors) if errors else ""))


def link_defaults(args: argparse.Namespace) -> None:
    """--heartbeat/--keepalive from the profile's control link where not given (its plain heartbeat interval and a
    10 s keep-alive for a profile without a `link`)."""
    from firmware_profiles.loader import load_profile

    profile = load_profile(args.profile)
    link = getattr(profile, "link", None)
    if args.heartbeat is None:
        args.heartbeat = float(link.heartbeat_max_interval_s if link else profile.heartbeat_interval_s)
    if args.keepalive is None:
        args.keepalive = int(link.keepalive_s if link else 10)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, nargs="+", default=[1000, 2000, 5000])
    p.add_argument("--brokers", nargs="+", default=["mosquitto"], choices=["mosquitto", "embedded"])
    p.add_argument("--runs", nargs="*", default=[], metavar="BROKER:N[:PROFILE]",
                   help="explicit runs (e.g. mosquitto:5000 embedded:2000); overrides --nodes/--brokers. With "
                   "PROFILE (mosquitto:1000:iot-gateway-armv7): only join and the idle window, with that profile's "
                   "timers: its control traffic")
    p.add_argument("--profile", default="vps",
                   help="the devices' profile: its control-link timers are the defaults of the next two (vps)")
    p.add_argument("--heartbeat", type=float, default=None,
                   help="simulated heartbeat interval, s (default: the profile's maximum heartbeat interval)")
    p.add_argument("--keepalive", type=int, default=None,
                   help="simulated MQTT keep-alive, s (default: the profile's)")
    p.add_argument("--window", type=float, default=30.0,
                   help="CPU/traffic measurement window, s (the idle one at least the keep-alive)")
    p.add_argument("--idle-window", type=float, default=0.0,
                   help="the idle (traffic) window, s (default: the larger of --window and the keep-alive)")
    p.add_argument("--traffic-window", type=float, default=180.0,
                   help="the idle window of a traffic-only run (BROKER:N:PROFILE), s: a profile with long timers "
                   "needs a long one")
    p.add_argument("--silent-cut", action="store_true",
                   help="also let 1 %% of the devices fall silent with their sockets open and time the detection")
    p.add_argument("--settle", type=float, default=10.0, help="wait after a phase before a window, s")
    p.add_argument("--join-timeout", type=float, default=300.0)
    p.add_argument("--phase-timeout", type=float, default=300.0)
    p.add_argument("--sim-procs", type=int, default=0, help="simulator processes (default: 2 from 2,000 nodes)")
    p.add_argument("--cprofile", action="store_true",
                   help="run the coordinator under cProfile (slower) and print its hottest functions")
    p.add_argument("--loop-trace", type=Path, default=None,
                   help="write every coordinator loop step over 20 ms of wall time (and each phase's start) to this "
                   "file (tests/fleet/loop_trace.py)")
    p.add_argument("--quick", action="store_true", help="40 nodes on both brokers, short windows (CI smoke)")
    p.add_argument("--doc", type=Path, default=DOC)
    args = p.parse_args(argv)
    if args.quick:  # heartbeats and pings within its short idle window
        args.heartbeat = args.heartbeat or 2.0
        args.keepalive = args.keepalive or 10
    link_defaults(args)
    if args.quick:
        runs: list[tuple[str, int, str | None]] = [("mosquitto", 40, None), ("embedded", 40, None)]
        args.window, args.settle = min(args.window, 6.0), min(args.settle, 1.0)
        args.idle_window = args.idle_window or 6.0
        args.phase_timeout = min(args.phase_timeout, 60.0)
        args.join_timeout = min(args.join_timeout, 60.0)
    elif args.runs:
        runs = [(r.split(":")[0], int(r.split(":")[1]), (r.split(":")[2:3] or [None])[0]) for r in args.runs]
    else:
        runs = [(b, n, None) for b in args.brokers for n in args.nodes]

    def log(msg: str) -> None:
        print(msg, flush=True)

    command = "python bench/fleet.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    command = re.sub(r"\s--doc\s+\S+", "", command)

    async def go() -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        for b, n, profile in runs:
            results.append(await run_fleet(n, b, args, log, profile))
            # after every run: a long series stopped part way still leaves the runs it finished
            write_section("fleet", "Fleet", render(results, args), command=command, doc=args.doc)
        return results

    def terminate(_sig: int, _frame: object) -> None:
        raise SystemExit(143)  # unwinds run_fleet's cleanup: processes killed by group, the namespace deleted

    signal.signal(signal.SIGTERM, terminate)
    results = asyncio.run(go())
    log(f"wrote the Fleet section of {args.doc}")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

"""Edge agent footprint: the `cloudless agent` process's idle memory and CPU with 0 and with 5 replicas running.

A real agent process (the integration tests' `AgentProc`), on rootful Podman and then on the process runtime, joined
to the embedded broker and a coordinator, all as their own processes. The agent runs with the `vps` profile and
the production intervals (heartbeat 10 s from the profile, reconcile every 2 s), not the tests' fast ones. Per
runtime: start the agent, wait until it is online, let it settle, sample; then apply a 5-replica `sleep 3600`
workload (no probes, pinned to the node by a label, binpack), wait until all 5 are ready, settle, sample again.

Sampling: every second over the window, psutil on the agent's own Python process only (not the Podman service it
starts, not conmon, not the replicas): RSS, USS (pages no other process shares) and CPU % over each second. The
Podman REST service the agent started (its child) is sampled separately as context. Then, for the team to know
what to slim: the RSS a bare interpreter reaches importing what the agent imports, step by step, and the largest
mappings of the running agent by resident size.

Every wait is bounded; processes and containers are always cleaned up. Results go to stdout and to this script's
section of docs/benchmarks.md (`bench/report.py`).

    .venv/bin/python bench/agent_footprint.py                          # ~2 min
    .venv/bin/python bench/agent_footprint.py --quick --doc /tmp/b.md  # ~40 s (smoke test)
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # bench/ and tests/ are not installed: make them importable when run as a script
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from bench.report import DOC, table, write_section  # noqa: E402
from broker.acl import Acl, Role  # noqa: E402
from broker.auth import AuthFiles  # noqa: E402
from broker.passwords import hash_password  # noqa: E402
from tests.integration.agent_env import CONTAINERS_CONF, IMAGE, AgentProc  # noqa: E402
from tests.integration.cluster_env import SECURE, ApiError, CoordinatorProc  # noqa: E402
from tests.integration.conftest import BrokerUnderTest  # noqa: E402

COORDINATOR = "coordinator@test"  # the user CoordinatorProc connects as
REPLICAS = 5
GOAL_RSS_MIB = 35.0
MIB = 1024 * 1024
PROD_INTERVALS = ["--heartbeat-interval", "10", "--reconcile-interval", "2"]  # argparse: the last value wins

# What the agent imports, in the order it imports it ("module:function:arg" calls function([arg]) or function()).
IMPORT_STEPS = [
    ("ssl", "ssl (maps libssl, libcrypto)"),
    ("asyncio", "asyncio"),
    ("cloudless.cli:build_parser:agent", "cloudless.cli, the `agent` command's parser only"),
    ("msgpack", "msgpack"),
    ("paho.mqtt.client", "paho-mqtt"),
    ("broker.wire", "broker.wire"),
    ("broker.client", "broker.client"),
    ("psutil", "psutil"),
    ("firmware_profiles", "firmware_profiles (+ tomllib)"),
    ("edge_agent.cli:slim_podman_imports", "(the agent keeps rich and charset_normalizer out)"),
    ("urllib3", "urllib3"),
    ("requests", "requests"),
    ("podman", "podman-py"),
    ("edge_agent.agent", "edge_agent.agent (+ the rest of edge_agent)"),
    ("edge_agent.runtime.podman", "edge_agent.runtime.podman"),
    ("cryptography.x509", "cryptography (only with sealed secrets: enrolment and renewal run in a child)"),
]
ALONE = ["ssl", "asyncio", "paho.mqtt.client", "requests", "podman", "psutil", "msgpack", "firmware_profiles",
         "broker.wire"]

# Run in a fresh interpreter: prints {"base": KiB, "steps": [[spec, KiB], ...], "modules": [before, after]}.
IMPORT_PROBE = r"""
import importlib, json, sys
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
steps, base, before = [], rss(), len(sys.modules)
for spec in sys.argv[1:]:
    mod, _, call = spec.partition(":")
    call, _, arg = call.partition(":")
    m = importlib.import_module(mod)
    if call:
        getattr(m, call)(*([[arg]] if arg else []))
    steps.append([spec, rss()])
print(json.dumps({"base": base, "steps": steps, "modules": [before, len(sys.modules)]}))
"""


@dataclass(frozen=True)
class Profile:
    settle_s: float
    window_s: float


FULL = Profile(settle_s=5.0, window_s=20.0)
QUICK = Profile(settle_s=2.0, window_s=5.0)


@dataclass
class Samples:
    rss: list[int] = field(default_factory=list)
    uss: list[int] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # % of one core over each interval
    cpu_mean: float = 0.0  # % of one core over the whole window (CPU seconds / wall seconds)
    threads: int = 0
    service_rss: list[int] = field(default_factory=list)  # the Podman service the agent started, if any


@dataclass
class Row:
    runtime: str
    replicas: int
    s: Samples
    maps: list[tuple[str, int]] = field(default_factory=list)


# ---- processes ------------------------------------------------------------------------------------------------------


def make_auth(workdir: Path, nodes: list[str]) -> dict[str, str]:
    """Node ids unique to this run, so a concurrent integration test's cleanup never touches our containers."""
    passwords = {u: secrets.token_urlsafe(12) for u in (COORDINATOR, *nodes)}
    AuthFiles(users={u: hash_password(p, iterations=1000) for u, p in passwords.items()},
              acl=Acl(user_roles={COORDINATOR: Role.COORDINATOR})).save(workdir / "auth")
    return passwords


def wait_for(pred: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except (ApiError, OSError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def idle_workload(name: str, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "cloudless/v1", "kind": "Workload", "metadata": {"name": name},
        "spec": {
            "image": IMAGE, "command": ["sleep", "3600"], "replicas": REPLICAS,
            "resources": {"requests": {"cpu": "10m", "memory": "8Mi"}},
            "placement": {"strategy": "binpack", "nodeSelector": {"bench-node": node}},
            # the process runtime cannot make a root filesystem read-only (the policy only warns about it)
            "securityContext": {k: v for k, v in SECURE.items() if k != "readOnlyRootFilesystem"},
        },
    }


def service_procs(agent: psutil.Process) -> list[psutil.Process]:
    """The Podman REST service(s) among the agent's children."""
    out = []
    for child in agent.children(recursive=True):
        try:
            if child.name() == "podman":
                out.append(child)
        except psutil.Error:
            continue
    return out


def sample(pid: int, window_s: float) -> Samples:
    """Agent RSS/USS/CPU every second over `window_s`, plus the RSS of the Podman service it started."""
    proc = psutil.Process(pid)
    s = Samples()
    proc.cpu_percent(None)  # primes the per-interval counter
    t0, c0 = time.monotonic(), sum(proc.cpu_times()[:2])
    deadline = t0 + window_s
    while time.monotonic() < deadline:
        time.sleep(1.0)
        s.cpu.append(proc.cpu_percent(None))
        mem = proc.memory_full_info()
        s.rss.append(int(mem.rss))
        s.uss.append(int(mem.uss))
        svc = service_procs(proc)
        if svc:
            s.service_rss.append(sum(int(p.memory_info().rss) for p in svc))
    s.cpu_mean = 100 * (sum(proc.cpu_times()[:2]) - c0) / (time.monotonic() - t0)
    s.threads = proc.num_threads()
    return s


def top_maps(pid: int, n: int = 8) -> list[tuple[str, int]]:
    """The agent's largest mappings by resident size; anonymous ones (Python objects, malloc arenas, thread
    stacks) summed as one entry."""
    anon, named = 0, []
    for m in psutil.Process(pid).memory_maps(grouped=True):
        path = m.path
        if not path or (path.startswith("[") and path not in ("[vdso]", "[vvar]")):
            anon += int(m.rss)
        else:
            named.append((path, int(m.rss)))
    named.sort(key=lambda x: -x[1])
    return [("anonymous ([heap], arenas, stacks)", anon), *named[:n]]


def measure_runtime(broker: BrokerUnderTest, coord: CoordinatorProc, node: str, runtime: str,
                    p: Profile) -> list[Row]:
    agent = AgentProc(node_id=node, broker=broker, runtime=runtime,
                      extra=[*PROD_INTERVALS, "--labels", f"bench-node={node}"])
    if runtime == "podman":
        agent.extra += ["--podman-socket", str(agent.workdir / "podman.sock")]  # its own service, its child
    rows = []
    try:
        agent.start()
        assert agent.proc is not None
        wait_for(lambda: coord.request("GET", f"/v1/nodes/{node}")["online"], 30, f"{node} online")
        time.sleep(p.settle_s)
        rows.append(Row(runtime, 0, sample(agent.proc.pid, p.window_s)))
        name = f"idle-{runtime}"
        coord.apply(idle_workload(name, node))
        wait_for(lambda: coord.workload(name)["status"]["ready"] == REPLICAS, 90, f"{REPLICAS} replicas ready")
        time.sleep(p.settle_s)
        rows.append(Row(runtime, REPLICAS, sample(agent.proc.pid, p.window_s), top_maps(agent.proc.pid)))
    except BaseException:
        print(f"--- agent {node} log ---\n{agent.log_tail(40)}\n--- coordinator ---\n{coord.log_tail(20)}",
              file=sys.stderr)
        raise
    finally:
        agent.cleanup()  # SIGTERM; removes the node's containers (podman rm -f) or kills its process groups
    return rows


def measure_agents(runtimes: list[str], p: Profile) -> list[Row]:
    workdir = Path(tempfile.mkdtemp(prefix="cl-bench-footprint-"))
    nodes = {rt: f"fp{os.getpid()}-{rt}" for rt in runtimes}
    broker = BrokerUnderTest(kind="embedded", workdir=workdir)
    coord: CoordinatorProc | None = None
    rows: list[Row] = []
    try:
        broker.passwords = make_auth(workdir, list(nodes.values()))
        broker.start()
        coord = CoordinatorProc(broker, workdir)
        coord.start()
        for rt in runtimes:
            rows += measure_runtime(broker, coord, nodes[rt], rt, p)
    finally:
        if coord is not None:
            coord.stop()
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return rows


# ---- import cost ----------------------------------------------------------------------------------------------------


def probe_imports(specs: list[str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", IMPORT_PROBE, *specs], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"import probe failed: {proc.stderr.strip()[-800:]}")
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


Imports = tuple[int, list[tuple[str, int, int | None]], list[int]]


def import_costs() -> Imports:
    """(bare interpreter KiB, [(label, cumulative KiB, alone KiB or None)], [modules bare, modules after]);
    median of 3 runs."""
    runs = [probe_imports([s for s, _ in IMPORT_STEPS]) for _ in range(3)]
    base = int(statistics.median(r["base"] for r in runs))
    cumulative = [int(statistics.median(r["steps"][i][1] for r in runs)) for i in range(len(IMPORT_STEPS))]
    alone: dict[str, int] = {}
    for mod in ALONE:
        res = probe_imports([mod])
        alone[mod] = res["steps"][0][1] - res["base"]
    rows = [(label, cum, alone.get(spec)) for (spec, label), cum in zip(IMPORT_STEPS, cumulative, strict=True)]
    return base, rows, runs[0]["modules"]


# ---- report ---------------------------------------------------------------------------------------------------------


def mib(n: float) -> str:
    return f"{n / MIB:.1f}"


def agent_table(rows: list[Row]) -> str:
    out = []
    for r in rows:
        s = r.s
        svc = mib(statistics.fmean(s.service_rss)) if s.service_rss else "n/a"
        out.append([r.runtime, r.replicas, mib(statistics.fmean(s.rss)), mib(max(s.rss)), mib(statistics.fmean(s.uss)),
                    f"{s.cpu_mean:.2f}", f"{max(s.cpu):.1f}", s.threads, svc])
    headers = ["runtime", "replicas", "RSS MiB mean", "RSS MiB max", "USS MiB mean", "CPU % mean", "CPU % max (1 s)",
               "threads", "Podman service RSS MiB"]
    return table(headers, out)


def import_table(base: int, steps: list[tuple[str, int, int | None]]) -> str:
    rows: list[list[object]] = [["bare interpreter (`python -c pass`)", f"{base / 1024:.1f}", "", ""]]
    prev = base
    for label, cum, alone in steps:
        rows.append([label, f"{cum / 1024:.1f}", f"+{(cum - prev) / 1024:.1f}",
                     f"+{alone / 1024:.1f}" if alone is not None else ""])
        prev = cum
    return table(["import step (agent order)", "RSS MiB after", "added by step", "alone over bare"], rows)


def maps_table(row: Row) -> str:
    rows = [[f"`{os.path.basename(path)}`" if path.startswith("/") else path, mib(rss)] for path, rss in row.maps]
    return table([f"largest mappings ({row.runtime}, {row.replicas} replicas)", "RSS MiB"], rows)


def verdict(rows: list[Row]) -> str:
    idle = [r for r in rows if r.replicas == 0]
    parts = [f"{r.runtime} {statistics.fmean(r.s.rss) / MIB:.1f} MiB" for r in idle]
    uss = [f"{r.runtime} {statistics.fmean(r.s.uss) / MIB:.1f} MiB" for r in idle]
    met = all(statistics.fmean(r.s.rss) / MIB <= GOAL_RSS_MIB for r in idle)
    return (f"**Aim {'met' if met else 'not met'}**: idle agent RSS ≤ {GOAL_RSS_MIB:.0f} MiB; measured "
            f"{', '.join(parts)} with 0 replicas (USS, the memory this process alone holds: {', '.join(uss)}).")


def slim_notes(base: int, steps: list[tuple[str, int, int | None]], rows: list[Row]) -> str:
    prevs = [base] + [c for _, c, _ in steps[:-1]]
    added = {spec: cum - prev for (spec, _), (_, cum, _), prev in zip(IMPORT_STEPS, steps, prevs, strict=True)}
    labels = dict(IMPORT_STEPS)
    idle_steps = {k: v for k, v in added.items() if k != "cryptography.x509"}
    top = ", ".join(f"{labels[k]} +{v / 1024:.1f}" for k, v in sorted(idle_steps.items(), key=lambda kv: -kv[1])[:5])
    imported = steps[-2][1]  # everything but cryptography, which an idle agent has not needed yet
    http = sum(added[k] for k in ("urllib3", "requests", "podman")) / 1024
    crypto = added["cryptography.x509"] / 1024
    out = [
        f"Where the memory is: a bare interpreter is {base / 1024:.1f} MiB; importing what the idle agent imports "
        f"brings it to {imported / 1024:.1f} MiB. Largest steps (MiB): {top}. Most of the agent's RSS is anonymous "
        "memory (module code objects, classes, dicts), so it scales with the number of modules loaded."
    ]
    idle = next((r for r in rows if r.runtime == "podman" and r.replicas == 0), None)
    if idle is not None:
        extra = statistics.fmean(idle.s.rss) / MIB - imported / 1024
        where = f"within {abs(extra):.1f} MiB of" if abs(extra) < 3 else f"{extra:+.1f} MiB off"
        out.append(f"The idle podman agent's RSS is {where} that import total: its running state (loop, MQTT "
                   "buffers, executor threads, replica records) is small next to the code it loads, and "
                   f"{REPLICAS} replicas add little more.")
    out.append(
        f"Not in the idle figure: `cryptography` (+{crypto:.1f} MiB, its Rust extension), which the agent imports "
        "only to open its first sealed secret, and keeps loaded after that; enrolment and certificate renewal, "
        "which need it for seconds, run in a short-lived child process (`python -m edge_agent.identity`), so an "
        "enrolled agent whose workloads use no secrets stays at the figure above (the agent measured here was "
        "given a broker password instead of enrolling). Already slimmed: the agent builds only its own command's "
        "parser, and keeps out what podman-py and requests load only because it is installed: `rich` (progress "
        "bars; amqtt installs it) and `charset_normalizer` (charset guessing; Podman's API is UTF-8).")
    out.append(
        f"What to slim next: podman-py with requests and urllib3 (+ idna, certifi) add {http:.1f} MiB "
        "for a few REST calls on a unix socket that `http.client` could make; the process runtime, which never "
        "imports them, shows the difference. What remains is the interpreter, ssl/asyncio and paho. RSS also "
        "counts shared library pages (libpython, libcrypto); USS is what this process alone costs.")
    return "\n\n".join(out)


def body(rows: list[Row], imports: Imports, p: Profile, elapsed: float) -> str:
    base, steps, modules = imports
    maps_row = next((r for r in rows if r.maps and r.runtime == "podman"), next((r for r in rows if r.maps), None))
    return "\n".join([
        f"One `cloudless agent` process (profile `vps`, heartbeat 10 s, reconcile every 2 s) joined to the embedded "
        f"broker and a coordinator; sampled once a second for {p.window_s:.0f} s after a {p.settle_s:.0f} s settle, "
        f"first idle with 0 replicas, then with {REPLICAS} `sleep 3600` replicas (no probes) running. Only the "
        f"agent's own Python process is counted: not the Podman REST service it starts (shown separately), not "
        f"conmon, not the replicas. CPU % is of one core.",
        "",
        verdict(rows),
        "",
        agent_table(rows),
        "",
        f"Import cost, measured in fresh interpreters (median of 3; `alone` = that import in a bare interpreter, "
        f"dependencies included; {modules[0]} modules in a bare interpreter, {modules[1]} at the end):",
        "",
        import_table(base, steps),
        "",
        *([maps_table(maps_row), ""] if maps_row is not None else []),
        *slim_notes(base, steps, rows).splitlines(),
        "",
        f"Whole run: {elapsed:.0f} s.",
    ])


# ---- main -----------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="5 s windows (smoke test), not real numbers")
    ap.add_argument("--doc", type=Path, default=DOC, help=f"markdown file to update (default: {DOC})")
    args = ap.parse_args(argv)
    p = QUICK if args.quick else FULL
    if os.geteuid() != 0:
        raise SystemExit("bench/agent_footprint.py runs an agent on rootful Podman: run it as root")
    if shutil.which("podman") is None:
        raise SystemExit("podman is not installed: run scripts/install-system-deps.sh (make bench does)")
    os.environ["CONTAINERS_CONF"] = str(CONTAINERS_CONF)
    # SIGTERM (e.g. a CI timeout) unwinds through the `finally` blocks, so no process or container outlives us
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    started = time.monotonic()
    rows = measure_agents(["podman", "process"], p)
    imports = import_costs()
    elapsed = time.monotonic() - started
    text = body(rows, imports, p, elapsed)
    print(text)
    command = "python bench/agent_footprint.py" + (" --quick" if args.quick else "")
    path = write_section(name="agent_footprint", title="Edge agent footprint: memory and CPU", body=text,
                         command=command, doc=args.doc)
    print(f"\nwrote {path} ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

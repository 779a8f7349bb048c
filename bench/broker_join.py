"""The embedded broker's connect burst (issue 17), without the fleet benchmark's other phases.

N simulated devices (tests/fleet/sim.py: real TLS, each with its own CA-issued certificate, the real wire contract)
dial the embedded broker (`cloudless broker --cert-auth`) at once while a real `cloudless coordinator` is connected;
prints how long until every device is connected and subscribed, until the coordinator lists all of them online,
and the broker's CPU seconds and RSS over the burst. On loopback (no network namespace: no root needed).

    python bench/broker_join.py --nodes 2000                 # the burst
    python bench/broker_join.py --nodes 1000 --py-spy FILE   # with py-spy sampling the broker (a flame graph)

bench/fleet.py is the full measurement (IP-level traffic, every phase); this is the quick loop for the broker alone.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.fleet import Api  # noqa: E402
from tests.fleet.env import Broker, Coordinator, Pki, SimProc, node_names, usage  # noqa: E402
from tests.fleet.sim import SimConfig  # noqa: E402


class Loopback:
    """SimProc's namespace stand-in: the simulators run in this host's network namespace."""

    def exec_argv(self, argv: list[str]) -> list[str]:
        return argv


async def run(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="cl-broker-join-"))
    names = node_names(args.nodes)
    pki = Pki(workdir, ["127.0.0.1"])
    pki.issue_nodes(names)
    broker = Broker("embedded", workdir, pki, "127.0.0.1")
    broker.start()
    assert broker.proc is not None
    coord = api = None
    spy = None
    sims: list[SimProc] = []
    try:
        if not args.no_coordinator:
            coord = Coordinator(workdir, pki, broker)
            coord.start()
            api = Api(coord.url, coord.token, coord.ssl_context())
        procs = args.sim_procs or (2 if args.nodes >= 2000 else 1)
        sims = [SimProc(Loopback(), SimConfig(host="127.0.0.1", port=broker.port, ca_file=pki.ca_file,  # type: ignore[arg-type]
                                              cert_dir=pki.cert_dir, nodes=names[i::procs], heartbeat_s=300,
                                              keepalive_s=60), workdir, f"sim{i}")
                for i in range(procs)]
        for s in sims:
            await s.start()
        for s in sims:
            await s.arm(300)
        await asyncio.sleep(2)  # the coordinator subscribed
        if args.py_spy:
            raw = ["-f", "raw"] if args.py_spy.suffix == ".txt" else []
            spy = await asyncio.create_subprocess_exec(
                args.py_spy_bin, "record", "-p", str(broker.proc.pid), "-o", str(args.py_spy), "-r", "50",
                "--nonblocking", *raw, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            await asyncio.sleep(1)
        cpu0, _ = usage([broker.proc.pid])
        t0 = time.time()
        for s in sims:
            await s.go()
        joined = [await s.wait_joined(300) for s in sims]
        connected_s = max(j["t"] for j in joined) - t0
        cpu1, rss1 = usage([broker.proc.pid])
        online_s = None
        if api is not None:
            while time.time() - t0 < 300:
                if await api.count_online() >= args.nodes:
                    online_s = time.time() - t0
                    break
                await asyncio.sleep(0.25)
        cpu2, rss2 = usage([broker.proc.pid])
        failed = sum(j["failed"] for j in joined)
        print(f"embedded broker, {args.nodes} devices: connected+subscribed {connected_s:.1f} s "
              f"(failed {failed}), all online at the coordinator {online_s and round(online_s, 1)} s; "
              f"broker CPU {cpu1 - cpu0:.1f} s to connected, {cpu2 - cpu0:.1f} s to online; RSS {rss1 >> 20} MiB "
              f"/ {rss2 >> 20} MiB; simulators' CPU {[j.get('cpu_s') for j in joined]} s", flush=True)
        if failed:
            print("failures:", [j.get("failures") for j in joined])
    finally:
        if spy is not None:
            spy.send_signal(2)
            await spy.wait()
        for s in sims:
            await s.stop()
        if api is not None:
            await api.close()
        if coord is not None:
            coord.stop()
        broker.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--sim-procs", type=int, default=0)
    p.add_argument("--no-coordinator", action="store_true")
    p.add_argument("--py-spy", type=Path, help="sample the broker with py-spy into this file (.svg, or .txt raw)")
    p.add_argument("--py-spy-bin", default="py-spy")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()

"""What an idle overlay link costs: a peer kept alive (eager, the default) against one reached on demand, side by
side in one run, on loopback through a relay (how every connection starts).

Each case: two overlays and a relay (tests/dataplane/test_overlay_facade.make_net), one stream used once, then
`--seconds` of silence; counted are the QUIC bytes both ends put on their link to each other (Link.bytes_out,
packets as sent: UDP/IP headers not included) and whether the link is still up at the end. An eager link is pinged
every idle_timeout / 3 = 10 s by both sides; an on-demand one (a node's link to the coordinator's S3 gateway since
the on-demand change) closes 30 s after its last use and costs nothing after that.

    .venv/bin/python bench/overlay_idle.py                 # ~5 min; writes docs/benchmarks.md "overlay-idle"
    .venv/bin/python bench/overlay_idle.py --seconds 60 --doc /tmp/b.md
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.report import DOC, table, write_section  # noqa: E402
from dataplane.overlay import ECHO  # noqa: E402
from tests.dataplane.test_overlay_facade import RELAY, Net, make_net, until  # noqa: E402

DAY_S = 86400.0
MIB = float(1 << 20)


def link_bytes(n: Net) -> int:
    """QUIC bytes both ends sent on their link to each other so far (0 for an end with no link)."""
    total = 0
    for overlay, peer in ((n.pi, "laptop"), (n.laptop, "pi")):
        endpoint = overlay.endpoint
        link = endpoint.links.get(peer) if endpoint is not None else None
        if link is not None:
            total += sum(link.bytes_out.values())
    return total


async def one(eager: bool, seconds: float) -> dict[str, object]:
    n = await make_net(direct=False, idle_timeout_s=30.0, eager=lambda _peer: eager)
    try:
        n.connect()
        await until(lambda: RELAY in n.pi.endpoint.relays, "pi attached", 30)  # type: ignore[union-attr]
        reader, writer = await n.pi.open_stream("laptop", ECHO)
        writer.write(b"one request")
        writer.write_eof()
        await reader.read()
        links = {id(o.endpoint.links.get(p)) for o, p in ((n.pi, "laptop"), (n.laptop, "pi"))  # type: ignore[union-attr]
                 if o.endpoint is not None}
        start, started = link_bytes(n), time.monotonic()
        await asyncio.sleep(seconds)
        still = {id(o.endpoint.links.get(p)) for o, p in ((n.pi, "laptop"), (n.laptop, "pi"))  # type: ignore[union-attr]
                 if o.endpoint is not None}
        # a link that ended took its counters with it: what it sent before closing counts from its last reading
        spent = max(0, link_bytes(n) - start) if still == links else link_bytes(n)
        elapsed = time.monotonic() - started
        return {"eager": eager, "bytes": spent, "seconds": elapsed, "up": n.pi._connected("laptop") is not None}
    finally:
        await n.pi.stop()
        await n.laptop.stop()
        n.relay.close()


async def run(seconds: float) -> list[dict[str, object]]:
    return [await one(True, seconds), await one(False, seconds)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="idle time measured per case (default 120)")
    parser.add_argument("--doc", type=Path, default=DOC, help="markdown file to write (default docs/benchmarks.md)")
    args = parser.parse_args()
    if args.seconds < 40:
        parser.error("--seconds: at least 40 (an on-demand link closes 30 s after its last use)")
    results = asyncio.run(run(args.seconds))
    rows = []
    for r in results:
        per_day = float(r["bytes"]) * DAY_S / float(r["seconds"]) / MIB  # type: ignore[arg-type]
        rows.append(["kept alive (eager, default)" if r["eager"] else "on demand (a node's link to the S3 gateway)",
                     f"{r['bytes']} B in {float(r['seconds']):.0f} s",  # type: ignore[arg-type]
                     f"{per_day:.2f} MiB/day", "up" if r["up"] else "closed"])
        print(rows[-1])
    body = ("One used-then-idle link between two nodes through a relay on loopback: QUIC bytes both ends sent on it\n"
            "while idle (packets as sent; UDP/IP headers add ~28 B per packet), extrapolated to a day.\n\n"
            + table(["link", "idle traffic, both ends", "per day", "at the end"], rows)
            + "\n\nThe on-demand link closes 30 s after its last use (its closing packets are not counted); after "
              "that it costs nothing until the next use.")
    write_section("overlay-idle", "Overlay: an idle link kept alive vs on demand", body,
                  command=f"python bench/overlay_idle.py --seconds {args.seconds:g}", doc=args.doc)


if __name__ == "__main__":
    main()

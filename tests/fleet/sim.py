"""Simulated edge agents: N devices in one asyncio process, each over its own TLS connection with its own client
certificate, speaking the real wire contract (`broker.wire`) as `edge_agent` does:

- CONNECT with the agent's last will (NodeStatus offline, ts=0, retained, QoS 1) and keep-alive;
- SUBSCRIBE to its own desired, cmd, peers and services topics (QoS 1);
- a retained NodeStatus online with facts (cpu, memory, arch, zone, profile, labels, runtime `process`);
- a Heartbeat every `heartbeat_s` (QoS 0, with each replica's usage and the highest epoch seen) — an idle device's
  readings never move past the thresholds, so this is the profile's maximum heartbeat interval — and one at once
  when its replicas change; phases spread evenly over the interval; PINGREQ when nothing was sent for a keep-alive
  period; the status states both timers (`heartbeat_max_s`, `keepalive_s`);
- on a DesiredState: an ObservedState (retained, QoS 1) answering its generation with every replica running and
  ready (`edge_agent.report.observed`), at once — a simulated device starts nothing.

Run as a process (`python -m tests.fleet.sim --config FILE`), driven by JSON lines on stdin, answering on stdout:
  {"cmd": "go"}                         -> every device dials (once, first: the process prints {"event": "armed"}
                                           when every device's TLS context is loaded)
  {"cmd": "stats"}                      -> {"reply": "stats", "connected": n, "desired": {node: [gen, t, [ids]]}, ...}
  {"cmd": "cut", "nodes": [ids]}         -> sockets closed without DISCONNECT (the broker fires the wills)
  {"cmd": "cut", "nodes": [ids], "silent": true} -> those devices fall silent, sockets left open
  {"cmd": "quit"}                        -> every connection closed cleanly, exit
It prints {"event": "joined", ...} once every node has connected (or failed to). Times are `time.time()`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import ssl
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker import wire
from broker.errors import WireError
from broker.wire import (
    DesiredState,
    NodeFacts,
    NodeStatus,
    Presence,
    ReplicaObserved,
    ReplicaState,
    ReplicaUsage,
    topics,
)
from edge_agent import report
from edge_agent.facts import MemDisk
from tests.fleet.mqtt_lite import LiteClient, WillMessage

GIB = 1024**3
TICK_S = 0.1


@dataclass(frozen=True)
class SimConfig:
    """What the fleet process needs: where the broker is, which nodes it plays and how they behave."""

    host: str
    port: int
    ca_file: Path
    cert_dir: Path  # <node>.pem and <node>.key per node
    nodes: list[str]
    zones: int = 3
    heartbeat_s: float = 10.0
    keepalive_s: int = 10
    profile: str = "vps"
    concurrency: int = 64  # TLS handshakes in flight at once
    connect_timeout_s: float = 60.0

    @staticmethod
    def load(path: Path) -> SimConfig:
        raw = json.loads(path.read_text())
        return SimConfig(host=str(raw["host"]), port=int(raw["port"]), ca_file=Path(raw["ca_file"]),
                         cert_dir=Path(raw["cert_dir"]), nodes=[str(n) for n in raw["nodes"]],
                         zones=int(raw.get("zones", 3)), heartbeat_s=float(raw.get("heartbeat_s", 10.0)),
                         keepalive_s=int(raw.get("keepalive_s", 10)), profile=str(raw.get("profile", "vps")),
                         concurrency=int(raw.get("concurrency", 64)),
                         connect_timeout_s=float(raw.get("connect_timeout_s", 60.0)))

    def dump(self) -> str:
        return json.dumps({"host": self.host, "port": self.port, "ca_file": str(self.ca_file),
                           "cert_dir": str(self.cert_dir), "nodes": self.nodes, "zones": self.zones,
                           "heartbeat_s": self.heartbeat_s, "keepalive_s": self.keepalive_s,
                           "profile": self.profile, "concurrency": self.concurrency,
                           "connect_timeout_s": self.connect_timeout_s})


def facts_for(node_id: str, index: int, cfg: SimConfig) -> NodeFacts:
    return NodeFacts(
        arch="x86_64", os="linux", os_release="simulated", hostname=node_id, cpu_count=4, memory_bytes=4 * GIB,
        disk_bytes=32 * GIB, runtime="process", rootless=False, profile=cfg.profile,
        zone=f"zone-{index % cfg.zones}", labels={"fleet": "sim", "rack": f"r{index % 50}"}, agent_version="sim",
        workload_isolation="by user: a workload with runAsUser runs as that user; one without runs as root, "
                           "not separated",
        abilities=("process",),
    )


@dataclass
class SimNode:
    """One simulated device: its connection, its desired state and when it arrived."""

    node_id: str
    index: int
    facts: NodeFacts
    client: LiteClient | None = None
    seq: int = 0
    max_epoch: int = 0
    desired: DesiredState | None = None
    desired_at: float = 0.0
    started: dict[str, float] = field(default_factory=dict)  # replica id -> when it "started"
    cut: bool = False
    errors: int = 0
    received: dict[str, int] = field(default_factory=dict)  # messages in, by channel

    def topic(self, channel: topics.Channel) -> str:
        return topics.node_topic(self.node_id, channel)

    def publish(self, channel: topics.Channel, msg: Any) -> None:
        spec = topics.NODE_CHANNELS[channel]
        if self.client is not None and self.client.transport is not None:
            self.client.publish(self.topic(channel), wire.encode(msg), qos=spec.qos, retain=spec.retain)

    def on_message(self, topic: str, payload: bytes) -> None:
        channel = topic.rsplit("/", 1)[-1]
        self.received[channel] = self.received.get(channel, 0) + 1
        try:
            msg = wire.decode_node_message(topic, payload)
        except WireError:
            self.errors += 1
            return
        if isinstance(msg, DesiredState):
            self.on_desired(msg)

    def on_desired(self, d: DesiredState) -> None:
        now = time.time()
        self.desired, self.desired_at = d, now
        self.max_epoch = max(self.max_epoch, d.epoch)
        self.started = {r.replica_id: self.started.get(r.replica_id, now) for r in d.replicas}
        replicas = tuple(
            ReplicaObserved(replica_id=r.replica_id, workload=r.workload, state=ReplicaState.RUNNING,
                            spec_hash=r.spec_hash, ready=True, started_at=self.started[r.replica_id],
                            container_id=f"sim-{r.replica_id}")
            for r in d.replicas)
        self.publish(topics.Channel.OBSERVED, report.observed(self.node_id, d, now, replicas))
        self.heartbeat()  # its replicas changed: a heartbeat goes now, not at the next maximum interval

    def status(self, heartbeat_s: float, keepalive_s: int) -> NodeStatus:
        """Online, with facts and the control-link timers (the coordinator derives this node's silence TTL from
        them)."""
        msg = report.status(node_id=self.node_id, presence=Presence.ONLINE, now=time.time(), facts=self.facts,
                            schedulable=True, reasons=(), boot_id=f"sim-{self.node_id}")
        return dataclasses.replace(msg, heartbeat_max_s=heartbeat_s, keepalive_s=keepalive_s)

    def heartbeat(self) -> None:
        self.seq += 1
        replicas = tuple(ReplicaUsage(replica_id=rid, cpu_percent=0.1, memory_bytes=8 * 1024 * 1024)
                         for rid in self.started)
        hb = report.heartbeat(node_id=self.node_id, seq=self.seq, now=time.time(), cpu_percent=5.0,
                              md=MemDisk(memory_used=GIB, memory_total=4 * GIB, disk_used=4 * GIB,
                                         disk_total=32 * GIB),
                              battery_percent=None, replicas=replicas, max_epoch=self.max_epoch)
        self.publish(topics.Channel.HEARTBEAT, hb)


def will_of(node_id: str) -> WillMessage:
    """The agent's last will, exactly as edge_agent.cli builds it."""
    will = NodeStatus(node_id=node_id, presence=Presence.OFFLINE, ts=0.0, schedulable=False)
    spec = topics.NODE_CHANNELS[topics.Channel.STATUS]
    return WillMessage(topics.node_status(node_id), wire.encode(will), qos=spec.qos, retain=spec.retain)


class Fleet:
    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.nodes = [SimNode(n, i, facts_for(n, i, cfg)) for i, n in enumerate(cfg.nodes)]
        self.by_id = {n.node_id: n for n in self.nodes}
        self.failures: list[str] = []
        self.heartbeats = 0
        self.ca_pem = cfg.ca_file.read_text()
        self.contexts: dict[str, ssl.SSLContext] = {}

    def arm(self) -> None:
        """Each device's TLS context (its key and certificate loaded), before anyone dials: a powered device has
        its credentials ready; what the join measures is the dial."""
        self.contexts = {n.node_id: self._ssl(n) for n in self.nodes}

    def _ssl(self, node: SimNode) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_verify_locations(cadata=self.ca_pem)
        ctx.load_cert_chain(self.cfg.cert_dir / f"{node.node_id}.pem", self.cfg.cert_dir / f"{node.node_id}.key")
        return ctx

    async def connect(self, node: SimNode, gate: asyncio.Semaphore) -> None:
        loop = asyncio.get_running_loop()
        async with gate:
            try:
                async with asyncio.timeout(self.cfg.connect_timeout_s):
                    _, client = await loop.create_connection(
                        lambda: LiteClient(node.node_id, keepalive_s=self.cfg.keepalive_s, will=will_of(node.node_id),
                                           on_message=node.on_message),
                        self.cfg.host, self.cfg.port, ssl=self.contexts.get(node.node_id) or self._ssl(node),
                        server_hostname=self.cfg.host)
                    await client.connected
                    node.client = client
                    codes = await client.subscribe([(topics.node_desired(node.node_id), 1),
                                                    (topics.node_cmd(node.node_id), 1),
                                                    (topics.node_peers(node.node_id), 1),
                                                    (topics.node_services(node.node_id), 1)])
                    if any(c & 0x80 for c in codes):
                        raise ConnectionError(f"subscription refused: {codes.hex()}")
                    node.publish(topics.Channel.STATUS, node.status(self.cfg.heartbeat_s, self.cfg.keepalive_s))
                    # steady state: each device's keep-alive timer at its own phase (a fleet that has been up a
                    # while), never later than the keep-alive, so an idle window of any length counts pings fairly
                    client.last_sent -= random.uniform(0, self.cfg.keepalive_s)
            except (OSError, ConnectionError, TimeoutError, ssl.SSLError) as exc:
                node.client = None
                self.failures.append(f"{node.node_id}: {type(exc).__name__}: {exc}")

    async def join(self) -> None:
        gate = asyncio.Semaphore(self.cfg.concurrency)
        await asyncio.gather(*(self.connect(n, gate) for n in self.nodes))

    def connected(self) -> int:
        return sum(1 for n in self.nodes if n.client is not None and n.client.transport is not None)

    async def beat(self) -> None:
        """Heartbeats, each node at its own phase of the interval; PINGREQ where the keep-alive needs one."""
        slots = max(1, round(self.cfg.heartbeat_s / TICK_S))
        buckets: list[list[SimNode]] = [[] for _ in range(slots)]
        for n in self.nodes:
            buckets[random.randrange(slots)].append(n)
        tick, start, last_ping = 0, time.monotonic(), 0.0
        while True:
            for n in buckets[tick % slots]:
                if not n.cut and n.client is not None and n.client.transport is not None:
                    n.heartbeat()
                    self.heartbeats += 1
            now = time.monotonic()
            if now - last_ping >= 1.0:
                last_ping = now
                for n in self.nodes:
                    if not n.cut and n.client is not None and n.client.transport is not None:
                        n.client.ping_if_due(now)
            tick += 1
            await asyncio.sleep(max(0.0, start + tick * TICK_S - time.monotonic()))

    def stats(self) -> dict[str, Any]:
        desired = {n.node_id: [n.desired.generation, n.desired_at, [r.replica_id for r in n.desired.replicas]]
                   for n in self.nodes if n.desired is not None and n.desired.replicas and not n.cut}
        return {"reply": "stats", "connected": self.connected(), "heartbeats": self.heartbeats,
                "pings": sum(n.client.pings for n in self.nodes if n.client is not None),
                "unacked": sum(len(n.client.unacked) for n in self.nodes if n.client is not None),
                "wire_errors": sum(n.errors for n in self.nodes),
                "received": {c: sum(n.received.get(c, 0) for n in self.nodes)
                             for c in sorted({c for n in self.nodes for c in n.received})},
                "failures": self.failures[:5],
                "failed": len(self.failures), "desired": desired, "t": time.time()}

    def cut(self, ids: list[str], *, silent: bool = False) -> dict[str, Any]:
        """Close these devices' sockets without DISCONNECT (the broker fires their wills at once), or with `silent`
        make them fall silent with the socket open — a power cut or a dead link: the broker notices only when the
        keep-alive runs out (1.5 x keep-alive, MQTT 3.1.1 §3.1.2.10)."""
        count = 0
        for i in ids:
            n = self.by_id.get(i)
            if n is not None and n.client is not None and not n.cut:
                n.cut = True
                if silent and n.client.transport is not None:
                    n.client.transport.pause_reading()
                else:
                    n.client.abort()
                count += 1
        return {"reply": "cut", "count": count, "t": time.time()}

    def quit(self) -> None:
        for n in self.nodes:
            if n.client is not None and n.client.transport is not None and not n.cut:
                n.client.disconnect()


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main_async(cfg: SimConfig) -> None:
    fleet = Fleet(cfg)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    fleet.arm()
    emit({"event": "armed", "nodes": len(fleet.nodes), "t": time.time()})
    first = json.loads(await reader.readline() or b"{}")
    if first.get("cmd") != "go":
        return
    t0, cpu0 = time.time(), time.process_time()
    beat = asyncio.create_task(fleet.beat())  # from the first connection on: the keep-alive runs during the join
    await fleet.join()
    emit({"event": "joined", "connected": fleet.connected(), "failed": len(fleet.failures),
          "failures": fleet.failures[:5], "seconds": round(time.time() - t0, 2),
          "cpu_s": round(time.process_time() - cpu0, 2), "t": time.time()})
    try:
        while line := await reader.readline():
            cmd = json.loads(line)
            match cmd.get("cmd"):
                case "stats":
                    emit(fleet.stats())
                case "cut":
                    emit(fleet.cut([str(n) for n in cmd.get("nodes", [])], silent=bool(cmd.get("silent"))))
                case "quit":
                    break
                case other:
                    emit({"reply": "error", "error": f"unknown command {other!r}"})
    finally:
        beat.cancel()
        fleet.quit()
        await asyncio.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="simulated edge agents (tests.fleet.sim)")
    p.add_argument("--config", type=Path, required=True, help="a JSON file written by SimConfig.dump()")
    args = p.parse_args(argv)
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(main_async(SimConfig.load(args.config)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A storage node end to end (issue 20): `cloudless up --no-agent` (mutual-TLS broker, coordinator, relay), a real
`cloudless agent --storage-quota 64MiB` process enrolled with a token, and a test overlay member with its own
CA-issued identity. The coordinator's node view shows the quota the agent offers, then the bytes and chunks it holds
after the member stored chunks on it through the overlay (dataplane.objects.peer.OverlayChunkClient via the relay);
every chunk reads back intact; a byte flipped on the agent's disk is refused at the next read and the coordinator
sees that chunk in the node's corrupt count; the agent's metrics agree."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent import identity as ident
from tests.integration.cluster_env import until
from tests.integration.test_up import Up

pytestmark = pytest.mark.integration
MIB = 1024 * 1024
NODE = "store-1"
PROBE = "s3@probe"  # a storage gateway's identity: a storage node serves its chunks to gateways only
QUOTA = 64 * MIB


@pytest.fixture
def cluster() -> Iterator[Up]:
    u = Up(Path(tempfile.mkdtemp(prefix="cl-storage-")))
    u.extra = ["--no-agent"]
    u.start()
    try:
        yield u
    finally:
        if u.proc is not None and u.proc.poll() is None:
            u.stop()
        shutil.rmtree(u.workdir, ignore_errors=True)


def token(up: Up) -> str:
    return str(json.loads(up.cli("token", "create", "-o", "json").stdout)["token"])


class StorageAgent:
    """`cloudless agent` as a device runs it, with the storage flags."""

    def __init__(self, up: Up, tok: str) -> None:
        self.dir = up.workdir / "agent"
        self.dir.mkdir()
        (self.dir / "token").write_text(tok)
        self.log = self.dir / "agent.log"
        argv = [sys.executable, "-m", "cloudless", "--log-level", "INFO", "agent", "--data-dir",
                str(self.dir / "data"), "--node-id", NODE, "--token-file", str(self.dir / "token"),
                "--broker", f"mqtts://127.0.0.1:{up.mqtt}", "--runtime", "process", "--profile", "vps",
                "--heartbeat-interval", "1", "--overlay-port", "0", "--metrics-listen", "127.0.0.1:0",
                "--storage-quota", "64MiB", "--storage-dir", str(self.dir / "disk" / "chunks")]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=open(self.log, "ab"), text=True, cwd="/")
        self.line = ""

    def wait_running(self, timeout: float = 90.0) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if "cloudless agent: node" in line:
                self.line = line
                return line
            if not line and self.proc.poll() is not None:
                break
        raise AssertionError(f"the agent did not start:\n{self.tail()}")

    def metrics(self) -> str:
        url = self.line.split("metrics ", 1)[1].split()[0].rstrip(",")
        with urllib.request.urlopen(url, timeout=10) as resp:
            return str(resp.read().decode())

    def tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-60:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def node_view(up: Up) -> dict[str, Any] | None:
    nodes = json.loads(up.cli("get", "nodes", "-o", "json").stdout)
    items = nodes.get("items", nodes) if isinstance(nodes, dict) else nodes
    return next((n for n in items if n.get("id") == NODE), None)


def storage_of(up: Up) -> dict[str, Any] | None:
    node = node_view(up)
    return node.get("storage") if node else None


def chunk(n: int, size: int = MIB) -> tuple[str, bytes]:
    data = (hashlib.sha256(f"chunk {n}".encode()).digest() * (size // 32 + 1))[:size]
    return hashlib.sha256(data).hexdigest(), data


def overlay_credential(up: Up, name: str, node_probe: ident.NodeIdentity | None = None) -> Any:
    """An overlay credential for `name`: a node's own (enrolled by token), or, for a gateway identity, one issued by
    the cluster CA as the coordinator issues its gateway's (`s3@...` cannot be enrolled: node ids hold no '@')."""
    from coordinator.pki import CertificateAuthority, CertRole, key_pem, make_csr, new_key
    from dataplane.quic import NodeCredential

    if node_probe is not None:
        return NodeCredential.from_files(name, cert=node_probe.cert, key=node_probe.key, ca=node_probe.ca)
    pki = up.data / "coordinator" / "pki"
    ca, _ = CertificateAuthority.load_or_create(pki, "cluster", time.time())
    key = new_key()
    issued = ca.issue(make_csr(key, name), identity=name, role=CertRole.NODE, now=time.time(), lifetime_s=3600)
    out = up.workdir / "probe"
    out.mkdir(exist_ok=True)
    (out / "cert.pem").write_bytes(issued.cert_pem)
    (out / "key.pem").write_bytes(key_pem(key))
    return NodeCredential.from_files(name, cert=out / "cert.pem", key=out / "key.pem", ca=pki / "ca.pem")


async def through_the_overlay(up: Up, cred: Any, chunks: dict[str, bytes], rot: Path, log: Callable[[], str], *,
                              refused: Any = None) -> dict[str, bytes]:
    """Store `chunks` on the agent from a gateway on the overlay and read them back; then flip a byte of the first
    one's file on the agent's disk (`rot`: its chunk directory): the agent's own check refuses it (CORRUPT). With
    `refused` (a node's credential), first show that a device that is no gateway may not use the chunks at all."""
    from broker.wire import PeerEntry, RelayInfo
    from dataplane.objects.peer import ChunkMismatch, ChunkRefused, ChunkUnavailable, OverlayChunkClient
    from dataplane.overlay import Overlay

    if refused is not None:
        device = Overlay(refused, clock=time.time, local_addresses=lambda: ["127.0.0.1"])
        await device.start("127.0.0.1", 0)
        try:
            device.apply((RelayInfo(relay_id="relay@local", addresses=(f"127.0.0.1:{up.relay}",)),),
                         (PeerEntry(node_id=NODE, relays=("relay@local",), dial=True),), ())
            other = OverlayChunkClient(device, timeout_s=20.0)
            some_id, some = next(iter(chunks.items()))
            deadline = time.monotonic() + 90
            while True:
                try:
                    await other.put(NODE, some_id, some)
                    raise AssertionError("a device that is no storage gateway stored a chunk on another device")
                except ChunkRefused as exc:
                    assert "may not use this node's chunks" in str(exc), exc
                    break
                except ChunkUnavailable as exc:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"no answer through the overlay within 90 s: {exc}\n{log()}") from None
                    await asyncio.sleep(0.5)
        finally:
            await device.stop()
    overlay = Overlay(cred, clock=time.time, local_addresses=lambda: ["127.0.0.1"])
    await overlay.start("127.0.0.1", 0)
    try:
        overlay.apply((RelayInfo(relay_id="relay@local", addresses=(f"127.0.0.1:{up.relay}",)),),
                      (PeerEntry(node_id=NODE, relays=("relay@local",), dial=True),), ())
        client = OverlayChunkClient(overlay, timeout_s=20.0)
        first_id, first = next(iter(chunks.items()))
        deadline = time.monotonic() + 90
        while True:  # until the agent has attached to the relay and the connection is up
            try:
                await client.put(NODE, first_id, first)
                break
            except ChunkUnavailable as exc:
                if time.monotonic() > deadline:
                    raise AssertionError(f"no chunk put through the overlay within 90 s: {exc}\n{log()}") from None
                await asyncio.sleep(0.5)
        for cid, data in chunks.items():
            await client.put(NODE, cid, data)
        assert await client.has(NODE, list(chunks)) == frozenset(chunks)
        read = {cid: await client.get(NODE, cid) for cid in chunks}
        path = rot / first_id[:2] / first_id
        data = bytearray(path.read_bytes())
        data[1000] ^= 0x40
        path.write_bytes(bytes(data))
        with pytest.raises(ChunkMismatch, match="corrupt"):
            await client.get(NODE, first_id)
        return read
    finally:
        await overlay.stop()


def test_a_storage_agent_is_seen_by_the_coordinator_and_serves_chunks_over_the_overlay(cluster: Up) -> None:
    agent = StorageAgent(cluster, token(cluster))
    try:
        line = agent.wait_running()
        assert f"storage {QUOTA} bytes in {agent.dir / 'disk' / 'chunks'}" in line, line

        # the coordinator's node view: the quota offered, nothing held yet
        seen = until(lambda: (s := storage_of(cluster)) is not None and s, 60, "the coordinator's storage facts",
                     agent.tail)
        assert seen == {"quotaBytes": QUOTA, "usedBytes": 0, "chunks": 0, "corrupt": 0}

        device = ident.enrol(cluster.workdir / "device", "device-1", token(cluster))
        chunks = dict(chunk(i) for i in range(4))
        disk = agent.dir / "disk" / "chunks"
        read = asyncio.run(through_the_overlay(cluster, overlay_credential(cluster, PROBE), chunks, disk, agent.tail,
                                               refused=overlay_credential(cluster, "device-1", device)))
        assert read == chunks
        assert len(list(disk.glob("*/*"))) == 3  # on the agent's disk, where it was told; the rotten copy removed

        # the republished status reaches the coordinator: the chunks held and the one found corrupt (by the read)
        held = until(lambda: (s := storage_of(cluster)) is not None and s["corrupt"] == 1 and s, 60,
                     "the coordinator's view of the chunks held and the corrupt one", agent.tail)
        assert held == {"quotaBytes": QUOTA, "usedBytes": 3 * MIB, "chunks": 3, "corrupt": 1}
        metrics = agent.metrics()
        assert f"cloudless_agent_storage_used_bytes {3 * MIB}" in metrics
        assert "cloudless_agent_storage_chunks 3" in metrics
        assert "cloudless_agent_storage_corrupt_reported 1" in metrics
        assert f"cloudless_agent_storage_quota_bytes {QUOTA}" in metrics
    finally:
        agent.stop()
    assert agent.proc.returncode == 0, agent.tail()
    assert os.path.exists(agent.dir / "data" / "storage-state.json")  # the scrub's state, saved at stop

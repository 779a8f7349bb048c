"""The storage lab (issue 20): a cluster as a user builds it, in the network-namespace lab.

    lan ── coord   `cloudless up --advertise <addr> --no-agent --s3-port 9000 [--coordinators 3]`
     ├──── s1..sN  `cloudless agent --token ... --runtime process --storage-quota Q --storage-dir DIR`, zones z0/z1
     └──── client  the test's S3 clients (boto3, the AWS CLI), in this machine's network stack

Nothing here talks to the object store's internals: clients speak S3 to the coordinator's endpoint with the admin
access key `cloudless up` wrote (`<CLI config dir>/storage.json`), progress is read from `/v1/storage/status`, and
what is really on each device is read from its chunk directory (`DIR/ab/<sha256>`, edge_agent/chunks.py).
boto3 runs in this process, in threads that joined the client machine's network namespace (netns.InHost).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.dataplane.services_lab import REPO, LabAgent
from tests.dataplane.test_overlay_cluster_lab import env
from tests.install.lab_fabric import Coordinator, tail
from tests.integration.conftest import require_binary
from tests.lab.netlab import Host, Lab
from tests.need import require_root, unavailable
from tests.storage_lab.netns import InHost

MiB = 1024 * 1024
CHUNK = MiB  # dataplane/objects/chunking.py: fixed 1 MiB chunks named by the SHA-256 of their bytes
S3_PORT = 9000
API_PORT = 8470
_CHUNK_NAME = re.compile(r"[0-9a-f]{64}")


def chunk_ids(body: bytes, chunk: int = CHUNK) -> list[str]:
    """The ids the store names `body`'s chunks by (an empty object has none)."""
    return [hashlib.sha256(body[i:i + chunk]).hexdigest() for i in range(0, len(body), chunk)]


def pick(d: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    """The first of `names` present in `d` (the status document's fields, snake_case or camelCase)."""
    for name in names:
        if name in d:
            return d[name]
    return default


class StorageAgent(LabAgent):
    """A process-runtime agent that offers `quota` of storage in its own chunk directory."""

    def __init__(self, host: Host, node_id: str, *, quota: str, zone: str) -> None:
        super().__init__(host, node_id, "process", zone=zone)
        self.quota = quota
        self.chunks = self.dir / "chunks"

    def argv(self, token: str | None) -> list[str]:
        return [*super().argv(token), "--storage-quota", self.quota, "--storage-dir", str(self.chunks)]

    def held(self) -> set[str]:
        """Chunk ids stored on this device's disk right now (temp files of writes in progress excluded)."""
        found = set()
        with contextlib.suppress(OSError):
            for sub in self.chunks.iterdir():
                if sub.is_dir() and len(sub.name) == 2:
                    found |= {p.name for p in sub.iterdir() if _CHUNK_NAME.fullmatch(p.name)}
        return found

    def chunk_path(self, chunk_id: str) -> Path:
        return self.chunks / chunk_id[:2] / chunk_id

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class StorageCoordinator(Coordinator):
    """`cloudless up --advertise ADDR --no-agent --s3-port PORT [--coordinators N]`."""

    def __init__(self, host: Host, tmp: Path, *, coordinators: int = 1, s3_port: int = S3_PORT) -> None:
        super().__init__(host, tmp, REPO)
        self.coordinators, self.s3_port = coordinators, s3_port
        self.proc: subprocess.Popen[Any] | None = None

    @property
    def data(self) -> Path:
        return self.tmp / "coord"

    def start(self) -> None:
        extra = ["--coordinators", str(self.coordinators)] if self.coordinators > 1 else []
        self.proc = self.host.popen(
            sys.executable, "-u", "-m", "cloudless", "up", "--advertise", self.host.addr, "--no-agent",
            "--data-dir", str(self.data), "--config", str(self.config), "--s3-port", str(self.s3_port), *extra,
            stdout=self.log.open("w"), stderr=subprocess.STDOUT, env=env(self.tmp, PYTHONPATH=str(REPO)), cwd=REPO)
        proc = self.proc
        deadline = time.monotonic() + 120
        while "Press Ctrl-C to stop." not in self.log.read_text() and proc.poll() is None:
            assert time.monotonic() < deadline, f"cloudless up did not come up in 120 s\n{tail(self.log)}"
            time.sleep(0.5)
        assert proc.poll() is None, tail(self.log, 6000)

    @property
    def ca(self) -> Path:
        return self.data / "coordinator" / "pki" / "ca.pem"

    def admin_token(self) -> str:
        return (self.data / "credentials" / "admin-token").read_text().strip()

    def storage_config(self) -> dict[str, Any]:
        """The admin S3 credentials `cloudless up` wrote next to the CLI config (S-cli's storage.json)."""
        path = self.config.parent / "storage.json"
        assert path.exists(), f"cloudless up wrote no {path} (admin S3 key)\n{tail(self.log)}"
        doc: dict[str, Any] = json.loads(path.read_text())
        return doc

    def coordinator_pids(self) -> dict[str, int]:
        """coordinator id -> pid of the `cloudless coordinator` processes `cloudless up` started."""
        out: dict[str, int] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            words = [a.decode(errors="replace") for a in argv]
            if "coordinator" in words and "--id" in words and str(self.data) in " ".join(words):
                out[words[words.index("--id") + 1]] = int(entry)
        return out

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


@dataclass
class World:
    lab: Lab
    coord: StorageCoordinator
    client_host: Host
    agents: dict[str, StorageAgent]
    tmp: Path
    net: InHost
    numbers: dict[str, str] = field(default_factory=dict)

    # ---- S3 --------------------------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"https://{self.coord.addr}:{self.coord.s3_port}"

    def s3(self, endpoint: str | None = None, *, secret: str | None = None, **config: Any) -> Any:
        """A boto3 S3 client with its default configuration (checksums on) plus `config`, path-style, trusting the
        cluster CA, signed with the admin key. Use it only from `self.net` threads."""
        import boto3
        from botocore.config import Config

        creds = self.coord.storage_config()
        settings: dict[str, Any] = {"s3": {"addressing_style": "path"}, "connect_timeout": 10, "read_timeout": 60,
                                    "retries": {"max_attempts": 1, "mode": "standard"}, **config}
        cfg = Config(**settings)
        return boto3.client("s3", endpoint_url=endpoint or self.endpoint, region_name=creds.get("region", "us-east-1"),
                            aws_access_key_id=creds["accessKeyId"],
                            aws_secret_access_key=secret or creds["secretAccessKey"], verify=str(self.coord.ca),
                            config=cfg)

    # ---- the coordinator's view ------------------------------------------------------------------------------

    def rest(self, path: str, *, port: int = API_PORT, timeout: float = 10) -> Any:
        """GET an admin REST path from the client machine; None when the coordinator does not answer."""
        context = ssl.create_default_context(cafile=str(self.coord.ca))
        req = urllib.request.Request(f"https://{self.coord.addr}:{port}{path}",
                                     headers={"Authorization": f"Bearer {self.coord.admin_token()}"})

        def get() -> Any:
            with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
                return json.loads(resp.read())

        try:
            return self.net.call(get, timeout=timeout + 5)
        except (OSError, ValueError, urllib.error.URLError):
            return None

    def post(self, path: str, body: Any, *, port: int = API_PORT) -> tuple[int, Any]:
        """POST JSON to an admin REST path from the client machine: (status, decoded answer)."""
        context = ssl.create_default_context(cafile=str(self.coord.ca))
        req = urllib.request.Request(f"https://{self.coord.addr}:{port}{path}", data=json.dumps(body).encode(),
                                     method="POST", headers={"Authorization": f"Bearer {self.coord.admin_token()}",
                                                             "Content-Type": "application/json"})

        def send() -> tuple[int, Any]:
            try:
                with urllib.request.urlopen(req, timeout=30, context=context) as resp:
                    return resp.status, json.loads(resp.read() or b"null")
            except urllib.error.HTTPError as exc:
                return exc.code, (exc.read() or b"").decode(errors="replace")

        return self.net.call(send, timeout=60)

    def any_rest(self, path: str) -> Any:
        """GET from the first coordinator that answers (API_PORT + i: replicated ones listen on consecutive ports)."""
        for i in range(self.coord.coordinators):
            got = self.rest(path, port=API_PORT + i, timeout=5)
            if got is not None:
                return got
        return None

    def status(self) -> dict[str, Any]:
        """GET /v1/storage/status ({} when no coordinator answers)."""
        got = self.any_rest("/v1/storage/status")
        return got if isinstance(got, dict) else {}

    def online(self) -> set[str]:
        got = self.any_rest("/v1/nodes")
        return {n["id"] for n in (got or {}).get("items", []) if n.get("online")}

    # ---- ground truth on the devices' disks ------------------------------------------------------------------

    def copies(self, *, live_only: bool = True) -> dict[str, set[str]]:
        """chunk id -> the devices that hold it on disk (running agents only, unless live_only=False)."""
        where: dict[str, set[str]] = {}
        for node, agent in self.agents.items():
            if live_only and not agent.running():
                continue
            for cid in agent.held():
                where.setdefault(cid, set()).add(node)
        return where

    # ---- diagnostics -----------------------------------------------------------------------------------------

    def logs(self) -> str:
        parts = [tail(self.coord.log, 4000, "cloudless up"), f"--- storage status: {json.dumps(self.status())[:3000]}"]
        parts += [a.tail(25) for a in self.agents.values()]
        return "\n".join(parts)

    def until(self, pred: Callable[[], Any], timeout: float, what: str) -> tuple[Any, float]:
        """Poll `pred` every half second until truthy; (its value, seconds it took). Fails with the logs."""
        start = time.monotonic()
        last: Any = None
        while time.monotonic() - start < timeout:
            try:
                last = pred()
            except (AssertionError, OSError, ValueError, KeyError) as exc:
                last = exc
            else:
                if last:
                    return last, time.monotonic() - start
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})\n{self.logs()}")

    def note(self, name: str, value: str) -> None:
        """A measured number: printed at once (pytest -s) and kept for the end of the module."""
        self.numbers[name] = value
        print(f"[storage lab] {name}: {value}", flush=True)


@contextlib.contextmanager
def world(tmp: Path, *, storage_nodes: int, coordinators: int = 1, quota: str = "2GiB") -> Iterator[World]:
    """Build the lab world: the coordinator machine, `storage_nodes` storage agents in zones z0/z1, a client
    machine; wait until every agent is online. Everything is torn down on exit."""
    require_root("the storage lab creates network namespaces")
    if coordinators > 1:
        require_binary("etcd")
    try:
        import boto3  # noqa: F401
    except ImportError:
        unavailable("boto3 is not installed: pip install 'cloudless[dev]'")
    with Lab() as lab:
        lan = lab.network("lan")
        coord = StorageCoordinator(lab.host("coord", lan), tmp, coordinators=coordinators)
        agents = {f"s{i}": StorageAgent(lab.host(f"s{i}", lan), f"s{i}", quota=quota, zone=f"z{i % 2}")
                  for i in range(1, storage_nodes + 1)}
        client = lab.host("client", lan)
        net = InHost(client, workers=16)
        w = World(lab, coord, client, agents, tmp, net)
        try:
            started = time.monotonic()
            coord.start()
            token = coord.json("token", "create", "--max-uses", str(len(agents)))["token"]
            # one at a time: concurrent enrolments on one token race on its use count, and under etcd the loser
            # was answered 503 (the agent then exits); see /tmp/s8/needs-S-lab.md, finding 2
            for a in agents.values():
                a.start(token)
                node = a.node_id
                w.until(lambda: node in w.online(), 120, f"{node} enrolled and online")  # noqa: B023 - used at once
            w.until(lambda: _storage_ready(w.status(), set(agents)), 120,
                    "every storage node counted by the gateway with its quota")
            w.note("world up", f"{time.monotonic() - started:.1f} s ({storage_nodes} storage nodes, "
                               f"{coordinators} coordinator(s))")
            yield w
        finally:
            net.close()
            for a in agents.values():
                a.close()
            coord.stop()


def _storage_ready(status: Mapping[str, Any], nodes: set[str]) -> bool:
    per_node = pick(status, "nodes", default={}) or {}
    if isinstance(per_node, list):
        per_node = {pick(n, "id", "node", "node_id", "nodeId"): n for n in per_node}
    return all(n in per_node and pick(per_node[n], "online", default=False)
               and (pick(per_node[n], "quota", "quota_bytes", "quotaBytes", default=0) or 0) > 0 for n in nodes)


def node_rows(status: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The status document's per-node rows, keyed by node id (a mapping or a list of rows)."""
    per_node = pick(status, "nodes", default={}) or {}
    if isinstance(per_node, list):
        return {str(pick(n, "id", "node", "node_id", "nodeId")): n for n in per_node}
    return dict(per_node)

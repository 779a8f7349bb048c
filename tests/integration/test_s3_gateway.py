"""The S3 endpoint of a running cluster, end to end (issue 20): `cloudless up --s3-port` (embedded broker, relay,
coordinator with the gateway, no local agent) and two real agents enrolled with `--storage-quota`. boto3 with its
default configuration (aws-chunked uploads with CRC trailers over HTTPS, the cluster CA trusted) creates a bucket,
puts and gets objects; their chunks land on the two agents (R = 2: one copy on each), which the storage status and
the agents' chunk directories both show. The admin key is the one `up` bootstrapped into storage.json.

Then S3 for workloads on the same cluster: `cloudless storage keys create --secret prod/s3` stores a key in a cluster
secret, and a process workload on an agent takes it with `env[].valueFrom.secretKeyRef` and runs boto3 with its
defaults: it reaches the gateway through its agent's local endpoint (`s3.cloudless`, a loopback listener spliced over
the overlay to the gateway's member), PUTs and GETs, and a wrong or unknown key is refused."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cluster_env import until
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
QUOTA = 64 * 1024 * 1024


class Cluster:
    def __init__(self, workdir: Path) -> None:
        self.workdir, self.data, self.config = workdir, workdir / "data", workdir / "cli.json"
        self.mqtt, self.api, self.relay, self.s3 = free_port(), free_port(), free_port(), free_port()
        self.procs: list[tuple[str, subprocess.Popen[str]]] = []
        self.logs: dict[str, Path] = {}

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[str]:
        log = self.workdir / f"{name}.log"
        self.logs[name] = log
        proc = subprocess.Popen([sys.executable, "-m", "cloudless", *argv], stdout=log.open("w"),
                                stderr=subprocess.STDOUT, text=True, env={**os.environ, "CLOUDLESS_LOG_LEVEL": "INFO"})
        self.procs.append((name, proc))
        return proc

    def tail(self, name: str = "up", n: int = 60) -> str:
        with contextlib.suppress(OSError):
            return "".join(self.logs[name].read_text().splitlines(keepends=True)[-n:])
        return ""

    def tails(self) -> str:
        return "\n".join(f"--- {name}\n{self.tail(name)}" for name in self.logs)

    def start(self, *, agent_storage: str | None = None) -> None:
        """`cloudless up` without its local agent, or (`agent_storage`) with it offering that much storage."""
        agent = ["--no-agent"] if agent_storage is None else ["--agent-storage", agent_storage, "--agent-runtime",
                                                               "process"]
        self._spawn("up", ["up", "--data-dir", str(self.data), "--mqtt-port", str(self.mqtt), "--api-port",
                           str(self.api), "--relay-port", str(self.relay), "--config", str(self.config),
                           "--s3-port", str(self.s3), *agent, "--local-only"])
        until(lambda: "Press Ctrl-C to stop." in self.tail(), 120, "cloudless up is ready", self.tails)

    @property
    def storage_json(self) -> dict[str, str]:
        return dict(json.loads((self.config.parent / "storage.json").read_text()))

    def api_call(self, method: str, path: str, body: object | None = None) -> Any:
        from cloudless.client import CoordinatorClient

        token = (self.data / "credentials" / "admin-token").read_text().strip()
        ca = self.data / "coordinator" / "pki" / "ca.pem"
        return CoordinatorClient(f"https://127.0.0.1:{self.api}", token, ca=str(ca)).request(method, path,
                                                                                           body=body).body

    def agent(self, node: str, zone: str) -> Path:
        token = self.api_call("POST", "/v1/tokens", {"ttlSeconds": 600, "maxUses": 1})["token"]
        data = self.workdir / node
        data.mkdir()
        (data / "token").write_text(token)
        self._spawn(node, ["agent", "--data-dir", str(data), "--node-id", node, "--runtime", "process",
                           "--broker", f"mqtts://127.0.0.1:{self.mqtt}", "--token-file", str(data / "token"),
                           "--zone", zone, "--storage-quota", str(QUOTA), "--overlay-port", str(free_port()),
                           "--metrics-listen", "off"])
        return data

    def stop(self) -> None:
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for _name, proc in reversed(self.procs):
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    c = Cluster(Path(tempfile.mkdtemp(prefix="cl-s3-")))
    try:
        yield c
    finally:
        c.stop()


def _chunk_files(data: Path) -> set[str]:
    """The chunk ids an agent holds on disk (its chunk store names files by id)."""
    return {p.name for p in (data / "chunks").rglob("*") if p.is_file() and len(p.name) == 64}


def test_boto3_stores_objects_as_chunks_on_the_agents(cluster: Cluster) -> None:
    import boto3

    cluster.start()
    assert f"S3:          https://127.0.0.1:{cluster.s3}" in cluster.tail()
    creds = cluster.storage_json
    assert oct((cluster.config.parent / "storage.json").stat().st_mode & 0o777) == "0o600"
    dirs = {"sa": cluster.agent("sa", "za"), "sb": cluster.agent("sb", "zb")}
    status = until(lambda: (s := cluster.api_call("GET", "/v1/storage/status")) and sum(
        1 for n in s["nodes"] if n["quotaBytes"] == QUOTA and n["online"]) == 2 and s, 120,
        "both agents offer storage", cluster.tails)
    assert {n["node"] for n in status["nodes"]} == {"sa", "sb"}

    s3 = boto3.client("s3", endpoint_url=creds["endpoint"], aws_access_key_id=creds["accessKeyId"],
                      aws_secret_access_key=creds["secretAccessKey"], region_name=creds["region"],
                      verify=creds["ca"])
    s3.create_bucket(Bucket="photos")
    bodies = {"small.txt": b"hello, devices\n", "big.bin": os.urandom(3 * 1024 * 1024 + 123)}

    def put_all() -> bool:  # the first puts may wait for the gateway's overlay paths to the agents
        try:
            for key, body in bodies.items():
                s3.put_object(Bucket="photos", Key=key, Body=body)
        except s3.exceptions.ClientError as exc:
            if exc.response["ResponseMetadata"]["HTTPStatusCode"] < 500:
                raise
            return False
        return True

    until(put_all, 120, "PUTs accepted (storage nodes reachable over the overlay)", cluster.tails)
    for key, body in bodies.items():
        got = s3.get_object(Bucket="photos", Key=key)["Body"].read()
        assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
    listed = s3.list_objects_v2(Bucket="photos")
    assert sorted(o["Key"] for o in listed["Contents"]) == sorted(bodies)

    # R = 2 over two nodes: every chunk on both agents' disks
    from dataplane.objects.chunking import CHUNK_SIZE, chunk_id

    big = bodies["big.bin"]
    wanted = {chunk_id(big[i:i + CHUNK_SIZE]) for i in range(0, len(big), CHUNK_SIZE)} | {
        chunk_id(bodies["small.txt"])}
    until(lambda: all(wanted <= _chunk_files(d) for d in dirs.values()), 60, "every chunk on both agents",
          cluster.tails)
    # and the agents report it: used bytes and chunk counts reach the gateway's status
    until(lambda: all(n["usedBytes"] >= len(big) and n["chunks"] >= len(wanted)
                      for n in cluster.api_call("GET", "/v1/storage/status")["nodes"]), 120,
          "the agents' reports of what they store", cluster.tails)
    # the coordinator's /metrics carries the gateway's: latency per S3 operation, per-node capacity
    import ssl
    import urllib.request

    ctx = ssl.create_default_context(cafile=creds["ca"])
    with urllib.request.urlopen(f"https://127.0.0.1:{cluster.api}/metrics", context=ctx, timeout=30) as resp:
        metrics = resp.read().decode()
    assert 'cloudless_s3_request_duration_seconds_count{operation="PutObject"}' in metrics
    quota = [line.rsplit(" ", 1)[1] for line in metrics.splitlines()
             if line.startswith('cloudless_storage_quota_bytes{node="sa",zone="za"}')]
    assert [float(q) for q in quota] == [float(QUOTA)]
    s3.delete_object(Bucket="photos", Key="small.txt")
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket="photos", Key="small.txt")
    _workload_reaches_s3(cluster, s3)


WORKLOAD = """
import json, os, sys, time
import boto3
from botocore.exceptions import ClientError, EndpointConnectionError

out = {"endpoint": os.environ.get("AWS_ENDPOINT_URL_S3"), "secret_endpoint": os.environ.get("AWS_ENDPOINT_URL")}
s3 = boto3.client("s3")  # every setting from the environment: the secret's keys and region, the agent's endpoint
deadline = time.monotonic() + 120
while True:  # the first connection may wait for the overlay path from this node to the gateway
    try:
        s3.put_object(Bucket="photos", Key="from-workload.txt", Body=b"hello from a workload")
        break
    except (ClientError, EndpointConnectionError) as exc:
        if time.monotonic() > deadline:
            raise
        print("put failed, retrying:", exc, flush=True)
        time.sleep(1)
out["get"] = s3.get_object(Bucket="photos", Key="from-workload.txt")["Body"].read().decode()
for case, key_id, secret in (("wrong", os.environ["AWS_ACCESS_KEY_ID"], "x" * 40),
                             ("absent", "CLKNOSUCHKEY000000000", "x" * 40)):
    try:
        boto3.client("s3", aws_access_key_id=key_id, aws_secret_access_key=secret).list_objects_v2(Bucket="photos")
        out[case] = "accepted"
    except ClientError as exc:
        out[case] = exc.response["Error"]["Code"]
try:
    s3.create_bucket(Bucket="not-granted")
    out["grant"] = "accepted"
except ClientError as exc:
    out["grant"] = exc.response["Error"]["Code"]
s3.put_object(Bucket="photos", Key="workload-result.json", Body=json.dumps(out).encode())
print("done", out, flush=True)
time.sleep(3600)
"""


NOBODY = 65534


def _workload_python() -> tuple[str, dict[str, str]]:
    """An interpreter with boto3 that uid NOBODY may run (the workload runs as that user: the secure default policy
    drops every capability, which a root process cannot keep): this one, else the system's with our site-packages."""
    import boto3

    site = str(Path(boto3.__file__).resolve().parents[1])
    for python, env in ((sys.executable, {}), ("/usr/bin/python3", {"PYTHONPATH": site})):
        probe = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "env", *(
            f"{k}={v}" for k, v in env.items()), python, "-c", "import boto3"], check=False, capture_output=True,
            cwd="/", timeout=60)
        if probe.returncode == 0:
            return python, env
    pytest.fail(f"no python with boto3 that uid {NOBODY} can run (tried {sys.executable}, /usr/bin/python3 with "
                f"PYTHONPATH={site})")


def _workload_reaches_s3(cluster: Cluster, admin: Any) -> None:
    cli = subprocess.run([sys.executable, "-m", "cloudless", "storage", "keys", "create", "job", "--bucket",
                          "photos:rw", "--secret", "prod/s3", "--config", str(cluster.config)],
                         check=False, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "CLOUDLESS_LOG_LEVEL": "INFO"})
    assert cli.returncode == 0, cli.stderr
    assert "stored in secret prod/s3" in cli.stdout
    python, python_env = _workload_python()
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in python_env.items()]
    env += [{"name": k, "valueFrom": {"secretKeyRef": {"name": "s3", "key": k}}}
            for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION")]
    doc = {"apiVersion": "cloudless/v1", "kind": "Workload", "metadata": {"name": "uploader", "namespace": "prod"},
           "spec": {"runtime": "process", "command": [python, "-c", WORKLOAD], "replicas": 1, "env": env,
                    "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}},
                    "securityContext": {"runAsNonRoot": True, "runAsUser": NOBODY, "allowPrivilegeEscalation": False,
                                        "capabilities": {"drop": ["ALL"]}}}}
    cluster.api_call("PUT", "/v1/workloads/prod/uploader", doc)

    def result() -> dict[str, Any] | None:
        try:
            return dict(json.loads(admin.get_object(Bucket="photos", Key="workload-result.json")["Body"].read()))
        except admin.exceptions.NoSuchKey:
            return None

    out = until(result, 180, "the workload's result object", cluster.tails)
    assert out["secret_endpoint"] == "http://s3.cloudless"  # the secret's in-cluster endpoint
    assert str(out["endpoint"]).startswith("http://127.0.0.1:")  # the agent's loopback listener for processes
    assert out["get"] == "hello from a workload"
    assert admin.get_object(Bucket="photos", Key="from-workload.txt")["Body"].read() == b"hello from a workload"
    assert out["wrong"] == "SignatureDoesNotMatch" and out["absent"] == "InvalidAccessKeyId"
    assert out["grant"] == "AccessDenied"  # the key's grants hold on this path too
    service = cluster.api_call("GET", "/v1/services/cloudless/s3")
    assert service["ready"] == 1 and service["endpoints"][0]["node"].startswith("s3@"), service

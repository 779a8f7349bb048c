"""Attacks on a secure-by-default cluster (`cloudless up`: mutual TLS broker, HTTPS API, token enrolment):
every token abuse is refused with a clear reason, an enrolled node cannot read or write another node's topics
or pose as a coordinator, a revoked node is cut off at once, and renewal happens before expiry."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker import wire
from broker.client import ClientTls, Message, MqttClient, MqttSettings
from broker.errors import MqttError, NotConnected
from broker.wire import topics
from coordinator.enroll import TokenRecord, mint
from edge_agent import identity as ident
from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from edge_agent.gating import Gate
from edge_agent.runtime.fake import FakeRuntime
from firmware_profiles import load_profile
from tests.integration.cluster_env import until
from tests.integration.test_up import Up
from tests.pair.fakebus import FakeBroker

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    u = Up(tmp_path_factory.mktemp("secure"))
    u.extra = ["--no-agent"]
    u.start()
    try:
        yield u
    finally:
        u.stop()


def token(up: Up, **body: object) -> str:
    flags = [item for k, v in body.items() for item in ("--" + k.replace("_", "-"), str(v))]
    out = up.cli("token", "create", "-o", "json", *flags)
    return str(json.loads(out.stdout)["token"])


def enrol(up: Up, tmp: Path, node: str, tok: str) -> ident.NodeIdentity:
    return ident.enrol(tmp / node, node, tok)


def refused(up: Up, tmp: Path, node: str, tok: str) -> str:
    with pytest.raises(ident.EnrolmentError) as info:
        enrol(up, tmp, node, tok)
    return str(info.value)


def _tamper(tok: str, **claims: object) -> str:
    head, payload, sig = tok.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(claims)
    new = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    return f"{head}.{new}.{sig}"


def test_token_abuse_is_refused_with_a_reason(cluster: Up, tmp_path: Path) -> None:
    secret = (cluster.data / "coordinator" / "pki" / "enroll.secret").read_bytes().strip()
    good = token(cluster, max_uses=1)
    claims = ident.token_claims(good)
    # expired (minted with the cluster's own secret, an hour in the past)
    old = TokenRecord("expired0000000", max_uses=5, expires_at=time.time() - 3600)
    expired = mint(secret, old, url=claims["url"], ca_fingerprint=claims["ca"], now=time.time() - 7200)
    assert "expired" in refused(cluster, tmp_path, "n-expired", expired)
    # forged: the right shape and claims, signed with another secret
    forged = mint(b"x" * 64, TokenRecord("forged00000000", max_uses=5, expires_at=time.time() + 3600),
                  url=claims["url"], ca_fingerprint=claims["ca"], now=time.time())
    assert "signature" in refused(cluster, tmp_path, "n-forged", forged)
    # wrong signature: a genuine token whose claims were edited (more uses)
    assert "signature" in refused(cluster, tmp_path, "n-tampered", _tamper(good, max=100))
    # one use only: the second device is refused
    enrol(cluster, tmp_path, "n-first", good)
    assert "already used" in refused(cluster, tmp_path, "n-second", good)
    # revoked before use
    t2 = token(cluster, max_uses=3)
    tid = json.loads(base64.urlsafe_b64decode(t2.split(".")[1] + "==="))["jti"]
    cluster.cli("token", "revoke", tid)
    assert "revoked" in refused(cluster, tmp_path, "n-revoked", t2)
    # a token pinned to another CA: the device refuses before sending anything
    assert "pinned" in refused(cluster, tmp_path, "n-pin", _tamper(token(cluster), ca="0" * 64))
    # refusals are events, damped per address (anyone who can reach the API could otherwise fill the event
    # store): the first from this address is one; every refusal is counted in the API's request metrics
    events = json.loads(cluster.cli("get", "events", "-o", "json").stdout)["items"]
    denied = [e for e in events if e["reason"] == "EnrolmentDenied"]
    # the agent reached the API at an address `up` advertises (loopback, or this host's LAN address by default)
    assert len(denied) == 1 and re.search(r"from \d+\.\d+\.\d+\.\d+: ", denied[0]["message"]), denied
    context = ssl.create_default_context(cafile=str(cluster.data / "coordinator" / "pki" / "ca.pem"))
    with urllib.request.urlopen(f"https://127.0.0.1:{cluster.api}/metrics", timeout=10, context=context) as resp:
        text = resp.read().decode()
    refusals = sum(float(m.group(1)) for m in re.finditer(
        r'^cloudless_api_requests_total\{[^}]*route="enroll"[^}]*status="4\d\d"[^}]*\} ([0-9.e+]+)$', text, re.M))
    assert refusals >= 4, text[:3000]


def _client(up: Up, identity: ident.NodeIdentity) -> MqttClient:
    url = identity.broker_url.removeprefix("mqtts://")
    host, port = url.rsplit(":", 1)
    return MqttClient(MqttSettings(host, int(port), client_id=identity.node_id, connect_timeout_s=3, tls=ClientTls(
        ca_file=identity.ca, cert_file=identity.cert, key_file=identity.key)))


async def test_an_enrolled_node_is_confined_to_its_own_topics(cluster: Up, tmp_path: Path) -> None:
    a = await asyncio.to_thread(enrol, cluster, tmp_path, "node-a", token(cluster))
    await asyncio.to_thread(enrol, cluster, tmp_path, "node-b", token(cluster))
    client = _client(cluster, a)
    await client.start()
    try:
        await client.wait_connected(10)
        leaked: list[Message] = []
        for forbidden in (topics.node_desired("node-b"), topics.node_cmd("node-b"), "#"):
            with pytest.raises(MqttError):
                await client.subscribe(forbidden, leaked.append)
        await client.subscribe(topics.node_desired("node-a"), leaked.append)  # its own: allowed
        # posing as node-b or as a coordinator: the broker drops it (no error to the client, nothing stored)
        status = wire.NodeStatus(node_id="node-b", presence=wire.Presence.ONLINE, ts=time.time())
        await client.publish(topics.node_status("node-b"), wire.encode(status), qos=1, retain=True)
        await client.publish(topics.leader(), b"x", qos=1, retain=True)
        await asyncio.sleep(1.0)
        nodes = json.loads(cluster.cli("get", "nodes", "-o", "json").stdout)["items"]
        assert "node-b" not in {n["id"] for n in nodes}, "node-a managed to speak for node-b"
        assert leaked == []
    finally:
        await client.stop()


async def test_a_revoked_node_is_cut_off_at_once(cluster: Up, tmp_path: Path) -> None:
    fleet = token(cluster, max_uses=3)  # a multi-use token, as for onboarding several devices
    r = await asyncio.to_thread(enrol, cluster, tmp_path, "node-r", fleet)
    client = _client(cluster, r)
    await client.start()
    await client.wait_connected(10)
    status = wire.NodeStatus(node_id="node-r", presence=wire.Presence.ONLINE, ts=time.time())
    await client.publish(topics.node_status("node-r"), wire.encode(status), qos=1, retain=True)
    await asyncio.to_thread(until, lambda: any(n["id"] == "node-r" and n["online"] for n in json.loads(
        cluster.cli("get", "nodes", "-o", "json").stdout)["items"]), 15, "node-r online")
    cluster.cli("node", "revoke", "node-r")
    deadline = time.monotonic() + 10
    while client.connected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert not client.connected, "the embedded broker kept a revoked node's connection"
    with pytest.raises(NotConnected):
        await client.wait_connected(4)  # and refuses it on every reconnect
    await client.abort()
    node = json.loads(cluster.cli("get", "nodes", "-o", "json").stdout)["items"]
    assert next(n for n in node if n["id"] == "node-r")["state"] == "lost"
    # whoever kept a copy of the fleet token cannot bring the revoked node back; a token made since can
    why = await asyncio.to_thread(refused, cluster, tmp_path / "thief", "node-r", fleet)
    assert "revoked after this token was created" in why
    again = await asyncio.to_thread(enrol, cluster, tmp_path / "owner", "node-r", token(cluster))
    assert again.node_id == "node-r" and again.not_after > time.time()


ISOLATED = """
import sys
from pathlib import Path
from edge_agent import identity
data = Path(sys.argv[1])
first = identity.enrol_isolated(data, "node-i", sys.stdin.read())
again = identity.renew_isolated(first)
print(first.node_id, again.not_after >= first.not_after, again.cert.read_bytes() != b"",
      "cryptography" in sys.modules)
"""


def test_the_agent_enrols_and_renews_without_loading_cryptography(cluster: Up, tmp_path: Path) -> None:
    """The exchange runs in a child process: the agent's own memory never holds cryptography for it."""
    out = subprocess.run([sys.executable, "-c", ISOLATED, str(tmp_path / "node-i")], input=token(cluster),
                         capture_output=True, text=True, timeout=120, check=True, cwd=REPO)
    assert out.stdout.split() == ["node-i", "True", "True", "False"], out.stderr
    assert ident.load(tmp_path / "node-i") is not None
    with pytest.raises(ident.EnrolmentError, match="already used"):  # the child's refusal reaches the caller
        ident.enrol_isolated(tmp_path / "node-j", "node-j", _used_token(cluster, tmp_path))


def _used_token(up: Up, tmp: Path) -> str:
    tok = token(up, max_uses=1)
    enrol(up, tmp, "node-k", tok)
    return tok


async def test_renewal_happens_before_expiry_with_time_injected(cluster: Up, tmp_path: Path) -> None:
    first = await asyncio.to_thread(enrol, cluster, tmp_path, "node-n", token(cluster))
    life = first.not_after - first.not_before
    clock = [first.not_before + 0.5 * life]
    cfg = AgentConfig(broker=None, data_dir=tmp_path / "node-n", node_id="node-n", username="node-n")
    bus = FakeBroker()
    agent = Agent(cfg, runtime=FakeRuntime(node_id="node-n", clock=time.time), mqtt=bus.client("node-n"),  # type: ignore[arg-type]
                  gate=Gate(load_profile("vps")), profile_name="vps", heartbeat_interval_s=10,
                  clock=lambda: clock[0], identity=first)
    agent.mqtt.reload_certificate = lambda: None  # type: ignore[attr-defined,method-assign]  # the fake bus has no TLS
    wait = await agent.renew_once()
    assert agent.identity is first and wait > 0  # half-way: not yet
    old_cert, old_key = first.cert.read_bytes(), first.key.read_bytes()
    clock[0] = first.not_before + 0.7 * life  # past 2/3 of the lifetime
    await agent.renew_once()
    renewed = agent.identity
    assert renewed is not None and renewed is not first
    assert renewed.cert.read_bytes() != old_cert and renewed.key.read_bytes() != old_key  # new cert, new key
    assert renewed.not_after >= first.not_after
    assert ident.load(tmp_path / "node-n") == renewed  # persisted
    # revoking the node revokes the renewed-away certificate too (it is still valid by date)
    from cryptography import x509

    pems = (old_cert, renewed.cert.read_bytes())
    serials = {f"{x509.load_pem_x509_certificate(pem).serial_number:x}" for pem in pems}
    cluster.cli("node", "revoke", "node-n")
    assert serials <= set((cluster.data / "coordinator" / "pki" / "revoked").read_text().split())


async def test_the_dashboard_identity_reads_the_mirror_and_nothing_else(cluster: Up, tmp_path: Path) -> None:
    creds = cluster.data / "credentials"
    # the summary's `broker:` line (how this machine dials it), not the broker's own "listening on 0.0.0.0" line
    broker_url = next(line for line in cluster.out if line.strip().startswith("broker:")).split()[-1]
    broker_url = broker_url.removeprefix("mqtts://")
    host, port = broker_url.rsplit(":", 1)
    dash = MqttClient(MqttSettings(host, int(port), client_id="dashboard@local", tls=ClientTls(
        ca_file=cluster.data / "coordinator" / "pki" / "ca.pem", cert_file=creds / "dashboard.pem",
        key_file=creds / "dashboard.key")))
    got: list[Message] = []
    await dash.start()
    try:
        await dash.wait_connected(10)
        await dash.subscribe(topics.dash_filter(), got.append)
        await dash.subscribe("homeassistant/#", got.append)
        for forbidden in (topics.node_channel_filter(topics.Channel.DESIRED), topics.all_filter()):
            with pytest.raises(MqttError):
                await dash.subscribe(forbidden, got.append)
        deadline = time.monotonic() + 10
        while not any(m.topic == topics.dash("cluster") for m in got) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert got, "no mirror published"
        for m in got:
            assert m.topic.startswith(("cloudless/v1/dash/", "homeassistant/")), m.topic
            if m.payload:
                json.loads(m.payload)  # human-readable JSON, every one of them
        summary = json.loads(next(m.payload for m in got if m.topic == topics.dash("cluster")))
        assert {"nodes_online", "nodes_total", "workloads", "replicas_ready"} <= set(summary)
    finally:
        await dash.stop()


def test_token_labels_and_zone_reach_the_enrolled_node(cluster: Up, tmp_path: Path) -> None:
    tok = token(cluster, labels="room=attic,disk=ssd", zone="home")
    enrolled = enrol(cluster, tmp_path, "node-l", tok)
    assert dict(enrolled.labels) == {"room": "attic", "disk": "ssd"} and enrolled.zone == "home"
    assert ident.load(tmp_path / "node-l") == enrolled  # kept for the agent's later starts

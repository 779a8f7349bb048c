"""Mutual TLS on both brokers: identities come from client certificates issued by the cluster CA; the ACL is
the same as with passwords; no certificate, a foreign CA, a role mismatch or a revoked certificate is refused."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from broker import mosquitto, wire
from broker.acl import Acl, Role
from broker.auth import AuthFiles
from broker.client import ClientTls, Message, MqttClient, MqttSettings
from broker.embedded import TlsSettings
from broker.errors import MqttError, NotConnected
from broker.wire import topics
from coordinator.pki import CertificateAuthority, CertRole, key_pem, make_csr, new_key
from tests.integration.conftest import free_port, require_binary, wait_port

pytestmark = pytest.mark.integration
NOW = time.time()
ROLES = {"coordinator@test": Role.COORDINATOR, "dashboard@test": Role.DASHBOARD}


@dataclass
class Pki:
    dir: Path
    ca: CertificateAuthority = field(init=False)

    def __post_init__(self) -> None:
        self.ca = CertificateAuthority.create("test", NOW)
        (self.dir / "ca.pem").write_bytes(self.ca.cert_pem)
        key = new_key()
        (self.dir / "server.key").write_bytes(key_pem(key))
        (self.dir / "server.pem").write_bytes(self.ca.issue_server(key, hosts=["localhost", "127.0.0.1"], now=NOW,
                                                                   lifetime_s=86400).cert_pem)

    def client(self, name: str, role: CertRole, *, ca: CertificateAuthority | None = None) -> tuple[ClientTls, int]:
        key = new_key()
        issued = (ca or self.ca).issue(make_csr(key, name), identity=name, role=role, now=NOW, lifetime_s=86400)
        cert, keyf = self.dir / f"{name}-{issued.serial:x}.pem", self.dir / f"{name}-{issued.serial:x}.key"
        cert.write_bytes(issued.cert_pem)
        keyf.write_bytes(key_pem(key))
        return ClientTls(ca_file=self.dir / "ca.pem", cert_file=cert, key_file=keyf), issued.serial


@dataclass
class MtlsBroker:
    kind: str
    workdir: Path
    pki: Pki
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def start(self, revoked: list[int] = ()) -> None:  # type: ignore[assignment]
        auth = self.workdir / "auth"
        AuthFiles(users={}, acl=Acl(user_roles=ROLES)).save(auth)
        tls = TlsSettings(self.pki.dir / "server.pem", self.pki.dir / "server.key", self.pki.dir / "ca.pem", True)
        if self.kind == "embedded":
            rev = self.workdir / "revoked"
            rev.write_text("".join(f"{s:x}\n" for s in revoked))
            argv = [sys.executable, "-m", "cloudless", "--log-level", "WARNING", "broker", "--host", "127.0.0.1",
                    "--port", str(self.port), "--auth-dir", str(auth), "--cert-auth", "--revoked", str(rev),
                    "--tls-cert", str(tls.certfile), "--tls-key", str(tls.keyfile), "--tls-ca", str(tls.cafile)]
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=open(self.workdir / "broker.log", "ab"))
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline().decode()
            assert "listening on mqtts://" in line, line
            self.port = int(line.rsplit(":", 1)[1])
        else:
            binary = require_binary("mosquitto")
            self.port = self.port or free_port()
            crl = self.workdir / "crl.pem"
            crl.write_bytes(self.pki.ca.crl([(s, NOW) for s in revoked], NOW))
            settings = mosquitto.MosquittoSettings(
                out_dir=self.workdir / "mosq", host="127.0.0.1", port=self.port, tls=tls, cert_auth=True,
                crl_file=crl, run_as_user="root" if os.geteuid() == 0 else None,
                persistence_dir=self.workdir / "mosq-data")
            mosquitto.write(settings, AuthFiles.load(auth, require_passwords=False))
            self.proc = subprocess.Popen([binary, "-c", str(settings.out_dir / mosquitto.CONF_FILE)],
                                         stdout=open(self.workdir / "broker.log", "ab"), stderr=subprocess.STDOUT)
            wait_port("127.0.0.1", self.port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def settings(self, name: str, tls: ClientTls) -> MqttSettings:
        return MqttSettings("127.0.0.1", self.port, client_id=name, tls=ClientTls(
            tls.ca_file, tls.cert_file, tls.key_file, server_hostname="localhost"), connect_timeout_s=3)


@pytest.fixture(params=["embedded", "mosquitto"])
def mtls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MtlsBroker]:
    (tmp_path / "pki").mkdir()
    b = MtlsBroker(request.param, tmp_path, Pki(tmp_path / "pki"))
    try:
        yield b
    finally:
        b.stop()


async def connect(b: MtlsBroker, name: str, tls: ClientTls) -> MqttClient:
    c = MqttClient(b.settings(name, tls))
    await c.start()
    await c.wait_connected(8)
    return c


async def refused(b: MtlsBroker, name: str, tls: ClientTls | None) -> bool:
    """Connect and expect no session (the TLS handshake or CONNACK refuses it)."""
    s = b.settings(name, tls) if tls else MqttSettings("127.0.0.1", b.port, client_id=name, tls=ClientTls(
        b.pki.dir / "ca.pem", server_hostname="localhost"), connect_timeout_s=3)
    c = MqttClient(s)
    await c.start()
    try:
        with pytest.raises(NotConnected):
            await c.wait_connected(3)
        return not c.connected
    finally:
        await c.abort()


async def test_certificate_identities_and_the_node_acl(mtls: MtlsBroker) -> None:
    mtls.start()
    coord_tls, _ = mtls.pki.client("coordinator@test", CertRole.COORDINATOR)
    a_tls, _ = mtls.pki.client("A", CertRole.NODE)
    coord = await connect(mtls, "coordinator@test", coord_tls)
    a = await connect(mtls, "A", a_tls)
    try:
        for node in ("A", "B"):
            desired = wire.DesiredState(node_id=node, generation=1, epoch=1, issued_at=NOW)
            await coord.publish(topics.node_desired(node), wire.encode(desired), qos=1, retain=True)
        got: list[Message] = []
        await a.subscribe(topics.node_desired("A"), got.append)
        leaked: list[Message] = []
        if mtls.kind == "embedded":
            with pytest.raises(MqttError):
                await a.subscribe(topics.node_desired("B"), leaked.append)
        else:
            try:
                await a.subscribe(topics.node_desired("B"), leaked.append)
            except MqttError:
                pass
        seen: list[Message] = []
        await coord.subscribe(topics.node_channel_filter(topics.Channel.STATUS), seen.append)
        status = wire.NodeStatus(node_id="B", presence=wire.Presence.OFFLINE, ts=NOW)
        await a.publish(topics.node_status("B"), wire.encode(status), qos=1, retain=True)  # posing as B
        await a.publish(topics.leader(), b"x", qos=1, retain=True)  # posing as a coordinator
        await asyncio.sleep(1.0)
        assert [m.topic for m in got] == [topics.node_desired("A")]
        assert leaked == [] and seen == []
    finally:
        await a.stop()
        await coord.stop()


async def test_no_certificate_is_refused(mtls: MtlsBroker) -> None:
    mtls.start()
    assert await refused(mtls, "A", None)


async def test_a_certificate_from_another_ca_is_refused(mtls: MtlsBroker) -> None:
    mtls.start()
    rogue = CertificateAuthority.create("rogue", NOW)
    tls, _ = mtls.pki.client("coordinator@test", CertRole.COORDINATOR, ca=rogue)
    assert await refused(mtls, "coordinator@test", tls)


async def test_a_node_certificate_cannot_claim_a_coordinator_name(tmp_path: Path) -> None:
    # The embedded broker checks the certificate's OU against the role the ACL gives its name. Mosquitto has no
    # such check (the name alone decides the role), so there the control is the CA's naming rule: enrolment
    # only issues certificates for node ids, which never contain '@' (coordinator/enroll.py).
    (tmp_path / "pki").mkdir()
    b = MtlsBroker("embedded", tmp_path, Pki(tmp_path / "pki"))
    try:
        b.start()
        tls, _ = b.pki.client("coordinator@test", CertRole.NODE)
        assert await refused(b, "coordinator@test", tls)
        assert "is for role 'node'" in (tmp_path / "broker.log").read_text()
    finally:
        b.stop()


async def test_a_revoked_certificate_is_refused(mtls: MtlsBroker) -> None:
    tls, serial = mtls.pki.client("A", CertRole.NODE)
    mtls.start(revoked=[serial])
    assert await refused(mtls, "A", tls)
    fresh, _ = mtls.pki.client("A", CertRole.NODE)  # a new certificate for the same node is accepted
    client = await connect(mtls, "A", fresh)
    await client.stop()


async def test_mosquitto_refuses_a_certificate_revoked_after_start_once_reloaded(tmp_path: Path) -> None:
    """The production path: `cloudless node revoke` rewrites the CRL; Mosquitto picks it up on SIGHUP."""
    import signal

    (tmp_path / "pki").mkdir()
    b = MtlsBroker("mosquitto", tmp_path, Pki(tmp_path / "pki"))
    try:
        tls, serial = b.pki.client("A", CertRole.NODE)
        b.start()
        client = await connect(b, "A", tls)
        await client.stop()
        (tmp_path / "crl.pem").write_bytes(b.pki.ca.crl([(serial, NOW)], NOW))
        assert b.proc is not None
        b.proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(1.0)
        assert await refused(b, "A", tls)
    finally:
        b.stop()

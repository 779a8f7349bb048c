"""Secret delivery, coordinator side (coordinator/delivery.py), with the real secrets service, a real CA and real
node keys: a box opens only with its node's key, unchanged inputs give byte-identical boxes (no republish), a new
version or a renewed node key gives new ones, and what cannot be delivered is said, naming why."""

from __future__ import annotations

import dataclasses
import json

import msgpack
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from broker import sealed
from coordinator.delivery import SecretDelivery
from coordinator.enroll import NodeCertRecord
from coordinator.pki import CertificateAuthority, CertRole
from coordinator.secrets.audit import AuditAction, AuditQuery
from coordinator.store import SqliteStore, put
from tests.coordinator.secrets.builders import ADMIN, FakeClock, make_service, ok

T0 = 1_700_000_000.0


@pytest.fixture
def ca(tmp_path):  # type: ignore[no-untyped-def]
    authority, _ = CertificateAuthority.load_or_create(tmp_path / "pki", "cluster", T0)
    return authority


async def enrol(store: SqliteStore, ca: CertificateAuthority, node: str, *, revoked: bool = False
                ) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node)])).sign(key, hashes.SHA256())
    issued = ca.issue(csr.public_bytes(serialization.Encoding.PEM), identity=node, role=CertRole.NODE, now=T0,
                      lifetime_s=86400)
    record = NodeCertRecord(node, issued.serial, issued.not_after, revoked=revoked,
                            certificate=issued.cert_pem.decode())
    await store.txn([put(f"/certs/{node}", json.dumps(dataclasses.asdict(record)).encode())])
    return key


def opened(key: ec.EllipticCurvePrivateKey, node: str, box: object) -> dict[str, bytes]:
    b = box  # SealedSecret
    plain = sealed.open_sealed(key, b.box, sealed.delivery_aad(node, "default", b.secret, b.version))  # type: ignore[attr-defined]
    return msgpack.unpackb(plain, raw=False)  # type: ignore[no-any-return]


async def test_boxes_open_only_for_their_node_and_are_stable(ca: CertificateAuthority) -> None:
    store = SqliteStore(":memory:")
    clock = FakeClock(T0)
    svc = await make_service(store, clock=clock)
    ok(await svc.create("default", "db", {"password": b"hunter2"}, caller=ADMIN))
    k1, k2 = await enrol(store, ca, "pi-1"), await enrol(store, ca, "pi-2")
    d = SecretDelivery(svc, store, clock=clock)
    wants = {("pi-1", "default", "db"), ("pi-2", "default", "db")}
    assert await d.refresh(wants) == {}
    (b1,), (b2,) = d.sealed_for("pi-1", "default", ["db"]), d.sealed_for("pi-2", "default", ["db"])
    assert opened(k1, "pi-1", b1) == {"password": b"hunter2"} == opened(k2, "pi-2", b2)
    assert b"hunter2" not in b1.box
    with pytest.raises(sealed.SealedError):  # pi-2's key cannot open pi-1's box, nor pretend to be pi-1
        opened(k2, "pi-1", b1)
    clock.advance(10)
    await d.refresh(wants)
    assert d.sealed_for("pi-1", "default", ["db"]) == (b1,)  # unchanged: byte-identical, nothing to republish
    deliveries = await svc.audit_log(AuditQuery(action=AuditAction.DELIVER), caller=ADMIN)
    assert sorted(r.source for r in ok(deliveries)) == ["node:pi-1", "node:pi-2"]  # one seal per node


async def test_a_new_version_or_a_renewed_key_gives_new_boxes(ca: CertificateAuthority) -> None:
    store = SqliteStore(":memory:")
    clock = FakeClock(T0)
    svc = await make_service(store, clock=clock)
    ok(await svc.create("default", "db", {"password": b"one"}, caller=ADMIN))
    await enrol(store, ca, "pi-1")
    d = SecretDelivery(svc, store, clock=clock)
    want = {("pi-1", "default", "db")}
    await d.refresh(want)
    (first,) = d.sealed_for("pi-1", "default", ["db"])
    ok(await svc.update("default", "db", caller=ADMIN, data={"password": b"two"}))
    clock.advance(5)
    await d.refresh(want)
    (second,) = d.sealed_for("pi-1", "default", ["db"])
    assert (first.version, second.version) == (1, 2)
    renewed = await enrol(store, ca, "pi-1")  # agents make a new key at every renewal
    clock.advance(5)
    await d.refresh(want)
    (third,) = d.sealed_for("pi-1", "default", ["db"])
    assert third != second and opened(renewed, "pi-1", third) == {"password": b"two"}


async def test_what_cannot_be_delivered_is_said(ca: CertificateAuthority) -> None:
    store = SqliteStore(":memory:")
    clock = FakeClock(T0)
    svc = await make_service(store, clock=clock)
    ok(await svc.create("default", "db", {"password": b"x"}, caller=ADMIN))
    await enrol(store, ca, "gone", revoked=True)
    await enrol(store, ca, "pi-1")
    d = SecretDelivery(svc, store, clock=clock)
    problems = await d.refresh({("nokey", "default", "db"), ("gone", "default", "db"),
                                ("pi-1", "default", "missing")})
    assert "no enrolled key" in problems[("nokey", "default", "db")]
    assert "no enrolled key" in problems[("gone", "default", "db")]  # revoked: nothing is sealed to it
    assert "missing does not exist" in problems[("pi-1", "default", "missing")]
    assert d.sealed_for("nokey", "default", ["db"]) == ()
    clock.advance(5)
    assert await d.refresh({("nokey", "default", "db")}) == {}  # said once, not every round

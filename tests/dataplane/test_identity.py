"""Overlay identity: only a current certificate from this cluster's CA, for the expected node, not revoked."""

from __future__ import annotations

import pytest
from cryptography import x509

from coordinator.pki import CertRole
from dataplane.identity import PeerIdentity, Reason, Refused, Revocations, TrustAnchor, check_peer, load_chain
from tests.dataplane.pki_builders import DAY, NOW, broken_san, ca_pem, forged, issue, make_ca

CA = make_ca("home")
TRUST = TrustAnchor.from_pem(ca_pem(CA))
PI = issue(CA, "pi-kitchen")


def verdict(chain: list[x509.Certificate], **kw: object) -> PeerIdentity | Refused:
    return check_peer(chain, trust=TRUST, now=kw.pop("now", NOW), **kw)  # type: ignore[arg-type]


def test_a_node_certificate_from_the_cluster_ca_is_accepted() -> None:
    peer = verdict([PI.cert], expect="pi-kitchen")
    assert isinstance(peer, PeerIdentity)
    assert (peer.identity, peer.role, peer.serial) == ("pi-kitchen", "node", PI.cert.serial_number)
    assert len(peer.fingerprint) == 64


def refusal(chain: list[x509.Certificate], **kw: object) -> Reason:
    out = verdict(chain, **kw)
    assert isinstance(out, Refused), out
    assert out.detail
    return out.reason


CASES = [
    pytest.param(lambda: [], {}, Reason.NO_CERTIFICATE, id="no-certificate"),
    pytest.param(lambda: [issue(make_ca("stranger"), "pi-kitchen").cert], {}, Reason.UNTRUSTED, id="foreign-ca"),
    pytest.param(lambda: [PI.cert], {"now": NOW + 31 * DAY}, Reason.EXPIRED, id="expired"),
    pytest.param(lambda: [PI.cert], {"now": NOW - DAY}, Reason.NOT_YET_VALID, id="clock-behind"),
    pytest.param(lambda: [PI.cert], {"expect": "laptop"}, Reason.WRONG_NODE, id="claims-another-node"),
    pytest.param(lambda: [issue(CA, "coordinator@main", role=CertRole.COORDINATOR).cert], {}, Reason.WRONG_ROLE,
                 id="coordinator-cert"),
    pytest.param(lambda: [PI.cert], {"revoked": Revocations(identities=frozenset({"pi-kitchen"}))}, Reason.REVOKED,
                 id="revoked-node"),
    pytest.param(lambda: [PI.cert], {"revoked": Revocations(serials=frozenset({PI.cert.serial_number}))},
                 Reason.REVOKED, id="revoked-serial"),
    pytest.param(lambda: [forged(CA, cn="pi-kitchen", san="laptop")], {}, Reason.MALFORMED, id="cn-san-disagree"),
    pytest.param(lambda: [forged(CA, cn="pi-kitchen", san="pi-kitchen", org="evil")], {}, Reason.MALFORMED,
                 id="other-organisation"),
    pytest.param(lambda: [PI.cert, PI.cert, PI.cert], {}, Reason.MALFORMED, id="chain-too-long"),
    pytest.param(lambda: [broken_san()], {}, Reason.MALFORMED, id="extension-does-not-parse"),
    pytest.param(lambda: [x509.load_pem_x509_certificate(ca_pem(CA))], {}, Reason.MALFORMED, id="the-ca-itself"),
]


@pytest.mark.parametrize(("chain", "kw", "reason"), CASES)
def test_refusals(chain: object, kw: dict[str, object], reason: Reason) -> None:
    assert refusal(chain(), **kw) is reason  # type: ignore[operator]


def test_a_renewed_certificate_of_a_revoked_serial_is_accepted() -> None:
    renewed = issue(CA, "pi-kitchen")
    peer = verdict([renewed.cert], revoked=Revocations(serials=frozenset({PI.cert.serial_number})))
    assert isinstance(peer, PeerIdentity)


def test_load_chain_refuses_garbage_naming_the_certificate() -> None:
    out = load_chain([PI.cert.public_bytes(__import__("cryptography.hazmat.primitives.serialization",
                                                      fromlist=["Encoding"]).Encoding.DER), b"\x30\x03junk"])
    assert isinstance(out, Refused) and out.reason is Reason.MALFORMED and "certificate 1" in out.detail


def test_trust_anchor_takes_exactly_one_ca() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        TrustAnchor.from_pem(ca_pem(CA) + ca_pem(make_ca("other")))

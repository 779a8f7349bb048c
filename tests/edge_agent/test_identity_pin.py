"""The enrolment CA pin: exactly one certificate with the pinned fingerprint, nothing smuggled alongside."""

from __future__ import annotations

import time

import pytest

from coordinator.pki import CertificateAuthority, fingerprint
from edge_agent.identity import EnrolmentError, _pinned_ca

NOW = time.time()


def test_the_pinned_ca_is_accepted_and_re_encoded() -> None:
    ca = CertificateAuthority.create("real", NOW)
    assert _pinned_ca(ca.cert_pem, fingerprint(ca.cert_pem), "test") == ca.cert_pem


@pytest.mark.parametrize("order", ["appended", "prepended"])
def test_a_second_certificate_cannot_ride_along(order: str) -> None:
    real, rogue = CertificateAuthority.create("real", NOW), CertificateAuthority.create("rogue", NOW)
    bundle = real.cert_pem + rogue.cert_pem if order == "appended" else rogue.cert_pem + real.cert_pem
    with pytest.raises(EnrolmentError, match="exactly the cluster CA"):
        _pinned_ca(bundle, fingerprint(real.cert_pem), "test")


def test_another_ca_is_refused() -> None:
    real, rogue = CertificateAuthority.create("real", NOW), CertificateAuthority.create("rogue", NOW)
    with pytest.raises(EnrolmentError, match="pinned"):
        _pinned_ca(rogue.cert_pem, fingerprint(real.cert_pem), "test")


def test_garbage_is_refused() -> None:
    with pytest.raises(EnrolmentError, match="PEM"):
        _pinned_ca(b"<html>hello</html>", "00" * 32, "test")

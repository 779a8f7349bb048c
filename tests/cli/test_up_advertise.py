"""What `cloudless up` advertises to other machines (cloudless.advertise), the certificates that name it, and
`cloudless pki issue-server` for a standalone broker. Pure parts with tables; certificates parsed with cryptography
and verified the way a device's TLS stack does (cryptography's RFC 5280 server verifier)."""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.general_name import DNSName, IPAddress
from cryptography.x509.verification import PolicyBuilder, Store

from cloudless import up
from cloudless.advertise import AdvertiseError, Exposure, default_addresses, exposure, parse_advertise, parse_hosts
from cloudless.cli import main
from coordinator.pki import CertificateAuthority

# an interface table as psutil reports this CI machine's: a LAN address, Podman's bridge, veths, loopback
HOST = {
    "lo": [("AF_INET", "127.0.0.1"), ("AF_INET6", "::1")],
    "eth0": [("AF_INET", "192.0.2.2"), ("AF_INET6", "fd00::2"), ("AF_INET6", "fe80::fc:ff:fe00:1%eth0")],
    "wlan0": [("AF_INET", "192.168.1.23"), ("AF_INET", "169.254.7.7")],
    "cni-podman0": [("AF_INET", "10.88.0.1")],
    "podman1": [("AF_INET", "10.89.0.1")],
    "docker0": [("AF_INET", "172.17.0.1")],
    "vethe0243017": [("AF_INET6", "fe80::20f0:efff:fe17:ed5f%vethe0243017")],
    "eth1": [("AF_INET", "10.0.0.9")],  # down
    "tailscale0": [("AF_INET", "100.64.0.3")],
}
UP = {name: name != "eth1" for name in HOST}


def sans(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return ({str(ip) for ip in ext.get_values_for_type(x509.IPAddress)}, set(ext.get_values_for_type(x509.DNSName)))


def verifies(ca: bytes, cert: bytes, host: str) -> bool:
    """Would a client that trusts only the cluster CA accept `cert` when it dialled `host`?"""
    try:
        subject: DNSName | IPAddress = IPAddress(ipaddress.ip_address(host))
    except ValueError:
        subject = DNSName(host)
    verifier = PolicyBuilder().store(Store([x509.load_pem_x509_certificate(ca)])).build_server_verifier(subject)
    try:
        verifier.verify(x509.load_pem_x509_certificate(cert), [])
    except x509.verification.VerificationError:
        return False
    return True


# ---- what is advertised -----------------------------------------------------------------------------------------


def test_the_default_is_the_lan_addresses_then_the_host_name() -> None:
    # LAN (private) first, then the rest (a VPN's shared space), the host name last; bridges, veths, loopback,
    # link-local, IPv6 and interfaces that are down left out
    assert default_addresses(HOST, UP, "pi-hub") == ["192.0.2.2", "192.168.1.23", "100.64.0.3", "pi-hub"]


@pytest.mark.parametrize(("hostname", "expected"), [
    ("", []), ("localhost", []), ("localhost.localdomain", []), ("my_box", []), ("Box.Lan.", ["box.lan"]),
], ids=["none", "localhost", "localhost-domain", "not-a-dns-name", "normalised"])
def test_the_host_name_is_added_only_when_devices_could_resolve_it(hostname: str, expected: list[str]) -> None:
    assert default_addresses({}, {}, hostname) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("192.168.1.10", ["192.168.1.10"]),
    ("192.168.1.10,nas.lan,192.168.1.10", ["192.168.1.10", "nas.lan"]),
    (" 10.0.0.1 , Box.Local ", ["10.0.0.1", "box.local"]),
], ids=["one", "several-deduplicated", "spaces-and-case"])
def test_advertise_parses(text: str, expected: list[str]) -> None:
    assert parse_advertise(text) == expected


@pytest.mark.parametrize(("text", "why"), [
    ("", "at least one"), ("a,,b", "empty item"), ("fd00::2", "IPv6"), ("0.0.0.0", "not an address devices can"),
    ("bad_name!", "neither an IPv4 address nor a host name"), ("1.2.3.999", "neither"),
    (",".join(f"10.0.0.{i}" for i in range(1, 20)), "at most 16"),
], ids=["empty", "empty-item", "ipv6", "wildcard", "bad-name", "bad-ip", "too-many"])
def test_advertise_refusals_name_the_flag(text: str, why: str) -> None:
    with pytest.raises(AdvertiseError) as err:
        parse_advertise(text)
    assert str(err.value).startswith("--advertise: ") and why in str(err.value)


def test_exposure_modes() -> None:
    assert exposure(None, local_only=True) == Exposure((), "127.0.0.1")
    assert exposure("nas.lan", local_only=False) == Exposure(("nas.lan",), "0.0.0.0")
    assert exposure(None, local_only=False, detect=["192.0.2.2", "vm"]) == Exposure(("192.0.2.2", "vm"), "0.0.0.0")
    assert exposure(None, local_only=False, detect=[]) == Exposure((), "127.0.0.1")  # nothing to serve others at
    where = Exposure(("192.0.2.2", "vm"), "0.0.0.0")
    assert where.urls("https", 8470) == ["https://192.0.2.2:8470", "https://vm:8470"]
    assert where.san_hosts("0.0.0.0") == ["192.0.2.2", "vm", "127.0.0.1", "localhost"]
    assert Exposure((), "127.0.0.1").urls("https", 1) == ["https://127.0.0.1:1"]


def test_the_coordinator_is_told_every_url_and_names() -> None:
    where = Exposure(("192.0.2.2", "vm"), "0.0.0.0")
    flags = up._coordinator_exposure(where, 8470, "mqtts://192.0.2.2:1883")
    assert flags == ["--api-hostname", "192.0.2.2", "--api-hostname", "vm",
                     "--advertise", "https://192.0.2.2:8470,https://vm:8470", "--node-broker", "mqtts://192.0.2.2:1883"]
    # each of several coordinators is told its own port at every address (it forwards writes to the first)
    assert up._coordinator_exposure(where, 8471, "b")[5] == "https://192.0.2.2:8471,https://vm:8471"
    assert up._coordinator_exposure(Exposure((), "127.0.0.1"), 8470, "b") == []


def test_advertised_names_are_dialled_by_their_addresses() -> None:
    where = Exposure(("192.0.2.2", "nas.lan", "gone.lan", "me"), "0.0.0.0")
    names = {"nas.lan": ["192.0.2.9", "192.0.2.2"], "gone.lan": [], "me": ["127.0.1.1"]}
    assert where.dialable(lambda n: names[n]) == ["192.0.2.2", "192.0.2.9"]


def test_the_relay_is_advertised_at_the_ips_and_loopback_last() -> None:
    assert up.relay_addresses("0.0.0.0", 7000, ["192.0.2.2", "10.0.0.5"]) == [
        "192.0.2.2:7000", "10.0.0.5:7000", "127.0.0.1:7000"]
    assert up.relay_addresses("127.0.0.1", 7000, []) == ["127.0.0.1:7000"]
    assert up.relay_addresses("0.0.0.0", 7000, [f"10.0.0.{i}" for i in range(20)])[-1] == "127.0.0.1:7000"


def test_the_broker_certificate_names_every_advertised_address(tmp_path: Path) -> None:
    paths = up.ensure_pki(tmp_path, Exposure(("192.0.2.2", "nas.lan"), "0.0.0.0").san_hosts())
    cert_pem = paths["server_cert"].read_bytes()
    ips, names = sans(x509.load_pem_x509_certificate(cert_pem))
    assert ips == {"192.0.2.2", "127.0.0.1"} and names == {"nas.lan", "localhost"}
    ca = paths["ca"].read_bytes()
    assert all(verifies(ca, cert_pem, h) for h in ("192.0.2.2", "nas.lan", "127.0.0.1", "localhost"))
    assert not verifies(ca, cert_pem, "192.0.2.3")


# ---- cloudless pki issue-server ---------------------------------------------------------------------------------


@pytest.fixture
def cluster(tmp_path: Path) -> Path:
    CertificateAuthority.load_or_create(tmp_path / "data" / "coordinator" / "pki", "test", time.time())
    return tmp_path / "data"


def test_issue_server_writes_a_certificate_the_ca_verifies_for_every_san(
        cluster: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "certs"
    assert main(["pki", "issue-server", "--name", "mosquitto", "--san", "192.168.1.10,nas.lan,fd00::10",
                 "--out", str(out), "--data-dir", str(cluster), "--days", "30"]) == 0
    assert "mosquitto.pem" in capsys.readouterr().out
    cert_pem, ca = (out / "mosquitto.pem").read_bytes(), (out / "ca.pem").read_bytes()
    assert ca == (cluster / "coordinator" / "pki" / "ca.pem").read_bytes()
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert sans(cert) == ({"192.168.1.10", "fd00::10"}, {"nas.lan"})
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "mosquitto"
    assert all(verifies(ca, cert_pem, h) for h in ("192.168.1.10", "nas.lan", "fd00::10"))
    assert not verifies(ca, cert_pem, "other.lan")
    assert (out / "mosquitto.key").stat().st_mode & 0o777 == 0o600
    key = x509.load_pem_x509_certificate(cert_pem).public_key()
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    assert load_pem_private_key((out / "mosquitto.key").read_bytes(), None).public_key() == key
    other = CertificateAuthority.create("other", time.time()).cert_pem
    assert not verifies(other, cert_pem, "nas.lan")  # it is the cluster CA's, not any CA's
    # Mosquitto's crlfile must exist before the coordinator first writes it: an empty CRL from the same CA
    crl = x509.load_pem_x509_crl((cluster / "coordinator" / "pki" / "crl.pem").read_bytes())
    assert crl.is_signature_valid(x509.load_pem_x509_certificate(ca).public_key()) and len(crl) == 0  # type: ignore[arg-type]


def test_issue_server_creates_the_cluster_ca_only_when_asked(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["pki", "issue-server", "--name", "mosquitto", "--san", "nas.lan", "--out", str(tmp_path / "out"),
            "--data-dir", str(tmp_path / "data")]
    assert main(argv) == 2 and "--create-ca" in capsys.readouterr().err
    assert main([*argv, "--create-ca"]) == 0 and "created the cluster CA" in capsys.readouterr().out
    ca = (tmp_path / "data" / "coordinator" / "pki" / "ca.pem").read_bytes()
    assert main(argv) == 0  # the CA now exists: used, not replaced
    assert (tmp_path / "data" / "coordinator" / "pki" / "ca.pem").read_bytes() == ca
    assert verifies(ca, (tmp_path / "out" / "mosquitto.pem").read_bytes(), "nas.lan")


@pytest.mark.parametrize(("args", "why"), [
    (["--name", "../x", "--san", "nas.lan"], "--name: "),
    (["--name", "m", "--san", "nas lan"], "--san: "),
    (["--name", "m", "--san", ""], "--san: "),
    (["--name", "m", "--san", "0.0.0.0"], "--san: "),
    (["--name", "m", "--san", "nas.lan", "--days", "0"], "--days: "),
    (["--name", "m", "--san", "nas.lan", "--data-dir", "/nonexistent"], "--data-dir: no cluster CA"),
], ids=["bad-name", "bad-san", "empty-san", "wildcard-san", "days", "no-ca"])
def test_issue_server_refusals_name_the_flag(cluster: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             args: list[str], why: str) -> None:
    argv = ["pki", "issue-server", "--out", str(tmp_path / "out"), "--data-dir", str(cluster), *args]
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith(f"cloudless pki: {why}")
    assert not (tmp_path / "out").exists()


def test_issue_server_requires_name_san_and_out(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["pki", "issue-server", "--name", "m"])
    assert "--san" in capsys.readouterr().err


def test_hosts_for_a_standalone_server_may_be_ipv6() -> None:
    assert parse_hosts("fd00::10,nas.lan", flag="--san") == ["fd00::10", "nas.lan"]


@pytest.mark.parametrize(("where", "asked_local", "expected"), [
    (Exposure(("192.0.2.2", "vm"), "0.0.0.0"), False,
     "join at https://192.0.2.2:8470, https://vm:8470 (tried in this order; broker mqtts://192.0.2.2:1883)"),
    (Exposure((), "127.0.0.1"), True, "this machine only (--local-only)"),
    (Exposure((), "127.0.0.1"), False, "it has no network address but loopback"),
], ids=["advertised", "local-only", "nothing-found"])
def test_up_tells_where_devices_join(where: Exposure, asked_local: bool, expected: str) -> None:
    assert expected in up._devices_line(where, 8470, "mqtts://192.0.2.2:1883", asked_local=asked_local)

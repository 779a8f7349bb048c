"""Enrolment over a real network: the token names every address the coordinator is advertised at; the agent tries
them in order, says which failed and why, enrols at the first that works, remembers the list and dials the broker
at the address that worked. A real HTTPS server on loopback plays the coordinator (the CA, the enrol route)."""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest

from coordinator.enroll import TokenRecord, mint
from coordinator.pki import CertificateAuthority, CertRole, fingerprint, key_pem, new_key
from edge_agent import identity as ident

NOW = time.time()  # at import: tokens and certificates below live a day, so a long suite run never outlives them
SECRET = b"s" * 64


class FakeCoordinator:
    """/v1/ca and /v1/enroll over HTTPS, with a server certificate from `ca` for 127.0.0.1."""

    def __init__(self, ca: CertificateAuthority, tmp: Path, broker: str, fail_with: int = 0) -> None:
        self.ca, self.broker, self.enrolled = ca, broker, []  # type: ignore[var-annotated]
        self.fail_with = fail_with  # answer every enrolment with this status (0: enrol)
        key = new_key()
        (tmp / "srv.pem").write_bytes(ca.issue_server(key, hosts=["127.0.0.1"], now=NOW, lifetime_s=86400).cert_pem)
        (tmp / "srv.key").write_bytes(key_pem(key))
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(tmp / "srv.pem"), str(tmp / "srv.key"))
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._send(200, owner.ca.cert_pem, "application/x-pem-file")

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if owner.fail_with:
                    error = {"error": {"message": f"status {owner.fail_with} for a test"}}
                    self._send(owner.fail_with, json.dumps(error).encode(), "application/json")
                    return
                issued = owner.ca.issue(body["csr"].encode(), identity=body["nodeId"], role=CertRole.NODE, now=NOW,
                                        lifetime_s=86400)
                owner.enrolled.append(body["nodeId"])
                reply = {"nodeId": body["nodeId"], "certificate": issued.cert_pem.decode(), "broker": owner.broker}
                self._send(200, json.dumps(reply).encode(), "application/json")

            def _send(self, status: int, data: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def dead_port() -> int:
    """A loopback port nobody listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def cluster_ca() -> CertificateAuthority:
    return CertificateAuthority.create("test", NOW)


@pytest.fixture
def coordinator(cluster_ca: CertificateAuthority, tmp_path: Path) -> Iterator[FakeCoordinator]:
    # the coordinator answers with the broker at its *first* advertised address, which this device cannot reach
    c = FakeCoordinator(cluster_ca, tmp_path, broker="mqtts://localhost:18883")
    yield c
    c.close()


def token(ca: CertificateAuthority, urls: list[str]) -> str:
    return mint(SECRET, TokenRecord("t1", max_uses=1, expires_at=NOW + 86400), url=urls,
                ca_fingerprint=fingerprint(ca.cert_pem), now=NOW)


def test_a_token_carries_every_url_in_order_and_the_first_as_url() -> None:
    ca = CertificateAuthority.create("test", NOW)
    claims = jwt.decode(token(ca, ["https://192.0.2.1:8470/", "https://pi.local:8470"]), SECRET, algorithms=["HS256"])
    assert claims["urls"] == ["https://192.0.2.1:8470", "https://pi.local:8470"]
    assert claims["url"] == "https://192.0.2.1:8470"  # what agents from before the list read
    # what `cloudless coordinator --advertise A,B` passes through (IdentityConfig.enroll_url is one string)
    joined = mint(SECRET, TokenRecord("t2", max_uses=1, expires_at=NOW + 86400), url="https://a:1,https://b:1,https://a:1",
                  ca_fingerprint="00", now=NOW)
    assert jwt.decode(joined, SECRET, algorithms=["HS256"])["urls"] == ["https://a:1", "https://b:1"]


def test_the_agent_falls_through_a_dead_url_to_a_live_one(
        coordinator: FakeCoordinator, cluster_ca: CertificateAuthority, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    dead = f"https://localhost:{dead_port()}"
    got = ident.enrol(tmp_path / "agent", "pi-1", token(cluster_ca, [dead, coordinator.url]))
    assert coordinator.enrolled == ["pi-1"]
    err = capsys.readouterr().err
    assert f"enrolment at {dead} failed: cannot reach the coordinator" in err and f"trying {coordinator.url}" in err
    assert got.api_url == coordinator.url and got.api_urls == (coordinator.url, dead)
    # the broker is on the coordinator's machine: dialled at the address that worked from here
    assert got.broker_url == "mqtts://127.0.0.1:18883"
    again = ident.load(tmp_path / "agent")
    assert again is not None and again.api_urls == (coordinator.url, dead) and again.broker_url == got.broker_url


def test_a_server_without_the_pinned_ca_is_skipped(coordinator: FakeCoordinator, cluster_ca: CertificateAuthority,
                                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    impostor = FakeCoordinator(CertificateAuthority.create("other", NOW), tmp_path, broker="mqtts://x:1")
    try:
        got = ident.enrol(tmp_path / "agent", "pi-1", token(cluster_ca, [impostor.url, coordinator.url]))
    finally:
        impostor.close()
    assert impostor.enrolled == [] and coordinator.enrolled == ["pi-1"] and got.api_url == coordinator.url
    assert "does not hold the cluster CA pinned in the token" in capsys.readouterr().err


def test_a_server_error_falls_through_but_a_refusal_does_not(coordinator: FakeCoordinator,
                                                             cluster_ca: CertificateAuthority, tmp_path: Path) -> None:
    proxy = FakeCoordinator(cluster_ca, tmp_path, broker="mqtts://x:1", fail_with=502)
    refusing = FakeCoordinator(cluster_ca, tmp_path, broker="mqtts://x:1", fail_with=401)
    try:
        got = ident.enrol(tmp_path / "a", "pi-1", token(cluster_ca, [proxy.url, coordinator.url]))
        assert got.api_url == coordinator.url and coordinator.enrolled == ["pi-1"]
        with pytest.raises(ident.EnrolmentError, match="refused: status 401"):
            ident.enrol(tmp_path / "b", "pi-2", token(cluster_ca, [refusing.url, coordinator.url]))
        assert coordinator.enrolled == ["pi-1"]  # a refusal is an answer: the token is not tried elsewhere
    finally:
        proxy.close()
        refusing.close()


def test_when_every_url_fails_the_error_names_each(cluster_ca: CertificateAuthority, tmp_path: Path) -> None:
    urls = [f"https://127.0.0.1:{dead_port()}", f"https://localhost:{dead_port()}"]
    with pytest.raises(ident.EnrolmentError) as err:
        ident.enrol(tmp_path / "agent", "pi-1", token(cluster_ca, urls))
    assert "any of the token's 2 URLs" in str(err.value)
    assert all(f"{u}: cannot reach the coordinator" in str(err.value) for u in urls)


def test_a_token_with_only_the_old_url_claim_still_enrols(coordinator: FakeCoordinator,
                                                          cluster_ca: CertificateAuthority, tmp_path: Path) -> None:
    old = jwt.encode({"iss": "cloudless", "jti": "t1", "exp": int(NOW + 86400), "url": coordinator.url,
                      "ca": fingerprint(cluster_ca.cert_pem)}, SECRET, algorithm="HS256")
    got = ident.enrol(tmp_path / "agent", "pi-1", old)
    assert got.api_url == coordinator.url and got.api_urls == (coordinator.url,)
    assert got.broker_url == "mqtts://localhost:18883"  # not one of the token's hosts: kept as answered


def test_an_identity_saved_before_the_list_loads_with_its_one_url(tmp_path: Path) -> None:
    d = tmp_path / ident.DIR
    d.mkdir()
    (d / ident.KEY).write_text("k")
    (d / ident.CERT).write_text("c")
    (d / ident.META).write_text(json.dumps({"node_id": "pi", "api_url": "https://a:1", "broker_url": "mqtts://a:2",
                                            "not_before": 0, "not_after": 1}))
    got = ident.load(tmp_path)
    assert got is not None and got.api_urls == ("https://a:1",)


@pytest.mark.parametrize(("broker", "urls", "used", "expected"), [
    ("mqtts://10.0.0.5:1883", ["https://10.0.0.5:8470", "https://192.168.1.5:8470"], "https://192.168.1.5:8470",
     "mqtts://192.168.1.5:1883"),
    ("mqtts://10.0.0.5:1883", ["https://10.0.0.5:8470", "https://box.lan:8470"], "https://10.0.0.5:8470",
     "mqtts://10.0.0.5:1883"),
    ("mqtts://broker.example:8883", ["https://10.0.0.5:8470", "https://box.lan:8470"], "https://box.lan:8470",
     "mqtts://broker.example:8883"),
    ("mqtts://10.0.0.5", ["https://10.0.0.5:8470", "https://box.lan:8470"], "https://box.lan:8470",
     "mqtts://box.lan"),
], ids=["other-advertised-address", "same-address", "standalone-broker-kept", "no-port"])
def test_broker_for(broker: str, urls: list[str], used: str, expected: str) -> None:
    assert ident.broker_for(broker, urls, used) == expected


def test_the_isolated_enrolment_logs_which_url_failed(coordinator: FakeCoordinator, cluster_ca: CertificateAuthority,
                                                      tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dead = f"https://127.0.0.1:{dead_port()}"
    with caplog.at_level(logging.WARNING, logger="edge_agent.identity"):
        got = ident.enrol_isolated(tmp_path / "agent", "pi-1", token(cluster_ca, [dead, coordinator.url]))
    assert got.api_url == coordinator.url
    assert any(f"enrolment at {dead} failed" in r.getMessage() for r in caplog.records), caplog.text

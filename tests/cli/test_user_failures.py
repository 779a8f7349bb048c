"""What a user sees when things are not as expected: empty logs, following logs, interactive exec, the delete-node
409, and a URL with the wrong scheme (http:// to the TLS port, https:// to a plain one) against real servers."""

from __future__ import annotations

import datetime
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cloudless.ctl.operate import FOLLOW_INTERVAL_S, new_lines
from tests.cli.conftest import FakeClock
from tests.cli.fake_coordinator import FakeCoordinator


@pytest.fixture
def web(fake: FakeCoordinator) -> FakeCoordinator:
    fake.add_node("pi-1", replicas=1)
    fake.add_workload("web", replicas=1)
    return fake


# ---- logs ------------------------------------------------------------------------------------------------------

def test_logs_with_no_output_says_so_on_stderr(web: FakeCoordinator, cli) -> None:
    r = cli("logs", "web")
    assert (r.code, r.out) == (0, "")
    assert "(no output yet from web-0)" in r.err


def test_logs_with_output_says_nothing_more(web: FakeCoordinator, cli) -> None:
    web.logs["web-0"] = "hello\n"
    r = cli("logs", "web")
    assert (r.code, r.out, r.err) == (0, "hello\n", "")


@pytest.mark.parametrize(("before", "now", "fresh", "gap"), [
    ([], ["a", "b"], ["a", "b"], False),
    (["a", "b"], ["a", "b", "c"], ["c"], False),
    (["a", "b"], ["b", "c", "d"], ["c", "d"], False),  # the tail window moved on
    (["a", "a"], ["a", "a", "a"], ["a"], False),  # repeated lines: the longest overlap wins
    (["a", "b"], ["a", "b"], [], False),
    (["a", "b"], ["x", "y"], ["x", "y"], True),  # nothing shared: more was written than a tail holds
    (["a"], [], [], False),
], ids=["first", "append", "window-moved", "repeats", "nothing-new", "gap", "emptied"])
def test_new_lines(before: list[str], now: list[str], fresh: list[str], gap: bool) -> None:
    assert new_lines(before, now) == (fresh, gap)


def test_logs_follow_prints_only_new_lines_until_ctrl_c(web: FakeCoordinator, cli, clock: FakeClock) -> None:
    web.logs["web-0"] = "one\n"

    def grow(n: int) -> None:
        web.logs["web-0"] += f"more {n}\n"
    clock.on_sleep.append(grow)
    clock.interrupt_after = 3
    r = cli("logs", "-f", "web")
    # the third poll never happens: Ctrl-C lands in its sleep
    assert (r.code, r.out) == (0, "one\nmore 1\nmore 2\n")
    assert clock.sleeps == [FOLLOW_INTERVAL_S] * 3


def test_logs_follow_on_a_silent_replica_says_it_is_waiting(web: FakeCoordinator, cli, clock: FakeClock) -> None:
    clock.interrupt_after = 1
    r = cli("logs", "web", "--follow")
    assert r.code == 0 and r.out == ""
    assert "(no output yet from web-0; following, Ctrl-C to stop)" in r.err


# ---- delete node 409 ---------------------------------------------------------------------------------------------

def test_the_delete_node_conflict_hint_names_commands_that_exist(fake: FakeCoordinator, cli) -> None:
    fake.add_node("pi-1")
    r = cli("delete", "node", "pi-1")
    assert r.code == 1
    hint = next(line for line in r.err.splitlines() if line.startswith("cloudless: hint:"))
    assert "`cloudless node revoke pi-1`" in hint and "`cloudless drain pi-1`" in hint
    assert "someone changed it" not in hint
    for command in ("node revoke pi-1", "drain pi-1"):  # the commands the hint names parse
        assert cli(*command.split(), "--help").code == 0


# ---- wrong scheme --------------------------------------------------------------------------------------------------

def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1)).sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "c.pem", tmp / "k.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"items": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def tls_port(tmp_path: Path) -> Iterator[int]:
    """A real HTTPS server on 127.0.0.1 (what `cloudless up` serves the API as)."""
    cert, key = _self_signed(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_http_against_the_https_port_says_use_https(tls_port: int, cli) -> None:
    r = cli("get", "nodes", "--server", f"http://127.0.0.1:{tls_port}", "--token", "t")
    assert r.code == 1
    assert f"the API speaks HTTPS: use https://127.0.0.1:{tls_port}" in r.err
    assert "your network" not in r.err


def test_https_against_a_plain_http_port_says_use_http(fake: FakeCoordinator, cli) -> None:
    plain = fake.url  # type: ignore[attr-defined]
    r = cli("get", "nodes", "--server", plain.replace("http://", "https://"))
    assert r.code == 1
    assert f"it speaks plain HTTP: use {plain}" in r.err
    assert "your network" not in r.err

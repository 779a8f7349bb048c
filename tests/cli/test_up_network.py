"""`cloudless up` as other machines see it: where it listens, what its certificates name, what its tokens and join
command carry. Real `cloudless up` processes (broker, relay, coordinator, a process-runtime agent); run under
`flock /tmp/cloudless-integration.lock`. Other loopback addresses (127.0.0.2) stand in for a LAN address: with the
wildcard bind they are served like any address of this host; with --local-only they are not."""

from __future__ import annotations

import base64
import json
import os
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from cryptography import x509

from cloudless.advertise import host_addresses
from tests.integration.cluster_env import until
from tests.integration.conftest import free_port
from tests.need import unavailable

pytestmark = pytest.mark.integration


class Up:
    def __init__(self, tmp: Path) -> None:
        self.tmp, self.data, self.config = tmp, tmp / "data", tmp / "cli.json"
        self.mqtt, self.api, self.relay = free_port(), free_port(), free_port()
        self.proc: subprocess.Popen[str] | None = None
        self.out: list[str] = []

    def start(self, *flags: str) -> str:
        argv = [sys.executable, "-u", "-m", "cloudless", "up", "--data-dir", str(self.data), "--mqtt-port",
                str(self.mqtt), "--api-port", str(self.api), "--relay-port", str(self.relay), "--config",
                str(self.config), *flags]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "CLOUDLESS_LOG_LEVEL": "WARNING"})
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            self.out.append(line)
            if "Press Ctrl-C to stop." in line:
                return "".join(self.out)
            if not line and self.proc.poll() is not None:
                break
        raise AssertionError("cloudless up did not come up:\n" + "".join(self.out))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()

    def cli(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "cloudless", *args], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "CLOUDLESS_CONFIG": str(self.config)}, check=False)
        assert done.returncode == 0, f"cloudless {' '.join(args)}: {done.stdout}\n{done.stderr}"
        return done.stdout

    def token_claims(self) -> dict[str, Any]:
        token = json.loads(self.cli("token", "create", "-o", "json"))["token"]
        payload = token.split(".")[1]
        claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return claims

    def listening(self) -> set[str]:
        """The addresses something listens on at up's API and MQTT ports (TCP)."""
        ports = {self.api, self.mqtt}
        return {c.laddr.ip for c in psutil.net_connections("tcp")
                if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port in ports}


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    u = Up(tmp_path)
    try:
        yield u
    finally:
        u.stop()


def server_cert(host: str, port: int) -> x509.Certificate:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # read it; what it names is the assertion
    with socket.create_connection((host, port), timeout=10) as sock, ctx.wrap_socket(sock) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def sans(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return ({str(ip) for ip in ext.get_values_for_type(x509.IPAddress)}, set(ext.get_values_for_type(x509.DNSName)))


def verified_get(url: str, ca: Path) -> int:
    """GET with the cluster CA and hostname checking, as a device does after enrolment: the status."""
    import urllib.request

    ctx = ssl.create_default_context(cafile=str(ca))
    with urllib.request.urlopen(url, timeout=10, context=ctx) as resp:
        return int(resp.status)


def test_advertised_addresses_are_served_named_in_certificates_and_carried_by_tokens(up: Up) -> None:
    out = up.start("--advertise", "127.0.0.2,cl-test.example", "--agent-runtime", "process")
    urls = [f"https://127.0.0.2:{up.api}", f"https://cl-test.example:{up.api}"]
    assert f"join at {urls[0]}, {urls[1]} (tried in this order; broker mqtts://127.0.0.2:{up.mqtt})" in out
    assert up.listening() == {"0.0.0.0"}
    ca = up.data / "coordinator" / "pki" / "ca.pem"
    for port in (up.api, up.mqtt):  # the API and the broker: every advertised address, and loopback
        assert sans(server_cert("127.0.0.2", port)) == ({"127.0.0.2", "127.0.0.1"}, {"cl-test.example", "localhost"})
    # served, and verified by name, at the advertised address and at loopback (the local CLI)
    assert verified_get(f"https://127.0.0.2:{up.api}/v1/ca", ca) == 200
    assert verified_get(f"https://127.0.0.1:{up.api}/v1/ca", ca) == 200
    assert json.loads(up.config.read_text())["server"] == f"https://127.0.0.1:{up.api}"
    claims = up.token_claims()
    assert claims["urls"] == urls and claims["url"] == urls[0]
    line = up.cli("token", "create", "--join-command")
    assert line.split(" | ")[0].startswith("sh -c") and shlex.split(line.split(" | ")[0])[3:] == [
        "sh", *(f"{u}/v1/install.sh" for u in urls)]
    # the local agent enrolled with such a token (at the first URL) and remembers them all
    until(lambda: any(n["online"] for n in json.loads(up.cli("get", "nodes", "-o", "json"))["items"]), 60,
          "the local agent online")
    meta = json.loads((up.data / "agent" / "identity" / "enrolment.json").read_text())
    assert meta["api_url"] == urls[0] and meta["api_urls"] == urls


def test_local_only_listens_on_loopback_alone_and_tokens_name_loopback(up: Up) -> None:
    out = up.start("--local-only", "--no-agent")
    assert "this machine only (--local-only)" in out
    assert up.listening() == {"127.0.0.1"}
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", up.api), timeout=10).close()
    ips, names = sans(server_cert("127.0.0.1", up.mqtt))
    assert ips == {"127.0.0.1"} and names == {"localhost"}
    claims = up.token_claims()
    assert claims["urls"] == [f"https://127.0.0.1:{up.api}"]
    assert f"https://127.0.0.1:{up.api}/v1/install.sh" in up.cli("token", "create", "--join-command")


def test_by_default_this_hosts_addresses_are_advertised(up: Up) -> None:
    found = host_addresses()
    if not found:
        unavailable("this host has no non-loopback IPv4 address and no host name: nothing to advertise")
    up.start("--no-agent", "--no-relay")
    assert up.listening() == {"0.0.0.0"}
    assert up.token_claims()["urls"] == [f"https://{a}:{up.api}" for a in found]
    ips, names = sans(server_cert("127.0.0.1", up.api))
    assert {a for a in found if a[0].isdigit()} <= ips and {a for a in found if not a[0].isdigit()} <= names

"""`cloudless pki issue-relay` and `cloudless relay`, as processes: a relay made from the cluster CA carries two
devices' traffic, and a device whose serial lands in the revocation file is cut off by the running relay."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.pki import CertificateAuthority
from dataplane.endpoint import Endpoint
from dataplane.quic import NodeCredential
from tests.dataplane.pki_builders import issue
from tests.dataplane.test_quic import credential, echo

pytestmark = pytest.mark.integration


def cloudless(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cloudless", *args], capture_output=True, text=True, timeout=60,
                          check=False, **kw)  # type: ignore[call-overload]


def free_udp_tcp_port() -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[CertificateAuthority, Path]]:
    pki = tmp_path / "data" / "coordinator" / "pki"
    ca, _ = CertificateAuthority.load_or_create(pki, "test", time.time())
    yield ca, tmp_path


def test_issue_relay_refuses_without_a_cluster_ca(tmp_path: Path) -> None:
    out = cloudless("pki", "issue-relay", "vps", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r"))
    assert out.returncode == 2 and "no cluster CA" in out.stderr


def test_a_relay_from_the_cli_carries_traffic_and_cuts_a_revoked_device(
        cluster: tuple[CertificateAuthority, Path]) -> None:
    ca, tmp = cluster
    out = cloudless("pki", "issue-relay", "vps", "--data-dir", str(tmp / "data"), "--out", str(tmp / "relay"))
    assert out.returncode == 0, out.stderr
    assert (tmp / "relay" / "relay.key").stat().st_mode & 0o777 == 0o600
    port = free_udp_tcp_port()
    revoked = tmp / "revoked"
    revoked.write_text("")
    relay = subprocess.Popen([sys.executable, "-m", "cloudless", "relay", "--host", "127.0.0.1", "--port", str(port),
                              "--cert", str(tmp / "relay/relay.pem"), "--key", str(tmp / "relay/relay.key"),
                              "--ca", str(tmp / "relay/ca.pem"), "--revoked", str(revoked)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert relay.stdout is not None and "relay@vps on udp+tcp/tls" in relay.stdout.readline()
        a_cred, b_cred = issue(ca, "a", now=time.time()), issue(ca, "b", now=time.time())
        asyncio.run(_exchange_then_revoke(credential(a_cred), credential(b_cred), port, revoked,
                                          a_cred.cert.serial_number))
    finally:
        relay.terminate()
        relay.wait(timeout=10)
    assert relay.returncode == 0


async def _exchange_then_revoke(a_cred: NodeCredential, b_cred: NodeCredential, port: int, revoked: Path,
                                serial: int) -> None:
    a = await Endpoint.open(a_cred, "127.0.0.1", 0, clock=time.time, direct=False)
    b = await Endpoint.open(b_cred, "127.0.0.1", 0, clock=time.time, on_stream=echo, direct=False)
    try:
        link = await a.attach_relay(("127.0.0.1", port), relay_id="relay@vps")
        await b.attach_relay(("127.0.0.1", port), relay_id="relay@vps")
        peer = await a.connect("b", via="relay@vps")
        reader, writer = await peer.open_stream()
        writer.write(b"via the relay")
        writer.write_eof()
        async with asyncio.timeout(10):
            assert await reader.read() == b"VIA THE RELAY"
        revoked.write_text(f"{serial:x}\n")  # the coordinator writes this file when a node is revoked
        async with asyncio.timeout(15):
            await link.closed.wait()  # the relay re-read the list and cut device a
    finally:
        a.close()
        b.close()

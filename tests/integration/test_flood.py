"""Connection floods (issue 16, High 3): 1,100 idle TCP connections from one address against a daemon limited to
1,024 open files (soft and hard: raising it cannot help) must not keep an enrolled client off the broker or make
the API's /healthz stop answering, and must not fill the log.

Bounded and loopback only: the flood comes from 127.0.0.2, the legitimate clients from 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.acl import Acl
from broker.auth import AuthFiles
from broker.client import MqttClient
from coordinator.pki import CertRole
from tests.integration.cluster_env import CoordinatorProc
from tests.integration.conftest import BrokerUnderTest, make_auth, require_binary
from tests.integration.test_broker_mtls import ROLES, MtlsBroker, Pki
from tests.need import unavailable

pytestmark = pytest.mark.integration
FLOOD = 1100
FLOOD_FROM = "127.0.0.2"
LOG_BUDGET = 20_000  # bytes a daemon may log while flooded for a few seconds


@pytest.fixture(autouse=True)
def _enough_files_for_the_flood() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = FLOOD + 512
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            unavailable(f"the test process may open only {hard} files; the flood needs {want}: raise the hard limit")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def limit_to_1024(pid: int) -> None:
    """The common default, which the daemon cannot raise: soft and hard 1,024 (set on the running coordinator, whose
    start-up the cluster helper owns; it had raised its soft limit, which this undoes)."""
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (1024, 1024))


@contextlib.contextmanager
def flood(port: int, n: int = FLOOD) -> Iterator[list[socket.socket]]:
    """`n` idle TCP connections to 127.0.0.1:port from FLOOD_FROM (non-blocking connects; nothing is ever sent)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.setblocking(False)
            s.bind((FLOOD_FROM, 0))
            s.connect_ex(("127.0.0.1", port))
            socks.append(s)
            if len(socks) % 50 == 0:  # past the listen backlog the kernel drops SYNs: give the daemon time to accept
                time.sleep(0.05)
        time.sleep(1.0)  # let the kernel finish the handshakes and the daemon accept what it will
        yield socks
    finally:
        for s in socks:
            s.close()


def start_limited_broker(b: MtlsBroker) -> None:
    auth = b.workdir / "auth"
    AuthFiles(users={}, acl=Acl(user_roles=ROLES)).save(auth)
    # started under the common default of 1,024 open files, soft and hard: raising the soft limit cannot help
    argv = [require_binary("prlimit"), "--nofile=1024:1024", sys.executable, "-m", "cloudless", "--log-level", "INFO",
            "broker", "--host", "127.0.0.1",
            "--port", "0", "--auth-dir", str(auth), "--cert-auth", "--tls-cert", str(b.pki.dir / "server.pem"),
            "--tls-key", str(b.pki.dir / "server.key"), "--tls-ca", str(b.pki.dir / "ca.pem")]
    b.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=open(b.workdir / "broker.log", "ab"))
    assert b.proc.stdout is not None
    line = b.proc.stdout.readline().decode()
    assert "listening on mqtts://" in line, line
    b.port = int(line.rsplit(":", 1)[1])


async def test_an_enrolled_node_gets_onto_a_flooded_broker(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    b = MtlsBroker("embedded", tmp_path, Pki(tmp_path / "pki"))
    log = tmp_path / "broker.log"
    try:
        start_limited_broker(b)
        a_tls, _ = b.pki.client("A", CertRole.NODE)
        with flood(b.port):
            before = log.stat().st_size
            client = MqttClient(b.settings("A", a_tls))
            await client.start()
            try:
                await client.wait_connected(10)
            finally:
                await client.stop()
            await asyncio.sleep(3)
            grown = log.stat().st_size - before
        assert b.proc is not None and b.proc.poll() is None
        assert grown < LOG_BUDGET, log.read_text(errors="replace")[-3000:]
    finally:
        b.stop()


class LimitedCoordinator(CoordinatorProc):
    def start(self) -> None:
        super().start()
        assert self.proc is not None
        limit_to_1024(self.proc.pid)


def test_healthz_answers_while_the_api_is_flooded(tmp_path: Path) -> None:
    broker = BrokerUnderTest(kind="embedded", workdir=tmp_path)
    broker.passwords = make_auth(tmp_path)
    broker.start()
    coord = LimitedCoordinator(broker, tmp_path)
    try:
        coord.start()
        with flood(coord.port):
            before = coord.log_path.stat().st_size
            with urllib.request.urlopen(coord.url + "/healthz", timeout=5) as resp:
                assert resp.status == 200
            time.sleep(3)
            with urllib.request.urlopen(coord.url + "/healthz", timeout=5) as resp:
                assert resp.status == 200
            grown = coord.log_path.stat().st_size - before
        assert grown < LOG_BUDGET, coord.log_tail()
    finally:
        coord.stop()
        broker.stop()

"""`cloudless broker mosquitto-config` run as root, then Mosquitto started as root (as a service manager does): by
default it drops to the `mosquitto` account, so the config names that user, hands it the files it writes, and
refuses — naming the file — when the key it was given is one that account cannot read (the 0600 root-owned key of
issue 17, with which Mosquitto exited at start). Once the files are that account's, the same command succeeds and
Mosquitto serves mutual TLS; `--user root` keeps root's files as they are."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import free_port, require_binary
from tests.need import require_root, unavailable

pytestmark = pytest.mark.integration


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cloudless", *args], capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.fixture
def workdir() -> Iterator[Path]:
    require_root("a root-started Mosquitto dropping to its account")
    require_binary("mosquitto")
    try:
        import pwd

        pwd.getpwnam("mosquitto")
    except KeyError:
        unavailable("no `mosquitto` account (Debian's mosquitto package creates it)")
    d = Path(tempfile.mkdtemp(prefix="cl-mosq-user-"))
    d.chmod(0o711)  # mkdtemp makes it 0700: the account must be able to pass through, as through /etc
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _config(d: Path, port: int, *extra: str) -> subprocess.CompletedProcess[str]:
    tls = d / "tls"
    return _cli("broker", "mosquitto-config", str(d / "conf"), "--auth-dir", str(d / "auth"), "--host", "127.0.0.1",
                "--port", str(port), "--tls-cert", str(tls / "mosquitto.pem"), "--tls-key",
                str(tls / "mosquitto.key"), "--tls-ca", str(tls / "ca.pem"), "--cert-auth",
                "--persistence-dir", str(d / "db"), *extra)


def _serves_mtls(d: Path, port: int) -> None:
    """Start Mosquitto as root with the generated config; a TLS handshake with a client certificate from the
    cluster CA must complete (Mosquitto could read its key), and it must run as the configured account."""
    from coordinator.pki import CertificateAuthority, CertRole, key_pem, make_csr, new_key

    ca, _ = CertificateAuthority.load_or_create(d / "data" / "coordinator" / "pki", "unused", time.time())
    key = new_key()
    issued = ca.issue(make_csr(key, "dashboard@local"), identity="dashboard@local", role=CertRole.DASHBOARD,
                      now=time.time(), lifetime_s=3600)
    (d / "client.key").write_bytes(key_pem(key))
    (d / "client.pem").write_bytes(issued.cert_pem)
    binary = require_binary("mosquitto")
    proc = subprocess.Popen([binary, "-c", str(d / "conf" / "mosquitto.conf")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        ctx = ssl.create_default_context(cafile=str(d / "tls" / "ca.pem"))
        ctx.load_cert_chain(str(d / "client.pem"), str(d / "client.key"))
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"mosquitto exited: {proc.communicate()[0]}"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    assert tls.version() is not None
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        import psutil

        assert psutil.Process(proc.pid).username() == "mosquitto"
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_root_default_drops_to_mosquitto_and_refuses_a_key_it_cannot_read(workdir: Path) -> None:
    d, port = workdir, free_port()
    made = _cli("pki", "issue-server", "--create-ca", "--data-dir", str(d / "data"), "--name", "mosquitto",
                "--san", "127.0.0.1", "--out", str(d / "tls"))
    assert made.returncode == 0, made.stderr
    (d / "auth").mkdir()
    (d / "auth" / "roles.toml").write_text('[users]\n"dashboard@local" = "dashboard"\n')
    refused = _config(d, port)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"user mosquitto cannot read {(d / 'tls' / 'mosquitto.key').resolve()}" in refused.stderr
    assert "user mosquitto" in (d / "conf" / "mosquitto.conf").read_text().splitlines()

    # what docs/install.md says to do: the TLS files are the broker's
    subprocess.run(["chown", "-R", "mosquitto:", str(d / "tls")], check=True)
    done = _config(d, port)
    assert done.returncode == 0, done.stdout + done.stderr
    import pwd

    uid = pwd.getpwnam("mosquitto").pw_uid
    for written in (d / "conf" / "mosquitto.conf", d / "conf" / "acl", d / "db"):
        assert written.stat().st_uid == uid, f"{written} was not handed to mosquitto"
    assert oct((d / "conf" / "acl").stat().st_mode & 0o777) == "0o600"
    _serves_mtls(d, port)


def test_user_root_keeps_roots_files(workdir: Path) -> None:
    d, port = workdir, free_port()
    assert _cli("pki", "issue-server", "--create-ca", "--data-dir", str(d / "data"), "--name", "mosquitto",
                "--san", "127.0.0.1", "--out", str(d / "tls")).returncode == 0
    (d / "auth").mkdir()
    (d / "auth" / "roles.toml").write_text('[users]\n"dashboard@local" = "dashboard"\n')
    done = _config(d, port, "--user", "root")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "user root" in (d / "conf" / "mosquitto.conf").read_text().splitlines()
    assert (d / "conf" / "acl").stat().st_uid == os.geteuid() == 0

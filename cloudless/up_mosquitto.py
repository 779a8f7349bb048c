"""`cloudless up --mosquitto`: Mosquitto, when installed, as the local cluster's broker instead of the embedded one.

The embedded broker holds about 2,000 nodes on a 2-core machine (docs/benchmarks.md, "Embedded broker at fleet
size"); Mosquitto holds 5,000 mutual-TLS clients in a few % of a core (issue 17). `up --mosquitto` runs it exactly
as the production recipe in docs/install.md does, with what `up` already made: the config from `cloudless broker
mosquitto-config --cert-auth` (broker.mosquitto), the embedded broker's server certificate from the cluster CA
(DATA_DIR/broker-tls, renewed at every start, naming the advertised addresses), the cluster CA as the client CA,
the coordinator's CRL and the same roles (DATA_DIR/broker-auth/roles.toml). The coordinator, the relay and the
agents dial it exactly as they dial the embedded broker.

Mosquitto runs as the user who runs `up` (its `user` line names that user: a root `up` keeps root, like its other
children; the data dir is 0700 and the keys 0600, which no other account could read). Its files live in
DATA_DIR/mosquitto (config, ACL, persistence: retained state survives a restart of `up`). `up` reloads it (SIGHUP)
when the coordinator rewrites the CRL, so a revoked node is refused at once, as by the embedded broker; Ctrl-C on
`up` stops it, and `cloudless down` stops one that outlived its `up` (DATA_DIR/mosquitto/pid).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

INSTALL_HINT = ("install it (Debian/Ubuntu/Raspberry Pi OS: apt install mosquitto; Fedora: dnf install mosquitto; "
                "Arch: pacman -S mosquitto; macOS: brew install mosquitto), or leave out --mosquitto for the "
                "embedded broker")
MIN_VERSION = (2, 0)
PID_FILE = "pid"


def mosquitto_dir(data_dir: Path) -> Path:
    return data_dir / "mosquitto"


def find_binary() -> str | None:
    """Mosquitto's path: on PATH, or in the sbin directories a non-root PATH leaves out (Debian: /usr/sbin)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for d in ("/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin"):
        if os.access(f"{d}/mosquitto", os.X_OK):
            return f"{d}/mosquitto"
    return None


def parse_version(text: str) -> tuple[int, ...] | None:
    """(2, 0, 11) from `mosquitto -h`'s first line ("mosquitto version 2.0.11"), None if there is none."""
    m = re.search(r"mosquitto version (\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(g) for g in m.groups() if g is not None) if m else None


def problem(binary: str | None, port: int) -> str | None:
    """Why `up --mosquitto` cannot run here, or None."""
    if binary is None:
        return f"Mosquitto is not installed: {INSTALL_HINT}"
    try:
        out = subprocess.run([binary, "-h"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {binary}: {exc}"
    found = parse_version(out.stdout + out.stderr)
    if found is None or found[:2] < MIN_VERSION:
        shown = ".".join(map(str, found)) if found else "unknown"
        return f"{binary} is version {shown}; Cloudless needs Mosquitto 2.0 or later ({INSTALL_HINT})"
    if port == 0:
        return "--mqtt-port 0 (any free port) works only with the embedded broker: give Mosquitto a port"
    return None


def configure(data_dir: Path, host: str, port: int, pki: dict[str, Path]) -> Path:
    """Write Mosquitto's files for this cluster (and the CA's CRL when the coordinator has not written one yet:
    Mosquitto will not start with a `crlfile` that does not exist). Returns the config's path."""
    from broker import mosquitto
    from broker.auth import AuthFiles
    from broker.embedded import TlsSettings
    from broker.files import write_private
    from coordinator.identity import CRL_FILE
    from coordinator.pki import CertificateAuthority

    crl = pki["ca"].parent / CRL_FILE
    if not crl.exists():
        ca, _ = CertificateAuthority.load_or_create(pki["ca"].parent, "unused", time.time())
        write_private(crl, ca.crl([], time.time()), mode=0o644)
    out = mosquitto_dir(data_dir)
    settings = mosquitto.MosquittoSettings(
        out_dir=out, host=host, port=port, persistence_dir=out / "data", cert_auth=True, crl_file=crl,
        tls=TlsSettings(pki["server_cert"], pki["server_key"], pki["ca"], require_client_cert=True),
        run_as_user=pwd.getpwuid(os.geteuid()).pw_name,
    )
    mosquitto.write(settings, AuthFiles.load(data_dir / "broker-auth", require_passwords=False))
    return out / mosquitto.CONF_FILE


def dial_url(host: str, port: int) -> str:
    """How this machine dials a listener on `host`: a wildcard is reached at loopback."""
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    return f"mqtts://[{host}]:{port}" if ":" in host else f"mqtts://{host}:{port}"


def start(binary: str, conf: Path, host: str, port: int, *, timeout_s: float) -> subprocess.Popen[str]:
    """Start Mosquitto; returns once it listens on `port` (its own "running" line is logged at a level the config
    leaves out, and a probe connection would be logged as a failed TLS handshake: its sockets are looked at
    instead). Its pid and start time go to DATA_DIR/mosquitto/pid for `cloudless down`."""
    import psutil

    from broker.listeners import raise_nofile_limit

    # one descriptor per device: a stock soft limit of 1,024 would cap the fleet there (Mosquitto does not raise
    # its own; its systemd unit sets LimitNOFILE). Raised in `up` itself, which every child inherits.
    raise_nofile_limit()
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    deadline = time.monotonic() + timeout_s
    while not _listening(proc.pid, port):
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise RuntimeError(f"mosquitto exited with code {proc.returncode} before it was ready:\n{out.strip()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"mosquitto was not listening on {host}:{port} within {timeout_s:.0f}s")
        time.sleep(0.1)
    (conf.parent / PID_FILE).write_text(f"{proc.pid} {psutil.Process(proc.pid).create_time()}\n")
    return proc


def _listening(pid: int, port: int) -> bool:
    import psutil

    try:
        proc = psutil.Process(pid)
        sockets = proc.net_connections("tcp") if hasattr(proc, "net_connections") else proc.connections("tcp")
    except psutil.Error:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in sockets)


def forget(data_dir: Path) -> None:
    """The pid file of a Mosquitto that was stopped."""
    (mosquitto_dir(data_dir) / PID_FILE).unlink(missing_ok=True)


class CrlWatch:
    """Whether the CRL file changed since the last look (the coordinator rewrites it on every revocation)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen = self._stamp()

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_ino)

    def changed(self) -> bool:
        now = self._stamp()
        if now == self._seen:
            return False
        self._seen = now
        return True


def reload(proc: subprocess.Popen[str]) -> None:
    """SIGHUP: Mosquitto re-reads its CRL (and ACL) without dropping a connection."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGHUP)


def left_running(data_dir: Path) -> int | None:
    """The pid of this data dir's Mosquitto when one is still running (its recorded pid is still that process, by
    start time and name: a reused pid is someone else's), else None."""
    import psutil

    try:
        pid_text, created = (mosquitto_dir(data_dir) / PID_FILE).read_text().split()
        proc = psutil.Process(int(pid_text))
        if abs(proc.create_time() - float(created)) < 1.0 and "mosquitto" in proc.name():
            return int(proc.pid)
    except (OSError, ValueError, psutil.Error):
        pass
    return None


def stop_left_running(data_dir: Path, grace_s: float) -> int | None:
    """Stop this data dir's Mosquitto left running (SIGTERM, SIGKILL after `grace_s`); its pid, or None."""
    import psutil

    pid = left_running(data_dir)
    if pid is None:
        forget(data_dir)
        return None
    try:
        proc = psutil.Process(pid)
        proc.terminate()
        proc.wait(timeout=grace_s)
    except psutil.TimeoutExpired:
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).kill()
    except psutil.Error:
        pass
    forget(data_dir)
    return pid

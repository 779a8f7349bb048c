"""Which cluster this agent serves: a short id that every container, process instance and secrets path carries.

Two clusters on one machine (two `cloudless up` in different data dirs, or an agent of each) share one Podman and
one tmpfs, and may both have a node called `local`: their runtimes tell their instances apart by this id, never by
the node name alone (issue 16). The id is the first `ID_HEX` hex digits of the SHA-256 fingerprint of the cluster
CA the agent enrolled with — the fingerprint its enrolment token pinned, so an admin can match the two. An agent on
password authentication has no CA of the cluster: its broker's address stands in (one broker, one cluster).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from edge_agent.atomic import atomic_write
from edge_agent.errors import ConfigError

ID_HEX = 12


def of_ca(pem: bytes) -> str:
    """The id of the cluster whose CA certificate is `pem` (the first certificate in it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise ConfigError(f"the cluster CA certificate does not parse: {exc}") from None
    return cert.fingerprint(hashes.SHA256()).hex()[:ID_HEX]


def of_ca_file(path: Path) -> str:
    try:
        return of_ca(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read the cluster CA {path}: {exc.strerror}") from None


def of_broker(host: str, port: int) -> str:
    """Without an enrolled CA (password authentication): the id of the broker at host:port."""
    return hashlib.sha256(f"mqtt-broker {host.lower()}:{port}".encode()).hexdigest()[:ID_HEX]


def remembered(data_dir: Path, computed: str) -> str:
    """The id this agent used first, kept in its data dir: a broker address that changes later (an IP replaced by a
    name, a new port) must not orphan every instance the agent labelled before (they would never be adopted nor
    removed, and duplicates would be started)."""
    path = data_dir / "cluster-id"
    try:
        kept = path.read_text().strip()
    except OSError:
        kept = ""
    if len(kept) == ID_HEX and all(c in "0123456789abcdef" for c in kept):
        return kept
    data_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(path, (computed + "\n").encode(), 0o600)
    return computed

"""Agent settings, parsed once at startup into a frozen dataclass and passed down (STYLE §6)."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from broker.client import Secret
from broker.wire import valid_id
from edge_agent.errors import ConfigError
from edge_agent.reconcile import RestartConfig
from edge_agent.storage_plan import ScrubSettings


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool


@dataclass(frozen=True)
class AgentConfig:
    broker: BrokerAddress | None  # None: the broker named at enrolment
    data_dir: Path
    node_id: str
    username: str
    cluster_id: str = ""  # `edge_agent.cluster`: set at start-up from the enrolled CA (or the broker's address)
    password: Secret | None = None
    profile: str = "auto"
    runtime: str = "auto"  # auto | podman | process
    labels: dict[str, str] = field(default_factory=dict)
    zone: str = ""
    podman_socket: Path | None = None
    containers_conf: Path | None = None
    heartbeat_interval_s: float | None = None  # sampling tick; None: the profile's
    heartbeat_max_interval_s: float | None = None  # None: the profile's `[link]` (or heartbeat_interval_s if set)
    reconcile_interval_s: float = 2.0
    probe_tick_s: float = 0.5
    stop_timeout_s: float = 10.0
    keepalive_s: int | None = None  # MQTT keep-alive; None: the profile's `[link] keepalive_s`
    restart: RestartConfig = field(default_factory=RestartConfig)
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    sensor_file: Path | None = None
    token: Secret | None = None  # enrolment token (first start or re-enrolment)
    metrics_listen: str = "auto"  # HOST:PORT, off, or auto (loopback; off on phones)
    version: str = "0+unknown"  # the agent's version, handed down by the `cloudless` command (reported in facts)
    overlay: bool = True  # run the QUIC overlay (edge_agent.overlay) when aioquic and the node certificate allow
    overlay_port: int = 41641  # its UDP port (0: any free one)
    storage_quota_bytes: int | None = None  # --storage-quota: bytes offered to the object store (None: the profile's)
    storage_dir: Path | None = None  # --storage-dir: where the chunks live (None: DATA/chunks)

    @property
    def chunks_dir(self) -> Path:
        return self.storage_dir if self.storage_dir is not None else self.data_dir / "chunks"


@dataclass(frozen=True, slots=True)
class StorageSettings:
    """What the agent's storage is asked for (edge_agent.storage opens it)."""

    root: Path  # the chunks' directory (--storage-dir, default DATA/chunks)
    state_file: Path  # the scrub position and the corrupt ledger
    quota_flag: int | None  # --storage-quota (None: the profile's)
    profile_quota: int
    profile: str
    scrub: ScrubSettings = field(default_factory=ScrubSettings)

    @property
    def wanted(self) -> bool:
        """Whether any storage is asked for (a quota above 0 from the flag or the profile)."""
        return bool(self.quota_flag) if self.quota_flag is not None else self.profile_quota > 0


def parse_broker_url(url: str) -> BrokerAddress:
    parts = urlsplit(url)
    if not url:
        raise ConfigError("no broker: give --broker mqtts://HOST:PORT (the enrolment did not name one)")
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ConfigError(f"--broker: expected mqtt://HOST:PORT or mqtts://HOST:PORT, got {url!r}")
    try:
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    except ValueError:
        raise ConfigError(f"--broker: bad port in {url!r}") from None
    return BrokerAddress(parts.hostname, port, parts.scheme == "mqtts")


def parse_storage_quota(text: str | None) -> int | None:
    """`--storage-quota`: bytes, or a size such as 20G, 500MiB, 1.5GiB (firmware_profiles.units.parse_size); 0 offers
    no storage; None (not given): the profile's default."""
    if text is None:
        return None
    from firmware_profiles.errors import QuantityError
    from firmware_profiles.units import parse_size

    try:
        return parse_size(text)
    except QuantityError as exc:
        raise ConfigError(f"--storage-quota: {exc} (e.g. 20G, 500MiB, 1.5GiB, or 0 to offer no storage)") from None


def parse_labels(text: str) -> dict[str, str]:
    """`k=v,k2=v2` -> dict; keys and values are bounded and may not contain ',' or '='."""
    labels: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key or len(key) > 128 or len(value) > 128:
            raise ConfigError(f"--labels: expected k=v[,k=v...] with keys/values up to 128 chars, got {item!r}")
        labels[key.strip()] = value.strip()
    if len(labels) > 64:
        raise ConfigError("--labels: at most 64 labels")
    return labels


def default_node_id() -> str:
    """A node id from the host name, reduced to the wire's id syntax."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()).strip(".-_")[:63] or "node"
    return name if valid_id(name) else "node"


def resolve_node_id(data_dir: Path, requested: str | None) -> str:
    """The node id is chosen once and kept in DATA_DIR/node-id; a different --node-id later is an error."""
    path = data_dir / "node-id"
    stored = path.read_text().strip() if path.exists() else None
    if requested is not None and not valid_id(requested):
        raise ConfigError(f"--node-id: {requested!r} is not valid (1-63 letters, digits, '.', '_', '-')")
    if stored and requested and stored != requested:
        raise ConfigError(f"--node-id {requested!r} but {path} says {stored!r}; use another --data-dir per node")
    node_id = stored or requested or default_node_id()
    if not valid_id(node_id):
        raise ConfigError(f"{path}: {node_id!r} is not a valid node id; fix or delete the file")
    if not stored:
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(node_id + "\n")
    return node_id

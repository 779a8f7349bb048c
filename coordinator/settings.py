"""`cloudless coordinator`'s settings, parsed once at start-up into a frozen value (the daemon builds from it).

`Settings.parse(args, environ)` checks every flag and reads what the flags point at (the broker password file,
the API token file, admission policy files); `environ` is passed in (the secrets master key may come from
CLOUDLESS_SECRETS_KEY). A bad flag or file is a SettingsError naming it (the daemon exits 2).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from broker.client import Secret
from broker.wire import RelayInfo, valid_id
from coordinator.credentials import load_token_digests
from coordinator.errors import CoordinatorError
from coordinator.membership import MembershipConfig
from coordinator.overlay import parse_relay
from coordinator.policy import Policy, load_policies
from coordinator.secrets import AuditRetention, KeySource, parse_duration


class CoordinatorConfigError(CoordinatorError):
    pass


@dataclass(frozen=True, slots=True)
class Broker:
    host: str
    port: int
    url: str  # as given (--broker)


@dataclass(frozen=True, slots=True)
class Settings:
    coordinator_id: str
    broker: Broker
    api_host: str
    api_port: int
    data_dir: Path
    username: str
    password: Secret | None
    tokens: Mapping[str, tuple[str, str]]  # sha256 of each API token -> (name, role)
    store: str  # "sqlite" or an etcd URL list
    etcd_ca: Path | None
    etcd_cert: Path | None
    etcd_key: Path | None
    lease_ttl_s: int
    pki: bool
    advertise: str | None  # comma-joined URLs: devices try them in order; the first is this coordinator's own

    @property
    def advertised_url(self) -> str | None:
        """The first advertised URL: where followers forward writes, what the presence and leader records say."""
        return self.advertise.split(",", 1)[0] if self.advertise else None
    node_broker: str
    api_hostnames: tuple[str, ...]
    cert_lifetime_s: float
    membership: MembershipConfig
    policies: tuple[Policy, ...] | None
    key_source: KeySource
    audit_retention: AuditRetention
    version: str = "0+unknown"
    relays: tuple[RelayInfo, ...] = ()

    @property
    def pki_dir(self) -> Path:
        return self.data_dir / "pki"

    @property
    def tls_hosts(self) -> list[str]:
        """The names the API's certificate is issued for."""
        return [self.api_host, *self.api_hostnames]

    @classmethod
    def parse(cls, args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
        if not valid_id(args.id):
            raise CoordinatorConfigError(f"--id: {args.id!r} is not a valid id")
        broker = _broker(args.broker)
        host, port = _hostport(args.api)
        data_dir: Path = args.data_dir.resolve()
        return cls(  # evaluated in this order: the first bad flag is the one reported
            coordinator_id=args.id, broker=broker, api_host=host, api_port=port, data_dir=data_dir,
            username=args.username or f"coordinator@{args.id}", password=_password(args.password_file),
            tokens=load_token_digests(data_dir), store=_store(args.store, args.lease_ttl),
            etcd_ca=args.etcd_ca, etcd_cert=args.etcd_cert, etcd_key=args.etcd_key, lease_ttl_s=args.lease_ttl,
            pki=args.pki, advertise=_advertise(args.advertise), node_broker=args.node_broker or args.broker,
            api_hostnames=tuple(args.api_hostname), cert_lifetime_s=args.cert_lifetime,
            membership=MembershipConfig(heartbeat_ttl_s=args.heartbeat_ttl, lost_after_s=args.lost_after),
            policies=_policies(args.policy),
            key_source=KeySource.from_environ(args.secrets_key_file or data_dir / "secrets.key", environ),
            audit_retention=_retention(args.secrets_audit_max_age, args.secrets_audit_max_records),
            version=getattr(args, "version", "0+unknown"), relays=_relays(getattr(args, "relay", [])))


def _advertise(text: str | None) -> str | None:
    """`--advertise URL[,URL...]`: each an http(s) URL with a host; returned as given (comma-joined, no spaces)."""
    if text is None:
        return None
    urls = [u.strip() for u in text.split(",") if u.strip()]
    if not urls:
        raise CoordinatorConfigError("--advertise: give at least one URL (https://HOST:PORT[,https://HOST2:PORT])")
    for url in urls:
        parsed = urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise CoordinatorConfigError(f"--advertise: {url!r} is not an http(s) URL with a host "
                                         "(e.g. https://192.168.1.10:8470)")
    return ",".join(urls)


def _relays(texts: list[str]) -> tuple[RelayInfo, ...]:
    relays = []
    for text in texts:
        try:
            relays.append(parse_relay(text))
        except ValueError as exc:
            raise CoordinatorConfigError(str(exc)) from None
    if len({r.relay_id for r in relays}) != len(relays):
        raise CoordinatorConfigError("--relay: the same relay is named twice")
    if len(relays) > 16:
        raise CoordinatorConfigError("--relay: at most 16 relays")
    return tuple(relays)


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise CoordinatorConfigError(f"--api: expected HOST:PORT, got {text!r}")
    return host or "127.0.0.1", int(port)


def _broker(url: str) -> Broker:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise CoordinatorConfigError(f"--broker: expected mqtt://HOST:PORT, got {url!r}")
    return Broker(parts.hostname, parts.port or (8883 if parts.scheme == "mqtts" else 1883), url)


def _password(path: Path | None) -> Secret | None:
    if path is None:
        return None
    try:
        return Secret(path.read_text().strip())
    except OSError as exc:
        raise CoordinatorConfigError(f"--password-file: {exc.strerror}") from None


def _store(store: str, lease_ttl: int) -> str:
    if store == "sqlite":
        return store
    if not store.startswith(("etcd://", "etcds://")):
        raise CoordinatorConfigError(f"--store: expected sqlite or etcd://HOST:PORT[,HOST:PORT...], got {store!r}")
    if lease_ttl < 1 or lease_ttl > 60:
        raise CoordinatorConfigError("--lease-ttl: 1..60 seconds")
    return store


def _policies(files: list[Path]) -> tuple[Policy, ...] | None:
    if not files:
        return None
    import yaml

    loaded: tuple[Policy, ...] = ()
    for path in files:
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except (OSError, yaml.YAMLError) as exc:
            raise CoordinatorConfigError(f"--policy {path}: {exc}") from None
        loaded += load_policies(docs, source=str(path), known=loaded)
    return loaded


def _retention(max_age: str, max_records: int) -> AuditRetention:
    try:
        age = None if max_age in ("none", "0") else parse_duration(max_age)
        return AuditRetention(max_age_s=age, max_count=max_records or None)
    except ValueError as exc:
        raise CoordinatorConfigError(f"--secrets-audit-max-age/--secrets-audit-max-records: {exc}") from None

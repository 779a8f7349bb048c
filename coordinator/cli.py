"""`cloudless coordinator`: run a coordinator (REST API + scheduler + reconciler) against a broker."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from coordinator.errors import CoordinatorError

if TYPE_CHECKING:
    from broker.client import MqttClient

log = logging.getLogger("cloudless.coordinator")
TOKENS_FILE = "api-tokens.json"


class CoordinatorConfigError(CoordinatorError):
    pass


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "coordinator", help="run a coordinator (REST API, scheduler, reconciler)",
        description="Run a Cloudless coordinator: it keeps cluster state in its data dir, serves the REST API, "
        "schedules replicas onto nodes and publishes each node's desired state over MQTT.",
    )
    p.add_argument("--broker", required=True, metavar="URL", help="mqtt://HOST:PORT")
    p.add_argument("--api", default="127.0.0.1:8470", metavar="HOST:PORT",
                   help="where the REST API listens (default 127.0.0.1:8470; port 0 picks a free one)")
    p.add_argument("--data-dir", type=Path, required=True, help="state database, API tokens")
    p.add_argument("--id", default="main", help="this coordinator's id (default main)")
    p.add_argument("--username", default=None, help="broker username (default coordinator@<id>)")
    p.add_argument("--password-file", type=Path, default=None, help="file holding the broker password")
    p.add_argument("--lost-after", type=float, default=30.0, metavar="SECONDS",
                   help="grace period before replicas of a node that went offline cleanly are replaced "
                   "(default 30; a crashed node, seen by its last will, is replaced within 0.5 s — unless many "
                   "nodes willed at once or this coordinator lost the broker too: then they get this grace period)")
    p.add_argument("--heartbeat-ttl", type=float, default=45.0, metavar="SECONDS",
                   help="silence after which a node is suspect (default 45)")
    p.add_argument("--pki", action="store_true",
                   help="run the cluster CA (DATA_DIR/pki, created once): HTTPS API, device enrolment with tokens, "
                   "node certificates; the coordinator then dials the broker with its own client certificate")
    p.add_argument("--advertise", default=None, metavar="URL",
                   help="this coordinator's API URL as others reach it: what devices enrol at and, with "
                   "replicated coordinators, where followers forward writes (default https://API-HOST:PORT)")
    p.add_argument("--node-broker", default=None, metavar="URL",
                   help="the broker URL enrolled devices are told to dial (default: --broker)")
    p.add_argument("--api-hostname", action="append", default=[], metavar="NAME",
                   help="extra names/IPs for the API's TLS certificate (repeatable)")
    p.add_argument("--policy", type=Path, action="append", default=[], metavar="FILE",
                   help="admission policy file (YAML, repeatable); replaces the secure default set")
    p.add_argument("--cert-lifetime", type=float, default=3 * 86400, metavar="SECONDS",
                   help="node certificate lifetime (default 3 days; agents renew at 2/3)")
    p.add_argument("--store", default="sqlite", metavar="sqlite|etcd://HOST:PORT,...",
                   help="where cluster state lives: sqlite (default: DATA_DIR/state.db, one coordinator) or an etcd "
                   "cluster (replicated coordinators: leader election, followers forward writes; docs/ha.md)")
    p.add_argument("--etcd-ca", type=Path, default=None, help="CA bundle for etcd's TLS (turns TLS on)")
    p.add_argument("--etcd-cert", type=Path, default=None, help="client certificate for etcd")
    p.add_argument("--etcd-key", type=Path, default=None, help="client key for etcd")
    p.add_argument("--lease-ttl", type=int, default=2, metavar="SECONDS",
                   help="leader lease TTL with etcd (default 2: a killed leader is replaced within ~2-3 s)")
    p.add_argument("--secrets-key-file", type=Path, default=None, metavar="PATH",
                   help="the secrets master key file (default DATA_DIR/secrets.key, created 0600 on the first start: "
                   "back it up; CLOUDLESS_SECRETS_KEY overrides it). With secrets stored and no key the coordinator "
                   "refuses to start")
    p.add_argument("--secrets-audit-max-age", default="90d", metavar="DURATION",
                   help="keep secrets audit records this long (default 90d; 'none': no age limit)")
    p.add_argument("--secrets-audit-max-records", type=int, default=100_000, metavar="N",
                   help="keep at most the newest N secrets audit records (default 100000; 0: no count limit)")
    p.set_defaults(func=_cmd_coordinator)


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise CoordinatorConfigError(f"--api: expected HOST:PORT, got {text!r}")
    return host or "127.0.0.1", int(port)


def load_token_digests(data_dir: Path) -> dict[str, tuple[str, str]]:
    """sha256 digest -> (name, role); role is admin (default) or viewer."""
    path = data_dir / TOKENS_FILE
    try:
        doc = json.loads(path.read_text())
        tokens = {t["sha256"]: (t["name"], t.get("role", "admin")) for t in doc["tokens"]}
        bad = [name for name, role in tokens.values() if role not in ("admin", "viewer")]
        if bad:
            raise CoordinatorConfigError(f"{path}: token {bad[0]!r}: role must be admin or viewer")
        return tokens
    except FileNotFoundError:
        raise CoordinatorConfigError(f"{path} is missing: create an admin token with `cloudless up` "
                                     "(or write {\"tokens\": [{\"name\": ..., \"sha256\": ...}]})") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise CoordinatorConfigError(f"{path}: not a valid token file ({exc})") from None


def write_token_digests(data_dir: Path, tokens: dict[str, str], roles: dict[str, str] | None = None) -> None:
    """name -> raw token (role per name, default admin); only the sha256 digests are stored (0600)."""
    from coordinator.http import token_digest

    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / TOKENS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    tmp.chmod(0o600)
    tmp.write_text(json.dumps({"tokens": [{"name": n, "sha256": token_digest(t), "role": (roles or {}).get(n, "admin")}
                                          for n, t in tokens.items()]}))
    tmp.replace(path)


def _pki_files(identity, pki_dir: Path, coord_id: str, hosts: list[str]):  # type: ignore[no-untyped-def]
    """This coordinator's MQTT client certificate and the API's TLS context, issued by the cluster CA."""
    import ssl

    from broker.client import ClientTls

    name = f"coordinator@{coord_id}"
    identity.ensure_own_certs(coord_id, hosts, server=True)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki_dir / "ca.pem"))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(pki_dir / "api.pem"), str(pki_dir / "api.key"))
    ctx.verify_mode = ssl.CERT_OPTIONAL  # a client certificate is asked for (renewal) but not required (admins)
    tls = ClientTls(ca_file=pki_dir / "ca.pem", cert_file=pki_dir / f"{name}.pem", key_file=pki_dir / f"{name}.key",
                    server_hostname=None)
    return tls, ctx


async def renew_own_certificates(identity, coord_id: str, hosts: list[str], *,  # type: ignore[no-untyped-def]
                                 mqtt: MqttClient, api_ssl: ssl.SSLContext | None,
                                 forward_ssl: ssl.SSLContext | None, unloaded: set[str] | None = None) -> set[str]:
    """Issue this coordinator's own certificates again when due and load them where they are used: the MQTT client
    (next connect), the API server (next handshake), the follower's forwarding client. Returns what was renewed.
    `unloaded` (kept by the caller between calls) remembers renewed certificates not loaded yet, to try again."""
    pending = unloaded if unloaded is not None else set()
    renewed: set[str] = identity.ensure_own_certs(coord_id, hosts)
    for what in sorted(renewed):
        log.warning("renewed this coordinator's own %s certificate", "MQTT client" if what == "client" else "API")
    pki, name = identity.dir, f"coordinator@{coord_id}"
    client = (str(pki / f"{name}.pem"), str(pki / f"{name}.key"))
    loaders: dict[str, Callable[[], None]] = {"client:mqtt": mqtt.reload_certificate}
    if forward_ssl is not None:
        loaders["client:forward"] = lambda: forward_ssl.load_cert_chain(*client)
    if api_ssl is not None:
        loaders["server:api"] = lambda: api_ssl.load_cert_chain(str(pki / "api.pem"), str(pki / "api.key"))
    pending |= {item for item in loaders if item.split(":")[0] in renewed}
    failed = []
    for item in sorted(pending):
        try:
            loaders[item]()
            pending.discard(item)
        except Exception as exc:  # each use on its own: one that fails is tried again next time
            failed.append(f"{item}: {exc}")
    if failed:
        raise CoordinatorError("renewed certificates not loaded yet (retrying in 6 hours): " + "; ".join(failed))
    return renewed


def _policies(files: list[Path]):  # type: ignore[no-untyped-def]
    if not files:
        return None
    import yaml

    from coordinator.policy import Policy, load_policies

    loaded: tuple[Policy, ...] = ()
    for path in files:
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except (OSError, yaml.YAMLError) as exc:
            raise CoordinatorConfigError(f"--policy {path}: {exc}") from None
        loaded += load_policies(docs, source=str(path), known=loaded)
    return loaded


async def _open_secrets(args: argparse.Namespace, store, data_dir: Path):  # type: ignore[no-untyped-def]
    """The secrets service and where its master key comes from; MasterKeyError (exit 2) if the key is missing
    while the store holds secrets, or does not fit them."""
    from coordinator.secrets import (
        AuditRetention,
        KeySource,
        SecretsService,
        masterkey,
        parse_duration,
        secrets_present,
    )
    from coordinator.secrets.service import KEYS

    try:
        max_age = None if args.secrets_audit_max_age in ("none", "0") else parse_duration(args.secrets_audit_max_age)
        retention = AuditRetention(max_age_s=max_age, max_count=args.secrets_audit_max_records or None)
    except ValueError as exc:
        raise CoordinatorConfigError(f"--secrets-audit-max-age/--secrets-audit-max-records: {exc}") from None
    source = KeySource.from_environ(args.secrets_key_file or data_dir / "secrets.key", os.environ)
    known = {e.key[len(KEYS):] for e in await store.list(KEYS)}  # master keys other coordinators registered
    loaded = masterkey.load(source, secrets_present=await secrets_present(store))
    if known and not known & set(loaded.keyring.keys):
        log.error("the state store knows secrets master key(s) %s, and this coordinator has none of them (%s): "
                  "secrets one of them writes, the other cannot read — give every coordinator the same key file "
                  "(or %s)", ", ".join(sorted(known)), loaded.origin, masterkey.KEY_ENV)
    for warning in loaded.warnings:
        log.warning("%s", warning)
    if loaded.created:
        log.warning("created master key at %s — back it up", loaded.path)
    svc = await SecretsService.open(store, loaded.keyring, clock=time.time, audit_retention=retention)
    log.info("secrets master key from %s (active key %s)", loaded.origin, loaded.keyring.active_id)
    return svc, source


async def _secrets_housekeeping(svc, source, *, flush_s: float = 1.0, prune_s: float = 3600.0,  # type: ignore[no-untyped-def]
                                key_check_s: float = 10.0) -> None:
    """Flush buffered audit records every second, prune hourly, and pick up a key file another coordinator
    rotated (replicated coordinators share it; the keyring must hold the new key before this one leads)."""
    from coordinator.secrets import Caller, Role, masterkey

    loop = asyncio.get_running_loop()
    next_prune, next_key_check, failing = loop.time() + 60.0, loop.time() + key_check_s, False
    stamp = _file_stamp(source.file) if source.env_value is None else None
    while True:
        await asyncio.sleep(flush_s)
        try:
            await svc.flush_audit()
            if loop.time() >= next_prune:
                next_prune = loop.time() + prune_s
                audit, tokens = await svc.prune()
                if audit or tokens:
                    log.info("secrets housekeeping: pruned %d audit record(s), %d expired token record(s)",
                             audit, tokens)
            if stamp is not None and loop.time() >= next_key_check:
                next_key_check = loop.time() + key_check_s
                now = _file_stamp(source.file)
                if now != stamp:
                    stamp = now
                    keyring = await asyncio.to_thread(masterkey.read_file, source.file)
                    if keyring != svc.keyring:
                        rotation = await svc.rotate_master_key(keyring, caller=Caller("coordinator", "key-file",
                                                                                      Role.ADMIN))
                        log.warning("secrets master key file changed: now active key %s", rotation.key_id)
            failing = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not failing:  # once per streak: a store outage must not flood the log every second
                log.warning("secrets housekeeping failed (%s: %s); retrying", type(exc).__name__, exc)
            failing = True


def _file_stamp(path: Path | None) -> tuple[int, int, int] | None:
    try:
        st = path.stat() if path is not None else None
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size) if st is not None else None


async def _pki_housekeeping(identity, renew: Callable[[], Awaitable[set[str]]]) -> None:  # type: ignore[no-untyped-def]
    """Every 6 hours: re-sign the CRL (it is valid for 7 days: an expired CRL makes OpenSSL, and so Mosquitto,
    refuse every client), and renew this coordinator's own certificates when due (`renew`)."""
    while True:
        await asyncio.sleep(6 * 3600)
        try:
            await identity.publish_revocations()
        except Exception:
            log.exception("refreshing the CRL failed; retrying in 6 hours")
        try:
            await renew()
        except Exception:
            log.exception("renewing this coordinator's own certificates failed; retrying in 6 hours")


def _cmd_coordinator(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args))
    except CoordinatorError as exc:
        print(f"cloudless coordinator: error: {exc}", flush=True)
        return 2


async def _run(args: argparse.Namespace) -> int:
    from urllib.parse import urlsplit

    from broker import wire
    from broker.client import MqttClient, MqttSettings, Secret, Will
    from broker.wire import CoordinatorStatus, Presence, topics, valid_id
    from coordinator.api import Api, serve
    from coordinator.identity import IdentityConfig, IdentityService
    from coordinator.membership import MembershipConfig
    from coordinator.service import Coordinator, CoordinatorConfig
    from coordinator.store import SqliteStore, Store

    if not valid_id(args.id):
        raise CoordinatorConfigError(f"--id: {args.id!r} is not a valid id")
    from cloudless import logs

    logs.set_identity("coordinator", args.id)
    parts = urlsplit(args.broker)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise CoordinatorConfigError(f"--broker: expected mqtt://HOST:PORT, got {args.broker!r}")
    host, port = _hostport(args.api)
    data_dir: Path = args.data_dir.resolve()
    tokens = load_token_digests(data_dir)
    password = None
    if args.password_file is not None:
        try:
            password = Secret(args.password_file.read_text().strip())
        except OSError as exc:
            raise CoordinatorConfigError(f"--password-file: {exc.strerror}") from None
    elector = None
    store: Store
    if args.store == "sqlite":
        store = SqliteStore(data_dir / "state.db")
    elif args.store.startswith(("etcd://", "etcds://")):
        from coordinator.leadership import Elector
        from coordinator.store.etcd import open_etcd_store

        if args.lease_ttl < 1 or args.lease_ttl > 60:
            raise CoordinatorConfigError("--lease-ttl: 1..60 seconds")
        try:
            etcd = await open_etcd_store(args.store, ca=args.etcd_ca, cert=args.etcd_cert, key=args.etcd_key)
        except ValueError as exc:
            raise CoordinatorConfigError(f"--store: {exc}") from None
        store = etcd
        elector = Elector(etcd, candidate_id=args.id, ttl_s=args.lease_ttl)
    else:
        raise CoordinatorConfigError(f"--store: expected sqlite or etcd://HOST:PORT[,HOST:PORT...], got {args.store!r}")
    secrets_svc, key_source = await _open_secrets(args, store, data_dir)
    identity = None
    tls = None
    api_ssl = None
    if args.pki:
        identity = IdentityService(data_dir / "pki", store, IdentityConfig(node_cert_lifetime_s=args.cert_lifetime),
                                   clock=time.time)
        tls, api_ssl = _pki_files(identity, data_dir / "pki", args.id, [host, *args.api_hostname])
    will = CoordinatorStatus(coordinator_id=args.id, presence=Presence.OFFLINE, ts=0.0)
    name = args.username or f"coordinator@{args.id}"
    settings = MqttSettings(host=parts.hostname, port=parts.port or (8883 if parts.scheme == "mqtts" else 1883),
                            client_id=name, username=None if tls else name, password=password, keepalive_s=10,
                            tls=tls, will=Will(topics.coord_status(args.id), wire.encode(will), qos=1, retain=True))
    cfg = CoordinatorConfig(coordinator_id=args.id, membership=MembershipConfig(
        heartbeat_ttl_s=args.heartbeat_ttl, lost_after_s=args.lost_after), policies=_policies(args.policy))
    coord = Coordinator(cfg, store=store, mqtt=MqttClient(settings), leadership=elector, secrets=secrets_svc)
    if elector is not None:  # act on the very next moment leadership changes, not on the next loop tick
        elector.on_change = lambda _event: coord.wake()
    await coord.start()
    housekeeping = asyncio.create_task(_secrets_housekeeping(secrets_svc, key_source))
    refresher = None
    if identity is not None:
        await identity.publish_revocations()
    api = Api(coord, token_digests=tokens, identity=identity)
    api.secrets_key_source = key_source
    if api_ssl is not None and identity is not None:
        # followers forward writes to the leader's HTTPS API, proving with their coordinator certificate that the
        # forwarding headers (who forwarded, for which client) are theirs
        api.forward_ssl = ssl.create_default_context(cafile=str(data_dir / "pki" / "ca.pem"))
        name = f"coordinator@{args.id}"
        api.forward_ssl.load_cert_chain(str(data_dir / "pki" / f"{name}.pem"), str(data_dir / "pki" / f"{name}.key"))
    if identity is not None:
        unloaded: set[str] = set()
        refresher = asyncio.create_task(_pki_housekeeping(identity, lambda: renew_own_certificates(
            identity, args.id, [host, *args.api_hostname], mqtt=coord.mqtt, api_ssl=api_ssl,
            forward_ssl=api.forward_ssl, unloaded=unloaded)))
    runner, bound = await serve(api, host, port, api_ssl)
    scheme = "https" if api_ssl else "http"
    api_url = f"{scheme}://{host}:{bound}"
    if elector is not None:
        from coordinator.leadership import LeaderRecord

        elector.record = LeaderRecord(args.id, args.advertise or api_url)  # where followers forward writes
        elector.start()
    coord.cfg = CoordinatorConfig(**{**cfg.__dict__, "api_url": api_url})
    if identity is not None:
        identity.cfg = IdentityConfig(node_cert_lifetime_s=args.cert_lifetime,
                                      enroll_url=args.advertise or api_url, broker_url=args.node_broker or args.broker)
    print(f"cloudless coordinator: API on {api_url} (epoch {coord.epoch})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    if refresher is not None:
        refresher.cancel()
    await runner.cleanup()  # no more API writes
    housekeeping.cancel()
    try:
        await secrets_svc.flush_audit()
    except Exception as exc:
        log.warning("flushing the secrets audit log at shutdown failed: %s", exc)
    await coord.stop()  # no more rounds: nothing of this process is written after it hands over
    if elector is not None:
        await elector.resign()  # hand over at once instead of waiting for the lease to run out
    await store.close()
    return 0

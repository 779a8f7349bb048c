"""`cloudless coordinator`: run a coordinator (REST API + scheduler + reconciler) against a broker."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coordinator.errors import CoordinatorError

if TYPE_CHECKING:
    from broker.client import ClientTls, MqttClient
    from coordinator.identity import IdentityService
    from coordinator.secrets import SecretsService
    from coordinator.service import Coordinator
    from coordinator.settings import Settings
    from coordinator.store import Store
    from coordinator.store.etcd import EtcdStore

log = logging.getLogger("cloudless.coordinator")


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
    p.add_argument("--advertise", default=None, metavar="URL[,URL...]",
                   help="this coordinator's API URL(s) as others reach it: tokens carry them all (devices try them in "
                   "order); the first is where, with replicated coordinators, followers forward writes, and what "
                   "the coordinator's presence says (default https://API-HOST:PORT)")
    p.add_argument("--node-broker", default=None, metavar="URL",
                   help="the broker URL enrolled devices are told to dial (default: --broker)")
    p.add_argument("--api-hostname", action="append", default=[], metavar="NAME",
                   help="extra names/IPs for the API's TLS certificate (repeatable)")
    p.add_argument("--relay", action="append", default=[], metavar="relay@NAME=HOST:PORT[,HOST:PORT]",
                   help="an overlay relay every node holds a link to (repeat for several; `cloudless relay` runs "
                   "one, `cloudless up` starts one); its addresses are tried in order")
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
    p.add_argument("--s3-port", type=int, default=0, metavar="PORT",
                   help="serve the S3 object store over HTTPS on this port (0, the default: no S3; needs --pki). The "
                   "gateway stores objects as chunks on agents that offer storage (agent --storage-quota)")
    p.add_argument("--s3-host", default=None, metavar="HOST",
                   help="where S3 listens (default: the API's host)")
    p.add_argument("--s3-admin-credentials", type=Path, default=None, metavar="PATH",
                   help="create an admin S3 access key on the first start and write it there (0600 JSON: endpoint, "
                   "accessKeyId, secretAccessKey, region, ca); kept while the key exists (`cloudless up` uses this)")
    p.set_defaults(func=_cmd_coordinator)


@dataclass(frozen=True, slots=True)
class StorageOptions:
    """The S3 gateway's flags (`--s3-*`) and the hook that builds it (handed down by the roof, which may import
    cloudless.gateway: coordinator/ may not)."""

    port: int
    host: str
    admin_credentials: Path | None
    hook: Callable[[StorageParts], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class StorageParts:
    """What the S3 gateway of this coordinator is built from (cloudless.gateway.attach)."""

    coordinator: Coordinator
    store: Store  # unfenced: object metadata commits on a follower too (its transactions are linearizable anyway)
    secrets: SecretsService  # access-key secrets are sealed with its envelope encryption
    identity: IdentityService  # the cluster CA issues the gateway's overlay certificate
    ssl_context: ssl.SSLContext  # the API's server certificate (renewed in place)
    ca_file: Path
    host: str
    port: int
    admin_credentials: Path | None


def _storage_options(args: argparse.Namespace, settings: Settings) -> StorageOptions | None:
    port = getattr(args, "s3_port", 0) or 0
    if port == 0:
        return None
    if not 0 < port < 65536:
        raise CoordinatorError(f"--s3-port: {port} is not a port (1-65535, or 0 for no S3)")
    if not settings.pki:
        raise CoordinatorError("--s3-port needs --pki: S3 is served over HTTPS with the cluster's certificate and "
                               "the gateway joins the overlay with a certificate from the cluster CA")
    hook = getattr(args, "storage_gateway", None)
    if hook is None:
        raise CoordinatorError("--s3-port: this entry point has no S3 gateway (run it as `cloudless coordinator`)")
    return StorageOptions(port, args.s3_host or settings.api_host, args.s3_admin_credentials, hook)


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


async def _open_secrets(settings: Settings, store: Store) -> Any:
    """The secrets service; MasterKeyError (exit 2) if the key is missing while the store holds secrets, or does
    not fit them."""
    from coordinator.secrets import SecretsService, masterkey, secrets_present
    from coordinator.secrets.model import KEYS

    source = settings.key_source
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
    svc = await SecretsService.open(store, loaded.keyring, clock=time.time, audit_retention=settings.audit_retention)
    log.info("secrets master key from %s (active key %s)", loaded.origin, loaded.keyring.active_id)
    return svc


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
    from coordinator.settings import Settings

    try:
        settings = Settings.parse(args, os.environ)
        # the roof (cloudless.cli) passes its log identity down; a caller without it logs without one
        log_identity: Callable[[str, str], None] = getattr(args, "log_identity", None) or (lambda _k, _v: None)
        log_identity("coordinator", settings.coordinator_id)
        from broker.listeners import raise_nofile_limit

        raise_nofile_limit()  # issue 16: connection floods must not find the 1,024-file default
        return asyncio.run(_run(settings, _storage_options(args, settings)))
    except CoordinatorError as exc:
        print(f"cloudless coordinator: error: {exc}", flush=True)
        return 2


async def _open_store(settings: Settings) -> tuple[Store, EtcdStore | None]:
    """The state store (and the same store as etcd, to elect a leader on, when it is one)."""
    from coordinator.store import SqliteStore

    if settings.store == "sqlite":
        return SqliteStore(settings.data_dir / "state.db"), None
    from coordinator.settings import CoordinatorConfigError
    from coordinator.store.etcd import open_etcd_store

    try:
        etcd = await open_etcd_store(settings.store, ca=settings.etcd_ca, cert=settings.etcd_cert,
                                     key=settings.etcd_key)
    except ValueError as exc:
        raise CoordinatorConfigError(f"--store: {exc}") from None
    return etcd, etcd


def _api_url(settings: Settings, port: int) -> str:
    return f"{'https' if settings.pki else 'http'}://{settings.api_host}:{port}"


def _listen(settings: Settings) -> list[socket.socket]:
    """The API's listening sockets, bound before anything is built: its URL (port 0 picks a free port) goes into
    the coordinator's presence, the leader record and enrolment tokens from the start. Every address the host name
    resolves to is bound (`localhost`: IPv4 and IPv6), as aiohttp's TCPSite did; the first one's port is used for
    the others when the port was 0."""
    infos = socket.getaddrinfo(settings.api_host, settings.api_port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _, resolved in dict.fromkeys(infos):
            addr = resolved
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # the IPv4 address has its own socket
            if socks[1:] and settings.api_port == 0:
                addr = (addr[0], socks[0].getsockname()[1], *addr[2:])
            sock.bind(addr)
            sock.listen(128)
            sock.setblocking(False)
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


@dataclass(frozen=True, slots=True)
class _Pki:
    identity: IdentityService
    mqtt_tls: ClientTls
    api_ssl: ssl.SSLContext
    forward_ssl: ssl.SSLContext  # followers forward writes to the leader's HTTPS API with their certificate


def _open_pki(settings: Settings, store: Store, api_url: str) -> _Pki:
    from coordinator.identity import IdentityConfig, IdentityService

    identity = IdentityService(settings.pki_dir, store, IdentityConfig(
        node_cert_lifetime_s=settings.cert_lifetime_s, enroll_url=settings.advertise or api_url,
        broker_url=settings.node_broker), clock=time.time)
    tls, api_ssl = _pki_files(identity, settings.pki_dir, settings.coordinator_id, settings.tls_hosts)
    # followers forward writes to the leader's HTTPS API, proving with their coordinator certificate that the
    # forwarding headers (who forwarded, for which client) are theirs
    forward_ssl = ssl.create_default_context(cafile=str(settings.pki_dir / "ca.pem"))
    name = f"coordinator@{settings.coordinator_id}"
    forward_ssl.load_cert_chain(str(settings.pki_dir / f"{name}.pem"), str(settings.pki_dir / f"{name}.key"))
    return _Pki(identity, tls, api_ssl, forward_ssl)


def _mqtt(settings: Settings, tls: ClientTls | None) -> MqttClient:
    from broker import wire
    from broker.client import MqttClient, MqttSettings, Will
    from broker.wire import CoordinatorStatus, Presence, topics

    will = CoordinatorStatus(coordinator_id=settings.coordinator_id, presence=Presence.OFFLINE, ts=0.0)
    name = settings.username
    return MqttClient(MqttSettings(
        host=settings.broker.host, port=settings.broker.port, client_id=name, username=None if tls else name,
        password=settings.password, keepalive_s=10, tls=tls,
        will=Will(topics.coord_status(settings.coordinator_id), wire.encode(will), qos=1, retain=True)))


async def _start_storage(options: StorageOptions, settings: Settings, coord: Coordinator, store: Store, *,
                         secrets_svc: SecretsService, pki: _Pki) -> tuple[Any, Store | None]:
    """The S3 gateway, on its own unfenced handle of the store when the store is etcd (a second client: the
    coordinator's handle is fenced to its epoch while it leads). (gateway, the extra handle to close)."""
    extra: Store | None = None
    if settings.store != "sqlite":
        from coordinator.store.etcd import open_etcd_store

        extra = await open_etcd_store(settings.store, ca=settings.etcd_ca, cert=settings.etcd_cert,
                                      key=settings.etcd_key)
    parts = StorageParts(coordinator=coord, store=extra or store, secrets=secrets_svc, identity=pki.identity,
                         ssl_context=pki.api_ssl, ca_file=settings.pki_dir / "ca.pem", host=options.host,
                         port=options.port, admin_credentials=options.admin_credentials)
    try:
        return await options.hook(parts), extra
    except BaseException:
        if extra is not None:
            await extra.close()
        raise


async def _run(settings: Settings, storage: StorageOptions | None = None) -> int:
    from coordinator.leadership import Elector
    from coordinator.rest.app import Api, serve_socket
    from coordinator.service import Coordinator, CoordinatorConfig

    store, etcd = await _open_store(settings)
    socks = _listen(settings)
    api_url = _api_url(settings, socks[0].getsockname()[1])
    elector = None if etcd is None else Elector(  # act on the very next moment leadership changes
        etcd, candidate_id=settings.coordinator_id, ttl_s=settings.lease_ttl_s,
        api_url=settings.advertised_url or api_url, on_change=lambda _event: coord.wake())  # where followers forward
    secrets_svc = await _open_secrets(settings, store)
    pki = _open_pki(settings, store, api_url) if settings.pki else None
    cfg = CoordinatorConfig(coordinator_id=settings.coordinator_id, membership=settings.membership,
                            policies=settings.policies, api_url=settings.advertised_url or api_url,
                            relays=settings.relays)
    coord = Coordinator(cfg, store=store, mqtt=_mqtt(settings, pki.mqtt_tls if pki else None), leadership=elector,
                        secrets=secrets_svc)
    await coord.start()
    housekeeping = asyncio.create_task(_secrets_housekeeping(secrets_svc, settings.key_source))
    refresher = None
    if pki is not None:
        await pki.identity.publish_revocations()
        refresher = asyncio.create_task(_pki_housekeeping(pki.identity, _renewer(settings, pki, coord.mqtt)))
    api = Api(coord, token_digests=dict(settings.tokens), identity=pki.identity if pki else None,
              secrets_key_source=settings.key_source, forward_ssl=pki.forward_ssl if pki else None)
    gateway, gateway_store = None, None
    if storage is not None and pki is not None:
        gateway, gateway_store = await _start_storage(storage, settings, coord, store, secrets_svc=secrets_svc,
                                                      pki=pki)
        api.storage = gateway  # the REST API's /v1/storage routes (coordinator.api StorageAdmin)
    runner = await serve_socket(api, socks, pki.api_ssl if pki else None)
    if elector is not None:
        elector.start()
    if gateway is not None:
        print(f"cloudless coordinator: S3 on {gateway.url}", flush=True)
    print(f"cloudless coordinator: API on {api_url} (epoch {coord.epoch})", flush=True)
    await _until_signalled()
    log.info("stopping")
    if refresher is not None:
        refresher.cancel()
    if gateway is not None:
        await gateway.stop()
    if gateway_store is not None:
        await gateway_store.close()
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


def _renewer(settings: Settings, pki: _Pki, mqtt: MqttClient) -> Callable[[], Awaitable[set[str]]]:
    unloaded: set[str] = set()  # renewed certificates not loaded yet: tried again next time

    def renew() -> Awaitable[set[str]]:
        return renew_own_certificates(pki.identity, settings.coordinator_id, settings.tls_hosts, mqtt=mqtt,
                                      api_ssl=pki.api_ssl, forward_ssl=pki.forward_ssl, unloaded=unloaded)
    return renew


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

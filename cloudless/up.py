"""`cloudless up`: a local cluster in one command.

It starts the embedded broker (or, with `--mosquitto`, Mosquitto: cloudless.up_mosquitto), a coordinator and a
local agent, each in its own process, with generated
credentials (secure by default: no anonymous MQTT, a bearer token for the API) kept 0600 in the data dir, and
writes the CLI's config (server URL + admin token) so `cloudless get nodes` works right away. Ctrl-C (or
SIGTERM) stops every child cleanly; the same data dir reuses the same credentials and state.

Other machines join at the advertised addresses (cloudless.advertise: by default this host's LAN addresses and its
name; `--advertise A,B` chooses them; `--local-only` serves this machine alone): the API, the broker and the relay
listen on every IPv4 address, their certificates name the advertised ones, and enrolment tokens carry them all.
This machine's own CLI and agent keep using 127.0.0.1.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloudless.advertise import Exposure

READY_TIMEOUT_S = 30.0
# what the embedded broker was measured to hold with every heartbeat on time on a 2-core machine (docs/benchmarks.md,
# "Embedded broker at fleet size"); `up` says so, and points to --mosquitto above it
EMBEDDED_HOLDS = 2000


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "cloudless"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("up", help="start a local cluster: embedded broker, coordinator and a local agent",
                       description="Start a Cloudless cluster on this machine in the foreground: other machines join "
                       "it at the addresses it advertises (--advertise; --local-only for this machine alone). "
                       "Ctrl-C stops it.")
    p.add_argument("--data-dir", type=Path, default=None,
                   help=f"where state and credentials live (default {default_data_dir()})")
    p.add_argument("--mqtt-port", type=int, default=1883, help="embedded broker port (default 1883)")
    p.add_argument("--mqtt-host", default=None, metavar="ADDR",
                   help="address the embedded broker listens on (default 0.0.0.0 when serving other machines, "
                   "127.0.0.1 with --local-only)")
    p.add_argument("--api-port", type=int, default=8470, help="coordinator REST port (default 8470)")
    p.add_argument("--broker", default=None, metavar="mqtts://HOST:PORT",
                   help="use a broker you run (Mosquitto with `cloudless broker mosquitto-config --cert-auth` and a "
                   "certificate from `cloudless pki issue-server`: docs/install.md) instead of starting the embedded "
                   "one; this machine and every device dial it at this URL")
    p.add_argument("--mosquitto", action="store_true",
                   help=f"run Mosquitto (installed: 2.0 or later) as the broker instead of the embedded one, on "
                   f"--mqtt-port with mutual TLS and the same users: for fleets above ~{EMBEDDED_HOLDS:,} nodes, "
                   "what the embedded broker holds on a 2-core machine (docs/benchmarks.md)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--advertise", default=None, metavar="ADDR[,ADDR...]",
                       help="the IPv4 addresses and/or host names other machines reach this host at, in the order "
                       "devices try them: the API, broker and relay serve them, certificates name them, enrolment "
                       "tokens carry them all (default: this host's non-loopback IPv4 addresses, container bridges "
                       "left out, then its host name)")
    where.add_argument("--local-only", action="store_true",
                       help="serve this machine only: everything listens on 127.0.0.1, tokens name 127.0.0.1")
    p.add_argument("--coordinators", type=int, default=1, metavar="N",
                   help="1 (default): one coordinator on SQLite. 3 (or 5): that many local etcd members and "
                   "replicated coordinators (leader + followers) on API ports --api-port, +1, +2 ...")
    p.add_argument("--no-agent", action="store_true", help="do not start a local agent")
    p.add_argument("--agent-storage", metavar="SIZE", default=None,
                   help="the local agent offers SIZE of disk to the object store (e.g. 2G, 500MiB; passed to its "
                        "--storage-quota; default: its device profile's, none on a laptop)")
    p.add_argument("--relay-port", type=int, default=7000, metavar="PORT",
                   help="the overlay relay's UDP and TCP/TLS port (default 7000)")
    p.add_argument("--no-relay", action="store_true",
                   help="do not start an overlay relay (devices then reach each other only directly)")
    p.add_argument("--agent-runtime", choices=["auto", "podman", "process"], default="auto",
                   help="runtime of the local agent (default auto: Podman when installed)")
    p.add_argument("--config", type=Path, default=None,
                   help="where to write the CLI config (default $XDG_CONFIG_HOME/cloudless/config.json)")
    p.add_argument("--s3-port", type=int, default=9000, metavar="PORT",
                   help="the S3 endpoint's HTTPS port (default 9000; with --coordinators N each serves S3 on PORT, "
                   "+1, ...; 0: no S3). The first start makes an admin access key, written 0600 to storage.json next "
                   "to the CLI config (`cloudless storage` reads it)")
    p.set_defaults(func=_cmd_up)


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[str]


def ensure_credentials(data_dir: Path) -> dict[str, str]:
    """Create the broker auth dir and per-component passwords once; return username -> password."""
    from broker.acl import Acl, Role
    from broker.auth import AuthFiles
    from broker.files import write_private
    from broker.passwords import hash_password

    auth_dir = data_dir / "broker-auth"
    secrets_file = data_dir / "credentials" / "mqtt-passwords"
    passwords: dict[str, str] = {}
    if secrets_file.exists():
        pairs = [line.split(" ", 1) for line in secrets_file.read_text().splitlines() if " " in line]
        passwords = {user: pw for user, pw in pairs}
    # coordinator@local for one coordinator, c1..c5 for `--coordinators N`: the broker must know them as
    # coordinators (an unknown name is a node, and a coordinator certificate for a node name is refused)
    wanted = {"coordinator@local": Role.COORDINATOR, "dashboard@local": Role.DASHBOARD, "local": Role.NODE,
              **{f"coordinator@c{i}": Role.COORDINATOR for i in range(1, 6)}}
    if set(wanted) <= set(passwords) and (auth_dir / "roles.toml").exists():
        return passwords
    passwords = {user: passwords.get(user) or secrets.token_urlsafe(24) for user in wanted}
    roles = {user: role for user, role in wanted.items() if role is not Role.NODE}
    AuthFiles(users={u: hash_password(p) for u, p in passwords.items()}, acl=Acl(user_roles=roles)).save(auth_dir)
    secrets_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(secrets_file, "".join(f"{u} {p}\n" for u, p in passwords.items()))
    return passwords


def local_node_id(agent_dir: Path) -> str:
    """The local agent's node id: the one it keeps in its data dir, else `local-<6 hex of the data dir's path>`, so
    two clusters on one machine (two data dirs) never both run a node `local` (issue 16)."""
    stored = agent_dir / "node-id"
    if stored.exists():
        return stored.read_text().strip()
    return "local-" + hashlib.sha256(str(agent_dir.resolve()).encode()).hexdigest()[:6]


def start_child(name: str, argv: list[str], ready_marker: str) -> tuple[Child, str]:
    """Start a child and wait (showing progress) for its ready line; returns the child and that line."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, bufsize=1)
    assert proc.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT_S
    print(f"starting {name} ...", flush=True)
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode} before it was ready; see its log above")
            continue
        sys.stdout.write(f"[{name}] {line}")
        if ready_marker in line:
            threading.Thread(target=_pump, args=(name, proc.stdout), daemon=True).start()
            return Child(name, proc), line.strip()
    proc.kill()
    raise RuntimeError(f"{name} was not ready within {READY_TIMEOUT_S:.0f}s")


def _pump(name: str, stream: Any) -> None:
    """Keep echoing a child's stdout after it is ready (a full pipe would block the child)."""
    for line in stream:
        sys.stdout.write(f"[{name}] {line}")


def stop_children(children: list[Child]) -> None:
    for child in reversed(children):
        if child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
    for child in reversed(children):
        try:
            child.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.proc.kill()
        print(f"{child.name} stopped", flush=True)


def _stop_all(children: list[Child], data_dir: Path) -> None:
    stop_children(children)
    if any(c.name == "mosquitto" for c in children):
        from cloudless import up_mosquitto

        up_mosquitto.forget(data_dir)


def _token() -> str:
    """A random bearer token that never starts with '-' (a command line would take it for an option)."""
    while (token := secrets.token_urlsafe(32)).startswith("-"):
        pass
    return token


def ensure_admin_token(data_dir: Path) -> str:
    """The API's tokens, created once (0600): an admin token (returned, written to the CLI config) and a
    read-only viewer token (credentials/viewer-token, e.g. for dashboards); their digests go to the coordinator."""
    from broker.files import write_private
    from coordinator.credentials import write_token_digests

    tokens = {}
    for name in ("admin", "viewer"):
        token_file = data_dir / "credentials" / f"{name}-token"
        if token_file.exists():
            tokens[name] = token_file.read_text().strip()
        else:
            tokens[name] = _token()
            token_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_private(token_file, tokens[name] + "\n")
    write_token_digests(data_dir / "coordinator", tokens, roles={"admin": "admin", "viewer": "viewer"})
    return tokens["admin"]


def ensure_pki(data_dir: Path, hosts: list[str], *, broker: bool = True) -> dict[str, Path]:
    """The cluster CA (created once, in the coordinator's pki dir), the embedded broker's TLS server certificate for
    `hosts` (addresses and names; loopback is always added; not with `broker=False`: the user's own broker has its
    own, `cloudless pki issue-server`) and a dashboard client certificate for MQTT tools. Returns the paths."""
    from coordinator.pki import CertificateAuthority, CertRole, key_pem, make_csr, new_key

    pki = data_dir / "coordinator" / "pki"
    ca, _ = CertificateAuthority.load_or_create(pki, "cluster", time.time())
    out = {"ca": pki / "ca.pem", "revoked": pki / "revoked"}
    if broker:
        tls = data_dir / "broker-tls"
        tls.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = new_key()  # the broker's server certificate: fresh at every start, for the names it listens on
        names = [h for h in dict.fromkeys([*hosts, "127.0.0.1", "localhost"]) if h and h not in ("0.0.0.0", "::")]
        issued = ca.issue_server(key, hosts=names, now=time.time(), lifetime_s=365 * 86400)
        _private(tls / "server.key", key_pem(key))
        (tls / "server.pem").write_bytes(issued.cert_pem)
        out |= {"server_cert": tls / "server.pem", "server_key": tls / "server.key"}
    dash_cert, dash_key = data_dir / "credentials" / "dashboard.pem", data_dir / "credentials" / "dashboard.key"
    if not dash_cert.exists():
        dkey = new_key()
        dash = ca.issue(make_csr(dkey, "dashboard@local"), identity="dashboard@local", role=CertRole.DASHBOARD,
                        now=time.time(), lifetime_s=365 * 86400)
        _private(dash_key, key_pem(dkey))
        dash_cert.write_bytes(dash.cert_pem)
    out |= {"dashboard_cert": dash_cert, "dashboard_key": dash_key}
    return out


def _private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _join_token(api: str, admin_token: str, ca: Path, data_dir: Path) -> Path:
    """A one-use enrolment token for the local agent, minted through the API like an admin would."""
    from cloudless.client import CoordinatorClient

    client = CoordinatorClient(api, admin_token, ca=str(ca))
    resp = client.request("POST", "/v1/tokens", body={"ttlSeconds": 600, "maxUses": 1})
    path = data_dir / "credentials" / "local-agent.token"
    _private(path, str(resp.body["token"]).encode())
    return path


def relay_addresses(host: str, port: int, advertised: list[str]) -> list[str]:
    """Where devices reach the relay `up` starts: the address it listens on, or, when it listens on all of them, the
    advertised IP addresses (the relay is dialled by address) and loopback last (this machine's own agent)."""
    if host not in ("0.0.0.0", "::", ""):
        return [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    found = [a for a in advertised if a != "127.0.0.1"][:7]  # the coordinator keeps 8 per relay
    return [*(f"{a}:{port}" for a in found), f"127.0.0.1:{port}"]


def _start_relay(me: list[str], args: argparse.Namespace, data_dir: Path, pki: dict[str, Path],
                 advertised: list[str]) -> tuple[Child, str]:
    """An overlay relay for this cluster (certificate relay@local from the cluster CA, renewed at every start),
    and the --relay flag that tells the coordinator where devices reach it."""
    from cloudless.relay_cli import issue_relay

    out = data_dir / "relay"
    issue_relay(pki["ca"].parent, "relay@local", out, lifetime_s=365 * 86400)
    host = args.mqtt_host
    child, _ = start_child("relay", [*me, "relay", "--host", host, "--port", str(args.relay_port),
                                     "--cert", str(out / "relay.pem"), "--key", str(out / "relay.key"),
                                     "--ca", str(out / "ca.pem"), "--revoked", str(pki["revoked"])],
                           "cloudless relay:")
    return child, "relay@local=" + ",".join(relay_addresses(host, args.relay_port, advertised))


def _busy_ports(args: argparse.Namespace, api_host: str) -> str | None:
    """One line naming the first port `up` needs that something else holds, and the flag that moves it (checked on
    loopback too when binding every address: a listener there takes the port from a wildcard bind)."""
    from broker.cli import port_in_use

    wanted = [*([(args.mqtt_host, args.mqtt_port, "MQTT", "--mqtt-port")] if args.broker is None else []),
              *((api_host, args.api_port + i, "API", "--api-port") for i in range(args.coordinators))]
    if not args.no_relay:
        wanted.append((args.mqtt_host, args.relay_port, "relay", "--relay-port"))
    if args.s3_port:
        wanted.extend((api_host, args.s3_port + i, "S3", "--s3-port") for i in range(args.coordinators))
    probes = [(probe, port, what, flag) for host, port, what, flag in wanted
              for probe in (("127.0.0.1", host) if host == "0.0.0.0" else (host,))]
    for host, port, what, flag in probes:
        if port_in_use(host, port) is not None:
            other = "another broker? Home Assistant's? " if what == "MQTT" else "another cluster? "
            extra = " or --no-relay" if what == "relay" else ""
            return (f"port {port} ({what}) on {host} is in use ({other}a second `cloudless up`?): pass {flag} "
                    f"{port + 10}{extra}")
    return None


def _external_broker_problem(url: str) -> str | None:
    """Why --broker URL is unusable, or None: the cluster's clients authenticate with certificates, so TLS."""
    import urllib.parse

    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return f"{url[:80]!r} has a bad port"
    if parts.scheme != "mqtts" or not parts.hostname or parts.path not in ("", "/"):
        return (f"expected mqtts://HOST:PORT, got {url[:80]!r} (the cluster's clients authenticate with "
                "certificates: the broker must speak TLS)")
    return None if port else f"{url[:80]!r}: give the port (Mosquitto's TLS listener, e.g. 8883)"


def _s3_flags(port: int, index: int, credentials: Path) -> list[str]:
    """The coordinator's S3 flags: its port (consecutive ones for replicated coordinators); the first one makes the
    admin access key on the first start and writes it to `credentials`."""
    if not port:
        return []
    return ["--s3-port", str(port + index), *(["--s3-admin-credentials", str(credentials)] if index == 0 else [])]


def _s3_line(port: int, api_host: str, credentials: Path, ca: Path) -> str:
    if not port:
        return "off (--s3-port 0)"
    return (f"{_local(f'https://{api_host}:{port}')}  (admin key in {credentials}, CA {ca}; objects are stored on "
            "agents started with --storage-quota)")


def _local(url: str) -> str:
    """A URL a listener printed, as this machine dials it: the wildcard it bound is reached at 127.0.0.1."""
    for wildcard in ("://0.0.0.0:", "://[::]:"):
        url = url.replace(wildcard, "://127.0.0.1:")
    return url


def _coordinator_exposure(where: Exposure, port: int, node_broker: str) -> list[str]:
    """The coordinator's flags for the advertised addresses: names for the API certificate, the URLs tokens carry
    (all of them; the coordinator forwards writes to, and names itself by, the first), the broker URL enrolled
    devices are told."""
    if where.local_only:
        return []
    urls = where.urls("https", port)
    flags = [f for host in where.advertised for f in ("--api-hostname", host)]
    return [*flags, "--advertise", ",".join(urls), "--node-broker", node_broker]


def _devices_line(where: Exposure, api_port: int, node_broker: str, *, asked_local: bool) -> str:
    """What `up` tells the user about other machines."""
    if where.local_only and asked_local:
        return "this machine only (--local-only); `cloudless up --advertise ADDR` serves other machines"
    if where.local_only:
        return ("this machine only: it has no network address but loopback (and no host name); `cloudless up "
                "--advertise ADDR` serves other machines")
    return (f"join at {', '.join(where.urls('https', api_port))} (tried in this order; broker {node_broker}); "
            "choose with --advertise ADDR[,ADDR...]")


def _cmd_up(args: argparse.Namespace) -> int:
    from cloudless.client import default_config_path, write_config

    if args.coordinators not in (1, 3, 5):
        print("cloudless up: --coordinators: 1, 3 or 5 (etcd needs an odd member count for a majority)",
              file=sys.stderr)
        return 2
    if args.agent_storage is not None:
        from firmware_profiles.errors import QuantityError
        from firmware_profiles.units import parse_size

        try:
            parse_size(args.agent_storage)
        except QuantityError as exc:
            print(f"cloudless up: --agent-storage: {exc} (e.g. 2G, 500MiB, or 0 to offer no storage)", file=sys.stderr)
            return 2
    from cloudless.advertise import AdvertiseError, exposure

    try:
        where = exposure(args.advertise, local_only=args.local_only)
    except AdvertiseError as exc:
        print(f"cloudless up: {exc}", file=sys.stderr)
        return 2
    if args.broker is not None and (why := _external_broker_problem(args.broker)):
        print(f"cloudless up: --broker: {why}", file=sys.stderr)
        return 2
    mosquitto_bin = None
    if args.mosquitto:
        from cloudless import up_mosquitto

        if args.broker is not None:
            print("cloudless up: --mosquitto starts a broker, --broker uses yours: give one of them", file=sys.stderr)
            return 2
        mosquitto_bin = up_mosquitto.find_binary()
        if (why := up_mosquitto.problem(mosquitto_bin, args.mqtt_port)) is not None:
            print(f"cloudless up: --mosquitto: {why}", file=sys.stderr)
            return 2
    broker_host_given = args.mqtt_host is not None
    args.mqtt_host = args.mqtt_host or where.bind
    api_host = where.bind
    data_dir: Path = (args.data_dir or default_data_dir()).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    if (busy := _busy_ports(args, api_host)) is not None:
        print(f"cloudless up: {busy}", file=sys.stderr)
        return 2
    ensure_credentials(data_dir)  # broker roles (coordinator@local, dashboard@local)
    token = ensure_admin_token(data_dir)
    pki = ensure_pki(data_dir, where.san_hosts(*([args.mqtt_host] if broker_host_given else [])),
                     broker=args.broker is None)
    children: list[Child] = []
    gone: set[str] = set()
    crl_watch = None
    stopping = False

    def _stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    me = [sys.executable, "-m", "cloudless", "--log-level", os.environ.get("CLOUDLESS_LOG_LEVEL", "INFO")]
    try:
        if args.broker is not None:  # the user's own (Mosquitto): everyone, devices included, dials it as given
            url = node_broker = args.broker
            broker_note = "yours (--broker)"
        elif mosquitto_bin is not None:
            from cloudless import up_mosquitto

            conf = up_mosquitto.configure(data_dir, args.mqtt_host, args.mqtt_port, pki)
            print("starting mosquitto ...", flush=True)
            mosq = up_mosquitto.start(mosquitto_bin, conf, args.mqtt_host, args.mqtt_port, timeout_s=READY_TIMEOUT_S)
            assert mosq.stdout is not None
            threading.Thread(target=_pump, args=("mosquitto", mosq.stdout), daemon=True).start()
            children.append(Child("mosquitto", mosq))
            crl_watch = (mosq, up_mosquitto.CrlWatch(pki["ca"].parent / "crl.pem"))
            url = up_mosquitto.dial_url(args.mqtt_host, args.mqtt_port)
            node_broker = url if where.local_only or args.mqtt_host != where.bind else \
                where.urls("mqtts", args.mqtt_port)[0]
            broker_note = f"Mosquitto ({mosquitto_bin}, config {conf})"
        else:
            broker, line = start_child(
                "broker",
                [*me, "broker", "--host", args.mqtt_host, "--port", str(args.mqtt_port),
                 "--auth-dir", str(data_dir / "broker-auth"), "--cert-auth", "--revoked", str(pki["revoked"]),
                 "--tls-cert", str(pki["server_cert"]), "--tls-key", str(pki["server_key"]),
                 "--tls-ca", str(pki["ca"])],
                "cloudless broker: listening on",
            )
            children.append(broker)
            url = _local(line.rsplit(" ", 1)[-1])  # how this machine's coordinator and agent dial it
            # what enrolled devices are told to dial: the first advertised address (each device then dials the
            # address it reached the API at, edge_agent.identity.broker_for), or the one address it was told to bind
            node_broker = url if where.local_only or args.mqtt_host != where.bind else \
                where.urls("mqtts", args.mqtt_port)[0]
            broker_note = (f"embedded; holds about {EMBEDDED_HOLDS:,} nodes on a 2-core machine (docs/benchmarks.md): "
                           "for more, install Mosquitto and run `cloudless up --mosquitto`")
        relay_flags: list[str] = []
        import importlib.util

        if not args.no_relay and importlib.util.find_spec("aioquic") is None:
            print("cloudless up: no overlay relay: aioquic is not installed (pip install '.[overlay]'); devices "
                  "still run workloads, without the overlay", file=sys.stderr, flush=True)
        elif not args.no_relay:
            relay, relay_flag = _start_relay(me, args, data_dir, pki, where.dialable())
            children.append(relay)
            relay_flags = ["--relay", relay_flag]
        store: list[str] = []
        if args.coordinators > 1:
            from cloudless import etcd_local

            ms = etcd_local.members(args.coordinators)
            print(f"starting {len(ms)} etcd members on 127.0.0.1:{ms[0].client_port}.. ...", flush=True)
            for i, proc in enumerate(etcd_local.start(ms, data_dir / "etcd", data_dir / "logs")):
                children.append(Child(f"etcd-{ms[i].name}", proc))  # type: ignore[arg-type]
            etcd_local.wait_healthy(ms)
            store = ["--store", etcd_local.store_url(ms)]
        api = ""
        config_path = args.config or default_config_path(os.environ)
        storage_json = config_path.parent / "storage.json"
        for i in range(args.coordinators):
            cid = "local" if args.coordinators == 1 else f"c{i + 1}"
            coord, line = start_child(
                "coordinator" if args.coordinators == 1 else f"coordinator-{cid}",
                [*me, "coordinator", "--broker", url, "--api", f"{api_host}:{args.api_port + i}",
                 "--data-dir", str(data_dir / "coordinator"), "--id", cid, "--pki", *store, *relay_flags,
                 *_coordinator_exposure(where, args.api_port + i, node_broker),
                 *_s3_flags(args.s3_port, i, storage_json)],
                "cloudless coordinator: API on",
            )
            children.append(coord)
            api = api or _local(line.split("API on ", 1)[1].split()[0])
        write_config(config_path, api, token, ca=str(pki["ca"]))
        if not args.no_agent:
            agent_dir = data_dir / "agent"
            argv = [*me, "agent", "--data-dir", str(agent_dir), "--node-id", local_node_id(agent_dir), "--runtime",
                    args.agent_runtime, "--broker", url]  # loopback: this host's own addresses may change (DHCP)
            if args.agent_storage is not None:
                argv += ["--storage-quota", args.agent_storage]
            from edge_agent import identity as ident

            current = ident.load(agent_dir)
            if current is None or current.expired(time.time()):  # first start, or the machine was off too long
                argv += ["--token-file", str(_join_token(api, token, pki["ca"], data_dir))]
            agent, _ = start_child("agent", argv, "cloudless agent: node")
            children.append(agent)
        print(f"\nCloudless is up (mutual TLS everywhere).\n"
              f"  API:         {api}  (admin token in {data_dir / 'credentials' / 'admin-token'}, CA {pki['ca']})\n"
              f"  CLI config:  {config_path}\n  broker:      {url}\n               ({broker_note})\n"
              f"  data dir:    {data_dir}\n"
              f"  devices:     {_devices_line(where, args.api_port, node_broker, asked_local=args.local_only)}\n"
              f"  relay:       {relay_flags[1].split('=', 1)[1] if relay_flags else 'none (--no-relay)'}\n"
              f"  S3:          {_s3_line(args.s3_port, api_host, storage_json, pki['ca'])}\n"
              f"  dashboard:   MQTT Explorer at {url} with CA {pki['ca']} and client certificate "
              f"{pki['dashboard_cert']} / {pki['dashboard_key']}\n"
              "  more nodes:  cloudless token create --join-command, then run the printed line on the device "
              "(docs/install.md)\n\n"
              "Try:\n  cloudless get nodes\n  cloudless apply -f examples/hello.yaml\n"
              "  cloudless get workloads\n  cloudless describe workload hello\n"
              "  cloudless overlay status\n"
              + ("  cloudless storage status   (S3: agents offer storage with --storage-quota)\n"
                 if args.s3_port else "") +
              "Press Ctrl-C to stop.", flush=True)
        while not stopping:
            if crl_watch is not None and crl_watch[1].changed():  # a revocation: Mosquitto re-reads its CRL
                from cloudless import up_mosquitto

                up_mosquitto.reload(crl_watch[0])
            for child in children:
                if child.proc.poll() is not None and child.name not in gone:
                    gone.add(child.name)
                    spare = args.coordinators > 1 and child.name.startswith(("coordinator-", "etcd-"))
                    left = [c for c in children if c.name.startswith("coordinator") and c.name not in gone]
                    if spare and left:  # replicated: the others carry on (that is the point); say so
                        print(f"{child.name} exited with code {child.proc.returncode}; {len(left)} coordinator(s) "
                              "carry on", file=sys.stderr, flush=True)
                        continue
                    print(f"{child.name} exited with code {child.proc.returncode}; stopping", file=sys.stderr)
                    stopping = True
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # whatever failed (a child, the token request, the config): never leave orphans
        print(f"cloudless up: {exc}", file=sys.stderr)
        _stop_all(children, data_dir)
        return 1
    print("\nstopping ...", flush=True)
    _stop_all(children, data_dir)
    if not args.no_agent:
        print("workloads keep running without their agent (edge autonomy: `cloudless up` again adopts them); "
              "`cloudless down` stops them", flush=True)
    return 0

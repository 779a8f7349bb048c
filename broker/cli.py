"""`cloudless broker ...`: run the embedded broker, write a Mosquitto config, manage broker users."""

from __future__ import annotations

import argparse
import asyncio
import errno
import getpass
import logging
import os
import pwd
import secrets
import signal
import sys
from pathlib import Path

from broker.acl import Access, Acl, Role, Rule
from broker.auth import AnonymousAuthenticator
from broker.errors import BrokerConfigError

log = logging.getLogger("cloudless.broker")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "broker",
        help="run the embedded MQTT broker, or manage broker configuration",
        description="Run the embedded MQTT broker (amqtt, MQTT 3.1.1) with Cloudless authentication and ACLs. "
        "Subcommands write a production Mosquitto configuration or manage broker users.",
    )
    _add_listen_args(p, default_host="127.0.0.1")
    p.add_argument("--auth-dir", type=Path, help="directory with `passwd` and `roles.toml` (see `broker passwd`)")
    p.add_argument("--allow-anonymous", action="store_true",
                   help="DEVELOPMENT ONLY: admit clients without credentials; every client may subscribe to and "
                   "publish on every topic, as with Mosquitto's allow_anonymous and no ACL (no client may publish "
                   "on a '$' topic, and the broker has no $SYS tree)")
    p.add_argument("--cert-auth", action="store_true",
                   help="identities from client certificates (mutual TLS; needs --tls-cert/--tls-key/--tls-ca): the "
                   "CN is the username, its OU must match its role in AUTH_DIR/roles.toml; no passwords accepted")
    p.add_argument("--revoked", type=Path, default=None, metavar="FILE",
                   help="revoked certificate serials (hex, one per line), re-read on every change: a revoked "
                   "client is refused at its next connect and disconnected within seconds")
    p.add_argument("--max-queued", type=int, default=1000, metavar="N",
                   help="messages queued per offline persistent session before the oldest is dropped (default 1000)")
    p.set_defaults(func=_cmd_run)
    actions = p.add_subparsers(dest="action", metavar="ACTION")

    m = actions.add_parser("mosquitto-config", help="write mosquitto.conf, acl and passwd for a production Mosquitto",
                           description="Write a Mosquitto 2.x configuration (listener, TLS, persistence with "
                           "frequent autosave, password file, ACL file) with the same ACL semantics as the "
                           "embedded broker.")
    m.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    _add_listen_args(m, default_host="0.0.0.0")
    m.add_argument("--auth-dir", type=Path, help="the same auth directory the embedded broker uses")
    m.add_argument("--persistence-dir", type=Path, help="where Mosquitto keeps its database (default OUT_DIR/data)")
    m.add_argument("--autosave-interval", type=int, default=5, metavar="SECONDS")
    # defaults: MosquittoSettings' (not repeated here; see the reasoning there)
    m.add_argument("--max-queued-messages", type=int, metavar="N",
                   help="QoS 1 messages queued per client beyond those in flight; past it Mosquitto drops them "
                   "silently (default 100000; 0: no maximum)")
    m.add_argument("--max-queued-bytes", type=int, metavar="BYTES",
                   help="payload bytes queued per client, the other bound (default 64 MiB; 0: no maximum)")
    m.add_argument("--allow-anonymous", action="store_true",
                   help="DEVELOPMENT ONLY: no passwords and no ACL file; every client may use every topic")
    m.add_argument("--cert-auth", action="store_true",
                   help="identities from client certificates (use_identity_as_username; needs --tls-ca)")
    m.add_argument("--crl-file", type=Path, default=None,
                   help="the coordinator's pki/crl.pem (reload Mosquitto with SIGHUP after a revocation)")
    m.add_argument("--user", default=None, metavar="NAME",
                   help="the account Mosquitto runs as when started as root (its `user` option): it reads the "
                   "key, certificates, CRL, ACL and password files and writes its persistence directory as NAME. "
                   "Default: run as root, `mosquitto` when that account exists (the files written here are given "
                   "to it), else root; run as another user, that user. The files you pass (--tls-*, --crl-file) "
                   "are checked: unreadable by NAME is an error")
    m.set_defaults(func=_cmd_mosquitto_config)

    pw = actions.add_parser("passwd", help="add or update a broker user (mosquitto_passwd-compatible)",
                            description="Add or update a user in AUTH_DIR/passwd and set its role. Users without "
                            "a role are nodes: they may only use their own node/<username>/ topics.")
    pw.add_argument("auth_dir", type=Path, metavar="AUTH_DIR")
    pw.add_argument("username")
    pw.add_argument("--role", choices=[r.value for r in Role], default=Role.NODE.value)
    pw.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    pw.add_argument("--generate", action="store_true", help="generate a random password and print it once")
    pw.set_defaults(func=_cmd_passwd)


def _add_listen_args(p: argparse.ArgumentParser, *, default_host: str) -> None:
    p.add_argument("--host", default=default_host, help=f"address to listen on (default {default_host})")
    p.add_argument("--port", type=_port, default=1883, help="TCP port; 0 picks a free one (default 1883)")
    p.add_argument("--tls-cert", type=Path, help="server certificate (PEM); enables TLS")
    p.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    p.add_argument("--tls-ca", type=Path, help="CA bundle used to verify client certificates")
    p.add_argument("--require-client-cert", action="store_true", help="refuse TLS clients without a valid cert")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be a number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {value}")
    return value


def _tls(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from broker.embedded import TlsSettings

    if args.tls_cert is None and args.tls_key is None:
        if args.require_client_cert or args.tls_ca:
            raise BrokerConfigError("--tls-ca/--require-client-cert need --tls-cert and --tls-key")
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise BrokerConfigError("TLS needs both --tls-cert and --tls-key")
    for flag, path in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key), ("--tls-ca", args.tls_ca)):
        if path is not None and not path.is_file():
            raise BrokerConfigError(f"{flag}: {path} does not exist")
    return TlsSettings(args.tls_cert, args.tls_key, args.tls_ca, args.require_client_cert)


def _cmd_run(args: argparse.Namespace) -> int:
    from broker.auth import Authenticator, AuthFiles, CertAuthenticator, RevocationList
    from broker.embedded import EmbeddedBrokerSettings, TlsSettings
    from broker.listeners import raise_nofile_limit

    raise_nofile_limit()  # issue 16: a flood must not find the 1,024-file default
    if args.auth_dir is None and not args.allow_anonymous:
        raise BrokerConfigError("give --auth-dir DIR (created by `cloudless broker passwd DIR USER`), "
                                "or --allow-anonymous for development")
    tls = _tls(args)
    if args.cert_auth:
        if tls is None or tls.cafile is None:
            raise BrokerConfigError("--cert-auth needs --tls-cert, --tls-key and --tls-ca (the cluster CA)")
        tls = TlsSettings(tls.certfile, tls.keyfile, tls.cafile, require_client_cert=True)
    settings = EmbeddedBrokerSettings(host=args.host, port=args.port, tls=tls, max_queued_per_session=args.max_queued)
    authenticator: Authenticator
    if args.auth_dir is not None:
        files = AuthFiles.load(args.auth_dir, require_passwords=not args.cert_auth)
        acl = files.acl
        if args.cert_auth:
            revoked = RevocationList(args.revoked) if args.revoked else frozenset
            authenticator = CertAuthenticator(acl, revoked=revoked)
        else:
            authenticator = files.authenticator()
    else:
        log.warning("anonymous access is on: any client can read and write every topic (development only)")
        authenticator, acl = AnonymousAuthenticator(), open_acl()
    from amqtt.errors import BrokerError

    if (busy := port_in_use(args.host, args.port)) is not None:  # before amqtt logs a traceback for it
        print(f"cloudless broker: port {args.port} on {args.host} is in use ({busy}; another broker? Home "
              "Assistant's?): pass --port N (cloudless up: --mqtt-port N)", file=sys.stderr, flush=True)
        return 2
    try:
        return asyncio.run(serve(settings, authenticator, acl))
    except (OSError, BrokerError) as exc:  # amqtt wraps the bind's OSError in a BrokerError
        text = str(exc)
        if getattr(exc, "errno", None) == errno.EADDRINUSE or "address already in use" in text:
            print(f"cloudless broker: port {args.port} on {args.host} is in use (another broker? Home Assistant's?): "
                  "pass --port N (cloudless up: --mqtt-port N)", file=sys.stderr, flush=True)
            return 2
        if getattr(exc, "errno", None) in (errno.EACCES, errno.EADDRNOTAVAIL) or "Errno 99" in text \
                or "Errno 13" in text:
            print(f"cloudless broker: cannot listen on {args.host}:{args.port}: {text[:200]} (check --host and "
                  "--port)", file=sys.stderr, flush=True)
            return 2
        raise


def port_in_use(host: str, port: int) -> str | None:
    """Why (host, port) cannot take a TCP listener now because something else holds it; None when it can (or when
    the check itself cannot tell: the real bind then says)."""
    import socket

    if port == 0:
        return None
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return None
    for family, kind, proto, _name, addr in infos[:4]:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(addr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return exc.strerror or "address already in use"
    return None


def open_acl() -> Acl:
    """--allow-anonymous: every anonymous client (AnonymousAuthenticator's role) reads and writes every topic.
    '#' does not cover '$' topics (MQTT 3.1.1 §4.7.2); the broker refuses publishes there anyway."""
    return Acl(role_rules={AnonymousAuthenticator.role: (Rule(Access.READWRITE, "#"),)})


async def serve(settings, authenticator, acl) -> int:  # type: ignore[no-untyped-def]
    from broker.embedded import EmbeddedBroker

    broker = EmbeddedBroker(settings, authenticator=authenticator, acl=acl)
    await broker.start()
    server = broker._servers["default"].instance
    host, port = server.sockets[0].getsockname()[:2]
    scheme = "mqtts" if settings.tls else "mqtt"
    # tests and `cloudless up` wait for this exact line
    print(f"cloudless broker: listening on {scheme}://{host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await broker.shutdown()
    return 0


def _cmd_mosquitto_config(args: argparse.Namespace) -> int:
    from broker import mosquitto
    from broker.auth import AuthFiles

    auth = AuthFiles.load(args.auth_dir, require_passwords=not args.cert_auth) if args.auth_dir else None
    if auth is None and not args.allow_anonymous:
        raise BrokerConfigError("give --auth-dir DIR so the config can authenticate clients, "
                                "or --allow-anonymous for development")
    queue_bounds = {name: getattr(args, name) for name in ("max_queued_messages", "max_queued_bytes")
                    if getattr(args, name) is not None}
    euid, me = os.geteuid(), pwd.getpwuid(os.geteuid()).pw_name
    user = args.user or mosquitto.default_user(euid=euid, current=me, mosquitto_account=_has_account("mosquitto"))
    settings = mosquitto.MosquittoSettings(
        out_dir=args.out_dir, host=args.host, port=args.port, tls=_tls(args), persistence_dir=args.persistence_dir,
        autosave_interval_s=args.autosave_interval, allow_anonymous=args.allow_anonymous,
        cert_auth=args.cert_auth, crl_file=args.crl_file, run_as_user=user, **queue_bounds,
    )
    mosquitto.account(user)  # an unknown account is an error before anything is written
    for path in mosquitto.write(settings, auth):
        print(f"wrote {path}")
    print(f"Mosquitto runs as {user} when started as root (--user NAME to choose)")
    checkable = euid == 0 or user == me  # only root (or the account itself) can tell what the account can open
    if checkable and (bad := mosquitto.unusable_by(user, mosquitto.needs(settings))):
        for how, path in bad:
            print(f"cloudless broker: user {user} cannot {how} {path}", file=sys.stderr)
        print(f"cloudless broker: Mosquitto would exit at start: give those files to {user} (chown {user}: FILE; "
              f"a directory on the way needs x for {user}: setfacl -m u:{user}:x DIR), or run Mosquitto as "
              "another account (--user root keeps root's privileges)", file=sys.stderr)
        return 2
    print(f"start it with: mosquitto -c {args.out_dir / mosquitto.CONF_FILE}")
    return 0


def _has_account(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _cmd_passwd(args: argparse.Namespace) -> int:
    from broker.auth import AuthFiles
    from broker.passwords import hash_password
    from broker.wire import valid_id

    role = Role(args.role)
    if role is Role.NODE and not valid_id(args.username):
        raise BrokerConfigError(f"username: {args.username!r} is not a valid node id (letters, digits, . _ -)")
    if role is not Role.NODE and valid_id(args.username):
        raise BrokerConfigError(f"username: non-node users need an '@' in the name (e.g. '{role.value}@main') "
                                "so they can never collide with a node id")
    if args.generate:
        password = secrets.token_urlsafe(24)
    elif args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {args.username}: ")
    if not password:
        raise BrokerConfigError("password: empty")
    try:
        files = AuthFiles.load(args.auth_dir)
    except BrokerConfigError:
        files = AuthFiles(users={}, acl=Acl())
    users = dict(files.users)
    users[args.username] = hash_password(password)
    roles = {k: v for k, v in files.acl.user_roles.items() if k != args.username}
    if role is not Role.NODE:
        roles[args.username] = role
    AuthFiles(users=users, acl=Acl(user_roles=roles)).save(args.auth_dir)
    print(f"{args.username} ({role.value}) saved in {args.auth_dir}")
    if args.generate:
        print(f"password: {password}")
    return 0

"""`cloudless relay` runs an overlay relay; `cloudless pki issue-relay` makes its certificate from the cluster CA
(and `cloudless pki issue-server` a TLS server certificate, e.g. for a standalone Mosquitto).

A relay runs where every device can reach it — the €4 VPS — and forwards the overlay's encrypted packets between
devices that cannot reach each other directly (dataplane.relay): over UDP, and over TCP/TLS on the same port for
networks that block UDP. It needs a `relay` certificate from the cluster CA: on the coordinator's machine,

    cloudless pki issue-relay vps --out /etc/cloudless/relay          # relay@vps: relay.pem, relay.key, ca.pem
    cloudless relay --cert /etc/cloudless/relay/relay.pem --key /etc/cloudless/relay/relay.key \\
        --ca /etc/cloudless/relay/ca.pem --port 7000 --revoked DATA_DIR/coordinator/pki/revoked
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from pathlib import Path

log = logging.getLogger("cloudless.relay")
ENFORCE_EVERY_S = 5.0  # revocations re-read and live links re-judged this often


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("relay", help="run an overlay relay (UDP and TCP/TLS) for devices behind NATs",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default all)")
    p.add_argument("--port", type=int, default=7000, help="UDP and TCP port (default 7000)")
    p.add_argument("--cert", type=Path, required=True, help="the relay's certificate (pki issue-relay)")
    p.add_argument("--key", type=Path, required=True, help="its private key")
    p.add_argument("--ca", type=Path, required=True, help="the cluster CA certificate")
    p.add_argument("--revoked", type=Path, help="revoked certificate serials (hex, one per line), re-read "
                   f"every {ENFORCE_EVERY_S:g} s; revoked devices are cut off")
    p.add_argument("--rate-mbit", type=float, default=100.0,
                   help="what one device may push through the relay, Mbit/s (default 100)")
    p.add_argument("--no-tls", action="store_true", help="UDP only (no TCP/TLS fallback listener)")
    p.set_defaults(func=cmd_relay)
    k = sub.add_parser("pki", help="certificates from the cluster CA for standalone services",
                       description="Issue certificates from the cluster CA kept in the coordinator's data dir.")
    actions = k.add_subparsers(dest="action", metavar="ACTION", required=True)
    r = actions.add_parser("issue-relay", help="a relay certificate (identity relay@NAME)",
                           description="Write relay.pem, relay.key (0600) and ca.pem for `cloudless relay`.")
    r.add_argument("name", help="the relay's name: its identity is relay@NAME")
    r.add_argument("--data-dir", type=Path, default=Path.home() / ".local/share/cloudless",
                   help="the cluster's data dir (its CA is DATA_DIR/coordinator/pki)")
    r.add_argument("--out", type=Path, required=True, help="directory to write the files to")
    r.add_argument("--days", type=float, default=365.0, help="validity in days (default 365)")
    r.set_defaults(func=cmd_issue_relay)
    v = actions.add_parser(
        "issue-server", help="a TLS server certificate for a standalone broker (Mosquitto) or other server",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write NAME.pem, NAME.key (0600) and ca.pem into --out: a TLS server certificate from the "
        "cluster CA for every address and name in --san, so enrolled devices (which trust only the cluster CA) "
        "accept the server. Use it for a standalone Mosquitto; a standalone coordinator issues its own API "
        "certificate from the same CA (`cloudless coordinator --pki --api-hostname NAME`).",
        epilog="example (a Mosquitto on the coordinator's machine, 192.168.1.10 / nas.lan):\n"
        "  cloudless pki issue-server --create-ca --data-dir /var/lib/cloudless --name mosquitto \\\n"
        "      --san 192.168.1.10,nas.lan --out /etc/mosquitto/cloudless/tls\n"
        "then `cloudless broker mosquitto-config ... --cert-auth` with --tls-cert .../mosquitto.pem, --tls-key "
        ".../mosquitto.key, --tls-ca .../ca.pem (the full production path: docs/install.md)")
    v.add_argument("--name", required=True,
                   help="the server's name: the certificate's common name and the file names NAME.pem/NAME.key")
    v.add_argument("--san", required=True, metavar="ADDR[,ADDR...]",
                   help="every IP address and DNS name clients dial the server at (IP SANs for addresses, DNS SANs "
                   "for names; a client checks the one it dialled)")
    v.add_argument("--out", type=Path, required=True, help="directory to write the files to (created 0700)")
    v.add_argument("--data-dir", type=Path, default=Path.home() / ".local/share/cloudless",
                   help="the cluster's data dir (its CA is DATA_DIR/coordinator/pki)")
    v.add_argument("--days", type=float, default=365.0, help="validity in days (default 365, at most 3650)")
    v.add_argument("--create-ca", action="store_true",
                   help="create the cluster CA in DATA_DIR/coordinator/pki when there is none yet: the first step of a "
                   "setup with your own broker (`cloudless up --data-dir DATA_DIR` and the coordinator then use it)")
    v.set_defaults(func=cmd_issue_server)


def cmd_issue_relay(args: argparse.Namespace) -> int:
    from broker.wire import valid_id
    from coordinator.pki import CA_CERT, CA_KEY, PkiError

    identity = f"relay@{args.name}"
    if not valid_id(args.name):
        print(f"cloudless pki: {args.name!r} is not a valid name (letters, digits, '.', '_', '-'; max 63)",
              file=sys.stderr)
        return 2
    pki = args.data_dir / "coordinator" / "pki"
    if not (pki / CA_CERT).exists() or not (pki / CA_KEY).exists():
        print(f"cloudless pki: no cluster CA in {pki}; run this where the coordinator keeps its data "
              "(--data-dir)", file=sys.stderr)
        return 2
    try:
        issue_relay(pki, identity, args.out, lifetime_s=args.days * 86400)
    except PkiError as exc:
        print(f"cloudless pki: {exc}", file=sys.stderr)
        return 2
    print(f"{identity}: {args.out}/relay.pem, relay.key, ca.pem (valid {args.days:g} days)")
    return 0


def cmd_issue_server(args: argparse.Namespace) -> int:
    from broker.wire import valid_id
    from cloudless.advertise import AdvertiseError, parse_hosts
    from coordinator.pki import PkiError

    if not valid_id(args.name):
        return _refuse(f"--name: {args.name!r} is not a valid name (letters, digits, '.', '_', '-'; max 63)")
    try:
        hosts = parse_hosts(args.san, flag="--san")
    except AdvertiseError as exc:
        return _refuse(str(exc))
    if not 0 < args.days <= 3650:
        return _refuse(f"--days: {args.days:g} is not between 0 and 3650")
    if args.out.exists() and not args.out.is_dir():
        return _refuse(f"--out: {args.out} exists and is not a directory")
    pki = _cluster_pki(args.data_dir, create=args.create_ca)
    if pki is None:
        return 2
    try:
        not_after = issue_server(pki, args.name, hosts, args.out, lifetime_s=args.days * 86400)
    except PkiError as exc:
        return _refuse(str(exc))
    except OSError as exc:
        return _refuse(f"--out: cannot write to {args.out}: {exc.strerror}")
    until = time.strftime("%Y-%m-%d", time.gmtime(not_after))
    print(f"{args.name}: {args.out}/{args.name}.pem, {args.name}.key (0600), ca.pem; for {', '.join(hosts)}; "
          f"valid until {until}")
    return 0


def _refuse(message: str) -> int:
    print(f"cloudless pki: {message}", file=sys.stderr)
    return 2


def _cluster_pki(data_dir: Path, *, create: bool) -> Path | None:
    """DATA_DIR/coordinator/pki when it holds the cluster CA (created there with `create`); None (having said so)
    when not. Without `create` a missing CA is an error: a mistyped --data-dir must not start a second cluster."""
    from coordinator.pki import CA_CERT, CA_KEY, CertificateAuthority

    pki = data_dir / "coordinator" / "pki"
    if (pki / CA_CERT).exists() or (pki / CA_KEY).exists():
        return pki
    if not create:
        _refuse(f"--data-dir: no cluster CA in {pki}; run this where the coordinator keeps its data (or pass "
                "--create-ca to start a new cluster there)")
        return None
    CertificateAuthority.load_or_create(pki, "cluster", time.time())
    print(f"created the cluster CA in {pki} (key 0600): back it up; losing it means re-enrolling every node")
    return pki


def issue_server(pki: Path, name: str, hosts: list[str], out: Path, *, lifetime_s: float) -> float:
    """NAME.pem, NAME.key (0600) and ca.pem in `out`: a server certificate from the cluster CA in `pki` naming every
    host (address or DNS name). Also the CA's revocation list in `pki` while the coordinator has not written one yet
    (Mosquitto's `crlfile` must exist when it starts). Returns the certificate's expiry (unix seconds)."""
    from broker.files import write_private
    from coordinator.identity import CRL_FILE
    from coordinator.pki import CertificateAuthority, key_pem, new_key

    ca, _ = CertificateAuthority.load_or_create(pki, "unused", time.time())
    crl = pki / CRL_FILE
    if not crl.exists():  # a broker with `crlfile` will not start without one; the coordinator rewrites it at start
        write_private(crl, ca.crl([], time.time()), mode=0o644)
    key = new_key()
    issued = ca.issue_server(key, hosts=hosts, now=time.time(), lifetime_s=lifetime_s, common_name=name)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(out / f"{name}.key", key_pem(key))
    write_private(out / f"{name}.pem", issued.cert_pem, mode=0o644)
    write_private(out / "ca.pem", ca.cert_pem, mode=0o644)
    return issued.not_after


def issue_relay(pki: Path, identity: str, out: Path, *, lifetime_s: float) -> None:
    """relay.pem, relay.key (0600) and ca.pem for relay `identity` in `out`, from the cluster CA in `pki`."""
    from broker.files import write_private
    from coordinator.pki import CertificateAuthority, CertRole, key_pem, make_csr, new_key

    ca, _ = CertificateAuthority.load_or_create(pki, "unused", time.time())
    key = new_key()
    issued = ca.issue(make_csr(key, identity), identity=identity, role=CertRole.RELAY, now=time.time(),
                      lifetime_s=lifetime_s)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(out / "relay.key", key_pem(key))
    write_private(out / "relay.pem", issued.cert_pem, mode=0o644)
    write_private(out / "ca.pem", ca.cert_pem, mode=0o644)


def _revoked(path: Path | None) -> frozenset[int]:
    if path is None:
        return frozenset()
    if not path.exists():  # not written yet (the coordinator writes it at start): nothing is revoked
        return frozenset()
    try:
        return frozenset(int(line, 16) for line in path.read_text().split() if line)
    except (OSError, ValueError) as exc:
        log.warning("cannot read the revocation list %s: %s (keeping the previous one)", path, exc)
        raise


def cmd_relay(args: argparse.Namespace) -> int:
    from cryptography import x509

    from broker.listeners import raise_nofile_limit
    from dataplane.identity import Revocations
    from dataplane.quic import NodeCredential
    from dataplane.relay import RelayServer

    try:
        cert = x509.load_pem_x509_certificate(args.cert.read_bytes())
        identity = str(cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value)
        credential = NodeCredential.from_files(identity, cert=args.cert, key=args.key, ca=args.ca)
    except (OSError, ValueError, IndexError) as exc:
        print(f"cloudless relay: cannot load the relay's certificate: {exc} (make one with `cloudless pki "
              "issue-relay NAME --out DIR`)", file=sys.stderr)
        return 2
    try:
        state = {"revoked": Revocations(serials=_revoked(args.revoked))}
    except (OSError, ValueError):
        print(f"cloudless relay: cannot read --revoked {args.revoked} (hex serials, one per line)", file=sys.stderr)
        return 2

    async def run() -> None:
        relay = await RelayServer.open(credential, args.host, args.port, clock=time.time,
                                       revocations=lambda: state["revoked"], rate_bytes_s=args.rate_mbit * 125_000,
                                       burst_bytes=max(args.rate_mbit * 125_000 / 2, 1e6))
        if not args.no_tls:
            await relay.listen_tls(args.host, args.port)
        print(f"cloudless relay: {identity} on udp{'' if args.no_tls else '+tcp/tls'} {args.host}:{args.port}",
              flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(ENFORCE_EVERY_S):
                        await stop.wait()
                with contextlib.suppress(OSError, ValueError):
                    state["revoked"] = Revocations(serials=_revoked(args.revoked))
                for cut in relay.enforce():
                    log.warning("relay: cut %s (revoked or expired)", cut)
        finally:
            relay.close()
            log.info("relay stopped: %d packets forwarded, %d limited, %d unroutable", relay.forwarded,
                     relay.limited, relay.unroutable)

    raise_nofile_limit()  # a relay holds a link per device
    try:
        asyncio.run(run())
    except OSError as exc:
        print(f"cloudless relay: cannot listen on {args.host}:{args.port}: {exc} (is another relay running? pick "
              "another --port)", file=sys.stderr)
        return 1
    return 0

"""`cloudless token ...` and `cloudless node revoke`: enrolment tokens and certificate revocation, over the API."""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import shlex
import socket
import ssl
import time
import urllib.parse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cloudless.client import resolve_config
from cloudless.ctl import Ctx, UsageError, add_command, as_command, connection_flags

if TYPE_CHECKING:
    from cloudless.ctl import Sub

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float:
    m = _DURATION.fullmatch(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"expected a duration like 30m, 1h or 2d, got {text!r}")
    seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if not 60 <= seconds <= 7 * 86400:
        raise argparse.ArgumentTypeError("must be between 1m and 7d")
    return seconds


def labels(text: str) -> dict[str, str]:
    out = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"expected k=v[,k=v...], got {item!r}")
        out[key] = value
    return out


def spki_pin(cert_der: bytes) -> str:
    """curl's --pinnedpubkey form of a certificate's key: sha256// + base64 of the SubjectPublicKeyInfo's digest."""
    spki = x509.load_der_x509_certificate(cert_der).public_key().public_bytes(Encoding.DER,
                                                                               PublicFormat.SubjectPublicKeyInfo)
    return "sha256//" + base64.b64encode(hashlib.sha256(spki).digest()).decode()


def server_pin(server: str, ca: str | None, timeout: float = 10.0) -> str:
    """The pin of the API certificate `server` presents, verified against the CA this CLI trusts (so the pin
    handed to a device is the coordinator's, not an interceptor's)."""
    url = urllib.parse.urlsplit(server)
    if url.scheme != "https" or not url.hostname:
        raise UsageError(f"--join-command needs an https API (the pin is its certificate's key); the CLI uses {server}")
    context = ssl.create_default_context(cafile=ca)
    with socket.create_connection((url.hostname, url.port or 443), timeout=timeout) as sock, \
            context.wrap_socket(sock, server_hostname=url.hostname) as tls:
        der = tls.getpeercert(binary_form=True)
    if der is None:
        raise UsageError(f"{server} presented no certificate")
    return spki_pin(der)


def join_command(server: str | Sequence[str], pin: str, token: str, node_id: str | None) -> str:
    """The one line a device runs: the script fetched with the API key pinned (-k: the device has no CA yet, the pin
    is what authenticates the server), run with the token and the same pin for every later download. With several
    coordinator URLs (`cloudless up --advertise A,B`) a small `sh -c` loop tries them in order, says on stderr which
    failed (curl's own reason) and stops at the first that serves the script; the script then fetches its wheels
    from the URL it came from. A pipeline of plain commands either way: it runs from any interactive shell."""
    servers = [server] if isinstance(server, str) else list(server)
    args = ["--pin", pin, "--token", token] + (["--node-id", node_id] if node_id else [])
    urls = [s.rstrip("/") + "/v1/install.sh" for s in servers]
    if len(urls) == 1:
        return f"curl -fsSk --pinnedpubkey {shlex.quote(pin)} {shlex.quote(urls[0])} | sh -s -- {shlex.join(args)}"
    loop = (f'for u; do curl -fsSk --connect-timeout 5 --pinnedpubkey {shlex.quote(pin)} "$u" && exit 0; '
            'echo "cloudless: $u failed, trying the next address" >&2; done; exit 1')
    return f"sh -c {shlex.quote(loop)} sh {shlex.join(urls)} | sh -s -- {shlex.join(args)}"


def token_urls(token: str, fallback: str) -> list[str]:
    """The coordinator URLs a token carries (every advertised address, in order), else `fallback` (a coordinator
    from before the list)."""
    from edge_agent.identity import EnrolmentError, token_claims

    try:
        return list(token_claims(token)["urls"]) or [fallback]
    except EnrolmentError:
        return [fallback]


def cmd_token_create(args: argparse.Namespace, ctx: Ctx) -> int:
    body: dict[str, object] = {"ttlSeconds": args.ttl, "maxUses": args.max_uses}
    if args.labels:
        body["labels"] = args.labels
    if args.zone:
        body["zone"] = args.zone
    resp = ctx.api.request("POST", "/v1/tokens", body=body)
    data = resp.body
    if args.join_command:
        cfg = resolve_config(server=args.server, token=args.token, config=args.config, env=ctx.env, warn=ctx.warn)
        try:
            pin = server_pin(ctx.api.server, cfg.ca)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"--join-command: reading the API certificate of {ctx.api.server} failed: {exc}") from exc
        # the pin is read over this CLI's connection (verified against the CA); devices fetch from the token's URLs,
        # the addresses other machines reach (the CLI itself usually talks to 127.0.0.1)
        line = join_command(token_urls(str(data["token"]), ctx.api.server), pin, str(data["token"]), args.node_id)
        if args.output == "json":
            ctx.out(json.dumps({**data, "joinCommand": line, "pin": pin}, indent=2))
        else:
            ctx.out(line)
            ctx.err(f"token {data['id']}: {data['maxUses']} use(s). Run that line on the device (Debian, Raspberry "
                    "Pi OS, Termux); it installs the agent, enrols it and starts it as a service.")
    elif args.output == "json":
        ctx.out(json.dumps(data, indent=2))
    else:
        until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(float(data["expiresAt"])))
        ctx.out(data["token"])
        ctx.err(f"token {data['id']}: {data['maxUses']} use(s), valid until {until}. On the device:\n"
                "  cloudless agent --token-file FILE   (or CLOUDLESS_TOKEN=... cloudless agent)")
    return 0


def cmd_token_list(args: argparse.Namespace, ctx: Ctx) -> int:
    items = ctx.api.request("GET", "/v1/tokens").body["items"]
    if args.output == "json":
        ctx.out(json.dumps({"items": items}, indent=2))
        return 0
    ctx.out(f"{'ID':<18}{'USES':<8}{'EXPIRES':<20}{'REVOKED':<9}NODES")
    for t in items:
        exp = time.strftime("%Y-%m-%d %H:%M", time.gmtime(float(t["expiresAt"])))
        ctx.out(f"{t['id']:<18}{str(t['uses']) + '/' + str(t['maxUses']):<8}{exp:<20}"
                f"{'yes' if t['revoked'] else 'no':<9}{','.join(t['nodes']) or '-'}")
    return 0


def cmd_token_revoke(args: argparse.Namespace, ctx: Ctx) -> int:
    ctx.api.request("DELETE", f"/v1/tokens/{args.id}")
    ctx.out(f"token/{args.id} revoked")
    return 0


def cmd_node_revoke(args: argparse.Namespace, ctx: Ctx) -> int:
    data = ctx.api.request("POST", f"/v1/nodes/{args.node}/revoke").body
    ctx.out(f"node/{args.node} revoked (certificate {data['serial']}); its replicas move to other nodes")
    return 0


def add_parser(sub: Sub) -> None:
    conn = connection_flags()
    p = add_command(sub, "token", conn, func=lambda a, c: 2, help="enrolment tokens for new devices",
                    description="Mint, list and revoke one-time enrolment tokens. A token carries the coordinator's "
                    "URL and the cluster CA's fingerprint, so a device needs nothing else to join.",
                    examples="  cloudless token create --ttl 1h --max-uses 1 --zone home\n"
                    "  cloudless token create --join-command --node-id pi-kitchen\n  cloudless token list\n"
                    "  cloudless token revoke 3f2a...")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = actions.add_parser("create", parents=[conn], help="mint a token (printed once on stdout)")
    c.add_argument("--ttl", type=duration, default=3600.0, help="lifetime, e.g. 30m, 1h, 2d (default 1h, max 7d)")
    c.add_argument("--max-uses", type=int, default=1, choices=range(1, 10001), metavar="N",
                   help="devices that may enrol with it (default 1)")
    c.add_argument("--labels", type=labels, default={}, metavar="K=V,...", help="labels for the enrolled nodes")
    c.add_argument("--zone", default="", help="zone for the enrolled nodes")
    c.add_argument("--join-command", action="store_true",
                   help="print the one line that installs, enrols and starts the agent on a device")
    c.add_argument("--node-id", default=None, help="with --join-command: the device's node id (default its hostname)")
    c.add_argument("-o", "--output", choices=["text", "json"], default="text")
    c.set_defaults(func=as_command(cmd_token_create))
    ls = actions.add_parser("list", parents=[conn], help="list tokens (ids and uses; never the tokens)")
    ls.add_argument("-o", "--output", choices=["table", "json"], default="table")
    ls.set_defaults(func=as_command(cmd_token_list))
    r = actions.add_parser("revoke", parents=[conn], help="revoke a token")
    r.add_argument("id")
    r.set_defaults(func=as_command(cmd_token_revoke))
    n = add_command(sub, "node", conn, func=lambda a, c: 2, help="node certificates (revoke)",
                    description="Revoke a node's certificate: the brokers refuse it (the embedded broker at once, "
                    "Mosquitto through the CRL the coordinator writes) and its replicas are rescheduled.",
                    examples="  cloudless node revoke pi-kitchen")
    nactions = n.add_subparsers(dest="action", metavar="ACTION", required=True)
    nr = nactions.add_parser("revoke", parents=[conn], help="revoke the node's certificate")
    nr.add_argument("node")
    nr.set_defaults(func=as_command(cmd_node_revoke))

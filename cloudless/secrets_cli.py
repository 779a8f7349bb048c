"""`cloudless secrets ...`: the coordinator's secrets service over its REST API (issue 7).

create, get (metadata; `--reveal` shows values to an admin, `--access-token` to a token holder), list, update,
delete, token (issue / `token list` / `token revoke`), rotate-master-key and audit. A thin adapter like
`cloudless.ctl`, whose conventions it shares: the same connection flags and config resolution, arguments checked
before any request, `cloudless: error:` plus a `cloudless: hint:` line, exit codes 0 ok, 1 refused or
unreachable, 2 usage. Values travel base64 in JSON; the CLI encodes and decodes them, prints a value only when
asked to reveal it, and never prints an access token except the one `secrets token` just issued (on stdout, the
notes on stderr).

No coordinator, aiohttp or (at import) PyYAML here: admins run the CLI where only the CLI is installed.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import re
import sys
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudless import render
from cloudless.client import ApiError, JSONObject, Response
from cloudless.ctl import Ctx, UsageError, add_command, as_command, check_name, connection_flags, require_yaml

if TYPE_CHECKING:
    from cloudless.ctl import Sub

OUTPUTS = ("table", "json", "yaml")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+|\d+(?:\.\d+)?")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
AUDIT_ACTIONS = ("create", "get", "access", "update", "delete", "token", "token-revoke", "rotate-master-key",
                 "deliver")


# ---- argument types -------------------------------------------------------------------------------------------

def secret_ref(text: str) -> tuple[str, str]:
    ns, sep, name = text.partition("/")
    try:
        if not sep:
            raise UsageError(f"expected NAMESPACE/NAME, got {text!r}")
        return check_name(ns, "namespace"), check_name(name, "secret name")
    except UsageError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def duration(text: str) -> str:
    """A duration the coordinator understands (90d, 12h, 1h30m, 45s, 2w or seconds), passed on as written."""
    if not _DURATION.fullmatch(text.strip()):
        raise argparse.ArgumentTypeError(f"expected a duration like 90d, 12h, 30m or 45s, got {text!r}")
    return text.strip()


def seconds_of(text: str) -> float:
    if text.replace(".", "", 1).isdigit():
        return float(text)
    return sum(float(n) * _UNITS[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([smhdw])", text))


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return int(text)


def values(data: Sequence[str], files: Sequence[str], *, stdin: Any = None) -> dict[str, str]:
    """`--data K=V` and `--from-file [K=]PATH` (`-`: standard input) as `{K: base64}`; a key given twice is an
    error."""
    out: dict[str, str] = {}

    def add(key: str, raw: bytes, flag: str) -> None:
        if not key:
            raise UsageError(f"{flag}: the key name is empty")
        if key in out:
            raise UsageError(f"key {key!r} is given twice", hint="each key once, with --data or --from-file")
        out[key] = base64.b64encode(raw).decode()

    for item in data:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--data {item[:40]!r}: expected KEY=VALUE",
                             hint="use --from-file KEY=PATH for values from files")
        add(key, value.encode(), "--data")
    for item in files:
        key, sep, path = item.partition("=")
        if not sep:
            key, path = Path(item).name, item
        try:
            raw = (stdin or sys.stdin.buffer).read() if path == "-" else Path(path).read_bytes()
        except OSError as exc:
            raise UsageError(f"--from-file {path}: {exc.strerror or exc}") from None
        add(key, raw, "--from-file")
    return out


# ---- requests -------------------------------------------------------------------------------------------------

def _seg(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _path(ns: str, name: str, suffix: str = "") -> str:
    return f"/v1/secrets/{_seg(ns)}/{_seg(name)}{suffix}"


def _hint(exc: ApiError, ref: str, *, with_token: bool = False) -> str | None:
    """A next step for the secrets service's refusals (the client's generic hints talk about workloads)."""
    text = exc.message
    match exc.status:
        case 403 if with_token:
            return f"ask an admin for a new access token: `cloudless secrets token {ref} --audience AUDIENCE`"
        case 403:
            return "this needs an admin credential (a viewer reads metadata only; values need an access token)"
        case 404 if "token" in text:
            return f"list the secret's tokens with `cloudless secrets token list {ref}`"
        case 404:
            return "list secrets with `cloudless secrets list -A`"
        case 409 if "immutable" in text:
            return f"an immutable secret never changes: `cloudless secrets delete {ref}`, then create it again"
        case 409 if "already exists" in text:
            return f"change it with `cloudless secrets update {ref} ...`"
        case 409 if "active version" in text:
            return f"someone updated it meanwhile: look with `cloudless secrets get {ref}` and retry"
        case 410:
            return f"its TTL passed: give it a new value (`cloudless secrets update {ref} --data ...`), which renews it"
    return exc.hint


def call(ctx: Ctx, method: str, path: str, *, ref: str = "", with_token: bool = False, **kw: Any) -> Response:
    try:
        return ctx.api.request(method, path, **kw)
    except ApiError as exc:
        exc.hint = _hint(exc, ref or "NS/NAME", with_token=with_token)
        if len(exc.errors) == 1 and exc.errors[0].message == exc.message:  # a refusal, not a list of input problems
            exc.errors, exc.field = (), None
        raise


# ---- output ---------------------------------------------------------------------------------------------------

def when(ts: object) -> str:
    epoch = render.to_epoch(ts)
    return render.NONE if epoch is None else dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _emit(ctx: Ctx, fmt: str, doc: object, table: Callable[[], str]) -> int:
    ctx.out(render.dump(doc, fmt) if fmt in ("json", "yaml") else table())
    return 0


def _check_output(fmt: str) -> None:
    if fmt == "yaml":
        require_yaml("-o yaml")


def _until(at: float, now: float) -> str:
    return "expired" if at <= now else "in " + render.age(now - (at - now), now)


def _expires(s: Mapping[str, Any], now: float) -> str:
    at = render.to_epoch(s.get("expiresAt"))
    return "never" if at is None else f"{when(at)} UTC ({_until(at, now)})"


def describe(s: Mapping[str, Any], now: float) -> str:
    ttl = s.get("ttlSeconds")
    rows = [("Name:", f"{s.get('namespace')}/{s.get('name')}"), ("UID:", render.text(s.get("uid"))),
            ("Keys:", ", ".join(s.get("keys") or []) or render.NONE),
            ("Version:", f"{s.get('activeVersion')} (active)"),
            ("Audiences:", ", ".join(s.get("audiences") or []) or "none (only admins read the value)"),
            ("Immutable:", "yes" if s.get("immutable") else "no"),
            ("TTL:", "none" if ttl is None else f"{_span(float(ttl))}, expires {_expires(s, now)}"),
            ("Created:", f"{when(s.get('createdAt'))} UTC"), ("Updated:", f"{when(s.get('updatedAt'))} UTC")]
    versions = [[str(v.get("version")), f"{when(v.get('createdAt'))} UTC", render.text(v.get("createdBy")),
                 ",".join(v.get("keys") or [])] for v in s.get("versions") or []]
    lines = [f"{k:<12}{v}" for k, v in rows] + ["Versions:"]
    lines += ["  " + line for line in render.table(["VERSION", "CREATED", "BY", "KEYS"], versions).splitlines()]
    return "\n".join(lines)


def _span(seconds: float) -> str:
    for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def secrets_table(items: Sequence[JSONObject], now: float) -> str:
    rows = []
    for s in items:
        at = render.to_epoch(s.get("expiresAt"))
        rows.append([render.text(s.get("namespace")), render.text(s.get("name")), ",".join(s.get("keys") or []),
                     render.text(s.get("activeVersion")), ",".join(s.get("audiences") or []) or render.NONE,
                     "yes" if s.get("immutable") else "no", "never" if at is None else _until(at, now),
                     render.age(s.get("createdAt"), now)])
    return render.table(["NAMESPACE", "NAME", "KEYS", "VERSION", "AUDIENCES", "IMMUTABLE", "EXPIRES", "AGE"], rows)


def revealed_table(doc: Mapping[str, Any]) -> str:
    rows = []
    for key, b64 in sorted((doc.get("data") or {}).items()):
        raw = base64.b64decode(b64)
        try:
            text = raw.decode("utf-8")
            printable = text.isprintable()
        except UnicodeDecodeError:
            printable = False
        rows.append([key, text if printable else f"<{len(raw)} bytes, not printable: use --key {key} or -o json>"])
    return f"# {doc.get('namespace')}/{doc.get('name')} version {doc.get('version')}\n" + render.table(
        ["KEY", "VALUE"], rows)


def tokens_table(items: Sequence[JSONObject], now: float) -> str:
    rows = [[render.text(t.get("id")), render.text(t.get("audience")),
             f"{t.get('uses')}/{t.get('maxUses')}" if t.get("maxUses") is not None else "unlimited",
             f"{when(t.get('expiresAt'))} UTC", "yes" if t.get("revoked") else "no", render.text(t.get("issuedBy")),
             render.age(t.get("issuedAt"), now)] for t in items]
    return render.table(["ID", "AUDIENCE", "USES", "EXPIRES", "REVOKED", "ISSUED BY", "AGE"], rows)


def audit_table(items: Sequence[JSONObject]) -> str:
    rows = []
    for r in items:
        secret = f"{r['namespace']}/{r['name']}" if r.get("namespace") else render.NONE
        if r.get("version") is not None:
            secret += f"@{r['version']}"
        extra = [f"audience {r['audience']}"] if r.get("audience") else []
        extra += [f"token {r['tokenId']}"] if r.get("tokenId") else []
        note = "; ".join([r.get("reason") or r.get("detail") or "", *extra]).strip("; ")
        rows.append([f"{when(r.get('at'))}", render.text(r.get("action")), render.text(r.get("result")),
                     render.text(r.get("actor")), render.text(r.get("source")), secret, note or render.NONE])
    return render.table(["TIME (UTC)", "ACTION", "RESULT", "ACTOR", "SOURCE", "SECRET", "DETAIL"], rows)


# ---- commands -------------------------------------------------------------------------------------------------

def cmd_create(args: argparse.Namespace, ctx: Ctx) -> int:
    _check_output(args.output)
    ns, name = args.secret
    data = values(args.data, args.from_file)
    if not data:
        raise UsageError("a secret needs at least one value", hint="add --data KEY=VALUE or --from-file KEY=PATH")
    body: JSONObject = {"name": name, "data": data, "audiences": args.audience, "immutable": args.immutable}
    if args.ttl:
        body["ttl"] = args.ttl
    doc = call(ctx, "POST", f"/v1/secrets/{_seg(ns)}", ref=f"{ns}/{name}", body=body).body
    return _emit(ctx, args.output, doc, lambda: f"secret/{ns}/{name} created (version 1; keys: "
                 f"{','.join(doc.get('keys') or [])})")


def _access_token(args: argparse.Namespace) -> str | None:
    if args.access_token_file:
        try:
            return Path(args.access_token_file).read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise UsageError(f"--access-token-file {args.access_token_file}: {exc.strerror or exc}") from None
    return str(args.access_token) if args.access_token else None


def cmd_get(args: argparse.Namespace, ctx: Ctx) -> int:
    _check_output(args.output)
    ns, name = args.secret
    token = _access_token(args)
    if token and not args.audience:
        raise UsageError("an access token is presented with the audience it was issued for",
                         hint="add --audience AUDIENCE")
    if args.key and not (args.reveal or token):
        raise UsageError("--key prints one value: add --reveal (admin) or --access-token")
    if not (args.reveal or token):
        doc = call(ctx, "GET", _path(ns, name), ref=f"{ns}/{name}").body
        return _emit(ctx, args.output, doc, lambda: describe(doc, ctx.clock.time()))
    body: JSONObject = {"token": token, "audience": args.audience} if token else {}
    if args.version:
        body["version"] = args.version
    doc = call(ctx, "POST", _path(ns, name, "/reveal"), ref=f"{ns}/{name}", with_token=bool(token), body=body).body
    if args.key:
        data = doc.get("data") or {}
        if args.key not in data:
            ctx.err(f"cloudless: error: {ns}/{name} version {doc.get('version')} has no key {args.key!r}")
            ctx.err(f"cloudless: hint: its keys: {', '.join(sorted(data)) or 'none'}")
            return 1
        sys.stdout.buffer.write(base64.b64decode(data[args.key]))
        sys.stdout.flush()
        return 0
    return _emit(ctx, args.output, doc, lambda: revealed_table(doc))


def cmd_list(args: argparse.Namespace, ctx: Ctx) -> int:
    _check_output(args.output)
    query = {} if args.all_namespaces else {"namespace": args.namespace or "default"}
    items = call(ctx, "GET", "/v1/secrets", query=query).body.get("items") or []
    if args.output == "table" and not items:
        ctx.err("no secrets" + ("" if args.all_namespaces else f" in namespace {query['namespace']}"))
        return 0
    return _emit(ctx, args.output, {"items": items}, lambda: secrets_table(items, ctx.clock.time()))


def cmd_update(args: argparse.Namespace, ctx: Ctx) -> int:
    _check_output(args.output)
    ns, name = args.secret
    data = values(args.data, args.from_file)
    body: JSONObject = {}
    if data:
        body["data"] = data
    if args.audience is not None:
        body["audiences"] = [a for a in args.audience if a]
    if args.ttl:
        body["ttl"] = args.ttl
    if not body:
        raise UsageError("nothing to update", hint="give --data/--from-file (a new version), --audience or --ttl")
    if args.expect_version:
        body["expectVersion"] = args.expect_version
    doc = call(ctx, "PUT", _path(ns, name), ref=f"{ns}/{name}", body=body).body
    what = f"version {doc.get('activeVersion')}" if data else "metadata"
    return _emit(ctx, args.output, doc, lambda: f"secret/{ns}/{name} updated ({what})")


def cmd_delete(args: argparse.Namespace, ctx: Ctx) -> int:
    ns, name = args.secret
    try:
        doc = call(ctx, "DELETE", _path(ns, name), ref=f"{ns}/{name}").body
    except ApiError as exc:
        if exc.status == 404 and args.ignore_not_found:
            return 0
        raise
    ctx.out(f"secret/{ns}/{name} deleted ({len(doc.get('versions') or [])} version(s) and its tokens)")
    return 0


def cmd_token(args: argparse.Namespace, ctx: Ctx) -> int:
    """`token NS/NAME` issues; `token list NS/NAME` and `token revoke ID` (a NS/NAME always has a slash)."""
    match args.target, args.arg:
        case "revoke", str(token_id):
            doc = call(ctx, "DELETE", f"/v1/secret-tokens/{_seg(token_id)}", ref="NS/NAME").body
            ctx.out(f"secret token {token_id} revoked (it was for {doc.get('namespace')}/{doc.get('name')}, "
                    f"audience {doc.get('audience')})")
            return 0
        case "list", str(ref):
            ns, name = _ref_arg(ref)
            fmt = "table" if args.output == "text" else args.output
            _check_output(fmt)
            items = call(ctx, "GET", _path(ns, name, "/tokens"), ref=ref).body.get("items") or []
            return _emit(ctx, fmt, {"items": items}, lambda: tokens_table(items, ctx.clock.time()))
        case ("revoke" | "list"), None:
            raise UsageError(f"`secrets token {args.target}` needs " + ("a token id" if args.target == "revoke"
                                                                       else "NAMESPACE/NAME"))
        case str(ref), None:
            return _issue(args, ctx, *_ref_arg(ref))
    raise UsageError(f"unexpected argument {args.arg!r}",
                     hint="`secrets token NS/NAME --audience A`, `token list NS/NAME` or `token revoke ID`")


def _ref_arg(text: str) -> tuple[str, str]:
    try:
        return secret_ref(text)
    except argparse.ArgumentTypeError as exc:
        raise UsageError(str(exc)) from None


def _issue(args: argparse.Namespace, ctx: Ctx, ns: str, name: str) -> int:
    if not args.audience:
        raise UsageError("an access token is for one audience", hint="add --audience AUDIENCE (one the secret allows)")
    body: JSONObject = {"audience": args.audience, "ttl": args.ttl}
    if args.max_uses:
        body["maxUses"] = args.max_uses
    doc = call(ctx, "POST", _path(ns, name, "/tokens"), ref=f"{ns}/{name}", body=body).body
    if args.output in ("json", "yaml"):
        _check_output(args.output)
        ctx.out(render.dump(doc, args.output))
        return 0
    ctx.out(doc["token"])
    uses = f"{doc['maxUses']} use(s)" if doc.get("maxUses") is not None else "unlimited uses"
    ctx.err(f"access token {doc['id']} for {ns}/{name}, audience {doc['audience']}: {uses}, valid until "
            f"{when(doc['expiresAt'])} UTC. The holder reads the value with:\n"
            f"  cloudless secrets get {ns}/{name} --audience {doc['audience']} --access-token-file FILE --reveal")
    return 0


def cmd_rotate(args: argparse.Namespace, ctx: Ctx) -> int:
    doc = call(ctx, "POST", "/v1/secrets-master-key/rotate").body
    if args.output in ("json", "yaml"):
        _check_output(args.output)
        ctx.out(render.dump(doc, args.output))
        return 0
    ctx.out(f"master key rotated: active key {doc['activeKeyId']}; {doc['rewrapped']} of {doc['versions']} data "
            "key(s) re-wrapped")
    ctx.err("back up the key file again: it now holds the new key (and keeps the old ones)")
    return 0


def since_of(text: str, now: float) -> float:
    """`1h` (ago), unix seconds, or an ISO 8601 time (UTC unless it says otherwise)."""
    text = text.strip()
    if re.fullmatch(r"(?:\d+(?:\.\d+)?[smhdw])+", text):
        return now - seconds_of(text)
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since/--until {text!r}: expected a duration ago (1h, 7d), unix seconds or an ISO "
                         "time (2025-01-31T12:00)") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).timestamp()


def cmd_audit(args: argparse.Namespace, ctx: Ctx) -> int:
    _check_output(args.output)
    now = ctx.clock.time()
    query: dict[str, object] = {"actor": args.actor, "action": args.action, "result": args.result,
                                "limit": args.limit}
    if args.secret:
        query["namespace"], query["name"] = args.secret
    elif args.namespace:
        query["namespace"] = args.namespace
    if args.since:
        query["since"] = f"{since_of(args.since, now):.6f}"
    if args.until:
        query["until"] = f"{since_of(args.until, now):.6f}"
    items = call(ctx, "GET", "/v1/secrets-audit", query=query).body.get("items") or []
    if args.output == "table" and not items:
        ctx.err("no audit records match")
        return 0
    return _emit(ctx, args.output, {"items": items}, lambda: audit_table(items))


# ---- parsers --------------------------------------------------------------------------------------------------

EXAMPLES = """\
  cloudless secrets create prod/db --data user=app --from-file password=./pw.txt --audience billing-api --ttl 90d
  cloudless secrets create prod/tls --from-file tls.key --from-file tls.crt --immutable
  cloudless secrets get prod/db                        # metadata: keys, versions, audiences, expiry
  cloudless secrets get prod/db --reveal               # values (admin)
  cloudless secrets get prod/db --reveal --key password > pw.txt
  cloudless secrets list -A
  cloudless secrets update prod/db --from-file password=./new.txt --expect-version 1
  cloudless secrets token prod/db --audience billing-api --ttl 1h --max-uses 5 > token
  cloudless secrets get prod/db --access-token-file token --audience billing-api   # no API credential needed
  cloudless secrets token list prod/db
  cloudless secrets token revoke 9f1c2a...
  cloudless secrets rotate-master-key
  cloudless secrets audit --secret prod/db --since 24h
  cloudless secrets delete prod/db"""


def _sub(actions: Any, name: str, conn: argparse.ArgumentParser, func: Callable[[argparse.Namespace, Ctx], int], *,
         help: str, description: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = actions.add_parser(name, parents=[conn], help=help, description=description)
    p.set_defaults(func=as_command(func))
    return p


def _values_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", action="append", default=[], metavar="KEY=VALUE",
                   help="a value on the command line (repeatable; it shows in `ps` and shell history: prefer "
                   "--from-file for real secrets)")
    p.add_argument("--from-file", action="append", default=[], metavar="[KEY=]PATH",
                   help="a value from a file, bytes as they are (repeatable; KEY defaults to the file name; PATH - "
                   "reads standard input)")


def _output(p: argparse.ArgumentParser, choices: Sequence[str] = OUTPUTS, default: str = "table") -> None:
    p.add_argument("-o", "--output", choices=choices, default=default, help=f"output format (default {default})")


def add_parser(sub: Sub) -> None:
    conn = connection_flags()
    p = add_command(sub, "secrets", conn, func=lambda a, c: 2, help="secrets: create, read, tokens, audit",
                    description="Secrets on the coordinator, encrypted at rest (AES-256-GCM under a master key). "
                    "Metadata is readable with any API credential; values with an admin credential or an access "
                    "token for an audience the secret allows. Every action is audited. See docs/security.md#secrets.",
                    examples=EXAMPLES)
    actions = p.add_subparsers(dest="secrets_action", metavar="ACTION", required=True)

    c = _sub(actions, "create", conn, cmd_create, help="create a secret (version 1)", description=(
        "Create a secret from --data and --from-file values. Audiences name the consumers access tokens may be "
        "issued for (exact names, no wildcards); without any, only admins read the value. An immutable secret can "
        "never be updated (409): delete and re-create it."))
    c.add_argument("secret", type=secret_ref, metavar="NAMESPACE/NAME")
    _values_args(c)
    c.add_argument("--audience", action="append", default=[], metavar="AUDIENCE",
                   help="a consumer allowed to get access tokens (repeatable)")
    c.add_argument("--ttl", type=duration, metavar="DURATION", help="expire the value this long after it was set, "
                   "e.g. 90d (default: never; an update renews it)")
    c.add_argument("--immutable", action="store_true", help="refuse every later update")
    _output(c)

    g = _sub(actions, "get", conn, cmd_get, help="show a secret's metadata, or its values", description=(
        "Without --reveal: metadata (keys, versions, audiences, expiry), never values. --reveal shows the values to "
        "an admin; --access-token(-file) with --audience shows them to a token holder (no API credential needed). "
        "Every read of a value is audited."))
    g.add_argument("secret", type=secret_ref, metavar="NAMESPACE/NAME")
    g.add_argument("--reveal", action="store_true", help="show the values (admin credential)")
    g.add_argument("--access-token", metavar="TOKEN", help="an access token (`secrets token`); it shows in `ps`: "
                   "prefer --access-token-file")
    g.add_argument("--access-token-file", metavar="PATH", help="a file holding the access token")
    g.add_argument("--audience", metavar="AUDIENCE", help="the audience the access token was issued for")
    g.add_argument("--version", type=_positive, metavar="N", help="an older version (default: the active one)")
    g.add_argument("--key", metavar="KEY", help="print only this value, raw bytes, no newline (for scripts)")
    _output(g)

    ls = _sub(actions, "list", conn, cmd_list, help="list secrets (metadata)",
              description="List secrets (metadata only) of one namespace, or of all with -A.")
    ls.add_argument("-n", "--namespace", type=lambda t: check_name(t, "namespace"), metavar="NS",
                    help="namespace (default: default)")
    ls.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    _output(ls)

    u = _sub(actions, "update", conn, cmd_update, help="new values (a new version), audiences or TTL", description=(
        "New values make a new version under a fresh data key (older versions stay readable by number, and a new "
        "value renews the TTL). --audience replaces the audience list (`--audience ''` clears it). Immutable "
        "secrets refuse every update (409)."))
    u.add_argument("secret", type=secret_ref, metavar="NAMESPACE/NAME")
    _values_args(u)
    u.add_argument("--audience", action="append", default=None, metavar="AUDIENCE",
                   help="the new audience list (repeatable)")
    u.add_argument("--ttl", type=duration, metavar="DURATION", help="a new TTL")
    u.add_argument("--expect-version", type=_positive, metavar="N",
                   help="refuse (409) unless N is still the active version")
    _output(u)

    d = _sub(actions, "delete", conn, cmd_delete, help="delete a secret, every version and token",
             description="Delete a secret with all its versions and access tokens.")
    d.add_argument("secret", type=secret_ref, metavar="NAMESPACE/NAME")
    d.add_argument("--ignore-not-found", action="store_true", help="a secret that does not exist is no error")

    t = _sub(actions, "token", conn, cmd_token, help="issue (or list, revoke) access tokens", description=(
        "`token NS/NAME --audience A` issues an access token for one audience the secret allows: printed once on "
        "stdout, valid for --ttl (default 1h, at most 24h) and --max-uses reads. `token list NS/NAME` shows the "
        "tokens' records (never the tokens); `token revoke ID` revokes one."))
    t.usage = ("cloudless secrets token NAMESPACE/NAME --audience A [--ttl 1h] [--max-uses N] | list NAMESPACE/NAME "
               "| revoke ID")
    t.add_argument("target", metavar="NAMESPACE/NAME | list | revoke")
    t.add_argument("arg", nargs="?", metavar="NAMESPACE/NAME | ID", help="with list: the secret; with revoke: the id")
    t.add_argument("--audience", metavar="AUDIENCE", help="the one consumer the token is for")
    t.add_argument("--ttl", type=duration, default="1h", metavar="DURATION", help="lifetime (default 1h, max 24h)")
    t.add_argument("--max-uses", type=_positive, metavar="N", help="reads allowed (default: unlimited within the TTL)")
    _output(t, ("text", "table", "json", "yaml"), "text")

    r = _sub(actions, "rotate-master-key", conn, cmd_rotate, help="add a new master key and re-wrap every data key",
             description="Add a fresh master key to the coordinator's key file and make it active, then re-wrap every "
             "version's data key under it. Values are not re-encrypted, reads go on throughout, old keys stay in "
             "the file. Back the file up again afterwards.")
    _output(r, ("text", "json", "yaml"), "text")

    a = _sub(actions, "audit", conn, cmd_audit, help="query the secrets audit log",
             description="Who did what to which secret, when, from where, and whether it was allowed (newest first). "
             "Records never hold a value.")
    a.add_argument("--secret", type=secret_ref, metavar="NAMESPACE/NAME", help="one secret's records")
    a.add_argument("-n", "--namespace", type=lambda t: check_name(t, "namespace"), metavar="NS",
                   help="one namespace's records")
    a.add_argument("--actor", metavar="NAME", help="records of one credential (or `anonymous`, `coordinator`)")
    a.add_argument("--action", choices=AUDIT_ACTIONS, help="one kind of action")
    a.add_argument("--result", choices=("ok", "denied"), help="allowed or refused actions only")
    a.add_argument("--since", metavar="WHEN", help="a duration ago (24h, 7d), unix seconds or an ISO time")
    a.add_argument("--until", metavar="WHEN", help="same forms as --since")
    a.add_argument("--limit", type=_positive, default=100, metavar="N", help="at most N records (default 100)")
    _output(a)

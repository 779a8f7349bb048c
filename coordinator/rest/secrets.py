"""The secrets service's REST handlers (issue 7), their routes and the schemas of their bodies.

An adapter (STYLE §1): each handler turns the request into a call of `SecretsService` (coordinator.secrets) and
its answer into JSON; the service decides everything. Its expected "no"s are `Rejection` values, which the
handlers answer themselves as `{"error": {"code", "message", "field", "errors": [{"path", "message"}]}}` (the
API's error format plus a stable `code` such as `immutable` or `token-expired`) with `rejection.status`:
400 invalid, 403 denied, 404 not found, 409 conflict, 410 expired.

The caller is the request's bearer credential — its name and role (admin or viewer) from the API token file —
and the source its remote address (plus the follower coordinator that forwarded it, if one did). Revealing a
value is the one route without the API's own authentication: an admin credential, or an access token (with the
audience it acts as) in the JSON body, so a token never sits in a URL or an access log. Values travel base64 in
JSON. Nothing here logs a value, a token or a request body.

Routes are `ROUTES` below (the app builds the router and the OpenAPI document from every module's table); the
schemas of their bodies are `SECRETS_BODY_SCHEMAS`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from coordinator.http import FORWARDED_HEADER, BadBody, bearer_token, loads, token_digest
from coordinator.rest.ports import Engine
from coordinator.rest.routes import Route
from coordinator.secrets import (
    AuditAction,
    AuditQuery,
    AuditResult,
    Caller,
    EnvelopeError,
    KeySource,
    MasterKeyError,
    Rejection,
    RejectKind,
    Revealed,
    Role,
    SecretsService,
)
from coordinator.secrets import masterkey as masterkeys
from coordinator.secrets.audit import MAX_QUERY_LIMIT

log = logging.getLogger(__name__)
NO_STORE = {"Cache-Control": "no-store"}  # answers carrying a value or a token are never cached

_B64 = {"type": "string", "contentEncoding": "base64"}
_TTL = {"type": ["string", "number", "null"], "description": "a duration: 90d, 12h, 30m, 45s or seconds"}
_AUDIENCES = {"type": "array", "items": {"type": "string"}, "maxItems": 32,
              "description": "consumers that access tokens may be issued for; exact names, no wildcards"}
SECRETS_BODY_SCHEMAS: dict[str, dict[str, Any]] = {
    "SecretCreate": {"type": "object", "additionalProperties": False, "required": ["name", "data"], "properties": {
        "name": {"type": "string"}, "data": {"type": "object", "additionalProperties": _B64},
        "audiences": _AUDIENCES, "ttl": _TTL, "immutable": {"type": "boolean"}}},
    "SecretUpdate": {"type": "object", "additionalProperties": False, "properties": {
        "data": {"type": "object", "additionalProperties": _B64}, "audiences": _AUDIENCES, "ttl": _TTL,
        "expectVersion": {"type": "integer", "minimum": 1}}},
    "SecretReveal": {"type": "object", "additionalProperties": False, "properties": {
        "token": {"type": "string", "description": "an access token (else the caller needs an admin credential)"},
        "audience": {"type": "string", "description": "the audience the token was issued for"},
        "version": {"type": "integer", "minimum": 1, "description": "default: the active version"}}},
    "SecretTokenRequest": {"type": "object", "additionalProperties": False, "required": ["audience"],
                           "properties": {"audience": {"type": "string"},
                                          "ttl": {**_TTL, "description": "default 1h, at most 24h"},
                                          "maxUses": {"type": ["integer", "null"], "minimum": 1}}},
}


def rejection_response(rejection: Rejection) -> web.Response:
    return web.json_response({"error": rejection.to_json()}, status=rejection.status)


def _invalid(path: str, message: str) -> web.Response:
    return rejection_response(Rejection.invalid([(path, message)]))


def _unavailable(message: str, status: int = 503) -> web.Response:
    return web.json_response({"error": {"code": "unavailable", "message": message, "field": None, "errors": []}},
                             status=status)


def encode_values(revealed: Revealed) -> dict[str, Any]:
    return {"namespace": revealed.namespace, "name": revealed.name, "version": revealed.version,
            "data": {k: base64.b64encode(v).decode() for k, v in revealed.data.items()}}


def decode_values(data: object) -> dict[str, bytes] | Rejection:
    """`{"KEY": base64}` -> bytes; the service checks names and sizes."""
    if not isinstance(data, Mapping):
        return Rejection.invalid([("data", "must map key names to base64 values")])
    out, problems = {}, []
    for key, value in data.items():
        try:
            if not isinstance(value, str):
                raise ValueError(value)
            out[key] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            problems.append((f"data.{str(key)[:80]}", "value must be a base64 string"))
    return Rejection.invalid(problems) if problems else out


async def _body(request: web.Request, allowed: frozenset[str], *, optional: bool = False) -> dict[str, Any] | Rejection:
    if optional and not request.can_read_body:
        return {}
    try:
        body = loads(await request.text())
    except (BadBody, UnicodeDecodeError) as exc:
        return Rejection.invalid([("", str(exc))])
    if not isinstance(body, dict):
        return Rejection.invalid([("", "the body must be a JSON object")])
    if unknown := sorted(set(body) - allowed):
        return Rejection.invalid([(k, f"unknown field (expected {', '.join(sorted(allowed))})") for k in unknown])
    return body


def _int_or_none(value: object, path: str) -> int | Rejection | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        return Rejection.invalid([(path, "must be a whole number")])
    return value


ROUTES: tuple[Route, ...] = (
    # errors carry a `code` too; values are base64
    Route("GET", "/v1/secrets", "list_secrets", "List secrets' metadata (?namespace=); never values"),
    Route("POST", "/v1/secrets/{namespace}", "create_secret", "Create a secret (version 1; 409 if it exists)",
          body="SecretCreate"),
    Route("GET", "/v1/secrets/{namespace}/{name}", "get_secret", "A secret's metadata: keys, versions, audiences, "
          "TTL; never values"),
    Route("PUT", "/v1/secrets/{namespace}/{name}", "update_secret", "Update a secret: new data makes a new version "
          "(409 if immutable, or if expectVersion is not the active version)", body="SecretUpdate"),
    Route("DELETE", "/v1/secrets/{namespace}/{name}", "delete_secret", "Delete a secret, its versions and tokens"),
    Route("POST", "/v1/secrets/{namespace}/{name}/reveal", "reveal_secret",
          "A version's values (?version=): with an admin credential, or no credential and an access token and its "
          "audience in the body (403 naming why a token is refused; 410 if the secret expired)",
          body="SecretReveal", auth=False),
    Route("POST", "/v1/secrets/{namespace}/{name}/tokens", "issue_secret_token",
          "Issue an access token for one allowed audience (TTL default 1h, max 24h; max uses)",
          body="SecretTokenRequest"),
    Route("GET", "/v1/secrets/{namespace}/{name}/tokens", "list_secret_tokens",
          "A secret's access-token records (ids, audience, uses, expiry, revoked; never the tokens)"),
    Route("DELETE", "/v1/secret-tokens/{token}", "revoke_secret_token", "Revoke a secret access token by id"),
    Route("GET", "/v1/secrets-master-key", "secrets_master_key", "The master key ids this coordinator holds"),
    Route("POST", "/v1/secrets-master-key/rotate", "rotate_secrets_master_key",
          "Add a new active master key and re-wrap every data key (values are not re-encrypted; reads go on)"),
    Route("GET", "/v1/secrets-audit", "secrets_audit", "The secrets audit log, newest first "
          "(?namespace=&name=&actor=&action=&result=&since=&until=&limit=)"),
)


class SecretsHandlers:
    """The /v1/secrets* handlers. `tokens`: the API's bearer token digests; `forwarded_by`: who forwarded a
    request (coordinator.rest.forwarding); `secrets_key_source`: where `rotate` adds a new master key."""

    def __init__(self, coord: Engine, *, tokens: dict[str, tuple[str, str]],
                 forwarded_by: Callable[[web.Request], tuple[str, str] | None],
                 secrets_key_source: KeySource | None = None) -> None:
        self.coord = coord
        self.tokens = tokens
        self.forwarded_by = forwarded_by
        self.secrets_key_source = secrets_key_source
        self._rotating: asyncio.Lock | None = None

    # ---- plumbing ------------------------------------------------------------------------------------------

    def _secrets(self) -> SecretsService | None:
        svc = self.coord.secrets
        return svc if isinstance(svc, SecretsService) else None

    def _secrets_caller(self, request: web.Request) -> Caller | None:
        """Who asks (None: a bearer credential that is not one of ours). No header: `anonymous`, no role."""
        source = request.remote or "unknown"
        if (forwarded := self.forwarded_by(request)) is not None:
            source = f"{forwarded[1]} (forwarded by {forwarded[0]})"
        elif request.headers.get(FORWARDED_HEADER):
            source = f"{source} (claims to be forwarded by a coordinator: not proven)"
        token = bearer_token(request.headers.get("Authorization", ""))
        if token == "":
            return Caller("anonymous", source, Role.NONE)
        if token is None:
            return None
        digest = token_digest(token)
        for known, (name, role) in self.tokens.items():
            if hmac.compare_digest(digest, known):
                return Caller(name, source, Role.ADMIN if role == "admin" else Role.VIEWER)
        return None

    def _secrets_context(self, request: web.Request) -> tuple[SecretsService, Caller] | web.Response:
        svc = self._secrets()
        if svc is None:
            return _unavailable("this coordinator runs no secrets service")
        caller = self._secrets_caller(request)
        if caller is None:
            return web.json_response({"error": {"code": "unauthenticated", "message": "invalid bearer token; use an "
                                                "API token (`cloudless up` prints one), or none with an access "
                                                "token in the body", "field": None, "errors": []}}, status=401)
        return svc, caller

    @staticmethod
    def _ref(request: web.Request) -> tuple[str, str]:
        return request.match_info["namespace"], request.match_info.get("name", "")

    # ---- create / get / list / update / delete -------------------------------------------------------------

    async def create_secret(self, request: web.Request) -> web.Response:
        ctx = self._secrets_context(request)
        if isinstance(ctx, web.Response):
            return ctx
        svc, caller = ctx
        body = await _body(request, frozenset({"name", "data", "audiences", "ttl", "immutable"}))
        if isinstance(body, Rejection):
            return rejection_response(body)
        name = body.get("name")
        if not isinstance(name, str):
            return _invalid("name", "required: the secret's name")
        data = decode_values(body.get("data"))
        if isinstance(data, Rejection):
            return rejection_response(data)
        result = await svc.create(request.match_info["namespace"], name, data, caller=caller,
                                  audiences=body.get("audiences", ()), ttl=body.get("ttl"),
                                  immutable=body.get("immutable", False))
        if isinstance(result, Rejection):
            return rejection_response(result)
        return web.json_response(result.to_json(), status=201)

    async def list_secrets(self, request: web.Request) -> web.Response:
        ctx = self._secrets_context(request)
        if isinstance(ctx, web.Response):
            return ctx
        svc, caller = ctx
        result = await svc.list(request.query.get("namespace"), caller=caller)
        if isinstance(result, Rejection):
            return rejection_response(result)
        return web.json_response({"items": [s.to_json() for s in result]})

    async def get_secret(self, request: web.Request) -> web.Response:
        ctx = self._secrets_context(request)
        if isinstance(ctx, web.Response):
            return ctx
        svc, caller = ctx
        result = await svc.get(*self._ref(request), caller=caller)
        if isinstance(result, Rejection):
            return rejection_response(result)
        return web.json_response(result.to_json())

    async def update_secret(self, request: web.Request) -> web.Response:
        ctx = self._secrets_context(request)
        if isinstance(ctx, web.Response):
            return ctx
        svc, caller = ctx
        body = await _body(request, frozenset({"data", "audiences", "ttl", "expectVersion"}))
        if isinstance(body, Rejection):
            return rejection_response(body)
        data = decode_values(body["data"]) if body.get("data") is not None else None
        expect = _int_or_none(body.get("expectVersion"), "expectVersion")
        for problem in (data, expect):
            if isinstance(problem, Rejection):
                return rejection_response(problem)
        assert not isinstance(expect, Rejection) and not isinstance(data, Rejection)
        result = await svc.update(*self._ref(request), caller=caller, data=data, audiences=body.get("audiences"),
                                  ttl=body.get("ttl"), expect_version=expect)
        if isinstance(result, Rejection):
            return rejection_response(result)
        return web.json_response(result.to_json())

    async def delete_secret(self, request: web.Request) -> web.Response:
        ctx = self._secrets_context(request)
        if isinstance(ctx, web.Response):
            return ctx
        svc, caller = ctx
        result = await svc.delete(*self._ref(request), caller=caller)
        if isinstance(result, Rejection):
            return rejection_response(result)
        return web.json_response(result.to_json())

    # ---- values --------------------------------------------------------------------------------------------

    async def reveal_secret(self, request: web.Request) -> web.Response:
        """The values of a version: for an admin credential, or for `{"token", "audience"}` in the body."""
        ctx = self._secrets_context(request)
        if isinstance(ctx, web.Response):
            return ctx
        svc, caller = ctx
        body = await _body(request, frozenset({"token", "audience", "version"}), optional=True)
        if isinstance(body, Rejection):
            return rejection_response(body)
        version: object = body.get("version")
        if "version" in request.query:
            raw = request.query["version"]
            version = int(raw) if raw.isascii() and raw.isdigit() else raw
        checked = _int_or_none(version, "version")
        if isinstance(checked, Rejection):
            return rejection_response(checked)
        token, audience = body.get("token"), body.get("audience")
        for path, value in (("token", token), ("audience", audience)):
            if value is not None and not isinstance(value, str):
                return _invalid(path, "must be a string")
        try:
            result = await svc.read(*self._ref(request), caller=caller, version=checked, token=token,
                                    audience=audience)
        except EnvelopeError as exc:
            return self._undecryptable(request, exc)
        if isinstance(result, Rejection):
            return rejection_response(result)
        return web.json_response(encode_values(result), headers=NO_STORE)

    @staticmethod
    def _undecryptable(request: web.Request, exc: EnvelopeError) -> web.Response:
        ns, name = SecretsHandlers._ref(request)
        log.error("secret %s/%s does not decrypt: %s", ns, name, exc)  # names and key ids only, never values
        return _unavailable(f"secret {ns}/{name} does not decrypt with this coordinator's master keys (a damaged "
                            "store, or a key missing from its keyring); see the coordinator log", 500)

    # ---- access tokens -------------------------------------------------------------------------------------

    async def issue_secret_token(self, request: web.Request) -> web.Response:
        ctx = self._secrets_context(request)
        if isinstance(ctx, web.Response):
            return ctx
        svc, caller = ctx
        body = await _body(request, frozenset({"audience", "ttl", "maxUses"}))
        if isinstance(body, Rejection):
            return rejection_response(body)
        audience = body.get("audience")
        if not isinstance(audience, str):
            return _invalid("audience", "required: the one consumer the token is for")
        result = await svc.issue_token(*self._ref(request), caller=caller, audience=audience, ttl=body.get("ttl"),
                                       max_uses=body.get("maxUses"))
        if isinstance(result, Rejection):
            return rejection_response(result)
        return web.json_response({"token": result.token, **result.record.to_json()}, status=201, headers=NO_STORE)

    async def list_secret_tokens(self, request: web.Request) -> web.Response:
        ctx = self._secrets_context(request)
        if isinstance(ctx, web.Response):
            return ctx
        svc, caller = ctx
        result = await svc.list_tokens(*self._ref(request), caller=caller)
        if isinstance(result, Rejection):
            return rejection_response(result)
        return web.json_response({"items": [t.to_json() for t in result]})

    async def revoke_secret_token(self, request: web.Request) -> web.Response:
        ctx = self._secrets_context(request)
        if isinstance(ctx, web.Response):
            return ctx
        svc, caller = ctx
        result = await svc.revoke_token(request.match_info["token"], caller=caller)
        if isinstance(result, Rejection):
            return rejection_response(result)
        return web.json_response(result.to_json())

    # ---- master key ----------------------------------------------------------------------------------------

    async def secrets_master_key(self, request: web.Request) -> web.Response:
        """Which master keys this coordinator holds (ids only)."""
        ctx = self._secrets_context(request)
        if isinstance(ctx, web.Response):
            return ctx
        keyring = ctx[0].keyring
        source = self.secrets_key_source
        origin = ("environment" if source is not None and source.env_value is not None
                  else "file" if source is not None and source.file is not None else "unknown")
        return web.json_response({"activeKeyId": keyring.active_id, "keyIds": sorted(keyring.keys),
                                  "source": origin})

    async def rotate_secrets_master_key(self, request: web.Request) -> web.Response:
        """Add a new master key to the key file, make it active and re-wrap every data key (values untouched)."""
        ctx = self._secrets_context(request)
        if isinstance(ctx, web.Response):
            return ctx
        svc, caller = ctx
        if caller.role is not Role.ADMIN:  # checked before the key file is touched (the middleware did too)
            return rejection_response(Rejection(RejectKind.DENIED, "rotating the master key needs an admin "
                                                "credential", "", "admin-required"))
        if self.secrets_key_source is None:
            return _unavailable("this coordinator was started without a master key source", 409)
        if self._rotating is None:
            self._rotating = asyncio.Lock()
        async with self._rotating:  # two rotations at once would each add a key and one would be lost
            try:
                keyring = await asyncio.to_thread(masterkeys.rotate, self.secrets_key_source)
                result = await svc.rotate_master_key(keyring, caller=caller)
            except MasterKeyError as exc:
                return rejection_response(Rejection(RejectKind.CONFLICT, str(exc), "", "master-key"))
        if isinstance(result, Rejection):
            return rejection_response(result)
        log.warning("secrets master key rotated to %s by %s: back up the key file again", result.key_id, caller.name)
        return web.json_response({"activeKeyId": result.key_id, "rewrapped": result.rewrapped,
                                  "versions": result.versions, "keyIds": sorted(keyring.keys)})

    # ---- audit ---------------------------------------------------------------------------------------------

    async def secrets_audit(self, request: web.Request) -> web.Response:
        ctx = self._secrets_context(request)
        if isinstance(ctx, web.Response):
            return ctx
        svc, caller = ctx
        query = audit_query(request.query)
        if isinstance(query, Rejection):
            return rejection_response(query)
        result = await svc.audit_log(query, caller=caller)
        if isinstance(result, Rejection):
            return rejection_response(result)
        return web.json_response({"items": [r.to_json() for r in result]})


def audit_query(q: Mapping[str, str]) -> AuditQuery | Rejection:
    """`?namespace=&name=&actor=&action=&result=&since=&until=&limit=` (times in unix seconds)."""
    problems: list[tuple[str, str]] = []
    if unknown := sorted(set(q) - {"namespace", "name", "actor", "action", "result", "since", "until", "limit"}):
        problems += [(k, "unknown query parameter") for k in unknown]
    action = result = None
    if "action" in q:
        try:
            action = AuditAction(q["action"])
        except ValueError:
            problems.append(("action", f"expected one of {', '.join(a.value for a in AuditAction)}"))
    if "result" in q:
        try:
            result = AuditResult(q["result"])
        except ValueError:
            problems.append(("result", "expected ok or denied"))
    times: dict[str, float | None] = {}
    for key in ("since", "until"):
        try:
            times[key] = float(q[key]) if key in q else None
        except ValueError:
            problems.append((key, "expected unix seconds"))
    limit = q.get("limit", "100")
    # isascii: str.isdigit() is true for '²' and other digits int() refuses
    if not (limit.isascii() and limit.isdigit()) or not 1 <= int(limit) <= MAX_QUERY_LIMIT:
        problems.append(("limit", f"expected a whole number from 1 to {MAX_QUERY_LIMIT}"))
    if problems:
        return Rejection.invalid(problems)
    return AuditQuery(namespace=q.get("namespace"), name=q.get("name"), actor=q.get("actor"), action=action,
                      result=result, since=times.get("since"), until=times.get("until"), limit=int(limit))

"""The coordinator's secrets service: create, read, update, delete, list, tokens, rotation, delivery, audit.

An adapter over the `Store` port; the decisions it uses live in pure modules (`envelope` for the crypto,
`tokens` for token checks, `audit` for records and retention). Every method takes the `Caller` (who, from
where, which role) and returns a value or a `Rejection` — the expected "no"s (invalid input 400, denied 403,
not found 404, conflict 409, expired 410) are values the REST layer maps with `rejection.status`. Exceptions
are left for failures: the store (`StoreError`), a ciphertext that does not decrypt (`EnvelopeError`: a damaged
store or a wrong master key), a keyring that does not fit the store (`MasterKeyError`).

Store layout (only ciphertext and wrapped keys ever reach the store):

    /secrets/s/<ns>/<name>               metadata JSON: uid, audiences, immutable, ttl, versions (numbers, times,
                                         key names) — never values
    /secrets/v/<ns>/<name>/<version:010> {version, createdAt, createdBy, dataKey: {keyId, key}, values: {k: ct}}
    /secrets/tokens/<ns>/<name>/<jti>    token record: audience, expiry, max uses, uses, revoked (never the token)
    /secrets/keys/<key id>               key check: proves at startup that a key with this id is the same key
    /secrets/audit/<µs>-<suffix>         audit records (see `audit`)

Versions: an update with data writes version n+1 under a fresh data key; older versions stay readable by
number; the oldest are dropped past `Limits.max_versions` (like Vault's KV max_versions). A secret's TTL counts
from its active version's creation: updating the value renews it.

Housekeeping for the adapter that owns the service: `flush_audit()` about every second and at shutdown (metadata
reads and refusals are audited in batches), `prune()` about hourly (audit retention, expired token records).

The API values and input validation (`Caller`, `Rejection`, `SecretInfo`, the store key layout, the field checks)
live in the pure `coordinator.secrets.model`.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import logging
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from broker.wire.schema import ID_MAX_LEN, valid_id
from coordinator.secrets import envelope, tokens
from coordinator.secrets.audit import (
    TXN_CHUNK,
    AuditAction,
    AuditLog,
    AuditQuery,
    AuditRecord,
    AuditResult,
    AuditRetention,
)
from coordinator.secrets.envelope import Binding, Keyring, Rng, SealedVersion
from coordinator.secrets.masterkey import KEY_ENV, MasterKeyError
from coordinator.secrets.model import (
    CAS_RETRIES,
    KEYS,
    META,
    TOKENS,
    VERSIONS,
    Caller,
    IssuedToken,
    Limits,
    Rejection,
    RejectKind,
    Revealed,
    Role,
    Rotation,
    SecretInfo,
    VersionInfo,
    audience_problems,
    busy,
    data_problems,
    human,
    keys_detail,
    meta_key,
    name_problems,
    token_denied,
    token_key,
    ttl_value,
    version_key,
    version_problems,
)
from coordinator.secrets.tokens import SigningKeys, TokenRecord, TokenRejected
from coordinator.store import Conflict, Entry, Op, Store, delete, put

log = logging.getLogger(__name__)

async def secrets_present(store: Store) -> bool:
    """Whether the store holds any secret version (startup: decides whether a missing master key is fatal)."""
    return bool(await store.list(VERSIONS))


class SecretsService:
    def __init__(self, store: Store, keyring: Keyring, *, clock: Callable[[], float], limits: Limits | None = None,
                 audit_retention: AuditRetention | None = None, rng: Rng = secrets.token_bytes) -> None:
        """Use `open()`, which also checks the keyring against the store."""
        self.store = store
        self.clock = clock
        self.limits = limits or Limits()
        self.rng = rng
        self.audit = AuditLog(store, clock=clock, retention=audit_retention)
        self._keyring = keyring
        self._signing = SigningKeys(keyring)

    @classmethod
    async def open(cls, store: Store, keyring: Keyring, *, clock: Callable[[], float], limits: Limits | None = None,
                   audit_retention: AuditRetention | None = None,
                   rng: Rng = secrets.token_bytes) -> SecretsService:
        """A service over `store`; raises MasterKeyError if `keyring` cannot read what the store holds."""
        service = cls(store, keyring, clock=clock, limits=limits, audit_retention=audit_retention, rng=rng)
        await service._check_keyring(keyring)
        return service

    @property
    def keyring(self) -> Keyring:
        return self._keyring

    # ---- create / get / list / update / delete -----------------------------------------------------------------

    async def create(self, namespace: str, name: str, data: Mapping[str, bytes], *, caller: Caller,
                     audiences: Sequence[str] = (), ttl: str | float | None = None,
                     immutable: bool = False) -> SecretInfo | Rejection:
        """Version 1 of a new secret. Rejections: INVALID (400), DENIED (403), CONFLICT `exists` (409)."""
        audit = self._record(AuditAction.CREATE, caller, namespace, name)
        if (denied := self._require_admin(caller)) is not None:
            return await self._deny(audit, denied)
        problems = [*name_problems(namespace, name), *data_problems(data, self.limits),
                    *audience_problems(audiences, self.limits)]
        ttl_s = None
        if ttl is not None:
            ttl_s, ttl_errors = ttl_value(ttl, "ttl", self.limits.min_ttl_s, self.limits.max_ttl_s)
            problems += ttl_errors
        if not isinstance(immutable, bool):
            problems.append(("immutable", "must be true or false"))
        if problems:
            return await self._deny(audit, Rejection.invalid(problems))
        now = self.clock()
        version = VersionInfo(1, now, tuple(sorted(data)), caller.name)
        info = SecretInfo(namespace, name, secrets.token_hex(8), tuple(audiences), immutable, ttl_s, now, now, 1,
                          (version,))
        ops = [put(meta_key(namespace, name), _dump(info.to_json()), expect=0),
               put(version_key(namespace, name, 1), self._seal(info, version, data), expect=0),
               self.audit.op(dataclasses.replace(audit, version=1, detail=keys_detail(data)))]
        try:
            await self.store.txn(ops)
        except Conflict:
            return await self._deny(audit, Rejection(RejectKind.CONFLICT, f"secret {namespace}/{name} already "
                                                     "exists; update it instead", "name", "exists"))
        await self.audit.maybe_prune()
        return info

    async def get(self, namespace: str, name: str, *, caller: Caller) -> SecretInfo | Rejection:
        """Metadata (never values). Rejections: INVALID, DENIED (no API role), NOT_FOUND."""
        audit = self._record(AuditAction.GET, caller, namespace, name)
        if caller.role is Role.NONE:
            return await self._deny(audit, Rejection(RejectKind.DENIED, "reading metadata needs an API credential"))
        found = await self._load(namespace, name)
        if isinstance(found, Rejection):
            return await self._deny(audit, found)
        await self.audit.add(dataclasses.replace(audit, version=found[0].active_version))
        return found[0]

    async def list(self, namespace: str | None = None, *, caller: Caller) -> builtins.list[SecretInfo] | Rejection:
        """Metadata of every secret, or of one namespace's, sorted by namespace and name (not audited)."""
        if caller.role is Role.NONE:
            return Rejection(RejectKind.DENIED, "listing secrets needs an API credential")
        if namespace is not None and (problems := name_problems(namespace, "x")):
            return Rejection.invalid(problems)
        entries = await self.store.list(META + (f"{namespace}/" if namespace is not None else ""))
        return [SecretInfo.from_json(json.loads(e.value)) for e in entries]

    async def update(self, namespace: str, name: str, *, caller: Caller, data: Mapping[str, bytes] | None = None,
                     audiences: Sequence[str] | None = None, ttl: str | float | None = None,
                     expect_version: int | None = None) -> SecretInfo | Rejection:
        """New data → a new version under a fresh data key; audiences/ttl alone change metadata only. Rejections:
        INVALID, DENIED, NOT_FOUND, CONFLICT `immutable` (any update of an immutable secret) or
        `version-mismatch` (`expect_version` is not the active version)."""
        audit = self._record(AuditAction.UPDATE, caller, namespace, name)
        if (denied := self._require_admin(caller)) is not None:
            return await self._deny(audit, denied)
        problems = name_problems(namespace, name)
        if data is not None:
            problems += data_problems(data, self.limits)
        if audiences is not None:
            problems += audience_problems(audiences, self.limits)
        ttl_s = None
        if ttl is not None:
            ttl_s, ttl_errors = ttl_value(ttl, "ttl", self.limits.min_ttl_s, self.limits.max_ttl_s)
            problems += ttl_errors
        if expect_version is not None:
            problems += [("expectVersion", m) for _, m in version_problems(expect_version)]
        if data is None and audiences is None and ttl is None:
            problems.append(("", "nothing to update: give data, audiences or ttl"))
        if problems:
            return await self._deny(audit, Rejection.invalid(problems))
        for _ in range(CAS_RETRIES):
            found = await self._load(namespace, name)
            if isinstance(found, Rejection):
                return await self._deny(audit, found)
            info, entry = found
            if info.immutable:
                return await self._deny(audit, Rejection(RejectKind.CONFLICT, f"secret {namespace}/{name} is "
                                                         "immutable: delete and re-create it", "", "immutable"))
            if expect_version is not None and expect_version != info.active_version:
                return await self._deny(audit, Rejection(
                    RejectKind.CONFLICT, f"active version is {info.active_version}, not {expect_version}",
                    "expectVersion", "version-mismatch"))
            new, ops = self._updated(info, caller, data, audiences, ttl_s)
            detail = keys_detail(data) if data is not None else "metadata"
            ops = [put(entry.key, _dump(new.to_json()), expect=entry.mod_revision), *ops,
                   self.audit.op(dataclasses.replace(audit, version=new.active_version, detail=detail))]
            try:
                await self.store.txn(ops)
            except Conflict:
                continue  # changed under us: decide again from the new state
            await self.audit.maybe_prune()
            return new
        return await self._deny(audit, busy(namespace, name))

    def _updated(self, info: SecretInfo, caller: Caller, data: Mapping[str, bytes] | None,
                 audiences: Sequence[str] | None, ttl_s: float | None) -> tuple[SecretInfo, builtins.list[Op]]:
        now = self.clock()
        new = dataclasses.replace(info, updated_at=now,
                                  audiences=tuple(audiences) if audiences is not None else info.audiences,
                                  ttl_s=ttl_s if ttl_s is not None else info.ttl_s)
        if data is None:
            return new, []
        version = VersionInfo(info.active_version + 1, now, tuple(sorted(data)), caller.name)
        kept = (*info.versions, version)[-self.limits.max_versions:]
        dropped = [v.version for v in info.versions if v not in kept]
        new = dataclasses.replace(new, active_version=version.version, versions=kept)
        return new, [put(version_key(info.namespace, info.name, version.version), self._seal(new, version, data),
                         expect=0),
                     *(delete(version_key(info.namespace, info.name, v)) for v in dropped)]

    async def delete(self, namespace: str, name: str, *, caller: Caller) -> SecretInfo | Rejection:
        """The secret, every version and every token for it. Rejections: INVALID, DENIED, NOT_FOUND."""
        audit = self._record(AuditAction.DELETE, caller, namespace, name)
        if (denied := self._require_admin(caller)) is not None:
            return await self._deny(audit, denied)
        for _ in range(CAS_RETRIES):
            found = await self._load(namespace, name)
            if isinstance(found, Rejection):
                return await self._deny(audit, found)
            info, entry = found
            # tokens first (no access from here on), then versions: every chunk but the last goes ahead of the
            # transaction that removes the secret itself, so a store limiting ops per transaction (etcd: 128) can
            # delete any number of versions, and a delete cut short leaves a secret a retry finishes deleting —
            # never stray versions or tokens a new secret of the same name would inherit
            prefixes = (f"{TOKENS}{namespace}/{name}/", f"{VERSIONS}{namespace}/{name}/")
            doomed = [e.key for prefix in prefixes for e in await self.store.list(prefix)]
            ahead, last = doomed[:-TXN_CHUNK] if len(doomed) > TXN_CHUNK else [], doomed[-TXN_CHUNK:]
            for start in range(0, len(ahead), TXN_CHUNK):
                await self.store.txn([delete(k) for k in ahead[start:start + TXN_CHUNK]])
            detail = f"{len(info.versions)} version(s)"
            try:
                await self.store.txn([delete(entry.key, expect=entry.mod_revision), *map(delete, last),
                                      self.audit.op(dataclasses.replace(audit, version=info.active_version,
                                                                        detail=detail))])
            except Conflict:
                continue
            await self.audit.maybe_prune()
            return info
        return await self._deny(audit, busy(namespace, name))

    # ---- values ------------------------------------------------------------------------------------------------

    async def read(self, namespace: str, name: str, *, caller: Caller, version: int | None = None,
                   token: str | None = None, audience: str | None = None) -> Revealed | Rejection:
        """The values of a version (default: the active one), for an admin, or for anyone presenting an access
        `token` together with the `audience` it acts as. Rejections: INVALID, DENIED (no admin role and no token,
        or the token failed: `code` is `token-<failure>`), NOT_FOUND, EXPIRED (the secret's TTL passed)."""
        audit = self._record(AuditAction.ACCESS, caller, namespace, name, version=version, audience=audience or "")
        problems = name_problems(namespace, name) + version_problems(version)
        if token is not None and audience is None:
            problems.append(("audience", "an access token must be presented with the audience it acts as"))
        if problems:
            return await self._deny(audit, Rejection.invalid(problems))
        if token is None:
            if caller.role is not Role.ADMIN:
                return await self._deny(audit, Rejection(
                    RejectKind.DENIED, "reading a secret value needs an admin credential or an access token",
                    "token", "token-required"))
            return await self._reveal(namespace, name, version, audit)
        assert audience is not None
        claims = tokens.verify(self._signing, token, now=self.clock(), namespace=namespace, name=name,
                               audience=audience)
        if isinstance(claims, TokenRejected):
            return await self._deny(dataclasses.replace(audit, token_id=claims.token_id), token_denied(claims))
        return await self._reveal_with_token(claims, version, dataclasses.replace(audit, token_id=claims.token_id))

    async def values_for_delivery(self, namespace: str, name: str, *, node_id: str, version: int | None = None,
                                  audience: str | None = None) -> Revealed | Rejection:
        """The values to seal to `node_id` (which runs a consumer of the secret), audited as `deliver` from
        `node:<id>`. With `audience`, it must be one the secret allows. Rejections: INVALID, DENIED, NOT_FOUND,
        EXPIRED."""
        caller = Caller("coordinator", f"node:{str(node_id)[:ID_MAX_LEN]}", Role.ADMIN)
        audit = self._record(AuditAction.DELIVER, caller, namespace, name, version=version, audience=audience or "")
        problems = name_problems(namespace, name) + version_problems(version)
        if not valid_id(node_id):
            problems.append(("nodeId", f"{str(node_id)[:80]!r} is not a valid node id"))
        if problems:
            return await self._deny(audit, Rejection.invalid(problems))
        return await self._reveal(namespace, name, version, audit, audience=audience)

    async def _reveal(self, namespace: str, name: str, version: int | None, audit: AuditRecord, *,
                      audience: str | None = None) -> Revealed | Rejection:
        found = await self._load(namespace, name)
        if isinstance(found, Rejection):
            return await self._deny(audit, found)
        info = found[0]
        if audience is not None and audience not in info.audiences:
            return await self._deny(audit, Rejection(RejectKind.DENIED, f"audience {audience[:80]!r} is not allowed "
                                                     f"to read {namespace}/{name}", "audience", "wrong-audience"))
        revealed = await self._open(info, version)
        if isinstance(revealed, Rejection):
            return await self._deny(audit, revealed)
        await self.audit.add(dataclasses.replace(audit, version=revealed.version), durable=True)
        return revealed

    async def _reveal_with_token(self, claims: tokens.Claims, version: int | None,
                                 audit: AuditRecord) -> Revealed | Rejection:
        ns, name = claims.namespace, claims.name
        for _ in range(CAS_RETRIES):
            found = await self._load(ns, name)
            if isinstance(found, Rejection):
                return await self._deny(audit, found)
            info = found[0]
            entry = await self.store.get(token_key(ns, name, claims.token_id))
            record = TokenRecord.from_json(json.loads(entry.value)) if entry else None
            refused = tokens.admit(claims, record, now=self.clock(), secret_uid=info.uid,
                                   allowed_audiences=info.audiences)
            if refused is not None:
                return await self._deny(audit, token_denied(refused))
            assert record is not None and entry is not None
            revealed = await self._open(info, version)
            if isinstance(revealed, Rejection):
                return await self._deny(audit, revealed)
            done = dataclasses.replace(audit, version=revealed.version)
            if record.max_uses is None:
                await self.audit.add(done, durable=True)
                return revealed
            try:  # count the use with compare-and-swap: concurrent readers cannot exceed max_uses
                await self.store.txn([put(entry.key, _dump(record.used().to_json()), expect=entry.mod_revision),
                                      self.audit.op(dataclasses.replace(done, detail=f"use {record.uses + 1} of "
                                                                                     f"{record.max_uses}"))])
            except Conflict:
                continue
            return revealed
        return await self._deny(audit, busy(ns, name))

    async def _open(self, info: SecretInfo, version: int | None) -> Revealed | Rejection:
        if info.expired(self.clock()):
            return Rejection(RejectKind.EXPIRED, f"secret {info.namespace}/{info.name} expired at "
                             f"{utc_time(info.expires_at or 0.0)}; update it to renew", "", "secret-expired")
        wanted = info.version(version)
        if wanted is None:
            return Rejection(RejectKind.NOT_FOUND, f"secret {info.namespace}/{info.name} has no version {version}",
                             "version", "version-not-found")
        entry = await self.store.get(version_key(info.namespace, info.name, wanted.version))
        if entry is None:  # deleted between the two reads
            return Rejection(RejectKind.NOT_FOUND, f"secret {info.namespace}/{info.name} not found", "name",
                             "not-found")
        sealed = SealedVersion.from_json(json.loads(entry.value)["sealed"])
        binding = Binding(info.namespace, info.name, wanted.version)
        data = envelope.open_version(self._keyring, binding, sealed)
        return Revealed(info.namespace, info.name, wanted.version, data)

    # ---- tokens ------------------------------------------------------------------------------------------------

    async def issue_token(self, namespace: str, name: str, *, caller: Caller, audience: str,
                          ttl: str | float | None = None, max_uses: int | None = None) -> IssuedToken | Rejection:
        """An access token for one allowed audience; ttl default 1h, at most 24h. Rejections: INVALID (bad
        audience/ttl/maxUses, or an audience the secret does not allow), DENIED, NOT_FOUND, EXPIRED."""
        audit = self._record(AuditAction.TOKEN, caller, namespace, name, audience=str(audience)[:256])
        if (denied := self._require_admin(caller)) is not None:
            return await self._deny(audit, denied)
        problems = name_problems(namespace, name)
        if (problem := tokens.audience_problem(audience)) is not None:
            problems.append(("audience", problem))
        ttl_s, ttl_errors = ttl_value(tokens.DEFAULT_TTL_S if ttl is None else ttl, "ttl", tokens.MIN_TTL_S,
                                 tokens.MAX_TTL_S)
        problems += ttl_errors
        if (problem := tokens.max_uses_problem(max_uses)) is not None:
            problems.append(("maxUses", problem))
        if problems:
            return await self._deny(audit, Rejection.invalid(problems))
        assert ttl_s is not None
        found = await self._load(namespace, name)
        if isinstance(found, Rejection):
            return await self._deny(audit, found)
        info = found[0]
        if audience not in info.audiences:
            allowed = ", ".join(info.audiences) or "none: only admins can read it"
            return await self._deny(audit, Rejection(RejectKind.INVALID, f"audience: {audience!r} is not one the "
                                                     f"secret allows ({allowed})", "audience", "audience-not-allowed"))
        if info.expired(self.clock()):
            return await self._deny(audit, Rejection(RejectKind.EXPIRED, f"secret {namespace}/{name} expired",
                                                     "", "secret-expired"))
        now = self.clock()
        record = TokenRecord(secrets.token_hex(16), namespace, name, info.uid, audience, now, now + ttl_s, max_uses,
                             issued_by=caller.name)
        token = tokens.mint(self._signing, record)
        detail = f"ttl {human(ttl_s)}" + (f", max uses {max_uses}" if max_uses is not None else "")
        await self.store.txn([put(token_key(namespace, name, record.token_id), _dump(record.to_json()), expect=0),
                              self.audit.op(dataclasses.replace(audit, token_id=record.token_id, detail=detail))])
        return IssuedToken(token, record)

    async def revoke_token(self, token_id: str, *, caller: Caller) -> TokenRecord | Rejection:
        """Revoke by token id (jti). Rejections: DENIED, NOT_FOUND."""
        audit = self._record(AuditAction.TOKEN_REVOKE, caller, "", "", token_id=str(token_id)[:64])
        if (denied := self._require_admin(caller)) is not None:
            return await self._deny(audit, denied)
        for _ in range(CAS_RETRIES):
            entry = None
            if isinstance(token_id, str) and re.fullmatch(r"[0-9a-f]{32}", token_id):
                entry = next((e for e in await self.store.list(TOKENS) if e.key.endswith("/" + token_id)), None)
            if entry is None:
                return await self._deny(audit, Rejection(RejectKind.NOT_FOUND, f"token {str(token_id)[:64]!r} not "
                                                         "found", "token", "not-found"))
            record = dataclasses.replace(TokenRecord.from_json(json.loads(entry.value)), revoked=True)
            try:
                await self.store.txn([put(entry.key, _dump(record.to_json()), expect=entry.mod_revision),
                                      self.audit.op(dataclasses.replace(audit, namespace=record.namespace,
                                                                        name=record.name, audience=record.audience))])
            except Conflict:
                continue
            return record
        return await self._deny(audit, busy("token", token_id))

    async def list_tokens(self, namespace: str, name: str, *,
                          caller: Caller) -> builtins.list[TokenRecord] | Rejection:
        """The token records of one secret (never the tokens themselves)."""
        if caller.role is Role.NONE:
            return Rejection(RejectKind.DENIED, "listing tokens needs an API credential")
        if problems := name_problems(namespace, name):
            return Rejection.invalid(problems)
        return [TokenRecord.from_json(json.loads(e.value)) for e in await self.store.list(f"{TOKENS}{namespace}/"
                                                                                          f"{name}/")]

    # ---- master key rotation -----------------------------------------------------------------------------------

    async def rotate_master_key(self, keyring: Keyring, *, caller: Caller) -> Rotation | Rejection:
        """Switch to `keyring` (from `masterkey.rotate`: the old keys plus a new active one) and re-wrap every
        version's data key under its active key. Values are not re-encrypted; reads go on throughout (each
        envelope names its key, and the keyring holds old and new). Idempotent: run it again after a crash (a
        write racing the switch can, rarely, leave a version under the old key, still readable; a rerun moves it).
        Raises MasterKeyError if `keyring` lacks a key the store still uses. Rejections: DENIED."""
        audit = self._record(AuditAction.ROTATE_MASTER_KEY, caller, "", "")
        if (denied := self._require_admin(caller)) is not None:
            return await self._deny(audit, denied)
        await self._check_keyring(keyring)
        self._keyring, self._signing = keyring, SigningKeys(keyring)
        rewrapped = 0
        for _ in range(3):  # a request that sealed under the old key just before the switch may commit after a pass
            entries = await self.store.list(VERSIONS)
            done = [await self._rewrap(entry) for entry in entries]
            rewrapped += sum(done)
            if not any(done):
                break
        detail = f"active key {keyring.active_id}; {rewrapped} of {len(entries)} data key(s) re-wrapped"
        await self.audit.add(dataclasses.replace(audit, detail=detail), durable=True)
        log.info("secrets master key rotation: %s", detail)
        return Rotation(keyring.active_id, rewrapped, len(entries))

    async def _rewrap(self, entry: Entry | None) -> int:
        for _ in range(CAS_RETRIES):
            if entry is None:
                return 0  # deleted meanwhile
            doc = json.loads(entry.value)
            sealed = SealedVersion.from_json(doc["sealed"])
            if sealed.wrapped.key_id == self._keyring.active_id:
                return 0
            ns, name, _version = entry.key[len(VERSIONS):].split("/")
            binding = Binding(ns, name, int(doc["version"]))
            wrapped = envelope.rewrap(self._keyring, binding, sealed.wrapped, rng=self.rng)
            doc["sealed"] = sealed.with_wrapped(wrapped).to_json()
            try:
                await self.store.txn([put(entry.key, _dump(doc), expect=entry.mod_revision)])
                return 1
            except Conflict:
                entry = await self.store.get(entry.key)
        raise MasterKeyError(f"re-wrapping {entry.key if entry else '?'} kept conflicting; run the rotation again")

    async def _check_keyring(self, keyring: Keyring) -> None:
        """Every key the store knows must be the same key here, and every key a version uses must be present."""
        checks = {e.key[len(KEYS):]: e.value.decode() for e in await self.store.list(KEYS)}
        for key_id, key in keyring.keys.items():
            if key_id in checks and not envelope.key_matches(key, checks[key_id]):
                raise MasterKeyError(f"master key {key_id!r} is not the key the secrets were written with: restore "
                                     f"the right key file (or {KEY_ENV})")
        if set(checks) - set(keyring.keys):
            used = {json.loads(e.value)["sealed"]["dataKey"]["keyId"] for e in await self.store.list(VERSIONS)}
            missing = sorted(used - set(keyring.keys))
            if missing:
                raise MasterKeyError(f"secrets in the store are wrapped by master key(s) {', '.join(missing)}, which "
                                     f"the keyring lacks: restore the key file that holds them (or {KEY_ENV}); "
                                     "a new key cannot decrypt them")
        new = [put(KEYS + kid, envelope.key_check(key, rng=self.rng).encode(), expect=0)
               for kid, key in keyring.keys.items() if kid not in checks]
        if new:
            try:
                await self.store.txn(new)
            except Conflict:
                await self._check_keyring(keyring)  # another coordinator wrote them first: verify theirs

    # ---- audit -------------------------------------------------------------------------------------------------

    async def audit_log(self, query: AuditQuery, *, caller: Caller) -> builtins.list[AuditRecord] | Rejection:
        """Audit records matching `query`, newest first."""
        if caller.role is not Role.ADMIN:
            return Rejection(RejectKind.DENIED, "the secrets audit log needs an admin credential")
        return await self.audit.query(query)

    async def flush_audit(self) -> None:
        """Write buffered audit records: call every second or so, and at shutdown."""
        await self.audit.flush()

    async def prune(self) -> tuple[int, int]:
        """Apply audit retention and drop records of tokens expired over a day ago: (audit, token) counts."""
        removed_audit = await self.audit.prune()
        cutoff = self.clock() - 86400
        stale = [e.key for e in await self.store.list(TOKENS)
                 if TokenRecord.from_json(json.loads(e.value)).expires_at < cutoff]
        for start in range(0, len(stale), 1000):
            await self.store.txn([delete(k) for k in stale[start:start + 1000]])
        return removed_audit, len(stale)

    # ---- helpers -----------------------------------------------------------------------------------------------

    def _seal(self, info: SecretInfo, version: VersionInfo, data: Mapping[str, bytes]) -> bytes:
        binding = Binding(info.namespace, info.name, version.version)
        sealed = envelope.seal_version(self._keyring, binding, data, rng=self.rng)
        return _dump({"version": version.version, "createdAt": version.created_at, "createdBy": version.created_by,
                      "sealed": sealed.to_json()})

    async def active_versions(self, wanted: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """The active version of each (namespace, name) that exists: the coordinator's own bookkeeping for
        delivery (which version to seal), not an API read, so not audited. Missing secrets are left out."""
        out: dict[tuple[str, str], int] = {}
        for namespace, name in wanted:
            found = await self._load(namespace, name)
            if not isinstance(found, Rejection):
                out[(namespace, name)] = found[0].active_version
        return out

    async def _load(self, namespace: str, name: str) -> tuple[SecretInfo, Entry] | Rejection:
        if problems := name_problems(namespace, name):
            return Rejection.invalid(problems)
        entry = await self.store.get(meta_key(namespace, name))
        if entry is None:
            return Rejection(RejectKind.NOT_FOUND, f"secret {namespace}/{name} not found", "name", "not-found")
        return SecretInfo.from_json(json.loads(entry.value)), entry

    def _record(self, action: AuditAction, caller: Caller, namespace: object, name: object, *,
                version: int | None = None, audience: str = "", token_id: str = "") -> AuditRecord:
        return AuditRecord(self.clock(), action, caller.name, caller.source, str(namespace), str(name),
                           version if isinstance(version, int) and not isinstance(version, bool) else None,
                           audience=audience if isinstance(audience, str) else "", token_id=token_id)

    async def _deny(self, audit: AuditRecord, rejection: Rejection) -> Rejection:
        await self.audit.add(dataclasses.replace(audit, result=AuditResult.DENIED,
                                                 reason=f"{rejection.code or rejection.kind}: {rejection.reason}"))
        return rejection

    @staticmethod
    def _require_admin(caller: Caller) -> Rejection | None:
        if caller.role is Role.ADMIN:
            return None
        return Rejection(RejectKind.DENIED, f"this needs an admin credential (caller {caller.name!r} has role "
                         f"{caller.role.value})", "", "admin-required")


def _dump(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def utc_time(epoch: float) -> str:
    """A Unix time as people read it in a message (ISO 8601, UTC, to the second)."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

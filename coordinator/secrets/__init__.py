"""Secrets (issue 7): envelope encryption at rest, audience-bound access tokens, audit log, delivery to nodes.

- `envelope`  — pure: AES-256-GCM data keys per version wrapped by master keys (`Keyring`), AAD-bound.
- `masterkey` — adapter: the master key file / `CLOUDLESS_SECRETS_KEY`, first-start creation, rotation.
- `tokens`    — pure: HS256 access tokens (key derived from the master key), verification as values.
- `audit`     — audit records, queries and retention; `AuditLog` writes them to the store.
- `model`     — pure: the values the API sees (`Caller`, `Rejection`, `SecretInfo`, …), key layout, field checks.
- `service`   — `SecretsService`, the API the REST layer, the CLI and the delivery path call.

Startup, in the coordinator:

    present = await secrets_present(store)
    loaded = masterkey.load(KeySource.from_environ(args.secrets_key_file, os.environ), secrets_present=present)
    if loaded.created:
        log.warning("created master key at %s — back it up", loaded.path)
    service = await SecretsService.open(store, loaded.keyring, clock=time.time)
"""

from coordinator.secrets.audit import AuditAction, AuditQuery, AuditRecord, AuditResult, AuditRetention
from coordinator.secrets.envelope import EnvelopeError, Keyring, MasterKey, Plaintext, SecretsError
from coordinator.secrets.masterkey import KEY_ENV, KeySource, LoadedKeys, MasterKeyError
from coordinator.secrets.model import (
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
    parse_duration,
)
from coordinator.secrets.service import SecretsService, secrets_present
from coordinator.secrets.tokens import TokenFailure, TokenRecord

__all__ = [
    "KEY_ENV", "AuditAction", "AuditQuery", "AuditRecord", "AuditResult", "AuditRetention", "Caller", "EnvelopeError",
    "IssuedToken", "KeySource", "Keyring", "Limits", "LoadedKeys", "MasterKey", "MasterKeyError", "Plaintext",
    "RejectKind", "Rejection", "Revealed", "Role", "Rotation", "SecretInfo", "SecretsError", "SecretsService",
    "TokenFailure", "TokenRecord", "VersionInfo", "parse_duration", "secrets_present",
]

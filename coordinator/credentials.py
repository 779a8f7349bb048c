"""The API-token digest file (DATA_DIR/api-tokens.json): which bearer tokens the REST API accepts, and as what.

Format: `{"tokens": [{"name": str, "sha256": hex digest of the raw token, "role": "admin" | "viewer"}]}`; a
missing role is admin. Only digests are stored, 0600; the raw tokens are printed once by whoever mints them
(`cloudless up`) and kept by the admins. `write_token_digests` writes the file, `load_token_digests` reads it
for the API (CredentialsError, a configuration error, if it is missing or malformed).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from coordinator.errors import CoordinatorError
from coordinator.files import atomic_write

TOKENS_FILE = "api-tokens.json"
ROLES = ("admin", "viewer")


class CredentialsError(CoordinatorError):
    """The token file is missing or not valid (the coordinator refuses to start)."""


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def load_token_digests(data_dir: Path) -> dict[str, tuple[str, str]]:
    """sha256 digest -> (name, role); role is admin (default) or viewer."""
    path = data_dir / TOKENS_FILE
    try:
        doc = json.loads(path.read_text())
        tokens = {t["sha256"]: (t["name"], t.get("role", "admin")) for t in doc["tokens"]}
        bad = [name for name, role in tokens.values() if role not in ROLES]
        if bad:
            raise CredentialsError(f"{path}: token {bad[0]!r}: role must be admin or viewer")
        return tokens
    except FileNotFoundError:
        raise CredentialsError(f"{path} is missing: create an admin token with `cloudless up` "
                               "(or write {\"tokens\": [{\"name\": ..., \"sha256\": ...}]})") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise CredentialsError(f"{path}: not a valid token file ({exc})") from None


def write_token_digests(data_dir: Path, tokens: dict[str, str], roles: dict[str, str] | None = None) -> None:
    """name -> raw token (role per name, default admin); only the sha256 digests are stored (0600)."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    doc = {"tokens": [{"name": n, "sha256": token_digest(t), "role": (roles or {}).get(n, "admin")}
                      for n, t in tokens.items()]}
    atomic_write(data_dir / TOKENS_FILE, json.dumps(doc).encode(), mode=0o600)

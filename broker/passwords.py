"""Password hashes in Mosquitto's `$7$` format (PBKDF2-HMAC-SHA512), so one password file serves both the
embedded broker and Mosquitto (mosquitto_passwd(1)).

Line format: `username:$7$<iterations>$<base64 salt>$<base64 hash>`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping

from broker.errors import BrokerConfigError

DEFAULT_ITERATIONS = 20_000
_SALT_LEN = 12
_HASH_LEN = 64


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = DEFAULT_ITERATIONS) -> str:
    salt = secrets.token_bytes(_SALT_LEN) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, _HASH_LEN)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        _, scheme, iterations, salt_b64, hash_b64 = encoded.split("$")
        if scheme != "7":
            return False
        salt = base64.b64decode(salt_b64, validate=True)
        expected = base64.b64decode(hash_b64, validate=True)
        rounds = int(iterations)
        secret = password.encode()  # a lone surrogate cannot match any hash (UnicodeEncodeError is a ValueError)
    except (ValueError, TypeError):
        return False
    if not 1 <= rounds <= 10_000_000:
        return False
    # Exactly the full digest, as Mosquitto requires: deriving only len(expected) bytes would let a truncated
    # (or empty) stored hash verify against a prefix, down to a few guessable bytes.
    if len(expected) != _HASH_LEN:
        return False
    digest = hashlib.pbkdf2_hmac("sha512", secret, salt, rounds, _HASH_LEN)
    return hmac.compare_digest(digest, expected)


def parse_password_file(text: str, *, source: str = "password file") -> dict[str, str]:
    users: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        username, sep, encoded = line.partition(":")
        if not sep or not username or not encoded.startswith("$7$"):
            raise BrokerConfigError(f"{source}:{lineno}: expected 'username:$7$...' (mosquitto_passwd format)")
        users[username] = encoded
    return users


def check_username(username: str) -> None:
    """Mosquitto's password file splits on the first ':' and lines end at newlines."""
    if not username or any(c in username for c in ":\n\r\x00") or len(username) > 256:
        raise BrokerConfigError(f"username {username[:40]!r}: 1-256 characters, no ':' or line breaks")


def render_password_file(users: Mapping[str, str]) -> str:
    for name in users:
        check_username(name)
    return "".join(f"{name}:{encoded}\n" for name, encoded in sorted(users.items()))

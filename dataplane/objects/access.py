"""Access keys and bucket permissions for the S3 layer: which operations a grant level allows, and a `Keyring` (a
snapshot of the keys) that answers the S3 adapter's two synchronous questions: the secret of an access key
(`sigv4.SecretLookup`) and whether a key may perform an operation on a bucket (`handlers.Authorizer`). Pure: the
gateway builds a new `Keyring` from `Metadata` whenever the keys change (`cloudless storage keys ...`).

Levels, each including the one before: `read` (list, get, head), `write` (put, copy into, delete, multipart),
`admin` (create and delete the bucket). A grant names a bucket or `*` (every bucket); ListBuckets needs a grant on
`*`. A key with no grant for a bucket may do nothing there."""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable, Iterable
from enum import IntEnum

from dataplane.objects.model import AccessKey
from dataplane.s3.routing import Operation

ACCESS_KEY_PREFIX = "CLK"
_ID_ALPHABET = string.ascii_uppercase + string.digits


def new_key(owner: str, buckets: tuple[tuple[str, str], ...], *,
            token: Callable[[int], str] = secrets.token_urlsafe) -> AccessKey:
    """Fresh key material: an access key id of AWS's shape (`CLK` + 17 upper-case letters and digits, 20 in all) and a
    40-character URL-safe secret, for `owner` with `buckets` grants. One generator for the REST route and the
    gateway's bootstrap admin key."""
    key_id = ACCESS_KEY_PREFIX + "".join(secrets.choice(_ID_ALPHABET) for _ in range(17))
    return AccessKey(key_id, token(30), owner, buckets)


class Level(IntEnum):
    READ = 1
    WRITE = 2
    ADMIN = 3


NEEDS: dict[Operation, Level] = {
    Operation.LIST_BUCKETS: Level.READ,
    Operation.HEAD_BUCKET: Level.READ,
    Operation.GET_BUCKET_LOCATION: Level.READ,
    Operation.LIST_OBJECTS_V2: Level.READ,
    Operation.GET_OBJECT: Level.READ,
    Operation.HEAD_OBJECT: Level.READ,
    Operation.LIST_PARTS: Level.READ,
    Operation.PUT_OBJECT: Level.WRITE,
    Operation.COPY_OBJECT: Level.WRITE,
    Operation.DELETE_OBJECT: Level.WRITE,
    Operation.DELETE_OBJECTS: Level.WRITE,
    Operation.CREATE_MULTIPART_UPLOAD: Level.WRITE,
    Operation.UPLOAD_PART: Level.WRITE,
    Operation.COMPLETE_MULTIPART_UPLOAD: Level.WRITE,
    Operation.ABORT_MULTIPART_UPLOAD: Level.WRITE,
    Operation.CREATE_BUCKET: Level.ADMIN,
    Operation.DELETE_BUCKET: Level.ADMIN,
}


def parse_level(value: str) -> Level | str:
    """The level named `value`, or why not (for `cloudless storage keys` and decoding)."""
    try:
        return Level[value.upper()]
    except KeyError:
        return f"permission must be one of read, write, admin (got {value!r})"


def validate(key: AccessKey) -> list[str]:
    """What is wrong with `key`, field by field (empty: nothing)."""
    problems = []
    if not (16 <= len(key.access_key) <= 128 and key.access_key.isascii() and key.access_key.isalnum()):
        problems.append("access_key must be 16-128 ASCII letters and digits")
    if not (20 <= len(key.secret) <= 128 and key.secret.isascii() and key.secret.isprintable()):
        problems.append("secret must be 20-128 printable ASCII characters")
    for bucket, level in key.buckets:
        if not bucket or "/" in bucket:
            problems.append(f"buckets: {bucket!r} is not a bucket name or *")
        if isinstance(parse_level(level), str):
            problems.append(f"buckets: {bucket}: {parse_level(level)}")
    return problems


class Keyring:
    def __init__(self, keys: Iterable[AccessKey]) -> None:
        self._keys = {k.access_key: k for k in keys}

    def secret(self, access_key: str) -> str | None:
        key = self._keys.get(access_key)
        return key.secret if key else None

    def level(self, access_key: str, bucket: str) -> Level | None:
        key = self._keys.get(access_key)
        if key is None:
            return None
        granted = [parse_level(level) for name, level in key.buckets if name in (bucket, "*")]
        levels = [g for g in granted if isinstance(g, Level)]
        return max(levels) if levels else None

    def authorize(self, access_key: str, operation: Operation, bucket: str) -> bool:
        level = self.level(access_key, bucket or "*")
        return level is not None and level >= NEEDS[operation]

"""S3 access keys made by the cluster itself: new key material, and the admin key `cloudless up` bootstraps.

The bootstrap (`ensure_admin_credentials`): on a coordinator's start with `--s3-admin-credentials PATH`, when PATH
does not hold a key the store knows (first start, a wiped store), a new admin key (every bucket, `admin`) is stored
(its secret sealed) and PATH is written 0600 as JSON in the format `cloudless storage` reads:
{"endpoint", "accessKeyId", "secretAccessKey", "region", "ca"}. A key that still exists is kept as it is (the
endpoint is refreshed when it moved). A PATH that exists but cannot be read or parsed fails the start naming it
(`CredentialsUnreadable`): only a missing file makes a new key."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Protocol

from dataplane.objects import access
from dataplane.objects.model import AccessKey

log = logging.getLogger(__name__)



class KeyStore(Protocol):
    async def get_key(self, access_key: str) -> AccessKey | None: ...

    async def put_key(self, key: AccessKey) -> None: ...


class CredentialsUnreadable(Exception):
    """The admin credentials file exists but cannot be read or is not a credentials document: the start fails naming
    it, rather than making a new admin key and leaving the old one valid with no file naming it (review 4, L5)."""

    def __init__(self, path: Path, why: str) -> None:
        self.path, self.why = path, why
        super().__init__(f"S3 admin credentials {path}: {why} (fix or remove the file)")


def _read(path: Path) -> dict[str, Any] | None:
    """The document at `path`; None only when there is no file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CredentialsUnreadable(path, exc.strerror or str(exc)) from exc
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise CredentialsUnreadable(path, f"not JSON ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("accessKeyId"), str):
        raise CredentialsUnreadable(path, "field accessKeyId: missing or not a string")
    return doc


async def ensure_admin_credentials(keys: KeyStore, path: Path, *, endpoint: str, region: str, ca: Path) -> bool:
    """Make sure `path` names an admin key the store knows (see the module docstring). True if a key was made."""
    from cloudless.s3_client import write_storage_config

    doc = _read(path)
    known = await keys.get_key(doc["accessKeyId"]) if doc is not None else None
    made = known is None
    if known is None:
        known = access.new_key("admin", (("*", "admin"),))
        await keys.put_key(known)
        log.warning("created the admin S3 access key %s (credentials in %s)", known.access_key, path)
    fresh = {"endpoint": endpoint, "accessKeyId": known.access_key, "secretAccessKey": known.secret,
             "region": region, "ca": str(ca)}
    if fresh != doc:
        write_storage_config(path, endpoint=endpoint, access_key=known.access_key, secret=known.secret,
                             region=region, ca=str(ca))
    return made

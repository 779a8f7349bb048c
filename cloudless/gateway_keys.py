"""S3 access keys made by the cluster itself: new key material, and the admin key `cloudless up` bootstraps.

The bootstrap (`ensure_admin_credentials`): on a coordinator's start with `--s3-admin-credentials PATH`, when PATH
does not hold a key the store knows (first start, a wiped store), a new admin key (every bucket, `admin`) is stored
(its secret sealed) and PATH is written 0600 as JSON in the format `cloudless storage` reads:
{"endpoint", "accessKeyId", "secretAccessKey", "region", "ca"}. A key that still exists is kept as it is (the
endpoint is refreshed when it moved)."""

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


def _read(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("accessKeyId"), str) else None


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

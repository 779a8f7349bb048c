"""Paged lists, Kubernetes style (pure): `limit` and an opaque `continue` token (issue 17).

Theory of operation. A list is a sequence of items in a stable order by key (a node's id; a workload's
(namespace, name); an event's id). A request asks for at most `limit` items after the key its `continue` token
holds; the answer carries a new token (the last key it returned) while more items follow, and how many do
(`remainingItemCount`). The server keeps nothing between pages: the token is the cursor, so a client may take its
time and any coordinator can serve the next page.

Consistency between pages (documented in docs/api.md): each item present for the whole walk is returned exactly
once, in key order. An item added or removed during the walk is seen if its key is after the cursor when the page
that would hold it is read, and not seen if it is behind the cursor (items are never repeated or skipped because
of other items coming and going). Item contents are as of the moment their page was read.

The token is base64url of a small JSON object `{"v": 1, "r": RESOURCE, "k": [key parts]}`: a token from another
list, of another shape or malformed is refused (SpecError naming `continue`), never guessed at.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from coordinator.errors import SpecError

DEFAULT_LIMIT = 500
MAX_LIMIT = 5000
TOKEN_VERSION = 1
MAX_TOKEN_CHARS = 2048

Part = str | int
_DIGITS = re.compile(r"[0-9]{1,9}")
K = TypeVar("K", bound=tuple[Part, ...])


@dataclass(frozen=True, slots=True)
class PageRequest:
    """`limit` items after `after` (None: from the start)."""

    limit: int
    after: tuple[Part, ...] | None = None


@dataclass(frozen=True, slots=True)
class Page(Generic[K]):
    """The keys of one page, the token for the next (None: this was the last) and how many items follow."""

    keys: list[K]
    continue_token: str | None
    remaining: int

    def metadata(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.continue_token is not None:
            out["continue"] = self.continue_token
            out["remainingItemCount"] = self.remaining
        return out


def parse_limit(raw: str | None, *, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT,
                field: str = "limit") -> int:
    if raw is None or raw == "":
        return default
    if not _DIGITS.fullmatch(raw):  # ASCII digits only: int() would also take " 5", "+5", "1_0" and "٥"
        raise SpecError(field, f"must be a whole number from 1 to {maximum}, got {raw[:40]!r}")
    value = int(raw)
    if not 1 <= value <= maximum:
        raise SpecError(field, f"must be from 1 to {maximum}, got {value}")
    return value


def page_request(query: Mapping[str, str], resource: str, shape: tuple[type, ...]) -> PageRequest:
    """`limit` and `continue` from a query string; SpecError naming the parameter for a bad one."""
    token = query.get("continue") or None
    return PageRequest(limit=parse_limit(query.get("limit")),
                       after=decode_continue(token, resource, shape) if token is not None else None)


def encode_continue(resource: str, key: tuple[Part, ...]) -> str:
    raw = json.dumps({"v": TOKEN_VERSION, "r": resource, "k": list(key)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_continue(token: str, resource: str, shape: tuple[type, ...]) -> tuple[Part, ...]:
    """The key a token holds; SpecError("continue", ...) unless it is a token of this list with a key of `shape`."""
    bad = SpecError("continue", "is not a continue token of this list: pass metadata.continue from the previous "
                    "page unchanged, with the same path (or start again without it)")
    if len(token) > MAX_TOKEN_CHARS:
        raise bad
    try:
        doc = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise bad from None
    if not isinstance(doc, dict) or doc.get("v") != TOKEN_VERSION or doc.get("r") != resource:
        raise bad
    key = doc.get("k")
    if not isinstance(key, list) or len(key) != len(shape):
        raise bad
    for part, kind in zip(key, shape, strict=True):
        if type(part) is not kind:  # exact: a bool is not an int here
            raise bad
    return tuple(key)


def page_of(keys: Sequence[K], req: PageRequest, resource: str) -> Page[K]:
    """The page of `keys` (sorted, unique) that `req` asks for."""
    start = 0 if req.after is None else bisect_right(keys, req.after)  # type: ignore[arg-type]
    end = min(len(keys), start + req.limit)
    chosen = list(keys[start:end])
    remaining = len(keys) - end
    token = encode_continue(resource, chosen[-1]) if remaining > 0 and chosen else None
    return Page(keys=chosen, continue_token=token, remaining=remaining)

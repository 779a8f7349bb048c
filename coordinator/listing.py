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
from dataclasses import dataclass, field
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
    # what else the list's token carries (whole numbers by name: an event list's `tail` window start, "floor")
    extra: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Page(Generic[K]):
    """The keys of one page, the token for the next (None: this was the last) and how many items follow."""

    keys: list[K]
    continue_token: str | None
    remaining: int | None  # None: not counted (a filter the server would have to scan for; as in Kubernetes)

    def metadata(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.continue_token is not None:
            out["continue"] = self.continue_token
            if self.remaining is not None:
                out["remainingItemCount"] = self.remaining
        return out


def parse_limit(raw: str | None, *, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT,
                field: str = "limit") -> int:
    if raw is None or raw == "":
        return default
    if not _DIGITS.fullmatch(raw):  # ASCII digits only: int() would also take " 5", "+5", "1_0" and non-ASCII digits
        raise SpecError(field, f"must be a whole number from 1 to {maximum}, got {raw[:40]!r}")
    value = int(raw)
    if not 1 <= value <= maximum:
        raise SpecError(field, f"must be from 1 to {maximum}, got {value}")
    return value


def page_request(query: Mapping[str, str], resource: str, shape: tuple[type, ...],
                 extra: tuple[str, ...] = ()) -> PageRequest:
    """`limit` and `continue` from a query string; SpecError naming the parameter for a bad one. `extra` names
    the whole numbers this list's tokens may carry besides the key."""
    token = query.get("continue") or None
    if token is None:
        return PageRequest(limit=parse_limit(query.get("limit")))
    key, more = decode_token(token, resource, shape, extra)
    return PageRequest(limit=parse_limit(query.get("limit")), after=key, extra=more)


def encode_continue(resource: str, key: tuple[Part, ...], extra: Mapping[str, int] | None = None) -> str:
    doc: dict[str, object] = {"v": TOKEN_VERSION, "r": resource, "k": list(key)}
    if extra:
        doc["x"] = dict(extra)
    raw = json.dumps(doc, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_continue(token: str, resource: str, shape: tuple[type, ...]) -> tuple[Part, ...]:
    """The key a token holds; SpecError("continue", ...) unless it is a token of this list with a key of `shape`."""
    return decode_token(token, resource, shape)[0]


def decode_token(token: str, resource: str, shape: tuple[type, ...],
                 extra: tuple[str, ...] = ()) -> tuple[tuple[Part, ...], dict[str, int]]:
    """The key and the extra numbers (only names in `extra`) a token holds; SpecError("continue", ...) unless it
    is a token of this list with a key of `shape`."""
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
    more = doc.get("x", {})
    if not isinstance(more, dict) or not set(more) <= set(extra) or any(type(v) is not int for v in more.values()):
        raise bad
    return tuple(key), more


def page_after(keys: list[K], more: bool, resource: str, *, remaining: int | None = None,
               extra: Mapping[str, int] | None = None) -> Page[K]:
    """A page found by walking from the cursor: `keys` it holds, whether more follow (a token then, with
    `extra`), and how many (None: not counted)."""
    token = encode_continue(resource, keys[-1], extra) if more and keys else None
    return Page(keys=keys, continue_token=token, remaining=remaining if token is not None else 0)


def page_of(keys: Sequence[K], req: PageRequest, resource: str) -> Page[K]:
    """The page of `keys` (sorted, unique) that `req` asks for."""
    start = 0 if req.after is None else bisect_right(keys, req.after)  # type: ignore[arg-type]
    end = min(len(keys), start + req.limit)
    chosen = list(keys[start:end])
    remaining = len(keys) - end
    token = encode_continue(resource, chosen[-1]) if remaining > 0 and chosen else None
    return Page(keys=chosen, continue_token=token, remaining=remaining)

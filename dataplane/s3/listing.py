"""ListObjectsV2 pagination as a pure function over a sorted source of objects (AWS S3 API reference,
ListObjectsV2): prefix filter, delimiter roll-up into CommonPrefixes, max-keys (at most 1000) counting keys and
prefixes together, start-after, and an opaque continuation token.

The token records the last entry returned and whether it was a key or a common prefix: resuming after a common
prefix "a/" skips every key under it, resuming after a key skips only keys up to it (a key "a/" itself can be a key
when the prefix is "a/", so the kind must be kept, not guessed from the trailing delimiter).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass

from dataplane.s3.backend import ObjectInfo
from dataplane.s3.errors import ErrorCode, S3Error, utf8, whole

MAX_KEYS = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class ListQuery:
    prefix: str = ""
    delimiter: str = ""
    max_keys: int = MAX_KEYS
    continuation_token: str | None = None
    start_after: str = ""


@dataclass(frozen=True, slots=True)
class ListPage:
    contents: tuple[ObjectInfo, ...]
    common_prefixes: tuple[str, ...]
    is_truncated: bool
    next_token: str | None


@dataclass(frozen=True, slots=True)
class Resume:
    """Where a listing continues: after `marker`, and past everything under it when it was a common prefix."""

    marker: str
    skip_prefix: bool


def encode_token(marker: str, *, prefix: bool) -> str:
    return base64.urlsafe_b64encode((("P" if prefix else "K") + marker).encode()).decode()


def decode_token(token: str) -> Resume | S3Error:
    try:
        raw = base64.urlsafe_b64decode(utf8(token)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    if not raw or raw[0] not in "PK":
        return S3Error(ErrorCode.INVALID_ARGUMENT, "the continuation token provided is incorrect")
    return Resume(raw[1:], raw[0] == "P")


def resume_point(query: ListQuery) -> Resume | S3Error:
    """Where the listing starts: the token wins over start-after (S3 ignores start-after with a token)."""
    if query.continuation_token is not None:
        return decode_token(query.continuation_token)
    return Resume(query.start_after, skip_prefix=False)


def parse_max_keys(value: str | None) -> int | S3Error:
    if value is None:
        return MAX_KEYS
    number = whole(value, 10)
    if number is None or number > 2**31 - 1:
        return S3Error(ErrorCode.INVALID_ARGUMENT, "max-keys must be a non-negative integer within integer range")
    return min(number, MAX_KEYS)


def list_page(objects: Iterable[ObjectInfo], query: ListQuery, resume: Resume) -> ListPage:
    """One page. `objects` are sorted by key, start with `query.prefix` and sort after `resume.marker`; the function
    re-checks both so a source that over-returns is harmless, and stops reading once the page is full."""
    contents: list[ObjectInfo] = []
    prefixes: list[str] = []
    last: tuple[str, bool] | None = None
    for obj in objects:
        key = obj.key
        if not key.startswith(query.prefix) or key <= resume.marker:
            continue
        if resume.skip_prefix and key.startswith(resume.marker):
            continue
        rolled = _common_prefix(key, query.prefix, query.delimiter)
        if rolled is not None and prefixes and prefixes[-1] == rolled:
            continue
        if len(contents) + len(prefixes) >= query.max_keys:
            if last is None:  # max-keys 0: an empty page that says nothing follows, as S3 answers (no token to give)
                return ListPage((), (), False, None)
            return ListPage(tuple(contents), tuple(prefixes), True, encode_token(last[0], prefix=last[1]))
        if rolled is not None:
            prefixes.append(rolled)
            last = (rolled, True)
        else:
            contents.append(obj)
            last = (key, False)
    return ListPage(tuple(contents), tuple(prefixes), False, None)


def _common_prefix(key: str, prefix: str, delimiter: str) -> str | None:
    if not delimiter:
        return None
    at = key.find(delimiter, len(prefix))
    return None if at < 0 else key[: at + len(delimiter)]

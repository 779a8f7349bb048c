"""Range requests (RFC 9110 §14) and conditional requests (RFC 9110 §13) as pure functions of the request headers and
the object's ETag and Last-Modified.

S3 serves one range per request: a syntactically invalid Range, or several ranges, is ignored and the whole object
served (RFC 9110 §14.2 allows ignoring Range); a range that starts at or past the end is 416 InvalidRange.
Preconditions are evaluated in RFC 9110 §13.2.2's order: If-Match (else If-Unmodified-Since) can fail with 412;
then If-None-Match (else If-Modified-Since) answers 304 for GET/HEAD.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from dataplane.s3.errors import ErrorCode, S3Error

_RANGE = re.compile(r"bytes=([0-9]{0,19})-([0-9]{0,19})")  # ASCII digits only (\d takes "٣"); int64 at most


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


def parse_range(header: str | None, size: int) -> ByteRange | S3Error | None:
    """The byte range to serve, an InvalidRange error, or None for the whole object."""
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None  # several ranges, another unit, or garbage: ignored
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            return _unsatisfiable(size)
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None  # invalid syntax (RFC 9110 §14.1.1): ignored
    if start >= size:
        return _unsatisfiable(size)
    return ByteRange(start, min(end, size - 1))


def _unsatisfiable(size: int) -> S3Error:
    return S3Error(ErrorCode.INVALID_RANGE, f"the requested range is not satisfiable (object size {size})",
                   headers=(("Content-Range", f"bytes */{size}"),))


@dataclass(frozen=True, slots=True)
class Preconditions:
    if_match: str | None = None
    if_none_match: str | None = None
    if_modified_since: str | None = None
    if_unmodified_since: str | None = None


def _etags(header: str) -> list[str]:
    tags = []
    for part in header.split(","):
        tag = part.strip()
        tag = tag.removeprefix("W/")
        tags.append(tag.strip('"'))
    return tags


def _etag_matches(header: str, etag: str) -> bool:
    tags = _etags(header)
    return "*" in tags or etag.strip('"') in tags


def _http_date(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None  # an invalid date is ignored (RFC 9110 §13.1.3)


def evaluate(conditions: Preconditions, *, etag: str, last_modified: float, read: bool = True) -> S3Error | None:
    """None when the request proceeds; else 412 PreconditionFailed or (for reads) 304 NotModified."""
    modified = float(int(last_modified))  # HTTP dates have whole seconds
    if conditions.if_match is not None:
        if not _etag_matches(conditions.if_match, etag):
            return S3Error(ErrorCode.PRECONDITION_FAILED, "At least one of the pre-conditions you specified did "
                           "not hold (If-Match)")
    else:
        since = _http_date(conditions.if_unmodified_since)
        if since is not None and modified > since:
            return S3Error(ErrorCode.PRECONDITION_FAILED, "At least one of the pre-conditions you specified did not "
                           "hold (If-Unmodified-Since)")
    if conditions.if_none_match is not None:
        if _etag_matches(conditions.if_none_match, etag):
            code = ErrorCode.NOT_MODIFIED if read else ErrorCode.PRECONDITION_FAILED
            return S3Error(code, "the object matches If-None-Match")
    elif read:
        since = _http_date(conditions.if_modified_since)
        if since is not None and modified <= since:
            return S3Error(ErrorCode.NOT_MODIFIED, "the object was not modified since If-Modified-Since")
    return None

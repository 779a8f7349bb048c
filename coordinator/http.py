"""Plumbing shared by the REST handler modules (coordinator.rest): the error body, JSON bodies,
token digests and the headers a follower sets when it forwards a write."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from broker.wire.schema import utf8_encodable
from coordinator.credentials import token_digest
from coordinator.errors import SpecError

__all__ = ["FORWARDED_FOR_HEADER", "FORWARDED_HEADER", "BadBody", "bearer_token", "error", "loads", "read_json",
           "token_digest"]

FORWARDED_HEADER = "X-Cloudless-Forwarded-By"  # set by a follower forwarding a write: the coordinator's id
FORWARDED_FOR_HEADER = "X-Cloudless-Forwarded-For"  # ... and the address of the client it came from


def error(status: int, message: str, *, field: str | None = None,
          errors: list[dict[str, str]] | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "field": field, "errors": errors or []}}, status=status)


def bearer_token(header: str) -> str | None:
    """The credentials of an `Authorization` header with the Bearer scheme (RFC 6750 §2.1; the scheme name is
    case-insensitive, RFC 7235 §2.1): "" for no header or the bare scheme, None for another scheme or credentials
    that cannot be ours (not encodable as UTF-8: the header's bytes were not)."""
    scheme, _, credentials = header.strip().partition(" ")
    if not scheme:
        return ""
    if scheme.lower() != "bearer" or not utf8_encodable(credentials):
        return None
    return credentials.strip()


MAX_JSON_DEPTH = 64  # no request document nests deeper (a workload is about 8 levels)


class BadBody(ValueError):
    """A request body that is not a JSON document this API can take (a 400, whoever the caller is)."""


def loads(text: str) -> Any:
    """JSON from an untrusted, possibly unauthenticated caller. Refused as BadBody: invalid JSON, nesting deeper
    than MAX_JSON_DEPTH (json.loads raises RecursionError on ~100,000 levels), and strings UTF-8 cannot carry (a
    lone surrogate from a `\\udcff` escape, which fails later, wherever the string is encoded)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadBody(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadBody(f"request body nests deeper than {MAX_JSON_DEPTH} levels") from None
    stack: list[tuple[Any, int]] = [(doc, 0)]
    while stack:  # iterative: the check itself must not recurse
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise BadBody(f"request body nests deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(value, dict):
            stack.extend((k, depth + 1) for k in value)
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
        elif isinstance(value, str) and not utf8_encodable(value):
            raise BadBody("request body has a string with a lone surrogate (not encodable as UTF-8)")
    return doc


async def read_json(request: web.Request) -> Any:
    try:
        return loads(await request.text())
    except UnicodeDecodeError as exc:
        raise SpecError("", f"request body is not valid UTF-8: {exc}") from None
    except BadBody as exc:
        raise SpecError("", str(exc)) from None

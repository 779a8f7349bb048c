"""Plumbing shared by the REST handler modules (coordinator.rest): the error body, JSON bodies,
token digests and the headers a follower sets when it forwards a write."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from coordinator.credentials import token_digest
from coordinator.errors import SpecError

__all__ = ["FORWARDED_FOR_HEADER", "FORWARDED_HEADER", "error", "read_json", "token_digest"]

FORWARDED_HEADER = "X-Cloudless-Forwarded-By"  # set by a follower forwarding a write: the coordinator's id
FORWARDED_FOR_HEADER = "X-Cloudless-Forwarded-For"  # ... and the address of the client it came from


def error(status: int, message: str, *, field: str | None = None,
          errors: list[dict[str, str]] | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "field": field, "errors": errors or []}}, status=status)


async def read_json(request: web.Request) -> Any:
    try:
        return await request.json(loads=json.loads)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpecError("", f"request body is not valid JSON: {exc}") from None

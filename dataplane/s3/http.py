"""The aiohttp adapter: serves the S3 protocol over a `Backend`. It authenticates (sigv4), routes (routing), streams
the body through the aws-chunked decoder and integrity checks (body), calls the operation (handlers) and writes the
result; every decision is in those modules. Mount `s3_app(...)` as an application or a sub-application.

Import this module only on the side that serves S3 with aiohttp (the coordinator); the agent-only install has no
aiohttp, which is why `dataplane.s3` does not import it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets as token_source
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from aiohttp import web

from dataplane.s3 import routing, sigv4, xmlbodies
from dataplane.s3.auth import authenticate
from dataplane.s3.backend import Backend
from dataplane.s3.body import MAX_BODY, body_reader
from dataplane.s3.errors import ErrorCode, S3Error
from dataplane.s3.handlers import WITH_BODY, Authorizer, Call, Incoming, Response, Service, handle

log = logging.getLogger(__name__)
READ_SIZE = 256 * 1024


@dataclass(frozen=True, slots=True)
class S3Config:
    region: str = "us-east-1"
    base_domains: tuple[str, ...] = ()  # virtual-host addressing under these domains
    max_body: int = MAX_BODY
    clock: Callable[[], float] = field(default=time.time, repr=False)
    authorize: Authorizer | None = field(default=None, repr=False)  # bucket-level permissions per access key


def _new_id() -> str:
    return token_source.token_hex(16)


def s3_app(backend: Backend, secrets: sigv4.SecretLookup, config: S3Config | None = None) -> web.Application:
    cfg = config or S3Config()
    service = Service(backend, _new_id, region=cfg.region, authorize=cfg.authorize)
    app = web.Application()

    async def serve(request: web.Request) -> web.StreamResponse:
        request_id = _new_id()[:16]
        try:
            result = await _serve(request, service, secrets, cfg)
            if not isinstance(result, S3Error):
                # headers are serialised here: one aiohttp refuses becomes an S3 error, not aiohttp's own 500
                response = _start(result, request_id)
                await response.prepare(request)
        except Exception:  # a bug or a backend failure must become a 500, never a dropped connection
            log.exception("S3 %s %s failed", request.method, request.path)
            result = S3Error(ErrorCode.INTERNAL_ERROR, "we encountered an internal error; please try again")
        if isinstance(result, S3Error):
            return _error_response(request, result, request_id)
        return await _finish(response, result)

    app.router.add_route("*", "/{tail:.*}", serve)
    return app


async def _serve(request: web.Request, service: Service, secrets: sigv4.SecretLookup, cfg: S3Config
                 ) -> Response | S3Error:
    raw_path, _, raw_query = request.raw_path.partition("?")
    signed = sigv4.Request(request.method, raw_path, raw_query, tuple(request.headers.items()))
    now = cfg.clock()
    auth = authenticate(signed, secrets, now, region=cfg.region, base_domains=cfg.base_domains)
    if isinstance(auth, S3Error):
        return dataclasses.replace(auth, resource=request.path)
    query = dict(sigv4.query_pairs(raw_query))
    route = routing.route(request.method, raw_path, query, host=request.host,
                          copy_source="x-amz-copy-source" in request.headers, base_domains=cfg.base_domains)
    if isinstance(route, S3Error):
        return route
    body = None
    if route.operation in WITH_BODY:
        reader = body_reader(request.headers.get, auth, limit=cfg.max_body)
        if isinstance(reader, S3Error):
            return dataclasses.replace(reader, resource=route.resource)
        raw = request.content.iter_chunked(READ_SIZE)
        body = Incoming(raw if reader.slice is None else _paced(raw, reader.slice), reader)
    call = Call(route, request.headers.get, now, auth.access_key, body=body,
                header_names=tuple(k.lower() for k in request.headers))
    result = await handle(service, call)
    if isinstance(result, S3Error) and not result.resource:
        return dataclasses.replace(result, resource=route.resource)
    return result


async def _paced(source: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
    """`source` in pieces of at most `size` bytes with a loop turn between them: the reader checksums each piece in
    pure Python before the next is asked for, so no callback holds the loop longer than one piece's worth. (A thread
    would not help: the pure-Python CRC holds the GIL.)"""
    async for chunk in source:
        for start in range(0, len(chunk), size):
            yield chunk[start:start + size]
            await asyncio.sleep(0)


def _start(result: Response, request_id: str) -> web.StreamResponse:
    if result.stream is None:
        headers = [(k, v) for k, v in result.headers if not (result.body and k.lower() == "content-length")]
        headers.append(("x-amz-request-id", request_id))
        return web.Response(status=result.status, body=result.body or None, headers=headers)
    return web.StreamResponse(status=result.status, headers=[*result.headers, ("x-amz-request-id", request_id)])


async def _finish(response: web.StreamResponse, result: Response) -> web.StreamResponse:
    """The body after the prepared headers. A failure from here on can only cut the connection short (the status is
    sent): the client sees fewer bytes than Content-Length and retries, as with S3 itself."""
    if result.stream is None:
        return response
    async for piece in result.stream:
        await response.write(piece)
    await response.write_eof()
    return response


def _error_response(request: web.Request, err: S3Error, request_id: str) -> web.StreamResponse:
    headers = {**dict(err.headers), "x-amz-request-id": request_id}
    if request.method == "HEAD" or err.status == 304:
        return web.Response(status=err.status, headers=headers)
    headers["Content-Type"] = "application/xml"
    return web.Response(status=err.status, body=xmlbodies.error_document(err, request_id), headers=headers)

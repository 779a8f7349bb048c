"""The S3 operations over a `Backend`: one async function per operation, from an authenticated, routed request (its
body still arriving: uploads stream into a staging area and are committed only once verified) to a response value.
No HTTP library here: the aiohttp adapter (`http.py`) or any other server turns `Response` into bytes on the wire.
Decisions are the pure cores' (`ranges`, `listing`, `multipart`); these functions fetch what the cores need from the
backend and apply their verdicts."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import KW_ONLY, dataclass, field
from urllib.parse import unquote

from dataplane.s3 import listing, multipart, ranges, xmlbodies
from dataplane.s3.backend import Backend, ObjectInfo, PartInfo, Staging, UploadInfo
from dataplane.s3.body import BodyReader
from dataplane.s3.errors import ErrorCode, S3Error, whole
from dataplane.s3.integrity import Digests
from dataplane.s3.routing import Operation, Route

Headers = tuple[tuple[str, str], ...]
XML = (("Content-Type", "application/xml"),)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Headers = ()
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None  # the body in pieces (object data); Content-Length is in headers


@dataclass(frozen=True, slots=True)
class Incoming:
    """A request body on its way in: the raw bytes as they arrive and the reader that decodes and verifies them."""

    raw: AsyncIterator[bytes]
    reader: BodyReader


@dataclass(frozen=True, slots=True)
class Call:
    """One request as the handlers see it. `header` is a case-insensitive lookup."""

    route: Route
    header: Callable[[str], str | None]
    now: float
    access_key: str
    _: KW_ONLY
    body: Incoming | None = None  # set for the operations in WITH_BODY
    header_names: tuple[str, ...] = ()  # lower-case, for the x-amz-meta-* user metadata


@dataclass(frozen=True, slots=True)
class Service:
    backend: Backend
    new_id: Callable[[], str] = field(repr=False)
    _: KW_ONLY
    region: str = "us-east-1"
    owner: str = "cloudless"
    # Whether an access key may perform an operation on a bucket ("" for ListBuckets); None allows every
    # authenticated key everything. CopyObject also asks for GetObject on its source bucket; ListBuckets shows only
    # the buckets the key may HeadBucket or ListObjectsV2.
    authorize: Authorizer | None = None


Authorizer = Callable[[str, Operation, str], bool]


def _denied(call: Call, operation: Operation, bucket: str) -> S3Error:
    return S3Error(ErrorCode.ACCESS_DENIED, f"access key {call.access_key} may not {operation.value} on "
                   f"{bucket or 'the service'}", call.route.resource)


# Operations that take a request body (the adapter reads and verifies it before calling the handler).
WITH_BODY = frozenset({Operation.PUT_OBJECT, Operation.UPLOAD_PART, Operation.DELETE_OBJECTS,
                       Operation.COMPLETE_MULTIPART_UPLOAD, Operation.CREATE_BUCKET})


async def handle(service: Service, call: Call) -> Response | S3Error:
    operation, bucket = call.route.operation, call.route.bucket
    if service.authorize is not None and not service.authorize(call.access_key, operation, bucket):
        return _denied(call, operation, bucket)
    handler = _HANDLERS[operation]
    return await handler(service, call)


async def receive(call: Call, staging: Staging) -> Digests | S3Error:
    """Pump the verified payload into `staging`; abort it when the body is rejected or the transfer breaks."""
    assert call.body is not None
    try:
        async for raw in call.body.raw:
            data = call.body.reader.feed(raw)
            if isinstance(data, S3Error):
                await staging.abort()
                return dataclasses.replace(data, resource=call.route.resource)
            if data:
                await staging.write(data)
        digests = call.body.reader.finish()
    except BaseException:
        await staging.abort()
        raise
    if isinstance(digests, S3Error):
        await staging.abort()
        return dataclasses.replace(digests, resource=call.route.resource)
    return digests


async def read_small(call: Call, limit: int = xmlbodies.MAX_XML_BODY) -> bytes | S3Error:
    """A small (XML) body, whole and verified."""
    assert call.body is not None
    pieces: list[bytes] = []
    size = 0
    async for raw in call.body.raw:
        data = call.body.reader.feed(raw)
        if isinstance(data, S3Error):
            return data
        size += len(data)
        if size > limit:
            return S3Error(ErrorCode.MALFORMED_XML, f"the XML body exceeds {limit} bytes")
        pieces.append(data)
    digests = call.body.reader.finish()
    return digests if isinstance(digests, S3Error) else b"".join(pieces)


def _header_safe(value: str) -> bool:
    """Whether `value` can go back out as a header value: no control characters (CR/LF would split the response) and
    no undecodable bytes (lone surrogates from the HTTP layer's surrogateescape)."""
    return not any((c < " " and c != "\t") or c == "\x7f" or "\ud800" <= c <= "\udfff" for c in value)


def _bad_metadata(call: Call) -> S3Error | None:
    for name, value in _metadata(call):
        if not _header_safe(value):
            return S3Error(ErrorCode.INVALID_ARGUMENT, f"x-amz-meta-{name} must be UTF-8 text without control "
                           "characters", call.route.resource)
    return None


def _metadata(call: Call) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((n[len("x-amz-meta-"):], call.header(n) or "") for n in call.header_names
                        if n.startswith("x-amz-meta-")))


def _object_headers(info: ObjectInfo) -> Headers:
    headers = [("ETag", xmlbodies.quoted(info.etag)), ("Last-Modified", xmlbodies.http_date(info.last_modified)),
               ("Content-Type", info.content_type), ("Accept-Ranges", "bytes")]
    headers += [(f"x-amz-meta-{k}", v) for k, v in info.metadata]
    if info.parts:
        headers.append(("x-amz-mp-parts-count", str(info.parts)))
    return tuple(headers)


# ---- buckets ---------------------------------------------------------------------------------------------------

async def list_buckets(service: Service, call: Call) -> Response | S3Error:
    buckets = sorted(await service.backend.list_buckets(), key=lambda b: b.name)
    if service.authorize is not None:  # a key sees the buckets it may look into, not every bucket's name
        allowed = service.authorize
        buckets = [b for b in buckets if allowed(call.access_key, Operation.HEAD_BUCKET, b.name)
                   or allowed(call.access_key, Operation.LIST_OBJECTS_V2, b.name)]
    return Response(200, XML, xmlbodies.list_buckets_document(buckets, service.owner))


async def create_bucket(service: Service, call: Call) -> Response | S3Error:
    body = await read_small(call)  # CreateBucketConfiguration: verified, then ignored (one region)
    if isinstance(body, S3Error):
        return body
    problem = await service.backend.create_bucket(call.route.bucket, call.now)
    return problem or Response(200, (("Location", f"/{call.route.bucket}"),))


async def delete_bucket(service: Service, call: Call) -> Response | S3Error:
    return await service.backend.delete_bucket(call.route.bucket) or Response(204)


async def _need_bucket(service: Service, call: Call) -> S3Error | None:
    if await service.backend.bucket_exists(call.route.bucket):
        return None
    return S3Error(ErrorCode.NO_SUCH_BUCKET, "the specified bucket does not exist", call.route.resource)


async def head_bucket(service: Service, call: Call) -> Response | S3Error:
    return await _need_bucket(service, call) or Response(200, (("x-amz-bucket-region", service.region),))


async def bucket_location(service: Service, call: Call) -> Response | S3Error:
    return await _need_bucket(service, call) or Response(200, XML, xmlbodies.location_document(service.region))


async def list_objects_v2(service: Service, call: Call) -> Response | S3Error:
    q = call.route.query
    max_keys = listing.parse_max_keys(q.get("max-keys"))
    if isinstance(max_keys, S3Error):
        return max_keys
    encoding = q.get("encoding-type")
    if encoding not in (None, "url"):
        return S3Error(ErrorCode.INVALID_ARGUMENT, "encoding-type must be url")
    query = listing.ListQuery(prefix=q.get("prefix", ""), delimiter=q.get("delimiter", ""), max_keys=max_keys,
                              continuation_token=q.get("continuation-token"), start_after=q.get("start-after", ""))
    resume = listing.resume_point(query)
    if isinstance(resume, S3Error):
        return resume
    objects = await service.backend.list_objects(call.route.bucket, query.prefix, resume.marker)
    if isinstance(objects, S3Error):
        return objects
    page = listing.list_page(objects, query, resume)
    return Response(200, XML, xmlbodies.list_objects_v2_document(call.route.bucket, query, page,
                                                                 url_encode=encoding == "url"))


async def delete_objects(service: Service, call: Call) -> Response | S3Error:
    body = await read_small(call)
    if isinstance(body, S3Error):
        return body
    request = xmlbodies.parse_delete(body)
    if isinstance(request, S3Error):
        return request
    problem = await _need_bucket(service, call)
    if problem is not None:
        return problem
    outcomes = [xmlbodies.DeleteOutcome(key, await service.backend.delete_object(call.route.bucket, key))
                for key in request.keys]
    return Response(200, XML, xmlbodies.delete_result_document(outcomes, quiet=request.quiet))


# ---- objects ---------------------------------------------------------------------------------------------------

def _preconditions(call: Call, prefix: str = "") -> ranges.Preconditions:
    return ranges.Preconditions(call.header(prefix + "if-match"), call.header(prefix + "if-none-match"),
                                call.header(prefix + "if-modified-since"),
                                call.header(prefix + "if-unmodified-since"))


async def put_object(service: Service, call: Call) -> Response | S3Error:
    problem = _bad_metadata(call)
    if problem is not None:
        return problem
    if_absent = call.header("if-none-match") == "*"  # conditional write: only when the key does not exist yet
    if if_absent:  # a fast path that spares the upload; the commit decides, atomically
        existing = await service.backend.head_object(call.route.bucket, call.route.key)
        if not isinstance(existing, S3Error):
            return S3Error(ErrorCode.PRECONDITION_FAILED, "the object exists (If-None-Match: *)", call.route.resource)
    staging = await service.backend.stage(call.route.bucket)
    if isinstance(staging, S3Error):
        return dataclasses.replace(staging, resource=call.route.resource)
    digests = await receive(call, staging)
    if isinstance(digests, S3Error):
        return digests
    info = ObjectInfo(call.route.key, digests.size, digests.md5_hex, call.now,
                      content_type=call.header("content-type") or "binary/octet-stream", metadata=_metadata(call),
                      checksum=digests.checksum)
    problem = await staging.commit_object(call.route.bucket, info, if_absent=if_absent)
    if problem is not None:
        return dataclasses.replace(problem, resource=problem.resource or call.route.resource)
    return Response(200, _write_headers(info.etag, digests))


def _write_headers(etag: str, digests: Digests) -> Headers:
    headers = [("ETag", xmlbodies.quoted(etag))]
    if digests.checksum is not None:
        headers.append((f"x-amz-checksum-{digests.checksum[0].value}", digests.checksum[1]))
    return tuple(headers)


_RESPONSE_OVERRIDES = {"response-content-type": "Content-Type", "response-content-language": "Content-Language",
                       "response-expires": "Expires", "response-cache-control": "Cache-Control",
                       "response-content-disposition": "Content-Disposition",
                       "response-content-encoding": "Content-Encoding"}


async def get_object(service: Service, call: Call, *, head: bool = False) -> Response | S3Error:
    info = await service.backend.head_object(call.route.bucket, call.route.key)
    if isinstance(info, S3Error):
        return info
    verdict = ranges.evaluate(_preconditions(call), etag=info.etag, last_modified=info.last_modified)
    if verdict is not None:
        if verdict.code is ErrorCode.NOT_MODIFIED:
            return Response(304, (("ETag", xmlbodies.quoted(info.etag)),
                                  ("Last-Modified", xmlbodies.http_date(info.last_modified))))
        return verdict
    byte_range = ranges.parse_range(call.header("range"), info.size)
    if isinstance(byte_range, S3Error):
        return byte_range
    headers = dict(_object_headers(info))
    for param, name in _RESPONSE_OVERRIDES.items():
        if param in call.route.query:
            value = call.route.query[param]
            if not _header_safe(value):
                return S3Error(ErrorCode.INVALID_ARGUMENT, f"{param} must not contain control characters",
                               call.route.resource)
            headers[name] = value
    if byte_range is None:
        status, start, end = 200, 0, info.size - 1
        if info.checksum is not None and (call.header("x-amz-checksum-mode") or "").upper() == "ENABLED":
            headers[f"x-amz-checksum-{info.checksum[0].value}"] = info.checksum[1]
    else:
        status, start, end = 206, byte_range.start, byte_range.end
        headers["Content-Range"] = byte_range.content_range(info.size)
    headers["Content-Length"] = str(end - start + 1)
    if head or info.size == 0:
        return Response(status, tuple(headers.items()))
    pieces = await service.backend.read_object(call.route.bucket, call.route.key, start, end, info=info)
    if isinstance(pieces, S3Error):
        return pieces
    return Response(status, tuple(headers.items()), stream=pieces)


async def head_object(service: Service, call: Call) -> Response | S3Error:
    return await get_object(service, call, head=True)


async def delete_object(service: Service, call: Call) -> Response | S3Error:
    return await service.backend.delete_object(call.route.bucket, call.route.key) or Response(204)


def parse_copy_source(value: str) -> tuple[str, str] | S3Error:
    source = unquote(value.partition("?")[0]).removeprefix("/")
    bucket, _, key = source.partition("/")
    if not bucket or not key:
        return S3Error(ErrorCode.INVALID_ARGUMENT, "x-amz-copy-source must be bucket/key")
    return bucket, key


async def copy_object(service: Service, call: Call) -> Response | S3Error:
    source = parse_copy_source(call.header("x-amz-copy-source") or "")
    if isinstance(source, S3Error):
        return source
    if service.authorize is not None and not service.authorize(call.access_key, Operation.GET_OBJECT, source[0]):
        return _denied(call, Operation.GET_OBJECT, source[0])
    problem = await _need_bucket(service, call)
    if problem is not None:
        return problem
    info = await service.backend.head_object(*source)
    if isinstance(info, S3Error):
        return info
    verdict = ranges.evaluate(_preconditions(call, "x-amz-copy-source-"), etag=info.etag,
                              last_modified=info.last_modified, read=False)
    if verdict is not None:
        return S3Error(ErrorCode.PRECONDITION_FAILED, verdict.message, call.route.resource)
    replace = (call.header("x-amz-metadata-directive") or "COPY").upper() == "REPLACE"
    if replace and (problem := _bad_metadata(call)) is not None:
        return problem
    if source == (call.route.bucket, call.route.key) and not replace:
        return S3Error(ErrorCode.INVALID_REQUEST, "copying an object to itself needs x-amz-metadata-directive: "
                       "REPLACE", call.route.resource)
    staging = await service.backend.stage(call.route.bucket)
    if isinstance(staging, S3Error):
        return staging
    md5 = await _copy_into(service, source, info, staging)
    if isinstance(md5, S3Error):
        return md5
    content_type = (call.header("content-type") or "binary/octet-stream") if replace else info.content_type
    metadata = _metadata(call) if replace else info.metadata
    # a copy is one part: a multipart source's "-N" ETag does not describe it
    copied = ObjectInfo(call.route.key, info.size, md5, call.now, content_type=content_type, metadata=metadata,
                        checksum=info.checksum if not info.parts else None)
    problem = await staging.commit_object(call.route.bucket, copied)
    return problem or Response(200, XML, xmlbodies.copy_result_document(copied))


async def _copy_into(service: Service, source: tuple[str, str], info: ObjectInfo, staging: Staging) -> str | S3Error:
    """Stream the source object into `staging`; its MD5 hex."""
    md5 = hashlib.md5(usedforsecurity=False)
    try:
        if info.size:
            pieces = await service.backend.read_object(*source, 0, info.size - 1, info=info)  # the version checked
            if isinstance(pieces, S3Error):
                await staging.abort()
                return pieces
            async for piece in pieces:
                md5.update(piece)
                await staging.write(piece)
    except BaseException:
        await staging.abort()
        raise
    return md5.hexdigest()


# ---- multipart -------------------------------------------------------------------------------------------------

async def create_upload(service: Service, call: Call) -> Response | S3Error:
    problem = _bad_metadata(call) or await _need_bucket(service, call)
    if problem is not None:
        return problem
    upload = UploadInfo(service.new_id(), call.route.bucket, call.route.key, call.now,
                        content_type=call.header("content-type") or "binary/octet-stream", metadata=_metadata(call))
    problem = await service.backend.create_upload(upload)
    return problem or Response(200, XML, xmlbodies.initiate_upload_document(upload.bucket, upload.key,
                                                                            upload.upload_id))


async def _upload(service: Service, call: Call) -> UploadInfo | S3Error:
    return await service.backend.get_upload(call.route.bucket, call.route.key, call.route.query["uploadId"])


async def upload_part(service: Service, call: Call) -> Response | S3Error:
    number = multipart.parse_part_number(call.route.query.get("partNumber"))
    if isinstance(number, S3Error):
        return number
    upload = await _upload(service, call)
    if isinstance(upload, S3Error):
        return upload
    staging = await service.backend.stage(call.route.bucket)
    if isinstance(staging, S3Error):
        return staging
    digests = await receive(call, staging)
    if isinstance(digests, S3Error):
        return digests
    part = PartInfo(number, digests.size, digests.md5_hex, call.now)
    problem = await staging.commit_part(upload.upload_id, part)
    return problem or Response(200, _write_headers(part.etag, digests))


async def complete_upload(service: Service, call: Call) -> Response | S3Error:
    body = await read_small(call)
    if isinstance(body, S3Error):
        return body
    requested = xmlbodies.parse_complete(body)
    if isinstance(requested, S3Error):
        return requested
    upload = await _upload(service, call)
    if isinstance(upload, S3Error):
        return upload
    parts = await service.backend.list_parts(upload.upload_id)
    if isinstance(parts, S3Error):
        return parts
    plan = multipart.assemble(requested, {p.number: p for p in parts})
    if isinstance(plan, S3Error):
        return plan
    info = ObjectInfo(upload.key, plan.size, plan.etag, call.now, content_type=upload.content_type,
                      metadata=upload.metadata, parts=len(plan.parts))
    problem = await service.backend.complete_upload(upload.upload_id, info, plan.parts)
    return problem or Response(200, XML, xmlbodies.complete_upload_document(
        call.route.resource, upload.bucket, upload.key, plan.etag))


async def abort_upload(service: Service, call: Call) -> Response | S3Error:
    upload = await _upload(service, call)
    if isinstance(upload, S3Error):
        return upload
    return await service.backend.abort_upload(upload.upload_id) or Response(204)


async def list_parts(service: Service, call: Call) -> Response | S3Error:
    q = call.route.query
    marker, max_parts = whole(q.get("part-number-marker", "0"), 5), whole(q.get("max-parts", "1000"), 10)
    if marker is None or max_parts is None:
        return S3Error(ErrorCode.INVALID_ARGUMENT, "part-number-marker and max-parts must be integers")
    upload = await _upload(service, call)
    if isinstance(upload, S3Error):
        return upload
    parts = await service.backend.list_parts(upload.upload_id)
    if isinstance(parts, S3Error):
        return parts
    return Response(200, XML, xmlbodies.list_parts_document(upload.bucket, upload.key, upload.upload_id, parts,
                                                            marker=marker, max_parts=min(max_parts, 1000)))


_HANDLERS: dict[Operation, Callable[[Service, Call], Awaitable[Response | S3Error]]] = {
    Operation.LIST_BUCKETS: list_buckets,
    Operation.CREATE_BUCKET: create_bucket,
    Operation.DELETE_BUCKET: delete_bucket,
    Operation.HEAD_BUCKET: head_bucket,
    Operation.GET_BUCKET_LOCATION: bucket_location,
    Operation.LIST_OBJECTS_V2: list_objects_v2,
    Operation.DELETE_OBJECTS: delete_objects,
    Operation.PUT_OBJECT: put_object,
    Operation.COPY_OBJECT: copy_object,
    Operation.GET_OBJECT: get_object,
    Operation.HEAD_OBJECT: head_object,
    Operation.DELETE_OBJECT: delete_object,
    Operation.CREATE_MULTIPART_UPLOAD: create_upload,
    Operation.UPLOAD_PART: upload_part,
    Operation.COMPLETE_MULTIPART_UPLOAD: complete_upload,
    Operation.ABORT_MULTIPART_UPLOAD: abort_upload,
    Operation.LIST_PARTS: list_parts,
}

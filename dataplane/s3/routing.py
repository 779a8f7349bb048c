"""Which S3 operation a request is, from its method, path, query and a few headers (AWS S3 API reference, per
operation's "Request Syntax"). Path-style addressing (`/bucket/key`) always; virtual-host style
(`bucket.s3.example`) when the Host ends with one of the configured base domains.

Sub-resources we do not serve (acl, tagging, versioning, ...) route to NotImplemented rather than being mistaken for
a plain GET or PUT of the object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import unquote

from dataplane.s3.errors import ErrorCode, S3Error, utf8


class Operation(StrEnum):
    LIST_BUCKETS = "ListBuckets"
    CREATE_BUCKET = "CreateBucket"
    DELETE_BUCKET = "DeleteBucket"
    HEAD_BUCKET = "HeadBucket"
    GET_BUCKET_LOCATION = "GetBucketLocation"
    LIST_OBJECTS_V2 = "ListObjectsV2"
    DELETE_OBJECTS = "DeleteObjects"
    PUT_OBJECT = "PutObject"
    COPY_OBJECT = "CopyObject"
    GET_OBJECT = "GetObject"
    HEAD_OBJECT = "HeadObject"
    DELETE_OBJECT = "DeleteObject"
    CREATE_MULTIPART_UPLOAD = "CreateMultipartUpload"
    UPLOAD_PART = "UploadPart"
    COMPLETE_MULTIPART_UPLOAD = "CompleteMultipartUpload"
    ABORT_MULTIPART_UPLOAD = "AbortMultipartUpload"
    LIST_PARTS = "ListParts"


@dataclass(frozen=True, slots=True)
class Route:
    operation: Operation
    bucket: str = ""
    key: str = ""
    query: dict[str, str] = field(default_factory=dict)

    @property
    def resource(self) -> str:
        return "/" + "/".join(p for p in (self.bucket, self.key) if p)


# Sub-resources that change what a request means; those not listed in the table below are refused.
_SUBRESOURCES = frozenset({
    "acl", "analytics", "accelerate", "cors", "encryption", "intelligent-tiering", "inventory", "legal-hold",
    "lifecycle", "logging", "metrics", "notification", "object-lock", "ownershipControls", "policy", "policyStatus",
    "publicAccessBlock", "replication", "requestPayment", "restore", "retention", "select", "tagging", "torrent",
    "versioning", "versions", "website", "uploads", "uploadId", "delete", "location", "attributes", "list-type",
})
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
MAX_KEY_BYTES = 1024


def valid_bucket_name(name: str) -> bool:
    """S3's bucket naming rules: 3-63 of a-z 0-9 . -, alphanumeric at both ends, no "..", not an IPv4 address."""
    return bool(_BUCKET_NAME.fullmatch(name)) and ".." not in name and not re.fullmatch(r"[\d.]+", name)


def split_target(raw_path: str, host: str, base_domains: tuple[str, ...] = ()) -> tuple[str, str]:
    """(bucket, key) of a request, decoded."""
    hostname = host.rsplit(":", 1)[0].lower() if not host.startswith("[") else host
    path = unquote(raw_path)
    for domain in base_domains:
        if hostname.endswith("." + domain.lower()):
            return hostname[: -len(domain) - 1], path.removeprefix("/")
    bucket, _, key = path.removeprefix("/").partition("/")
    return bucket, key


def path_style(raw_path: str, host: str, base_domains: tuple[str, ...] = ()) -> str:
    """The raw path as path-style addressing spells it: `/bucket/key`, with the bucket taken from the Host under
    virtual-host addressing (what SigV2 signs as the resource, since the Host itself is not signed)."""
    bucket, _ = split_target("/", host, base_domains)
    return f"/{bucket}{raw_path or '/'}" if bucket else raw_path or "/"


def route(method: str, raw_path: str, query: dict[str, str], *, host: str = "", copy_source: bool = False,
          base_domains: tuple[str, ...] = ()) -> Route | S3Error:
    bucket, key = split_target(raw_path, host, base_domains)
    method = method.upper()
    resource = "/" + "/".join(p for p in (bucket, key) if p)
    if not bucket:
        if method == "GET":
            return Route(Operation.LIST_BUCKETS, query=query)
        return S3Error(ErrorCode.METHOD_NOT_ALLOWED, f"{method} is not allowed on the service", "/")
    if not valid_bucket_name(bucket):
        return S3Error(ErrorCode.INVALID_BUCKET_NAME, f"the bucket name {bucket!r} is not valid", resource)
    if len(utf8(key)) > MAX_KEY_BYTES:
        return S3Error(ErrorCode.KEY_TOO_LONG, f"object keys are at most {MAX_KEY_BYTES} bytes", resource)
    operation = _bucket_operation(method, query) if not key else _object_operation(method, query, copy_source)
    if isinstance(operation, S3Error):
        return S3Error(operation.code, operation.message, resource)
    return Route(operation, bucket, key, query)


def _unsupported(method: str, query: dict[str, str], known: set[str]) -> S3Error | None:
    extra = sorted(k for k in query if k in _SUBRESOURCES and k not in known)
    if extra:
        return S3Error(ErrorCode.NOT_IMPLEMENTED, f"{method} with ?{extra[0]} is not implemented")
    return None


def _bucket_operation(method: str, query: dict[str, str]) -> Operation | S3Error:
    match method:
        case "PUT":
            return _unsupported(method, query, set()) or Operation.CREATE_BUCKET
        case "DELETE":
            return _unsupported(method, query, set()) or Operation.DELETE_BUCKET
        case "HEAD":
            return Operation.HEAD_BUCKET
        case "GET" if "location" in query:
            return Operation.GET_BUCKET_LOCATION
        case "GET" if query.get("list-type") == "2":
            return _unsupported(method, query, {"list-type"}) or Operation.LIST_OBJECTS_V2
        case "GET":
            return _unsupported(method, query, set()) or S3Error(
                ErrorCode.NOT_IMPLEMENTED, "ListObjects (v1) is not implemented: use ListObjectsV2 (list-type=2)")
        case "POST" if "delete" in query:
            return Operation.DELETE_OBJECTS
    return S3Error(ErrorCode.METHOD_NOT_ALLOWED, f"{method} is not allowed on a bucket")


def _object_operation(method: str, query: dict[str, str], copy_source: bool) -> Operation | S3Error:
    upload = "uploadId" in query
    match method:
        case "PUT" if upload and "partNumber" in query:
            if copy_source:
                return S3Error(ErrorCode.NOT_IMPLEMENTED, "UploadPartCopy is not implemented")
            return Operation.UPLOAD_PART
        case "PUT":
            problem = _unsupported(method, query, set())
            return problem or (Operation.COPY_OBJECT if copy_source else Operation.PUT_OBJECT)
        case "GET" if upload:
            return Operation.LIST_PARTS
        case "GET":
            return _unsupported(method, query, set()) or Operation.GET_OBJECT
        case "HEAD":
            return _unsupported(method, query, set()) or Operation.HEAD_OBJECT
        case "DELETE" if upload:
            return Operation.ABORT_MULTIPART_UPLOAD
        case "DELETE":
            return _unsupported(method, query, set()) or Operation.DELETE_OBJECT
        case "POST" if "uploads" in query:
            return Operation.CREATE_MULTIPART_UPLOAD
        case "POST" if upload:
            return Operation.COMPLETE_MULTIPART_UPLOAD
    return S3Error(ErrorCode.METHOD_NOT_ALLOWED, f"{method} is not allowed on an object")

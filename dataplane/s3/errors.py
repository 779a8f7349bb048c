"""S3-shaped errors as values: a code, the HTTP status S3 answers it with, and a message (AWS S3 API reference, "Error
responses"). Handlers return an `S3Error`; the adapter renders it with `xmlbodies.error_document`."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ErrorCode(StrEnum):
    ACCESS_DENIED = "AccessDenied"
    AUTHORIZATION_HEADER_MALFORMED = "AuthorizationHeaderMalformed"
    AUTHORIZATION_QUERY_PARAMETERS_ERROR = "AuthorizationQueryParametersError"
    BAD_DIGEST = "BadDigest"
    BUCKET_ALREADY_OWNED_BY_YOU = "BucketAlreadyOwnedByYou"
    BUCKET_NOT_EMPTY = "BucketNotEmpty"
    ENTITY_TOO_SMALL = "EntityTooSmall"
    INCOMPLETE_BODY = "IncompleteBody"
    INTERNAL_ERROR = "InternalError"
    INVALID_ACCESS_KEY_ID = "InvalidAccessKeyId"
    INVALID_ARGUMENT = "InvalidArgument"
    KEY_TOO_LONG = "KeyTooLongError"
    INVALID_BUCKET_NAME = "InvalidBucketName"
    INVALID_CHUNK_SIZE = "InvalidChunkSizeError"
    INVALID_PART = "InvalidPart"
    INVALID_PART_ORDER = "InvalidPartOrder"
    INVALID_RANGE = "InvalidRange"
    INVALID_REQUEST = "InvalidRequest"
    MALFORMED_TRAILER = "MalformedTrailerError"
    MALFORMED_XML = "MalformedXML"
    METHOD_NOT_ALLOWED = "MethodNotAllowed"
    MISSING_CONTENT_LENGTH = "MissingContentLength"
    NO_SUCH_BUCKET = "NoSuchBucket"
    NO_SUCH_KEY = "NoSuchKey"
    NO_SUCH_UPLOAD = "NoSuchUpload"
    NOT_IMPLEMENTED = "NotImplemented"
    NOT_MODIFIED = "NotModified"
    PRECONDITION_FAILED = "PreconditionFailed"
    REQUEST_TIME_TOO_SKEWED = "RequestTimeTooSkewed"
    SERVICE_UNAVAILABLE = "ServiceUnavailable"  # no storage node can take the data now: clients retry a 503
    SIGNATURE_DOES_NOT_MATCH = "SignatureDoesNotMatch"
    CHECKSUM_MISMATCH = "XAmzContentChecksumMismatch"
    CONTENT_SHA256_MISMATCH = "XAmzContentSHA256Mismatch"
    ENTITY_TOO_LARGE = "EntityTooLarge"


STATUS: dict[ErrorCode, int] = {
    ErrorCode.ACCESS_DENIED: 403,
    ErrorCode.AUTHORIZATION_HEADER_MALFORMED: 400,
    ErrorCode.AUTHORIZATION_QUERY_PARAMETERS_ERROR: 400,
    ErrorCode.BAD_DIGEST: 400,
    ErrorCode.BUCKET_ALREADY_OWNED_BY_YOU: 409,
    ErrorCode.BUCKET_NOT_EMPTY: 409,
    ErrorCode.ENTITY_TOO_SMALL: 400,
    ErrorCode.ENTITY_TOO_LARGE: 400,
    ErrorCode.INCOMPLETE_BODY: 400,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.INVALID_ACCESS_KEY_ID: 403,
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.KEY_TOO_LONG: 400,
    ErrorCode.INVALID_BUCKET_NAME: 400,
    ErrorCode.INVALID_CHUNK_SIZE: 403,
    ErrorCode.INVALID_PART: 400,
    ErrorCode.INVALID_PART_ORDER: 400,
    ErrorCode.INVALID_RANGE: 416,
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.MALFORMED_TRAILER: 400,
    ErrorCode.MALFORMED_XML: 400,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.MISSING_CONTENT_LENGTH: 411,
    ErrorCode.NO_SUCH_BUCKET: 404,
    ErrorCode.NO_SUCH_KEY: 404,
    ErrorCode.NO_SUCH_UPLOAD: 404,
    ErrorCode.NOT_IMPLEMENTED: 501,
    ErrorCode.NOT_MODIFIED: 304,
    ErrorCode.PRECONDITION_FAILED: 412,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
    ErrorCode.REQUEST_TIME_TOO_SKEWED: 403,
    ErrorCode.SIGNATURE_DOES_NOT_MATCH: 403,
    ErrorCode.CHECKSUM_MISMATCH: 400,
    ErrorCode.CONTENT_SHA256_MISMATCH: 400,
}


@dataclass(frozen=True, slots=True)
class S3Error:
    """One S3 error response. `resource` is the path it is about (S3's `<Resource>`), when known."""

    code: ErrorCode
    message: str
    resource: str = ""
    headers: tuple[tuple[str, str], ...] = ()  # e.g. Content-Range: bytes */size on InvalidRange

    @property
    def status(self) -> int:
        return STATUS[self.code]


def error(code: ErrorCode, message: str, resource: str = "") -> S3Error:
    return S3Error(code, message, resource)


def utf8(text: str) -> bytes:
    """The bytes a request's text stands for. The HTTP layer decodes invalid UTF-8 with surrogateescape, so a header
    may hold lone surrogates that a plain `.encode()` refuses; they go back to the bytes the client sent (and signed).
    Surrogates no decoder produces are passed through rather than raising."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def whole(value: str | None, max_digits: int) -> int | None:
    """A non-negative integer written as 1 to `max_digits` ASCII digits, else None. Every number a request carries is
    read through this: `str.isdigit` is true for "²" (which `int` refuses), `int` takes " 5", "+5" and "1_0", and past
    4,300 digits it raises."""
    if value is None or not 0 < len(value) <= max_digits or not value.isascii() or not value.isdigit():
        return None
    return int(value)

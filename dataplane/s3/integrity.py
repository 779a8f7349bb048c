"""Whether a body is the one the client meant: its SHA-256 against x-amz-content-sha256, its MD5 against Content-MD5,
its `x-amz-checksum-*` against the header or the aws-chunked trailer. Feed decoded bytes; ask for the verdict at the
end. The MD5 doubles as the object's ETag (S3's ETag of a single-part upload is the hex MD5)."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from dataplane.s3 import checksums
from dataplane.s3.checksums import Algorithm
from dataplane.s3.errors import ErrorCode, S3Error
from dataplane.s3.sigv4 import Authenticated, Payload, same_digest


@dataclass(frozen=True, slots=True)
class Digests:
    size: int
    md5_hex: str
    checksum: tuple[Algorithm, str] | None  # the verified x-amz-checksum, to store and echo


class BodyCheck:
    def __init__(self, *, content_sha256: str | None = None, content_md5: str | None = None,
                 checksum_algorithm: Algorithm | None = None, checksum_value: str | None = None,
                 in_trailer: bool = False) -> None:
        self._sha256 = hashlib.sha256() if content_sha256 else None
        self._content_sha256 = content_sha256
        self._content_md5 = content_md5
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._size = 0
        self._algorithm = checksum_algorithm
        self._expected = checksum_value
        self._in_trailer = in_trailer
        self._checksum = checksums.new_checksum(checksum_algorithm) if checksum_algorithm else None
        # the most bytes one `update` should take so a caller's loop turn stays short; None: no limit
        self.slice = checksums.SLOW_SLICE if checksum_algorithm and checksums.slow(checksum_algorithm) else None

    def update(self, data: bytes) -> None:
        self._size += len(data)
        self._md5.update(data)
        if self._sha256 is not None:
            self._sha256.update(data)
        if self._checksum is not None:
            self._checksum.update(data)

    def verdict(self, trailers: Mapping[str, str] | None = None) -> Digests | S3Error:
        if self._sha256 is not None and self._sha256.hexdigest() != self._content_sha256:
            return S3Error(ErrorCode.CONTENT_SHA256_MISMATCH, "the provided x-amz-content-sha256 does not match what "
                           "was computed")
        if self._content_md5 is not None and not same_digest(base64.b64encode(self._md5.digest()).decode(),
                                                                self._content_md5):
            return S3Error(ErrorCode.BAD_DIGEST, "the Content-MD5 you specified did not match what we received")
        if self._algorithm is None or self._checksum is None:
            return Digests(self._size, self._md5.hexdigest(), None)
        expected = self._expected
        if self._in_trailer:
            expected = (trailers or {}).get(f"x-amz-checksum-{self._algorithm.value}")
        actual = checksums.b64(self._checksum)
        if expected is None:
            return S3Error(ErrorCode.MALFORMED_TRAILER, f"the x-amz-checksum-{self._algorithm.value} trailer is "
                           "missing")
        if not same_digest(actual, expected):
            return S3Error(ErrorCode.BAD_DIGEST, f"the {self._algorithm.value.upper()} you specified did not match "
                           "the calculated checksum")
        return Digests(self._size, self._md5.hexdigest(), (self._algorithm, actual))


def body_check(header: Callable[[str], str | None], auth: Authenticated) -> BodyCheck | S3Error:
    """The checks a request's headers and authentication ask for (header is a case-insensitive lookup)."""
    md5 = header("content-md5")
    if md5 is not None:
        try:
            if len(base64.b64decode(md5, validate=True)) != 16:
                raise ValueError(md5)
        except (ValueError, binascii.Error):
            return S3Error(ErrorCode.INVALID_ARGUMENT, "Content-MD5 must be the base64 of a 16-byte MD5")
    trailer = header("x-amz-trailer")
    streaming_trailer = auth.payload in (Payload.STREAMING_SIGNED_TRAILER, Payload.STREAMING_UNSIGNED_TRAILER)
    if trailer is not None and streaming_trailer:
        algorithm = checksums.from_header_name(trailer.strip())
        if algorithm is None:
            return S3Error(ErrorCode.INVALID_REQUEST, f"x-amz-trailer {trailer!r} names no supported checksum")
        return BodyCheck(content_md5=md5, checksum_algorithm=algorithm, in_trailer=True)
    sha = auth.payload_sha256 if auth.payload is Payload.SHA256 else None
    for algorithm in Algorithm:
        value = header(f"x-amz-checksum-{algorithm.value}")
        if value is not None:
            return BodyCheck(content_sha256=sha, content_md5=md5, checksum_algorithm=algorithm, checksum_value=value)
    return BodyCheck(content_sha256=sha, content_md5=md5)

"""Reading a request body as the S3 layer needs it, sans-IO: feed raw bytes as they arrive and get back the decoded
payload bytes to pass on (to a staging area, never to a visible object); at the end, the verdict. It joins the
aws-chunked decoder (when x-amz-content-sha256 is a STREAMING-* mode) to the integrity checks (SHA-256, Content-MD5,
x-amz-checksum-* in a header or trailer) and caps the size. Bytes handed out before a rejecting `finish()` must be
discarded by whoever took them."""

from __future__ import annotations

from collections.abc import Callable

from dataplane.s3.chunked import ChunkedDecoder
from dataplane.s3.errors import ErrorCode, S3Error, whole
from dataplane.s3.integrity import BodyCheck, Digests, body_check
from dataplane.s3.sigv4 import Authenticated, Payload

MAX_BODY = 5 * 1024 * 1024 * 1024  # S3's single PUT (and part) limit


class BodyReader:
    def __init__(self, decoder: ChunkedDecoder | None, check: BodyCheck, *, limit: int) -> None:
        self._decoder = decoder
        self._check = check
        self._limit = limit
        self._size = 0
        self._failure: S3Error | None = None

    @property
    def slice(self) -> int | None:
        """The most raw bytes one `feed` should take (a pure-Python checksum is in use), or None for no limit: a server
        on an event loop feeds at most this much per loop turn."""
        return self._check.slice

    def feed(self, raw: bytes) -> bytes | S3Error:
        """The payload bytes `raw` completes (possibly none)."""
        if self._failure is not None:
            return self._failure
        data = self._decoder.feed(raw) if self._decoder is not None else raw
        if isinstance(data, S3Error):
            self._failure = data
            return data
        self._size += len(data)
        if self._size > self._limit:
            self._failure = S3Error(ErrorCode.ENTITY_TOO_LARGE, f"the body exceeds {self._limit} bytes")
            return self._failure
        self._check.update(data)
        return data

    def finish(self) -> Digests | S3Error:
        if self._failure is not None:
            return self._failure
        trailers: dict[str, str] = {}
        if self._decoder is not None:
            decoded = self._decoder.finish()
            if isinstance(decoded, S3Error):
                return decoded
            trailers = decoded.trailers
        return self._check.verdict(trailers)


def body_reader(header: Callable[[str], str | None], auth: Authenticated, *, limit: int = MAX_BODY
                ) -> BodyReader | S3Error:
    """A reader for this request's body (`header` is a case-insensitive lookup)."""
    check = body_check(header, auth)
    if isinstance(check, S3Error):
        return check
    streaming = auth.payload in (Payload.STREAMING_SIGNED, Payload.STREAMING_SIGNED_TRAILER,
                                 Payload.STREAMING_UNSIGNED_TRAILER)
    if not streaming:
        return BodyReader(None, check, limit=limit)
    declared_text = header("x-amz-decoded-content-length")
    declared = whole(declared_text, 19)
    if declared_text is not None and declared is None:
        return S3Error(ErrorCode.INVALID_ARGUMENT, "x-amz-decoded-content-length must be a non-negative integer")
    if declared is None and auth.payload is not Payload.STREAMING_UNSIGNED_TRAILER:
        return S3Error(ErrorCode.MISSING_CONTENT_LENGTH, "a signed aws-chunked upload needs "
                       "x-amz-decoded-content-length")
    trailer = header("x-amz-trailer")
    trailers = tuple(t.strip() for t in trailer.split(",")) if trailer else ()
    decoder = ChunkedDecoder(auth.payload, signing=auth.signing,
                             decoded_length=declared,
                             declared_trailers=trailers)
    return BodyReader(decoder, check, limit=limit)

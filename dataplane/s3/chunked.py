"""An incremental decoder for `Content-Encoding: aws-chunked` bodies (AWS S3 API reference, "Signature Calculations
for the Authorization Header: Transferring Payload in Multiple Chunks" and "... with trailing headers").

Wire form, after HTTP's own framing is removed:

    signed:    HEX;chunk-signature=SIG CRLF DATA CRLF ... 0;chunk-signature=SIG CRLF [TRAILERS] CRLF
    unsigned:  HEX CRLF DATA CRLF ... 0 CRLF [TRAILERS] CRLF
    TRAILERS:  name:value CRLF ...   (signed trailers end with x-amz-trailer-signature:SIG CRLF)

States: SIZE (reading a chunk header line) -> DATA (size bytes) -> DATA_END (CRLF) -> SIZE ...; the zero-size chunk
moves to TRAILER (lines until the empty one) -> DONE. Any violation moves to FAILED with the rejection kept, and every
later call returns it. Invariants: in signed modes, chunk i's signature is checked against the HMAC over
"AWS4-HMAC-SHA256-PAYLOAD", the request time, the scope, signature i-1 (the seed signature from the Authorization
header for i = 0), SHA-256("") and SHA-256(chunk data) -- no library checks these, so a tampered chunk or a reordered
stream is caught here; every chunk but the last carries at least 8 KiB (S3's rule for signed streams); the decoded
length equals x-amz-decoded-content-length when the client sent one. Decoded bytes are released as they arrive:
a caller that stores them must discard them when `finish()` rejects the body.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from enum import Enum, auto

from dataplane.s3.errors import ErrorCode, S3Error
from dataplane.s3.sigv4 import EMPTY_SHA256, Payload, SigningContext, sign

MAX_LINE = 4096  # a chunk header or trailer line longer than this is not a chunk header
MAX_CHUNK = 16 * 1024 * 1024  # larger chunks are refused so a peer cannot make us hash an unbounded buffer-less run
MIN_SIGNED_CHUNK = 8192
MAX_TRAILER_BYTES = 16 * 1024
_HEX_SIZE = re.compile(r"[0-9a-fA-F]{1,16}")  # int(x, 16) alone also takes 0x10, 1_0, +10, -0 and spaces


class _State(Enum):
    SIZE = auto()
    DATA = auto()
    DATA_END = auto()
    TRAILER = auto()
    DONE = auto()
    FAILED = auto()


@dataclass(frozen=True, slots=True)
class Decoded:
    """A complete body's outcome: how many bytes it decoded to and the trailers it carried (lower-case names)."""

    length: int
    trailers: dict[str, str] = field(default_factory=dict)


class ChunkedDecoder:
    """Feed the raw body as it arrives; `feed` returns the payload bytes decoded so far, `finish` the verdict."""

    def __init__(self, payload: Payload, *, signing: SigningContext | None = None,
                 decoded_length: int | None = None, declared_trailers: tuple[str, ...] = ()) -> None:
        if payload not in (Payload.STREAMING_SIGNED, Payload.STREAMING_SIGNED_TRAILER,
                           Payload.STREAMING_UNSIGNED_TRAILER):
            raise ValueError(f"{payload} is not an aws-chunked payload mode")
        self._signed = payload is not Payload.STREAMING_UNSIGNED_TRAILER
        if self._signed and signing is None:
            raise ValueError("a signed streaming payload needs the request's signing context")
        self._signing = signing
        self._previous = signing.seed_signature if signing else ""
        self._trailer_mode = payload is not Payload.STREAMING_SIGNED
        self._declared = tuple(n.lower() for n in declared_trailers)
        self._expected_length = decoded_length
        self._state = _State.SIZE
        self._buffer = bytearray()
        self._remaining = 0
        self._chunk_signature = ""
        self._chunk_hash = hashlib.sha256()
        self._short_chunk_seen = False
        self._final = False
        self._length = 0
        self._trailer_lines: list[str] = []
        self._trailer_bytes = 0
        self._failure: S3Error | None = None

    @property
    def done(self) -> bool:
        return self._state is _State.DONE

    def _fail(self, code: ErrorCode, message: str) -> S3Error:
        self._state = _State.FAILED
        self._failure = S3Error(code, message)
        return self._failure

    def feed(self, data: bytes) -> bytes | S3Error:
        if self._failure is not None:
            return self._failure
        self._buffer += data
        out = bytearray()
        while self._buffer:
            progressed = self._step(out)
            if isinstance(progressed, S3Error):
                return progressed
            if not progressed:
                break
        return bytes(out)

    def finish(self) -> Decoded | S3Error:
        """The end of the raw body: the stream must have ended with its final chunk and trailers, exactly."""
        if self._failure is not None:
            return self._failure
        if self._state is not _State.DONE:
            return self._fail(ErrorCode.INCOMPLETE_BODY, "the aws-chunked body ended before its final chunk")
        if self._buffer:
            return self._fail(ErrorCode.INCOMPLETE_BODY, f"{len(self._buffer)} bytes follow the final chunk")
        if self._expected_length is not None and self._length != self._expected_length:
            return self._fail(ErrorCode.INCOMPLETE_BODY, f"the body decoded to {self._length} bytes but "
                              f"x-amz-decoded-content-length is {self._expected_length}")
        trailers = self._parse_trailers()
        if isinstance(trailers, S3Error):
            return trailers
        return Decoded(self._length, trailers)

    # ---- the state machine ---------------------------------------------------------------------------------

    def _step(self, out: bytearray) -> bool | S3Error:
        """Advance once; False when more input is needed."""
        match self._state:
            case _State.SIZE:
                line = self._line()
                return line if isinstance(line, S3Error) else (line is not None and self._on_size(line))
            case _State.DATA:
                take = bytes(self._buffer[: self._remaining])
                del self._buffer[: len(take)]
                self._remaining -= len(take)
                self._chunk_hash.update(take)
                self._length += len(take)
                out += take
                if self._expected_length is not None and self._length > self._expected_length:
                    return self._fail(ErrorCode.INVALID_REQUEST, "the body is longer than x-amz-decoded-content-length")
                if self._remaining == 0:
                    self._state = _State.DATA_END
                return True
            case _State.DATA_END:
                if len(self._buffer) < 2:
                    return False
                if self._buffer[:2] != b"\r\n":
                    return self._fail(ErrorCode.INCOMPLETE_BODY, "a chunk's data is not followed by CRLF: the chunk "
                                      "size does not match its data")
                del self._buffer[:2]
                verdict = self._end_chunk()
                return verdict if isinstance(verdict, S3Error) else True
            case _State.TRAILER:
                line = self._line()
                if isinstance(line, S3Error) or line is None:
                    return line if isinstance(line, S3Error) else False
                if line == "":
                    self._state = _State.DONE
                    return True
                self._trailer_bytes += len(line) + 2
                if self._trailer_bytes > MAX_TRAILER_BYTES:
                    return self._fail(ErrorCode.MALFORMED_TRAILER, "the trailers are too long")
                self._trailer_lines.append(line)
                return True
            case _State.DONE:
                return self._fail(ErrorCode.INCOMPLETE_BODY, "data follows the final chunk")
            case _State.FAILED:
                assert self._failure is not None
                return self._failure

    def _line(self) -> str | S3Error | None:
        end = self._buffer.find(b"\r\n")
        if end < 0:
            if len(self._buffer) > MAX_LINE:
                return self._fail(ErrorCode.INVALID_CHUNK_SIZE, "a chunk header line is not terminated by CRLF")
            return None
        raw = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            return self._fail(ErrorCode.INVALID_CHUNK_SIZE, "a chunk header line is not ASCII")

    def _on_size(self, line: str) -> bool | S3Error:
        size_text, _, extensions = line.partition(";")
        size = int(size_text, 16) if _HEX_SIZE.fullmatch(size_text) else -1
        if size < 0:
            return self._fail(ErrorCode.INVALID_CHUNK_SIZE, f"the chunk size {size_text[:32]!r} is not hexadecimal")
        if size > MAX_CHUNK:
            return self._fail(ErrorCode.INVALID_CHUNK_SIZE, f"a chunk of {size} bytes exceeds {MAX_CHUNK}")
        if self._signed:
            name, _, value = extensions.partition("=")
            if name != "chunk-signature" or len(value) != 64:
                return self._fail(ErrorCode.INCOMPLETE_BODY, "a signed chunk lacks its chunk-signature")
            if self._short_chunk_seen and size > 0:
                return self._fail(ErrorCode.INVALID_CHUNK_SIZE, "only the last chunk may be smaller than 8192 bytes")
            self._short_chunk_seen = size < MIN_SIGNED_CHUNK
            self._chunk_signature = value.lower()
        self._chunk_hash = hashlib.sha256()
        self._remaining = size
        if size == 0:
            self._final = True
            verdict = self._verify_chunk()
            if isinstance(verdict, S3Error):
                return verdict
            self._state = _State.TRAILER if self._trailer_mode else _State.DATA_END
            return True
        self._state = _State.DATA
        return True

    def _end_chunk(self) -> S3Error | None:
        if self._final:
            # the CRLF after the zero-length final chunk without trailers (STREAMING-AWS4-HMAC-SHA256-PAYLOAD)
            self._state = _State.DONE
            return None
        verdict = self._verify_chunk()
        if isinstance(verdict, S3Error):
            return verdict
        self._state = _State.SIZE
        return None

    def _verify_chunk(self) -> S3Error | None:
        if not self._signed:
            return None
        assert self._signing is not None
        to_sign = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", self._signing.amz_date, self._signing.scope, self._previous,
                             EMPTY_SHA256, self._chunk_hash.hexdigest()])
        expected = sign(self._signing.signing_key, to_sign)
        if not hmac.compare_digest(expected, self._chunk_signature):
            return self._fail(ErrorCode.SIGNATURE_DOES_NOT_MATCH, "a chunk signature does not match the chunk: the "
                              "body was altered, reordered or signed with another key")
        self._previous = expected
        return None

    # ---- trailers --------------------------------------------------------------------------------------------

    def _parse_trailers(self) -> dict[str, str] | S3Error:
        trailers: dict[str, str] = {}
        signature = None
        for line in self._trailer_lines:
            name, sep, value = line.partition(":")
            if not sep:
                return self._fail(ErrorCode.MALFORMED_TRAILER, f"the trailer line {line[:64]!r} has no ':'")
            name, value = name.strip().lower(), value.strip()
            if name == "x-amz-trailer-signature":
                signature = value.lower()
            else:
                trailers[name] = value
        if set(trailers) != set(self._declared):
            return self._fail(ErrorCode.MALFORMED_TRAILER, f"the body carries trailers {sorted(trailers)} but "
                              f"x-amz-trailer declared {sorted(self._declared)}")
        if self._signed and self._trailer_mode:
            problem = self._verify_trailer(trailers, signature)
            if problem is not None:
                return problem
        return trailers

    def _verify_trailer(self, trailers: dict[str, str], signature: str | None) -> S3Error | None:
        assert self._signing is not None
        if signature is None:
            return self._fail(ErrorCode.MALFORMED_TRAILER, "the signed trailer lacks x-amz-trailer-signature")
        canonical = "".join(f"{name}:{value}\n" for name, value in trailers.items())
        to_sign = "\n".join(["AWS4-HMAC-SHA256-TRAILER", self._signing.amz_date, self._signing.scope, self._previous,
                             hashlib.sha256(canonical.encode()).hexdigest()])
        if not hmac.compare_digest(sign(self._signing.signing_key, to_sign), signature):
            return self._fail(ErrorCode.SIGNATURE_DOES_NOT_MATCH, "the trailer signature does not match the trailers")
        return None


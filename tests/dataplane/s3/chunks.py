"""aws-chunked bodies built by hand for decoder tests, following the AWS spec independently of the decoder: signed
chunks (each chained from the previous signature), unsigned chunks, and trailers (signed or not)."""

from __future__ import annotations

import hashlib
import hmac

from dataplane.s3.sigv4 import SigningContext

EMPTY = hashlib.sha256(b"").hexdigest()


def _hmac_hex(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def signed_chunks(pieces: list[bytes], ctx: SigningContext, *, trailers: dict[str, str] | None = None,
                  key: bytes | None = None) -> bytes:
    """STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]: every piece, then the zero chunk, then trailers if given."""
    signing_key = key if key is not None else ctx.signing_key
    previous, out = ctx.seed_signature, bytearray()
    for piece in [*pieces, b""]:
        to_sign = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", ctx.amz_date, ctx.scope, previous, EMPTY,
                             hashlib.sha256(piece).hexdigest()])
        previous = _hmac_hex(signing_key, to_sign)
        out += f"{len(piece):x};chunk-signature={previous}\r\n".encode()
        if piece:
            out += piece + b"\r\n"
    if trailers is None:
        return bytes(out + b"\r\n")
    canonical = "".join(f"{k}:{v}\n" for k, v in trailers.items())
    to_sign = "\n".join(["AWS4-HMAC-SHA256-TRAILER", ctx.amz_date, ctx.scope, previous,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    for name, value in trailers.items():
        out += f"{name}:{value}\r\n".encode()
    out += f"x-amz-trailer-signature:{_hmac_hex(signing_key, to_sign)}\r\n\r\n".encode()
    return bytes(out)


def unsigned_chunks(pieces: list[bytes], trailers: dict[str, str]) -> bytes:
    """STREAMING-UNSIGNED-PAYLOAD-TRAILER, as botocore's AwsChunkedWrapper writes it."""
    out = bytearray()
    for piece in pieces:
        out += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    out += b"0\r\n"
    for name, value in trailers.items():
        out += f"{name}:{value}\r\n".encode()
    return bytes(out + b"\r\n")

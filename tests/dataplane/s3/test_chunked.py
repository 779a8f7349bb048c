"""The aws-chunked decoder: AWS's published streaming example, botocore's own encoder, hand-made signed streams, and
malformed input fed in every split (a body arrives in arbitrary pieces)."""

from __future__ import annotations

import io

import pytest
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum, Sha1Checksum, Sha256Checksum
from hypothesis import given, settings
from hypothesis import strategies as st

from dataplane.s3 import checksums, sigv4
from dataplane.s3.body import body_reader
from dataplane.s3.checksums import Algorithm
from dataplane.s3.chunked import ChunkedDecoder, Decoded
from dataplane.s3.errors import ErrorCode, S3Error
from dataplane.s3.sigv4 import Authenticated, Payload, Request, SigningContext
from tests.dataplane.s3.chunks import signed_chunks, split, unsigned_chunks
from tests.dataplane.s3.signing import NOW, secrets, signed

KiB = 1024


def feed_all(decoder: ChunkedDecoder, raw: bytes, step: int) -> tuple[bytes, Decoded | S3Error]:
    out = bytearray()
    for i in range(0, len(raw), step):
        got = decoder.feed(raw[i:i + step])
        if isinstance(got, S3Error):
            return bytes(out), got
        out += got
    return bytes(out), decoder.finish()


def context(payload: str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD") -> SigningContext:
    verdict = sigv4.verify(signed("PUT", payload=payload), secrets, NOW)
    assert isinstance(verdict, Authenticated) and verdict.signing is not None
    return verdict.signing


def test_aws_documented_streaming_example() -> None:
    """AWS S3 API reference, "Example calculations" for STREAMING-AWS4-HMAC-SHA256-PAYLOAD: 66560 bytes of 'a' in
    chunks of 64 KiB, the seed signature from the Authorization header and each chunk signature as published."""
    request = Request("PUT", "/examplebucket/chunkObject.txt", "", (
        ("Host", "s3.amazonaws.com"), ("x-amz-date", "20130524T000000Z"),
        ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ("Authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
         "SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
         "x-amz-decoded-content-length;x-amz-storage-class,"
         "Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"),
        ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"), ("Content-Encoding", "aws-chunked"),
        ("x-amz-decoded-content-length", "66560"), ("Content-Length", "66824"),
    ))
    aws = {"AKIAIOSFODNN7EXAMPLE": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}
    verdict = sigv4.verify(request, aws.get, 1369353600.0)
    assert isinstance(verdict, Authenticated) and verdict.signing is not None, verdict
    published = ["ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
                 "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
                 "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"]
    body = (f"10000;chunk-signature={published[0]}\r\n".encode() + b"a" * 65536 + b"\r\n"
            + f"400;chunk-signature={published[1]}\r\n".encode() + b"a" * 1024 + b"\r\n"
            + f"0;chunk-signature={published[2]}\r\n\r\n".encode())
    assert len(body) == 66824
    decoder = ChunkedDecoder(verdict.payload, signing=verdict.signing, decoded_length=66560)
    data, outcome = feed_all(decoder, body, 4096)
    assert outcome == Decoded(66560, {})
    assert data == b"a" * 66560


@pytest.mark.parametrize("step", [1, 7, 8192, 1 << 20], ids=["byte", "odd", "8k", "whole"])
def test_signed_stream_any_split(step: int) -> None:
    ctx = context()
    data = bytes(range(256)) * 200  # 51200 bytes: 8 KiB chunks and a short last one
    raw = signed_chunks(split(data, 8 * KiB), ctx)
    decoder = ChunkedDecoder(Payload.STREAMING_SIGNED, signing=ctx, decoded_length=len(data))
    out, outcome = feed_all(decoder, raw, step)
    assert (out, outcome) == (data, Decoded(len(data), {}))


def test_signed_trailer_stream() -> None:
    ctx = context("STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER")
    data = b"z" * 20000
    crc = checksums.compute(Algorithm.CRC32C, data)
    raw = signed_chunks(split(data, 10000), ctx, trailers={"x-amz-checksum-crc32c": crc})
    decoder = ChunkedDecoder(Payload.STREAMING_SIGNED_TRAILER, signing=ctx, decoded_length=len(data),
                             declared_trailers=("x-amz-checksum-crc32c",))
    assert feed_all(decoder, raw, 333) == (data, Decoded(len(data), {"x-amz-checksum-crc32c": crc}))


def _tamper(raw: bytes, at: int) -> bytes:
    return raw[:at] + bytes([raw[at] ^ 1]) + raw[at + 1:]


@pytest.mark.parametrize("where", ["first-chunk-data", "last-chunk-data", "signature"])
def test_tampered_signed_chunk_is_rejected(where: str) -> None:
    ctx = context()
    data = b"q" * 20000
    raw = signed_chunks(split(data, 10000), ctx)
    header = len(f"{10000:x};chunk-signature=") + 64 + 2
    at = {"first-chunk-data": header + 5, "last-chunk-data": len(raw) - 200,
          "signature": header - 10}[where]
    decoder = ChunkedDecoder(Payload.STREAMING_SIGNED, signing=ctx, decoded_length=len(data))
    _, outcome = feed_all(decoder, _tamper(raw, at), 4096)
    assert isinstance(outcome, S3Error) and outcome.code is ErrorCode.SIGNATURE_DOES_NOT_MATCH


def test_reordered_chunks_are_rejected() -> None:
    ctx = context()
    first, second = b"1" * 9000, b"2" * 9000
    raw_ab = signed_chunks([first, second], ctx)
    chunk_a_len = len(f"{9000:x};chunk-signature=") + 64 + 2 + 9000 + 2
    a, b, rest = raw_ab[:chunk_a_len], raw_ab[chunk_a_len:2 * chunk_a_len], raw_ab[2 * chunk_a_len:]
    decoder = ChunkedDecoder(Payload.STREAMING_SIGNED, signing=ctx, decoded_length=18000)
    _, outcome = feed_all(decoder, b + a + rest, 1000)
    assert isinstance(outcome, S3Error) and outcome.code is ErrorCode.SIGNATURE_DOES_NOT_MATCH


def test_chunks_signed_with_another_key_are_rejected() -> None:
    ctx = context()
    raw = signed_chunks([b"x" * 9000], ctx, key=b"\0" * 32)
    _, outcome = feed_all(ChunkedDecoder(Payload.STREAMING_SIGNED, signing=ctx, decoded_length=9000), raw, 100)
    assert isinstance(outcome, S3Error) and outcome.code is ErrorCode.SIGNATURE_DOES_NOT_MATCH


def test_signed_trailer_tampered() -> None:
    ctx = context("STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER")
    raw = signed_chunks([b"d" * 100], ctx, trailers={"x-amz-checksum-crc32": checksums.compute(Algorithm.CRC32,
                                                                                                b"d" * 100)})
    forged = raw.replace(b"x-amz-checksum-crc32:", b"x-amz-checksum-crc32:A", 1)
    decoder = ChunkedDecoder(Payload.STREAMING_SIGNED_TRAILER, signing=ctx, decoded_length=100,
                             declared_trailers=("x-amz-checksum-crc32",))
    _, outcome = feed_all(decoder, forged, 64)
    assert isinstance(outcome, S3Error) and outcome.code is ErrorCode.SIGNATURE_DOES_NOT_MATCH


def test_short_chunk_before_the_last_is_rejected() -> None:
    ctx = context()
    raw = signed_chunks([b"a" * 100, b"b" * 9000], ctx)
    _, outcome = feed_all(ChunkedDecoder(Payload.STREAMING_SIGNED, signing=ctx, decoded_length=9100), raw, 512)
    assert isinstance(outcome, S3Error) and outcome.code is ErrorCode.INVALID_CHUNK_SIZE


UNSIGNED = Payload.STREAMING_UNSIGNED_TRAILER
CRC = checksums.compute(Algorithm.CRC32, b"hello")
TRAILER = f"x-amz-checksum-crc32:{CRC}\r\n\r\n".encode()


@pytest.mark.parametrize(("raw", "declared", "length", "expected"), [
    pytest.param(b"zz\r\nhello\r\n0\r\n" + TRAILER, 5, 5, ErrorCode.INVALID_CHUNK_SIZE, id="size-not-hex"),
    pytest.param(b"-5\r\nhello\r\n0\r\n" + TRAILER, 5, 5, ErrorCode.INVALID_CHUNK_SIZE, id="negative-size"),
    pytest.param(b"0x5\r\nhello\r\n0\r\n" + TRAILER, 5, 5, ErrorCode.INVALID_CHUNK_SIZE, id="0x-prefix"),
    pytest.param(b"+5\r\nhello\r\n0\r\n" + TRAILER, 5, 5, ErrorCode.INVALID_CHUNK_SIZE, id="plus-sign"),
    pytest.param(b"0_5\r\nhello\r\n0\r\n" + TRAILER, 5, 5, ErrorCode.INVALID_CHUNK_SIZE, id="underscore"),
    pytest.param(b"5\r\nhello\r\n-0\r\n" + TRAILER, 5, 5, ErrorCode.INVALID_CHUNK_SIZE, id="minus-zero-final"),
    pytest.param(b"\xd9\xa5\r\nhello\r\n0\r\n" + TRAILER, 5, 5, ErrorCode.INVALID_CHUNK_SIZE, id="non-ascii"),
    pytest.param(b"6\r\nhello\r\n0\r\n" + TRAILER, 5, None, ErrorCode.INCOMPLETE_BODY, id="size-too-big"),
    pytest.param(b"4\r\nhello\r\n0\r\n" + TRAILER, 5, None, ErrorCode.INCOMPLETE_BODY, id="size-too-small"),
    pytest.param(b"5\r\nhello\r\n", 5, 5, ErrorCode.INCOMPLETE_BODY, id="no-final-chunk"),
    pytest.param(b"5\r\nhel", 5, 5, ErrorCode.INCOMPLETE_BODY, id="truncated-data"),
    pytest.param(b"5\r\nhello\r\n0\r\n" + TRAILER, 5, 6, ErrorCode.INCOMPLETE_BODY, id="decoded-length-short"),
    pytest.param(b"5\r\nhello\r\n0\r\n" + TRAILER, 5, 4, ErrorCode.INVALID_REQUEST, id="decoded-length-long"),
    pytest.param(b"5\r\nhello\r\n0\r\n\r\n", 5, 5, ErrorCode.MALFORMED_TRAILER, id="declared-trailer-missing"),
    pytest.param(b"5\r\nhello\r\n0\r\nx-amz-checksum-sha1:AAAA\r\n\r\n", 5, 5, ErrorCode.MALFORMED_TRAILER,
                 id="undeclared-trailer"),
    pytest.param(b"5\r\nhello\r\n0\r\nno-colon\r\n\r\n", 5, 5, ErrorCode.MALFORMED_TRAILER, id="trailer-syntax"),
    pytest.param(b"5\r\nhello\r\n0\r\n" + TRAILER + b"junk", 5, 5, ErrorCode.INCOMPLETE_BODY, id="bytes-after-end"),
    pytest.param(b"5" * 5000, 5, 5, ErrorCode.INVALID_CHUNK_SIZE, id="endless-size-line"),
    pytest.param(b"2000000\r\n", 5, None, ErrorCode.INVALID_CHUNK_SIZE, id="chunk-too-large"),
])
@pytest.mark.parametrize("step", [1, 3, 1 << 16], ids=["byte", "three", "whole"])
def test_malformed_unsigned_streams(raw: bytes, declared: int, length: int | None, expected: ErrorCode,
                                    step: int) -> None:
    decoder = ChunkedDecoder(UNSIGNED, decoded_length=length, declared_trailers=("x-amz-checksum-crc32",))
    _, outcome = feed_all(decoder, raw, step)
    assert isinstance(outcome, S3Error), outcome
    assert outcome.code is expected
    assert decoder.feed(b"more") is outcome  # a failed decoder stays failed


def test_signed_chunk_without_signature_is_rejected() -> None:
    ctx = context()
    decoder = ChunkedDecoder(Payload.STREAMING_SIGNED, signing=ctx, decoded_length=5)
    _, outcome = feed_all(decoder, b"5\r\nhello\r\n0\r\n\r\n", 4)
    assert isinstance(outcome, S3Error) and outcome.code is ErrorCode.INCOMPLETE_BODY


# ---- botocore's own encoder, through the whole body reader (decoder + checksum) -----------------------------------

@pytest.mark.parametrize(("algorithm", "cls"), [(Algorithm.CRC32, Crc32Checksum), (Algorithm.SHA1, Sha1Checksum),
                                                (Algorithm.SHA256, Sha256Checksum)], ids=str)
def test_botocore_aws_chunked_wrapper_round_trip(algorithm: Algorithm, cls: type) -> None:
    data = bytes(range(251)) * 9000  # ~2.2 MiB: three botocore chunks of 1 MiB
    name = f"x-amz-checksum-{algorithm.value}"
    raw = AwsChunkedWrapper(io.BytesIO(data), checksum_cls=cls, checksum_name=name).read()
    headers = {"x-amz-trailer": name, "x-amz-decoded-content-length": str(len(data))}
    auth = Authenticated("AKIDEXAMPLE", UNSIGNED)
    reader = body_reader(headers.get, auth)
    assert not isinstance(reader, S3Error)
    out = bytearray()
    for i in range(0, len(raw), 100_000):
        piece = reader.feed(raw[i:i + 100_000])
        assert not isinstance(piece, S3Error), piece
        out += piece
    digests = reader.finish()
    assert not isinstance(digests, S3Error), digests
    assert bytes(out) == data
    assert (digests.size, digests.checksum) == (len(data), (algorithm, checksums.compute(algorithm, data)))


def test_trailer_checksum_mismatch_is_bad_digest() -> None:
    data = b"payload"
    wrong = checksums.compute(Algorithm.CRC32, b"other")
    raw = unsigned_chunks([data], {"x-amz-checksum-crc32": wrong})
    headers = {"x-amz-trailer": "x-amz-checksum-crc32"}
    reader = body_reader(headers.get, Authenticated("AKIDEXAMPLE", UNSIGNED))
    assert not isinstance(reader, S3Error)
    assert reader.feed(raw) == data  # released as it arrives; the verdict comes at the end
    outcome = reader.finish()
    assert isinstance(outcome, S3Error) and outcome.code is ErrorCode.BAD_DIGEST


def test_signed_stream_through_body_reader_needs_decoded_length() -> None:
    ctx = context()
    auth = Authenticated("AKIDEXAMPLE", Payload.STREAMING_SIGNED, signing=ctx)
    no_headers: dict[str, str] = {}
    outcome = body_reader(no_headers.get, auth)
    assert isinstance(outcome, S3Error) and outcome.code is ErrorCode.MISSING_CONTENT_LENGTH


@settings(max_examples=60, deadline=None)
@given(data=st.binary(min_size=0, max_size=40_000), chunk=st.integers(min_value=8192, max_value=20_000),
       cuts=st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=20), signed_mode=st.booleans())
def test_any_stream_decodes_whatever_the_chunking_and_splits(data: bytes, chunk: int, cuts: list[int],
                                                             signed_mode: bool) -> None:
    """Property: a well-formed stream decodes to exactly its payload however it is chunked and however the network
    splits it."""
    crc = checksums.compute(Algorithm.CRC32, data)
    if signed_mode:
        ctx = context("STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER")
        raw = signed_chunks(split(data, chunk), ctx, trailers={"x-amz-checksum-crc32": crc})
        decoder = ChunkedDecoder(Payload.STREAMING_SIGNED_TRAILER, signing=ctx, decoded_length=len(data),
                                 declared_trailers=("x-amz-checksum-crc32",))
    else:
        raw = unsigned_chunks(split(data, chunk), {"x-amz-checksum-crc32": crc})
        decoder = ChunkedDecoder(UNSIGNED, declared_trailers=("x-amz-checksum-crc32",))
    out, position = bytearray(), 0
    for cut in [*cuts, len(raw)]:
        got = decoder.feed(raw[position:position + cut])
        assert not isinstance(got, S3Error), got
        out += got
        position += cut
    assert bytes(out) == data
    assert decoder.finish() == Decoded(len(data), {"x-amz-checksum-crc32": crc})


@pytest.mark.parametrize("name", ["x-amz-checksum-crc32", "x-amz-checksum-sha256", "content-md5"])
@pytest.mark.parametrize("value", ["\u00e9", "\udcff", "AAAA\u00b2"])
def test_non_ascii_digest_headers_are_a_verdict(name: str, value: str) -> None:
    """A digest header holding non-ASCII text is a mismatch or a bad argument, not a TypeError from compare_digest."""
    headers = {name: value}
    reader = body_reader(headers.get, Authenticated("AKIDEXAMPLE", Payload.UNSIGNED))
    if isinstance(reader, S3Error):
        assert reader.code is ErrorCode.INVALID_ARGUMENT
        return
    reader.feed(b"payload")
    outcome = reader.finish()
    assert isinstance(outcome, S3Error) and outcome.code is ErrorCode.BAD_DIGEST


@pytest.mark.parametrize("declared", ["\u00b2", "+5", "9" * 4400])
def test_decoded_length_must_be_ascii_digits(declared: str) -> None:
    headers = {"x-amz-decoded-content-length": declared, "x-amz-trailer": "x-amz-checksum-crc32"}
    outcome = body_reader(headers.get, Authenticated("AKIDEXAMPLE", Payload.STREAMING_UNSIGNED_TRAILER))
    assert isinstance(outcome, S3Error) and outcome.code is ErrorCode.INVALID_ARGUMENT

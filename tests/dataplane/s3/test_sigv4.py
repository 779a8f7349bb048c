"""SigV4 verification against requests signed by botocore's S3 signers, AWS's published examples, and tampering."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataplane.s3 import auth, sigv4
from dataplane.s3.errors import ErrorCode, S3Error
from dataplane.s3.sigv4 import Authenticated, Payload, Request, verify
from tests.dataplane.s3.signing import ACCESS_KEY, NOW, REGION, presigned, secrets, signed


def code(verdict: sigv4.Verdict) -> ErrorCode | None:
    return verdict.code if isinstance(verdict, S3Error) else None


def replace_header(request: Request, name: str, value: str) -> Request:
    kept = tuple((k, v) for k, v in request.headers if k.lower() != name.lower())
    return dataclasses.replace(request, headers=(*kept, (name, value)))


@pytest.mark.parametrize(("method", "url", "body", "headers"), [
    pytest.param("GET", "https://s3.example/bucket/key", b"", {}, id="get"),
    pytest.param("PUT", "https://s3.example/bucket/a%20b/c~d+e=f", b"payload", {"Content-Type": "text/plain"},
                 id="put-odd-key"),
    pytest.param("GET", "https://s3.example/bucket?list-type=2&prefix=a%2Fb&delimiter=%2F&max-keys=5", b"", {},
                 id="query"),
    pytest.param("PUT", "http://127.0.0.1:9000/bucket/k", b"x" * 1000, {"x-amz-meta-Colour": "  dark   blue "},
                 id="meta-spaces"),
    pytest.param("GET", "https://s3.example/bucket/%E2%9C%93", b"", {"Range": "bytes=0-9"}, id="utf8-key"),
])
def test_botocore_signed_requests_verify(method: str, url: str, body: bytes, headers: dict[str, str]) -> None:
    verdict = verify(signed(method, url, body=body, headers=headers), secrets, NOW, region=REGION)
    assert isinstance(verdict, Authenticated), verdict
    assert verdict.access_key == ACCESS_KEY
    assert verdict.payload is Payload.SHA256
    assert verdict.payload_sha256 == hashlib.sha256(body).hexdigest()


def test_aws_documented_get_object_example() -> None:
    """AWS S3 API reference, "Example: GET Object" (Signature Version 4, header form)."""
    request = Request("GET", "/test.txt", "", (
        ("Host", "examplebucket.s3.amazonaws.com"), ("Range", "bytes=0-9"),
        ("x-amz-content-sha256", sigv4.EMPTY_SHA256), ("x-amz-date", "20130524T000000Z"),
        ("Authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
         "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
         "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"),
    ))
    aws = {"AKIAIOSFODNN7EXAMPLE": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}
    verdict = verify(request, aws.get, 1369353600.0)
    assert isinstance(verdict, Authenticated), verdict


def test_aws_documented_presigned_example() -> None:
    """AWS S3 API reference, "Example: Query Parameter Authentication (presigned URL)"."""
    query = ("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2F"
             "aws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature="
             "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")
    request = Request("GET", "/test.txt", query, (("Host", "examplebucket.s3.amazonaws.com"),))
    aws = {"AKIAIOSFODNN7EXAMPLE": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}
    assert isinstance(verify(request, aws.get, 1369353600.0 + 3600), Authenticated)
    assert code(verify(request, aws.get, 1369353600.0 + 86401)) is ErrorCode.ACCESS_DENIED


def test_wrong_secret() -> None:
    assert code(verify(signed(secret="wrong"), secrets, NOW)) is ErrorCode.SIGNATURE_DOES_NOT_MATCH


def test_unknown_access_key() -> None:
    assert code(verify(signed(access_key="AKIDNOBODY"), secrets, NOW)) is ErrorCode.INVALID_ACCESS_KEY_ID


@pytest.mark.parametrize(("name", "value"), [
    ("Host", "other.example"), ("x-amz-date", "20270115T080001Z"), ("Range", "bytes=0-10"),
], ids=["host", "date", "range"])
def test_tampered_signed_header(name: str, value: str) -> None:
    request = signed(headers={"Range": "bytes=0-9"})
    assert isinstance(verify(request, secrets, NOW), Authenticated)
    assert code(verify(replace_header(request, name, value), secrets, NOW)) is ErrorCode.SIGNATURE_DOES_NOT_MATCH


def test_tampered_path_query_and_method() -> None:
    request = signed(url="https://s3.example/bucket/key?list-type=2")
    for changed in (dataclasses.replace(request, raw_path="/bucket/other"),
                    dataclasses.replace(request, raw_query="list-type=2&prefix=x"),
                    dataclasses.replace(request, method="DELETE")):
        assert code(verify(changed, secrets, NOW)) is ErrorCode.SIGNATURE_DOES_NOT_MATCH


def test_payload_hash_is_signed() -> None:
    request = signed("PUT", body=b"original")
    forged = replace_header(request, "x-amz-content-sha256", hashlib.sha256(b"forged").hexdigest())
    assert code(verify(forged, secrets, NOW)) is ErrorCode.SIGNATURE_DOES_NOT_MATCH


@pytest.mark.parametrize(("offset", "ok"), [(0, True), (899, True), (-899, True), (901, False), (-901, False)],
                         ids=["now", "just-behind", "just-ahead", "too-far-behind", "too-far-ahead"])
def test_skew_window(offset: float, ok: bool) -> None:
    verdict = verify(signed(when=NOW), secrets, NOW + offset)
    assert isinstance(verdict, Authenticated) is ok
    if not ok:
        assert code(verdict) is ErrorCode.REQUEST_TIME_TOO_SKEWED


def test_region_is_checked_when_configured() -> None:
    request = signed(region="eu-west-1")
    assert isinstance(verify(request, secrets, NOW), Authenticated)
    assert code(verify(request, secrets, NOW, region="us-east-1")) is ErrorCode.AUTHORIZATION_HEADER_MALFORMED


@pytest.mark.parametrize(("authorization", "expected"), [
    ("AWS AKIDEXAMPLE:c2lnbmF0dXJl", ErrorCode.INVALID_REQUEST),
    ("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20270115/us-east-1/s3/aws4_request",
     ErrorCode.AUTHORIZATION_HEADER_MALFORMED),
    ("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/2027/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=ab",
     ErrorCode.AUTHORIZATION_HEADER_MALFORMED),
    ("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20270115/us-east-1/s3/aws4_request, SignedHeaders=x-amz-date, "
     "Signature=ab", ErrorCode.AUTHORIZATION_HEADER_MALFORMED),
    ("AWS4-HMAC-SHA256 garbage", ErrorCode.AUTHORIZATION_HEADER_MALFORMED),
], ids=["sigv2", "no-signature", "bad-date", "host-unsigned", "garbage"])
def test_malformed_authorization(authorization: str, expected: ErrorCode) -> None:
    request = replace_header(signed(), "Authorization", authorization)
    assert code(verify(request, secrets, NOW)) is expected


def test_scope_date_must_match_request_date() -> None:
    request = signed()
    auth = request.header("authorization") or ""
    changed = replace_header(request, "Authorization", auth.replace("/20270115/", "/20270114/"))
    assert "/20270115/" in auth
    assert code(verify(changed, secrets, NOW)) is ErrorCode.AUTHORIZATION_HEADER_MALFORMED


def test_scope_must_name_s3() -> None:
    request = signed()
    auth = (request.header("authorization") or "").replace("/s3/aws4_request", "/ec2/aws4_request")
    assert code(verify(replace_header(request, "Authorization", auth), secrets, NOW)) is \
        ErrorCode.AUTHORIZATION_HEADER_MALFORMED


@pytest.mark.parametrize(("value", "expected"), [
    ("UNSIGNED-PAYLOAD", Payload.UNSIGNED),
    ("STREAMING-UNSIGNED-PAYLOAD-TRAILER", Payload.STREAMING_UNSIGNED_TRAILER),
    ("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", Payload.STREAMING_SIGNED),
    ("STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER", Payload.STREAMING_SIGNED_TRAILER),
])
def test_payload_modes(value: str, expected: Payload) -> None:
    request = signed("PUT", payload=value)
    verdict = verify(request, secrets, NOW)
    assert isinstance(verdict, Authenticated), verdict
    assert verdict.payload is expected
    streaming_signed = expected in (Payload.STREAMING_SIGNED, Payload.STREAMING_SIGNED_TRAILER)
    assert (verdict.signing is not None) is streaming_signed
    if verdict.signing is not None:
        assert verdict.signing.seed_signature in (request.header("authorization") or "")
        assert verdict.signing.signing_key.hex() not in repr(verdict)  # the derived key never reaches a log line
        assert "signing_key" not in repr(verdict)


@pytest.mark.parametrize(("value", "expected"), [
    ("STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD", ErrorCode.NOT_IMPLEMENTED),
    ("not-a-hash", ErrorCode.INVALID_ARGUMENT),
])
def test_unsupported_payload_modes(value: str, expected: ErrorCode) -> None:
    assert code(verify(signed("PUT", payload=value), secrets, NOW)) is expected


def test_missing_content_sha256() -> None:
    request = signed()
    kept = tuple((k, v) for k, v in request.headers if k.lower() != "x-amz-content-sha256")
    assert code(verify(dataclasses.replace(request, headers=kept), secrets, NOW)) is ErrorCode.INVALID_REQUEST


def test_anonymous_request_is_denied() -> None:
    request = Request("GET", "/bucket/key", "", (("Host", "s3.example"),))
    assert code(verify(request, secrets, NOW)) is ErrorCode.ACCESS_DENIED


# ---- presigned -------------------------------------------------------------------------------------------------

def test_presigned_ok_and_payload_unsigned() -> None:
    verdict = verify(presigned(expires=300), secrets, NOW + 10)
    assert isinstance(verdict, Authenticated), verdict
    assert (verdict.payload, verdict.presigned) == (Payload.UNSIGNED, True)


@pytest.mark.parametrize(("at", "expected"), [
    (NOW + 299, None), (NOW + 301, ErrorCode.ACCESS_DENIED), (NOW - 3600, ErrorCode.ACCESS_DENIED),
], ids=["within", "expired", "not-yet-valid"])
def test_presigned_validity(at: float, expected: ErrorCode | None) -> None:
    assert code(verify(presigned(expires=300), secrets, at)) is expected


def test_presigned_expired_message() -> None:
    verdict = verify(presigned(expires=60), secrets, NOW + 61)
    assert isinstance(verdict, S3Error) and verdict.message == "Request has expired"


@pytest.mark.parametrize("change", [
    lambda q: q.replace("X-Amz-Expires=300", "X-Amz-Expires=3000"),
    lambda q: q + "&response-content-type=text%2Fhtml",
    lambda q: q.replace("X-Amz-Signature=", "X-Amz-Signature=0")[:-1],
], ids=["longer-expiry", "added-parameter", "signature"])
def test_presigned_tampered_query(change: object) -> None:
    request = presigned(expires=300)
    assert callable(change)
    tampered = dataclasses.replace(request, raw_query=change(request.raw_query))
    assert tampered.raw_query != request.raw_query
    assert code(verify(tampered, secrets, NOW)) is ErrorCode.SIGNATURE_DOES_NOT_MATCH


def test_presigned_tampered_path() -> None:
    request = presigned(url="https://s3.example/bucket/mine")
    assert code(verify(dataclasses.replace(request, raw_path="/bucket/yours"), secrets, NOW)) is \
        ErrorCode.SIGNATURE_DOES_NOT_MATCH


@pytest.mark.parametrize(("drop", "value"), [("X-Amz-Credential", None), ("X-Amz-Expires", "0"),
                                              ("X-Amz-Expires", "604801"), ("X-Amz-Algorithm", "AWS4-ECDSA")],
                         ids=["no-credential", "zero-expiry", "over-a-week", "algorithm"])
def test_presigned_malformed(drop: str, value: str | None) -> None:
    request = presigned()
    pairs = [(k, v) for k, v in sigv4.query_pairs(request.raw_query) if k != drop]
    if value is not None:
        pairs.append((drop, value))
    query = "&".join(f"{sigv4.uri_encode(k)}={sigv4.uri_encode(v)}" for k, v in pairs)
    assert code(verify(dataclasses.replace(request, raw_query=query), secrets, NOW)) is \
        ErrorCode.AUTHORIZATION_QUERY_PARAMETERS_ERROR


def _v2_presigned() -> Request:
    return Request("GET", "/bucket/key", f"AWSAccessKeyId={ACCESS_KEY}&Expires={int(NOW) + 60}&Signature=abc%3D",
                   (("Host", "s3.example"),))


_BASES = {"header": lambda: signed("PUT", body=b"x"), "presigned": lambda: presigned("PUT"), "v2": _v2_presigned}
_QUERY_NAMES = ("X-Amz-Signature", "X-Amz-Expires", "X-Amz-Date", "X-Amz-Credential", "X-Amz-SignedHeaders",
                "X-Amz-Algorithm", "AWSAccessKeyId", "Expires", "Signature", "max-keys", "uploadId")
_HEADER_NAMES = ("Authorization", "x-amz-date", "x-amz-content-sha256", "Host", "x-amz-copy-source", "Content-MD5")
_ODD = st.sampled_from(["\u00b2", "\u0663", "\u00e9", "%C3%A9", "%C2%B2", "+5", "1_0", "0x10", "-1", "9" * 4400, "",
                        "=", "&", "%", "\udcff", "AWS4-HMAC-SHA256 Credential=\u00e9", "Signature=\u00e9"])
_TEXT = st.one_of(_ODD, st.text(max_size=40))


@given(base=st.sampled_from(sorted(_BASES)), where=st.sampled_from(["query", "header", "path", "drop-query"]),
       name=st.sampled_from(_QUERY_NAMES + _HEADER_NAMES), value=_TEXT)
@settings(max_examples=400, deadline=None)
def test_verdict_is_a_value_for_any_input(base: str, where: str, name: str, value: str) -> None:
    """Never an exception for a bad request, however it is bent: a field of a well-formed request (SigV4 header form,
    SigV4 presigned, SigV2 presigned) replaced by any text, the non-ASCII digits and signatures that once raised
    among it."""
    request = _BASES[base]()
    pairs = sigv4.query_pairs(request.raw_query)
    match where:
        case "query":
            pairs = [(k, v) for k, v in pairs if k != name] + [(name, value)]
            request = dataclasses.replace(request, raw_query="&".join(f"{k}={v}" for k, v in pairs))
        case "drop-query":
            request = dataclasses.replace(request, raw_query=request.raw_query.replace(name, value, 1))
        case "header":
            request = replace_header(request, name, value)
        case "path":
            request = dataclasses.replace(request, raw_path="/bucket/" + value)
    verdict = auth.authenticate(request, secrets, NOW, region=REGION, base_domains=("s3.example",))
    assert isinstance(verdict, Authenticated | S3Error)
    if isinstance(verdict, S3Error):
        assert verdict.status in (400, 403, 501)



def _with_header(request: Request, name: str, value: str) -> Request:
    return dataclasses.replace(request, headers=(*request.headers, (name, value)))


@pytest.mark.parametrize("name", ["x-amz-copy-source", "x-amz-meta-owner", "X-Amz-Metadata-Directive"])
def test_unsigned_amz_header_is_refused(name: str) -> None:
    """S3 refuses x-amz-* headers the signature does not cover: the signer did not authorise them."""
    for request in (signed("PUT", body=b"x"), presigned("PUT")):
        verdict = verify(_with_header(request, name, "/other/secret"), secrets, NOW)
        assert isinstance(verdict, S3Error) and verdict.code is ErrorCode.ACCESS_DENIED
        assert "There were headers present in the request which were not signed" in verdict.message
        assert name.lower() in verdict.message


def test_signed_amz_headers_pass_and_are_carried() -> None:
    verdict = verify(signed("PUT", body=b"x", headers={"x-amz-meta-owner": "me"}), secrets, NOW)
    assert isinstance(verdict, Authenticated)
    assert {"host", "x-amz-meta-owner", "x-amz-date", "x-amz-content-sha256"} <= verdict.signed_headers


def test_presigned_tolerates_an_unsigned_content_sha256() -> None:
    """A presigned URL's payload is UNSIGNED-PAYLOAD whatever the header says, so the header binds nothing."""
    verdict = verify(_with_header(presigned("PUT"), "x-amz-content-sha256", "UNSIGNED-PAYLOAD"), secrets, NOW)
    assert isinstance(verdict, Authenticated) and verdict.signed_headers == frozenset({"host"})

"""AWS Signature Version 4 verification for S3, as a pure function of the request and `now`.

Two forms (AWS S3 API reference, "Authenticating Requests (AWS Signature Version 4)"):
- the `Authorization: AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/s3/aws4_request, SignedHeaders=..., Signature=...`
  header, with `x-amz-date` within `SKEW` of now and `x-amz-content-sha256` naming how the body is covered: its hex
  SHA-256, `UNSIGNED-PAYLOAD`, or one of the `STREAMING-*` aws-chunked modes (`chunked.py` verifies those);
- a presigned URL: the same fields as `X-Amz-*` query parameters, `X-Amz-Expires` seconds of validity, the payload
  always `UNSIGNED-PAYLOAD`.

The canonical request is METHOD, the URI-encoded path (S3 encodes it once and does not normalise it), the sorted
URI-encoded query, the signed headers (lower-case names, trimmed values with inner runs of spaces collapsed, one
line each), the signed header list and the payload hash. The string to sign is the algorithm, the request time, the
credential scope and the hex SHA-256 of the canonical request; the key is the HMAC chain of "AWS4"+secret over date,
region, service and "aws4_request".

A bad request is a returned `S3Error`, never an exception. Secrets come from a lookup passed in; the derived signing
key a verdict carries is left out of its repr.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from urllib.parse import quote, unquote

from dataplane.s3.errors import ErrorCode, S3Error, utf8, whole

ALGORITHM = "AWS4-HMAC-SHA256"
SKEW = 15 * 60.0  # seconds a header-signed request's x-amz-date may differ from now (S3's window)
MAX_EXPIRES = 7 * 24 * 3600  # a presigned URL lives at most a week
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_HEX64 = re.compile(r"[0-9a-f]{64}")
_AMZ_DATE = "%Y%m%dT%H%M%SZ"

SecretLookup = Callable[[str], str | None]  # access key id -> secret access key, None when unknown


class Payload(StrEnum):
    """How the body is covered, from x-amz-content-sha256."""

    SHA256 = "sha256"  # the header is the body's hex SHA-256: the adapter must check it
    UNSIGNED = "UNSIGNED-PAYLOAD"
    STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
    STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"


@dataclass(frozen=True, slots=True)
class Request:
    """What arrived, before any decoding: the path and query exactly as sent (percent-encoded), every header."""

    method: str
    raw_path: str
    raw_query: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        values = [v for k, v in self.headers if k.lower() == lowered]
        return ",".join(values) if values else None


@dataclass(frozen=True, slots=True)
class SigningContext:
    """What a streaming body's chunk signatures chain from: the seed signature and the same scope and key."""

    amz_date: str
    scope: str
    seed_signature: str
    signing_key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Authenticated:
    access_key: str
    payload: Payload
    _: KW_ONLY
    payload_sha256: str | None = None  # set when payload is SHA256
    signing: SigningContext | None = None
    presigned: bool = False
    # The lower-case header names the signature covers (SigV2: every x-amz-* header, all of which it signs).
    signed_headers: frozenset[str] = frozenset()


Verdict = Authenticated | S3Error


def _deny(code: ErrorCode, message: str) -> S3Error:
    return S3Error(code, message)


# x-amz-* headers that may be left out of SignedHeaders: the canonical request binds them anyway (the payload hash
# line and the request time), so leaving them unsigned changes nothing. A presigned URL's payload is UNSIGNED-PAYLOAD
# and its time is X-Amz-Date: x-amz-content-sha256 is then ignored, and x-amz-date is not.
_BOUND_HEADER_FORM = frozenset({"x-amz-content-sha256", "x-amz-date"})
_BOUND_PRESIGNED = frozenset({"x-amz-content-sha256"})


def unsigned_amz_headers(request: Request, signed: Iterable[str], bound: frozenset[str]) -> list[str]:
    """The x-amz-* headers present but not signed. S3 refuses such a request: an unsigned x-amz-copy-source,
    x-amz-meta-* or x-amz-metadata-directive would otherwise change what a signature authorised (a presigned PUT
    turned into a copy of another object)."""
    covered = set(signed) | bound
    return sorted({k.lower() for k, _ in request.headers if k.lower().startswith("x-amz-")} - covered)


def _not_signed(names: list[str]) -> S3Error:
    return _deny(ErrorCode.ACCESS_DENIED, "There were headers present in the request which were not signed: "
                 + ", ".join(names))


# ---- canonical request -----------------------------------------------------------------------------------------

def uri_encode(value: str, *, keep_slash: bool = False) -> str:
    """AWS URI encoding: everything but A-Z a-z 0-9 - _ . ~ (and / in paths) as %XX of the UTF-8 bytes."""
    return quote(utf8(value), safe="/~" if keep_slash else "~")


def query_pairs(raw_query: str) -> list[tuple[str, str]]:
    """The decoded (name, value) pairs of a raw query string; `+` is a literal plus, as S3 clients encode space %20."""
    pairs = []
    for part in raw_query.split("&"):
        if part:
            name, _, value = part.partition("=")
            pairs.append((unquote(name), unquote(value)))
    return pairs


def canonical_query(pairs: Iterable[tuple[str, str]], *, skip: str = "") -> str:
    encoded = sorted((uri_encode(k), uri_encode(v)) for k, v in pairs if k != skip)
    return "&".join(f"{k}={v}" for k, v in encoded)


def _normalise_value(value: str) -> str:
    return " ".join(value.split())


def canonical_headers(request: Request, signed: list[str]) -> str:
    lines = []
    for name in signed:
        values = [_normalise_value(v) for k, v in request.headers if k.lower() == name]
        lines.append(f"{name}:{','.join(values)}\n")
    return "".join(lines)


def canonical_paths(raw_path: str) -> list[str]:
    """The path as sent, and re-encoded by the AWS rule from its decoded form (clients differ on what they escape)."""
    reencoded = uri_encode(unquote(raw_path or "/"), keep_slash=True)
    return [raw_path or "/"] if reencoded == (raw_path or "/") else [raw_path or "/", reencoded]


def canonical_request(request: Request, path: str, query: str, *, signed: list[str], payload_hash: str) -> str:
    return "\n".join([request.method.upper(), path, query, canonical_headers(request, signed), ";".join(signed),
                      payload_hash])


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = _hmac(("AWS4" + secret).encode(), date)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    return key


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, utf8(msg), hashlib.sha256).digest()


def same_digest(expected: str, given: str) -> bool:
    """Constant-time comparison of a computed digest with one from the request, whatever characters that holds
    (hmac.compare_digest raises TypeError for a non-ASCII str)."""
    return hmac.compare_digest(expected.encode(), utf8(given))


def sign(key: bytes, string_to_sign: str) -> str:
    return hmac.new(key, utf8(string_to_sign), hashlib.sha256).hexdigest()


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    return "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(utf8(canonical)).hexdigest()])


# ---- credential scope ------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Credential:
    access_key: str
    date: str
    region: str
    service: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


def _parse_credential(value: str) -> _Credential | None:
    parts = value.rsplit("/", 4)
    if len(parts) != 5 or parts[4] != "aws4_request" or not parts[0] or not re.fullmatch(r"[0-9]{8}", parts[1]):
        return None
    return _Credential(parts[0], parts[1], parts[2], parts[3])


def _parse_amz_date(value: str | None) -> float | None:
    if not value or not value.isascii():
        return None
    try:
        return datetime.strptime(value, _AMZ_DATE).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def _check_scope(cred: _Credential, amz_date: str, region: str | None, code: ErrorCode) -> S3Error | None:
    if cred.service != "s3":
        return _deny(code, f"credential scope names service {cred.service!r}, expected 's3'")
    if cred.date != amz_date[:8]:
        return _deny(code, f"credential scope date {cred.date} is not the request date {amz_date[:8]}")
    if region is not None and cred.region != region:
        return _deny(code, f"the region {cred.region!r} is wrong; expecting {region!r}")
    return None


def _matches(request: Request, cred: _Credential, secret: str, amz_date: str, *, query: str, signed: list[str],
             payload_hash: str, signature: str) -> bytes | None:
    """The signing key when `signature` matches one canonical form of the request, else None."""
    key = signing_key(secret, cred.date, cred.region, cred.service)
    for path in canonical_paths(request.raw_path):
        canonical = canonical_request(request, path, query, signed=signed, payload_hash=payload_hash)
        expected = sign(key, string_to_sign(amz_date, cred.scope, canonical))
        if same_digest(expected, signature.lower()):
            return key
    return None


# ---- the two forms ---------------------------------------------------------------------------------------------

def verify(request: Request, secrets: SecretLookup, now: float, *, region: str | None = None) -> Verdict:
    """Authenticate `request`: header form when it has an Authorization header, else presigned when its query has
    X-Amz-Signature, else AccessDenied (anonymous access is not offered)."""
    authorization = request.header("authorization")
    if authorization is not None:
        return verify_header(request, authorization, secrets, now, region=region)
    pairs = query_pairs(request.raw_query)
    if any(k == "X-Amz-Signature" for k, _ in pairs):
        return verify_presigned(request, pairs, secrets, now, region=region)
    return _deny(ErrorCode.ACCESS_DENIED, "anonymous access is not allowed: sign the request (SigV4)")


def _parse_authorization(value: str) -> tuple[_Credential, list[str], str] | S3Error:
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        return _deny(ErrorCode.INVALID_REQUEST,
                     f"the authorization mechanism {algorithm!r} is not supported; use {ALGORITHM}")
    fields: dict[str, str] = {}
    for item in rest.split(","):
        name, sep, val = item.strip().partition("=")
        if not sep:
            return _deny(ErrorCode.AUTHORIZATION_HEADER_MALFORMED, f"the authorization header item {item!r} has no '='")
        fields[name] = val
    missing = [n for n in ("Credential", "SignedHeaders", "Signature") if not fields.get(n)]
    if missing:
        return _deny(ErrorCode.AUTHORIZATION_HEADER_MALFORMED, f"the authorization header lacks {', '.join(missing)}")
    cred = _parse_credential(fields["Credential"])
    if cred is None:
        return _deny(ErrorCode.AUTHORIZATION_HEADER_MALFORMED,
                     "Credential must be AKID/YYYYMMDD/REGION/SERVICE/aws4_request")
    return cred, fields["SignedHeaders"].lower().split(";"), fields["Signature"]


def _payload(value: str | None) -> tuple[Payload, str | None] | S3Error:
    if value is None:
        return _deny(ErrorCode.INVALID_REQUEST, "missing required header for this request: x-amz-content-sha256")
    if _HEX64.fullmatch(value):
        return Payload.SHA256, value
    try:
        return Payload(value), None
    except ValueError:
        if value.startswith("STREAMING-"):
            return _deny(ErrorCode.NOT_IMPLEMENTED, f"x-amz-content-sha256 {value!r} is not supported")
        return _deny(ErrorCode.INVALID_ARGUMENT, "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-*, or a "
                     "hex SHA-256")


def verify_header(request: Request, authorization: str, secrets: SecretLookup, now: float, *,
                  region: str | None = None) -> Verdict:
    parsed = _parse_authorization(authorization)
    if isinstance(parsed, S3Error):
        return parsed
    cred, signed, signature = parsed
    if "host" not in signed:
        return _deny(ErrorCode.AUTHORIZATION_HEADER_MALFORMED, "SignedHeaders must include host")
    payload = _payload(request.header("x-amz-content-sha256"))
    if isinstance(payload, S3Error):
        return payload
    secret = secrets(cred.access_key)
    if secret is None:
        return _deny(ErrorCode.INVALID_ACCESS_KEY_ID, "the AWS access key id you provided does not exist in our "
                     "records")
    amz_date = request.header("x-amz-date") or ""
    when = _parse_amz_date(amz_date)
    if when is None:
        return _deny(ErrorCode.ACCESS_DENIED, "x-amz-date must be present and YYYYMMDDTHHMMSSZ")
    if abs(when - now) > SKEW:
        return _deny(ErrorCode.REQUEST_TIME_TOO_SKEWED, "the difference between the request time and the server's "
                     "time is too large")
    problem = _check_scope(cred, amz_date, region, ErrorCode.AUTHORIZATION_HEADER_MALFORMED)
    if problem is not None:
        return problem
    mode, digest = payload
    hash_line = digest if mode is Payload.SHA256 else mode.value
    assert hash_line is not None
    key = _matches(request, cred, secret, amz_date, query=canonical_query(query_pairs(request.raw_query)),
                   signed=signed, payload_hash=hash_line, signature=signature)
    if key is None:
        return _deny(ErrorCode.SIGNATURE_DOES_NOT_MATCH, "the request signature we calculated does not match the "
                     "signature you provided; check your key and signing method")
    unsigned = unsigned_amz_headers(request, signed, _BOUND_HEADER_FORM)
    if unsigned:
        return _not_signed(unsigned)
    streaming = mode in (Payload.STREAMING_SIGNED, Payload.STREAMING_SIGNED_TRAILER)
    context = SigningContext(amz_date, cred.scope, signature.lower(), key) if streaming else None
    return Authenticated(cred.access_key, mode, payload_sha256=digest, signing=context,
                         signed_headers=frozenset(signed))


def verify_presigned(request: Request, pairs: list[tuple[str, str]], secrets: SecretLookup, now: float, *,
                     region: str | None = None) -> Verdict:
    params = dict(pairs)
    bad = ErrorCode.AUTHORIZATION_QUERY_PARAMETERS_ERROR
    missing = [n for n in ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                           "X-Amz-SignedHeaders", "X-Amz-Signature") if not params.get(n)]
    if missing:
        return _deny(bad, f"query-string authentication requires {', '.join(missing)}")
    if params["X-Amz-Algorithm"] != ALGORITHM:
        return _deny(bad, f"X-Amz-Algorithm must be {ALGORITHM}")
    cred = _parse_credential(params["X-Amz-Credential"])
    if cred is None:
        return _deny(bad, "X-Amz-Credential must be AKID/YYYYMMDD/REGION/SERVICE/aws4_request")
    expires = whole(params["X-Amz-Expires"], 7)
    if expires is None or not 1 <= expires <= MAX_EXPIRES:
        return _deny(bad, f"X-Amz-Expires must be a whole number of seconds from 1 to {MAX_EXPIRES}")
    amz_date = params["X-Amz-Date"]
    when = _parse_amz_date(amz_date)
    if when is None:
        return _deny(bad, "X-Amz-Date must be YYYYMMDDTHHMMSSZ")
    signed = params["X-Amz-SignedHeaders"].lower().split(";")
    if "host" not in signed:
        return _deny(bad, "X-Amz-SignedHeaders must include host")
    secret = secrets(cred.access_key)
    if secret is None:
        return _deny(ErrorCode.INVALID_ACCESS_KEY_ID, "the AWS access key id you provided does not exist in our "
                     "records")
    problem = _check_scope(cred, amz_date, region, bad)
    if problem is not None:
        return problem
    key = _matches(request, cred, secret, amz_date, query=canonical_query(pairs, skip="X-Amz-Signature"),
                   signed=signed, payload_hash=Payload.UNSIGNED.value, signature=params["X-Amz-Signature"])
    if key is None:
        return _deny(ErrorCode.SIGNATURE_DOES_NOT_MATCH, "the request signature we calculated does not match the "
                     "signature you provided; check your key and signing method")
    # Expiry after the signature: an attacker who tampers with the URL learns nothing from the order of checks.
    if now > when + expires:
        return _deny(ErrorCode.ACCESS_DENIED, "Request has expired")
    if when - now > SKEW:
        return _deny(ErrorCode.ACCESS_DENIED, "Request is not valid yet")
    unsigned = unsigned_amz_headers(request, signed, _BOUND_PRESIGNED)
    if unsigned:
        return _not_signed(unsigned)
    return Authenticated(cred.access_key, Payload.UNSIGNED, presigned=True, signed_headers=frozenset(signed))

"""Presigned URLs in the legacy Signature Version 2 query form (`?AWSAccessKeyId=&Expires=&Signature=`), because
boto3's `generate_presigned_url` still produces them by default when the client was not configured with
signature_version="s3v4". Only the query form: SigV2 Authorization headers are refused (AWS deprecated them; no
current client sends them by default).

String to sign (AWS S3 developer guide, "Signing and authenticating REST requests"): METHOD, Content-MD5,
Content-Type, Expires, the x-amz-* headers (lower-case, sorted, "name:value"), and the resource: the path as sent plus
the sub-resources that change its meaning, sorted, values decoded. The signature is base64 HMAC-SHA1 with the secret.
The path is the path-style `/bucket/key` whatever the addressing (botocore's `auth_path`): the Host is not signed, so a
signature over `/key` alone would hold for the same key in every bucket reachable by virtual host. A URL may live at
most `sigv4.MAX_EXPIRES` (a week), as SigV4 ones do.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from dataplane.s3.errors import ErrorCode, S3Error, utf8, whole
from dataplane.s3.sigv4 import MAX_EXPIRES, Authenticated, Payload, Request, SecretLookup, Verdict, same_digest

# botocore's HmacV1Auth.QSAOfInterest: the query parameters that are part of the signed resource
SUBRESOURCES = frozenset({
    "accelerate", "acl", "cors", "defaultObjectAcl", "location", "logging", "partNumber", "policy", "requestPayment",
    "torrent", "versioning", "versionId", "versions", "website", "uploads", "uploadId", "response-content-type",
    "response-content-language", "response-expires", "response-cache-control", "response-content-disposition",
    "response-content-encoding", "delete", "lifecycle", "tagging", "restore", "storageClass", "notification",
    "replication", "analytics", "metrics", "inventory", "select", "select-type", "object-lock",
})


def is_v2_presigned(pairs: list[tuple[str, str]]) -> bool:
    names = {k for k, _ in pairs}
    return {"AWSAccessKeyId", "Signature", "Expires"} <= names


def string_to_sign(request: Request, pairs: list[tuple[str, str]], expires: str, *, path: str) -> str:
    """`path`: the raw path-style `/bucket/key` (routing.path_style)."""
    amz = sorted((k.lower(), v.strip()) for k, v in request.headers if k.lower().startswith("x-amz-"))
    merged: dict[str, list[str]] = {}
    for name, value in amz:
        merged.setdefault(name, []).append(value)
    custom = "".join(f"{name}:{','.join(values)}\n" for name, values in merged.items())
    chosen = sorted(((k, v) for k, v in pairs if k in SUBRESOURCES), key=lambda kv: kv[0])
    resource = path + ("?" + "&".join(f"{k}={v}" if v else k for k, v in chosen) if chosen else "")
    return "\n".join([request.method.upper(), (request.header("content-md5") or "").strip(),
                      (request.header("content-type") or "").strip(), expires]) + "\n" + custom + resource


def verify_presigned_v2(request: Request, pairs: list[tuple[str, str]], secrets: SecretLookup, now: float, *,
                        resource: str) -> Verdict:
    """`resource`: the raw path-style `/bucket/key` the request addresses (routing.path_style)."""
    params = dict(pairs)
    expires = params["Expires"]
    until = whole(expires, 12)
    if until is None:
        return S3Error(ErrorCode.INVALID_ARGUMENT, "Expires must be a whole number of seconds since the epoch")
    if until > now + MAX_EXPIRES:
        return S3Error(ErrorCode.ACCESS_DENIED, f"Expires must be at most {MAX_EXPIRES} seconds (a week) from now")
    secret = secrets(params["AWSAccessKeyId"])
    if secret is None:
        return S3Error(ErrorCode.INVALID_ACCESS_KEY_ID, "the AWS access key id you provided does not exist in our "
                       "records")
    text = string_to_sign(request, pairs, expires, path=resource)
    digest = hmac.new(secret.encode(), utf8(text), hashlib.sha1).digest()
    if not same_digest(base64.b64encode(digest).decode(), params["Signature"]):
        return S3Error(ErrorCode.SIGNATURE_DOES_NOT_MATCH, "the request signature we calculated does not match the "
                       "signature you provided; check your key and signing method")
    if now > until:
        return S3Error(ErrorCode.ACCESS_DENIED, "Request has expired")
    amz = frozenset(k.lower() for k, _ in request.headers if k.lower().startswith("x-amz-"))
    return Authenticated(params["AWSAccessKeyId"], Payload.UNSIGNED, presigned=True, signed_headers=amz)

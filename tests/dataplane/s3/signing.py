"""Requests signed by botocore's own signers (`S3SigV4Auth`, `S3SigV4QueryAuth`), turned into the
`dataplane.s3.sigv4.Request` the verifier takes, so the verifier is checked against the client's maths, not ours."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from unittest.mock import patch
from urllib.parse import urlsplit

from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from dataplane.s3.sigv4 import Request

ACCESS_KEY = "AKIDEXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
REGION = "us-east-1"
NOW = 1_800_000_000.0


def secrets(access_key: str) -> str | None:
    return {ACCESS_KEY: SECRET_KEY}.get(access_key)


def to_request(aws: AWSRequest) -> Request:
    url = urlsplit(aws.url)
    prepared = aws.prepare()
    headers = tuple((k, v if isinstance(v, str) else v.decode()) for k, v in prepared.headers.items())
    if not any(k.lower() == "host" for k, _ in headers):
        headers = (("Host", url.netloc), *headers)
    return Request(aws.method, url.path, url.query, headers)


class _FixedPayload(S3SigV4Auth):  # type: ignore[misc]  # botocore ships no types
    """botocore's signer with a chosen x-amz-content-sha256 (UNSIGNED-PAYLOAD, STREAMING-*): it picks the value from
    the transport and config itself, but the rest of the maths is its own."""

    def __init__(self, credentials: Credentials, region: str, payload: str) -> None:
        super().__init__(credentials, "s3", region)
        self._payload = payload

    def payload(self, request: AWSRequest) -> str:
        return self._payload


def signed(method: str = "GET", url: str = "https://s3.example:9000/bucket/key", *, body: bytes = b"",
           headers: dict[str, str] | None = None, when: float = NOW, secret: str = SECRET_KEY,
           access_key: str = ACCESS_KEY, region: str = REGION, payload: str | None = None) -> Request:
    aws = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    credentials = Credentials(access_key, secret)
    signer = (S3SigV4Auth(credentials, "s3", region) if payload is None
              else _FixedPayload(credentials, region, payload))
    with _clock(when):
        signer.add_auth(aws)
    return to_request(aws)


def presigned(method: str = "GET", url: str = "https://s3.example:9000/bucket/key", *, expires: int = 300,
              when: float = NOW, secret: str = SECRET_KEY) -> Request:
    aws = AWSRequest(method=method, url=url)
    signer = S3SigV4QueryAuth(Credentials(ACCESS_KEY, secret), "s3", REGION, expires=expires)
    with _clock(when):
        signer.add_auth(aws)
    return to_request(aws)


@contextmanager
def _clock(when: float) -> Iterator[None]:
    """botocore stamps a signature with its own clock (botocore.auth.get_current_datetime); sign as of `when`."""
    naive_utc = dt.datetime.fromtimestamp(when, dt.UTC).replace(tzinfo=None)
    with patch("botocore.auth.get_current_datetime", return_value=naive_utc):
        yield

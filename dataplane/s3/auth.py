"""Which authentication a request carries, and its verdict: SigV4 (an Authorization header or a presigned URL), or a
legacy SigV2 presigned URL (boto3's default for `generate_presigned_url`). Anonymous requests are denied."""

from __future__ import annotations

from dataplane.s3 import sigv2, sigv4
from dataplane.s3.sigv4 import Request, SecretLookup, Verdict


def authenticate(request: Request, secrets: SecretLookup, now: float, *, region: str | None = None) -> Verdict:
    if request.header("authorization") is None:
        pairs = sigv4.query_pairs(request.raw_query)
        if not any(k == "X-Amz-Signature" for k, _ in pairs) and sigv2.is_v2_presigned(pairs):
            return sigv2.verify_presigned_v2(request, pairs, secrets, now)
    return sigv4.verify(request, secrets, now, region=region)

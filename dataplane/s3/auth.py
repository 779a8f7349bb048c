"""Which authentication a request carries, and its verdict: SigV4 (an Authorization header or a presigned URL), or a
legacy SigV2 presigned URL (boto3's default for `generate_presigned_url`). Anonymous requests are denied."""

from __future__ import annotations

from dataplane.s3 import routing, sigv2, sigv4
from dataplane.s3.sigv4 import Request, SecretLookup, Verdict


def authenticate(request: Request, secrets: SecretLookup, now: float, *, region: str | None = None,
                 base_domains: tuple[str, ...] = ()) -> Verdict:
    """`base_domains` as routing takes them: a SigV2 signature covers /bucket/key, wherever the bucket was named."""
    if request.header("authorization") is None:
        pairs = sigv4.query_pairs(request.raw_query)
        if not any(k == "X-Amz-Signature" for k, _ in pairs) and sigv2.is_v2_presigned(pairs):
            resource = routing.path_style(request.raw_path, request.header("host") or "", base_domains)
            return sigv2.verify_presigned_v2(request, pairs, secrets, now, resource=resource)
    return sigv4.verify(request, secrets, now, region=region)

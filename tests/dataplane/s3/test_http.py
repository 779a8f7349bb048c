"""The aiohttp adapter with hand-made requests a stock client never sends: signed aws-chunked uploads (every chunk
signature checked end to end), tampered and malformed streams, unsigned requests, and a backend that fails. Requests
are signed by botocore's signer at a fixed `now` the server's clock also reads."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlsplit

import boto3
import pytest
from aiohttp.test_utils import TestClient, TestServer
from botocore.config import Config

from dataplane.s3 import checksums, sigv4
from dataplane.s3.backend import ObjectInfo
from dataplane.s3.checksums import Algorithm
from dataplane.s3.errors import S3Error
from dataplane.s3.http import S3Config, s3_app
from dataplane.s3.routing import Operation
from tests.dataplane.s3.chunks import signed_chunks, split, unsigned_chunks
from tests.dataplane.s3.memory_backend import MemoryBackend, MemoryStaging
from tests.dataplane.s3.signing import ACCESS_KEY, NOW, REGION, SECRET_KEY, presigned, secrets, signed

KiB = 1024


class FailingBackend(MemoryBackend):
    """Injects a fault: reads fail as a broken store would."""

    async def head_object(self, bucket: str, key: str) -> ObjectInfo | S3Error:
        raise OSError("disk on fire")


async def _client(backend: MemoryBackend, **config: Any) -> TestClient[Any, Any]:
    app = s3_app(backend, secrets, S3Config(**{"region": REGION, "clock": lambda: NOW, **config}))
    client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    await backend.create_bucket("bkt", NOW)
    return client


@pytest.fixture
async def backend() -> MemoryBackend:
    return MemoryBackend()


@pytest.fixture
async def client(backend: MemoryBackend) -> AsyncIterator[TestClient[Any, Any]]:
    c = await _client(backend)
    try:
        yield c
    finally:
        await c.close()


async def send(client: TestClient[Any, Any], method: str, path: str, *, payload: str | None = None,
               headers: dict[str, str] | None = None, body: bytes = b"", host: str = "127.0.0.1"
               ) -> tuple[int, bytes, Any]:
    url = f"http://{host}:{client.port}{path}"
    request = signed(method, url, payload=payload, headers=headers or {}, body=body if payload is None else b"")
    wire = {k: v for k, v in request.headers if k.lower() not in ("content-length",)}
    response = await client.request(method, path, headers=wire, data=body)
    return response.status, await response.read(), response


def signing_context(path: str, client: TestClient[Any, Any], headers: dict[str, str], payload: str
                    ) -> sigv4.SigningContext:
    """The seed the server will derive from the same signed request (its Authorization header's signature)."""
    request = signed("PUT", f"http://127.0.0.1:{client.port}{path}", payload=payload, headers=headers)
    verdict = sigv4.verify(request, secrets, NOW)
    assert isinstance(verdict, sigv4.Authenticated) and verdict.signing is not None
    return verdict.signing


async def test_signed_aws_chunked_upload_end_to_end(client: TestClient[Any, Any], backend: MemoryBackend) -> None:
    data = bytes(range(256)) * 160  # 40 KiB
    payload = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    headers = {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data))}
    ctx = signing_context("/bkt/signed", client, headers, payload)
    body = signed_chunks(split(data, 16 * KiB), ctx)
    status, _, response = await send(client, "PUT", "/bkt/signed", payload=payload, headers=headers, body=body)
    assert status == 200
    assert response.headers["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    assert backend.buckets["bkt"].objects["signed"][1] == data
    assert backend.staged == 0  # every staging area was committed or aborted


async def test_signed_aws_chunked_upload_with_a_tampered_chunk(client: TestClient[Any, Any],
                                                               backend: MemoryBackend) -> None:
    data = b"k" * 20000
    payload = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    headers = {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data))}
    ctx = signing_context("/bkt/forged", client, headers, payload)
    body = bytearray(signed_chunks(split(data, 10000), ctx))
    body[200] ^= 0xFF
    status, text, _ = await send(client, "PUT", "/bkt/forged", payload=payload, headers=headers, body=bytes(body))
    assert status == 403 and b"<Code>SignatureDoesNotMatch</Code>" in text
    assert "forged" not in backend.buckets["bkt"].objects
    assert backend.staged == 0  # every staging area was committed or aborted


async def test_malformed_chunked_body_is_a_400_and_stores_nothing(client: TestClient[Any, Any],
                                                                  backend: MemoryBackend) -> None:
    headers = {"Content-Encoding": "aws-chunked", "x-amz-trailer": "x-amz-checksum-crc32"}
    status, text, _ = await send(client, "PUT", "/bkt/bad", payload="STREAMING-UNSIGNED-PAYLOAD-TRAILER",
                                 headers=headers, body=b"zz\r\nhello\r\n")
    assert status == 403 and b"<Code>InvalidChunkSizeError</Code>" in text
    assert "bad" not in backend.buckets["bkt"].objects
    assert backend.staged == 0  # every staging area was committed or aborted


async def test_trailer_checksum_mismatch_through_the_adapter(client: TestClient[Any, Any],
                                                             backend: MemoryBackend) -> None:
    headers = {"Content-Encoding": "aws-chunked", "x-amz-trailer": "x-amz-checksum-sha256"}
    body = unsigned_chunks([b"payload"], {"x-amz-checksum-sha256": "AAAA"})
    status, text, _ = await send(client, "PUT", "/bkt/sum", payload="STREAMING-UNSIGNED-PAYLOAD-TRAILER",
                                 headers=headers, body=body)
    assert status == 400 and b"<Code>BadDigest</Code>" in text
    assert "sum" not in backend.buckets["bkt"].objects
    assert backend.staged == 0  # every staging area was committed or aborted


async def test_signed_body_that_differs_from_its_hash(client: TestClient[Any, Any]) -> None:
    claimed = hashlib.sha256(b"what I signed").hexdigest()
    status, text, _ = await send(client, "PUT", "/bkt/k", payload=claimed, body=b"what I sent")
    assert status == 400 and b"<Code>XAmzContentSHA256Mismatch</Code>" in text


async def test_unsigned_request_is_denied(client: TestClient[Any, Any]) -> None:
    response = await client.get("/bkt/k")
    assert response.status == 403
    assert b"<Code>AccessDenied</Code>" in await response.read()


async def test_head_errors_have_no_body(client: TestClient[Any, Any]) -> None:
    status, text, response = await send(client, "HEAD", "/bkt/missing")
    assert (status, text) == (404, b"")
    assert response.headers["x-amz-request-id"]


async def test_not_implemented_subresource(client: TestClient[Any, Any]) -> None:
    status, text, _ = await send(client, "GET", "/bkt/k?tagging")
    assert status == 501 and b"<Code>NotImplemented</Code>" in text


async def test_backend_failure_is_a_500_with_an_s3_error() -> None:
    backend = FailingBackend()
    client = await _client(backend)
    try:
        status, text, _ = await send(client, "GET", "/bkt/k")
    finally:
        await client.close()
    assert status == 500 and b"<Code>InternalError</Code>" in text and b"disk on fire" not in text


async def test_virtual_host_addressing() -> None:
    backend = MemoryBackend()
    client = await _client(backend, base_domains=("s3.test",))
    try:
        status, _, _ = await send(client, "PUT", "/dir/file.txt", body=b"virtual", host="bkt.s3.test")
        assert status == 200
        assert backend.buckets["bkt"].objects["dir/file.txt"][1] == b"virtual"
        status, text, _ = await send(client, "GET", "/dir/file.txt", host="bkt.s3.test")
        assert (status, text) == (200, b"virtual")
        status, text, _ = await send(client, "GET", "/bkt/dir/file.txt")  # path style still works
        assert (status, text) == (200, b"virtual")
    finally:
        await client.close()


async def test_bucket_permissions_per_access_key() -> None:
    """The authorize hook: this key may read bucket "bkt" and write only "mine"."""
    def authorize(access_key: str, operation: Operation, bucket: str) -> bool:
        return (operation in (Operation.GET_OBJECT, Operation.HEAD_OBJECT) and bucket == "bkt") or bucket == "mine"

    backend = MemoryBackend()
    client = await _client(backend, authorize=authorize)
    try:
        await backend.create_bucket("mine", NOW)
        staging = await backend.stage("bkt")
        assert not isinstance(staging, S3Error)
        await staging.write(b"shared")
        await staging.commit_object("bkt", ObjectInfo("k", 6, hashlib.md5(b"shared").hexdigest(), NOW))
        assert (await send(client, "GET", "/bkt/k"))[:2] == (200, b"shared")
        status, text, _ = await send(client, "PUT", "/bkt/k", body=b"overwrite")
        assert status == 403 and b"<Code>AccessDenied</Code>" in text
        assert (await send(client, "PUT", "/mine/k", body=b"ok"))[0] == 200
        status, text, _ = await send(client, "GET", "/")
        assert status == 403
        copy = await send(client, "PUT", "/mine/copy", headers={"x-amz-copy-source": "/bkt/k"})
        assert copy[0] == 200
        await backend.create_bucket("secret", NOW)
        denied = await send(client, "PUT", "/mine/steal", headers={"x-amz-copy-source": "/secret/s"})
        assert denied[0] == 403 and b"<Code>AccessDenied</Code>" in denied[1]  # not NoSuchKey: refused first
    finally:
        await client.close()


async def test_presigned_put_with_an_unsigned_copy_source_is_refused(client: TestClient[Any, Any],
                                                                     backend: MemoryBackend) -> None:
    """A presigned PUT handed out for one upload must not become a CopyObject of another bucket's object."""
    await backend.create_bucket("private", NOW)
    staging = await backend.stage("private")
    assert not isinstance(staging, S3Error)
    await staging.write(b"TOP SECRET")
    await staging.commit_object("private", ObjectInfo("secret.txt", 10, hashlib.md5(b"TOP SECRET").hexdigest(), NOW))
    url = f"http://127.0.0.1:{client.port}/bkt/theirs"
    request = presigned("PUT", url)
    response = await client.put(f"/bkt/theirs?{request.raw_query}", data=b"",
                                headers={"x-amz-copy-source": "/private/secret.txt"})
    text = await response.read()
    assert response.status == 403 and b"<Code>AccessDenied</Code>" in text
    assert b"not signed" in text
    assert "theirs" not in backend.buckets["bkt"].objects
    response = await client.put(f"/bkt/theirs?{request.raw_query}", data=b"mine")  # as issued, it still works
    assert response.status == 200 and backend.buckets["bkt"].objects["theirs"][1] == b"mine"


def _v2_url(endpoint: str, bucket: str, key: str, *, style: str, expires: int = 300) -> str:
    """boto3's default presigned URL (SigV2 query form), as a client would hand it out; the path and query only."""
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                      region_name=REGION, config=Config(s3={"addressing_style": style}))
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires)
    assert "AWSAccessKeyId=" in url
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def _put(backend: MemoryBackend, bucket: str, key: str, data: bytes) -> None:
    if bucket not in backend.buckets:
        await backend.create_bucket(bucket, NOW)
    staging = await backend.stage(bucket)
    assert not isinstance(staging, S3Error)
    await staging.write(data)
    await staging.commit_object(bucket, ObjectInfo(key, len(data), hashlib.md5(data).hexdigest(), NOW))


async def test_sigv2_presigned_url_is_bound_to_its_bucket_on_virtual_hosts() -> None:
    """SigV2 does not sign the Host: the signed resource must be /bucket/key, or a URL for public/cat.jpg would read
    private/public/cat.jpg through Host: private.s3.example."""
    backend = MemoryBackend()
    client = await _client(backend, base_domains=("s3.example",), clock=time.time)
    try:
        await _put(backend, "public", "cat.jpg", b"cat")
        await _put(backend, "private", "public/cat.jpg", b"PRIVATE DATA")
        path_url = _v2_url("http://s3.example", "public", "cat.jpg", style="path")
        response = await client.get(path_url, headers={"Host": "s3.example"})
        assert (response.status, await response.read()) == (200, b"cat")
        response = await client.get(path_url, headers={"Host": "private.s3.example"})
        assert response.status == 403 and b"<Code>SignatureDoesNotMatch</Code>" in await response.read()
        virtual_url = _v2_url("http://s3.example", "public", "cat.jpg", style="virtual")  # botocore signs /public/…
        response = await client.get(virtual_url, headers={"Host": "public.s3.example"})
        assert (response.status, await response.read()) == (200, b"cat")
        response = await client.get(virtual_url, headers={"Host": "private.s3.example"})
        assert response.status == 403
    finally:
        await client.close()


async def test_sigv2_presigned_url_lives_at_most_a_week() -> None:
    backend = MemoryBackend()
    client = await _client(backend, clock=time.time)
    try:
        await _put(backend, "public", "cat.jpg", b"cat")
        week = 7 * 24 * 3600
        response = await client.get(_v2_url("http://s3.example", "public", "cat.jpg", style="path",
                                             expires=week - 60), headers={"Host": "s3.example"})
        assert response.status == 200
        response = await client.get(_v2_url("http://s3.example", "public", "cat.jpg", style="path",
                                             expires=10 * 365 * 24 * 3600), headers={"Host": "s3.example"})
        assert response.status == 403 and b"a week" in await response.read()
    finally:
        await client.close()


@pytest.mark.parametrize("value", ["attachment\r\nSet-Cookie: a=b", "a\nb", "a\x01b"], ids=["crlf", "lf", "ctl"])
async def test_response_override_with_control_characters_is_invalid_argument(client: TestClient[Any, Any],
                                                                             backend: MemoryBackend,
                                                                             value: str) -> None:
    await _put(backend, "bkt", "k", b"data")
    status, text, _ = await send(client, "GET", f"/bkt/k?response-content-disposition={quote(value, safe='')}")
    assert status == 400 and b"<Code>InvalidArgument</Code>" in text


async def test_error_document_is_well_formed_for_control_characters_in_the_path(client: TestClient[Any, Any]
                                                                                ) -> None:
    status, text, _ = await send(client, "GET", "/bkt/a%01b%1Fc")
    assert status == 404
    root = ET.fromstring(text)
    assert root.findtext("Code") == "NoSuchKey"
    assert root.findtext("Resource") == "/bkt/a%01b%1Fc"


class _Ticker:
    """Counts event-loop turns: a task that yields to the loop and counts each time it runs again."""

    def __init__(self) -> None:
        self.turns = 0

    async def run(self) -> None:
        while True:
            self.turns += 1
            await asyncio.sleep(0)


class _RecordingBackend(MemoryBackend):
    """Records, for every write into a staging area, its size and how many loop turns had passed."""

    def __init__(self, ticker: _Ticker) -> None:
        super().__init__()
        self.writes: list[tuple[int, int]] = []
        self._ticker = ticker

    async def stage(self, bucket: str) -> MemoryStaging | S3Error:
        staging = await super().stage(bucket)
        if isinstance(staging, S3Error):
            return staging
        write = staging.write

        async def recorded(data: bytes) -> None:
            self.writes.append((len(data), self._ticker.turns))
            await write(data)

        staging.write = recorded  # type: ignore[method-assign]  # fault-injection style hook on a real fake
        return staging


@pytest.mark.parametrize("algorithm", [Algorithm.CRC64NVME, Algorithm.CRC32C])
async def test_pure_python_checksums_are_fed_in_slices_with_loop_turns_between(algorithm: Algorithm) -> None:
    """A pure-Python CRC (~10 MB/s) must not run over a whole 256 KiB read in one callback: the body reaches the
    checksum in pieces of at most SLOW_SLICE bytes, and other tasks run between two pieces."""
    ticker = _Ticker()
    backend = _RecordingBackend(ticker)
    client = await _client(backend)
    tick = asyncio.create_task(ticker.run())
    try:
        data = bytes(range(256)) * 4096  # 1 MiB
        headers = {f"x-amz-checksum-{algorithm.value}": checksums.compute(algorithm, data)}
        status, _, _ = await send(client, "PUT", "/bkt/slow", headers=headers, body=data)
    finally:
        tick.cancel()
        await client.close()
    assert status == 200 and backend.buckets["bkt"].objects["slow"][1] == data
    if not checksums.slow(algorithm):
        return  # in C: no slicing needed, nothing to bound
    sizes = [size for size, _ in backend.writes]
    assert sum(sizes) == len(data) and max(sizes) <= checksums.SLOW_SLICE
    turns = [turn for _, turn in backend.writes]
    assert all(later > earlier for earlier, later in itertools.pairwise(turns))  # the loop ran between pieces


async def test_list_buckets_shows_only_the_buckets_a_key_may_look_into() -> None:
    def authorize(access_key: str, operation: Operation, bucket: str) -> bool:
        return bucket in ("", "mine") or (bucket == "readable" and operation is Operation.LIST_OBJECTS_V2)

    backend = MemoryBackend()
    client = await _client(backend, authorize=authorize)
    try:
        for name in ("mine", "readable", "secret"):
            await backend.create_bucket(name, NOW)
        status, text, _ = await send(client, "GET", "/")
        assert status == 200
        names = [e.text for e in ET.fromstring(text).iter("{http://s3.amazonaws.com/doc/2006-03-01/}Name")]
        assert names == ["mine", "readable"]  # not "bkt" nor "secret"
    finally:
        await client.close()

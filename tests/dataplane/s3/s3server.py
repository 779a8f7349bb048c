"""The S3 adapter served for real clients: `dataplane.s3.http.s3_app` over a `MemoryBackend`, on 127.0.0.1 over HTTP
and HTTPS (a self-signed certificate for 127.0.0.1), in a thread with its own event loop so synchronous clients
(boto3, the AWS CLI) can call it. The server's clock is wall time plus `offset`, which a test moves to expire a
presigned URL without waiting."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dataplane.s3.http import S3Config, s3_app
from tests.dataplane.s3.memory_backend import MemoryBackend

ACCESS_KEY = "AKIDCLOUDLESSTEST"
SECRET_KEY = "cl0udless/secret+key"  # '/' and '+' as real AWS secrets have
REGION = "us-east-1"


@dataclass
class Clock:
    offset: float = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class S3Server:
    http_url: str
    https_url: str
    ca_file: Path
    backend: MemoryBackend
    clock: Clock = field(default_factory=Clock)
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, x-amz-content-sha256) served


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp / "s3.crt", tmp / "s3.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@dataclass(frozen=True)
class Served:
    """An app served on 127.0.0.1 over HTTP and HTTPS (a self-signed certificate) from a thread of its own."""

    http: str
    https: str
    cert_file: Path
    loop: asyncio.AbstractEventLoop  # the server's: coroutines for its backend run there


@contextmanager
def in_thread(app: web.Application, tmp: Path) -> Iterator[Served]:
    """Serve `app` from its own event loop in a thread (boto3 and the AWS CLI are synchronous clients)."""
    cert_file, key_file = _self_signed(tmp)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert_file, key_file)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)  # a server thread logging after pytest closed its streams

    async def start() -> tuple[int, int]:
        await runner.setup()
        plain = web.TCPSite(runner, "127.0.0.1", 0)
        secure = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
        await plain.start()
        await secure.start()
        return _port(plain), _port(secure)

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    http_port, https_port = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
    try:
        yield Served(f"http://127.0.0.1:{http_port}", f"https://127.0.0.1:{https_port}", cert_file, loop)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


@contextmanager
def serving(tmp: Path) -> Iterator[S3Server]:
    backend = MemoryBackend()
    clock = Clock()
    secrets = {ACCESS_KEY: SECRET_KEY}
    app = s3_app(backend, secrets.get, S3Config(region=REGION, clock=clock))
    seen: list[tuple[str, str, str]] = []

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        seen.append((request.method, request.path, request.headers.get("x-amz-content-sha256", "")))

    app.on_response_prepare.append(record)
    with in_thread(app, tmp) as served:
        yield S3Server(served.http, served.https, served.cert_file, backend, clock, seen)


def _port(site: web.TCPSite) -> int:
    server = site._server  # aiohttp keeps the listening server here; port 0 is resolved only after start
    assert isinstance(server, asyncio.base_events.Server)
    return int(server.sockets[0].getsockname()[1])

"""The real S3 adapter (`dataplane.s3.http.s3_app`) serving an `ObjectBackend` over fake storage nodes and the
in-memory metadata, on 127.0.0.1 over HTTP and HTTPS, in a thread with its own loop so boto3 can call it (as
tests/dataplane/s3/s3server.py does for the protocol layer). `run(coro)` runs a coroutine on the server's loop.
`meta` replaces the in-memory metadata (coordinator tests pass the real `StoreMetadata`)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from dataplane.objects.model import StorageNode
from dataplane.objects.ports import Metadata
from dataplane.objects.store import ObjectBackend
from dataplane.s3.http import S3Config, s3_app
from tests.dataplane.objects.fake_chunks import FakeChunkClient
from tests.dataplane.objects.memory_metadata import MemoryMetadata
from tests.dataplane.s3.s3server import ACCESS_KEY, REGION, SECRET_KEY, in_thread

T = TypeVar("T")
MiB = 1024 * 1024


@dataclass
class ObjectServer:
    http_url: str
    https_url: str
    ca_file: Path
    backend: ObjectBackend
    metadata: MemoryMetadata  # the fake, when the backend uses it (no `meta` given to `serving`)
    chunks: FakeChunkClient
    loop: asyncio.AbstractEventLoop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)


def default_nodes() -> list[StorageNode]:
    zones = ["z1", "z1", "z2", "z2", "z3"]
    return [StorageNode(f"n{i}", zones[i], quota=1 << 30) for i in range(5)]


@contextmanager
def serving(tmp: Path, nodes: list[StorageNode] | None = None, chunk_size: int = MiB, *,
            meta: Metadata | None = None) -> Iterator[ObjectServer]:
    metadata = MemoryMetadata()
    chunks = FakeChunkClient(nodes if nodes is not None else default_nodes())
    backend = ObjectBackend(meta or metadata, chunks, chunks.storage_nodes, chunk_size=chunk_size)
    app = s3_app(backend, {ACCESS_KEY: SECRET_KEY}.get, S3Config(region=REGION))
    with in_thread(app, tmp) as served:
        yield ObjectServer(served.http, served.https, served.cert_file, backend, metadata, chunks, served.loop)

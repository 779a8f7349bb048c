"""The gateway's S3 endpoint for workloads (adapter): `s3.cloudless`, served over the overlay.

    workload -> its agent's service proxy (http://s3.cloudless, or AWS_ENDPOINT_URL_S3 for a process)
      -> overlay stream to `svc` on the gateway's member "s3@<coordinator id>" (mutual TLS, the node's certificate)
      -> this module: header checked, stream spliced to a unix socket
      -> the gateway's own S3 app (dataplane.s3.http: the same authentication, grants and handlers as --s3-port)

- **The socket.** An aiohttp `UnixSite` on the gateway's runner, in a fresh 0700 directory (`tempfile.mkdtemp`: a
  short path, under the 108-byte limit of a socket path, and no other user can connect to it). Plain HTTP: the
  overlay already encrypts and authenticates both ends; SigV4 authenticates every request (the Host header the
  client signed passes through untouched: bytes are spliced, not re-framed).
- **The header.** A stream opens with the service proxy's header (dataplane.service_plan: namespace, service,
  replica, target port). Only `cloudless/s3` on port 80 is admitted (`admit`); anything else, a malformed header or
  none within `HEADER_TIMEOUT_S`, is refused with the reason and closed.
- **Bounds.** At most `MAX_PER_PEER` streams from one node and `MAX_STREAMS` in all at once; past either, a new
  stream is refused ("busy": the agent's proxy tries another gateway or closes the client), so one node's workloads
  cannot take every connection the coordinator can hold. aiohttp bounds each request (headers, bodies through the S3
  layer's limits); a failing stream ends only itself.
- **Register.** `ServiceRegistry.builtins[("cloudless", "s3")]` names the gateway's member while this runs; the
  coordinator's next round gives the service its address, puts it into the tables of nodes that run replicas and
  pairs those nodes with the member (coordinator.services).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from broker.wire import ServicePort
from dataplane.errors import DataPlaneError
from dataplane.service_plan import OK, S3_PORT, S3_SERVICE, STREAM_SERVICE, VERSION, Target, decode_target, refusal
from dataplane.splice import splice

if TYPE_CHECKING:
    from aiohttp import web

    from coordinator.services_ops import ServiceRegistry
    from dataplane.overlay import Overlay

log = logging.getLogger(__name__)

HEADER_TIMEOUT_S = 10.0
MAX_PER_PEER = 64
MAX_STREAMS = 512
S3_PORTS = (ServicePort(S3_PORT, S3_PORT, name="http"),)


def admit(version: int, body: bytes) -> Target | str:
    """The target a stream's header names if the gateway serves it, else why not (pure)."""
    if version != VERSION:
        return f"header version {version} (this gateway speaks {VERSION})"
    target = decode_target(body)
    if isinstance(target, str):
        return target
    if (target.namespace, target.service) != S3_SERVICE:
        return f"this is the S3 gateway: no service {target.namespace}/{target.service} here"
    if target.target_port != S3_PORT:
        return f"port {target.target_port} is not a port of {S3_SERVICE[1]}.{S3_SERVICE[0]} (it serves {S3_PORT})"
    return target


class WorkloadEndpoint:
    """`await start(runner, overlay)` after the gateway's app runner is set up; `await stop()` before its cleanup."""

    def __init__(self, *, registry: ServiceRegistry | None, member: str, wake: Callable[[], None],
                 max_streams: int = MAX_STREAMS, max_per_peer: int = MAX_PER_PEER) -> None:
        self.registry, self.member, self._wake = registry, member, wake
        self.max_streams, self.max_per_peer = max_streams, max_per_peer
        self.dir: Path | None = None
        self.socket: Path | None = None
        self.open: dict[str, int] = {}  # peer -> streams open now
        self.served = 0
        self.refused = 0
        self._site: web.UnixSite | None = None
        self._tasks: set[asyncio.Task[object]] = set()

    async def start(self, runner: web.AppRunner, overlay: Overlay) -> None:
        from aiohttp import web

        self.dir = Path(tempfile.mkdtemp(prefix="cloudless-s3-"))  # 0700
        self.socket = self.dir / "s3.sock"
        self._site = web.UnixSite(runner, str(self.socket))
        await self._site.start()
        overlay.serve(STREAM_SERVICE, self.serve)
        if self.registry is not None:
            from coordinator.services import Builtin

            self.registry.builtins[S3_SERVICE] = Builtin(ports=S3_PORTS, members=(self.member,))
            self._wake()
        log.info("S3 for workloads: s3.cloudless over the overlay as %s", self.member)

    async def stop(self) -> None:
        if self.registry is not None and self.registry.builtins.pop(S3_SERVICE, None) is not None:
            self._wake()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._site is not None:
            await self._site.stop()
            self._site = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    async def serve(self, peer: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One overlay stream from `peer` (a node's service proxy): see the module docstring."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.open[peer] = self.open.get(peer, 0) + 1
        try:
            await self._serve(peer, reader, writer)
        except (DataPlaneError, OSError, asyncio.IncompleteReadError) as exc:
            log.debug("S3 for workloads: a stream from %s ended: %s", peer, exc)
        finally:
            left = self.open[peer] - 1
            if left:
                self.open[peer] = left
            else:
                del self.open[peer]
            if task is not None:
                self._tasks.discard(task)

    async def _serve(self, peer: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.open[peer] > self.max_per_peer or sum(self.open.values()) > self.max_streams:
            return await self._refuse(peer, writer, "busy: too many S3 connections open from this node")
        try:
            async with asyncio.timeout(HEADER_TIMEOUT_S):
                version, length = await reader.readexactly(2)
                body = await reader.readexactly(length)
        except (TimeoutError, asyncio.IncompleteReadError):
            return await self._refuse(peer, writer, f"no service header within {HEADER_TIMEOUT_S:g}s")
        target = admit(version, body)
        if isinstance(target, str):
            return await self._refuse(peer, writer, target)
        if self.socket is None:
            return await self._refuse(peer, writer, "the S3 gateway is stopping")
        try:
            local = await asyncio.open_unix_connection(str(self.socket))
        except OSError as exc:
            return await self._refuse(peer, writer, f"the S3 gateway's socket: {exc.strerror or exc}")
        self.served += 1
        writer.write(bytes([OK]))
        await splice((reader, writer), local, a_to_b=lambda _: None, b_to_a=lambda _: None)

    async def _refuse(self, peer: str, writer: asyncio.StreamWriter, reason: str) -> None:
        self.refused += 1
        log.info("S3 for workloads: refused a stream from %s: %s", peer, reason)
        writer.write(refusal(reason))
        with contextlib.suppress(DataPlaneError, OSError):
            await writer.drain()
        with contextlib.suppress(DataPlaneError, OSError, RuntimeError):
            writer.close()

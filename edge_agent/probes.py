"""Probe execution (adapter): exec, HTTP GET and TCP connect, each bounded by the probe's timeout.

HTTP and TCP probes go to the host endpoint of the container port when the runtime has one (published port,
reachable container IP, or a plain process listening on the host). Otherwise — rootless containers without a
published port have no address the host can reach — they run *inside* the container through exec with busybox
tools (`wget`, `nc`), which is how the probe would see the service anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from broker.wire import Probe, ProbeKind
from edge_agent.errors import RuntimeError_
from edge_agent.runtime.base import Runtime


@dataclass(frozen=True, slots=True)
class ProbeResult:
    success: bool
    message: str


async def run_probe(runtime: Runtime, instance_id: str, probe: Probe) -> ProbeResult:
    try:
        async with asyncio.timeout(probe.timeout_s + 1.0):
            return await _run(runtime, instance_id, probe)
    except TimeoutError:
        return ProbeResult(False, f"{probe.kind} probe timed out after {probe.timeout_s}s")
    except RuntimeError_ as exc:
        return ProbeResult(False, f"{probe.kind} probe failed: {exc}")


async def _run(runtime: Runtime, instance_id: str, probe: Probe) -> ProbeResult:
    match probe.kind:
        case ProbeKind.EXEC:
            return await _exec(runtime, instance_id, list(probe.command), probe.timeout_s)
        case ProbeKind.HTTP:
            endpoint = await runtime.endpoint(instance_id, probe.port)
            if endpoint is None:
                url = f"http://127.0.0.1:{probe.port}{_path(probe.path)}"
                # no `-T`: busybox 1.35's wget (Debian bookworm's) crashes with it; the exec's own timeout bounds it
                return await _exec(runtime, instance_id, ["wget", "-q", "-O", "/dev/null", url], probe.timeout_s)
            return await http_get(endpoint.host, endpoint.port, probe.path, probe.timeout_s)
        case ProbeKind.TCP:
            endpoint = await runtime.endpoint(instance_id, probe.port)
            if endpoint is None:
                return await _exec(runtime, instance_id, ["nc", "-z", "127.0.0.1", str(probe.port)], probe.timeout_s)
            return await tcp_connect(endpoint.host, endpoint.port, probe.timeout_s)
    return ProbeResult(False, f"unknown probe kind {probe.kind}")


def _path(path: str) -> str:
    return path if path.startswith("/") else "/" + path


async def _exec(runtime: Runtime, instance_id: str, argv: list[str], timeout_s: float) -> ProbeResult:
    result = await runtime.exec(instance_id, argv, timeout_s)
    text = result.output.decode("utf-8", "replace").strip()[-200:]
    if result.exit_code == 0:
        return ProbeResult(True, "exec ok")
    return ProbeResult(False, f"exec {argv[0] if argv else ''} exited {result.exit_code}: {text}")


async def http_get(host: str, port: int, path: str, timeout_s: float) -> ProbeResult:
    """A minimal HTTP/1.0 GET (no client library on small devices); 200-399 is success, as in Kubernetes."""
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError) as exc:
        return ProbeResult(False, f"http connect {host}:{port}: {exc or type(exc).__name__}")
    try:
        request = f"GET {_path(path)} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: cloudless-probe\r\n\r\n"
        writer.write(request.encode("latin-1", "replace"))
        await writer.drain()
        async with asyncio.timeout(timeout_s):
            line = await reader.readline()
    except (OSError, TimeoutError, ValueError) as exc:  # ValueError: a status line over the stream limit
        return ProbeResult(False, f"http {host}:{port}{path}: {exc or type(exc).__name__}")
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                await writer.wait_closed()
    parts = line.decode("latin-1").split()
    if len(parts) < 2 or not parts[1].isdigit():
        return ProbeResult(False, f"http {host}:{port}{path}: not an HTTP response")
    code = int(parts[1])
    return ProbeResult(200 <= code < 400, f"http {code}")


async def tcp_connect(host: str, port: int, timeout_s: float) -> ProbeResult:
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError) as exc:
        return ProbeResult(False, f"tcp {host}:{port}: {exc or type(exc).__name__}")
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(1.0):
            await writer.wait_closed()
    return ProbeResult(True, "tcp ok")

"""Copy two byte streams into each other until both ends are done (adapter).

Each direction reads at most `CHUNK` bytes, writes them and waits for `drain()` before reading again, so at most one
chunk per direction sits in the proxy (plus the transports' own high-water marks): a slow receiver holds the sender
back (TCP's window, or the overlay stream's flow control, dataplane.quic). An end of file in one direction is passed
on as a half-close (`write_eof`) and the other direction keeps going (RFC 9293 §3.6: a TCP connection is closed
one direction at a time); an error in either direction ends both.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from dataplane.errors import DataPlaneError

CHUNK = 64 * 1024
_ENDED = (ConnectionError, OSError, DataPlaneError, asyncio.IncompleteReadError)


async def splice(a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                 b: tuple[asyncio.StreamReader, asyncio.StreamWriter], *,
                 a_to_b: Callable[[int], None], b_to_a: Callable[[int], None]) -> None:
    """Copy a -> b and b -> a (counting bytes through the callbacks) until both directions ended, then close both."""
    forward = asyncio.ensure_future(_pump(a[0], b[1], a_to_b))
    backward = asyncio.ensure_future(_pump(b[0], a[1], b_to_a))
    try:
        pending: set[asyncio.Future[bool]] = {forward, backward}
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if any(not task.result() for task in done):
                break  # one direction failed: the connection is over both ways
    finally:
        for task in (forward, backward):
            task.cancel()
        for task in (forward, backward):
            with contextlib.suppress(BaseException):
                await task
        for writer in (a[1], b[1]):
            _close(writer)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: Callable[[int], None]) -> bool:
    """True: the source ended cleanly and the end was passed on; False: either side failed."""
    try:
        while chunk := await reader.read(CHUNK):
            writer.write(chunk)
            count(len(chunk))
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        return True
    except _ENDED:
        return False


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(*_ENDED, RuntimeError):
        writer.close()

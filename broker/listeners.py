"""Listener hardening (adapter): the file-descriptor limit, gated TCP servers and throttled accept errors.

Used by every daemon (broker, coordinator, agent) and every TCP listener (the embedded broker, the coordinator's
API); the decisions and numbers are broker.limits'. A gated server admits a connection by its remote address
*before* any TLS work (the handshake runs here, through `loop.start_tls`, so a connection that never sends a
ClientHello holds no more than its slot, for at most the handshake timeout), and gives it `handshake_timeout_s` to
deliver its first application bytes (MQTT CONNECT, an HTTP request line). A refused connection is closed at once.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
import sys
from collections.abc import Callable
from typing import Any

from broker.limits import ConnectionGate, LogThrottle, nofile_target

log = logging.getLogger(__name__)

_ACCEPT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def raise_nofile_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (call once at daemon start). Returns the soft limit
    now in force. Where `resource` does not exist (not POSIX), returns 1024 and changes nothing."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = nofile_target(soft, hard, infinity=resource.RLIM_INFINITY)
    if sys.platform == "darwin":  # macOS refuses more than OPEN_MAX for the soft limit
        target = min(target, 10240)
    if target != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            log.info("open-file limit raised from %d to %d", soft, target)
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
    return soft


def nofile_soft() -> int:
    try:
        import resource
    except ImportError:  # pragma: no cover
        return 1024
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


class ThrottledLog:
    """A logger whose repeated lines (same key) are written at most once per interval, with a count."""

    def __init__(self, logger: logging.Logger, throttle: LogThrottle | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        import time

        self.logger = logger
        self.throttle = throttle or LogThrottle()
        self.clock = clock or time.monotonic

    def log(self, level: int, key: str, msg: str, *args: Any) -> None:
        count = self.throttle.note(key, self.clock())
        if count is None:
            return
        if count > 1:
            self.logger.log(level, msg + " (x%d since the last such line)", *args, count)
        else:
            self.logger.log(level, msg, *args)


def throttle_accept_errors(loop: asyncio.AbstractEventLoop, throttled: ThrottledLog | None = None) -> None:
    """Route asyncio's accept errors (EMFILE and friends: it retries every second and logs a traceback each time)
    through a throttled logger: one line, no traceback, per interval. Other errors go to the previous handler.
    Idempotent per loop."""
    previous = loop.get_exception_handler()
    if getattr(previous, "_cloudless_accept_throttle", False):
        return
    out = throttled or ThrottledLog(log)

    def handler(lp: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        message = str(context.get("message", ""))
        if message.startswith("socket.accept()") or (isinstance(exc, OSError) and exc.errno in _ACCEPT_ERRNOS):
            out.log(logging.ERROR, f"accept:{getattr(exc, 'errno', '?')}",
                    "listener cannot accept connections: %s (out of file descriptors? see docs/security.md, Limits)",
                    exc or message)
            return
        if previous is not None:
            previous(lp, context)
        else:
            lp.default_exception_handler(context)

    handler._cloudless_accept_throttle = True  # type: ignore[attr-defined]
    loop.set_exception_handler(handler)


class GatedProtocol(asyncio.Protocol):
    """Admits one accepted connection through a `ConnectionGate`, runs its TLS handshake with a timeout, then hands
    it to the real protocol (made only once admitted) and forwards every event to it."""

    def __init__(self, make: Callable[[], asyncio.BaseProtocol], gate: ConnectionGate, *,
                 ssl_context: ssl.SSLContext | None, handshake_timeout_s: float,
                 on_refused: Callable[[str], None], client_speaks_first: bool = True) -> None:
        self._make = make
        self._gate = gate
        # HTTP and MQTT clients speak first, so "no byte within the timeout" ends them; on a relay link the server
        # speaks first and a quiet client is normal: there the deadline ends with the TLS handshake
        self._client_speaks_first = client_speaks_first
        self._authenticated = False
        self._ssl = ssl_context
        self._timeout = handshake_timeout_s
        self._on_refused = on_refused
        self._address = "?"
        self._admitted = False
        self._inner: Any = None
        self._inner_made = False
        self._transport: asyncio.BaseTransport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._tls_task: asyncio.Task[None] | None = None
        # bytes (and an EOF) that arrive before the real protocol exists: with TLS 1.3 the client's first request can
        # come in the same flight as its Finished, so asyncio delivers it before start_tls() returns to us
        self._early: list[bytes] = []
        self._early_eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self._address = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        self._transport = transport
        if not self._gate.admit(self._address):
            self._on_refused(self._address)
            _abort(transport)
            return
        self._admitted = True
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self._timeout, self._too_slow)
        if self._ssl is None:
            self._hand_over(transport)
            return
        # no byte is read before start_tls takes the transport (the reader is not added while paused)
        transport.pause_reading()  # type: ignore[attr-defined]
        self._tls_task = loop.create_task(self._start_tls(transport))

    async def _start_tls(self, transport: asyncio.BaseTransport) -> None:
        loop = asyncio.get_running_loop()
        assert self._ssl is not None
        try:
            tls = await loop.start_tls(transport, self, self._ssl, server_side=True,  # type: ignore[arg-type]
                                       ssl_handshake_timeout=self._timeout)
        except (OSError, TimeoutError, ssl.SSLError, ConnectionError, RuntimeError):
            _abort(transport)
            self._release()
            return
        if tls is None or tls.is_closing():
            self._release()
            return
        self._transport = tls
        self._hand_over(tls)

    def _hand_over(self, transport: asyncio.BaseTransport) -> None:
        if not self._client_speaks_first and self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._inner = self._make()
        self._inner_made = True
        self._inner.connection_made(transport)
        early, self._early = self._early, []
        for data in early:
            self._inner.data_received(data)
        if self._early_eof and self._inner.eof_received() is not True:
            transport.close()

    def _too_slow(self) -> None:
        self._deadline = None
        if self._transport is not None:
            _abort(self._transport)
        if not self._inner_made:  # the TLS handshake owns the raw transport: it ends with an error
            self._release()

    def authenticated(self) -> None:
        """The client proved its identity: its slot no longer counts against its address (see ConnectionGate)."""
        if self._admitted and not self._authenticated:
            self._authenticated = True
            self._gate.promote(self._address)

    def _release(self) -> None:
        if self._admitted:
            self._admitted = False
            self._gate.release(self._address, promoted=self._authenticated)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def data_received(self, data: bytes) -> None:
        if self._deadline is not None:  # the peer spoke: the handshake deadline is met
            self._deadline.cancel()
            self._deadline = None
        if self._inner_made:
            self._inner.data_received(data)
        else:
            self._early.append(data)

    def eof_received(self) -> bool | None:
        if not self._inner_made:
            self._early_eof = True
            return True  # keep the transport open until the real protocol has seen what came before the EOF
        return self._inner.eof_received()  # type: ignore[no-any-return]

    def pause_writing(self) -> None:
        if self._inner_made:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner_made:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        if self._inner_made:
            self._inner_made = False
            self._inner.connection_lost(exc)


def mark_authenticated(transport: asyncio.BaseTransport | None) -> None:
    """Tell the gate in front of this connection (if any) that its client authenticated."""
    protocol = transport.get_protocol() if transport is not None else None
    if isinstance(protocol, GatedProtocol):
        protocol.authenticated()


def _abort(transport: asyncio.BaseTransport) -> None:
    abort = getattr(transport, "abort", None)
    if abort is not None:
        abort()
    else:  # pragma: no cover - every stream transport has abort()
        transport.close()


def refusal_logger(what: str, throttled: ThrottledLog | None = None) -> Callable[[str], None]:
    out = throttled or ThrottledLog(log)

    def refused(address: str) -> None:
        out.log(logging.WARNING, f"refused:{what}:{address}",
                "%s: refused a connection from %s (connection limit reached)", what, address)

    return refused


async def start_gated_server(make: Callable[[], asyncio.BaseProtocol], gate: ConnectionGate, *,
                             ssl_context: ssl.SSLContext | None, handshake_timeout_s: float, what: str,
                             host: str | None = None, port: int | None = None, sock: socket.socket | None = None,
                             client_speaks_first: bool = True, **kwargs: Any) -> asyncio.Server:
    """`loop.create_server` for `make`'s protocol behind `gate`; TLS (when `ssl_context`) runs inside the gate."""
    loop = asyncio.get_running_loop()
    throttle_accept_errors(loop)
    refused = refusal_logger(what)

    def factory() -> asyncio.BaseProtocol:
        return GatedProtocol(make, gate, ssl_context=ssl_context, handshake_timeout_s=handshake_timeout_s,
                             on_refused=refused, client_speaks_first=client_speaks_first)

    if sock is not None:
        return await loop.create_server(factory, sock=sock, **kwargs)
    return await loop.create_server(factory, host, port, **kwargs)

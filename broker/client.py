"""MQTT client adapter for asyncio programs, on paho-mqtt 2.x (MQTT 3.1.1).

paho is driven from the event loop through its socket callbacks (no network thread): the loop watches the
socket and calls `loop_read`/`loop_write`, and a 1 s timer calls `loop_misc` for keep-alive pings. Only the
blocking TCP connect + TLS handshake runs in a worker thread. On top of paho this adds:

- reconnect forever with capped exponential backoff and jitter (`broker.backoff`), re-subscribing every filter
  after each reconnect (which also re-delivers retained state: handlers must be idempotent);
- `publish(..., qos=1)` that can be awaited until PUBACK, surviving reconnects (paho resends unacknowledged
  messages with DUP);
- a bounded outbox while disconnected (`broker.outbox`): heartbeats dropped oldest first, retained state
  coalesced per topic, `OutboxFull` raised rather than state silently lost;
- paho errors converted to `broker.errors` types; no paho exception escapes;
- dispatch of incoming messages through a subscription trie (`broker.subtree`), so a message costs O(topic
  depth), not O(subscriptions): paho's `topic_matches_sub` built a matcher per subscription per message (~7 % of
  the coordinator's CPU at 5,000 nodes, issue 17).

A message handler that raises is logged and does not disturb the loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import random
import select
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from broker.client_settings import ClientTls, ConnectHook, Handler, Message, MqttSettings, Secret, Will
from broker.errors import ConnectionRefused, MqttError, NotConnected, OutboxFull
from broker.outbox import Outbox, Outcome, Outgoing, Rejected
from broker.subtree import SubscriptionTree

log = logging.getLogger(__name__)

__all__ = ["ClientTls", "ConnectHook", "Handler", "Message", "MqttClient", "MqttSettings", "Secret", "Will"]


@dataclass
class _Subscription:
    topic_filter: str
    qos: int
    handler: Handler


class _Handlers:
    """The client's subscriptions (one handler per filter), indexed by topic level for dispatch.

    `matching(topic)` is what calling `paho.topic_matches_sub(filter, topic)` on every filter found (wildcards,
    '$' topics unmatched by a leading wildcard, MQTT 3.1.1 §4.7), in subscription order, at the cost of one walk
    down the trie. Re-subscribing a filter replaces its handler and keeps its place, like a dict key."""

    def __init__(self) -> None:
        self._subs: dict[str, _Subscription] = {}
        self._index: SubscriptionTree[str] = SubscriptionTree()
        self._order: dict[str, int] = {}
        self._seq = 0

    def add(self, sub: _Subscription) -> None:
        if sub.topic_filter not in self._subs:
            self._seq += 1
            self._order[sub.topic_filter] = self._seq
            self._index.add(sub.topic_filter, sub.topic_filter, 0)
        self._subs[sub.topic_filter] = sub

    def remove(self, topic_filter: str) -> None:
        if self._subs.pop(topic_filter, None) is not None:
            self._index.remove(topic_filter, topic_filter)
            del self._order[topic_filter]

    def all(self) -> list[_Subscription]:
        return list(self._subs.values())

    def __iter__(self) -> Iterator[str]:
        """The filters, in subscription order."""
        return iter(self._subs)

    def __len__(self) -> int:
        return len(self._subs)

    def matching(self, topic: str) -> list[_Subscription]:
        found = self._index.match(topic)
        if len(found) > 1:
            return [self._subs[f] for f in sorted(found, key=self._order.__getitem__)]
        return [self._subs[f] for f in found]


# At most this many MQTT packets are read per readable event before control returns to the event loop (each is a
# message handler's work too: 50 of a joining fleet's messages were 10-20 ms of CPU, 25-60 ms of wall time on a
# loaded machine, and a /healthz probe waits for a few such steps).
_MAX_PACKETS_PER_WAKEUP = 25
# At most this many packets are written per writable event. paho's loop_write writes everything queued until the
# socket would block: when the broker falls behind (a fleet's TLS handshakes), thousands of packets pile up and
# were then written in one step of the loop (218 ms of CPU at the end of a 5,000-node join: issue 17).
_MAX_WRITES_PER_WAKEUP = 200


def _input_waiting(sock: Any) -> bool:
    """Whether a read on `sock` would find data now (without blocking or consuming any)."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True  # already decrypted by the TLS layer, invisible to poll()
    if not hasattr(select, "poll"):  # Windows: one packet per readable event, as before
        return False
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):  # closed meanwhile; the next readable event (or none) will tell
        return False


async def _drain_and_close(sock: socket.socket) -> None:
    """Half-close after our DISCONNECT, read (and drop) whatever the broker still sends until it closes its side,
    then close: a close with nothing unread ends in FIN, never RST. Bounded by the caller (stop())."""
    loop = asyncio.get_running_loop()
    try:
        sock.setblocking(False)
        sock.shutdown(socket.SHUT_WR)
        while await loop.sock_recv(sock, 65536):
            pass
    except OSError:
        pass
    finally:
        sock.close()


def _consume_exception(fut: asyncio.Future[Any]) -> None:
    # a fire-and-forget publish that failed must not log "exception was never retrieved"
    if not fut.cancelled():
        fut.exception()


class MqttClient:
    """One MQTT connection, kept alive for the life of the program."""

    def __init__(self, settings: MqttSettings, *, rng: random.Random | None = None) -> None:
        self.settings = settings
        self._rng = rng or random.Random()
        self._ssl_ctx: ssl.SSLContext | None = None
        self._paho = self._make_paho()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subs = _Handlers()
        self._outbox = Outbox(max_messages=settings.outbox_max_messages, max_bytes=settings.outbox_max_bytes)
        self._next_ref = 0
        self._ref_futures: dict[int, asyncio.Future[Outcome]] = {}
        self._mid_futures: dict[int, asyncio.Future[Outcome]] = {}
        self._sub_futures: dict[int, asyncio.Future[list[int]]] = {}
        self._connack: asyncio.Future[None] | None = None
        self._connected = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._closing = False
        self._connecting = False  # a connect attempt is under way (TCP/TLS/CONNECT sent, CONNACK pending)
        self._attempt_over = asyncio.Event()
        self._goodbye = False  # DISCONNECT sent by stop(): the socket is drained before it is closed
        self._linger: asyncio.Task[None] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._misc: asyncio.Task[None] | None = None
        self._hooks: list[ConnectHook] = []
        self._down_hooks: list[Callable[[], None]] = []
        self._sub_lock = asyncio.Lock()
        self._active: set[str] = set()  # filters subscribed on the current connection
        self.reconnects = 0
        self.last_error: str = ""

    # ---- lifecycle -----------------------------------------------------------------------------------------

    def _make_paho(self) -> paho.Client:
        s = self.settings
        c = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            clean_session=s.clean_session,
            protocol=paho.MQTTv311,
        )
        c.max_inflight_messages_set(s.max_inflight)
        c.max_queued_messages_set(0)  # unbounded inside paho: our outbox bounds what waits while offline
        if s.username is not None:
            c.username_pw_set(s.username, str(s.password) if s.password is not None else None)
        if s.tls is not None:
            ctx = ssl.create_default_context(cafile=str(s.tls.ca_file) if s.tls.ca_file else None)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            if s.tls.cert_file is not None:
                ctx.load_cert_chain(str(s.tls.cert_file), str(s.tls.key_file) if s.tls.key_file else None)
            c.tls_set_context(ctx)
            self._ssl_ctx = ctx
        if s.will is not None:
            c.will_set(s.will.topic, s.will.payload, qos=s.will.qos, retain=s.will.retain)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        c.on_subscribe = self._on_subscribe
        c.on_socket_open = self._on_socket_open
        c.on_socket_close = self._on_socket_close
        c.on_socket_register_write = self._on_socket_register_write
        c.on_socket_unregister_write = self._on_socket_unregister_write
        return c

    async def start(self) -> None:
        """Begin connecting in the background (returns at once; see `wait_connected`)."""
        if self._runner is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._closing = False
        self._runner = asyncio.create_task(self._run(), name=f"mqtt-{self.settings.client_id}")
        self._misc = asyncio.create_task(self._misc_loop(), name=f"mqtt-misc-{self.settings.client_id}")

    async def wait_connected(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        except TimeoutError:
            detail = f" (last error: {self.last_error})" if self.last_error else ""
            raise NotConnected(
                f"no connection to mqtt://{self.settings.host}:{self.settings.port} within {timeout}s{detail}"
            ) from None

    def reload_certificate(self) -> None:
        """Load the (renewed) client certificate and key again from their files; the next (re)connect uses
        them. The current connection stays up: its handshake was valid when it was made."""
        tls = self.settings.tls
        if self._ssl_ctx is None or tls is None or tls.cert_file is None:
            raise MqttError("this client has no client certificate to reload")
        try:
            self._ssl_ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise MqttError(f"cannot load the client certificate {tls.cert_file}: {exc}") from exc

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def on_connect(self, hook: ConnectHook) -> None:
        """Run `hook` after every successful (re)connect, after re-subscribing (e.g. republish presence)."""
        self._hooks.append(hook)

    def on_disconnect(self, hook: Callable[[], None]) -> None:
        """Call `hook` (in the event loop) whenever an established connection is lost or closed."""
        self._down_hooks.append(hook)

    async def stop(self, timeout: float = 2.0) -> None:  # noqa: ASYNC109
        """Say goodbye and stop reconnecting: what is in flight is flushed (QoS 1 acknowledged), then DISCONNECT,
        and the socket is closed only once the broker has closed its side, each step bounded by `timeout`.

        Each step keeps the broker from publishing the will for a routine stop (MQTT 3.1.1 §3.1.2.5: the will
        goes out on any close without DISCONNECT): a connect still under way is let finish, so it ends with a
        DISCONNECT rather than a dropped socket; and the socket is never closed with unread input in it, which
        makes the kernel send RST, whereupon a broker may discard the DISCONNECT it has not read yet (seen: one
        in two quick agent restarts published the will, issue 16)."""
        self._closing = True
        if self._connecting:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._attempt_over.wait()
        if self.connected:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._flushed()
            self._goodbye = True
            self._paho.disconnect()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._disconnected.wait()
        await self._cancel_tasks()
        if self._linger is not None:
            with contextlib.suppress(TimeoutError, OSError):
                async with asyncio.timeout(timeout):
                    await asyncio.shield(self._linger)
            self._linger.cancel()  # the broker never closed its side: close ours anyway
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await self._linger
            self._linger = None
        self._goodbye = False
        self._fail_pending(NotConnected("client stopped"))

    async def _flushed(self) -> None:
        """Until every queued and in-flight publish was handed over (QoS 1: acknowledged)."""
        while self.connected and (self._mid_futures or self._ref_futures):
            lost = asyncio.ensure_future(self._disconnected.wait())  # paho keeps unacknowledged QoS 1 for later
            waits: list[asyncio.Future[Any]] = [*self._mid_futures.values(), *self._ref_futures.values(), lost]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                lost.cancel()

    async def abort(self) -> None:
        """Drop the connection without DISCONNECT, as a crash or a cut cable would (the will is published)."""
        self._closing = True
        sock = self._paho.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # type: ignore[attr-defined]
        await self._cancel_tasks()
        with contextlib.suppress(Exception):
            self._paho._sock_close()  # paho has no public "drop without DISCONNECT"
        self._fail_pending(NotConnected("client aborted"))

    async def _cancel_tasks(self) -> None:
        for task in (self._runner, self._misc):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._runner = self._misc = None
        self._connected.clear()

    # ---- connection loop -----------------------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        first = True
        while not self._closing:
            try:
                await self._connect_once(first)
                first = False
                attempt = 0
                await self._after_connect()
                await self._disconnected.wait()
                self.reconnects += 1
            except ConnectionRefused as exc:
                self.last_error = str(exc)
                log.error("mqtt %s: broker refused the connection: %s", self.settings.client_id, exc)
            except (OSError, MqttError, TimeoutError, ssl.SSLError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("mqtt %s: connection to %s:%s failed: %s", self.settings.client_id,
                            self.settings.host, self.settings.port, self.last_error)
            if self._closing:
                break
            delay = self.settings.backoff.delay(attempt, self._rng.random())
            attempt += 1
            log.info("mqtt %s: reconnecting in %.1fs (attempt %d)", self.settings.client_id, delay, attempt)
            await asyncio.sleep(delay)

    async def _connect_once(self, first: bool) -> None:
        self._connecting = True
        self._attempt_over.clear()
        try:
            await self._attempt(first)
        finally:
            self._connecting = False
            self._attempt_over.set()

    async def _attempt(self, first: bool) -> None:
        loop = asyncio.get_running_loop()
        self._disconnected.clear()
        self._connack = loop.create_future()
        s = self.settings
        try:
            if first:
                rc = await loop.run_in_executor(None, self._paho.connect, s.host, s.port, s.keepalive_s)
            else:
                rc = await loop.run_in_executor(None, self._paho.reconnect)
        except (OSError, ssl.SSLError):
            raise
        except Exception as exc:  # paho raises ValueError and others for bad settings
            raise MqttError(f"connect failed: {exc}") from exc
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise MqttError(f"connect failed: {paho.error_string(rc)}")
        try:
            async with asyncio.timeout(s.connect_timeout_s):
                await asyncio.shield(self._connack)
        except TimeoutError:
            self._paho._sock_close()
            raise MqttError(f"no CONNACK within {s.connect_timeout_s}s") from None

    async def _after_connect(self) -> None:
        # re-subscribe everything (the broker may have lost the session), then flush what waited offline
        if self._closing:  # stop() is waiting to say goodbye: send what waited (a goodbye among it), no hooks
            for msg in self._outbox.drain():
                self._hand_to_paho(msg)
            return
        async with self._sub_lock:
            for sub in self._subs.all():
                if sub.topic_filter in self._active:
                    continue
                try:
                    await self._send_subscribe(sub)
                except MqttError as exc:
                    log.error("mqtt %s: re-subscribe to %s failed: %s", self.settings.client_id,
                              sub.topic_filter, exc)
        for msg in self._outbox.drain():
            self._hand_to_paho(msg)
        for hook in self._hooks:
            try:
                await hook()
            except Exception:
                log.exception("mqtt %s: on-connect hook failed", self.settings.client_id)

    async def _misc_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self._connected.is_set():
                self._paho.loop_misc()

    # ---- paho callbacks (all run on the event loop thread, except socket-open during connect) ---------------

    def _call_in_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        assert self._loop is not None
        if self._loop.is_closed():
            return  # paho's __del__ closing a socket after the program's loop ended
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._call_in_loop(self._watch_read, sock)

    def _watch_read(self, sock: Any) -> None:
        assert self._loop is not None
        self._loop.add_reader(sock, self._readable, sock)

    def _readable(self, sock: Any) -> None:
        # One packet per _read_one(), reading on while more input is waiting, so a burst costs one event-loop
        # iteration per up to _MAX_PACKETS_PER_WAKEUP packets instead of one per packet; the bound keeps a flood
        # from starving the loop's other tasks.
        for _ in range(_MAX_PACKETS_PER_WAKEUP):
            rc = self._read_one()
            if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN):
                log.debug("mqtt %s: read returned %s", self.settings.client_id, paho.error_string(rc))
                return
            if self._paho.socket() is not sock or not _input_waiting(sock):
                return
        if isinstance(sock, ssl.SSLSocket) and sock.pending() and self._loop is not None:
            # bound hit with bytes the TLS layer already decrypted: poll() cannot see them, so no readable event
            # would come until the broker sends again (a broker coalescing packets into one record); read on next turn
            self._loop.call_soon(self._readable, sock)

    def _read_one(self) -> MQTTErrorCode:
        """Read and handle one MQTT packet. paho's `loop_read` ignores its `max_packets` argument and reads up to
        one packet per message it has in flight *or queued* (+1) until the socket would block: with thousands of
        QoS 1 messages waiting for their turn (a fleet's dashboard topics and service tables) one readable event
        read every message waiting, 487 ms of handlers in one step of the loop (issue 17). So one packet, through
        paho's own packet reader (what loop_read calls per packet), falling back to loop_read if a paho version
        lacks it."""
        c: Any = self._paho
        read = getattr(c, "_packet_read", None)
        handle = getattr(c, "_loop_rc_handle", None)
        if read is None or handle is None:
            return self._paho.loop_read()
        if c._sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        rc = read()
        if rc > 0:
            return handle(rc)  # type: ignore[no-any-return]
        return MQTTErrorCode.MQTT_ERR_SUCCESS  # a packet handled, or none waiting (AGAIN) as loop_read says it

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        assert self._loop is not None
        if self._goodbye and self._linger is None:
            # paho closes the socket right after writing DISCONNECT; a second descriptor keeps the connection
            # open until the broker has closed its side (see stop())
            with contextlib.suppress(OSError):
                held = socket.socket(fileno=os.dup(sock.fileno()))
                self._call_in_loop(self._hold_until_closed, held)
        self._call_in_loop(self._unwatch, sock)

    def _hold_until_closed(self, held: socket.socket) -> None:
        self._linger = asyncio.ensure_future(_drain_and_close(held))

    def _unwatch(self, sock: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(Exception):
            self._loop.remove_reader(sock)
        with contextlib.suppress(Exception):
            self._loop.remove_writer(sock)

    def _on_socket_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        assert self._loop is not None
        self._call_in_loop(self._loop.add_writer, sock, self._writable)

    def _writable(self) -> None:
        """paho's loop_write, on at most _MAX_WRITES_PER_WAKEUP of its queued packets: the rest stay queued, in
        order, and the writer (still registered while paho wants to write) takes them on the next turns of the
        loop. Nothing is queued while loop_write runs (publishing happens on this thread, outside it)."""
        c: Any = self._paho
        queued = getattr(c, "_out_packet", None)
        if not isinstance(queued, collections.deque) or len(queued) <= _MAX_WRITES_PER_WAKEUP:
            c.loop_write()
            return
        later = collections.deque(queued)  # paho's own deque keeps its identity (others may hold it)
        queued.clear()
        for _ in range(_MAX_WRITES_PER_WAKEUP):
            queued.append(later.popleft())
        try:
            c.loop_write()
        finally:
            queued.extend(later)  # after what is left of this turn's packets (a partial write stays first)
            if queued and c.socket() is not None:
                c._call_socket_register_write()  # still wanting to write: the writer stays registered

    def _on_socket_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        assert self._loop is not None
        self._call_in_loop(self._loop.remove_writer, sock)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        fut = self._connack
        if reason.is_failure:
            if fut is not None and not fut.done():
                fut.set_exception(ConnectionRefused(f"CONNACK: {reason}", code=int(reason.value)))
            return
        self.last_error = ""
        self._connected.set()
        log.info("mqtt %s: connected to %s:%s (session present: %s)", self.settings.client_id,
                 self.settings.host, self.settings.port, flags.session_present)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        self._active.clear()
        self._disconnected.set()
        if was_connected and not self._closing:
            log.warning("mqtt %s: connection lost (%s)", self.settings.client_id, reason)
        if was_connected:
            for hook in self._down_hooks:
                try:
                    hook()
                except Exception:
                    log.exception("mqtt %s: a disconnect hook failed", self.settings.client_id)
        for fut in list(self._sub_futures.values()):
            if not fut.done():
                fut.set_exception(NotConnected("connection lost before SUBACK"))
        self._sub_futures.clear()

    def _on_message(self, client: paho.Client, userdata: Any, m: paho.MQTTMessage) -> None:
        message = Message(topic=m.topic, payload=bytes(m.payload), qos=m.qos, retain=bool(m.retain))
        for sub in self._subs.matching(m.topic):  # a list: a handler may (un)subscribe meanwhile
            try:
                sub.handler(message)
            except Exception:
                log.exception("mqtt %s: handler for %s failed on %s", self.settings.client_id,
                              sub.topic_filter, m.topic)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        fut = self._mid_futures.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(Outcome.DELIVERED)

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        fut = self._sub_futures.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result([int(c.value) for c in codes])

    # ---- publish -------------------------------------------------------------------------------------------

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False, droppable: bool = False
    ) -> Outcome:
        """Publish and wait: returns once PUBACK arrived (QoS 1) or the bytes were written (QoS 0), or the
        outcome if the message was superseded/dropped while waiting offline (see `publish_nowait`)."""
        return await self.publish_nowait(topic, payload, qos=qos, retain=retain, droppable=droppable)

    def publish_nowait(
        self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False, droppable: bool = False
    ) -> asyncio.Future[Outcome]:
        """Publish without waiting; the returned future settles like `publish`.

        While disconnected the message waits in the outbox; `droppable` marks it as one to sacrifice first
        (heartbeats). Raises OutboxFull when the outbox is full of state messages.
        """
        if qos not in (0, 1):
            raise MqttError(f"qos must be 0 or 1 (got {qos}); QoS 2 is not used by Cloudless")
        if self._loop is None:
            raise NotConnected("call start() before publishing")
        self._next_ref += 1
        msg = Outgoing(ref=self._next_ref, topic=topic, payload=payload, qos=qos, retain=retain, droppable=droppable)
        fut: asyncio.Future[Outcome] = self._loop.create_future()
        fut.add_done_callback(_consume_exception)
        self._ref_futures[msg.ref] = fut
        if self.connected:
            self._hand_to_paho(msg)
            return fut
        verdict = self._outbox.offer(msg)
        if isinstance(verdict, Rejected):
            self._ref_futures.pop(msg.ref, None)
            raise OutboxFull(f"cannot queue {topic} while disconnected: {verdict.reason}")
        for ref, outcome in verdict.settled:
            settled = self._ref_futures.pop(ref, None)
            if settled is not None and not settled.done():
                settled.set_result(outcome)
        return fut

    def _hand_to_paho(self, msg: Outgoing) -> None:
        fut = self._ref_futures.pop(msg.ref, None)
        try:
            info = self._paho.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)
        except (ValueError, TypeError) as exc:
            if fut is not None and not fut.done():
                fut.set_exception(MqttError(f"publish to {msg.topic!r} refused: {exc}"))
            return
        if fut is None:
            return
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and msg.qos == 0:
            # lost the connection in between: keep the message (paho drops unsent QoS 0 ones)
            verdict = self._outbox.offer(msg)
            if isinstance(verdict, Rejected):
                fut.set_exception(OutboxFull(verdict.reason))
            else:
                self._ref_futures[msg.ref] = fut
            return
        if info.is_published():
            fut.set_result(Outcome.DELIVERED)
        else:
            self._mid_futures[info.mid] = fut  # QoS 1 is kept by paho and resent after a reconnect

    # ---- subscribe -----------------------------------------------------------------------------------------

    async def subscribe(self, topic_filter: str, handler: Handler, *, qos: int = 1) -> int:
        """Register `handler` for `topic_filter` (kept across reconnects). When connected, waits for SUBACK and
        returns the granted QoS; raises MqttError if the broker refused (0x80). Offline: returns -1 and the
        subscription is made on connect."""
        sub = _Subscription(topic_filter, qos, handler)
        self._subs.add(sub)
        if not self.connected:
            return -1
        async with self._sub_lock:  # never twice on one connection: each SUBSCRIBE replays retained messages
            return await self._send_subscribe(sub)

    async def unsubscribe(self, topic_filter: str) -> None:
        self._subs.remove(topic_filter)
        self._active.discard(topic_filter)
        if self.connected:
            self._paho.unsubscribe(topic_filter)

    async def _send_subscribe(self, sub: _Subscription) -> int:
        assert self._loop is not None
        try:
            rc, mid = self._paho.subscribe(sub.topic_filter, qos=sub.qos)
        except ValueError as exc:
            raise MqttError(f"invalid topic filter {sub.topic_filter!r}: {exc}") from None
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise NotConnected(f"subscribe {sub.topic_filter!r}: {paho.error_string(rc)}")
        fut: asyncio.Future[list[int]] = self._loop.create_future()
        self._sub_futures[mid] = fut
        try:
            async with asyncio.timeout(self.settings.connect_timeout_s):
                codes = await fut
        except TimeoutError:
            self._sub_futures.pop(mid, None)
            raise MqttError(f"no SUBACK for {sub.topic_filter!r}") from None
        granted = codes[0] if codes else 0x80
        if granted >= 0x80:
            raise MqttError(f"broker refused the subscription to {sub.topic_filter!r} (not authorized?)")
        self._active.add(sub.topic_filter)
        return granted

    # ---- internals -----------------------------------------------------------------------------------------

    def _fail_pending(self, exc: Exception) -> None:
        for futs in (self._ref_futures, self._mid_futures):
            for fut in futs.values():
                if not fut.done():
                    fut.set_exception(exc)
            futs.clear()

    def outbox_size(self) -> int:
        return len(self._outbox)

"""The embedded MQTT broker: amqtt 0.12.1 with its session and authorization defects mended.

amqtt is used for what it does well (packet codec, listeners, the broadcast loop); the decisions are ours:
authentication through an `Authenticator`, authorization through the pure `Acl`. The overrides below each fix a
defect of amqtt 0.12.1 that Cloudless depends on (see tests/integration/test_brokers.py, which runs the same
scenarios against Mosquitto):

1. Retained leak. On connect amqtt replays retained messages for *every* filter in the broker-wide subscription
   table, unfiltered, so a client that subscribed to nothing gets other clients' retained state. Here retained
   messages are sent only on the client's own SUBSCRIBE (MQTT 3.1.1 §3.3.1.3) and only topics its ACL lets it
   read; queued messages of a resumed session are re-checked against the ACL as well.
2. Keep-alive. amqtt never disconnects a silent client (its read-timeout hook is a no-op), so a powered-off device
   would stay "online" forever. Here a client silent for 1.5x its keep-alive is disconnected and its will is
   published (§3.1.2.10).
3. QoS 1/2 in flight. amqtt drops an outgoing QoS 1 or 2 message when the subscriber disconnects before its
   acknowledgement (and after a fixed 5 s). Here it stays in the session and is resent on reconnect: PUBLISH with
   DUP, or PUBREL once PUBREC came (§4.4), without holding the client's own packets up meanwhile.
4. Offline queue. Messages for a disconnected persistent session are queued (bounded; oldest dropped with a
   warning) and delivered with retain=0 on reconnect (amqtt sets retain=1, §3.3.1.9 says 0); QoS is
   min(publish QoS, subscription QoS) (§3.8.4), where amqtt used the subscription's.
6. Revocation. With certificate authentication, a certificate revoked while its client is connected loses
   that connection within a second (the revocation list is re-read on change).
7. Floods. Every listener admits connections through a `ConnectionGate` (total and per address, before any TLS
   work), runs the TLS handshake with a short timeout and gives a client that long to complete its CONNECT
   (amqtt waited forever, and its 60 s TLS default let 1,100 idle sockets take every file descriptor); a
   connection that ends is always closed, and what floods produce is logged throttled (broker.limits).
8. Size. A packet larger than the wire's cap plus its headers (MAX_PACKET_BYTES) is refused before its body is
   read, and the client is disconnected (MQTT 3.1.1 has no other refusal for a PUBLISH): amqtt read any size into
   memory, and a node could retain a 200 MiB message that stayed in the broker's memory for good.
9. Fan-out. amqtt matched every message against every filter of every client (99% CPU at 2,000 nodes, issue 17);
   here subscribers come from a subscription trie (broker.subtree), one copy per client at its highest QoS,
   with the ACL still checked per delivery (bench/broker_fanout.py compares both).
10. Connect burst (issue 17: 2,000 devices online within 10 s). amqtt rendered its whole subscription table after
   every SUBSCRIBE (`logger.debug(repr(...))`, built at any log level: quadratic in the fleet), built a
   `transitions.Machine` per session, and ran an `asyncio.wait()` per packet and per message; asyncio gives every TLS
   connection a 256 KiB read buffer and OpenSSL sent two session tickets per handshake that no client uses. Here:
   none of that (`_client_message_loop`, `SessionState`, `_broadcast_loop`, `trim_tls_read_buffer`, num_tickets=0),
   certificate checks on the loop instead of a thread hop, delivery tasks that reap themselves (`DeliveryTasks`),
   and the cyclic collector set for thousands of connections while a broker runs (`GcTuning`: it took a third of
   the burst's CPU). bench/broker_join.py measures the burst alone.
5. Identity. Authentication happens before amqtt touches any session, the will topic is checked against the
   ACL (a node cannot plant a will on another node's status), and with authentication on, the client id is the
   username (Mosquitto's `use_username_as_clientid`), so no client can take over another's session.

This module is the broker (listeners, authentication, ACL, fan-out, revocation); the per-connection parts (session
state, the protocol handler, delivery bookkeeping, the TLS buffer and GC tuning) are in broker/embedded_session.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action, ListenerConfig, ListenerType
from amqtt.errors import AMQTTError, BrokerError, MQTTError, NoDataError
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.constants import QOS_0, QOS_1, QOS_2
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import (
    OUTGOING,
    ApplicationMessage,
    OutgoingApplicationMessage,
    Session,
)
from amqtt.utils import gen_client_id

from broker import embedded_session
from broker.acl import Acl, Identity
from broker.auth import (
    AnonymousAuthenticator,
    Authenticator,
    AuthRejected,
    CertAuthenticator,
    ConnectInfo,
    PeerCert,
    peer_cert,
)
from broker.embedded_session import (
    KEEPALIVE_GRACE,
    MAX_PACKET_BYTES,
    CloudlessProtocolHandler,
    DeliveryTasks,
    SizeCappedReader,
    gc_tuning,
    trim_tls_read_buffer,
)
from broker.limits import ConnectionGate, ListenerLimits, safe_topic
from broker.listeners import ThrottledLog, mark_authenticated, nofile_soft, start_gated_server
from broker.subtree import SubscriptionTree

log = logging.getLogger(__name__)

_IDENTITY_ATTR = "cloudless.identity"
_CERT_ATTR = "cloudless.cert"
REVOCATION_CHECK_S = 1.0


@dataclass(frozen=True)
class TlsSettings:
    certfile: Path
    keyfile: Path
    cafile: Path | None = None
    require_client_cert: bool = False


@dataclass(frozen=True)
class EmbeddedBrokerSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    tls: TlsSettings | None = None
    max_queued_per_session: int = 1000
    session_expiry_s: float | None = 7 * 24 * 3600.0
    username_as_client_id: bool = True
    extra_listeners: Sequence[tuple[str, int]] = field(default_factory=tuple)
    limits: ListenerLimits = field(default_factory=ListenerLimits)
    # bench/broker_fanout.py only: deliver by amqtt's scan of every subscription per message instead of the trie
    scan_delivery: bool = False


class EmbeddedBroker(Broker):
    """amqtt Broker with Cloudless authentication, ACL and the MQTT 3.1.1 session fixes described above."""

    def __init__(
        self,
        settings: EmbeddedBrokerSettings,
        *,
        authenticator: Authenticator | None = None,
        acl: Acl | None = None,
    ) -> None:
        self.settings = settings
        self.authenticator: Authenticator = authenticator or AnonymousAuthenticator()
        self.acl = acl or Acl()
        self._auth_enabled = not isinstance(self.authenticator, AnonymousAuthenticator)
        listener: dict[str, Any] = {"type": "tcp", "bind": f"{settings.host}:{settings.port}", "max_connections": -1}
        if settings.tls is not None:
            listener.update(
                ssl=True,
                certfile=str(settings.tls.certfile),
                keyfile=str(settings.tls.keyfile),
                cafile=str(settings.tls.cafile) if settings.tls.cafile else None,
            )
        listeners: dict[str, Any] = {"default": listener}
        for i, (host, port) in enumerate(settings.extra_listeners):
            listeners[f"extra{i}"] = {**listener, "bind": f"{host}:{port}"}
        config = {
            "listeners": listeners,
            "plugins": {},  # no amqtt plugins: auth and ACL are ours (see _authenticate / _topic_filtering)
            "session_expiry_interval": int(settings.session_expiry_s) if settings.session_expiry_s else None,
        }
        super().__init__(config)
        # amqtt gives every TCP connection's coroutine no error boundary of its own; count what we refused.
        self.refused_connections = 0
        self.gates: dict[str, ConnectionGate] = {}
        self._throttled = ThrottledLog(log)
        self._subtree: SubscriptionTree[str] = SubscriptionTree()  # client id -> filters, by topic level
        self._tasks_queue: DeliveryTasks = DeliveryTasks()  # type: ignore[assignment]

    # ---- listeners (fix 7) -------------------------------------------------------------------------------

    async def _create_server_instance(  # type: ignore[override]
        self, listener_name: str, listener_type: ListenerType, address: str | None, port: int,
        ssl_context: ssl.SSLContext | None,
    ) -> asyncio.Server:
        if listener_type != ListenerType.TCP:
            raise BrokerError(f"unsupported listener type {listener_type}")
        loop = asyncio.get_running_loop()
        limits = self.settings.limits
        gate = self.gates[listener_name] = ConnectionGate.for_listener(limits, nofile_soft())
        callback = partial(self.stream_connected, listener_name=listener_name)

        def protocol() -> asyncio.BaseProtocol:  # what asyncio.start_server makes
            return asyncio.StreamReaderProtocol(asyncio.StreamReader(limit=2**16, loop=loop), callback, loop=loop)

        return await start_gated_server(protocol, gate, ssl_context=ssl_context, what=f"mqtt {listener_name}",
                                        handshake_timeout_s=limits.handshake_timeout_s, host=address, port=port,
                                        reuse_address=True)

    async def _client_connected(self, listener_name: str, reader: ReaderAdapter, writer: WriterAdapter) -> None:
        """amqtt's, with a deadline for the CONNECT, a packet-size cap, throttled logging, and the connection closed
        however it ends (amqtt left a client that failed its CONNECT half-open, holding its descriptor)."""
        peer = writer.get_peer_info() or ("?", 0)
        trim_tls_read_buffer(getattr(getattr(writer, "_writer", None), "transport", None))
        reader = SizeCappedReader(reader, MAX_PACKET_BYTES, f"{peer[0]}:{peer[1]}")
        try:
            try:
                async with asyncio.timeout(self.settings.limits.handshake_timeout_s):
                    handler, session = await self._initialize_client_session(reader, writer, *peer)
            except (AMQTTError, MQTTError, NoDataError, TimeoutError) as exc:
                self._throttled.log(logging.INFO, f"setup:{peer[0]}", "no session for %s:%s: %s", *peer,
                                    type(exc).__name__ if isinstance(exc, TimeoutError) else exc)
                return
            # authenticated: the connection stops counting against its address (devices behind one NAT)
            mark_authenticated(getattr(getattr(writer, "_writer", None), "transport", None))
            try:
                await self._handle_client_session(reader, writer, session, handler, None, listener_name)
            except (AMQTTError, MQTTError, NoDataError) as exc:
                log.warning("session of %s ended: %s", session.client_id, exc)
        finally:
            try:
                async with asyncio.timeout(self.settings.limits.handshake_timeout_s):
                    await writer.close()
            except Exception:  # a peer that reads nothing cannot hold the close up: drop it
                transport = getattr(getattr(writer, "_writer", None), "transport", None)
                if transport is not None:
                    transport.abort()

    # ---- TLS -------------------------------------------------------------------------------------------

    def _create_ssl_context(self, listener: ListenerConfig) -> ssl.SSLContext:  # type: ignore[override]
        ctx: ssl.SSLContext = super()._create_ssl_context(listener)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        # no TLS 1.3 session tickets: OpenSSL sent two after every handshake (a fifth of the server's handshake CPU
        # here, and ~0.5 KiB on a metered link), and no client of ours resumes a session (paho, the agents, the fleet)
        ctx.num_tickets = 0
        if self.settings.tls is not None and self.settings.tls.require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    # ---- connection setup (fixes 2 and 5) -----------------------------------------------------------------

    async def _initialize_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        try:
            handler, incoming = await CloudlessProtocolHandler.init_from_connect(reader, writer, self.plugins_manager)
        except MQTTError as exc:
            await writer.close()
            raise MQTTError(exc) from exc
        except (AMQTTError, NoDataError) as exc:
            raise AMQTTError(exc) from exc

        verdict = await self._authenticate_connect(incoming)
        if isinstance(verdict, AuthRejected):
            self.refused_connections += 1
            self._throttled.log(logging.WARNING, f"refused:{remote_address}", "refused client %r from %s:%s: %s",
                                incoming.client_id, remote_address, remote_port, verdict.reason)
            with contextlib.suppress(ConnectionError):  # the refused client may hang up first
                await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
                await writer.close()
            raise AMQTTError(verdict.reason)

        raw_keepalive = incoming.keep_alive
        await self._take_over(incoming.client_id)
        if incoming.clean_session:
            if incoming.client_id:
                await self._delete_session(incoming.client_id)
            else:
                incoming.client_id = gen_client_id()
            session = incoming
            session.parent = 0
        elif incoming.client_id in self._sessions:
            session, _ = self._sessions[incoming.client_id]
            for name in ("will_flag", "will_message", "will_topic", "will_qos", "will_retain", "username",
                         "password", "ssl_object", "remote_address", "remote_port"):
                setattr(session, name, getattr(incoming, name))
            session.clean_session = False
            session.parent = 1
        else:
            session = incoming
            session.parent = 0
        session.attributes[_IDENTITY_ATTR] = verdict
        session.attributes[_CERT_ATTR] = peer_cert(session.ssl_object)
        # amqtt treats anonymous sessions as non-persistent; every client we admitted has an identity.
        session.is_anonymous = False
        # amqtt's reader waits `keep_alive` seconds for the next packet; a float is fine for asyncio.wait_for.
        session.keep_alive = math.ceil(raw_keepalive * KEEPALIVE_GRACE * 1000) / 1000 if raw_keepalive > 0 else 0  # type: ignore[assignment]
        return handler, session

    async def _take_over(self, client_id: str | None) -> None:
        """A client id that is already connected: disconnect the old connection first (§3.1.4-2)."""
        existing = self._sessions.get(client_id) if client_id else None
        if existing is None or not existing[0].transitions.is_connected():
            return
        log.info("client %s connected again: closing its previous connection", client_id)
        await existing[1].handle_connection_closed()
        await existing[1].stop()
        for _ in range(100):  # let the old message loop record the disconnect before the session is reused
            if not existing[0].transitions.is_connected():
                return
            await asyncio.sleep(0.01)

    async def _authenticate_connect(self, session: Session) -> Identity | AuthRejected:
        info = ConnectInfo(client_id=session.client_id or "", username=session.username, password=session.password,
                           cert=peer_cert(session.ssl_object))
        if info.cert is not None and isinstance(self.authenticator, CertAuthenticator):
            # a certificate the handshake verified: a few lookups and a stat() of the revocation list, on the loop (a
            # thread hop per connect cost more than that, and up to a GIL switch interval of latency, in a burst)
            verdict = self.authenticator.authenticate(info)
        else:  # password hashing takes milliseconds: keep it off the event loop
            verdict = await asyncio.to_thread(self.authenticator.authenticate, info)
        if isinstance(verdict, AuthRejected):
            return verdict
        if self._auth_enabled and self.settings.username_as_client_id:
            session.client_id = verdict.username
        if session.will_flag and session.will_topic is not None and not self.acl.can_publish(
            verdict, session.will_topic
        ):
            return AuthRejected(f"{verdict.username!r} may not publish its will on {session.will_topic!r}")
        return verdict

    async def _authenticate(self, session: Session, _: ListenerConfig) -> bool:
        return isinstance(session.attributes.get(_IDENTITY_ATTR), Identity)

    def _identity(self, session: Session) -> Identity | None:
        ident = session.attributes.get(_IDENTITY_ATTR)
        return ident if isinstance(ident, Identity) else None

    async def _topic_filtering(self, session: Session, topic: str, action: Action) -> bool:
        identity = self._identity(session)
        if identity is None:
            return False
        match action:
            case Action.PUBLISH:
                return self.acl.can_publish(identity, topic)
            case Action.SUBSCRIBE:
                return self.acl.can_subscribe(identity, topic)
            case Action.RECEIVE:
                return self.acl.can_receive(identity, topic)
        return False

    # ---- the session lifecycle (fix 1) ------------------------------------------------------------------

    async def _handle_client_session(  # type: ignore[override]  # noqa: PLR0917 - amqtt's signature
        self,
        reader: ReaderAdapter,
        writer: WriterAdapter,
        client_session: Session,
        handler: BrokerProtocolHandler,
        server: Any,
        listener_name: str,
    ) -> None:
        assert client_session.client_id is not None
        try:
            client_session.transitions.connect()
        except Exception:  # transitions raises MachineError for a state it does not expect
            client_session.transitions.disconnect()
            client_session.transitions.connect()

        handler.attach(client_session, reader, writer)
        self._sessions[client_session.client_id] = (client_session, handler)
        await handler.mqtt_connack_authorize(True)
        await handler.start()  # resends unacknowledged QoS 1 messages (fix 3)
        await self._publish_session_retained_messages(client_session)
        # No replay of retained messages here: a resumed session's subscriptions are not new (§3.3.1.3).
        await self._client_message_loop(client_session, handler)

    async def _client_message_loop(self, client_session: Session, handler: BrokerProtocolHandler) -> None:
        """amqtt's loop over one client's packets, without its `logger.debug(repr(self._subscriptions))` after every
        SUBSCRIBE: that argument is built whatever the log level, i.e. every subscription of every client rendered
        per SUBSCRIBE — quadratic in the fleet (a 2,000-device connect burst spent most of its 23 CPU seconds
        there, issue 17). Its four waiters wake one future instead of an asyncio.wait() per packet."""
        loop = asyncio.get_running_loop()
        wakeup: list[asyncio.Future[None]] = [loop.create_future()]

        def ready(_: asyncio.Future[Any]) -> None:
            if not wakeup[0].done():
                wakeup[0].set_result(None)

        def watched(aw: Any) -> asyncio.Future[Any]:
            # one done-callback per waiter for its life, where asyncio.wait() added and removed four per packet
            fut: asyncio.Future[Any] = asyncio.ensure_future(aw)
            fut.add_done_callback(ready)
            return fut

        disconnect_waiter = watched(handler.wait_disconnect())
        subscribe_waiter = watched(handler.get_next_pending_subscription())
        unsubscribe_waiter = watched(handler.get_next_pending_unsubscription())
        wait_deliver = watched(handler.mqtt_deliver_next_message())
        connected = True
        try:
            while connected:
                waiters = (disconnect_waiter, subscribe_waiter, unsubscribe_waiter, wait_deliver)
                if not any(w.done() for w in waiters):
                    await wakeup[0]
                wakeup[0] = loop.create_future()
                done = {w for w in waiters if w.done()}  # what is done now, as asyncio.wait(FIRST_COMPLETED) reported
                if disconnect_waiter in done:  # what came with it is still handled below, as amqtt does
                    await self._handle_disconnect(client_session, handler, disconnect_waiter)
                    connected = False
                if subscribe_waiter in done:
                    await self._handle_subscription(client_session, handler, subscribe_waiter)
                    subscribe_waiter = watched(handler.get_next_pending_subscription())
                if unsubscribe_waiter in done:
                    await self._handle_unsubscription(client_session, handler, unsubscribe_waiter)
                    unsubscribe_waiter = watched(handler.get_next_pending_unsubscription())
                if wait_deliver in done:
                    if not await self._handle_message_delivery(client_session, handler, wait_deliver):
                        return
                    wait_deliver = watched(handler.mqtt_deliver_next_message())
        except asyncio.CancelledError:
            log.debug("message loop of %s cancelled", client_session.client_id)
        finally:
            pending = [disconnect_waiter, subscribe_waiter, unsubscribe_waiter, wait_deliver]
            for waiter in pending:
                waiter.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _publish_session_retained_messages(self, session: Session) -> None:
        """Deliver what was queued while the persistent session was offline, retain=0 (§3.3.1.9)."""
        handler = self._get_handler(session)
        identity = self._identity(session)
        if handler is None or identity is None:
            return
        while not session.retained_messages.empty():
            queued = session.retained_messages.get_nowait()
            if not self.acl.can_receive(identity, queued.topic):
                continue
            self._tasks_queue.append(
                asyncio.ensure_future(handler.mqtt_publish(queued.topic, queued.data, queued.qos, retain=False))
            )

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        topic_filter, sub_qos = subscription
        handler = self._get_handler(session)
        identity = self._identity(session)
        if handler is None or identity is None:
            return
        if "+" in topic_filter or "#" in topic_filter:
            candidates = list(self._retained_messages.items())
        else:  # an exact filter (what nodes subscribe to) names its one topic: no walk over every retained message
            exact = self._retained_messages.get(topic_filter)
            candidates = [(topic_filter, exact)] if exact is not None else []
        for topic, retained in candidates:
            if not self._matches(topic, topic_filter) or not self.acl.can_receive(identity, topic):
                continue
            qos = min(sub_qos, retained.qos if retained.qos is not None else sub_qos)
            # not awaited: amqtt waited for every PUBACK here, so a client slow to acknowledge stalled its own
            # SUBSCRIBE/PUBLISH processing; the broadcast loop reaps these tasks
            self._tasks_queue.append(
                asyncio.ensure_future(handler.mqtt_publish(topic, retained.data, qos, retain=True))
            )

    # ---- publishing (fix 4) -----------------------------------------------------------------------------

    async def _handle_message_delivery(
        self, client_session: Session, handler: BrokerProtocolHandler, wait_deliver: asyncio.Future[Any]
    ) -> bool:
        app_message: ApplicationMessage | None = wait_deliver.result()
        if app_message is None:
            return True
        topic = app_message.topic
        if not topic or "#" in topic or "+" in topic or topic.startswith("$"):
            log.warning("client %s published on invalid topic %s: closing", client_session.client_id, safe_topic(topic))
            return False
        identity = self._identity(client_session)
        if identity is None or not self.acl.can_publish(identity, topic):
            log.info("client %s may not publish on %s: dropped", client_session.client_id, safe_topic(topic))
            return True
        qos = app_message.qos if app_message.qos is not None else QOS_0
        await self._broadcast_queue.put(
            {"session": client_session, "topic": topic, "data": app_message.data, "pub_qos": qos}
        )
        if app_message.publish_packet and app_message.publish_packet.retain_flag:
            await self.retain_message(client_session, topic, app_message.data, qos)
        return True

    async def _broadcast_message(
        self,
        session: Session | None,
        topic: str | None,
        data: bytes | bytearray | None,
        force_qos: int | None = None,
    ) -> None:
        # wills and internal messages: publish QoS is the will QoS
        if getattr(self, "_closing", False) and session is not None:
            # our own shutdown disconnects every client: that says nothing about them, so no wills — a coordinator
            # still connected would otherwise replace every node's replicas as the broker stops. (Mosquitto 2.0
            # does send them on SIGTERM; see docs/broker.md.)
            return
        await self._broadcast_queue.put(
            {"session": session, "topic": topic, "data": data, "pub_qos": force_qos if force_qos is not None else 0}
        )

    async def _broadcast_loop(self) -> None:
        """amqtt's loop over the messages to deliver, without a task and an asyncio.wait() per message: it runs
        `_run_broadcast` itself and ends when amqtt's shutdown sets its waiter (which cancels it, as amqtt cancelled
        the message in hand). Delivery tasks reap themselves (DeliveryTasks)."""
        me = asyncio.current_task()
        if me is not None:
            self._broadcast_shutdown_waiter.add_done_callback(lambda _: me.cancel())
        try:
            while True:
                try:
                    await self._run_broadcast(self._tasks_queue)
                except Exception as exc:  # one message that cannot be delivered must not end delivery for all
                    failures = embedded_session.delivery_failures
                    count = failures.throttle.note(f"broadcast:{type(exc).__name__}", failures.clock())
                    if count is not None:  # the same failure on every message is one line per interval, counted
                        log.exception("broker: delivering a message failed; it is dropped, delivery goes on%s",
                                      f" (x{count} since the last such line)" if count > 1 else "")
        except asyncio.CancelledError:
            log.debug("broadcast loop stopped")
        finally:
            pending = [t for t in self._tasks_queue if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)

    async def _run_broadcast(self, running_tasks: Any) -> None:
        broadcast = await self._broadcast_queue.get()
        topic: str = broadcast["topic"]
        pub_qos: int = broadcast.get("pub_qos", QOS_0)
        targets = self._scan_targets(topic) if self.settings.scan_delivery else self._indexed_targets(topic)
        for target, sub_qos in targets:
            identity = self._identity(target)
            if identity is None or not self.acl.can_receive(identity, topic):
                continue
            qos = min(pub_qos, sub_qos)
            if target.transitions.state != "connected":
                if not target.clean_session and qos in (QOS_1, QOS_2):
                    self._queue_offline(target, topic, broadcast["data"], qos)
                continue
            target_handler = self._get_handler(target)
            if target_handler is not None:
                running_tasks.append(
                    asyncio.ensure_future(target_handler.mqtt_publish(topic, broadcast["data"], qos, retain=False))
                )

    def _indexed_targets(self, topic: str) -> list[tuple[Session, int]]:
        """Subscribers from the trie: one entry per client at its highest matching QoS (§3.3.5)."""
        out = []
        for client_id, qos in self._subtree.match(topic).items():
            entry = self._sessions.get(client_id)
            if entry is not None:
                out.append((entry[0], qos))
        return out

    def _scan_targets(self, topic: str) -> list[tuple[Session, int]]:
        """amqtt's way, kept for bench/broker_fanout.py only: every filter of every client, per message (one
        delivery per matching filter)."""
        return [
            (target, sub_qos)
            for topic_filter, subscriptions in list(self._subscriptions.items())
            if self._matches(topic, topic_filter)
            for target, sub_qos in list(subscriptions)
        ]

    # ---- the subscription index (issue 17: no scan of every client per message) ---------------------------

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        granted: int = await super().add_subscription(subscription, session)
        if granted == 0x80 or session.client_id is None:  # 0x80: refused (§3.9.3)
            return granted
        topic_filter = subscription[0]
        # amqtt kept the first QoS of a repeated SUBSCRIBE; a new one replaces it (§3.8.4)
        self._subscriptions[topic_filter] = [
            (s, granted if s.client_id == session.client_id else q) for s, q in self._subscriptions[topic_filter]
        ]
        self._subtree.add(session.client_id, topic_filter, granted)
        return granted

    def _del_subscription(self, a_filter: str, session: Session) -> int:
        deleted: int = super()._del_subscription(a_filter, session)
        if deleted and session.client_id is not None:
            self._subtree.remove(session.client_id, a_filter)
            if not self._subscriptions.get(a_filter, True):
                del self._subscriptions[a_filter]
        return deleted

    async def _del_all_subscriptions(self, session: Session) -> None:
        """The client's own filters from the index, not a walk over every filter in the broker."""
        if session.client_id is None:
            return
        gone = session.client_id
        for topic_filter in self._subtree.remove_client(gone):
            remaining = [(s, q) for s, q in self._subscriptions.get(topic_filter, []) if s.client_id != gone]
            if remaining:
                self._subscriptions[topic_filter] = remaining
            else:
                self._subscriptions.pop(topic_filter, None)

    def _queue_offline(self, session: Session, topic: str, data: bytes, qos: int) -> None:
        queue = session.retained_messages
        if queue.qsize() >= self.settings.max_queued_per_session:
            queue.get_nowait()
            self._throttled.log(logging.WARNING, f"offline-full:{session.client_id}",
                                "offline queue of %s is full (%d): dropped its oldest message", session.client_id,
                                self.settings.max_queued_per_session)
        msg = OutgoingApplicationMessage(None, topic, qos, data, False)
        assert msg.direction == OUTGOING
        queue.put_nowait(msg)

    # ---- revocation (fix 6: a revoked certificate loses its live connection, not only its next one) ---------

    async def start(self) -> None:
        await super().start()
        if not getattr(self, "_gc_tuned", False):
            self._gc_tuned = True
            gc_tuning.install()
        if isinstance(self.authenticator, CertAuthenticator):
            self._revocation_task = asyncio.create_task(self._enforce_revocations())

    async def shutdown(self) -> None:
        self._closing = True
        task = getattr(self, "_revocation_task", None)
        if task is not None:
            task.cancel()
        try:
            await super().shutdown()
        finally:
            if getattr(self, "_gc_tuned", False):
                self._gc_tuned = False
                gc_tuning.uninstall()

    async def _enforce_revocations(self) -> None:
        assert isinstance(self.authenticator, CertAuthenticator)
        while True:
            await asyncio.sleep(REVOCATION_CHECK_S)
            try:
                revoked = self.authenticator.revoked()
                for client_id, (session, handler) in list(self._sessions.items()):
                    cert = session.attributes.get(_CERT_ATTR)
                    if isinstance(cert, PeerCert) and cert.serial in revoked and session.transitions.is_connected():
                        log.warning("certificate %x of %s revoked: closing its connection", cert.serial, client_id)
                        await handler.handle_connection_closed()
                        await handler.stop()
            except Exception:  # a damaged list or a racing disconnect must not end enforcement
                log.exception("revocation check failed; retrying")

    # ---- introspection for tests and metrics ------------------------------------------------------------

    def connected_clients(self) -> list[str]:
        return [cid for cid, (s, _) in self._sessions.items() if s.transitions.state == "connected"]

    def snapshot(self) -> dict[str, Any]:
        return {
            "sessions": len(self._sessions),
            "connected": len(self.connected_clients()),
            "retained": len(self._retained_messages),
            "subscriptions": sum(len(v) for v in self._subscriptions.values()),
            "refused_connections": self.refused_connections,
            "ts": time.time(),
        }

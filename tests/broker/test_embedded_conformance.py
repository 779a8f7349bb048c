"""MQTT 3.1.1 conformance of the embedded broker, each scenario run against Mosquitto too (issue 17 item 6).

The three cases a third-party conformance suite failed on the embedded broker, rebuilt here from the spec:
keep-alive expiry of a silent client while another connects with keep-alive 0 (§3.1.2.10: 0 turns the mechanism
off), offline queueing for a persistent session (§3.1.2.4: QoS 1 and 2 messages for a disconnected session are
stored), and redelivery of unacknowledged QoS 1 and QoS 2 messages after a reconnect (§4.4: PUBLISH with DUP=1
when no PUBACK/PUBREC came, PUBREL when PUBREC came but no PUBCOMP). And `--allow-anonymous`, which serves every
topic on both brokers. paho-mqtt is the well-behaved client; `tests.integration.rawmqtt` the one that stays silent
and withholds acknowledgements. Brokers run as their own processes (tests/integration/conftest.py).
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from broker import mosquitto
from broker.wire import topics
from tests.integration.conftest import BrokerUnderTest, free_port, make_auth, require_binary, wait_port
from tests.integration.rawmqtt import PUBLISH, Packet, RawClient

pytestmark = pytest.mark.integration

PUBREC, PUBREL, PUBCOMP = 5, 6, 7
COORD = "coordinator@test"
OTHER = "coordinator@other"


class AnonymousBroker(BrokerUnderTest):
    """The same two brokers started in their development mode, anonymous clients admitted."""

    def start(self) -> None:
        if self.kind == "embedded":
            argv = [sys.executable, "-m", "cloudless", "--log-level", "WARNING", "broker", "--host", self.host,
                    "--port", str(self.port), "--allow-anonymous"]
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=open(self.workdir / "broker.log", "ab"))
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline().decode()
            assert "listening on" in line, f"embedded broker did not start: {line!r}; see {self.workdir}/broker.log"
            self.port = int(line.rsplit(":", 1)[1])
            return
        binary = require_binary("mosquitto")
        self.port = self.port or free_port()
        settings = mosquitto.MosquittoSettings(
            out_dir=self.workdir / "mosquitto", host=self.host, port=self.port, allow_anonymous=True,
            run_as_user="root" if os.geteuid() == 0 else None, persistence_dir=self.workdir / "mosq-data",
        )
        mosquitto.write(settings, None)
        self.proc = subprocess.Popen([binary, "-c", str(settings.out_dir / mosquitto.CONF_FILE)],
                                     stdout=open(self.workdir / "broker.log", "ab"), stderr=subprocess.STDOUT)
        wait_port(self.host, self.port)


@pytest.fixture(params=["embedded", "mosquitto"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BrokerUnderTest]:
    b = BrokerUnderTest(kind=request.param, workdir=tmp_path)
    b.passwords = make_auth(tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(params=["embedded", "mosquitto"])
def anonymous_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BrokerUnderTest]:
    b = AnonymousBroker(kind=request.param, workdir=tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.stop()


class PahoClient:
    """A paho client on its own network thread that records what it receives (and its CONNACK)."""

    def __init__(self, broker: BrokerUnderTest, user: str | None, *, client_id: str | None = None,
                 clean: bool = True, keepalive: int = 60) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id or user or "anon",
                                  clean_session=clean, protocol=paho.MQTTv311)
        if user is not None:
            self.client.username_pw_set(user, broker.passwords[user])
        self.messages: list[paho.MQTTMessage] = []
        self.connack: list[int] = []
        self.disconnected = threading.Event()
        self.client.on_message = lambda _c, _u, m: self.messages.append(m)
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self.connack.append(rc.value)
        self.client.on_disconnect = lambda *_: self.disconnected.set()
        self.broker, self.keepalive = broker, keepalive

    def connect(self, timeout: float = 5.0) -> None:
        self.client.connect(self.broker.host, self.broker.port, keepalive=self.keepalive)
        self.client.loop_start()
        wait_for(lambda: bool(self.connack), timeout, "CONNACK")
        assert self.connack == [0], f"refused: {self.connack}"

    def subscribe(self, topic_filter: str, qos: int) -> None:
        granted: list[int] = []
        self.client.on_subscribe = lambda _c, _u, _m, codes, _p: granted.extend(c.value for c in codes)
        self.client.subscribe(topic_filter, qos)
        wait_for(lambda: bool(granted), 5.0, f"SUBACK for {topic_filter}")
        assert granted[0] <= 2, f"{topic_filter} refused ({granted})"

    def publish(self, topic: str, payload: bytes, qos: int) -> None:
        self.client.publish(topic, payload, qos).wait_for_publish(5.0)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_for(pred: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def send(raw: RawClient, ptype: int, pid: int, flags: int = 0) -> None:
    raw.sock.sendall(bytes([(ptype << 4) | flags, 2]) + struct.pack("!H", pid))


def packets(raw: RawClient, duration: float) -> list[Packet]:
    out: list[Packet] = []
    deadline = time.monotonic() + duration
    while (left := deadline - time.monotonic()) > 0:
        p = raw.read(timeout=left)
        if p is None:
            break
        out.append(p)
    return out


def test_silent_client_expires_while_a_keepalive_0_client_connects(broker: BrokerUnderTest) -> None:
    """Client A (keep-alive 2 s, a will) goes silent; B connects with keep-alive 0 right after, subscribes to A's
    will topic and sends nothing: B gets its CONNACK, then A's will after ~3 s, and is itself never cut off."""
    will_topic = topics.node_status("C")
    silent, rc = broker.raw("C", keepalive=2, will=(will_topic, b"keepalive expiry", 0, False))
    try:
        assert rc == 0
        watcher = PahoClient(broker, COORD, keepalive=0)
        watcher.connect()
        try:
            watcher.subscribe(will_topic, 2)
            wait_for(lambda: len(watcher.messages) == 1, 10.0, "the silent client's will")
            assert watcher.messages[0].payload == b"keepalive expiry"
            time.sleep(3.0)  # keep-alive 0: the broker never expects a packet from B (§3.1.2.10)
            assert not watcher.disconnected.is_set(), "a keep-alive 0 client was disconnected"
            assert len(watcher.messages) == 1
        finally:
            watcher.stop()
    finally:
        silent.close()


def test_persistent_session_queues_qos1_and_qos2_while_offline(broker: BrokerUnderTest) -> None:
    """A clean_session=0 client subscribed to a wildcard at QoS 2 disconnects; QoS 0/1/2 messages published
    meanwhile; on reconnect it gets the QoS 1 and QoS 2 ones (QoS 0 may be dropped, §3.1.2.4), at their QoS."""
    sub = PahoClient(broker, OTHER, clean=False)
    sub.connect()
    sub.subscribe(f"{topics.ROOT}/node/+/cmd", 2)
    sub.stop()
    pub = PahoClient(broker, COORD)
    pub.connect()
    for qos in (0, 1, 2):
        pub.publish(topics.node_cmd(f"n{qos}"), f"qos {qos}".encode(), qos)
    pub.stop()
    back = PahoClient(broker, OTHER, clean=False)
    back.connect()
    try:
        wait_for(lambda: len(back.messages) >= 2, 10.0, "queued messages")
        time.sleep(1.0)
        got = {m.payload: m.qos for m in back.messages}
        assert {b"qos 1": 1, b"qos 2": 2}.items() <= got.items(), got
        assert set(got) <= {b"qos 0", b"qos 1", b"qos 2"} and len(back.messages) == len(got), "duplicates"
        assert not any(m.retain for m in back.messages), "queued messages are not retained ones (§3.3.1.9)"
    finally:
        back.stop()


@pytest.mark.parametrize("goodbye", ["disconnect", "abort"])
def test_unacknowledged_qos1_and_qos2_are_redelivered_after_reconnect(broker: BrokerUnderTest,
                                                                      goodbye: str) -> None:
    """The subscriber withholds PUBACK and PUBREC, then leaves (with DISCONNECT, or by dropping the socket); on
    reconnect both PUBLISHes come again with DUP=1 (§4.4); once acknowledged, never again."""
    sub, rc = broker.raw("A", clean=False)
    assert rc == 0
    assert sub.subscribe(topics.node_cmd("A"), qos=2) == 2
    pub = PahoClient(broker, COORD)
    pub.connect()
    pub.publish(topics.node_cmd("A"), b"one", 1)
    pub.publish(topics.node_cmd("A"), b"two", 2)
    pub.stop()
    first = [p for p in packets(sub, 1.5) if p.ptype == PUBLISH]
    assert sorted((p.publish_fields()[2], p.qos) for p in first) == [(b"one", 1), (b"two", 2)]
    sub.disconnect() if goodbye == "disconnect" else sub.close()
    time.sleep(0.3)
    again, rc = broker.raw("A", clean=False)
    try:
        assert rc == 0
        resent = [p for p in packets(again, 2.0) if p.ptype == PUBLISH]
        assert sorted((p.publish_fields()[2], p.qos, p.dup) for p in resent) == [
            (b"one", 1, True), (b"two", 2, True)], [(p.publish_fields(), p.flags) for p in resent]
        for p in resent:
            pid = p.publish_fields()[1]
            assert pid is not None
            send(again, 4 if p.qos == 1 else PUBREC, pid)
        rel = [p for p in packets(again, 1.0) if p.ptype == PUBREL]
        assert len(rel) == 1
        send(again, PUBCOMP, struct.unpack("!H", rel[0].body[:2])[0])
        time.sleep(0.3)
        again.disconnect()
        third, rc = broker.raw("A", clean=False)
        try:
            assert rc == 0
            assert [p for p in packets(third, 1.5) if p.ptype in (PUBLISH, PUBREL)] == []
        finally:
            third.close()
    finally:
        again.close()


def test_qos2_pubrel_is_resent_when_pubcomp_never_came(broker: BrokerUnderTest) -> None:
    """PUBREC was sent, PUBCOMP was not: after a reconnect the broker resends PUBREL, not the PUBLISH (§4.4)."""
    sub, rc = broker.raw("B", clean=False)
    assert rc == 0
    assert sub.subscribe(topics.node_cmd("B"), qos=2) == 2
    pub = PahoClient(broker, COORD)
    pub.connect()
    pub.publish(topics.node_cmd("B"), b"exactly once", 2)
    pub.stop()
    [publish] = [p for p in packets(sub, 1.5) if p.ptype == PUBLISH]
    pid = publish.publish_fields()[1]
    assert pid is not None
    send(sub, PUBREC, pid)
    assert [p.ptype for p in packets(sub, 1.0)] == [PUBREL]
    sub.close()  # no PUBCOMP
    time.sleep(0.3)
    again, rc = broker.raw("B", clean=False)
    try:
        assert rc == 0
        after = packets(again, 2.0)
        assert [(p.ptype, struct.unpack("!H", p.body[:2])[0]) for p in after] == [(PUBREL, pid)]
        send(again, PUBCOMP, pid)
    finally:
        again.close()


def test_allow_anonymous_serves_every_topic(anonymous_broker: BrokerUnderTest) -> None:
    """`--allow-anonymous` means what its help says: any topic, for anyone (the suites' own TopicA/B tree)."""
    reader = PahoClient(anonymous_broker, None, client_id="reader")
    reader.connect()
    writer = PahoClient(anonymous_broker, None, client_id="writer")
    writer.connect()
    try:
        reader.subscribe("TopicA/#", 1)
        reader.subscribe("+/C", 1)
        for topic in ("TopicA", "TopicA/B", "Topic/C", topics.node_desired("x")):
            writer.publish(topic, topic.encode(), 1)
        wait_for(lambda: len(reader.messages) == 3, 5.0, "three deliveries")
        time.sleep(0.3)
        assert sorted(m.topic for m in reader.messages) == ["Topic/C", "TopicA", "TopicA/B"]
    finally:
        writer.stop()
        reader.stop()


def test_persistent_session_resumed_at_once_after_disconnect_gets_live_messages(broker: BrokerUnderTest) -> None:
    """A client that reconnects (clean_session=0) the moment after its DISCONNECT, as the suites do: the old
    connection's teardown must not mark the resumed session offline (its messages would go to the offline queue
    and arrive only at the next reconnect)."""
    raw, rc = broker.raw("D", clean=False)
    assert rc == 0
    assert raw.subscribe(topics.node_cmd("D"), qos=1) == 1
    for _ in range(5):
        raw.disconnect()
        raw, rc = broker.raw("D", clean=False)
        assert rc == 0
    try:
        pub = PahoClient(broker, COORD)
        pub.connect()
        pub.publish(topics.node_cmd("D"), b"live", 1)
        pub.stop()
        got = [p for p in packets(raw, 2.0) if p.ptype == PUBLISH]
        assert [p.publish_fields()[2] for p in got] == [b"live"]
    finally:
        raw.close()


def test_suite_keepalive_and_offline_flows_in_anonymous_mode(anonymous_broker: BrokerUnderTest) -> None:
    """The conformance suites' own flows and topics, anonymous: keep-alive expiry (a silent client with a will, a
    keep-alive 0 watcher that must get its CONNACK) and offline queueing for a wildcard persistent session."""
    b = anonymous_broker
    silent, rc = b.raw(None, keepalive=2, will=("/TopicA", b"keepalive expiry", 0, False))
    assert rc == 0
    watcher = PahoClient(b, None, client_id="myclientid2", keepalive=0)
    watcher.connect()
    try:
        watcher.subscribe("/TopicA", 2)
        wait_for(lambda: len(watcher.messages) == 1, 10.0, "the will after keep-alive expiry")
    finally:
        watcher.stop()
        silent.close()
    offline = PahoClient(b, None, client_id="myclientid", clean=False)
    offline.connect()
    offline.subscribe("+/+", 2)
    offline.stop()
    pub = PahoClient(b, None, client_id="myclientid2")
    pub.connect()
    for qos, topic in enumerate(("TopicA/B", "Topic/C", "TopicA/C")):
        pub.publish(topic, f"qos {qos}".encode(), qos)
    pub.stop()
    back = PahoClient(b, None, client_id="myclientid", clean=False)
    back.connect()
    try:
        wait_for(lambda: len(back.messages) >= 2, 10.0, "queued messages")
        time.sleep(1.0)
        assert len(back.messages) in (2, 3), [m.payload for m in back.messages]
    finally:
        back.stop()


def test_unsubscribe_and_resubscribe_change_what_is_delivered(broker: BrokerUnderTest) -> None:
    """UNSUBSCRIBE stops delivery (§3.10.4); a new SUBSCRIBE to the same filter replaces its QoS (§3.8.4)."""
    sub = PahoClient(broker, OTHER)
    sub.connect()
    pub = PahoClient(broker, COORD)
    pub.connect()
    try:
        node_cmds = f"{topics.ROOT}/node/+/cmd"
        sub.subscribe(node_cmds, 2)
        sub.subscribe(node_cmds, 1)  # same filter, lower QoS: replaces the first
        pub.publish(topics.node_cmd("x"), b"first", 2)
        wait_for(lambda: len(sub.messages) == 1, 5.0, "delivery")
        assert sub.messages[0].qos == 1
        done: list[int] = []
        sub.client.on_unsubscribe = lambda *_: done.append(1)
        sub.client.unsubscribe(node_cmds)
        wait_for(lambda: bool(done), 5.0, "UNSUBACK")
        pub.publish(topics.node_cmd("x"), b"second", 1)
        time.sleep(0.5)
        assert [m.payload for m in sub.messages] == [b"first"]
    finally:
        pub.stop()
        sub.stop()

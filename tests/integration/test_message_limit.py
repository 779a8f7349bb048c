"""Neither broker keeps a message over the wire's cap (issue 16, item 7): a 3 MiB retained publish disconnects its
sender and is never delivered or retained; a message under the cap still is. Run against both brokers."""

from __future__ import annotations

import psutil
import pytest

from broker.embedded_session import MAX_PACKET_BYTES
from broker.wire import MAX_PAYLOAD_BYTES
from tests.integration.conftest import BrokerUnderTest
from tests.integration.rawmqtt import PUBLISH, _packet, _str

pytestmark = pytest.mark.integration
TOPIC = "cloudless/v1/node/A/observed"


def publish_retained(broker: BrokerUnderTest, size: int) -> bool:
    """Publish `size` bytes retained as node A; True when the broker kept the connection (it took the message)."""
    client, rc = broker.raw("A")
    assert rc == 0
    try:
        client.sock.sendall(_packet(PUBLISH, 0x01, _str(TOPIC) + b"x" * size))
        client.ping()
        try:
            return client.read(timeout=5) is not None  # PINGRESP: still connected
        except (TimeoutError, EOFError, ConnectionError):
            return False
    except (BrokenPipeError, ConnectionResetError):
        return False  # refused while we were still sending
    finally:
        client.close()


def retained_size(broker: BrokerUnderTest) -> int | None:
    client, rc = broker.raw("coordinator@test")
    assert rc == 0
    try:
        client.subscribe("cloudless/v1/node/A/#", qos=0)
        got = [p for p in client.publishes(2.0) if p.ptype == PUBLISH]
        return len(got[-1].body) if got else None
    finally:
        client.close()


def test_a_message_over_the_cap_is_refused_and_never_retained(broker: BrokerUnderTest) -> None:
    rss_before = psutil.Process(broker.proc.pid).memory_info().rss if broker.proc else 0
    assert not publish_retained(broker, 3 * 1024 * 1024), "the broker took a 3 MiB message"
    assert retained_size(broker) is None
    if broker.proc is not None:  # nothing of it stayed in the broker's memory
        assert psutil.Process(broker.proc.pid).memory_info().rss - rss_before < MAX_PACKET_BYTES
    assert publish_retained(broker, MAX_PAYLOAD_BYTES // 2)  # under the cap: taken and retained
    size = retained_size(broker)
    assert size is not None and size >= MAX_PAYLOAD_BYTES // 2

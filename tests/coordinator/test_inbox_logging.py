"""Malformed node messages are logged throttled (issue 16, Low): 5,000 bad messages from one node are a handful of
lines with counts, not 5,000; a topic cannot forge a log line."""

from __future__ import annotations

import logging

import pytest

from broker.client import Message
from coordinator.inbox import Inbox


class Quiet:
    def mqtt(self, *_a: object) -> None:
        pass


def test_a_flood_of_bad_messages_is_a_few_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    inbox = Inbox.__new__(Inbox)  # only the decoder is exercised: no cluster, journal or broker needed
    inbox.metrics = Quiet()  # type: ignore[assignment]
    from broker.listeners import ThrottledLog
    from coordinator import inbox as module

    inbox._bad = ThrottledLog(module.log)
    caplog.set_level(logging.WARNING, logger="coordinator.inbox")
    for _ in range(5000):
        assert inbox._decode(Message("cloudless/v1/node/pi/heartbeat", b"\x00garbage", 0, False)) is None
    assert 1 <= len(caplog.records) <= 3
    inbox._decode(Message("cloudless/v1/node/x\nFAKE LINE/status", b"\x00", 0, False))
    assert all("\nFAKE" not in r.getMessage() for r in caplog.records)

"""The broker package's error hierarchy.

One small hierarchy per package (STYLE §4): protocol violations, I/O failures and bugs raise; expected "no"s
are values. No paho or amqtt exception escapes an adapter: each is converted here at the boundary.
"""

from __future__ import annotations


class BrokerPackageError(Exception):
    """Base of every error raised by the `broker` package."""


class WireError(BrokerPackageError):
    """A payload or message violates the wire contract.

    The single error type out of `decode()` (and out of `encode()`, where it means a bug on our side).
    `path` names the offending field (`body.replicas[2].image`) so logs and callers can say what was wrong.
    """

    def __init__(self, message: str, *, path: str = "") -> None:
        self.path = path
        self.reason = message
        super().__init__(f"{path}: {message}" if path else message)


class MqttError(BrokerPackageError):
    """The MQTT client adapter failed (not connected, refused, queue full, library failure)."""


class NotConnected(MqttError):
    """An operation needed a live broker connection and there was none."""


class OutboxFull(MqttError):
    """A state message could not be queued while disconnected: the outbox holds only state messages and is full."""


class ConnectionRefused(MqttError):
    """The broker answered CONNECT with a refusal (bad credentials, not authorized, ...)."""

    def __init__(self, message: str, *, code: int) -> None:
        self.code = code
        super().__init__(message)


class BrokerConfigError(BrokerPackageError):
    """Broker settings (ports, TLS files, ACL rules, passwords) are invalid; the message says which and why."""

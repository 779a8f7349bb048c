"""What an MQTT client is configured with and hands to its handlers (values, no I/O): the connection settings
(`MqttSettings`, `ClientTls`, `Will`), the redacted `Secret`, and the `Message` a handler receives.
`broker.client.MqttClient` is the adapter that uses them; `broker.client` re-exports every name here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from broker.backoff import Backoff

if TYPE_CHECKING:
    from pathlib import Path


class Secret(str):
    """A string whose repr never shows the value (passwords in settings objects end up in logs)."""

    def __repr__(self) -> str:
        return "Secret('***')"


@dataclass(frozen=True, slots=True)
class ClientTls:
    ca_file: Path | None = None  # None: the system trust store
    cert_file: Path | None = None
    key_file: Path | None = None
    server_hostname: str | None = None  # override SNI/verification name (e.g. connecting by IP)


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True)
class MqttSettings:
    host: str
    port: int
    client_id: str
    username: str | None = None
    password: Secret | None = None
    tls: ClientTls | None = None
    keepalive_s: int = 30
    clean_session: bool = True
    will: Will | None = None
    backoff: Backoff = field(default_factory=Backoff)
    connect_timeout_s: float = 10.0
    outbox_max_messages: int = 1000
    outbox_max_bytes: int = 4 * 1024 * 1024
    max_inflight: int = 100


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool


Handler = Callable[[Message], None]
ConnectHook = Callable[[], Awaitable[None]]

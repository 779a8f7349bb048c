"""The coordinator's own certificates (its MQTT client certificate, its API server certificate) are renewed at two
thirds of their lifetime and loaded where they are used without a restart: checked by real TLS handshakes."""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path

import pytest

from broker.client import MqttClient, MqttSettings
from coordinator.cli import _pki_files, renew_own_certificates
from coordinator.errors import CoordinatorError
from coordinator.identity import IdentityConfig, IdentityService
from coordinator.store import SqliteStore

DAY = 86400.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> tuple[float, float]:
    """notAfter of (the server's certificate as the client saw it, the client's as the server saw it)."""
    seen: dict[str, float] = {}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peercert")
        seen["client"] = ssl.cert_time_to_seconds(peer["notAfter"]) if peer else 0.0
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx,
                                                       server_hostname="127.0.0.1")
        seen["server"] = ssl.cert_time_to_seconds(writer.get_extra_info("peercert")["notAfter"])
        await reader.read()
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
    return seen["server"], seen["client"]


async def test_own_certificates_are_renewed_when_due_and_used_at_once(tmp_path: Path) -> None:
    real_now = time.time()
    clock = Clock(real_now - 300 * DAY)  # issued 300 days ago: still valid, past two thirds of a year
    store = SqliteStore(":memory:")
    identity = IdentityService(tmp_path / "pki", store, IdentityConfig(), clock=clock)
    tls, api_ssl = _pki_files(identity, tmp_path / "pki", "c1", ["127.0.0.1"])
    mqtt = MqttClient(MqttSettings("127.0.0.1", 1, client_id="coordinator@c1", tls=tls))
    forward = ssl.create_default_context(cafile=str(tmp_path / "pki" / "ca.pem"))
    forward.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    # the server side of a handshake that asks the client for its certificate (as the broker and the API do)
    asks = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tmp_path / "pki" / "ca.pem"))
    asks.load_cert_chain(str(tmp_path / "pki" / "api.pem"), str(tmp_path / "pki" / "api.key"))
    asks.verify_mode = ssl.CERT_REQUIRED

    old_server, old_client = await _handshake(api_ssl, forward)
    assert old_server < real_now + 70 * DAY and old_client < real_now + 70 * DAY

    clock.now = real_now - 200 * DAY  # not due yet (a third of the lifetime has passed... 100 days)
    assert identity.ensure_own_certs("c1", ["127.0.0.1"]) == set()

    clock.now = real_now
    renewed = await renew_own_certificates(identity, "c1", ["127.0.0.1"], mqtt=mqtt, api_ssl=api_ssl,
                                           forward_ssl=forward)
    assert renewed == {"client", "server"}
    new_server, new_client = await _handshake(api_ssl, forward)  # the same contexts, no restart
    assert new_server > real_now + 300 * DAY and new_client > real_now + 300 * DAY
    assert mqtt._ssl_ctx is not None
    _, mqtt_client = await _handshake(asks, mqtt._ssl_ctx)  # the MQTT client's next connect
    assert mqtt_client > real_now + 300 * DAY
    assert await renew_own_certificates(identity, "c1", ["127.0.0.1"], mqtt=mqtt, api_ssl=api_ssl,
                                        forward_ssl=forward) == set()
    await store.close()


class FlakyMqtt:
    """An MQTT client whose first certificate reload fails (a file briefly unreadable)."""

    def __init__(self) -> None:
        self.reloads = 0

    def reload_certificate(self) -> None:
        self.reloads += 1
        if self.reloads == 1:
            raise OSError("cannot read the certificate (test)")


async def test_a_renewed_certificate_that_failed_to_load_is_loaded_next_time(tmp_path: Path) -> None:
    clock = Clock(time.time() - 300 * DAY)
    store = SqliteStore(":memory:")
    identity = IdentityService(tmp_path / "pki", store, IdentityConfig(), clock=clock)
    _pki_files(identity, tmp_path / "pki", "c1", ["127.0.0.1"])
    clock.now = time.time()
    mqtt, unloaded = FlakyMqtt(), set[str]()
    with pytest.raises(CoordinatorError, match="client:mqtt"):
        await renew_own_certificates(identity, "c1", [], mqtt=mqtt, api_ssl=None, forward_ssl=None,  # type: ignore[arg-type]
                                     unloaded=unloaded)
    assert unloaded == {"client:mqtt"}
    assert await renew_own_certificates(identity, "c1", [], mqtt=mqtt, api_ssl=None, forward_ssl=None,  # type: ignore[arg-type]
                                        unloaded=unloaded) == set()  # nothing due, but loaded now
    assert unloaded == set() and mqtt.reloads == 2
    await store.close()


def test_a_key_that_is_not_the_certificates_pair_makes_it_due(tmp_path: Path) -> None:
    """A crash between writing the new key and the new certificate leaves a mismatched pair: issue again."""
    from coordinator.pki import key_pem, new_key

    identity = IdentityService(tmp_path / "pki", SqliteStore(":memory:"), IdentityConfig(), clock=time.time)
    identity.ensure_own_certs("c1", [])
    cert, key = tmp_path / "pki" / "coordinator@c1.pem", tmp_path / "pki" / "coordinator@c1.key"
    assert not identity.local_cert_due(cert, key)
    key.write_bytes(key_pem(new_key()))
    assert identity.local_cert_due(cert, key)
    assert identity.ensure_own_certs("c1", []) == {"client"} and not identity.local_cert_due(cert, key)

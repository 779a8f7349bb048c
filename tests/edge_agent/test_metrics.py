"""The agent's metrics: the exposition parses with prometheus-client's own parser and says what the sample says;
the listener serves /metrics only, on the address asked, and survives hostile clients."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge_agent.errors import ConfigError
from edge_agent.metrics import (
    MAX_CONNECTIONS,
    Counters,
    MetricsListener,
    ReplicaSample,
    Sample,
    default_listen,
    parse_listen,
    render,
)


def sample(**kw: object) -> Sample:
    counters = Counters(mqtt_connects=3)
    counters.probe_failed("web-0", "liveness")
    counters.probe_failed("web-0", "liveness")
    base: dict[str, object] = dict(
        node_id="pi-1", profile="raspberry-pi-4", runtime="podman", cpu_percent=12.5, memory_used_bytes=1 << 30,
        memory_total_bytes=4 << 30, battery_percent=None, charging=None, temperatures_c={"cpu": 51.5, 'we"ird\n': 1},
        schedulable=True, mqtt_connected=True, counters=counters, state_writes=7, desired_generation=4,
        desired_epoch=2, replicas=(ReplicaSample("web-0", True, True, 2, 3.5, 50 << 20),
                                   ReplicaSample("web-1", True, False, 0), ReplicaSample("db-0", False, False, 5)))
    base.update(kw)
    return Sample(**base)  # type: ignore[arg-type]


def parsed(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_exposition_parses_and_matches_the_sample() -> None:
    m = parsed(render(sample()))
    assert m[("cloudless_agent_info", (("node", "pi-1"), ("profile", "raspberry-pi-4"), ("runtime", "podman")))] == 1
    assert m[("cloudless_agent_cpu_usage_percent", ())] == 12.5
    assert m[("cloudless_agent_memory_total_bytes", ())] == 4 << 30
    assert m[("cloudless_agent_temperature_celsius", (("sensor", "cpu"),))] == 51.5
    assert m[("cloudless_agent_temperature_celsius", (("sensor", 'we"ird\n'),))] == 1  # escaped, round-trips
    assert m[("cloudless_agent_mqtt_reconnects_total", ())] == 2
    assert m[("cloudless_agent_probe_failures_total", (("probe", "liveness"), ("replica", "web-0")))] == 2
    assert m[("cloudless_agent_replica_restarts_total", (("replica", "db-0"),))] == 5
    assert m[("cloudless_agent_replica_memory_bytes", (("replica", "web-0"),))] == 50 << 20
    assert ("cloudless_agent_replica_memory_bytes", (("replica", "web-1"),)) not in m  # unknown: absent, not 0
    assert m[("cloudless_agent_replicas", (("state", "ready"),))] == 1
    assert m[("cloudless_agent_replicas", (("state", "running"),))] == 1
    assert m[("cloudless_agent_replicas", (("state", "stopped"),))] == 1
    assert m[("cloudless_agent_local_state_writes_total", ())] == 7
    assert ("cloudless_agent_battery_percent", ()) not in m  # no battery: no series


def test_every_family_is_named_cloudless_with_help_and_type() -> None:
    text = render(sample(battery_percent=80.0, charging=True))
    families = list(text_string_to_metric_families(text))
    assert all(f.name.startswith(("cloudless_agent_", "cloudless_service_")) and f.documentation for f in families)
    assert parsed(text)[("cloudless_agent_battery_charging", ())] == 1


@pytest.mark.parametrize(("text", "expected"), [
    ("off", None), ("OFF", None), ("127.0.0.1:9471", ("127.0.0.1", 9471)), ("[::1]:0", ("::1", 0)),
    ("0.0.0.0:80", ("0.0.0.0", 80)),
])
def test_parse_listen(text: str, expected: tuple[str, int] | None) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["9471", ":9471", "host:port", "host:70000", "", "localhost:-1"])
def test_parse_listen_rejects_naming_the_flag(text: str) -> None:
    with pytest.raises(ConfigError, match="--metrics-listen"):
        parse_listen(text)


def test_defaults_loopback_or_off_on_phones() -> None:
    assert default_listen(phone=True) == "off"
    assert parse_listen(default_listen(phone=False)) == ("127.0.0.1", 9471)


async def _get(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return data


async def test_listener_serves_metrics_and_nothing_else() -> None:
    calls = []

    def render_now() -> str:
        calls.append(1)
        return render(sample())
    listener = MetricsListener(render_now)
    await listener.start("127.0.0.1", 0)
    try:
        assert listener.url == f"http://127.0.0.1:{listener.port}/metrics"
        ok = await _get(listener.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = ok.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200") and b"version=0.0.4" in head
        assert parsed(body.decode())[("cloudless_agent_cpu_usage_percent", ())] == 12.5
        assert (await _get(listener.port, b"GET /secrets HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.0 404")
        assert (await _get(listener.port, b"POST /metrics HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.0 405")
        # hostile: an endless header, garbage, a client that says nothing and leaves
        assert await _get(listener.port, b"GET /metrics " + b"a" * 20000) == b""
        assert (await _get(listener.port, b"\x00\xff\r\n\r\n")).startswith(b"HTTP/1.0 404")
        _, w = await asyncio.open_connection("127.0.0.1", listener.port)
        w.close()
        again = await _get(listener.port, b"GET /metrics HTTP/1.0\r\n\r\n")
        assert again.startswith(b"HTTP/1.0 200") and len(calls) == 2
    finally:
        await listener.close()


async def test_silent_connections_beyond_the_cap_are_closed_and_a_scrape_works_once_they_go() -> None:
    listener = MetricsListener(lambda: render(sample()))
    await listener.start("127.0.0.1", 0)
    silent = []
    try:
        for _ in range(MAX_CONNECTIONS):  # each holds a handler for up to READ_TIMEOUT_S
            silent.append(await asyncio.open_connection("127.0.0.1", listener.port))
        await asyncio.sleep(0.1)
        try:
            answer = await _get(listener.port, b"GET /metrics HTTP/1.0\r\n\r\n")
        except ConnectionError:  # closed before the request was written
            answer = b""
        assert answer == b"", "served past the cap"
        for _, w in silent:
            w.close()
        silent.clear()
        await asyncio.sleep(0.1)
        assert (await _get(listener.port, b"GET /metrics HTTP/1.0\r\n\r\n")).startswith(b"HTTP/1.0 200")
    finally:
        for _, w in silent:
            w.close()
        await listener.close()


def test_counters_of_replicas_gone_are_forgotten() -> None:
    counters = Counters()
    for rid in ("a", "b", "a"):
        counters.probe_failed(rid, "liveness")
    counters.probe_failed("b", "readiness")
    counters.forget_replicas_except({"a"})
    assert counters.probe_failures == {("a", "liveness"): 2}

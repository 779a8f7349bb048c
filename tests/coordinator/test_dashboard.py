"""The dashboard mirror and Home Assistant discovery payloads, field by field against HA's documented schema
(MQTT discovery: sensor / binary_sensor with device, unique_id, state_topic, availability)."""

from __future__ import annotations

import json

import pytest

from coordinator.dashboard import NodeSummary, WorkloadSummary, discovery, mirror, slug

NODE = NodeSummary(node_id="pi-kitchen.1", online=True, state="online", profile="raspberry-pi-4", arch="aarch64",
                   agent_version="0.1.0", cpu_percent=12.345, memory_percent=40.0, battery_percent=None,
                   temperature_c=51.2, replicas=2)
HA_SENSOR_KEYS = {"name", "unique_id", "default_entity_id", "state_topic", "value_template", "availability",
                  "device", "unit_of_measurement", "device_class", "state_class"}


def test_the_mirror_is_plain_json_per_topic() -> None:
    docs = mirror([NODE, NodeSummary("b", online=False, state="lost")],
                  [WorkloadSummary("default", "web", 3, 2, "progressing", "localhost/web:1")])
    node = json.loads(docs["cloudless/v1/dash/node/pi-kitchen.1"])
    assert node["online"] is True and node["cpu_percent"] == 12.3 and node["replicas"] == 2
    assert json.loads(docs["cloudless/v1/dash/workload/default/web"])["ready"] == 2
    assert (node["storage_quota_bytes"], node["storage_used_bytes"], node["storage_corrupt"]) == (None, None, 0)
    pi = json.loads(mirror([NodeSummary("pi", online=True, state="online", storage_quota_bytes=8 << 30,
                                        storage_used_bytes=3 << 20, storage_chunks=3, storage_corrupt=1)], [])[
        "cloudless/v1/dash/node/pi"])
    assert (pi["storage_quota_bytes"], pi["storage_used_bytes"], pi["storage_chunks"], pi["storage_corrupt"]) == (
        8 << 30, 3 << 20, 3, 1)
    assert json.loads(docs["cloudless/v1/dash/cluster"]) == {
        "nodes_online": 1, "nodes_total": 2, "workloads": 1, "replicas_desired": 3, "replicas_ready": 2}


def test_discovery_topics_follow_home_assistants_scheme() -> None:
    topics = sorted(discovery(NODE))
    assert topics == [
        "homeassistant/binary_sensor/cloudless_pi_kitchen_1/online/config",
        "homeassistant/sensor/cloudless_pi_kitchen_1/battery/config",
        "homeassistant/sensor/cloudless_pi_kitchen_1/cpu/config",
        "homeassistant/sensor/cloudless_pi_kitchen_1/memory/config",
        "homeassistant/sensor/cloudless_pi_kitchen_1/replicas/config",
        "homeassistant/sensor/cloudless_pi_kitchen_1/storage_used/config",
        "homeassistant/sensor/cloudless_pi_kitchen_1/temperature/config",
    ]


@pytest.mark.parametrize(("obj", "unit", "device_class", "field"), [
    ("cpu", "%", None, "cpu_percent"),
    ("memory", "%", None, "memory_percent"),
    ("battery", "%", "battery", "battery_percent"),
    ("temperature", "°C", "temperature", "temperature_c"),
    ("replicas", None, None, "replicas"),
    ("storage_used", "B", "data_size", "storage_used_bytes"),
], ids=["cpu", "memory", "battery", "temperature", "replicas", "storage_used"])
def test_sensor_payloads_field_by_field(obj: str, unit: str | None, device_class: str | None, field: str) -> None:
    cfg = json.loads(discovery(NODE)[f"homeassistant/sensor/cloudless_pi_kitchen_1/{obj}/config"])
    assert set(cfg) <= HA_SENSOR_KEYS
    assert cfg["unique_id"] == f"cloudless_pi-kitchen.1_{obj}"
    assert cfg["default_entity_id"] == f"sensor.cloudless_pi_kitchen_1_{obj}"
    assert cfg["state_topic"] == "cloudless/v1/dash/node/pi-kitchen.1"
    assert cfg["value_template"] == "{{ value_json." + field + " }}"
    assert cfg.get("unit_of_measurement") == unit
    assert cfg.get("device_class") == device_class
    assert cfg["state_class"] == "measurement"
    assert cfg["device"] == {"identifiers": ["cloudless_pi-kitchen.1"], "name": "Cloudless pi-kitchen.1",
                             "manufacturer": "Cloudless", "model": "raspberry-pi-4", "sw_version": "0.1.0"}
    (avail,) = cfg["availability"]
    assert avail == {"topic": "cloudless/v1/dash/node/pi-kitchen.1",
                     "value_template": "{{ 'online' if value_json.online else 'offline' }}",
                     "payload_available": "online", "payload_not_available": "offline"}


def test_the_online_binary_sensor() -> None:
    cfg = json.loads(discovery(NODE)["homeassistant/binary_sensor/cloudless_pi_kitchen_1/online/config"])
    assert cfg["device_class"] == "connectivity"
    assert (cfg["payload_on"], cfg["payload_off"]) == ("ON", "OFF")
    assert cfg["value_template"] == "{{ 'ON' if value_json.online else 'OFF' }}"
    assert cfg["default_entity_id"] == "binary_sensor.cloudless_pi_kitchen_1_online"


@pytest.mark.parametrize(("node", "expected"), [("Pi-4", "pi_4"), ("a.b_c", "a_b_c")], ids=["dash-case", "dots"])
def test_slug(node: str, expected: str) -> None:
    assert slug(node) == expected

"""What a device-class profile says, as frozen values.

A profile is parsed and validated once (`firmware_profiles.schema`) and then passed around read-only; these
classes do not re-validate, so build them through `parse_profile()` / the loader rather than by hand.
Mappings are exposed read-only (`MappingProxyType`) and left out of hashing so a `Profile` stays hashable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

# Canonical machine names (Linux `uname -m`), and what other platforms call the same thing.
ARCHES = frozenset({"x86_64", "i686", "aarch64", "armv7l", "armv6l", "riscv64"})
ARCH_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "amd64": "x86_64",  # Windows, BSD
        "x64": "x86_64",
        "arm64": "aarch64",  # macOS, Windows
        "armv8": "aarch64",
        "armv8l": "armv7l",  # 32-bit userland on a 64-bit CPU (common in Termux): runs armv7 binaries
        "armhf": "armv7l",
        "armv7": "armv7l",
        "armv6": "armv6l",
        "i386": "i686",
        "i486": "i686",
        "i586": "i686",
        "x86": "i686",
    }
)


def _empty_labels() -> Mapping[str, str]:
    return MappingProxyType({})


def _no_limits() -> Mapping[str, float]:
    return MappingProxyType({})


def canonical_arch(machine: str) -> str:
    """`machine` (as platform.machine() reports it) under its canonical name; unknown names pass through."""
    lowered = machine.strip().lower()
    return ARCH_ALIASES.get(lowered, lowered)


class Runtime(StrEnum):
    """How the agent runs workloads on this device class."""

    PODMAN = "podman"  # rootless Podman containers (Linux)
    PROCESS = "process"  # plain supervised processes (Termux: stock Android kernels lack the namespaces)


class GateAction(StrEnum):
    """What happens to running workloads while a gate (battery, charging, temperature) is tripped."""

    STOP = "stop"  # stop them: the device owner's battery/hardware comes first
    KEEP = "keep"  # keep them running; only new placements stop (the node is unschedulable)


@dataclass(frozen=True, slots=True)
class Detection:
    """Rules that recognise the device class; every rule that is set must hold. Unset rules are ignored.

    A rule about a fact the probe could not read (`None`) does not hold. A profile with no rules at all is
    never detected automatically; it can still be selected by name. Among matching profiles the highest
    `priority` wins, then the alphabetically first name.
    """

    arch: tuple[str, ...] = ()  # canonical machine names (x86_64, aarch64, armv7l, ...); any of them
    device_tree_model: tuple[str, ...] = ()  # case-insensitive substrings of /proc/device-tree/model; any
    termux: bool | None = None  # TERMUX_VERSION present (True) / absent (False)
    battery: bool | None = None  # a system battery is present (True) / absent (False)
    os: tuple[str, ...] = ()  # platform.system(), lower case: linux, darwin, ...; any of them
    min_memory_bytes: int | None = None
    max_memory_bytes: int | None = None
    priority: int = 0

    @property
    def has_rules(self) -> bool:
        return bool(
            self.arch
            or self.device_tree_model
            or self.os
            or self.termux is not None
            or self.battery is not None
            or self.min_memory_bytes is not None
            or self.max_memory_bytes is not None
        )


@dataclass(frozen=True, slots=True)
class Reserved:
    """Resources kept back for the device owner; the scheduler never places into them."""

    cpu_millicores: int
    memory_bytes: int


@dataclass(frozen=True, slots=True)
class BatteryPolicy:
    """When battery-powered work is allowed.

    `require_charging=False` (laptops): work stops when the battery is below `min_percent` and not charging.
    `require_charging=True` (phones): work needs the charger *and* at least `min_percent`.
    """

    min_percent: float
    require_charging: bool


@dataclass(frozen=True, slots=True)
class Thresholds:
    """How far a reading must move since the last heartbeat sent before a new one is worth its bytes.

    Percentages are points of the whole (CPU of the device, memory/disk of the total, battery); a replica's memory
    is relative to what was last sent. A reading that stays within these is left for the maximum interval.
    """

    cpu_percent: float = 25.0
    memory_percent: float = 10.0
    disk_percent: float = 5.0
    battery_percent: float = 10.0
    replica_cpu_percent: float = 50.0  # points of one core
    replica_memory_percent: float = 25.0  # of the replica's memory last sent


@dataclass(frozen=True, slots=True)
class Link:
    """The control link's timers: what it costs in bytes against how soon a silent power-off is noticed.

    - `keepalive_s`: the MQTT keep-alive (MQTT 3.1.1 §3.1.2.10). An idle client sends PINGREQ this often; the
      broker publishes the last will after 1.5 x `keepalive_s` without a packet: the detection time of a device
      that lost power or its link.
    - `heartbeat_max_interval_s`: the longest the agent stays silent on the heartbeat topic; between, a
      heartbeat goes only when a reading moved past `thresholds` (or gates, replicas or the epoch changed).
      The node states it in its status, and the coordinator derives the node's silence TTL from it.
    """

    keepalive_s: int = 60
    heartbeat_max_interval_s: float = 300.0
    thresholds: Thresholds = field(default_factory=Thresholds)


@dataclass(frozen=True, slots=True)
class Storage:
    """The object store's share of this device class (issue 20): `quota_bytes` of its disk for chunks, the default
    of `cloudless agent --storage-quota`. 0 (the default): the class offers no storage (phones and other devices
    on battery, small flash): chunks want devices that stay on."""

    quota_bytes: int = 0


@dataclass(frozen=True, slots=True)
class Profile:
    """One device class: how to recognise it, how to run work on it, and when to back off."""

    name: str
    description: str
    detection: Detection
    runtime: Runtime
    heartbeat_interval_s: float  # how often the agent samples the device (gates, usage): its fastest heartbeat
    reserved: Reserved
    max_workloads: int
    battery: BatteryPolicy | None  # None: no battery gate (mains-powered class)
    thermal_limit_c: float  # for every temperature sensor without its own limit below
    metered: bool  # the usual uplink is billed by volume: avoid bulk transfers (image pulls, blob sync)
    gate_action: GateAction
    sensor_thermal_limits_c: Mapping[str, float] = field(default_factory=_no_limits, hash=False)
    link: Link = field(default_factory=Link)  # keep-alive and heartbeat policy (default: mains-powered, unmetered)
    storage: Storage = field(default_factory=Storage)  # the default storage quota (none unless the profile says)
    labels: Mapping[str, str] = field(default_factory=_empty_labels, hash=False)  # added to the node's labels
    source: str = field(default="", compare=False)  # where it was loaded from, for messages

    def thermal_limit_for(self, sensor: str) -> float:
        """The temperature (°C) at which `sensor` trips the thermal gate."""
        return self.sensor_thermal_limits_c.get(sensor, self.thermal_limit_c)


@dataclass(frozen=True, slots=True)
class DeviceProbe:
    """Facts about the device, gathered by `probe_device()` (or built by hand in tests); `None` = unknown."""

    arch: str = ""  # platform.machine() as reported ("aarch64", "AMD64", "arm64", ...)
    device_tree_model: str | None = None  # /proc/device-tree/model without the trailing NUL
    termux: bool = False  # TERMUX_VERSION is set (running inside the Termux app)
    has_battery: bool | None = None
    memory_bytes: int | None = None
    os: str = ""  # platform.system().lower()

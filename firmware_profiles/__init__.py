"""Device-class profiles as data files plus their loader/detector.

Each supported class of device (Raspberry Pi boards, Termux phones, laptops, IoT gateways, VPSes) is a TOML
file under `firmware_profiles/profiles/`: how to recognise it, which runtime to use, how often to sample and
heartbeat, what the control link may cost (`[link]`: keep-alive, heartbeat maximum interval, thresholds), what to
leave to the device's owner, and when to back off (battery, charging, temperature). Read by the edge agent
(stdlib only: `tomllib`) and by the coordinator.

- `load_profile(name)`, `load_file(path)`, `available()`, `load_all()` — strict loading; errors are
  `ProfileError`s naming the file and field.
- `probe_device()` gathers facts (I/O, never raises); `detect(probe, profiles)` picks a profile (pure).
- `evaluate_gates(profile, battery_percent, charging, temperatures, previous)` — pure, with hysteresis.
"""

from firmware_profiles.detect import Detected, Match, detect, match_profile
from firmware_profiles.errors import FirmwareProfileError, ProfileError, QuantityError, UnknownProfile
from firmware_profiles.gates import GateVerdict, evaluate_gates
from firmware_profiles.loader import DEFAULT_OVERRIDE_DIR, available, builtin_names, load_all, load_file, load_profile
from firmware_profiles.model import (
    BatteryPolicy,
    Detection,
    DeviceProbe,
    GateAction,
    Link,
    Profile,
    Reserved,
    Runtime,
    Thresholds,
    canonical_arch,
)
from firmware_profiles.probe import probe_device
from firmware_profiles.schema import parse_profile
from firmware_profiles.units import parse_cpu, parse_memory

__all__ = [
    "DEFAULT_OVERRIDE_DIR",
    "BatteryPolicy",
    "Detected",
    "Detection",
    "DeviceProbe",
    "FirmwareProfileError",
    "GateAction",
    "GateVerdict",
    "Link",
    "Match",
    "Profile",
    "ProfileError",
    "QuantityError",
    "Reserved",
    "Runtime",
    "Thresholds",
    "UnknownProfile",
    "available",
    "builtin_names",
    "canonical_arch",
    "detect",
    "evaluate_gates",
    "load_all",
    "load_file",
    "load_profile",
    "match_profile",
    "parse_cpu",
    "parse_memory",
    "parse_profile",
    "probe_device",
]

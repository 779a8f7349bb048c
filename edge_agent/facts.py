"""Node facts and usage (adapter): what this device is and how busy it is.

Every reading is guarded on its own: Android (Termux) raises PermissionError on /proc/stat and /proc/net/dev,
some boards have no thermal sensors, containers hide batteries. A reading that fails is simply absent (None /
left out); nothing here ever raises to the caller.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import platform
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from broker.wire import NodeFacts
from edge_agent.runtime import landlock

log = logging.getLogger(__name__)
T = TypeVar("T")
_warned: set[str] = set()


def _safe(what: str, fn: Callable[[], T]) -> T | None:
    try:
        return fn()
    except Exception as exc:  # any failure means "this device cannot tell us"; log once per metric
        if what not in _warned:
            _warned.add(what)
            log.info("cannot read %s on this device (%s: %s); leaving it out", what, type(exc).__name__, exc)
        return None


def _psutil() -> Any:
    import psutil  # imported lazily: a Termux build may lack it, and only facts need it

    return psutil


@dataclass(frozen=True, slots=True)
class Battery:
    percent: float | None
    charging: bool | None


def battery() -> Battery:
    b = _safe("battery", lambda: _psutil().sensors_battery())
    if b is None:
        return Battery(None, None)
    percent = max(0.0, min(100.0, float(b.percent))) if b.percent is not None else None
    charging = bool(b.power_plugged) if b.power_plugged is not None else None
    return Battery(percent, charging)


def temperatures() -> dict[str, float]:
    """Highest current reading per sensor family, e.g. {"cpu_thermal": 51.2}."""
    found = _safe("temperatures", lambda: _psutil().sensors_temperatures()) or {}
    out: dict[str, float] = {}
    for name, entries in list(found.items())[:32]:
        values = [float(e.current) for e in entries if e.current is not None and -273.0 < float(e.current) < 1000.0]
        if values:
            out[str(name)[:64]] = max(values)
    return out


def cpu_percent() -> float | None:
    # non-blocking: the percentage since the previous call (the first call primes the counter)
    value = _safe("cpu_percent", lambda: float(_psutil().cpu_percent(interval=None)))
    return None if value is None else max(0.0, min(100.0 * 64, value))


@dataclass(frozen=True, slots=True)
class MemDisk:
    memory_used: int | None
    memory_total: int | None
    disk_used: int | None
    disk_total: int | None


def mem_disk(path: Path) -> MemDisk:
    vm = _safe("memory", lambda: _psutil().virtual_memory())
    du = _safe("disk", lambda: _psutil().disk_usage(str(path)))
    return MemDisk(
        memory_used=int(vm.total - vm.available) if vm is not None else None,
        memory_total=int(vm.total) if vm is not None else None,
        disk_used=int(du.used) if du is not None else None,
        disk_total=int(du.total) if du is not None else None,
    )


def os_release() -> str:
    def read() -> str:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
        return ""

    if os.environ.get("TERMUX_VERSION"):
        return f"Android (Termux {os.environ['TERMUX_VERSION']})"[:128]
    return (_safe("os-release", read) or platform.platform())[:128]


def node_facts(
    *,
    data_dir: Path,
    runtime: str,
    runtime_version: str,
    rootless: bool | None,
    profile: str,
    zone: str,
    labels: dict[str, str],
    agent_version: str,
    readings: Readings,
    overlay: bool | None = None,
) -> NodeFacts:
    md = mem_disk(data_dir)
    return NodeFacts(
        arch=platform.machine()[:32],
        os=platform.system().lower()[:64],
        os_release=os_release(),
        hostname=(_safe("hostname", socket.gethostname) or "")[:255],
        cpu_count=_safe("cpu_count", lambda: os.cpu_count() or 0),
        memory_bytes=md.memory_total,
        disk_bytes=md.disk_total,
        runtime=runtime[:32],
        podman_version=runtime_version[:64] if runtime == "podman" else "",
        rootless=rootless,
        battery_percent=readings.battery_percent,
        charging=readings.charging,
        temperatures={k: max(-273.0, min(999.0, v)) for k, v in list(readings.temperatures.items())[:32]},
        profile=profile[:64],
        zone=zone[:64],
        labels=dict(labels),
        agent_version=agent_version[:32],
        workload_isolation=workload_isolation(runtime, os.geteuid(), _safe("landlock", landlock.abi) or 0),
        # the overlay as it runs (the agent says), else whether it could (aioquic is installed)
        abilities=abilities(runtime, overlay=overlay if overlay is not None
                            else bool(_safe("aioquic", lambda: importlib.util.find_spec("aioquic")))),
    )


# what each runtime adapter honours (`runtime.process` refuses port remapping, volumes and images; Podman does all)
_RUNTIME_ABILITIES: dict[str, tuple[str, ...]] = {
    "podman": ("containers", "port-remap", "volumes", "images"),
    "process": ("process",),
}


def abilities(runtime: str, *, overlay: bool) -> tuple[str, ...]:
    """What this node can do for a workload (`NodeFacts.abilities`): its runtime's abilities, and `overlay` when
    the QUIC overlay can run here (aioquic is installed; whether it is switched on is the overlay report's say)."""
    return _RUNTIME_ABILITIES.get(runtime, ()) + (("overlay",) if overlay else ())


def workload_isolation(runtime: str, agent_uid: int, landlock_abi: int) -> str:
    """What keeps a process workload from the agent's files (`runtime.process`); "" for containers."""
    if runtime != "process":
        return ""
    if agent_uid == 0:
        return "by user: a workload with runAsUser runs as that user; one without runs as root, not separated"
    if landlock_abi >= 1:
        return f"landlock (ABI {landlock_abi}): workloads run as the agent's user, kept out of its files"
    return ("none: workloads run as the agent's user and can read its files (its private key, other replicas' "
            "secrets); this kernel has no Landlock")


def self_rss_bytes() -> int | None:
    return _safe("agent rss", lambda: int(_psutil().Process().memory_info().rss))


@dataclass(frozen=True, slots=True)
class Readings:
    """The sensor readings gates look at."""

    battery_percent: float | None
    charging: bool | None
    temperatures: dict[str, float]


def read_sensors(override: Path | None = None) -> Readings:
    """Battery and temperatures from the device, or from an override JSON file (see `--sensor-file`).

    A broken override file is logged and ignored (the device's own sensors are used), never fatal."""
    if override is not None:
        try:
            import json

            doc = json.loads(override.read_text())
            temps = doc.get("temperatures", {})
            percent = doc.get("battery_percent")
            charging = doc.get("charging")
            return Readings(
                battery_percent=max(0.0, min(100.0, float(percent))) if percent is not None else None,
                charging=bool(charging) if charging is not None else None,
                temperatures={str(k)[:64]: float(v) for k, v in dict(temps).items()},
            )
        except FileNotFoundError:
            pass  # no readings injected (yet): the device's own sensors count
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            if str(exc) not in _warned:
                _warned.add(str(exc))
                log.warning("sensor file %s unusable (%s); using the device's sensors", override, exc)
    bat = battery()
    return Readings(bat.percent, bat.charging, temperatures())

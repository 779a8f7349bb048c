"""The adapter that gathers `DeviceProbe` facts from the running system.

Every read is guarded: a file that is missing or unreadable (Android's SELinux denies much of /sys), a psutil
that is not installed or fails, a platform call that raises — each just leaves that fact unknown. This
function never raises; the decision about what the facts mean is `firmware_profiles.detect`'s.
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from firmware_profiles.model import DeviceProbe

log = logging.getLogger(__name__)

_MODEL_FILES = ("proc/device-tree/model", "sys/firmware/devicetree/base/model")
_POWER_SUPPLY_DIR = "sys/class/power_supply"
_MEMINFO = "proc/meminfo"
_TERMUX_PREFIX = "/data/data/com.termux/"


def _psutil() -> Any:
    try:
        import psutil  # optional on the agent: a dependency, but Termux may lack a build
    except Exception:  # ImportError, or a broken native extension
        return None
    return psutil


def _read_text(path: Path, limit: int = 4096) -> str | None:
    try:
        with path.open("rb") as handle:
            return handle.read(limit).decode("utf-8", errors="replace")
    except Exception:
        return None


def _device_tree_model(root: Path) -> str | None:
    for name in _MODEL_FILES:
        text = _read_text(root / name)
        if text is not None:
            model = text.replace("\x00", "").strip()
            if model:
                return model
    return None


def _sysfs_battery(root: Path) -> bool | None:
    """True/False when /sys/class/power_supply is readable, else None.

    Only system batteries count: a wireless mouse or headset also shows up as type Battery, but with
    scope Device (Linux Documentation/ABI/testing/sysfs-class-power).
    """
    try:
        supplies = sorted((root / _POWER_SUPPLY_DIR).iterdir())
    except Exception:
        return None
    for supply in supplies:
        kind = (_read_text(supply / "type") or "").strip()
        scope = (_read_text(supply / "scope") or "").strip()
        if kind == "Battery" and scope != "Device":
            return True
    return False


def _has_battery(root: Path, psutil: Any) -> bool | None:
    found = _sysfs_battery(root)
    if found is not None:
        return found
    if psutil is None or not hasattr(psutil, "sensors_battery"):
        return None
    try:
        return psutil.sensors_battery() is not None
    except Exception:
        return None


def _memory_bytes(root: Path, psutil: Any) -> int | None:
    if psutil is not None:
        try:
            return int(psutil.virtual_memory().total)
        except Exception:
            log.debug("psutil.virtual_memory failed", exc_info=True)
    for line in (_read_text(root / _MEMINFO, limit=65536) or "").splitlines():
        if line.startswith("MemTotal:"):
            try:
                return int(line.split()[1]) * 1024  # the kernel reports kB (KiB)
            except (IndexError, ValueError):
                return None
    return None


def _call(fn: Any) -> str:
    try:
        return str(fn())
    except Exception:
        return ""


def probe_device(
    *, root: Path | str = "/", environ: Mapping[str, str] | None = None, use_psutil: bool = True
) -> DeviceProbe:
    """Facts about this device; never raises.

    `root`, `environ` and `use_psutil` exist for tests: a fake /proc and /sys tree, a fake environment, and
    no psutil (which would report the real machine whatever `root` says).
    """
    base = Path(root)
    env = os.environ if environ is None else environ
    psutil = _psutil() if use_psutil else None
    try:
        termux = "TERMUX_VERSION" in env or env.get("PREFIX", "").startswith(_TERMUX_PREFIX)
    except Exception:
        termux = False
    return DeviceProbe(
        arch=_call(platform.machine),
        device_tree_model=_device_tree_model(base),
        termux=termux,
        has_battery=_has_battery(base, psutil),
        memory_bytes=_memory_bytes(base, psutil),
        os=_call(platform.system).lower(),
    )

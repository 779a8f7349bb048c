"""Which device class is this? A pure decision over a `DeviceProbe` and the candidate profiles.

Every profile whose detection rules all hold is a candidate (see `Detection` for the rule semantics); the
candidate with the highest priority wins, ties going to the alphabetically first name, so the answer depends
only on the facts and the profile set — never on file order. When nothing matches, a device with a battery is
taken for a laptop and anything else for a VPS. The probing itself (files, environment, psutil) is in
`firmware_profiles.probe`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from firmware_profiles.model import Detection, DeviceProbe, Profile, canonical_arch

FALLBACK_WITH_BATTERY = "laptop"
FALLBACK_WITHOUT_BATTERY = "vps"


@dataclass(frozen=True, slots=True)
class Match:
    """Whether one profile's rules hold for a probe, and why (each rule checked, or the first that failed)."""

    matched: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Detected:
    """The chosen profile name and the human-readable reasons for the choice."""

    name: str
    reasons: tuple[str, ...]
    fallback: bool = False  # True when no profile's rules matched


def _fmt_bytes(value: int) -> str:
    return f"{value / 2**20:.0f}Mi" if value >= 2**20 else f"{value}B"


def _check(rule: Detection, probe: DeviceProbe) -> tuple[str | None, list[str]]:
    """(first failed rule or None, reasons for the rules that held)."""
    held: list[str] = []
    arch = canonical_arch(probe.arch)
    if rule.arch:
        if arch not in rule.arch:
            return f"arch {arch or 'unknown'} not in {', '.join(rule.arch)}", held
        held.append(f"arch {arch} in {', '.join(rule.arch)}")
    if rule.os:
        if probe.os not in rule.os:
            return f"os {probe.os or 'unknown'} not in {', '.join(rule.os)}", held
        held.append(f"os {probe.os} in {', '.join(rule.os)}")
    if rule.device_tree_model:
        model = probe.device_tree_model
        hit = next((s for s in rule.device_tree_model if model and s.casefold() in model.casefold()), None)
        if hit is None:
            return f"device-tree model {model!r} contains none of {', '.join(map(repr, rule.device_tree_model))}", held
        held.append(f"device-tree model {model!r} contains {hit!r}")
    if rule.termux is not None:
        if probe.termux != rule.termux:
            return f"TERMUX_VERSION {'absent' if rule.termux else 'present'}", held
        held.append(f"TERMUX_VERSION {'present' if rule.termux else 'absent'}")
    if rule.battery is not None:
        if probe.has_battery != rule.battery:
            seen = {True: "present", False: "absent", None: "unknown"}[probe.has_battery]
            return f"battery {seen}, wanted {'present' if rule.battery else 'absent'}", held
        held.append(f"battery {'present' if rule.battery else 'absent'}")
    memory = probe.memory_bytes
    if rule.min_memory_bytes is not None:
        if memory is None or memory < rule.min_memory_bytes:
            shown = "unknown" if memory is None else _fmt_bytes(memory)
            return f"memory {shown} < {_fmt_bytes(rule.min_memory_bytes)}", held
        held.append(f"memory {_fmt_bytes(memory)} >= {_fmt_bytes(rule.min_memory_bytes)}")
    if rule.max_memory_bytes is not None:
        if memory is None or memory > rule.max_memory_bytes:
            shown = "unknown" if memory is None else _fmt_bytes(memory)
            return f"memory {shown} > {_fmt_bytes(rule.max_memory_bytes)}", held
        held.append(f"memory {_fmt_bytes(memory)} <= {_fmt_bytes(rule.max_memory_bytes)}")
    return None, held


def match_profile(profile: Profile, probe: DeviceProbe) -> Match:
    """Do `profile`'s detection rules all hold for `probe`? A profile without rules never matches."""
    if not profile.detection.has_rules:
        return Match(False, ("no detection rules (select by name only)",))
    failed, held = _check(profile.detection, probe)
    if failed is not None:
        return Match(False, (failed,))
    return Match(True, tuple(held))


def detect(probe: DeviceProbe, profiles: Iterable[Profile]) -> Detected:
    """The best-matching profile for `probe`: highest priority, then name; else the laptop/vps fallback."""
    candidates = sorted(
        ((profile, match_profile(profile, probe)) for profile in profiles),
        key=lambda pair: (-pair[0].detection.priority, pair[0].name),
    )
    matched = [(profile, match) for profile, match in candidates if match.matched]
    if not matched:
        if probe.has_battery:
            return Detected(FALLBACK_WITH_BATTERY, ("no profile matched; battery present",), fallback=True)
        return Detected(FALLBACK_WITHOUT_BATTERY, ("no profile matched; no battery found",), fallback=True)
    best, match = matched[0]
    reasons = [*match.reasons, f"priority {best.detection.priority}"]
    if len(matched) > 1:
        others = ", ".join(f"{p.name} ({p.detection.priority})" for p, _ in matched[1:])
        reasons.append(f"also matched: {others}")
    return Detected(best.name, tuple(reasons))

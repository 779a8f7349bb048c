"""Which device profile this agent runs under: named on the command line, or detected (adapter)."""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.errors import ConfigError
from firmware_profiles import Profile


@dataclass(frozen=True)
class SelectedProfile:
    name: str
    profile: Profile
    runtime: str
    heartbeat_s: float
    why: str


def select_profile(name: str) -> SelectedProfile:
    import firmware_profiles as fp

    try:
        if name == "auto":
            detected = fp.detect(fp.probe_device(), fp.load_all())
            profile = fp.load_profile(detected.name)
            why = "detected: " + "; ".join(detected.reasons)
        else:
            profile = fp.load_profile(name)
            why = "chosen with --profile"
    except fp.ProfileError as exc:
        raise ConfigError(f"--profile: {exc} (available: {', '.join(fp.available())})") from None
    return SelectedProfile(name=profile.name, profile=profile, runtime=str(profile.runtime.value),
                           heartbeat_s=float(profile.heartbeat_interval_s), why=why)

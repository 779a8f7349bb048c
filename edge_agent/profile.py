"""Which device profile this agent runs under: named on the command line, or detected (adapter)."""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.beat import BeatPolicy
from edge_agent.errors import ConfigError
from firmware_profiles import Profile


@dataclass(frozen=True)
class SelectedProfile:
    name: str
    profile: Profile
    runtime: str
    heartbeat_s: float
    why: str

    def beat_policy(self, sample_s: float | None = None, max_s: float | None = None) -> BeatPolicy:
        """The heartbeat policy: the profile's, with the command line's overrides. `--heartbeat-interval` alone
        means a heartbeat every that many seconds (as before issue 17: tests and development)."""
        if sample_s is not None and max_s is None:
            max_s = sample_s
        link = self.profile.link
        sample = sample_s if sample_s is not None else self.heartbeat_s
        return BeatPolicy(min_interval_s=sample, max_interval_s=max(sample, max_s or link.heartbeat_max_interval_s),
                          thresholds=link.thresholds)

    def keepalive_s(self, override: int | None = None) -> int:
        return override if override is not None else self.profile.link.keepalive_s


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

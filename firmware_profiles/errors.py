"""The firmware_profiles package's error hierarchy.

One small hierarchy per package (STYLE §4). Every problem with a profile — unreadable file, bad TOML, unknown
key, wrong type, value out of range, no such profile — is a `ProfileError` whose message names the file and the
field path (`raspberry-pi-4.toml: battery.min_percent: must be 0-100, got 150`), so an operator can fix it
without reading code. Expected "no"s (a gate that trips, a profile that does not match) are values, not errors.
"""

from __future__ import annotations


class FirmwareProfileError(Exception):
    """Base of every error raised by the `firmware_profiles` package."""


class QuantityError(FirmwareProfileError, ValueError):
    """A resource quantity ("256Mi", "250m") could not be parsed; the loader re-raises it as a `ProfileError`."""


class ProfileError(FirmwareProfileError):
    """A profile file is unreadable or invalid, or a profile name is unknown.

    `file` is the file name (built-in profiles) or path (user files); `path` the dotted field path inside it
    (`battery.min_percent`, `labels."a/b"`); `reason` the bare complaint. Either may be empty.
    """

    def __init__(self, reason: str, *, file: str = "", path: str = "") -> None:
        self.file = file
        self.path = path
        self.reason = reason
        super().__init__(": ".join(part for part in (file, path, reason) if part))


class UnknownProfile(ProfileError, LookupError):
    """No profile with that name exists among the built-ins or the override directory."""

    def __init__(self, name: str, available: tuple[str, ...]) -> None:
        self.name = name
        self.available = available
        listing = ", ".join(available) or "none"
        super().__init__(f"no profile named {name!r} (available: {listing})")

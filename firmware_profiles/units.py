"""Resource quantities in Kubernetes notation — the one parser of the project, used by device profiles (TOML) and
by the coordinator's workload spec and policies (YAML/JSON).

CPU: `"250m"` (millicores), `"0.5"`, `"2"`, or a number (`0.5`, `2`) of cores -> millicores; finer than 1m is
refused. Memory: a byte count (`1024`, `"1024"`) or a number with a binary (`Ki Mi Gi Ti Pi Ei`) or decimal
(`k M G T P E`; kilo is lower case only, as in Kubernetes) suffix: `"64Mi"`, `"1.5Gi"`, `"500M"` -> bytes;
fractional bytes are refused. Booleans are refused although Python counts them as ints.

Exact arithmetic (`fractions.Fraction` over the number's text, never binary floats, never rounded to a precision),
so `"0.1"` cores is 100 millicores, `"1.5Gi"` is 1610612736 bytes and `"0.50000000000000000000000000001"` is refused
as finer than 1m. Every refusal is a `QuantityError` whose message starts with what is expected and
then says what was wrong, without the field path (the caller adds it). Pure: no I/O.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

from firmware_profiles.errors import QuantityError

BINARY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
DECIMAL_SUFFIXES = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
MEMORY_SUFFIXES: dict[str, int] = {"": 1, **DECIMAL_SUFFIXES, **BINARY_SUFFIXES}
# The wire contract's bounds (broker.wire.messages: Bytes, ReplicaSpec.cpu_millis), restated here because the
# agent depends on no more than it must.
MEMORY_MAX_BYTES = 2**62
CPU_MAX_MILLIS = 1_000_000

_DECIMAL = r"(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)"  # [0-9], not \d: no other script's digits
CPU_PATTERN = rf"{_DECIMAL}m?"  # for JSON schemas
MEMORY_PATTERN = rf"{_DECIMAL}(?:Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?"
_CPU_RE = re.compile(rf"(?P<num>{_DECIMAL})(?P<unit>m?)")
_MEMORY_RE = re.compile(rf"(?P<num>{_DECIMAL})(?P<unit>[A-Za-z]*)")

_MEMORY_EXPECTED = "must be a byte count or a string such as '256Mi' or '1G'"
_MEMORY_UNITS = "must be a number with an optional unit (Ki, Mi, Gi, Ti, k, M, G, T)"
_CPU_EXPECTED = "must be cores (e.g. 2, 0.5) or a string such as '250m'"
_CPU_TEXT = "must be cores ('0.5', '2') or millicores ('250m')"


def _got(value: object) -> str:
    return f"got {type(value).__name__} {value!r}"[:80]


def _number(value: object, expected: str) -> Fraction:
    """A YAML/TOML number, exactly (a float by its shortest repr, so 0.1 stays 0.1)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise QuantityError(f"{expected}, {_got(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise QuantityError(f"{expected}, {_got(value)}: not a finite number")
    return Fraction(repr(value)) if isinstance(value, float) else Fraction(value)


def parse_memory(value: object) -> int:
    """Bytes from a byte count or a string like "512Mi", "1.5Gi", "64k", "2G"."""
    if isinstance(value, str):
        m = _MEMORY_RE.fullmatch(value)
        if m is None:
            raise QuantityError(f"{_MEMORY_UNITS}: invalid memory quantity {value[:40]!r}")
        factor = MEMORY_SUFFIXES.get(m["unit"])
        if factor is None:
            raise QuantityError(f"{_MEMORY_UNITS}: unknown memory suffix {m['unit'][:8]!r} in {value[:40]!r}")
        size = Fraction(m["num"]) * factor
    else:
        size = _number(value, _MEMORY_EXPECTED)
    if size.denominator != 1:
        expected = "must be a whole number of bytes" if isinstance(value, str) else _MEMORY_EXPECTED
        raise QuantityError(f"{expected}: {value!r} is not a whole number of bytes")
    if size < 0:
        raise QuantityError(f"must be 0-{MEMORY_MAX_BYTES} bytes, got {value!r}: must not be negative")
    if size > MEMORY_MAX_BYTES:
        raise QuantityError(f"must be 0-{MEMORY_MAX_BYTES} bytes, got {value!r}: too large")
    return int(size)


def parse_cpu(value: object) -> int:
    """Millicores from cores (a number, or a string "0.5", "2") or millicores ("250m")."""
    if isinstance(value, str):
        m = _CPU_RE.fullmatch(value)
        if m is None:
            raise QuantityError(f"{_CPU_TEXT}: invalid cpu quantity {value[:40]!r}")
        millis = Fraction(m["num"]) * (1 if m["unit"] == "m" else 1000)
    elif isinstance(value, float) and not math.isfinite(value):
        raise QuantityError(f"must be a finite number of cores: invalid cpu quantity {value!r}")
    else:
        millis = _number(value, _CPU_EXPECTED) * 1000
    if millis.denominator != 1:
        raise QuantityError(f"must be a whole number of millicores (1m = 0.001 cores): cpu quantity {value!r} is "
                            "finer than 1m")
    max_cores = CPU_MAX_MILLIS // 1000
    if millis < 0:
        raise QuantityError(f"must be 0-{max_cores} cores, got {value!r}: must not be negative")
    if millis > CPU_MAX_MILLIS:
        raise QuantityError(f"must be 0-{max_cores} cores, got {value!r}: exceeds {format_cpu(CPU_MAX_MILLIS)}")
    return int(millis)


def format_cpu(millis: int) -> str:
    """Canonical text for millicores: whole cores as `"2"`, otherwise `"250m"` (round-trips through parse_cpu)."""
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def format_memory(size: int) -> str:
    """Canonical text for bytes: the largest binary suffix that divides exactly, else the plain number."""
    for suffix, factor in reversed(BINARY_SUFFIXES.items()):
        if size and size % factor == 0:
            return f"{size // factor}{suffix}"
    return str(size)


def describe_memory(size: int) -> str:
    """Human text for messages: exact when possible (`"64Mi"`), else one decimal (`"31.9Mi"`)."""
    if size < 0:  # an over-committed node reports negative free memory
        return "-" + describe_memory(-size)
    exact = format_memory(size)
    if not exact.isdigit() or size < 1024:
        return exact
    suffix, factor = next((s, f) for s, f in reversed(BINARY_SUFFIXES.items()) if size >= f)
    return f"{size / factor:.1f}{suffix}"


_SIZE_BYTE_SUFFIX = re.compile(r"(?P<head>.*?[0-9.])(?P<unit>Ki|Mi|Gi|Ti|Pi|Ei|k|K|M|G|T|P|E)?B")


def parse_size(value: object) -> int:
    """Bytes from a storage size as people write it: everything `parse_memory` takes ("20G", "1.5Gi", 1073741824)
    plus a trailing byte unit ("500MiB", "1.5GiB", "20GB", "512B"; "KB"/"kB" as kilo). G, GB are decimal (10^9) and
    Gi, GiB binary (2^30), as in Kubernetes and the IEC."""
    if isinstance(value, str):
        m = _SIZE_BYTE_SUFFIX.fullmatch(value.strip())
        if m is not None:
            unit = m["unit"] or ""
            value = m["head"] + ("k" if unit == "K" else unit)
        else:
            value = value.strip()
    return parse_memory(value)

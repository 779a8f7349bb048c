"""Resource quantities: CPU in millicores and memory in bytes, parsed from Kubernetes-style strings.

CPU: `"250m"` (millicores), `"0.5"`, `"2"`, or a YAML number (`0.5`, `2`). Finer than 1m is rejected.
Memory: a plain number of bytes (`"1024"`, `1024`) or a number with a binary (`Ki Mi Gi Ti Pi Ei`) or decimal
(`k M G T P E`) suffix: `"64Mi"`, `"1.5Gi"`, `"500M"`. Fractional bytes are rejected.

Exact arithmetic (`fractions.Fraction`), so `"0.1"` is 100m and not 100.00000000000001m. Pure: no I/O.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

CPU_MAX_MILLIS = 1_000_000  # the wire contract's bound for ReplicaSpec.cpu_millis
MEMORY_MAX_BYTES = 2**62  # the wire contract's bound for byte counts

BINARY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
DECIMAL_SUFFIXES = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}

_DECIMAL = r"(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)"
CPU_PATTERN = rf"{_DECIMAL}m?"
MEMORY_PATTERN = rf"{_DECIMAL}(?:Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?"
_CPU_RE = re.compile(rf"(?P<num>{_DECIMAL})(?P<unit>m?)")
_MEMORY_RE = re.compile(rf"(?P<num>{_DECIMAL})(?P<unit>[A-Za-z]*)")


class QuantityError(ValueError):
    """A quantity is malformed or out of range; the message says how, without the field path."""


def _number(value: object, what: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise QuantityError(f"expected a {what} quantity (string or number), got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise QuantityError(f"invalid {what} quantity {value!r}")
    if value < 0:
        raise QuantityError(f"{what} quantity must not be negative, got {value!r}")
    return Fraction(repr(value)) if isinstance(value, float) else Fraction(value)


def parse_cpu(value: object) -> int:
    """CPU quantity -> millicores."""
    if isinstance(value, str):
        m = _CPU_RE.fullmatch(value)
        if m is None:
            raise QuantityError(f'invalid cpu quantity {value[:40]!r} (use e.g. "250m", "0.5" or "2")')
        millis = Fraction(m["num"]) * (1 if m["unit"] == "m" else 1000)
    else:
        millis = _number(value, "cpu") * 1000
    if millis.denominator != 1:
        raise QuantityError(f"cpu quantity {value!r} is finer than 1m")
    if millis > CPU_MAX_MILLIS:
        raise QuantityError(f"cpu quantity {value!r} exceeds {format_cpu(CPU_MAX_MILLIS)}")
    return int(millis)


def parse_memory(value: object) -> int:
    """Memory quantity -> bytes."""
    if isinstance(value, str):
        m = _MEMORY_RE.fullmatch(value)
        if m is None:
            raise QuantityError(f'invalid memory quantity {value[:40]!r} (use e.g. "64Mi", "1Gi" or "500M")')
        unit = m["unit"]
        factor = BINARY_SUFFIXES.get(unit) or DECIMAL_SUFFIXES.get(unit) or (1 if unit == "" else 0)
        if factor == 0:
            raise QuantityError(
                f"unknown memory suffix {unit[:8]!r} in {value[:40]!r} (use Ki, Mi, Gi, Ti or k, M, G, T)"
            )
        size = Fraction(m["num"]) * factor
    else:
        size = _number(value, "memory")
    if size.denominator != 1:
        raise QuantityError(f"memory quantity {value!r} is not a whole number of bytes")
    if size > MEMORY_MAX_BYTES:
        raise QuantityError(f"memory quantity {value!r} is too large")
    return int(size)


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

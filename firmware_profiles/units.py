"""Resource quantities in Kubernetes notation: memory "256Mi" / "1G" / 1048576, CPU "250m" / "0.5" / 2.

Parsing is exact (`Decimal`, never binary floats), so "0.1" cores is 100 millicores and "1.5Gi" is
1610612736 bytes. Booleans are refused even though Python counts them as ints (TOML keeps them distinct).
Pure: no I/O.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from firmware_profiles.errors import QuantityError

# Binary (IEC) and decimal (SI) suffixes as Kubernetes accepts them (resource.Quantity); 'k' is lower case only.
MEMORY_SUFFIXES: dict[str, int] = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
# The wire contract's bounds (broker.wire.messages: Bytes, ReplicaSpec.cpu_millis), restated here because the
# agent depends on no more than it must.
MAX_BYTES = 2**62
MAX_MILLICORES = 1_000_000

_NUMBER = r"(\d+(?:\.\d+)?|\.\d+)"
_MEMORY_RE = re.compile(_NUMBER + r"(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?")
_CPU_RE = re.compile(_NUMBER + r"(m)?")


def _describe(value: object) -> str:
    return f"{value!r} ({type(value).__name__})"


def parse_memory(value: object) -> int:
    """Bytes from an integer byte count or a string like "512Mi", "1.5Gi", "64k", "2G"."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise QuantityError(f"must be a byte count or a string such as '256Mi' or '1G', got {_describe(value)}")
    if isinstance(value, int):
        amount = Decimal(value)
    else:
        match = _MEMORY_RE.fullmatch(value)
        if match is None:
            raise QuantityError(f"must be a number with an optional unit (Ki, Mi, Gi, Ti, k, M, G, T), got {value!r}")
        amount = Decimal(match.group(1)) * MEMORY_SUFFIXES[match.group(2) or ""]
    if amount != amount.to_integral_value():
        raise QuantityError(f"must be a whole number of bytes, got {value!r}")
    if not 0 <= amount <= MAX_BYTES:
        raise QuantityError(f"must be 0-{MAX_BYTES} bytes, got {value!r}")
    return int(amount)


def parse_cpu(value: object) -> int:
    """Millicores from cores (an integer or float, or a string "0.5", "2") or millicores ("250m")."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise QuantityError(f"must be cores (e.g. 2, 0.5) or a string such as '250m', got {_describe(value)}")
    try:
        if isinstance(value, str):
            match = _CPU_RE.fullmatch(value)
            if match is None:
                raise QuantityError(f"must be cores ('0.5', '2') or millicores ('250m'), got {value!r}")
            number = Decimal(match.group(1))
            millicores = number if match.group(2) else number * 1000
        else:
            millicores = Decimal(str(value)) * 1000  # str(): the float's shortest repr, so 0.1 stays 0.1
    except InvalidOperation as exc:  # nan/inf floats; the regex already keeps strings well-formed
        raise QuantityError(f"must be a finite number of cores, got {value!r}") from exc
    if not millicores.is_finite():
        raise QuantityError(f"must be a finite number of cores, got {value!r}")
    if millicores != millicores.to_integral_value():
        raise QuantityError(f"must be a whole number of millicores (1m = 0.001 cores), got {value!r}")
    if not 0 <= millicores <= MAX_MILLICORES:
        raise QuantityError(f"must be 0-{MAX_MILLICORES // 1000} cores, got {value!r}")
    return int(millicores)

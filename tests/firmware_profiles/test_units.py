"""Resource quantities: Kubernetes notation, exact arithmetic, booleans refused."""

from __future__ import annotations

import pytest

from firmware_profiles import QuantityError, parse_cpu, parse_memory

MEMORY = [
    ("bytes-int", 1048576, 2**20),
    ("zero", 0, 0),
    ("Ki", "64Ki", 64 * 2**10),
    ("Mi", "256Mi", 256 * 2**20),
    ("Gi", "1Gi", 2**30),
    ("Gi-fraction", "1.5Gi", 3 * 2**29),
    ("Ti", "2Ti", 2 * 2**40),
    ("k", "64k", 64_000),
    ("M", "512M", 512_000_000),
    ("G", "2G", 2_000_000_000),
    ("decimal-fraction", "0.5k", 500),
    ("leading-dot", ".5Ki", 512),
    ("plain-string", "4096", 4096),
]


@pytest.mark.parametrize(("value", "expected"), [(v, e) for _, v, e in MEMORY], ids=[i for i, _, _ in MEMORY])
def test_parse_memory(value: object, expected: int) -> None:
    assert parse_memory(value) == expected


BAD_MEMORY = [
    ("bool", True, "must be a byte count"),
    ("float", 1.5, "must be a byte count"),
    ("list", ["1Gi"], "must be a byte count"),
    ("unknown-unit", "12XB", "optional unit"),
    ("lowercase-mi", "256mi", "optional unit"),
    ("uppercase-K", "64K", "optional unit"),  # Kubernetes: decimal kilo is lower-case only
    ("space", "1 Gi", "optional unit"),
    ("negative-string", "-1Gi", "optional unit"),
    ("negative-int", -1, "must be 0-"),
    ("empty", "", "optional unit"),
    ("fractional-bytes", "1.5", "whole number of bytes"),
    ("too-big", "9Ei", "must be 0-"),
]


@pytest.mark.parametrize(("value", "reason"), [(v, r) for _, v, r in BAD_MEMORY], ids=[i for i, _, _ in BAD_MEMORY])
def test_parse_memory_rejects(value: object, reason: str) -> None:
    with pytest.raises(QuantityError, match=reason):
        parse_memory(value)


CPU = [
    ("millicores", "250m", 250),
    ("cores-string", "0.5", 500),
    ("cores-int", 2, 2000),
    ("cores-float", 0.1, 100),  # exact: not 100.00000000000001
    ("cores-float-2", 1.5, 1500),
    ("zero", "0", 0),
    ("fractional-milli-ok-if-whole", "1.0m", 1),
]


@pytest.mark.parametrize(("value", "expected"), [(v, e) for _, v, e in CPU], ids=[i for i, _, _ in CPU])
def test_parse_cpu(value: object, expected: int) -> None:
    assert parse_cpu(value) == expected


BAD_CPU = [
    ("bool", False, "must be cores"),
    ("word", "lots", "must be cores"),
    ("negative", -1, "must be 0-1000 cores"),
    ("nan", float("nan"), "finite"),
    ("inf", float("inf"), "finite"),
    ("sub-milli", "0.0001", "whole number of millicores"),
    ("half-milli", "0.5m", "whole number of millicores"),
    ("too-many", 2000, "must be 0-1000 cores"),
    ("unit-typo", "250M", "must be cores"),
]


@pytest.mark.parametrize(("value", "reason"), [(v, r) for _, v, r in BAD_CPU], ids=[i for i, _, _ in BAD_CPU])
def test_parse_cpu_rejects(value: object, reason: str) -> None:
    with pytest.raises(QuantityError, match=reason):
        parse_cpu(value)


def test_quantity_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="optional unit"):
        parse_memory("huge")

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_profiles.errors import QuantityError
from firmware_profiles.units import (
    CPU_MAX_MILLIS,
    MEMORY_MAX_BYTES,
    describe_memory,
    format_cpu,
    format_memory,
    parse_cpu,
    parse_memory,
)

CPU_OK = [
    ("250m", 250),
    ("0.5", 500),
    ("2", 2000),
    ("0.1", 100),
    ("1.5", 1500),
    (".5", 500),
    ("0", 0),
    ("1m", 1),
    (2, 2000),
    (0.5, 500),
    (0.25, 250),
    ("1000", 1_000_000),
]


@pytest.mark.parametrize(("text", "millis"), CPU_OK, ids=[repr(t) for t, _ in CPU_OK])
def test_cpu_parses(text: object, millis: int) -> None:
    assert parse_cpu(text) == millis


CPU_BAD = [
    ("", "invalid cpu quantity"),
    ("abc", "invalid cpu quantity"),
    ("250 m", "invalid cpu quantity"),
    ("250M", "invalid cpu quantity"),
    ("-1", "invalid cpu quantity"),
    ("1e3", "invalid cpu quantity"),
    ("0.0005", "finer than 1m"),
    ("1.5m", "finer than 1m"),
    (-1, "must not be negative"),
    (True, "got bool"),
    (None, "got NoneType"),
    (float("nan"), "invalid cpu quantity"),
    ("1001", "exceeds"),
]


@pytest.mark.parametrize(("text", "message"), CPU_BAD, ids=[repr(t) for t, _ in CPU_BAD])
def test_cpu_rejects_garbage(text: object, message: str) -> None:
    with pytest.raises(QuantityError, match=message):
        parse_cpu(text)


MEM_OK = [
    ("64Mi", 64 * 2**20),
    ("1Gi", 2**30),
    ("500M", 500_000_000),
    ("1024", 1024),
    (1024, 1024),
    ("1.5Gi", 3 * 2**29),
    ("1k", 1000),
    ("2Ki", 2048),
    ("0", 0),
    ("1Ti", 2**40),
    ("0.5Ki", 512),
]


@pytest.mark.parametrize(("text", "size"), MEM_OK, ids=[repr(t) for t, _ in MEM_OK])
def test_memory_parses(text: object, size: int) -> None:
    assert parse_memory(text) == size


MEM_BAD = [
    ("64MB", "unknown memory suffix"),
    ("1K", "unknown memory suffix"),
    ("1gi", "unknown memory suffix"),
    ("lots", "invalid memory quantity"),
    ("1.5", "not a whole number of bytes"),
    ("0.3Ki", "not a whole number of bytes"),
    ("-64Mi", "invalid memory quantity"),
    ("64 Mi", "invalid memory quantity"),
    (1.5, "not a whole number"),
    (False, "got bool"),
    ([64], "got list"),
    ("8Ei", "too large"),
]


@pytest.mark.parametrize(("text", "message"), MEM_BAD, ids=[repr(t) for t, _ in MEM_BAD])
def test_memory_rejects_garbage(text: object, message: str) -> None:
    with pytest.raises(QuantityError, match=message):
        parse_memory(text)


FORMATS = [
    (format_cpu, 2000, "2"),
    (format_cpu, 250, "250m"),
    (format_cpu, 0, "0"),
    (format_memory, 64 * 2**20, "64Mi"),
    (format_memory, 1536 * 2**20, "1536Mi"),
    (format_memory, 1000, "1000"),
    (format_memory, 0, "0"),
    (describe_memory, 32 * 2**20, "32Mi"),
    (describe_memory, 32 * 2**20 - 100_000, "31.9Mi"),
    (describe_memory, -64 * 2**20, "-64Mi"),
    (describe_memory, 100, "100"),
]


@pytest.mark.parametrize(("fmt", "value", "text"), FORMATS, ids=[f"{f.__name__}-{v}" for f, v, _ in FORMATS])
def test_formats(fmt: object, value: int, text: str) -> None:
    assert fmt(value) == text  # type: ignore[operator]


@given(st.integers(0, CPU_MAX_MILLIS))
def test_cpu_format_round_trips(millis: int) -> None:
    assert parse_cpu(format_cpu(millis)) == millis


@given(st.integers(0, MEMORY_MAX_BYTES))
def test_memory_format_round_trips(size: int) -> None:
    assert parse_memory(format_memory(size)) == size


@pytest.mark.parametrize("text", ["0.50000000000000000000000000001", "1.0000000000000000000000000001Ki"])
def test_exact_arithmetic_never_rounds_a_fraction_away(text: str) -> None:
    with pytest.raises(QuantityError):
        (parse_cpu if text[-1].isdigit() else parse_memory)(text)

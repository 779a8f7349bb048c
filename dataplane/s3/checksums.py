"""The whole-object checksums S3 clients send (`x-amz-checksum-<algorithm>`, base64 of the big-endian digest).

CRC32 comes from zlib and SHA-1/SHA-256 from hashlib. CRC32C (Castagnoli) comes from google-crc32c's C extension when
it is installed (the coordinator extra; wheels for x86_64 and aarch64), else from the table-driven code here.
CRC64NVME has no C implementation among our libraries (botocore takes it from awscrt, which we do not install), so it
is always table-driven: correct, but pure Python, about 10 MB/s. `slow(algorithm)` says which algorithms run in pure
Python: a server must feed those in slices of at most `SLOW_SLICE` bytes and let other work run in between, or one
upload holds its event loop about 25 ms per 256 KiB. Check values (the CRC catalogue's "123456789"): CRC32C
0xE3069283, CRC64NVME 0xAE8B14860A799888.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from enum import StrEnum
from typing import Protocol

try:
    import google_crc32c
except ImportError:  # optional: the pure-Python table below is used instead
    _FAST_CRC32C = False
else:
    _FAST_CRC32C = google_crc32c.implementation == "c"

SLOW_SLICE = 16 * 1024  # about 1.6 ms of pure-Python CRC: the most one loop turn should checksum


class Algorithm(StrEnum):
    CRC32 = "crc32"
    CRC32C = "crc32c"
    CRC64NVME = "crc64nvme"
    SHA1 = "sha1"
    SHA256 = "sha256"


class Checksum(Protocol):
    def update(self, data: bytes) -> None: ...

    def digest(self) -> bytes: ...


def _reflected_table(poly: int, width: int) -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc & ((1 << width) - 1))
    return tuple(table)


_CRC32C_TABLE = _reflected_table(0x82F63B78, 32)
_CRC64NVME_TABLE = _reflected_table(0x9A6C9329AC4BC9B5, 64)


class _ReflectedCrc:
    """A reflected CRC with all-ones init and final xor (both CRC32C and CRC64NVME are)."""

    def __init__(self, table: tuple[int, ...], width: int) -> None:
        self._table = table
        self._width = width
        self._mask = (1 << width) - 1
        self._crc = self._mask

    def update(self, data: bytes) -> None:
        crc, table = self._crc, self._table
        for byte in data:
            crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
        self._crc = crc

    def digest(self) -> bytes:
        return (self._crc ^ self._mask).to_bytes(self._width // 8, "big")


class _FastCrc32c:
    def __init__(self) -> None:
        self._crc = 0

    def update(self, data: bytes) -> None:
        self._crc = google_crc32c.extend(self._crc, data)

    def digest(self) -> bytes:
        return self._crc.to_bytes(4, "big")


class _Crc32:
    def __init__(self) -> None:
        self._crc = 0

    def update(self, data: bytes) -> None:
        self._crc = zlib.crc32(data, self._crc)

    def digest(self) -> bytes:
        return self._crc.to_bytes(4, "big")


class _Hash:
    def __init__(self, name: str) -> None:
        self._hash = hashlib.new(name)

    def update(self, data: bytes) -> None:
        self._hash.update(data)

    def digest(self) -> bytes:
        return self._hash.digest()


def new_checksum(algorithm: Algorithm) -> Checksum:
    match algorithm:
        case Algorithm.CRC32:
            return _Crc32()
        case Algorithm.CRC32C:
            return _FastCrc32c() if _FAST_CRC32C else pure_crc32c()
        case Algorithm.CRC64NVME:
            return _ReflectedCrc(_CRC64NVME_TABLE, 64)
        case Algorithm.SHA1:
            return _Hash("sha1")
        case Algorithm.SHA256:
            return _Hash("sha256")


def pure_crc32c() -> Checksum:
    return _ReflectedCrc(_CRC32C_TABLE, 32)


def slow(algorithm: Algorithm) -> bool:
    """Whether `algorithm` runs in pure Python here (a few MB/s): its input must be fed in `SLOW_SLICE` pieces."""
    return algorithm is Algorithm.CRC64NVME or (algorithm is Algorithm.CRC32C and not _FAST_CRC32C)


def b64(checksum: Checksum) -> str:
    return base64.b64encode(checksum.digest()).decode("ascii")


def compute(algorithm: Algorithm, data: bytes) -> str:
    """The base64 checksum of `data`, as it appears in an `x-amz-checksum-*` header or trailer."""
    checksum = new_checksum(algorithm)
    checksum.update(data)
    return b64(checksum)


def from_header_name(name: str) -> Algorithm | None:
    """`x-amz-checksum-crc32` -> CRC32; None for anything else."""
    prefix = "x-amz-checksum-"
    if not name.lower().startswith(prefix):
        return None
    try:
        return Algorithm(name.lower()[len(prefix):])
    except ValueError:
        return None

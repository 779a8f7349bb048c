"""Multipart upload rules as pure functions (AWS S3 API reference, CompleteMultipartUpload): the parts named must be
in ascending order, exist with the ETag given, and every part but the last must be at least 5 MiB. The object's
ETag is the MD5 of the concatenated binary MD5s of its parts, hex, followed by "-" and the part count."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dataplane.s3.backend import PartInfo
from dataplane.s3.errors import ErrorCode, S3Error, whole

MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PART_NUMBER = 10000


@dataclass(frozen=True, slots=True)
class Assembly:
    parts: tuple[int, ...]
    size: int
    etag: str


def multipart_etag(part_etags: Sequence[str]) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    for etag in part_etags:
        digest.update(bytes.fromhex(etag.strip('"')))
    return f"{digest.hexdigest()}-{len(part_etags)}"


def parse_part_number(value: str | None) -> int | S3Error:
    number = whole(value, 5)
    if number is None or not 1 <= number <= MAX_PART_NUMBER:
        return S3Error(ErrorCode.INVALID_ARGUMENT, f"partNumber must be an integer from 1 to {MAX_PART_NUMBER}")
    return number


def assemble(requested: Sequence[tuple[int, str]], uploaded: Mapping[int, PartInfo], *,
             min_part_size: int = MIN_PART_SIZE) -> Assembly | S3Error:
    if not requested:
        return S3Error(ErrorCode.MALFORMED_XML, "CompleteMultipartUpload must name at least one part")
    numbers = [n for n, _ in requested]
    if numbers != sorted(set(numbers)):
        return S3Error(ErrorCode.INVALID_PART_ORDER, "the list of parts was not in ascending order")
    chosen: list[PartInfo] = []
    for number, etag in requested:
        part = uploaded.get(number)
        if part is None or part.etag.strip('"') != etag.strip('"'):
            return S3Error(ErrorCode.INVALID_PART, f"part {number} was not uploaded or its ETag does not match")
        chosen.append(part)
    for part in chosen[:-1]:
        if part.size < min_part_size:
            return S3Error(ErrorCode.ENTITY_TOO_SMALL, f"part {part.number} is {part.size} bytes; every part but the "
                           f"last must be at least {min_part_size}")
    return Assembly(tuple(numbers), sum(p.size for p in chosen), multipart_etag([p.etag for p in chosen]))

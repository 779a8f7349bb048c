"""S3's XML documents: the responses we render and the two request bodies we read (DeleteObjects,
CompleteMultipartUpload). Namespace http://s3.amazonaws.com/doc/2006-03-01/ on every response root.

Request bodies are untrusted. They must be UTF-8 (a BOM or declaration naming another encoding, UTF-16 say, is
refused), so the text checked is the text expat parses; a DOCTYPE or ENTITY declaration (the door to entity
expansion) is then refused before parsing; sizes and DeleteObjects' key count and key lengths are capped; and
ElementTree never resolves external entities.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate
from urllib.parse import quote

from dataplane.s3.backend import BucketInfo, ObjectInfo, PartInfo
from dataplane.s3.errors import ErrorCode, S3Error, utf8, whole
from dataplane.s3.listing import ListPage, ListQuery
from dataplane.s3.routing import MAX_KEY_BYTES

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
MAX_XML_BODY = 2 * 1024 * 1024
MAX_DELETE_KEYS = 1000


def iso8601(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ts * 1000) % 1000:03d}Z"


def http_date(ts: float) -> str:
    return formatdate(ts, usegmt=True)


def quoted(etag: str) -> str:
    return f'"{etag.strip(chr(34))}"'


def _root(tag: str) -> ET.Element:
    return ET.Element(tag, xmlns=NS)


def _add(parent: ET.Element, tag: str, text: str | int | bool | None = None) -> ET.Element:
    child = ET.SubElement(parent, tag)
    if text is not None:
        child.text = ("true" if text else "false") if isinstance(text, bool) else str(text)
    return child


def _render(root: ET.Element) -> bytes:
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body


# Characters XML 1.0 cannot carry, even as references (XML 1.0 §2.2 Char).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_safe(text: str) -> str:
    """`text` with every character XML 1.0 forbids percent-encoded (a request path may hold %01), so an error
    document is always well-formed."""
    return _NOT_XML.sub(lambda m: f"%{ord(m.group()):02X}" if ord(m.group()) < 0x100 else "\ufffd", text)


def error_document(err: S3Error, request_id: str) -> bytes:
    root = ET.Element("Error")
    _add(root, "Code", err.code.value)
    _add(root, "Message", _xml_safe(err.message))
    if err.resource:
        _add(root, "Resource", _xml_safe(err.resource))
    _add(root, "RequestId", request_id)
    return _render(root)


def list_buckets_document(buckets: Iterable[BucketInfo], owner: str) -> bytes:
    root = _root("ListAllMyBucketsResult")
    who = _add(root, "Owner")
    _add(who, "ID", owner)
    _add(who, "DisplayName", owner)
    container = _add(root, "Buckets")
    for bucket in buckets:
        entry = _add(container, "Bucket")
        _add(entry, "Name", bucket.name)
        _add(entry, "CreationDate", iso8601(bucket.created))
    return _render(root)


def location_document(region: str) -> bytes:
    root = _root("LocationConstraint")
    root.text = "" if region == "us-east-1" else region
    return _render(root)


def list_objects_v2_document(bucket: str, query: ListQuery, page: ListPage, *, url_encode: bool) -> bytes:
    """With `url_encode` (the request's encoding-type=url, boto3's default) keys and prefixes are percent-encoded and
    EncodingType echoed, so any key survives XML 1.0 (which cannot carry some control characters)."""
    def enc(value: str) -> str:
        return quote(value, safe="/~") if url_encode else value

    root = _root("ListBucketResult")
    _add(root, "Name", bucket)
    _add(root, "Prefix", enc(query.prefix))
    if query.delimiter:
        _add(root, "Delimiter", enc(query.delimiter))
    if query.start_after:
        _add(root, "StartAfter", enc(query.start_after))
    if url_encode:
        _add(root, "EncodingType", "url")
    _add(root, "MaxKeys", query.max_keys)
    _add(root, "KeyCount", len(page.contents) + len(page.common_prefixes))
    _add(root, "IsTruncated", page.is_truncated)
    if query.continuation_token is not None:
        _add(root, "ContinuationToken", query.continuation_token)
    if page.next_token is not None:
        _add(root, "NextContinuationToken", page.next_token)
    for obj in page.contents:
        entry = _add(root, "Contents")
        _add(entry, "Key", enc(obj.key))
        _add(entry, "LastModified", iso8601(obj.last_modified))
        _add(entry, "ETag", quoted(obj.etag))
        _add(entry, "Size", obj.size)
        _add(entry, "StorageClass", "STANDARD")
    for prefix in page.common_prefixes:
        _add(_add(root, "CommonPrefixes"), "Prefix", enc(prefix))
    return _render(root)


def copy_result_document(info: ObjectInfo) -> bytes:
    root = _root("CopyObjectResult")
    _add(root, "LastModified", iso8601(info.last_modified))
    _add(root, "ETag", quoted(info.etag))
    return _render(root)


def initiate_upload_document(bucket: str, key: str, upload_id: str) -> bytes:
    root = _root("InitiateMultipartUploadResult")
    _add(root, "Bucket", bucket)
    _add(root, "Key", key)
    _add(root, "UploadId", upload_id)
    return _render(root)


def complete_upload_document(location: str, bucket: str, key: str, etag: str) -> bytes:
    root = _root("CompleteMultipartUploadResult")
    _add(root, "Location", location)
    _add(root, "Bucket", bucket)
    _add(root, "Key", key)
    _add(root, "ETag", quoted(etag))
    return _render(root)


def list_parts_document(bucket: str, key: str, upload_id: str, parts: Iterable[PartInfo], *, marker: int,
                        max_parts: int) -> bytes:
    chosen = [p for p in sorted(parts, key=lambda p: p.number) if p.number > marker]
    page, truncated = chosen[:max_parts], len(chosen) > max_parts
    root = _root("ListPartsResult")
    _add(root, "Bucket", bucket)
    _add(root, "Key", key)
    _add(root, "UploadId", upload_id)
    _add(root, "PartNumberMarker", marker)
    _add(root, "NextPartNumberMarker", page[-1].number if page else marker)
    _add(root, "MaxParts", max_parts)
    _add(root, "IsTruncated", truncated)
    _add(root, "StorageClass", "STANDARD")
    for part in page:
        entry = _add(root, "Part")
        _add(entry, "PartNumber", part.number)
        _add(entry, "LastModified", iso8601(part.last_modified))
        _add(entry, "ETag", quoted(part.etag))
        _add(entry, "Size", part.size)
    return _render(root)


@dataclass(frozen=True, slots=True)
class DeleteOutcome:
    key: str
    error: S3Error | None = None


def delete_result_document(outcomes: Iterable[DeleteOutcome], *, quiet: bool) -> bytes:
    root = _root("DeleteResult")
    for outcome in outcomes:
        if outcome.error is None:
            if not quiet:
                _add(_add(root, "Deleted"), "Key", outcome.key)
        else:
            entry = _add(root, "Error")
            _add(entry, "Key", outcome.key)
            _add(entry, "Code", outcome.error.code.value)
            _add(entry, "Message", outcome.error.message)
    return _render(root)


# ---- request bodies --------------------------------------------------------------------------------------------

_DECLARED_ENCODING = re.compile(rb"""<\?xml[^>]*?\sencoding\s*=\s*["']([^"']*)["']""")


def _utf8_text(body: bytes) -> str | S3Error:
    """The body as the UTF-8 text expat will parse, or why not. Expat picks the encoding from a BOM or the XML
    declaration; a UTF-16 body hides `<!DOCTYPE` from a byte search, so anything but UTF-8 is refused first."""
    declared = _DECLARED_ENCODING.match(body.removeprefix(b"\xef\xbb\xbf"))
    if declared is not None and declared.group(1).lower() not in (b"utf-8", b"utf8"):
        return S3Error(ErrorCode.MALFORMED_XML, "the XML body must be UTF-8")
    try:
        text = body.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
    except UnicodeDecodeError:
        return S3Error(ErrorCode.MALFORMED_XML, "the XML body must be UTF-8")
    if "\x00" in text:  # UTF-16/32 without a BOM decodes as UTF-8 with NULs, which XML 1.0 never holds
        return S3Error(ErrorCode.MALFORMED_XML, "the XML body must be UTF-8")
    return text


def _parse(body: bytes, root_tag: str) -> ET.Element | S3Error:
    if len(body) > MAX_XML_BODY:
        return S3Error(ErrorCode.MALFORMED_XML, f"the XML body exceeds {MAX_XML_BODY} bytes")
    text = _utf8_text(body)
    if isinstance(text, S3Error):
        return text
    if "<!DOCTYPE" in text.upper() or "<!ENTITY" in text.upper():
        return S3Error(ErrorCode.MALFORMED_XML, "the XML body must not contain a DOCTYPE or ENTITY declaration")
    try:
        root = ET.fromstring(body)  # noqa: S314 -- UTF-8 only, DOCTYPE/ENTITY refused above; no external entities
    except ET.ParseError as exc:
        return S3Error(ErrorCode.MALFORMED_XML, f"the XML body is not well-formed: {exc}")
    for element in root.iter():
        element.tag = element.tag.rpartition("}")[2]
    if root.tag != root_tag:
        return S3Error(ErrorCode.MALFORMED_XML, f"the XML body's root must be <{root_tag}>, not <{root.tag}>")
    return root


@dataclass(frozen=True, slots=True)
class DeleteRequest:
    keys: tuple[str, ...]
    quiet: bool


def parse_delete(body: bytes) -> DeleteRequest | S3Error:
    root = _parse(body, "Delete")
    if isinstance(root, S3Error):
        return root
    keys: list[str] = []
    for obj in root.iterfind("Object"):
        key = obj.findtext("Key")
        if not key:
            return S3Error(ErrorCode.MALFORMED_XML, "every <Object> in <Delete> needs a <Key>")
        if len(utf8(key)) > MAX_KEY_BYTES:
            return S3Error(ErrorCode.KEY_TOO_LONG, f"object keys are at most {MAX_KEY_BYTES} bytes")
        if len(keys) == MAX_DELETE_KEYS:
            return S3Error(ErrorCode.MALFORMED_XML, f"<Delete> names 1 to {MAX_DELETE_KEYS} objects")
        keys.append(key)
    if not keys or len(keys) > MAX_DELETE_KEYS:
        return S3Error(ErrorCode.MALFORMED_XML, f"<Delete> names 1 to {MAX_DELETE_KEYS} objects")
    return DeleteRequest(tuple(keys), (root.findtext("Quiet") or "").strip().lower() == "true")


def parse_complete(body: bytes) -> list[tuple[int, str]] | S3Error:
    root = _parse(body, "CompleteMultipartUpload")
    if isinstance(root, S3Error):
        return root
    parts = []
    for part in root.findall("Part"):
        number, etag = (part.findtext("PartNumber") or "").strip(), (part.findtext("ETag") or "").strip()
        part_number = whole(number, 5)
        if part_number is None or not etag:
            return S3Error(ErrorCode.MALFORMED_XML, "every <Part> needs a numeric <PartNumber> and an <ETag>")
        parts.append((part_number, etag.strip('"')))
    return parts

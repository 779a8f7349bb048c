"""The pure S3 cores: checksums, ranges and preconditions, ListObjectsV2 pages, routing, multipart rules, XML."""

from __future__ import annotations

import dataclasses
import hashlib
from email.utils import formatdate

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataplane.s3 import checksums, errors, listing, multipart, ranges, routing, xmlbodies
from dataplane.s3.backend import ObjectInfo, PartInfo
from dataplane.s3.checksums import Algorithm
from dataplane.s3.errors import STATUS, ErrorCode, S3Error
from dataplane.s3.routing import Operation

# ---- checksums -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("algorithm", "check"), [
    (Algorithm.CRC32, 0xCBF43926), (Algorithm.CRC32C, 0xE3069283), (Algorithm.CRC64NVME, 0xAE8B14860A799888),
], ids=str)
def test_crc_check_values(algorithm: Algorithm, check: int) -> None:
    """The CRC catalogue's check value: the CRC of the ASCII string "123456789"."""
    digest = checksums.new_checksum(algorithm)
    digest.update(b"1234")
    digest.update(b"56789")  # incremental update equals one-shot
    assert int.from_bytes(digest.digest(), "big") == check


@given(pieces=st.lists(st.binary(max_size=300), max_size=5))
@settings(max_examples=100, deadline=None)
def test_crc32c_in_c_equals_the_pure_table(pieces: list[bytes]) -> None:
    fast, pure = checksums.new_checksum(Algorithm.CRC32C), checksums.pure_crc32c()
    for piece in pieces:
        fast.update(piece)
        pure.update(piece)
    assert fast.digest() == pure.digest()


def test_crc32c_runs_in_c_when_google_crc32c_is_installed() -> None:
    """The coordinator extra installs google-crc32c: CRC32C (boto3's default with awscrt) must not be pure Python."""
    import google_crc32c  # a dependency of the dev install (make test): never skipped, a missing one fails here

    assert checksums.slow(Algorithm.CRC32C) is (google_crc32c.implementation != "c")
    assert checksums.slow(Algorithm.CRC64NVME)
    assert not any(checksums.slow(a) for a in (Algorithm.CRC32, Algorithm.SHA1, Algorithm.SHA256))


def test_crc32c_known_vector() -> None:
    # RFC 3720 (iSCSI) appendix B.4: 32 bytes of zeros -> 0x8A9136AA
    assert checksums.compute(Algorithm.CRC32C, bytes(32)) == "ipE2qg=="


def test_header_names() -> None:
    assert checksums.from_header_name("X-Amz-Checksum-CRC64NVME") is Algorithm.CRC64NVME
    assert checksums.from_header_name("x-amz-checksum-md5") is None
    assert checksums.from_header_name("content-md5") is None


# ---- ranges ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("header", "size", "expected"), [
    (None, 10, None), ("bytes=0-0", 10, (0, 0)), ("bytes=2-5", 10, (2, 5)), ("bytes=5-", 10, (5, 9)),
    ("bytes=-3", 10, (7, 9)), ("bytes=-30", 10, (0, 9)), ("bytes=8-100", 10, (8, 9)),
    ("bytes=10-", 10, "416"), ("bytes=-0", 10, "416"), ("bytes=0-", 0, "416"), ("bytes=-1", 0, "416"),
    ("bytes=5-2", 10, None), ("bytes=0-1,4-5", 10, None), ("items=0-1", 10, None), ("bytes=-", 10, None),
    ("bytes=a-b", 10, None), ("bytes=-" + "9" * 4400, 10, None), ("bytes=" + "9" * 4400 + "-", 10, None),
    ("bytes=\u0663-", 10, None), ("bytes=-\u00b2", 10, None),
], ids=lambda v: repr(v)[:16])
def test_parse_range(header: str | None, size: int, expected: object) -> None:
    got = ranges.parse_range(header, size)
    if expected == "416":
        assert isinstance(got, S3Error) and got.code is ErrorCode.INVALID_RANGE and got.status == 416
    elif expected is None:
        assert got is None
    else:
        assert isinstance(got, ranges.ByteRange) and (got.start, got.end) == expected


T = 1_800_000_000.0
BEFORE, AT, AFTER = formatdate(T - 60, usegmt=True), formatdate(T, usegmt=True), formatdate(T + 60, usegmt=True)


@pytest.mark.parametrize(("conditions", "read", "expected"), [
    (ranges.Preconditions(), True, None),
    (ranges.Preconditions(if_match='"abc"'), True, None),
    (ranges.Preconditions(if_match='"x", "abc"'), True, None),
    (ranges.Preconditions(if_match="*"), True, None),
    (ranges.Preconditions(if_match='"nope"'), True, ErrorCode.PRECONDITION_FAILED),
    (ranges.Preconditions(if_none_match='"abc"'), True, ErrorCode.NOT_MODIFIED),
    (ranges.Preconditions(if_none_match='W/"abc"'), True, ErrorCode.NOT_MODIFIED),
    (ranges.Preconditions(if_none_match='"abc"'), False, ErrorCode.PRECONDITION_FAILED),
    (ranges.Preconditions(if_none_match='"other"'), True, None),
    (ranges.Preconditions(if_modified_since=AT), True, ErrorCode.NOT_MODIFIED),
    (ranges.Preconditions(if_modified_since=BEFORE), True, None),
    (ranges.Preconditions(if_modified_since=AT), False, None),
    (ranges.Preconditions(if_unmodified_since=BEFORE), True, ErrorCode.PRECONDITION_FAILED),
    (ranges.Preconditions(if_unmodified_since=AFTER), True, None),
    (ranges.Preconditions(if_unmodified_since="not a date"), True, None),
    # RFC 9110 §13.2.2: If-Match, when present, decides instead of If-Unmodified-Since ...
    (ranges.Preconditions(if_match='"abc"', if_unmodified_since=BEFORE), True, None),
    # ... and If-None-Match instead of If-Modified-Since
    (ranges.Preconditions(if_none_match='"other"', if_modified_since=AFTER), True, None),
    (ranges.Preconditions(if_match='"nope"', if_none_match='"abc"'), True, ErrorCode.PRECONDITION_FAILED),
], ids=lambda v: repr(v) if not isinstance(v, ranges.Preconditions) else "")
def test_preconditions(conditions: ranges.Preconditions, read: bool, expected: ErrorCode | None) -> None:
    verdict = ranges.evaluate(conditions, etag="abc", last_modified=T + 0.7, read=read)
    assert (verdict.code if verdict else None) is expected


# ---- listing ---------------------------------------------------------------------------------------------------

def objects(*keys: str) -> list[ObjectInfo]:
    return [ObjectInfo(k, 1, "e", T) for k in sorted(keys)]


def pages(keys: list[str], query: listing.ListQuery) -> list[listing.ListPage]:
    out: list[listing.ListPage] = []
    token = None
    while True:
        q = dataclasses.replace(query, continuation_token=token)
        resume = listing.resume_point(q)
        assert not isinstance(resume, S3Error)
        page = listing.list_page(objects(*keys), q, resume)
        out.append(page)
        if not page.is_truncated:
            return out
        token = page.next_token
        assert token is not None


def flat(result: list[listing.ListPage]) -> tuple[list[str], list[str]]:
    return ([o.key for p in result for o in p.contents], [c for p in result for c in p.common_prefixes])


def test_delimiter_rolls_up_and_continues_past_a_prefix() -> None:
    keys = ["a", "b/1", "b/2", "b/3", "c/x/y", "d"]
    result = pages(keys, listing.ListQuery(delimiter="/", max_keys=1))
    assert [len(p.contents) + len(p.common_prefixes) for p in result] == [1, 1, 1, 1]
    assert flat(result) == (["a", "d"], ["b/", "c/"])


def test_a_key_equal_to_the_prefix_is_a_key() -> None:
    keys = ["p/", "p/a", "p/b/c"]
    assert flat(pages(keys, listing.ListQuery(prefix="p/", delimiter="/", max_keys=1))) == (["p/", "p/a"], ["p/b/"])


def test_start_after_and_max_keys_zero() -> None:
    assert flat(pages(["a", "b", "c"], listing.ListQuery(start_after="a"))) == (["b", "c"], [])
    page = listing.list_page(objects("a"), listing.ListQuery(max_keys=0), listing.Resume("", False))
    # S3 answers max-keys=0 with an empty page that is not truncated: a client looping while IsTruncated would
    # otherwise have no NextContinuationToken to follow
    assert page == listing.ListPage((), (), False, None)


def test_bad_continuation_token() -> None:
    assert isinstance(listing.decode_token("!!not-base64"), S3Error)
    assert isinstance(listing.decode_token("eHl6"), S3Error)  # "xyz": no kind marker


@settings(max_examples=150, deadline=None)
@given(keys=st.sets(st.text(alphabet="ab/.", min_size=1, max_size=6), max_size=25),
       prefix=st.sampled_from(["", "a", "a/", "b/"]), delimiter=st.sampled_from(["", "/", "."]),
       max_keys=st.integers(min_value=1, max_value=7))
def test_pagination_never_loses_or_repeats(keys: set[str], prefix: str, delimiter: str, max_keys: int) -> None:
    """Paging with any max-keys yields exactly what one unlimited listing yields, in order, each entry once."""
    whole = pages(sorted(keys), listing.ListQuery(prefix=prefix, delimiter=delimiter, max_keys=1000))
    assert len(whole) == 1
    paged = pages(sorted(keys), listing.ListQuery(prefix=prefix, delimiter=delimiter, max_keys=max_keys))
    assert flat(paged) == flat(whole)
    assert all(len(p.contents) + len(p.common_prefixes) <= max_keys for p in paged)
    expected_keys = sorted(k for k in keys if k.startswith(prefix) and not (delimiter and delimiter in k[len(prefix):]))
    assert flat(whole)[0] == expected_keys


# ---- routing ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path", "query", "copy", "expected"), [
    ("GET", "/", {}, False, Operation.LIST_BUCKETS),
    ("PUT", "/bkt", {}, False, Operation.CREATE_BUCKET),
    ("HEAD", "/bkt", {}, False, Operation.HEAD_BUCKET),
    ("DELETE", "/bkt/", {}, False, Operation.DELETE_BUCKET),
    ("GET", "/bkt", {"list-type": "2", "prefix": "a"}, False, Operation.LIST_OBJECTS_V2),
    ("GET", "/bkt", {"location": ""}, False, Operation.GET_BUCKET_LOCATION),
    ("POST", "/bkt", {"delete": ""}, False, Operation.DELETE_OBJECTS),
    ("PUT", "/bkt/k", {}, False, Operation.PUT_OBJECT),
    ("PUT", "/bkt/k", {}, True, Operation.COPY_OBJECT),
    ("GET", "/bkt/a/b%20c", {}, False, Operation.GET_OBJECT),
    ("HEAD", "/bkt/k", {}, False, Operation.HEAD_OBJECT),
    ("DELETE", "/bkt/k", {}, False, Operation.DELETE_OBJECT),
    ("POST", "/bkt/k", {"uploads": ""}, False, Operation.CREATE_MULTIPART_UPLOAD),
    ("PUT", "/bkt/k", {"uploadId": "u", "partNumber": "1"}, False, Operation.UPLOAD_PART),
    ("POST", "/bkt/k", {"uploadId": "u"}, False, Operation.COMPLETE_MULTIPART_UPLOAD),
    ("DELETE", "/bkt/k", {"uploadId": "u"}, False, Operation.ABORT_MULTIPART_UPLOAD),
    ("GET", "/bkt/k", {"uploadId": "u"}, False, Operation.LIST_PARTS),
    ("GET", "/bkt", {}, False, ErrorCode.NOT_IMPLEMENTED),
    ("GET", "/bkt/k", {"tagging": ""}, False, ErrorCode.NOT_IMPLEMENTED),
    ("PUT", "/bkt", {"versioning": ""}, False, ErrorCode.NOT_IMPLEMENTED),
    ("PUT", "/bkt/k", {"uploadId": "u", "partNumber": "1"}, True, ErrorCode.NOT_IMPLEMENTED),
    ("POST", "/", {}, False, ErrorCode.METHOD_NOT_ALLOWED),
    ("PATCH", "/bkt/k", {}, False, ErrorCode.METHOD_NOT_ALLOWED),
    ("GET", "/Bad_Bucket/k", {}, False, ErrorCode.INVALID_BUCKET_NAME),
    ("GET", "/ab/k", {}, False, ErrorCode.INVALID_BUCKET_NAME),
    ("GET", "/192.168.0.1/k", {}, False, ErrorCode.INVALID_BUCKET_NAME),
    ("GET", "/bkt/" + "k" * 1025, {}, False, ErrorCode.KEY_TOO_LONG),
], ids=lambda v: v if isinstance(v, str) and len(v) < 30 else None)
def test_route(method: str, path: str, query: dict[str, str], copy: bool, expected: object) -> None:
    got = routing.route(method, path, query, copy_source=copy)
    if isinstance(expected, ErrorCode):
        assert isinstance(got, S3Error) and got.code is expected
    else:
        assert isinstance(got, routing.Route) and got.operation is expected


def test_route_decodes_the_key_and_supports_virtual_hosts() -> None:
    got = routing.route("GET", "/bkt/a/b%20c%2Bd", {})
    assert isinstance(got, routing.Route) and (got.bucket, got.key) == ("bkt", "a/b c+d")
    virtual = routing.route("GET", "/dir/file", {}, host="photos.s3.home.arpa:9000", base_domains=("s3.home.arpa",))
    assert isinstance(virtual, routing.Route) and (virtual.bucket, virtual.key) == ("photos", "dir/file")
    path_style = routing.route("GET", "/photos/dir/file", {}, host="s3.home.arpa:9000",
                               base_domains=("s3.home.arpa",))
    assert isinstance(path_style, routing.Route) and (path_style.bucket, path_style.key) == ("photos", "dir/file")


# ---- multipart -------------------------------------------------------------------------------------------------

def part(number: int, data: bytes) -> PartInfo:
    return PartInfo(number, len(data), hashlib.md5(data).hexdigest(), T)


def test_multipart_etag_is_md5_of_md5s() -> None:
    datas = [b"a" * 10, b"b" * 10, b"c"]
    expected = hashlib.md5(b"".join(hashlib.md5(d).digest() for d in datas)).hexdigest() + "-3"
    uploaded = {n: part(n, d) for n, d in enumerate(datas, 1)}
    plan = multipart.assemble([(n, p.etag) for n, p in uploaded.items()], uploaded, min_part_size=10)
    assert isinstance(plan, multipart.Assembly)
    assert (plan.etag, plan.size, plan.parts) == (expected, 21, (1, 2, 3))


@pytest.mark.parametrize(("requested", "expected"), [
    ([], ErrorCode.MALFORMED_XML),
    ([(2, "e2"), (1, "e1")], ErrorCode.INVALID_PART_ORDER),
    ([(1, "e1"), (1, "e1")], ErrorCode.INVALID_PART_ORDER),
    ([(1, "e1"), (3, "e3")], ErrorCode.INVALID_PART),
    ([(1, "wrong")], ErrorCode.INVALID_PART),
    ([(1, "e1"), (2, "e2")], ErrorCode.ENTITY_TOO_SMALL),
    ([(2, "e2")], None),
], ids=["empty", "descending", "repeated", "missing", "etag", "small", "single-small-ok"])
def test_assemble_rules(requested: list[tuple[int, str]], expected: ErrorCode | None) -> None:
    uploaded = {1: PartInfo(1, 100, "e1", T), 2: PartInfo(2, 100, "e2", T)}
    got = multipart.assemble(requested, uploaded, min_part_size=1000)
    assert (got.code if isinstance(got, S3Error) else None) is expected


@pytest.mark.parametrize("value", [None, "0", "10001", "x", "-1", "\u00b2", "\u0663", "+5", " 5", "1_0", "9" * 5000],
                         ids=lambda v: repr(v)[:16])
def test_part_number_bounds(value: str | None) -> None:
    assert isinstance(multipart.parse_part_number(value), S3Error)


@pytest.mark.parametrize(("value", "expected"), [
    ("0", 0), ("0042", 42), ("1000", 1000), (None, None), ("", None), ("\u00b2", None), ("\u0663", None), ("+5", None),
    (" 5", None), ("5 ", None), ("1_0", None), ("-1", None), ("12345", None), ("9" * 5000, None),
], ids=lambda v: repr(v)[:16])
def test_whole_reads_only_ascii_digits(value: str | None, expected: int | None) -> None:
    assert errors.whole(value, 4) == expected


@pytest.mark.parametrize("value", ["\u00b2", "-1", "+5", "1_0", "x", "9" * 4400, "99999999999"],
                         ids=lambda v: repr(v)[:16])
def test_bad_max_keys_is_invalid_argument(value: str) -> None:
    got = listing.parse_max_keys(value)
    assert isinstance(got, S3Error) and got.code is ErrorCode.INVALID_ARGUMENT


def test_non_ascii_part_number_in_complete_body() -> None:
    body = b"<CompleteMultipartUpload><Part><PartNumber>\xc2\xb2</PartNumber><ETag>e</ETag></Part>" \
           b"</CompleteMultipartUpload>"
    got = xmlbodies.parse_complete(body)
    assert isinstance(got, S3Error) and got.code is ErrorCode.MALFORMED_XML


# ---- XML -------------------------------------------------------------------------------------------------------

def test_parse_delete_with_and_without_namespace() -> None:
    plain = b"<Delete><Quiet>true</Quiet><Object><Key>a</Key></Object><Object><Key>b &amp; c</Key></Object></Delete>"
    namespaced = (b'<?xml version="1.0"?><Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                  b"<Object><Key>a</Key></Object></Delete>")
    assert xmlbodies.parse_delete(plain) == xmlbodies.DeleteRequest(("a", "b & c"), True)
    assert xmlbodies.parse_delete(namespaced) == xmlbodies.DeleteRequest(("a",), False)


@pytest.mark.parametrize("body", [
    b'<?xml version="1.0"?><!DOCTYPE lol [<!ENTITY lol "lol">]><Delete><Object><Key>&lol;</Key></Object></Delete>',
    b"<Delete><Object><Key>a</Key></Object>",
    b"<Other/>",
    b"<Delete></Delete>",
    b"<Delete><Object></Object></Delete>",
], ids=["entity", "unclosed", "root", "empty", "no-key"])
def test_bad_delete_bodies(body: bytes) -> None:
    got = xmlbodies.parse_delete(body)
    assert isinstance(got, S3Error) and got.code is ErrorCode.MALFORMED_XML


_ENTITY_DELETE = ('<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;'
                  '&a;&a;&a;&a;&a;&a;&a;">]><Delete><Object><Key>&b;</Key></Object></Delete>')


@pytest.mark.parametrize("body", [
    _ENTITY_DELETE.encode("utf-16"),  # with a BOM
    _ENTITY_DELETE.encode("utf-16-le"),
    _ENTITY_DELETE.encode("utf-16-be"),
    _ENTITY_DELETE.replace("UTF-16", "UTF-32").encode("utf-32"),
    "<?xml version='1.0' encoding='ISO-8859-1'?><Delete><Object><Key>\u00e9</Key></Object></Delete>".encode("latin-1"),
    b"\xef\xbb\xbf<!doctype d><Delete><Object><Key>a</Key></Object></Delete>",
], ids=["utf16-bom", "utf16le", "utf16be", "utf32", "latin1", "utf8-bom-doctype"])
def test_xml_bodies_must_be_utf8_and_without_doctype(body: bytes) -> None:
    """A UTF-16 body hid its DOCTYPE from a byte search and its entities expanded; now nothing but UTF-8 is parsed."""
    got = xmlbodies.parse_delete(body)
    assert isinstance(got, S3Error) and got.code is ErrorCode.MALFORMED_XML


def test_utf8_declared_and_bom_bodies_still_parse() -> None:
    for body in (b'<?xml version="1.0" encoding="utf-8"?><Delete><Object><Key>\xc3\xa9</Key></Object></Delete>',
                 b"\xef\xbb\xbf<Delete><Object><Key>\xc3\xa9</Key></Object></Delete>"):
        assert xmlbodies.parse_delete(body) == xmlbodies.DeleteRequest(("\u00e9",), False)


def test_delete_keys_are_capped_in_length_and_count() -> None:
    def body(keys: list[str]) -> bytes:
        return ("<Delete>" + "".join(f"<Object><Key>{k}</Key></Object>" for k in keys) + "</Delete>").encode()

    assert xmlbodies.parse_delete(body(["\u00e9" * 512])) == xmlbodies.DeleteRequest(("\u00e9" * 512,), False)
    too_long = xmlbodies.parse_delete(body(["\u00e9" * 513]))  # 1026 bytes in UTF-8
    assert isinstance(too_long, S3Error) and too_long.code is ErrorCode.KEY_TOO_LONG
    ok = xmlbodies.parse_delete(body([f"k{i}" for i in range(1000)]))
    assert not isinstance(ok, S3Error) and len(ok.keys) == 1000
    too_many = xmlbodies.parse_delete(body([f"k{i}" for i in range(1001)]))
    assert isinstance(too_many, S3Error) and too_many.code is ErrorCode.MALFORMED_XML


def test_parse_complete() -> None:
    body = (b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>\"aa\"</ETag></Part>"
            b"<Part><ETag>bb</ETag><PartNumber>2</PartNumber></Part></CompleteMultipartUpload>")
    assert xmlbodies.parse_complete(body) == [(1, "aa"), (2, "bb")]
    assert isinstance(xmlbodies.parse_complete(b"<CompleteMultipartUpload><Part><PartNumber>x</PartNumber>"
                                               b"</Part></CompleteMultipartUpload>"), S3Error)


def test_error_document_and_status() -> None:
    err = S3Error(ErrorCode.NO_SUCH_KEY, "the specified key does not exist", "/b/k")
    doc = xmlbodies.error_document(err, "req1")
    assert b"<Code>NoSuchKey</Code>" in doc and b"<Resource>/b/k</Resource>" in doc and b"<RequestId>req1" in doc
    assert err.status == 404
    assert all(code in STATUS for code in ErrorCode)


def test_listing_document_url_encodes_keys() -> None:
    page = listing.ListPage((ObjectInfo("a b/\x01", 3, "e", T),), ("p q/",), False, None)
    doc = xmlbodies.list_objects_v2_document("bkt", listing.ListQuery(delimiter="/"), page, url_encode=True)
    assert b"<Key>a%20b/%01</Key>" in doc and b"<Prefix>p%20q/</Prefix>" in doc and b"<EncodingType>url" in doc


def test_past_four_parameters_go_by_name() -> None:
    """STYLE §6: a constructor or function of more than four parameters takes the rest by keyword, so a call like
    ObjectInfo(key, size, etag, now, type, meta, checksum) cannot put a value in the wrong field."""
    from dataplane.s3 import sigv4
    from dataplane.s3.backend import UploadInfo
    from dataplane.s3.handlers import Call, Service
    from dataplane.s3.sigv4 import Authenticated, Payload, Request

    route = routing.Route(Operation.GET_OBJECT, "b", "k")
    no_headers: dict[str, str] = {}
    # mypy refuses each of these calls too (call-arg); the runtime check keeps the rule for untyped callers
    for build in (lambda: ObjectInfo("k", 1, "e", T, "text/plain"),  # type: ignore[call-arg]
                  lambda: UploadInfo("u", "b", "k", T, "text/plain"),  # type: ignore[call-arg]
                  lambda: Call(route, no_headers.get, T, "AKID", None),  # type: ignore[call-arg]
                  lambda: listing.ListQuery("p"),  # type: ignore[call-arg]
                  lambda: Authenticated("AKID", Payload.UNSIGNED, None),  # type: ignore[call-arg]
                  lambda: Service(object(), str, "us-east-1"),  # type: ignore[call-arg, arg-type]
                  lambda: sigv4.canonical_request(Request("GET", "/", "", ()), "/", "", [], "")):  # type: ignore[misc]
        with pytest.raises(TypeError):
            build()

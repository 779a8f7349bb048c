"""A small S3 client for `cloudless storage` (issue 20): SigV4-signed requests over stdlib `http.client`, and the
admin's S3 credentials file.

An adapter (STYLE §1) like `cloudless.client`: admins run the CLI where only the CLI is installed, so no boto3 and
no aiohttp. The signature is dataplane.s3.sigv4's own maths (the canonical request, the key chain, the string to
sign) that the cluster's endpoint verifies with; here it is only put together for the sending side. Bodies go with
their SHA-256 signed (`x-amz-content-sha256`), so the endpoint checks every byte that arrives. Failures become
`cloudless.client` errors with a hint saying what to do next: `S3Error` for S3's `<Error>` answers,
`ConnectionFailed` when the endpoint cannot be reached.

Credentials, per setting: flag > environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_REGION, AWS_CA_BUNDLE: the names boto3 and the AWS CLI read, so a workload's storage secret works here too) >
the storage config file (--storage-config, else CLOUDLESS_STORAGE_CONFIG, else `storage.json` next to the CLI
config; `cloudless up` writes it with the cluster's admin access key, mode 0600).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import json
import socket
import ssl
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from broker.files import write_private
from cloudless import __version__
from cloudless.client import (
    ClientError,
    ConfigError,
    ConnectionFailed,
    ProtocolError,
    default_config_path,
    string_settings,
)
from dataplane.s3 import sigv4

DEFAULT_REGION = "us-east-1"
TIMEOUT_S = 60.0
READ_SIZE = 1024 * 1024
_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
_CONFIG_HINT = ("`cloudless up` writes storage.json next to the CLI config; or set AWS_ENDPOINT_URL, "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (a key from `cloudless storage keys create`)")


class S3Error(ClientError):
    """The endpoint refused a request with S3's `<Error>`: `code` is S3's (NoSuchKey, AccessDenied, ...)."""

    def __init__(self, status: int, code: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"{code}: {message}" if message else code, hint=hint)
        self.status = status
        self.code = code


# ---- configuration --------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StorageConfig:
    endpoint: str
    access_key: str
    secret: str = field(repr=False)  # never in a repr or a log line
    region: str = DEFAULT_REGION
    cas: tuple[str, ...] = ()  # CA bundles to trust: the storage config's (the cluster CA), then AWS_CA_BUNDLE
    source: str = ""  # where the settings came from, for messages

    @property
    def ca(self) -> str | None:
        return self.cas[0] if self.cas else None


def storage_config_path(env: Mapping[str, str], cli_config: str | None = None) -> Path:
    """storage.json beside the CLI config: the one --config / CLOUDLESS_CONFIG names, else the default one."""
    explicit = cli_config or env.get("CLOUDLESS_CONFIG")
    return (Path(explicit).expanduser() if explicit else default_config_path(env)).parent / "storage.json"


def check_endpoint(url: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.path not in ("", "/") \
            or parsed.query or parsed.fragment:
        raise ConfigError(f"S3 endpoint {url!r} is not http(s)://HOST:PORT", hint="e.g. https://127.0.0.1:9000")
    return url.rstrip("/")


def write_storage_config(path: str | Path, *, endpoint: str, access_key: str, secret: str,
                         region: str = DEFAULT_REGION, ca: str | None = None) -> None:
    """The admin's S3 credentials as `cloudless storage` reads them: a 0600 JSON file, written atomically."""
    doc = {"endpoint": check_endpoint(endpoint), "accessKeyId": access_key, "secretAccessKey": secret,
           "region": region, **({"ca": str(ca)} if ca else {})}
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(target, json.dumps(doc, indent=2) + "\n")


def _read_file(path: Path, *, required: bool) -> dict[str, str]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if required:
            raise ConfigError(f"storage config {path} does not exist", hint=_CONFIG_HINT) from None
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read storage config {path}: {exc}", hint=_CONFIG_HINT) from None
    if not isinstance(doc, dict):
        raise ConfigError(f"storage config {path} must hold a JSON object")
    return string_settings(doc, ("endpoint", "accessKeyId", "secretAccessKey", "region", "ca"),
                           f"storage config {path}")


def resolve_storage_config(*, endpoint: str | None, config: str | None, env: Mapping[str, str],
                           cli_config: str | None = None) -> StorageConfig:
    """Flag > environment > file, per setting; ConfigError naming what is missing. `config`: --storage-config;
    `cli_config`: --config (storage.json is looked for beside it)."""
    explicit = config or env.get("CLOUDLESS_STORAGE_CONFIG") or None
    path = Path(explicit).expanduser() if explicit else storage_config_path(env, cli_config)
    from_file = _read_file(path, required=explicit is not None)
    settings = {
        "endpoint": endpoint or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or from_file.get(
            "endpoint"),
        "accessKeyId": env.get("AWS_ACCESS_KEY_ID") or from_file.get("accessKeyId"),
        "secretAccessKey": env.get("AWS_SECRET_ACCESS_KEY") or from_file.get("secretAccessKey"),
    }
    if missing := [k for k, v in settings.items() if not v]:
        where = f" (read {path})" if from_file else f" ({path} does not exist)"
        raise ConfigError(f"no S3 {', '.join(missing)} configured{where}", hint=_CONFIG_HINT)
    return StorageConfig(
        check_endpoint(str(settings["endpoint"])), str(settings["accessKeyId"]), str(settings["secretAccessKey"]),
        region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or from_file.get("region") or DEFAULT_REGION,
        # both trusted: a machine-wide AWS_CA_BUNDLE (some set one for a proxy) must not hide the cluster CA
        cas=tuple(dict.fromkeys(c for c in (from_file.get("ca"), env.get("AWS_CA_BUNDLE")) if c)),
        source=str(path) if from_file else "environment")


# ---- signing --------------------------------------------------------------------------------------------------

def sign_headers(method: str, path: str, query: Sequence[tuple[str, str]], headers: Mapping[str, str], *,
                 payload_sha256: str, access_key: str, secret: str, region: str, now: float) -> dict[str, str]:
    """`headers` plus x-amz-date, x-amz-content-sha256 and the SigV4 `Authorization` covering all of them.
    `path` is decoded (`/bucket/key`); it is encoded once here, as S3 signs it."""
    stamp = dt.datetime.fromtimestamp(now, dt.UTC)
    amz_date = stamp.strftime("%Y%m%dT%H%M%SZ")
    out = {**headers, "x-amz-date": amz_date, "x-amz-content-sha256": payload_sha256}
    signed = sorted(k.lower() for k in out)
    raw_path = sigv4.uri_encode(path, keep_slash=True)
    request = sigv4.Request(method, raw_path, "", tuple(out.items()))
    canonical = sigv4.canonical_request(request, raw_path, sigv4.canonical_query(query), signed=signed,
                                        payload_hash=payload_sha256)
    scope = f"{stamp:%Y%m%d}/{region}/s3/aws4_request"
    key = sigv4.signing_key(secret, f"{stamp:%Y%m%d}", region, "s3")
    signature = sigv4.sign(key, sigv4.string_to_sign(amz_date, scope, canonical))
    out["Authorization"] = (f"{sigv4.ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={';'.join(signed)}, "
                            f"Signature={signature}")
    return out


# ---- answers --------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Entry:
    key: str
    size: int
    modified: str
    etag: str


@dataclass(frozen=True, slots=True)
class Page:
    entries: list[Entry]
    prefixes: list[str]
    next_token: str | None


def _text(node: ET.Element, tag: str) -> str:
    found = node.find(_NS + tag)
    if found is None:
        found = node.find(tag)
    return (found.text or "") if found is not None else ""


def _all(node: ET.Element, tag: str) -> list[ET.Element]:
    return node.findall(_NS + tag) + node.findall(tag)


def _xml(raw: bytes, what: str) -> ET.Element:
    try:
        return ET.fromstring(raw)  # noqa: S314 (the cluster's own endpoint, over TLS, after a signed request)
    except ET.ParseError:
        raise ProtocolError(f"{what}: the S3 endpoint did not answer with XML",
                            hint="is the endpoint a Cloudless S3 port?") from None


def _hint(code: str, bucket: str, key: str) -> str | None:
    where = f"s3://{bucket}/{key.rsplit('/', 1)[0] + '/' if '/' in key else ''}"
    match code:
        case "NoSuchBucket":
            return "list buckets with `cloudless storage buckets`; create one with `cloudless storage buckets create "\
                f"{bucket or 'NAME'}`"
        case "NoSuchKey" | "404":
            return f"list what is there with `cloudless storage ls {where}`"
        case "AccessDenied":
            return ("this access key has no grant for that (see `cloudless storage keys ls`); make one with "
                    "`cloudless storage keys create NAME --bucket BUCKET:rw`")
        case "InvalidAccessKeyId" | "SignatureDoesNotMatch":
            return "the access key or its secret is wrong or was deleted: check storage.json / AWS_ACCESS_KEY_ID and "\
                "AWS_SECRET_ACCESS_KEY (keys: `cloudless storage keys ls`)"
        case "RequestTimeTooSkewed":
            return "this machine's clock is off by more than 15 minutes: fix it (NTP) and retry"
        case "BucketNotEmpty":
            return f"delete its objects first: `cloudless storage rm --recursive s3://{bucket}/`"
        case "EntityTooLarge":
            return "a single object is at most 5 GiB"
    return None


def _tls(cas: Sequence[str]) -> ssl.SSLContext:
    context = ssl.create_default_context()
    for path in cas:
        try:
            context.load_verify_locations(cafile=path)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the CA bundle {path}: {getattr(exc, 'strerror', None) or exc}",
                              hint="fix \"ca\" in storage.json or AWS_CA_BUNDLE (the cluster CA: `cloudless up` "
                              "printed its path)") from None
    return context


# ---- the client -----------------------------------------------------------------------------------------------

class S3Client:
    """Synchronous S3 over one kept-alive connection (re-opened when the server closed it)."""

    def __init__(self, cfg: StorageConfig, *, clock: Callable[[], float], timeout: float = TIMEOUT_S) -> None:
        self.cfg = cfg
        self.clock = clock
        self.timeout = timeout
        parts = urllib.parse.urlsplit(cfg.endpoint)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        self._netloc = parts.netloc
        self._ssl = _tls(cfg.cas) if self._https else None
        self._conn: http.client.HTTPConnection | None = None

    def __repr__(self) -> str:
        return f"S3Client({self.cfg.endpoint!r}, access_key={self.cfg.access_key!r})"

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = (http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout, context=self._ssl)
                          if self._https else http.client.HTTPConnection(self._host, self._port, timeout=self.timeout))
        return self._conn

    def request(self, method: str, bucket: str = "", key: str = "", *, query: Sequence[tuple[str, str]] = (),
                body: bytes = b"", headers: Mapping[str, str] | None = None,
                ok: tuple[int, ...] = (200, 204, 206)) -> http.client.HTTPResponse:
        """One signed request; the response is returned open (read it, or `drain` it) for a status in `ok`."""
        path = "/" + bucket + ("/" + key if key else "")
        signed = sign_headers(method, path, query, {"host": self._netloc, **(headers or {})},
                              payload_sha256=hashlib.sha256(body).hexdigest(), access_key=self.cfg.access_key,
                              secret=self.cfg.secret, region=self.cfg.region, now=self.clock())
        target = sigv4.uri_encode(path, keep_slash=True)
        if query:
            target += "?" + "&".join(f"{sigv4.uri_encode(k)}={sigv4.uri_encode(v)}" for k, v in query)
        signed["User-Agent"] = f"cloudless-cli/{__version__}"
        signed["Content-Length"] = str(len(body))
        for attempt in (1, 2):  # a kept-alive connection the server closed meanwhile fails once: reconnect
            conn = self._connection()
            try:
                conn.request(method, target, body=body or None, headers=signed)
                resp = conn.getresponse()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                if attempt == 2:
                    raise self._unreachable(exc) from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise self._unreachable(exc) from None
        if resp.status not in ok:
            raw = resp.read()
            raise self._error(resp.status, raw, method, bucket, key)
        return resp

    def _unreachable(self, exc: BaseException) -> ConnectionFailed:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return ConnectionFailed(f"the S3 endpoint {self.cfg.endpoint} has a certificate this machine does not "
                                    f"trust ({exc.verify_message})",
                                    hint="point AWS_CA_BUNDLE (or \"ca\" in storage.json) at the cluster CA "
                                    "(`cloudless up` printed its path)")
        if isinstance(exc, ConnectionRefusedError):
            return ConnectionFailed(f"cannot connect to the S3 endpoint {self.cfg.endpoint}: connection refused",
                                    hint="is the cluster serving S3? `cloudless up --s3-port 9000` (or "
                                    "`cloudless coordinator --s3-port PORT`); `cloudless storage status` says")
        if isinstance(exc, (TimeoutError, socket.timeout)):
            return ConnectionFailed(f"no answer from the S3 endpoint {self.cfg.endpoint} in time",
                                    hint="it may be overloaded; retry, or check the coordinator's log")
        text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return ConnectionFailed(f"cannot reach the S3 endpoint {self.cfg.endpoint}: {text}",
                                hint=f"check the endpoint ({self.cfg.source or 'AWS_ENDPOINT_URL'}) and your network")

    def _error(self, status: int, raw: bytes, method: str, bucket: str, key: str) -> S3Error:
        code, message = str(status), ""
        if raw.lstrip().startswith(b"<"):
            try:
                doc = ET.fromstring(raw)  # noqa: S314 (see _xml)
                code, message = _text(doc, "Code") or code, _text(doc, "Message")
            except ET.ParseError:
                pass
        elif status == 404 and method == "HEAD":
            code = "NoSuchKey" if key else "NoSuchBucket"
        target = f"s3://{bucket}/{key}" if bucket else self.cfg.endpoint
        return S3Error(status, code, f"{message or 'refused'} ({method} {target})", hint=_hint(code, bucket, key))

    # ---- operations -------------------------------------------------------------------------------------------

    def list_buckets(self) -> list[str]:
        doc = _xml(self.request("GET").read(), "ListBuckets")
        return [_text(b, "Name") for b in doc.iter() if b.tag in (_NS + "Bucket", "Bucket")]

    def list_page(self, bucket: str, prefix: str = "", *, delimiter: str = "", token: str | None = None,
                  max_keys: int = 1000) -> Page:
        query = [("list-type", "2"), ("encoding-type", "url"), ("max-keys", str(max_keys))]
        query += [("prefix", prefix)] if prefix else []
        query += [("delimiter", delimiter)] if delimiter else []
        query += [("continuation-token", token)] if token else []
        doc = _xml(self.request("GET", bucket, query=sorted(query)).read(), "ListObjectsV2")
        unq = urllib.parse.unquote
        entries = [Entry(unq(_text(c, "Key")), int(_text(c, "Size") or 0), _text(c, "LastModified"),
                         _text(c, "ETag").strip('"')) for c in _all(doc, "Contents")]
        prefixes = [unq(_text(p, "Prefix")) for p in _all(doc, "CommonPrefixes")]
        truncated = _text(doc, "IsTruncated") == "true"
        return Page(entries, prefixes, _text(doc, "NextContinuationToken") or None if truncated else None)

    def list_all(self, bucket: str, prefix: str = "", *, delimiter: str = "") -> Iterator[Page]:
        token: str | None = None
        while True:
            page = self.list_page(bucket, prefix, delimiter=delimiter, token=token)
            yield page
            if not page.next_token:
                return
            token = page.next_token

    def head(self, bucket: str, key: str) -> int:
        resp = self.request("HEAD", bucket, key)
        resp.read()
        return int(resp.headers.get("Content-Length") or 0)

    def put(self, bucket: str, key: str, data: bytes, *, content_type: str | None = None) -> str:
        headers = {"Content-Type": content_type} if content_type else {}
        resp = self.request("PUT", bucket, key, body=data, headers=headers)
        resp.read()
        return (resp.headers.get("ETag") or "").strip('"')

    def copy(self, src_bucket: str, src_key: str, bucket: str, key: str) -> None:
        source = sigv4.uri_encode(f"/{src_bucket}/{src_key}", keep_slash=True)
        self.request("PUT", bucket, key, headers={"x-amz-copy-source": source}).read()

    def get(self, bucket: str, key: str) -> http.client.HTTPResponse:
        return self.request("GET", bucket, key)

    def delete(self, bucket: str, key: str) -> None:
        self.request("DELETE", bucket, key).read()

    def create_upload(self, bucket: str, key: str, *, content_type: str | None = None) -> str:
        headers = {"Content-Type": content_type} if content_type else {}
        doc = _xml(self.request("POST", bucket, key, query=[("uploads", "")], headers=headers).read(),
                   "CreateMultipartUpload")
        upload_id = _text(doc, "UploadId")
        if not upload_id:
            raise ProtocolError("CreateMultipartUpload: the S3 endpoint answered no UploadId")
        return upload_id

    def upload_part(self, bucket: str, key: str, upload_id: str, number: int, data: bytes) -> str:
        resp = self.request("PUT", bucket, key, query=[("partNumber", str(number)), ("uploadId", upload_id)],
                            body=data)
        resp.read()
        return resp.headers.get("ETag") or ""

    def complete_upload(self, bucket: str, key: str, upload_id: str, etags: Sequence[str]) -> str:
        parts = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{escape(etag)}</ETag></Part>"
                        for n, etag in enumerate(etags, 1))
        body = f'<CompleteMultipartUpload xmlns="{_NS[1:-1]}">{parts}</CompleteMultipartUpload>'.encode()
        doc = _xml(self.request("POST", bucket, key, query=[("uploadId", upload_id)], body=body,
                                headers={"Content-Type": "application/xml"}).read(), "CompleteMultipartUpload")
        if doc.tag.endswith("Error"):  # S3 may answer 200 and put the error in the body (AWS docs on Complete...)
            raise S3Error(200, _text(doc, "Code"), _text(doc, "Message"))
        return _text(doc, "ETag").strip('"')

    def abort_upload(self, bucket: str, key: str, upload_id: str) -> None:
        self.request("DELETE", bucket, key, query=[("uploadId", upload_id)]).read()


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def drain(resp: http.client.HTTPResponse, out: BinaryIO, progress: Callable[[int], None], *, what: str = "") -> int:
    """Copy a response body to `out` a megabyte at a time; the bytes copied. A connection that breaks off is a
    ConnectionFailed (retry), a write that fails (a full disk) a ClientError naming the target."""
    total = 0
    while True:
        try:
            chunk = resp.read(READ_SIZE)
        except (OSError, http.client.HTTPException) as exc:
            raise ConnectionFailed(f"the download of {what or 'the object'} broke off after {total} bytes "
                                   f"({type(exc).__name__}: {exc})", hint="retry; nothing partial was kept") from None
        if not chunk:
            return total
        try:
            out.write(chunk)
        except OSError as exc:
            raise ClientError(f"cannot write {what or 'the download'}: {exc.strerror or exc}",
                              hint="free some space, or copy somewhere else") from None
        total += len(chunk)
        progress(len(chunk))

"""REST client for the coordinator's admin API, and the admin config file (`~/.config/cloudless/config.json`).

An adapter (STYLE §1) over stdlib `urllib.request`: admins run the CLI anywhere, so it must not need aiohttp or
the coordinator package. It converts every urllib/socket failure at the boundary into one small error hierarchy
(`ClientError`), each with a `hint` telling the user what to do next. Methods return the decoded JSON bodies
(plain dicts) exactly as the contract in docs/cli.md describes them; rendering them is `cloudless.render`'s job.

Config precedence, per setting: command-line flag > environment (CLOUDLESS_SERVER, CLOUDLESS_TOKEN) > config file
(--config, else CLOUDLESS_CONFIG, else $XDG_CONFIG_HOME/cloudless/config.json, else ~/.config/...) > default.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import stat
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

from broker.files import write_private
from cloudless import __version__

JSONObject = dict[str, Any]

DEFAULT_SERVER = "http://127.0.0.1:8470"
DEFAULT_TIMEOUT_S = 30.0
CHANGED_HEADER = "X-Cloudless-Changed"
_UP_HINT = "run `cloudless up` to write ~/.config/cloudless/config.json"


class ClientError(Exception):
    """Anything that stops a CLI request; `hint` says what to do next."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class ConfigError(ClientError):
    """A bad flag, environment variable or config file: a usage error (exit 2)."""


class ConnectionFailed(ClientError):
    """The coordinator could not be reached, or did not answer in time."""


class ProtocolError(ClientError):
    """The server answered, but not as a Cloudless coordinator would."""


@dataclass(frozen=True, slots=True)
class FieldError:
    path: str
    message: str


class ApiError(ClientError):
    """The coordinator refused a request: `{"error": {"message", "field", "errors": [{"path", "message"}]}}`."""

    def __init__(self, status: int, message: str, *, field: str | None = None,
                 errors: Sequence[FieldError] = (), hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.field = field
        self.errors = tuple(errors)


# ---- configuration --------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ClientConfig:
    server: str
    token: str | None = field(repr=False)  # secret: never in a repr or a log line
    config_path: Path | None = None  # the file that supplied a setting, for error messages
    ca: str | None = None  # CA bundle for https servers (else the system trust store)


def default_config_path(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "cloudless" / "config.json"


def check_server_url(url: str) -> str:
    """The URL without a trailing slash; ConfigError unless it is http(s)://HOST[:PORT][/PREFIX]."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.query or parsed.fragment:
        raise ConfigError(f"server URL {url!r} is not http(s)://HOST:PORT", hint=f"e.g. --server {DEFAULT_SERVER}")
    return url.rstrip("/")


def write_config(path: str | os.PathLike[str], server: str, token: str, *, ca: str | None = None) -> None:
    """Write the admin config atomically: a 0600 file (a fresh parent directory is created 0700).

    An existing parent directory keeps its mode: the path may be anywhere (`--config /tmp/x.json`).
    `ca`: the cluster CA bundle that verifies an https server (`cloudless up` writes its own).
    """
    target = Path(path)
    server = check_server_url(server)
    if not token:
        raise ValueError("token must not be empty")
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    doc = {"server": server, "token": token, **({"ca": str(ca)} if ca else {})}
    data = json.dumps(doc, indent=2) + "\n"
    write_private(target, data)


def read_config_file(path: Path, *, required: bool, warn: Callable[[str], None]) -> dict[str, str]:
    """The file's settings ({} when absent and not `required`); warns when others may read the token."""
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            raise ConfigError(f"config file {path} does not exist", hint=_UP_HINT) from None
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    if st.st_mode & 0o077:
        warn(f"{path} is readable by other users (mode {stat.S_IMODE(st.st_mode):04o}); run `chmod 600 {path}`")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc.msg} (line {exc.lineno})",
                          hint=f"fix it, or delete it and {_UP_HINT.removeprefix('run ')}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a JSON object like "
                          '{"server": "http://127.0.0.1:8470", "token": "..."}')
    return string_settings(data, ("server", "token", "ca"), f"config file {path}")


def string_settings(doc: Mapping[str, object], keys: tuple[str, ...], what: str) -> dict[str, str]:
    """The non-empty string values of `keys` in a JSON config document; ConfigError naming `what` and the key for a
    value of another type."""
    settings: dict[str, str] = {}
    for key in keys:
        value = doc.get(key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{what}: {key!r} must be a string")
        if value:
            settings[key] = value
    return settings


def resolve_config(*, server: str | None, token: str | None, config: str | None, env: Mapping[str, str],
                   warn: Callable[[str], None]) -> ClientConfig:
    """Flags (the keyword arguments) > environment > config file > default, per setting."""
    server = server or env.get("CLOUDLESS_SERVER") or None
    token = token or env.get("CLOUDLESS_TOKEN") or None
    path: Path | None = None
    ca = env.get("CLOUDLESS_CA") or None
    if server is None or token is None or ca is None:
        explicit = config or env.get("CLOUDLESS_CONFIG") or None
        path = Path(explicit).expanduser() if explicit else default_config_path(env)
        from_file = read_config_file(path, required=explicit is not None, warn=warn)
        server = server or from_file.get("server")
        token = token or from_file.get("token")
        ca = ca or from_file.get("ca")
        if not from_file:
            path = None
    return ClientConfig(server=check_server_url(server or DEFAULT_SERVER), token=token, config_path=path, ca=ca)


# ---- the client -----------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Message
    body: Any


@dataclass(frozen=True, slots=True)
class ApplyResult:
    workload: JSONObject
    created: bool
    changed: bool
    warnings: tuple[str, ...] = ()  # what admission policy warned about (the workload was admitted)

    @property
    def verb(self) -> str:
        return "created" if self.created else "configured" if self.changed else "unchanged"


@dataclass(frozen=True, slots=True)
class ListPage:
    """One page of a list: its items, how many follow (when the server says) and whether more follow."""

    items: list[JSONObject]
    remaining: int | None = None
    more: bool = False


def _seg(value: str) -> str:
    return urllib.parse.quote(value, safe="")


class CoordinatorClient:
    """Synchronous client for the coordinator REST API (JSON over HTTP, bearer token)."""

    def __init__(self, server: str, token: str | None = None, *, timeout: float = DEFAULT_TIMEOUT_S,
                 ca: str | None = None) -> None:
        self.server = check_server_url(server)
        self._token = token
        self.timeout = timeout
        self._ssl = ssl.create_default_context(cafile=ca) if ca and self.server.startswith("https") else None

    def __repr__(self) -> str:
        return f"CoordinatorClient({self.server!r}, token={'<redacted>' if self._token else None})"

    # -- transport --

    def request(self, method: str, path: str, *, query: Mapping[str, object] | None = None, body: object = None,
                timeout: float | None = None, answers: tuple[int, ...] = ()) -> Response:
        """One request; raises ApiError for an error status (except those in `answers`, returned like a success:
        /readyz says why it is not ready in a 503's body), ConnectionFailed/ProtocolError for the rest."""
        url = self.server + path
        params = {k: str(v) for k, v in (query or {}).items() if v is not None}
        if params:
            url += "?" + urllib.parse.urlencode(params)
        headers = {"Accept": "application/json", "User-Agent": f"cloudless-cli/{__version__}"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310 (http(s) checked)
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout, context=self._ssl) as resp:  # noqa: S310
                return Response(resp.status, resp.headers, self._decode(resp.read(), method, path))
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            exc.close()
            if exc.code in answers:
                return Response(exc.code, exc.headers, self._decode(raw, method, path))
            raise self._api_error(exc.code, raw, method, path) from None
        except urllib.error.URLError as exc:
            raise self._unreachable(exc.reason) from None
        except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from None

    def _decode(self, raw: bytes, method: str, path: str) -> Any:
        if not raw:
            return None
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ProtocolError(f"{method} {path}: the server at {self.server} did not answer with JSON",
                                hint="is --server pointing at a Cloudless coordinator?") from None

    def _unreachable(self, reason: object) -> ConnectionFailed:
        wrong = self._wrong_scheme(reason)
        if wrong is not None:
            return wrong
        if isinstance(reason, TimeoutError):
            return ConnectionFailed(f"no answer from the coordinator at {self.server} in time",
                                    hint="it may be overloaded or hung; check its log and retry")
        if isinstance(reason, ConnectionRefusedError):
            return ConnectionFailed(f"cannot connect to the coordinator at {self.server}: connection refused",
                                    hint="is the coordinator running? start one with `cloudless up`, "
                                    "or point --server / CLOUDLESS_SERVER at it")
        text = getattr(reason, "strerror", None) or str(reason)
        return ConnectionFailed(f"cannot reach the coordinator at {self.server}: {text}",
                                hint="check --server (or CLOUDLESS_SERVER / the config file) and your network")

    def _wrong_scheme(self, reason: object) -> ConnectionFailed | None:
        """http:// to a TLS port, or https:// to a plain one: say which scheme the server speaks."""
        parts = urllib.parse.urlsplit(self.server)
        host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
        other = parts._replace(scheme="https" if parts.scheme == "http" else "http").geturl()
        if parts.scheme == "https" and isinstance(reason, ssl.SSLError) and plain_http_reply(reason):
            return ConnectionFailed(f"the server at {self.server} does not speak TLS ({reason.reason or reason})",
                                    hint=f"it speaks plain HTTP: use {other} (--server, CLOUDLESS_SERVER or the "
                                    "config file)")
        dropped = isinstance(reason, (ConnectionResetError, http.client.HTTPException, ssl.SSLError))
        if parts.scheme == "http" and dropped and speaks_tls(host, port, timeout=min(self.timeout, 5.0)):
            return ConnectionFailed(f"the coordinator at {self.server} closed a plain-HTTP request: "
                                    "that port speaks TLS",
                                    hint=f"the API speaks HTTPS: use {other} (--server, CLOUDLESS_SERVER or the "
                                    "config file; `cloudless up` writes the right URL and CA there)")
        return None

    def _api_error(self, status: int, raw: bytes, method: str, path: str) -> ApiError:
        try:
            envelope = json.loads(raw).get("error")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            envelope = None
        if not isinstance(envelope, dict) or not isinstance(envelope.get("message"), str):
            if status == 404:
                return ApiError(404, f"the coordinator at {self.server} does not serve {method} {path}",
                                hint="is it older than this CLI, or is --server pointing elsewhere?")
            text = raw[:200].decode("utf-8", "replace").strip() or "no details"
            return ApiError(status, f"{method} {path} failed with HTTP {status}: {text}",
                            hint=_status_hint(status, path, self._token, method))
        errors = [FieldError(str(e.get("path", "")), str(e.get("message", "")))
                  for e in envelope.get("errors") or [] if isinstance(e, dict)]
        fld = envelope.get("field")
        return ApiError(status, envelope["message"], field=fld if isinstance(fld, str) else None, errors=errors,
                        hint=_status_hint(status, path, self._token, method))

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        body = self.request(method, path, **kwargs).body
        if body is None:
            raise ProtocolError(f"{method} {path}: empty answer from {self.server}")
        return body

    def pages(self, path: str, query: Mapping[str, object] | None = None, *,
              limit: int | None = None) -> Iterator[ListPage]:
        """The items of a list a page at a time, following `metadata.continue` until the last page (Kubernetes
        style; `limit`: items per page, None: the server's default). A coordinator that does not page answers
        everything in one page without a token."""
        token: str | None = None
        seen: set[str] = set()
        while True:
            body = self._json("GET", path, query={**(query or {}), "limit": limit, "continue": token})
            items = body.get("items") if isinstance(body, dict) else None
            if not isinstance(items, list):
                raise ProtocolError(f"GET {path}: expected {{\"items\": [...]}} from {self.server}")
            meta = body.get("metadata")
            meta = meta if isinstance(meta, dict) else {}
            token = meta.get("continue")
            left = meta.get("remainingItemCount")
            yield ListPage(items, left if isinstance(left, int) and not isinstance(left, bool) and token else None,
                           more=bool(token))
            if not token:
                return
            if not isinstance(token, str) or token in seen:
                raise ProtocolError(f"GET {path}: the server at {self.server} sent a continue token it sent before")
            seen.add(token)

    def _items(self, path: str, query: Mapping[str, object] | None = None, *,
               limit: int | None = None) -> list[JSONObject]:
        """Every item of a list (all its pages)."""
        return [item for page in self.pages(path, query, limit=limit) for item in page.items]

    # -- nodes --

    def node_pages(self, *, selector: str | None = None, state: str | None = None, zone: str | None = None,
                   limit: int | None = None) -> Iterator[ListPage]:
        """Nodes by id, a page at a time, filtered by the server (label selector, state, zone)."""
        return self.pages("/v1/nodes", {"labelSelector": selector, "state": state, "zone": zone}, limit=limit)

    def list_nodes(self, *, selector: str | None = None, state: str | None = None, zone: str | None = None,
                   limit: int | None = None) -> list[JSONObject]:
        pages = self.node_pages(selector=selector, state=state, zone=zone, limit=limit)
        return [n for page in pages for n in page.items]

    def get_node(self, node_id: str) -> JSONObject:
        return self._json("GET", f"/v1/nodes/{_seg(node_id)}")  # type: ignore[no-any-return]

    def list_peers(self, node_id: str | None = None) -> list[JSONObject]:
        """Every node's overlay path to each peer (one node's with `node_id`)."""
        if node_id is not None:
            return self._items(f"/v1/nodes/{_seg(node_id)}/peers")
        return self._items("/v1/peers")

    def service_pages(self, namespace: str | None = None, *, limit: int | None = None) -> Iterator[ListPage]:
        return self.pages("/v1/services", {"namespace": namespace}, limit=limit)

    def list_services(self, namespace: str | None = None, *, limit: int | None = None) -> list[JSONObject]:
        """Services (of one namespace, or every one's with None): address, ports, endpoints and their health."""
        return self._items("/v1/services", {"namespace": namespace}, limit=limit)

    def get_service(self, namespace: str, name: str) -> JSONObject:
        return self._json("GET", f"/v1/services/{_seg(namespace)}/{_seg(name)}")  # type: ignore[no-any-return]

    def overlay_summary(self) -> JSONObject:
        return self._json("GET", "/v1/overlay")  # type: ignore[no-any-return]

    def overlay_pair(self, action: str, a: str, b: str) -> JSONObject:
        """POST connect or disconnect for the pair (a, b)."""
        return self._json("POST", f"/v1/overlay/{action}", body={"a": a, "b": b})  # type: ignore[no-any-return]

    def overlay_ping(self, source: str, target: str, *, count: int, timeout: float) -> JSONObject:
        return self._json("POST", "/v1/overlay/ping",  # type: ignore[no-any-return]
                          body={"from": source, "to": target, "count": count, "timeoutSeconds": timeout},
                          timeout=timeout + 10)

    def node_action(self, node_id: str, action: str) -> JSONObject:
        """POST cordon, uncordon or drain; drain returns at once (progress shows in the node and its replicas)."""
        if action not in ("cordon", "uncordon", "drain"):
            raise ValueError(f"unknown node action {action!r}")
        return self._json("POST", f"/v1/nodes/{_seg(node_id)}/{action}")  # type: ignore[no-any-return]

    def delete_node(self, node_id: str) -> JSONObject:
        """Forget an offline or lost node (409 while it is online or holds replicas)."""
        return self._json("DELETE", f"/v1/nodes/{_seg(node_id)}")  # type: ignore[no-any-return]

    # -- workloads --

    def _wl(self, namespace: str, name: str) -> str:
        return f"/v1/workloads/{_seg(namespace)}/{_seg(name)}"

    def apply_workload(self, doc: Mapping[str, Any]) -> ApplyResult:
        meta = doc.get("metadata") or {}
        resp = self.request("PUT", self._wl(meta.get("namespace") or "default", meta["name"]), body=doc)
        changed = resp.headers.get(CHANGED_HEADER, "true").strip().lower() != "false"
        body = resp.body if isinstance(resp.body, dict) else {}
        raw = body.pop("warnings", None)  # older coordinators send none
        warnings = tuple(str(w) for w in raw) if isinstance(raw, list) else ()
        return ApplyResult(body, created=resp.status == 201, changed=resp.status == 201 or changed,
                           warnings=warnings)

    def workload_pages(self, namespace: str | None = None, *, selector: str | None = None,
                       limit: int | None = None) -> Iterator[ListPage]:
        return self.pages("/v1/workloads", {"namespace": namespace, "labelSelector": selector}, limit=limit)

    def list_workloads(self, namespace: str | None = None, *, selector: str | None = None,
                       limit: int | None = None) -> list[JSONObject]:
        return [w for page in self.workload_pages(namespace, selector=selector, limit=limit) for w in page.items]

    def get_workload(self, namespace: str, name: str) -> JSONObject:
        return self._json("GET", self._wl(namespace, name))  # type: ignore[no-any-return]

    def delete_workload(self, namespace: str, name: str) -> JSONObject:
        return self._json("DELETE", self._wl(namespace, name))  # type: ignore[no-any-return]

    def scale_workload(self, namespace: str, name: str, replicas: int) -> JSONObject:
        return self._json("POST", self._wl(namespace, name) + "/scale",  # type: ignore[no-any-return]
                          body={"replicas": replicas})

    def rollout_status(self, namespace: str, name: str) -> JSONObject:
        return self._json("GET", self._wl(namespace, name) + "/rollout")  # type: ignore[no-any-return]

    def rollout_history(self, namespace: str, name: str) -> list[JSONObject]:
        return self._items(self._wl(namespace, name) + "/history")

    def rollback(self, namespace: str, name: str, revision: int | None = None) -> JSONObject:
        return self._json("POST", self._wl(namespace, name) + "/rollback",  # type: ignore[no-any-return]
                          body={"revision": revision})

    # -- replicas, events, logs, exec --

    def replica_pages(self, *, namespace: str | None = None, workload: str | None = None,
                      node: str | None = None, limit: int | None = None) -> Iterator[ListPage]:
        return self.pages("/v1/replicas", {"namespace": namespace, "workload": workload, "node": node}, limit=limit)

    def list_replicas(self, *, namespace: str | None = None, workload: str | None = None,
                      node: str | None = None, limit: int | None = None) -> list[JSONObject]:
        return [r for page in self.replica_pages(namespace=namespace, workload=workload, node=node, limit=limit)
                for r in page.items]

    def list_events(self, *, object_ref: str | None = None, event_type: str | None = None,
                    since: float | None = None, limit: int | None = None) -> list[JSONObject]:
        """The newest `limit` events (every retained one with None), oldest first; `object_ref` is
        "workload/NS/NAME" or "node/ID" (see docs/cli.md). Sent as `tail` (the server's `limit` is its page
        size); cut here too, for coordinators that do not know `tail`."""
        query = {"object": object_ref, "type": event_type, "since": since, "tail": limit}
        items = self._items("/v1/events", query)
        return items[-limit:] if limit is not None else items

    def stream_events(self, *, object_ref: str | None = None, event_type: str | None = None,
                      after: int | None = None) -> Iterator[JSONObject]:
        """Events as the coordinator records them (server-sent events on /v1/events/stream), starting with the
        retained ones after id `after`. Ends (StopIteration) when the server closes the stream; raises
        ConnectionFailed when it goes silent past two keep-alive periods. Resume with `after=<last id>`."""
        query = {k: str(v) for k, v in {"object": object_ref, "type": event_type, "after": after}.items()
                 if v is not None}
        url = self.server + "/v1/events/stream" + ("?" + urllib.parse.urlencode(query) if query else "")
        headers = {"Accept": "text/event-stream", "User-Agent": f"cloudless-cli/{__version__}"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        req = urllib.request.Request(url, headers=headers)  # noqa: S310 (http(s) checked)
        try:
            resp = urllib.request.urlopen(req, timeout=SSE_SILENCE_S, context=self._ssl)  # noqa: S310
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            exc.close()
            raise self._api_error(exc.code, raw, "GET", "/v1/events/stream") from None
        except urllib.error.URLError as exc:
            raise self._unreachable(exc.reason) from None
        except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from None
        with resp:
            try:
                yield from parse_sse(resp)
            except (TimeoutError, ConnectionError) as exc:
                raise self._unreachable(exc) from None

    def logs(self, namespace: str, name: str, replica: str, *, tail: int | None = None) -> JSONObject:
        path = f"{self._wl(namespace, name)}/replicas/{_seg(replica)}/logs"
        return self._json("GET", path, query={"tail": tail})  # type: ignore[no-any-return]

    def exec(self, namespace: str, name: str, replica: str, command: Sequence[str], *,
             timeout_seconds: int) -> JSONObject:
        """Run `command` in the replica; the HTTP wait is the command's timeout plus a margin for the relay."""
        path = f"{self._wl(namespace, name)}/replicas/{_seg(replica)}/exec"
        return self._json("POST", path, body={"command": list(command), "timeoutSeconds": timeout_seconds},  # type: ignore[no-any-return]
                          timeout=timeout_seconds + self.timeout)


SSE_SILENCE_S = 40.0  # the coordinator sends a keep-alive every 15 s


def plain_http_reply(exc: ssl.SSLError) -> bool:
    """OpenSSL's words for "the server answered a ClientHello with something that is not TLS" (an HTTP reply):
    WRONG_VERSION_NUMBER (OpenSSL 1.1/3.0), "record layer failure" (3.2+), HTTP_REQUEST/HTTPS_PROXY_REQUEST."""
    text = f"{exc.reason or ''} {exc}".lower()
    return any(w in text for w in ("wrong_version_number", "wrong version number", "record layer failure",
                                   "http_request", "packet length too long"))


def speaks_tls(host: str, port: int, *, timeout: float) -> bool:
    """Whether host:port completes (or at least answers) a TLS handshake. A probe only: nothing is sent after the
    handshake and the certificate is not trusted for anything, so it is not verified here."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # a probe of the protocol, not a connection that carries data
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock, \
                ctx.wrap_socket(sock, server_hostname=host or None):
            return True
    except ssl.SSLError as exc:  # a TLS alert (e.g. "certificate required") is TLS too; a non-TLS reply is not
        return not plain_http_reply(exc)
    except OSError:
        return False


def parse_sse(lines: Iterable[bytes]) -> Iterator[JSONObject]:
    """The `data:` of each `event: event` message of a text/event-stream, decoded; comments and other fields are
    skipped, a malformed data line raises ProtocolError."""
    data: list[str] = []
    kind = "message"
    for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data and kind == "event":
                try:
                    doc = json.loads("\n".join(data))
                except json.JSONDecodeError:
                    raise ProtocolError("the event stream carried data that is not JSON") from None
                if isinstance(doc, dict):
                    yield doc
            data, kind = [], "message"
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                data.append(value)
            elif name == "event":
                kind = value


def _status_hint(status: int, path: str, token: str | None, method: str = "GET") -> str | None:
    match status:
        case 401 if not token:
            return f"no token is configured: pass --token, set CLOUDLESS_TOKEN, or {_UP_HINT}"
        case 401:
            return f"check --token (or CLOUDLESS_TOKEN), or {_UP_HINT}"
        case 403:
            return "this token may not do that; use an admin token"
        case 404 if path.startswith("/v1/nodes"):
            return "list nodes with `cloudless get nodes`"
        case 404 if "/replicas/" in path:
            return "list the workload's replicas with `cloudless get replicas --workload NAME -n NAMESPACE`"
        case 404 if path.startswith("/v1/services"):
            return "list services with `cloudless get services -A` (a workload with spec.service makes one)"
        case 404 if path.startswith("/v1/workloads"):
            return "list workloads with `cloudless get workloads -A` (and pass -n NAMESPACE)"
        case 409 if method == "DELETE" and path.startswith("/v1/nodes/"):
            node = urllib.parse.unquote(path.removeprefix("/v1/nodes/"))
            return (f"only an offline node without replicas can be deleted: stop its agent on the device (or "
                    f"`cloudless node revoke {node}`), move its replicas with `cloudless drain {node}`, and retry "
                    "once `cloudless get nodes` shows it offline")
        case 409:
            return "someone changed it meanwhile: look again (`cloudless describe ...`) and retry"
        case 413:
            return "the request is too large: split the file, or shrink the spec"
        case 503 if "/replicas/" in path:
            return "the node running that replica did not answer (offline?); check `cloudless get nodes`"
        case 503:
            return "the coordinator is not ready (starting, or no leader yet); retry in a few seconds"
    return None

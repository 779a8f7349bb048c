"""The REST API (adapter, aiohttp): JSON under /v1, OpenAPI at /openapi.json, health and metrics.

Routes are declared once in `ROUTES` — handler, method, path, summary — and both the aiohttp router and the
OpenAPI document are built from that table, so the documentation cannot drift from what is served.
Every /v1 request needs `Authorization: Bearer <token>`. Errors are
`{"error": {"message", "field", "errors": [{"path", "message"}]}}`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from broker.auth import peer_cert
from broker.wire import CommandName, valid_id
from coordinator import views
from coordinator.damper import Damper
from coordinator.errors import SpecError
from coordinator.http import FORWARDED_FOR_HEADER, FORWARDED_HEADER, error, read_json, token_digest
from coordinator.identity import IdentityService
from coordinator.identity_api import IdentityHandlers
from coordinator.model import Event, NodeAdmin
from coordinator.operations import CommandFailed, InUse, NotFound, PolicyDenied
from coordinator.pki import CertRole, PkiError
from coordinator.secrets import KeySource
from coordinator.secrets_api import SECRETS_BODY_SCHEMAS, SecretsHandlers
from coordinator.service import Coordinator
from coordinator.spec import workload_json_schema
from coordinator.store import StoreError

log = logging.getLogger(__name__)
MAX_BODY = 1024 * 1024
# writes any coordinator serves itself: enrolment and renewal authenticate with a token or the caller's own TLS
# client certificate (which a forwarded request would not carry), and their store writes are compare-and-swap
LOCAL_WRITES = frozenset({"enroll", "renew"})
FORWARD_TIMEOUT_S = 30.0
READY_STORE_TIMEOUT_S = 2.0
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: str
    summary: str
    body: str | None = None  # name of a schema in components
    auth: bool = True


ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", "healthz", "Liveness: the process serves requests", auth=False),
    Route("GET", "/readyz", "readyz", "Readiness: state loaded and the broker connected", auth=False),
    Route("GET", "/metrics", "metrics", "Prometheus metrics", auth=False),
    Route("GET", "/openapi.json", "openapi", "This document", auth=False),
    Route("GET", "/v1/schema/workload", "workload_schema", "JSON Schema of a workload document"),
    Route("GET", "/v1/nodes", "list_nodes", "List nodes"),
    Route("GET", "/v1/nodes/{node}", "get_node", "Get a node"),
    Route("DELETE", "/v1/nodes/{node}", "delete_node",
          "Forget a node that is offline or lost (409 while online or holding replicas); clears its retained "
          "presence, dashboard mirror and Home Assistant entities"),
    Route("POST", "/v1/nodes/{node}/cordon", "cordon", "Mark a node unschedulable"),
    Route("POST", "/v1/nodes/{node}/uncordon", "uncordon", "Mark a node schedulable again"),
    Route("POST", "/v1/nodes/{node}/drain", "drain", "Cordon a node and move its replicas away (keeps minAvailable)"),
    Route("GET", "/v1/workloads", "list_workloads", "List workloads (?namespace=)"),
    Route("PUT", "/v1/workloads/{namespace}/{name}", "apply", "Create or update a workload (idempotent)",
          body="Workload"),
    Route("GET", "/v1/workloads/{namespace}/{name}", "get_workload", "Get a workload with its status"),
    Route("DELETE", "/v1/workloads/{namespace}/{name}", "delete_workload", "Delete a workload (stops replicas)"),
    Route("POST", "/v1/workloads/{namespace}/{name}/scale", "scale", "Set the replica count", body="Scale"),
    Route("GET", "/v1/workloads/{namespace}/{name}/rollout", "rollout_status", "Rollout status"),
    Route("GET", "/v1/workloads/{namespace}/{name}/history", "rollout_history", "Rollout history"),
    Route("POST", "/v1/workloads/{namespace}/{name}/rollback", "rollback", "Roll back to a revision",
          body="Rollback"),
    Route("GET", "/v1/workloads/{namespace}/{name}/replicas/{replica}/logs", "logs", "Tail a replica's logs"),
    Route("POST", "/v1/workloads/{namespace}/{name}/replicas/{replica}/exec", "exec", "Run a command in a replica",
          body="Exec"),
    Route("GET", "/v1/replicas", "list_replicas", "List replicas (?namespace=&workload=&node=)"),
    Route("GET", "/v1/events", "list_events", "List events (?object=&type=&reason=&since=&limit=)"),
    Route("GET", "/v1/events/stream", "stream_events",
          "Stream events as server-sent events (text/event-stream; ?object=&type=&reason=&after=ID or the "
          "Last-Event-ID header to resume; a comment line every 15 s keeps idle connections alive)"),
    Route("GET", "/v1/ca", "get_ca", "The cluster CA certificate (public; devices pin its fingerprint)", auth=False),
    Route("POST", "/v1/enroll", "enroll", "Enrol a device: a join token and a CSR in, a node certificate out",
          body="Enroll", auth=False),
    Route("POST", "/v1/renew", "renew", "Renew a node certificate (mutual TLS with the current certificate)",
          body="Renew", auth=False),
    Route("POST", "/v1/tokens", "create_token", "Mint an enrolment token", body="TokenRequest"),
    Route("GET", "/v1/tokens", "list_tokens", "List enrolment tokens (ids and uses, never the tokens)"),
    Route("DELETE", "/v1/tokens/{token}", "revoke_token", "Revoke an enrolment token"),
    Route("POST", "/v1/nodes/{node}/revoke", "revoke_node", "Revoke a node's certificate; its replicas move"),
    # secrets (coordinator.secrets_api): errors carry a `code` too; values are base64
    Route("GET", "/v1/secrets", "list_secrets", "List secrets' metadata (?namespace=); never values"),
    Route("POST", "/v1/secrets/{namespace}", "create_secret", "Create a secret (version 1; 409 if it exists)",
          body="SecretCreate"),
    Route("GET", "/v1/secrets/{namespace}/{name}", "get_secret", "A secret's metadata: keys, versions, audiences, "
          "TTL; never values"),
    Route("PUT", "/v1/secrets/{namespace}/{name}", "update_secret", "Update a secret: new data makes a new version "
          "(409 if immutable, or if expectVersion is not the active version)", body="SecretUpdate"),
    Route("DELETE", "/v1/secrets/{namespace}/{name}", "delete_secret", "Delete a secret, its versions and tokens"),
    Route("POST", "/v1/secrets/{namespace}/{name}/reveal", "reveal_secret",
          "A version's values (?version=): with an admin credential, or no credential and an access token and its "
          "audience in the body (403 naming why a token is refused; 410 if the secret expired)",
          body="SecretReveal", auth=False),
    Route("POST", "/v1/secrets/{namespace}/{name}/tokens", "issue_secret_token",
          "Issue an access token for one allowed audience (TTL default 1h, max 24h; max uses)",
          body="SecretTokenRequest"),
    Route("GET", "/v1/secrets/{namespace}/{name}/tokens", "list_secret_tokens",
          "A secret's access-token records (ids, audience, uses, expiry, revoked; never the tokens)"),
    Route("DELETE", "/v1/secret-tokens/{token}", "revoke_secret_token", "Revoke a secret access token by id"),
    Route("GET", "/v1/secrets-master-key", "secrets_master_key", "The master key ids this coordinator holds"),
    Route("POST", "/v1/secrets-master-key/rotate", "rotate_secrets_master_key",
          "Add a new active master key and re-wrap every data key (values are not re-encrypted; reads go on)"),
    Route("GET", "/v1/secrets-audit", "secrets_audit", "The secrets audit log, newest first "
          "(?namespace=&name=&actor=&action=&result=&since=&until=&limit=)"),
)
ROUTE_BY_NAME = {r.handler: r for r in ROUTES}

BODY_SCHEMAS: dict[str, dict[str, Any]] = {
    "Enroll": {"type": "object", "additionalProperties": False, "required": ["token", "nodeId", "csr"],
               "properties": {"token": {"type": "string"}, "nodeId": {"type": "string"}, "csr": {"type": "string"}}},
    "Renew": {"type": "object", "additionalProperties": False, "required": ["csr"],
              "properties": {"csr": {"type": "string"}}},
    "TokenRequest": {"type": "object", "additionalProperties": False, "properties": {
        "ttlSeconds": {"type": "number", "minimum": 60, "maximum": 604800},
        "maxUses": {"type": "integer", "minimum": 1, "maximum": 10000},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}}, "zone": {"type": "string"}}},
    "Scale": {"type": "object", "additionalProperties": False, "required": ["replicas"],
              "properties": {"replicas": {"type": "integer", "minimum": 0, "maximum": 1000}}},
    "Rollback": {"type": "object", "additionalProperties": False,
                 "properties": {"revision": {"type": ["integer", "null"], "minimum": 1}}},
    "Exec": {"type": "object", "additionalProperties": False, "required": ["command"],
             "properties": {"command": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                            "timeoutSeconds": {"type": "number", "minimum": 0.5, "maximum": 300}}},
    **SECRETS_BODY_SCHEMAS,
}


def openapi_document() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for r in ROUTES:
        op: dict[str, Any] = {"summary": r.summary, "operationId": r.handler,
                              "responses": {"200": {"description": "OK"},
                                            "default": {"description": "Error",
                                                        "content": {"application/json": {"schema": {
                                                            "$ref": "#/components/schemas/Error"}}}}}}
        params = re.findall(r"{(\w+)}", r.path)
        if params:
            op["parameters"] = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                                for p in params]
        if r.body:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": {
                "$ref": f"#/components/schemas/{r.body}"}}}}
        if r.auth:
            op["security"] = [{"bearer": []}]
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Cloudless coordinator API", "version": "1"},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                **BODY_SCHEMAS,
                "Workload": workload_json_schema(),
                "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                    "message": {"type": "string"}, "field": {"type": ["string", "null"]},
                    "errors": {"type": "array", "items": {"type": "object", "properties": {
                        "path": {"type": "string"}, "message": {"type": "string"}}}}}}}},
            },
        },
    }


class Api(IdentityHandlers, SecretsHandlers):
    def __init__(self, coord: Coordinator, *, token_digests: dict[str, tuple[str, str]],
                 identity: IdentityService | None = None, secrets_key_source: KeySource | None = None,
                 forward_ssl: ssl.SSLContext | None = None) -> None:
        """`token_digests`: sha256 hex of each accepted bearer token -> (credential name, role: admin|viewer);
        `secrets_key_source`: where a master key rotation adds the new key; `forward_ssl`: trusts the leaders' API
        certificates (the cluster CA) and carries this coordinator's certificate, to forward writes."""
        self.coord = coord
        self.tokens = dict(token_digests)
        self.identity = identity
        self._enrol_denials = Damper()
        self._enrol_denials_all = Damper(interval_s=6.0, max_keys=1)
        self.prom = coord.metrics
        self.forward_ssl = forward_ssl
        self.secrets_key_source = secrets_key_source

    # ---- app -----------------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._middleware])
        for r in ROUTES:
            app.router.add_route(r.method, r.path, getattr(self, r.handler), name=r.handler)
        app.on_shutdown.append(self._end_streams)
        return app

    async def _end_streams(self, _app: web.Application) -> None:
        """Open event streams end at shutdown instead of holding it up (clients reconnect to the next one)."""
        self.coord.journal.end_event_streams()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        route = request.match_info.route
        name = route.name or "unknown"
        status = 500
        try:
            spec = ROUTE_BY_NAME.get(name)
            if request.headers.get(FORWARDED_HEADER) and self.identity is not None \
                    and self.forwarded_by(request) is None:
                status = 403
                return error(403, f"{FORWARDED_HEADER} is for coordinators forwarding a write, proven by their "
                             "coordinator certificate; send the request without it")
            if spec is not None and spec.auth:
                role = self._role(request)
                if role is None:
                    status = 401
                    return error(401, "missing or invalid bearer token; use the token `cloudless up` printed (or "
                                 "~/.config/cloudless/config.json)")
                if role != "admin" and request.method not in ("GET", "HEAD"):
                    status = 403
                    return error(403, f"the {role!r} role may only read; this needs an admin credential")
            if request.method not in ("GET", "HEAD") and spec is not None and spec.handler not in LOCAL_WRITES \
                    and not self.coord.acting:  # authenticated first: no anonymous call of an authenticated route
                # is relayed (reveal, which takes an access token instead, is checked by the leader)
                if self.coord.leadership.is_leader:  # elected a moment ago: state is being re-read
                    status = 503
                    return error(503, "this coordinator is taking over as leader; retry in a second")
                resp = await self._forward(request)
                status = resp.status
                return resp
            resp = await handler(request)
            status = resp.status
            return resp
        except web.HTTPException as exc:
            status = exc.status
            if exc.status == 413:
                return error(413, f"request body too large (limit {MAX_BODY} bytes)")
            if exc.status in (404, 405):
                return error(exc.status, f"{request.method} {request.path}: {exc.reason}")
            raise
        except SpecError as exc:
            status = 400
            return error(400, str(exc), field=exc.path, errors=exc.to_json()["errors"])
        except NotFound as exc:
            status = 404
            return error(404, str(exc))
        except InUse as exc:
            status = 409
            return error(409, str(exc))
        except PolicyDenied as exc:
            status = 403
            errors = [{"path": v.field, "message": f"{v.message} ({v.policy}/{v.rule})"}
                      for v in exc.decision.violations if v.action == "deny"]
            return error(403, str(exc), field=errors[0]["path"] if errors else None, errors=errors)
        except PkiError as exc:
            status = 400
            return error(400, str(exc))
        except CommandFailed as exc:
            status = 503
            return error(503, str(exc))
        except StoreError as exc:
            status = 503
            return error(503, f"state store unavailable: {exc}; workloads keep running — retry once it is back")
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return error(500, "internal error; see the coordinator log")
        finally:
            self.prom.request(name, request.method, status, time.perf_counter() - started)

    def _role(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return None
        digest = token_digest(header[7:].strip())
        for known, (_, role) in self.tokens.items():
            if hmac.compare_digest(digest, known):
                return role
        return None

    # ---- helpers -------------------------------------------------------------------------------------------

    @staticmethod
    async def _json(request: web.Request) -> Any:
        return await read_json(request)

    @staticmethod
    def _name(request: web.Request, key: str) -> str:
        value = request.match_info[key]
        if not valid_id(value):
            raise SpecError(key, f"{value[:80]!r} is not a valid name (letters, digits, '.', '_', '-')")
        return value

    def _workload_view(self, w: Any) -> dict[str, Any]:
        reps = [(r, self.coord.observed_of(r)) for r in self.coord.replicas.values()
                if r.namespace == w.namespace and r.workload == w.name]
        return views.workload_json(w, reps)

    def _node_view(self, node_id: str) -> dict[str, Any]:
        info = self.coord.members.get(node_id)
        if info is None:
            raise NotFound(f"node {node_id} not found")
        snap = {n.node_id: n for n in self.coord.snapshot(self.coord.clock()).nodes}
        view = snap.get(node_id)
        alloc = (view.allocated_cpu_millis, view.allocated_memory_bytes) if view else (0, 0)
        admin = self.coord.cluster.admin.get(node_id, NodeAdmin())
        return views.node_json(info, admin, replicas=view.replicas if view else 0, alloc=alloc,
                               now=self.coord.clock(), cfg=self.coord.cfg.membership)

    # ---- handlers ------------------------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def readyz(self, request: web.Request) -> web.Response:
        """Ready: state loaded, broker connected, and a leader known (this one, or one to forward writes to).
        With etcd and no quorum there is no leader: not ready, writes refused, agents keep running."""
        lead = self.coord.leadership
        has_leader = lead.is_leader or bool(lead.leader_api)
        store_ok, store_error = True, None
        try:  # a quorum read: with etcd it fails (or times out) while the cluster has no majority
            async with asyncio.timeout(READY_STORE_TIMEOUT_S):
                await self.coord.store.revision()
        except (StoreError, TimeoutError) as exc:
            store_ok, store_error = False, str(exc) or "no answer in time"
        ready = self.coord.ready and self.coord.mqtt.connected and has_leader and store_ok
        return web.json_response({"ready": ready, "broker": self.coord.mqtt.connected, "state": self.coord.ready,
                                  "store": store_ok, "storeError": store_error, "epoch": self.coord.epoch,
                                  "leader": lead.is_leader and store_ok, "leaderId": lead.leader_id,
                                  "rounds": self.coord.rounds}, status=200 if ready else 503)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        """A follower hands a write to the leader and relays its answer (so a client may talk to any coordinator).
        Forwarded once at most: a forwarded request reaching a non-leader (leadership just moved) is a 503."""
        target = self.coord.leadership.leader_api
        if not target or request.headers.get(FORWARDED_HEADER):
            return error(503, "no leader coordinator right now (an election is running, or the state store has lost "
                         "quorum); workloads keep running — retry in a few seconds")
        import aiohttp

        body = await request.read()
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() in ("authorization", "content-type", "accept", "user-agent")}
        headers[FORWARDED_HEADER] = self.coord.cfg.coordinator_id
        headers[FORWARDED_FOR_HEADER] = request.remote or "unknown"
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S)) as session, \
                    session.request(request.method, target.rstrip("/") + request.rel_url.path_qs, data=body,
                                    headers=headers, ssl=self.forward_ssl or True) as resp:
                payload = await resp.read()
                out = {k: v for k, v in resp.headers.items()
                       if k.lower() in ("content-type", "x-cloudless-changed", "location")}
                out["X-Cloudless-Leader"] = str(self.coord.leadership.leader_id or "")
                return web.Response(status=resp.status, body=payload, headers=out)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return error(503, f"the leader at {target} did not answer ({type(exc).__name__}); retry in a few seconds")

    def forwarded_by(self, request: web.Request) -> tuple[str, str] | None:
        """(coordinator, client address) of a write a follower forwarded, when the follower proved it is a coordinator
        with its certificate (mutual TLS); None for any other request, whatever its headers say."""
        if not request.headers.get(FORWARDED_HEADER):
            return None
        cert = peer_cert(request.transport.get_extra_info("ssl_object") if request.transport else None)
        if cert is None or cert.unit != CertRole.COORDINATOR.value:
            return None
        return cert.common_name, request.headers.get(FORWARDED_FOR_HEADER, "unknown")[:64]

    async def metrics(self, request: web.Request) -> web.Response:
        body, content_type = self.prom.render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi_document())

    async def workload_schema(self, request: web.Request) -> web.Response:
        return web.json_response(workload_json_schema())

    async def list_nodes(self, request: web.Request) -> web.Response:
        return web.json_response({"items": [self._node_view(n) for n in sorted(self.coord.members)]})

    async def get_node(self, request: web.Request) -> web.Response:
        return web.json_response(self._node_view(self._name(request, "node")))

    async def delete_node(self, request: web.Request) -> web.Response:
        node = self._name(request, "node")
        await self.coord.ops.delete_node(node)
        return web.json_response({"deleted": node})

    async def _admin(self, request: web.Request, **kw: bool) -> web.Response:
        node = self._name(request, "node")
        await self.coord.ops.set_admin(node, **kw)
        return web.json_response(self._node_view(node))

    async def cordon(self, request: web.Request) -> web.Response:
        return await self._admin(request, cordoned=True)

    async def uncordon(self, request: web.Request) -> web.Response:
        return await self._admin(request, cordoned=False)

    async def drain(self, request: web.Request) -> web.Response:
        return await self._admin(request, draining=True)

    async def list_workloads(self, request: web.Request) -> web.Response:
        ns = request.query.get("namespace")
        items = [self._workload_view(w) for k, w in sorted(self.coord.workloads.items())
                 if ns is None or w.namespace == ns]
        return web.json_response({"items": items})

    async def apply(self, request: web.Request) -> web.Response:
        ns, name = self._name(request, "namespace"), self._name(request, "name")
        doc = await self._json(request)
        if not isinstance(doc, dict):
            raise SpecError("", "the body must be a workload document (a JSON object)")
        meta = doc.get("metadata")
        if isinstance(meta, dict):
            if meta.get("name", name) != name:
                raise SpecError("metadata.name", f"{meta.get('name')!r} does not match the URL's {name!r}")
            if meta.get("namespace", ns) != ns:
                raise SpecError("metadata.namespace", f"{meta.get('namespace')!r} does not match the URL's {ns!r}")
            doc = {**doc, "metadata": {**meta, "name": name, "namespace": ns}}
        rec, created, changed = await self.coord.ops.apply(doc)
        return web.json_response(self._workload_view(rec), status=201 if created else 200,
                                 headers={"X-Cloudless-Changed": str(changed).lower()})

    async def get_workload(self, request: web.Request) -> web.Response:
        w = self.coord.ops.get(self._name(request, "namespace"), self._name(request, "name"))
        return web.json_response(self._workload_view(w))

    async def delete_workload(self, request: web.Request) -> web.Response:
        w = await self.coord.ops.delete(self._name(request, "namespace"), self._name(request, "name"))
        return web.json_response(self._workload_view(w))

    async def scale(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        replicas = body.get("replicas") if isinstance(body, dict) else None
        if isinstance(replicas, bool) or not isinstance(replicas, int) or not 0 <= replicas <= 1000:
            raise SpecError("replicas", "must be an integer from 0 to 1000")
        if isinstance(body, dict) and set(body) - {"replicas"}:
            raise SpecError(sorted(set(body) - {"replicas"})[0], "unknown field")
        w = await self.coord.ops.scale(self._name(request, "namespace"), self._name(request, "name"), replicas)
        return web.json_response(self._workload_view(w))

    async def rollout_status(self, request: web.Request) -> web.Response:
        w = self.coord.ops.get(self._name(request, "namespace"), self._name(request, "name"))
        return web.json_response(views.rollout_json(w, self._workload_view(w)))

    async def rollout_history(self, request: web.Request) -> web.Response:
        w = self.coord.ops.get(self._name(request, "namespace"), self._name(request, "name"))
        items = [{"revision": h["revision"], "specHash": h["spec_hash"], "createdAt": h["created_at"],
                  "image": h["doc"].get("spec", {}).get("image", ""), "cause": h.get("cause", "")}
                 for h in w.history]
        return web.json_response({"items": items})

    async def rollback(self, request: web.Request) -> web.Response:
        body = await self._json(request) if request.can_read_body else {}
        revision = body.get("revision") if isinstance(body, dict) else None
        if revision is not None and (isinstance(revision, bool) or not isinstance(revision, int) or revision < 1):
            raise SpecError("revision", "must be a positive integer or null")
        w = await self.coord.ops.rollback(self._name(request, "namespace"), self._name(request, "name"), revision)
        return web.json_response(self._workload_view(w))

    def _replica(self, request: web.Request) -> Any:
        ns, name, rid = (self._name(request, k) for k in ("namespace", "name", "replica"))
        r = self.coord.replicas.get(rid)
        if r is None or r.namespace != ns or r.workload != name:
            raise NotFound(f"replica {rid} of workload {ns}/{name} not found")
        return r

    async def logs(self, request: web.Request) -> web.Response:
        r = self._replica(request)
        try:
            tail = int(request.query.get("tail", "100"))
        except ValueError:
            raise SpecError("tail", "must be a number of lines") from None
        if not 1 <= tail <= 10_000:
            raise SpecError("tail", "must be 1-10000")
        reply = await self.coord.ops.command(r, CommandName.LOGS, args={"tail": str(tail)})
        if not reply.ok:
            raise CommandFailed(f"node {r.node}: {reply.error}")
        return web.json_response({"replica": r.replica_id, "node": r.node,
                                  "output": reply.output.decode("utf-8", "replace")})

    async def exec(self, request: web.Request) -> web.Response:
        r = self._replica(request)
        body = await self._json(request)
        command = body.get("command") if isinstance(body, dict) else None
        if not isinstance(command, list) or not command or not all(isinstance(c, str) for c in command):
            raise SpecError("command", "must be a non-empty list of strings")
        timeout = body.get("timeoutSeconds", 30)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0.5 <= timeout <= 300:
            raise SpecError("timeoutSeconds", "must be a number from 0.5 to 300")
        reply = await self.coord.ops.command(r, CommandName.EXEC, argv=tuple(command), timeout_s=float(timeout))
        if not reply.ok:
            raise CommandFailed(f"node {r.node}: {reply.error}")
        return web.json_response({"exitCode": reply.exit_code if reply.exit_code is not None else -1,
                                  "output": reply.output.decode("utf-8", "replace")})

    async def list_replicas(self, request: web.Request) -> web.Response:
        q = request.query
        items = []
        for r in sorted(self.coord.replicas.values(), key=lambda r: (r.namespace, r.workload, r.replica_id)):
            if (q.get("namespace") not in (None, r.namespace) or q.get("workload") not in (None, r.workload)
                    or q.get("node") not in (None, r.node)):
                continue
            items.append(views.replica_json(r, self.coord.observed_of(r)))
        return web.json_response({"items": items})

    async def list_events(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            since = float(q.get("since", "0"))
            limit = int(q.get("limit", "500"))
        except ValueError:
            raise SpecError("since", "since must be unix seconds and limit an integer") from None
        match = _event_filter(q)
        items = [views.event_json(e) for e in self.coord.journal.committed_events() if e.time > since and match(e)]
        return web.json_response({"items": items[-max(1, min(limit, 5000)):]})

    async def stream_events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: first the retained events after `after` (or Last-Event-ID), then each new one
        as it is recorded. `id:` is the event id, so a client that reconnects with Last-Event-ID misses
        nothing still retained. A client too slow to keep up is cut off (it reconnects and resumes)."""
        raw_after = request.query.get("after") or request.headers.get("Last-Event-ID") or "0"
        try:
            after = int(raw_after)
        except ValueError:
            raise SpecError("after", f"after (or Last-Event-ID) must be an event id, got {raw_after[:40]!r}") from None
        match = _event_filter(request.query)
        queue = self.coord.journal.listen_events()  # before the replay, so nothing recorded in between is missed
        try:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                               "X-Accel-Buffering": "no"})
            await resp.prepare(request)
            await resp.write(b"retry: 2000\n\n")
            last = after
            for e in self.coord.journal.committed_events():
                if e.seq > last and match(e):
                    await resp.write(_sse(e))
                    last = e.seq
            while True:
                try:
                    async with asyncio.timeout(SSE_KEEPALIVE_S):
                        ev = await queue.get()
                except TimeoutError:
                    await resp.write(b": keep-alive\n\n")
                    continue
                if ev is None:
                    break
                if ev.seq > last and match(ev):
                    await resp.write(_sse(ev))
                    last = ev.seq
            return resp
        except ConnectionResetError:  # the client went away: the normal end of a stream, not an error
            return resp
        finally:
            self.coord.journal.unlisten_events(queue)


SSE_KEEPALIVE_S = 15.0


def _event_filter(q: Any) -> Callable[[Event], bool]:
    obj, type_, reason = q.get("object"), q.get("type"), q.get("reason")

    def match(e: Event) -> bool:
        return ((obj is None or e.object == obj or e.object.startswith(obj + "/"))
                and (type_ is None or e.type == type_) and (reason is None or e.reason == reason))
    return match


def _sse(e: Event) -> bytes:
    return f"id: {e.seq}\nevent: event\ndata: {json.dumps(views.event_json(e))}\n\n".encode()


async def serve(api: Api, host: str, port: int,
                ssl_context: ssl.SSLContext | None = None) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(api.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    sockets = site._server.sockets if site._server is not None else []  # type: ignore[attr-defined]
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, int(bound)


async def serve_socket(api: Api, sock: socket.socket, ssl_context: ssl.SSLContext | None = None) -> web.AppRunner:
    """Serve on a socket bound (and listening) beforehand, so its address was known before the API was built."""
    runner = web.AppRunner(api.app(), access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock, ssl_context=ssl_context).start()
    return runner


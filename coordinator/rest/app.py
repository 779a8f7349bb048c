"""The REST API (adapter, aiohttp): JSON under /v1, OpenAPI at /openapi.json, health and metrics.

Each module of this package declares its routes (`ROUTES`) next to a handler object: meta (health, readiness,
metrics, documents), nodes, workloads (and replicas), events, identity (the cluster CA), secrets. `Api` binds
them, registers them with aiohttp and builds the OpenAPI document from the same tables (`openapi_document`).
Every /v1 request needs `Authorization: Bearer <token>` (the middleware checks it, and the role); a follower
forwards writes to the leader. Errors are `{"error": {"message", "field", "errors": [{"path", "message"}]}}`.
"""

from __future__ import annotations

import hmac
import logging
import socket
import ssl
import time
from typing import Any

from aiohttp import web

from broker.auth import peer_cert
from broker.limits import ConnectionGate, ListenerLimits
from broker.listeners import nofile_soft, start_gated_server
from coordinator.errors import SpecError
from coordinator.http import FORWARDED_FOR_HEADER, FORWARDED_HEADER, bearer_token, error, token_digest
from coordinator.identity import IdentityService
from coordinator.operations import CommandFailed, InUse, NotFound, PolicyDenied
from coordinator.pki import CertRole, PkiError
from coordinator.rest import (
    events,
    install,
    meta,
    nodes,
    openapi,
    overlay,
    secrets,
    services,
    tty,
    workloads,
)
from coordinator.rest import identity as identity_routes
from coordinator.rest import storage as storage_routes
from coordinator.rest.ports import Engine, StorageAdmin
from coordinator.rest.routes import Handler, Route, bind
from coordinator.secrets import KeySource
from coordinator.store import StoreError

log = logging.getLogger(__name__)
MAX_BODY = 1024 * 1024
# writes any coordinator serves itself: enrolment and renewal authenticate with a token or the caller's own TLS
# client certificate (which a forwarded request would not carry), and their store writes are compare-and-swap
LOCAL_WRITES = frozenset({"enroll", "renew"})
FORWARD_TIMEOUT_S = 30.0

# the order is the OpenAPI document's
ROUTES: tuple[Route, ...] = (*meta.ROUTES, *nodes.ROUTES, *workloads.ROUTES, *tty.ROUTES, *events.ROUTES,
                             *identity_routes.ROUTES, *secrets.ROUTES, *overlay.ROUTES, *services.ROUTES,
                             *storage_routes.ROUTES, *install.ROUTES)
ROUTE_BY_NAME = {r.handler: r for r in ROUTES}


def openapi_document() -> dict[str, Any]:
    return openapi.document(ROUTES)


class Api:
    def __init__(self, coord: Engine, *, token_digests: dict[str, tuple[str, str]],
                 identity: IdentityService | None = None, secrets_key_source: KeySource | None = None,
                 forward_ssl: ssl.SSLContext | None = None, storage: StorageAdmin | None = None) -> None:
        """`token_digests`: sha256 hex of each accepted bearer token -> (credential name, role: admin|viewer);
        `secrets_key_source`: where a master key rotation adds the new key; `forward_ssl`: trusts the leaders' API
        certificates (the cluster CA) and carries this coordinator's certificate, to forward writes; `storage`: the
        object store's gateway (None: no storage; settable later as `api.storage`)."""
        self.coord = coord
        self.tokens = dict(token_digests)
        self.identity = identity
        self.prom = coord.metrics
        self.forward_ssl = forward_ssl
        self.secrets = secrets.SecretsHandlers(coord, tokens=self.tokens, forwarded_by=self.forwarded_by,
                                               secrets_key_source=secrets_key_source)
        self._storage = storage_routes.StorageHandlers(coord.clock, storage)
        self.routes: list[tuple[Route, Handler]] = [
            *bind(meta.ROUTES, meta.MetaHandlers(coord, openapi=openapi_document)),
            *bind(nodes.ROUTES, nodes.NodeHandlers(coord)),
            *bind(workloads.ROUTES, workloads.WorkloadHandlers(coord)),
            *bind(tty.ROUTES, tty.TtyHandlers(coord, tokens=self.tokens)),
            *bind(events.ROUTES, events.EventHandlers(coord.journal)),
            *bind(identity_routes.ROUTES, identity_routes.IdentityHandlers(coord, identity)),
            *bind(secrets.ROUTES, self.secrets),
            *bind(overlay.ROUTES, overlay.OverlayHandlers(coord)),
            *bind(services.ROUTES, services.ServiceHandlers(coord)),
            *bind(storage_routes.ROUTES, self._storage),
            *bind(install.ROUTES, install.InstallHandlers())]

    @property
    def secrets_key_source(self) -> KeySource | None:
        return self.secrets.secrets_key_source

    @secrets_key_source.setter
    def secrets_key_source(self, source: KeySource | None) -> None:  # a test swaps the key file for env
        self.secrets.secrets_key_source = source

    @property
    def storage(self) -> StorageAdmin | None:
        return self._storage.admin

    @storage.setter
    def storage(self, admin: StorageAdmin | None) -> None:  # the gateway starts after the API is built
        self._storage.admin = admin

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._middleware])
        for r, handler in self.routes:
            app.router.add_route(r.method, r.path, handler, name=r.handler)
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
                resp = error(exc.status, f"{request.method} {request.path}: {exc.reason}")
                if isinstance(exc, web.HTTPMethodNotAllowed):  # RFC 9110 §15.5.6: a 405 lists what is allowed
                    resp.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
                return resp
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
        except (CommandFailed, storage_routes.StorageUnavailable) as exc:
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
        token = bearer_token(request.headers.get("Authorization", ""))
        if not token:
            return None
        digest = token_digest(token)
        for known, (_, role) in self.tokens.items():
            if hmac.compare_digest(digest, known):
                return role
        return None

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


async def serve(api: Api, host: str, port: int,
                ssl_context: ssl.SSLContext | None = None) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(api.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    sockets = site._server.sockets if site._server is not None else []  # type: ignore[attr-defined]
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, int(bound)


async def serve_socket(api: Api, socks: list[socket.socket],
                       ssl_context: ssl.SSLContext | None = None) -> web.AppRunner:
    """Serve on sockets bound (and listening) beforehand, so the address was known before the API was built."""
    runner = web.AppRunner(api.app(), access_log=None)
    await runner.setup()
    for sock in socks:
        await GatedSockSite(runner, sock, ssl_context=ssl_context).start()
    return runner


class GatedSockSite(web.SockSite):
    """aiohttp's SockSite behind broker.listeners' connection gate (issue 16: a flood of idle connections took every
    file descriptor): caps in total and per address, the TLS handshake inside the gate with a short timeout, and a
    deadline for the first request bytes."""

    async def start(self) -> None:
        await super(web.SockSite, self).start()  # BaseSite: registers the site with the runner
        assert self._runner.server is not None
        limits = ListenerLimits()
        self._server = await start_gated_server(
            self._runner.server, ConnectionGate.for_listener(limits, nofile_soft()), ssl_context=self._ssl_context,
            handshake_timeout_s=limits.handshake_timeout_s, what="api", sock=self._sock, backlog=self._backlog)

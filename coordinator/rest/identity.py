"""Enrolment, certificate renewal, join tokens and node revocation over REST (the cluster CA's routes)."""

from __future__ import annotations

from aiohttp import web

from broker import wire
from broker.auth import peer_cert
from broker.wire import NodeFacts, WireError
from coordinator.damper import Damper
from coordinator.enroll import Refuse, utc_time
from coordinator.errors import SpecError
from coordinator.http import error, read_json
from coordinator.identity import IdentityService
from coordinator.operations import NotFound
from coordinator.pki import CertRole
from coordinator.rest.ports import Engine
from coordinator.rest.routes import Route

ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/ca", "get_ca", "The cluster CA certificate (public; devices pin its fingerprint)",
          auth=False, media="application/x-pem-file"),
    Route("POST", "/v1/enroll", "enroll", "Enrol a device: a join token and a CSR in, a node certificate out",
          body="Enroll", auth=False, response="Enrolled"),
    Route("POST", "/v1/renew", "renew", "Renew a node certificate (mutual TLS with the current certificate)",
          body="Renew", auth=False, response="Renewed"),
    Route("POST", "/v1/tokens", "create_token", "Mint an enrolment token", body="TokenRequest",
          response="TokenCreated", ok=(201,)),
    Route("GET", "/v1/tokens", "list_tokens", "List enrolment tokens (ids and uses, never the tokens)",
          response="TokenList"),
    Route("DELETE", "/v1/tokens/{token}", "revoke_token", "Revoke an enrolment token", response="TokenRevoked"),
    Route("POST", "/v1/nodes/{node}/revoke", "revoke_node", "Revoke a node's certificate; its replicas move",
          response="NodeRevoked"),
)


class IdentityHandlers:
    """Enrolment, renewal, tokens and revocation; `identity` None: this coordinator runs no CA (404s)."""

    def __init__(self, coord: Engine, identity: IdentityService | None) -> None:
        self.coord = coord
        self.identity = identity
        self._enrol_denials = Damper()
        self._enrol_denials_all = Damper(interval_s=6.0, max_keys=1)

    def _ids(self) -> IdentityService:
        if self.identity is None:
            raise NotFound("this coordinator runs without a cluster CA (started without --pki)")
        return self.identity

    async def get_ca(self, request: web.Request) -> web.Response:
        return web.Response(body=self._ids().ca.cert_pem, content_type="application/x-pem-file")

    async def enroll(self, request: web.Request) -> web.Response:
        ids = self._ids()
        body = await read_json(request)
        if not isinstance(body, dict) or not all(isinstance(body.get(k), str) for k in ("token", "nodeId", "csr")):
            raise SpecError("", "body: expected {\"token\": str, \"nodeId\": str, \"csr\": PEM str}")
        result = await ids.enroll(body["token"], body["nodeId"], body["csr"].encode())
        if isinstance(result, Refuse):
            now = self.coord.clock()
            left_out = self._enrol_denials.allow(request.remote or "unknown", now)
            # unauthenticated callers must not be able to flood the event store: one event per address a minute,
            # and at most 10 a minute from all addresses together (many addresses are cheap, e.g. in an IPv6 /64)
            if left_out is not None and self._enrol_denials_all.allow("all", now) is not None:
                more = f" ({left_out} more refused from this address since the last event)" if left_out else ""
                await self.coord.journal.record_now("Warning", "EnrolmentDenied", f"node/{body['nodeId'][:63]}",
                                            f"from {request.remote}: {result.reason}{more}")
            return error(result.status, result.reason)
        issued, decision = result
        self.coord.ops.enrolled(decision.node_id)
        await self.coord.journal.record_now("Normal", "Enrolled", f"node/{decision.node_id}",
                                    f"certificate {issued.serial:x} until {utc_time(issued.not_after)} "
                                    f"(from {request.remote})")
        return web.json_response({"nodeId": decision.node_id, "certificate": issued.cert_pem.decode(),
                                  "ca": ids.ca.cert_pem.decode(), "notAfter": issued.not_after,
                                  "labels": decision.labels, "zone": decision.zone,
                                  "broker": ids.cfg.broker_url})

    async def renew(self, request: web.Request) -> web.Response:
        ids = self._ids()
        cert = peer_cert(request.transport.get_extra_info("ssl_object") if request.transport else None)
        if cert is None or cert.unit != CertRole.NODE.value:
            return error(401, "renewal needs mutual TLS with the node's current certificate")
        body = await read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("csr"), str):
            raise SpecError("csr", "a PEM certificate request is required")
        result = await ids.renew(cert.common_name, cert.serial, body["csr"].encode())
        if isinstance(result, Refuse):
            return error(result.status, result.reason)
        await self.coord.journal.record_now("Normal", "Renewed", f"node/{cert.common_name}",
                                    f"certificate {result.serial:x} until {utc_time(result.not_after)}")
        return web.json_response({"nodeId": cert.common_name, "certificate": result.cert_pem.decode(),
                                  "ca": ids.ca.cert_pem.decode(), "notAfter": result.not_after})

    async def create_token(self, request: web.Request) -> web.Response:
        if not request.can_read_body:  # the CLI always sends one; `{}` takes every default
            raise SpecError("", "a JSON object is required (`{}` for the defaults)")
        body = await read_json(request)
        if not isinstance(body, dict):
            raise SpecError("", "body must be an object")
        unknown = set(body) - {"ttlSeconds", "maxUses", "labels", "zone"}
        if unknown:
            raise SpecError(sorted(unknown)[0], "unknown field")
        ttl, uses = body.get("ttlSeconds", 3600), body.get("maxUses", 1)
        labels, zone = body.get("labels", {}), body.get("zone", "")
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
            raise SpecError("ttlSeconds", "must be a number")
        if isinstance(uses, bool) or not isinstance(uses, int):
            raise SpecError("maxUses", "must be an integer")
        if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in labels.items()):
            raise SpecError("labels", "must map strings to strings")
        if not isinstance(zone, str):
            raise SpecError("zone", "must be a string")
        try:  # what the token grants, the node must be able to publish: the wire's own rules for its facts
            wire.encoded_size(NodeFacts(zone=zone, labels=labels))
        except WireError as exc:
            raise SpecError(exc.path or "labels", f"a node could never publish this: {exc.reason}") from None
        token, record = await self._ids().create_token(ttl_s=float(ttl), max_uses=uses, labels=labels, zone=zone)
        await self.coord.journal.record_now("Normal", "TokenCreated", f"token/{record.token_id}",
                                    f"max uses {record.max_uses}, expires {utc_time(record.expires_at)}")
        return web.json_response({"id": record.token_id, "token": token, "expiresAt": record.expires_at,
                                  "maxUses": record.max_uses}, status=201)

    async def list_tokens(self, request: web.Request) -> web.Response:
        items = [{"id": t.token_id, "maxUses": t.max_uses, "uses": t.uses, "revoked": t.revoked,
                  "expiresAt": t.expires_at, "createdAt": t.created_at, "nodes": list(t.nodes)}
                 for t in await self._ids().tokens()]
        return web.json_response({"items": items})

    async def revoke_token(self, request: web.Request) -> web.Response:
        record = await self._ids().revoke_token(request.match_info["token"])
        if record is None:
            raise NotFound(f"token {request.match_info['token'][:32]} not found")
        await self.coord.journal.record_now("Normal", "TokenRevoked", f"token/{record.token_id}", "revoked")
        return web.json_response({"id": record.token_id, "revoked": True})

    async def revoke_node(self, request: web.Request) -> web.Response:
        node = request.match_info["node"]
        record = await self._ids().revoke_node(node)
        if record is None:
            raise NotFound(f"node {node[:63]} has no certificate")
        serials = tuple(f"{s:x}" for s, _ in record.live_serials(self.coord.clock()))
        await self.coord.ops.mark_revoked(node, serials)
        await self.coord.journal.record_now("Warning", "Revoked", f"node/{node}",
                                    f"certificate {record.serial:x} revoked; replicas move to other nodes")
        return web.json_response({"node": node, "serial": f"{record.serial:x}", "revoked": True})

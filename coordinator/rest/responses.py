"""Schemas of what the REST API answers (2xx bodies), by name; a route names its own (`Route.response`).

They describe the shapes coordinator.views and the handlers build. Objects stay open (no
`additionalProperties: false`): a newer coordinator may add fields and an older client must still accept them.
tests/coordinator/test_openapi.py checks real answers of a live app against these, so a shape change that is not
written down here fails there.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
NUM: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}
OBJ: Schema = {"type": "object"}
STR_MAP: Schema = {"type": "object", "additionalProperties": {"type": "string"}}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(required: tuple[str, ...] = (), **props: Schema) -> Schema:
    out: Schema = {"type": "object", "properties": props}
    if required:
        out["required"] = list(required)
    return out


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def items_of(name: str) -> Schema:
    return obj(("items",), items={"type": "array", "items": ref(name)})


# a paged list (coordinator.listing): `continue` and `remainingItemCount` only while more items follow
LIST_META = obj((), **{"continue": {**STR, "description": "pass as ?continue= for the next page"},
                   "remainingItemCount": {**INT, "description": "items after this page (matching the filters)"}})


def page_of(name: str) -> Schema:
    return obj(("items", "metadata"), items={"type": "array", "items": ref(name)}, metadata=LIST_META)


_NODE = obj(
    ("id", "state", "online", "schedulable"),
    id=STR, state=STR, online=BOOL, schedulable=BOOL, cordoned=BOOL, draining=BOOL,
    gates={"type": "array", "items": STR}, labels=STR_MAP, zone=STR, arch=STR, os=STR, osRelease=STR,
    hostname=STR, profile=STR, runtime=STR, runtimeVersion=STR, abilities={"type": "array", "items": STR},
    rootless=nullable(BOOL), agentVersion=STR,
    workloadIsolation=STR,
    capacity=obj(cpu=NUM, memory=NUM), allocated=obj(cpu=NUM, memory=NUM),
    usage=obj(cpuPercent=nullable(NUM), memoryBytes=nullable(NUM), batteryPercent=nullable(NUM)),
    temperatures={"type": "object", "additionalProperties": NUM}, replicas=INT,
    lastSeen=nullable(NUM), stateSince=nullable(NUM), reliability=NUM, flaps=INT, problem=nullable(STR),
    storage=nullable(obj(quotaBytes=INT, usedBytes=INT, chunks=INT, corrupt=INT)))

_REPLICA = obj(
    ("id", "workload", "namespace", "state", "ready"),
    id=STR, workload=STR, namespace=STR, node=nullable(STR), state=STR, ready=BOOL, restarts=INT,
    specHash=STR, revision=INT, message=nullable(STR), startedAt=nullable(NUM), createdAt=nullable(NUM))

_CONDITION = obj(("type", "status"), type=STR, status=STR, reason=nullable(STR), message=nullable(STR))

_WORKLOAD_VIEW = obj(
    ("apiVersion", "kind", "metadata", "spec", "status"),
    apiVersion=STR, kind=STR,
    metadata=obj(("namespace", "name"), namespace=STR, name=STR, generation=INT, revision=INT,
                 createdAt=nullable(NUM)),
    spec=OBJ,
    status=obj(("desired", "ready", "phase"), desired=INT, ready=INT, available=INT, updated=INT, phase=STR,
               specHash=STR, conditions={"type": "array", "items": _CONDITION},
               replicas={"type": "array", "items": ref("Replica")},
               unschedulable={"type": "array", "items": obj(replica=STR, summary=nullable(STR),
                                                            reasons=STR_MAP)},
               rollout=obj(revision=INT, phase=STR, message=nullable(STR))),
    # only on apply (PUT): what admission policy warned about; the workload was admitted all the same
    warnings={"type": "array", "items": STR})

_EVENT = obj(("id", "time", "type", "reason", "object", "message"),
             id=INT, time={**NUM, "description": "unix seconds"},
             type={"type": "string", "enum": ["Normal", "Warning"]},
             reason=STR, object=STR, message=STR)

_TOKEN = obj(("id", "maxUses", "uses", "revoked", "expiresAt"), id=STR, maxUses=INT, uses=INT, revoked=BOOL,
             expiresAt=NUM, createdAt=NUM, nodes={"type": "array", "items": STR})

_OVERLAY_NODE = obj(("node",), node=STR, enabled=nullable(BOOL), disabled=nullable(STR), nat=STR,
                    port=nullable(INT), candidates={"type": "array", "items": obj(kind=STR, address=STR, via=STR)},
                    relays={"type": "array", "items": STR}, peers=INT, counters=OBJ, reportedAt=nullable(NUM))

_ARRAY_OF_STR: Schema = {"type": "array", "items": STR}
_SERVICE = obj(("namespace", "name", "fqdn", "vip", "ports", "endpoints"),
               namespace=STR, name=STR, fqdn=STR, vip=STR,
               ports={"type": "array", "items": obj(("port", "targetPort"), port=INT, targetPort=INT, name=STR,
                                                     protocol=STR)},
               workloads=_ARRAY_OF_STR, ready=INT, endpointCount=INT,
               endpoints={"type": "array", "items": obj(("node", "replica", "ready"), node=STR, replica=STR,
                                                         workload=STR, zone=STR, weight=INT, ready=BOOL,
                                                         reason=STR)},
               ingress={"type": "array", "items": obj(("port", "hostPort"), port=INT, hostPort=INT,
                                                       nodes=_ARRAY_OF_STR)},
               problems=_ARRAY_OF_STR)

_BUCKET = obj(("name", "replicas"), name=STR, created=NUM, replicas=INT, objects=INT, bytes=INT,
              storedBytes={**INT, "description": "what its objects take as stored: one copy, before replication or "
                                                 "erasure coding, after compression"},
              erasure={**nullable(STR), "description": "the erasure code (\"4+2\"), null when replicated"},
              compression={**nullable(STR), "description": "\"zstd\": chunks are compressed before they are "
                                                         "stored; null: stored as they are"})
_STORAGE_KEY = obj(("id", "name", "buckets"), id=STR, name=STR,
                   buckets={**STR_MAP, "description": "bucket (or *) -> read | write | admin"})
_STORAGE_NODE = obj(("node",), node=STR, zone=STR, online=BOOL, state=STR, quotaBytes=INT, usedBytes=INT, chunks=INT,
                    reliability=NUM)
_STORAGE = {
    "StorageStatus": obj(
        (), endpoint=nullable(STR), identity=nullable(STR), leader=BOOL,
        nodes={"type": "array", "items": _STORAGE_NODE}, chunks=INT,
        underReplicated={**INT, "description": "chunks with fewer good copies (or fragments) than they should have"},
        unrecoverable={**INT, "description": "chunks with no good copy left (fewer than k fragments)"},
        deferred=INT,
        repair=obj(copied=INT, copiedBytes=INT, deleted=INT, failed=INT, rateBytesPerS=NUM, budgetBytesPerS=NUM,
                   lastRun=nullable(NUM), lastCopied=INT, lastCopiedBytes=INT),
        gc=obj(lastRun=nullable(NUM), collected=INT), scrub=obj(reported=INT),
        compression=obj(writtenBytes=INT, storedBytes=INT, savedBytes=INT, chunksCompressed=INT, chunksRaw=INT)),
    "Bucket": _BUCKET,
    "BucketList": obj(("items",), items={"type": "array", "items": _BUCKET}),
    "BucketDeleted": obj(("deleted",), deleted=STR),
    "StorageKeyList": obj(("items",), items={"type": "array", "items": _STORAGE_KEY}),
    "StorageKeyCreated": obj(("id", "name", "buckets", "secret"), id=STR, name=STR, buckets=STR_MAP,
                             secret={**STR, "description": "the secret access key: shown this once"}),
    "StorageKeyDeleted": obj(("id", "deleted"), id=STR, deleted=BOOL),
}

RESPONSE_SCHEMAS: dict[str, Schema] = {
    "Health": obj(("ok",), ok=BOOL, version=STR),
    "Readiness": obj(("ready",), ready=BOOL, broker=BOOL, state=BOOL, store=BOOL, storeError=nullable(STR),
                     epoch=nullable(INT), leader=BOOL, leaderId=nullable(STR), rounds=INT, roundsFailing=INT,
                     roundError=nullable(STR), epochBehind=nullable(INT), problems=STR_MAP),
    "Node": _NODE,
    "NodeList": page_of("Node"),
    "NodeDeleted": obj(("deleted",), deleted=STR),
    "Replica": _REPLICA,
    "ReplicaList": page_of("Replica"),
    "WorkloadView": _WORKLOAD_VIEW,
    "WorkloadList": page_of("WorkloadView"),
    "RolloutStatus": obj(("revision", "phase"), revision=INT, phase=STR, desired=INT, updated=INT, ready=INT,
                         available=INT, message=nullable(STR)),
    "RolloutHistory": obj(("items",), items={"type": "array", "items": obj(
        ("revision",), revision=INT, specHash=STR, createdAt=NUM, image=nullable(STR), cause=nullable(STR))}),
    "Logs": obj(("output",), replica=STR, node=nullable(STR), output=STR),
    "ExecResult": obj(("exitCode", "output"), exitCode=INT, output=STR),
    "Event": _EVENT,
    "EventList": page_of("Event"),
    "Enrolled": obj(("nodeId", "certificate", "ca", "notAfter"), nodeId=STR, certificate=STR, ca=STR,
                    notAfter=NUM, labels=STR_MAP, zone=STR, broker=nullable(STR)),
    "Renewed": obj(("nodeId", "certificate", "ca", "notAfter"), nodeId=STR, certificate=STR, ca=STR, notAfter=NUM),
    "TokenCreated": obj(("id", "token", "expiresAt", "maxUses"), id=STR, token=STR, expiresAt=NUM, maxUses=INT),
    "Token": _TOKEN,
    "TokenList": items_of("Token"),
    "TokenRevoked": obj(("id", "revoked"), id=STR, revoked=BOOL),
    "NodeRevoked": obj(("node", "serial", "revoked"), node=STR, serial=STR, revoked=BOOL),
    "OverlaySummary": obj(("relays", "nodes"),
                          relays={"type": "array", "items": obj(id=STR, addresses={"type": "array", "items": STR})},
                          nodes={"type": "array", "items": _OVERLAY_NODE},
                          kept={"type": "array", "items": obj(a=STR, b=STR, until=nullable(NUM), why=STR)},
                          directShare=nullable(NUM)),
    "PeerList": obj(("items",), items={"type": "array", "items": OBJ}, metadata=LIST_META),
    "OverlayKept": obj(("a", "b", "kept"), a=STR, b=STR, kept=BOOL, new=BOOL, was=BOOL),
    "OverlayPingResult": obj(("from",), **{"from": STR}),
    "Service": _SERVICE,
    "ServiceList": page_of("Service"),
    "Object": OBJ,
    **_STORAGE,
}

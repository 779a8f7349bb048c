"""What the REST layer asks of the coordinator (adapter, mixed into `Coordinator`): apply with admission,
delete, scale, rollback, node administration and commands carried to agents. Each operation changes the
in-memory state under the engine's lock and persists it in the same store transaction as its events, then wakes
the reconcile loop; none of them decides placement or lifecycle (the cores do, in the loop)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from broker import wire
from broker.client import MqttClient
from broker.errors import MqttError
from broker.wire import CommandName, CommandReply, CommandRequest, topics
from coordinator import dashboard, membership, model
from coordinator.errors import CoordinatorError
from coordinator.membership import NodeInfo, NodeState
from coordinator.model import Event, NodeAdmin, ReplicaRecord, RolloutPhase, WorkloadRecord
from coordinator.policy import Decision, default_policies, evaluate
from coordinator.spec import Workload, parse_workload, spec_hash, workload_to_doc
from coordinator.store import delete as delete_op
from coordinator.store import put

if TYPE_CHECKING:
    from coordinator.service import CoordinatorConfig

HISTORY_LIMIT = 10


class NotFound(CoordinatorError):
    pass


class CommandFailed(CoordinatorError):
    pass


class InUse(CoordinatorError):
    """The object cannot go yet (a node still online or holding replicas): a 409 for the API."""


class PolicyDenied(CoordinatorError):
    """The admission policy refused a workload; `decision` lists every violation."""

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        super().__init__("denied by admission policy: " + "; ".join(decision.reasons))


class Operations:
    # state and helpers of the engine this mixin works on (defined by `Coordinator`)
    cfg: CoordinatorConfig
    clock: Callable[[], float]
    mqtt: MqttClient
    workloads: dict[str, WorkloadRecord]
    replicas: dict[str, ReplicaRecord]
    admin: dict[str, NodeAdmin]
    members: dict[str, NodeInfo]
    revoked_nodes: set[str]
    _dash_sent: dict[str, str]
    _lock: asyncio.Lock
    _pending_ops: list[Any]
    _replies: dict[str, asyncio.Future[CommandReply]]

    if TYPE_CHECKING:
        def event(self, type_: str, reason: str, obj: str, message: str) -> Event: ...
        async def _flush(self) -> None: ...
        def wake(self) -> None: ...
        def _save_workload(self, w: WorkloadRecord) -> None: ...

    async def apply(self, doc: object) -> tuple[WorkloadRecord, bool, bool]:
        """Create or update; returns (record, created, changed). Raises SpecError for a bad document."""
        w = parse_workload(doc)
        try:
            self.admit(w)
        except PolicyDenied:
            async with self._lock:
                await self._flush()  # the decision's events are listed by the time the caller hears the 403
            raise
        canonical = workload_to_doc(w)
        h = spec_hash(w)
        now = self.clock()
        async with self._lock:
            old = self.workloads.get(w.key)
            if old is not None and old.doc == canonical and not old.deleting:
                return old, False, False
            if old is None:
                rec = WorkloadRecord(namespace=w.namespace, name=w.name, doc=canonical, spec_hash=h, revision=1,
                                     generation=1, created_at=now, rollout_phase=RolloutPhase.PROGRESSING,
                                     rollout_started_at=now, rollout_message="creating",
                                     history=(self._rev(1, h, canonical, now, "created"),))
                self.event("Normal", "Created", f"workload/{w.key}", f"{w.spec.replicas} replicas of {w.spec.image}")
            elif old.spec_hash != h:
                rev = old.revision + 1
                rec = replace(old, doc=canonical, spec_hash=h, revision=rev, generation=old.generation + 1,
                              deleting=False, rollout_phase=RolloutPhase.PROGRESSING, rollout_started_at=now,
                              rollout_message=f"rolling out revision {rev}",
                              history=self._trim((*old.history, self._rev(rev, h, canonical, now, "apply"))))
                self.event("Normal", "RolloutStarted", f"workload/{w.key}", f"revision {rev} ({w.spec.image})")
            else:
                rec = replace(old, doc=canonical, generation=old.generation + 1, deleting=False)
                self.event("Normal", "Updated", f"workload/{w.key}", "spec updated (no restart needed)")
            self._save_workload(rec)
            await self._flush()
        self.wake()
        return rec, old is None, True

    def admit(self, w: Workload) -> Decision:
        """Run the admission policy; every decision is recorded as an event; a denial raises PolicyDenied."""
        policies = self.cfg.policies if self.cfg.policies is not None else default_policies()
        decision = evaluate(policies, w)
        obj = f"workload/{w.key}"
        for v in decision.violations:
            self.event("Warning" if v.action != "audit" else "Normal", f"Policy{str(v.action).title()}", obj,
                       f"{v.field}: {v.message} ({v.policy}/{v.rule})")
        if not decision.allowed:
            self.event("Warning", "PolicyDenied", obj, f"refused by admission policy ({len(decision.reasons)} "
                       "violation(s))")
            raise PolicyDenied(decision)
        if not decision.violations:
            self.event("Normal", "PolicyAllowed", obj, f"admitted by {', '.join(decision.policies) or 'no policy'}")
        return decision

    @staticmethod
    def _rev(revision: int, h: str, doc: dict[str, Any], now: float, cause: str) -> dict[str, Any]:
        return {"revision": revision, "spec_hash": h, "doc": doc, "created_at": now, "cause": cause}

    def _trim(self, history: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
        in_use = {r.spec_hash for r in self.replicas.values()}
        keep = list(history)
        while len(keep) > HISTORY_LIMIT:
            victim = next((h for h in keep[:-1] if h["spec_hash"] not in in_use), None)
            if victim is None:
                break
            keep.remove(victim)
        return tuple(keep)

    def get(self, namespace: str, name: str) -> WorkloadRecord:
        w = self.workloads.get(f"{namespace}/{name}")
        if w is None:
            raise NotFound(f"workload {namespace}/{name} not found")
        return w

    async def delete(self, namespace: str, name: str) -> WorkloadRecord:
        async with self._lock:
            w = self.get(namespace, name)
            w = replace(w, deleting=True)
            self._save_workload(w)
            self.event("Normal", "Deleting", f"workload/{w.key}", "stopping every replica")
            await self._flush()
        self.wake()
        return w

    async def scale(self, namespace: str, name: str, replicas: int) -> WorkloadRecord:
        w = self.get(namespace, name)
        if w.deleting:
            raise NotFound(f"workload {namespace}/{name} is being deleted")
        doc = {**w.doc, "spec": {**w.doc["spec"], "replicas": replicas}}
        rec, _, _ = await self.apply(doc)
        return rec

    async def rollback(self, namespace: str, name: str, revision: int | None) -> WorkloadRecord:
        async with self._lock:
            w = self.get(namespace, name)
            try:
                rec = self._rollback(w, revision, cause="rollback requested", now=self.clock(), auto=False)
            finally:
                await self._flush()  # a refusal's events too
        self.wake()
        return rec

    def _rollback(self, w: WorkloadRecord, revision: int | None, *, cause: str, now: float,
                  auto: bool) -> WorkloadRecord:
        candidates = [h for h in w.history if h["spec_hash"] != w.spec_hash]
        if revision is not None:
            candidates = [h for h in w.history if h["revision"] == revision]
        if not candidates:
            raise NotFound(f"workload {w.key}: no revision to roll back to" +
                           (f" (revision {revision} not in history)" if revision is not None else ""))
        target = candidates[-1]
        doc = {**target["doc"], "spec": {**target["doc"]["spec"], "replicas": w.doc["spec"].get("replicas", 1)}}
        parsed = parse_workload(doc)
        self.admit(parsed)  # a revision admitted under an older policy is checked again
        h = spec_hash(parsed)
        rev = w.revision + 1
        rec = replace(w, doc=workload_to_doc(parsed), spec_hash=h, revision=rev, generation=w.generation + 1,
                      rollout_phase=RolloutPhase.ROLLING_BACK, rollout_started_at=now,
                      rollout_message=f"rolling back to revision {target['revision']}",
                      history=self._trim((*w.history, self._rev(rev, h, workload_to_doc(parsed), now,
                                                                f"rollback to {target['revision']}"))))
        self._save_workload(rec)
        self.event("Warning" if auto else "Normal", "RollingBack", f"workload/{w.key}", cause)
        return rec

    async def set_admin(self, node_id: str, *, cordoned: bool | None = None,
                        draining: bool | None = None) -> NodeAdmin:
        if node_id not in self.members:
            raise NotFound(f"node {node_id} not found")
        async with self._lock:
            cur = self.admin.get(node_id, NodeAdmin())
            new = NodeAdmin(cordoned=cur.cordoned if cordoned is None else cordoned,
                            draining=cur.draining if draining is None else draining)
            if draining:
                new = replace(new, cordoned=True)
            if cordoned is False:
                new = replace(new, draining=False)
            self.admin[node_id] = new
            self._pending_ops.append(put(model.node_key(node_id), model.to_json(new)))
            what = "draining" if new.draining else "cordoned" if new.cordoned else "uncordoned"
            self.event("Normal", what.title(), f"node/{node_id}", f"node {node_id} {what}")
            await self._flush()
        self.wake()
        return new

    async def command(self, replica: ReplicaRecord, name: CommandName, *, args: dict[str, str] | None = None,
                      argv: tuple[str, ...] = (), timeout_s: float = 10.0) -> CommandReply:
        """Carry a command to the replica's node over MQTT and wait for its reply."""
        if replica.node is None:
            raise CommandFailed(f"replica {replica.replica_id} has no node yet")
        info = self.members.get(replica.node)
        if info is None or info.state is not NodeState.ONLINE:
            raise CommandFailed(f"node {replica.node} is not online")
        request_id, now = secrets.token_hex(8), self.clock()
        req = CommandRequest(request_id=request_id, node_id=replica.node, command=name,
                             reply_to=topics.node_reply(replica.node), deadline=now + timeout_s, sent=now,
                             args={"replica": replica.replica_id, **(args or {})}, argv=argv)
        fut: asyncio.Future[CommandReply] = asyncio.get_running_loop().create_future()
        self._replies[request_id] = fut
        try:
            await self.mqtt.publish(topics.node_cmd(replica.node), wire.encode(req), qos=1)
            async with asyncio.timeout(timeout_s + 2.0):
                return await fut
        except TimeoutError:
            raise CommandFailed(f"node {replica.node} did not answer within {timeout_s:.0f}s") from None
        except MqttError as exc:
            raise CommandFailed(f"cannot reach node {replica.node}: {exc}") from None
        finally:
            self._replies.pop(request_id, None)

    async def delete_node(self, node_id: str) -> None:
        """Forget a node that is gone: its record, its admin state, its retained presence and observed state, the
        dashboard mirror and its Home Assistant entities (an empty retained payload removes a discovery config).
        Its desired state stays, empty: if the device ever comes back it stops what it ran (those replicas were
        rescheduled) and joins again as a new node; its generation counter is kept so that message is not
        mistaken for an old one. A node still online, or still holding replicas, is refused: stop or revoke it
        (its replicas move once it is lost), or drain it, first."""
        info = self.members.get(node_id)
        if info is None and node_id not in self.admin:
            raise NotFound(f"node {node_id} not found")
        if info is not None and info.state is NodeState.ONLINE:
            raise InUse(f"node {node_id} is online; stop its agent or `cloudless node revoke {node_id}` first")
        held = sorted(r.replica_id for r in self.replicas.values() if r.node == node_id)
        if held:
            raise InUse(f"node {node_id} still holds {len(held)} replica(s) ({', '.join(held[:3])}); wait until "
                        f"they are rescheduled, or `cloudless drain {node_id}`")
        async with self._lock:
            self.members.pop(node_id, None)
            self.admin.pop(node_id, None)
            self._pending_ops.append(delete_op(model.node_key(node_id)))
            self.event("Normal", "NodeDeleted", f"node/{node_id}", f"node {node_id} deleted")
            await self._flush()
        gone = [topics.node_status(node_id), topics.node_observed(node_id), *dashboard.cleared_topics(node_id)]
        for topic in gone:
            self._dash_sent.pop(topic, None)
            self.mqtt.publish_nowait(topic, b"", qos=1, retain=True)
        self.wake()

    async def mark_revoked(self, node_id: str) -> None:
        """A revoked node is gone for good: treat it as lost now, so its replicas are replaced at once."""
        async with self._lock:
            self.revoked_nodes.add(node_id)
            info = self.members.get(node_id)
            if info is not None:
                self.members[node_id] = membership.mark_lost(info, self.clock())
        self.wake()

    def enrolled(self, node_id: str) -> None:
        """A node (re-)enrolled with a fresh certificate: it may join again."""
        self.revoked_nodes.discard(node_id)


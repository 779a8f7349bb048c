"""What the REST layer asks of the coordinator (adapter, composed into the engine): apply with admission,
delete, scale, rollback, node administration and commands carried to agents. Each operation changes the
in-memory state (`Cluster`) under the engine's lock and persists it in the same store transaction as its events
(`Recorder`), then wakes the reconcile loop; none of them decides placement or lifecycle (the cores do, in the
loop), nor revision numbering (coordinator.revisions)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from broker import wire
from broker.errors import MqttError, WireError
from broker.wire import CommandName, CommandReply, CommandRequest, topics
from coordinator import membership, model, revisions
from coordinator.cluster import Cluster
from coordinator.errors import CoordinatorError, SpecError
from coordinator.membership import NodeState
from coordinator.model import Event, NodeAdmin, ReplicaRecord, WorkloadRecord
from coordinator.policy import Decision, Policy, default_policies, evaluate
from coordinator.scheduler.model import DESIRED_BUDGET_BYTES
from coordinator.services import BUILTIN_NAMESPACE
from coordinator.spec import Workload, parse_workload, spec_hash, workload_to_doc
from coordinator.store import Op, put
from coordinator.store import delete as delete_op
from coordinator.translate import replica_wire_bytes

HISTORY_LIMIT = revisions.HISTORY_LIMIT


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


# namespaces of the cluster's built-in services (the S3 gateway is `s3.cloudless`): a workload there would add
# services every namespace sees, or stand in for a built-in while it is not registered (review 6, L2)
RESERVED_NAMESPACES = (BUILTIN_NAMESPACE,)


def check_sendable(w: Workload, budget: int = DESIRED_BUDGET_BYTES) -> None:
    """What the wire will refuse is refused now, as a 400: a replica spec the wire's own rules reject, or one
    replica alone over a node's desired-state budget (no node could ever be sent it)."""
    try:
        size = replica_wire_bytes(w, "0" * 64)
    except WireError as exc:
        raise SpecError("spec", f"cannot be sent to a node ({exc})") from None
    if size > budget:
        raise SpecError("spec", f"one replica encodes to {size} bytes; a node's whole desired state must fit in "
                        f"{budget} bytes (shrink env, args or labels, or move data into a secret or an image)")


class Recorder(Protocol):
    """Where operations record events and queue store writes (coordinator.journal.Journal)."""

    def event(self, type_: str, reason: str, obj: str, message: str, *, about: str = "") -> Event: ...

    def queue(self, op: Op) -> None: ...

    async def flush(self) -> None: ...

    async def begin(self) -> None: ...

    async def commit(self, undo: Callable[[], None]) -> None: ...


class Bus(Protocol):
    """How a command reaches a node (broker.client.MqttClient)."""

    async def publish(self, topic: str, payload: bytes, *, qos: int = ..., retain: bool = ...) -> object: ...


class Operations:
    """`on_node_deleted(node)` runs after a node's deletion is written: the engine clears its retained topics."""

    def __init__(self, cluster: Cluster, journal: Recorder, *, bus: Bus, clock: Callable[[], float],
                 lock: asyncio.Lock, wake: Callable[[], None], policies: tuple[Policy, ...] | None,
                 on_node_deleted: Callable[[str], None],
                 on_revoked: Callable[[tuple[str, ...]], None] = lambda _serials: None) -> None:
        self.cluster = cluster
        self.on_revoked = on_revoked
        self.journal = journal
        self.bus = bus
        self.clock = clock
        self.lock = lock
        self.wake = wake
        self.policies = policies
        self.on_node_deleted = on_node_deleted
        self.replies: dict[str, asyncio.Future[CommandReply]] = {}  # request id -> the caller waiting for it

    def save_workload(self, w: WorkloadRecord) -> None:
        self.cluster.workloads[w.key] = w
        self.journal.queue(put(model.workload_key(w.namespace, w.name), model.to_json(w)))

    def resolve(self, reply: CommandReply) -> None:
        """A node answered a command: hand the reply to whoever waits for it."""
        fut = self.replies.pop(reply.request_id, None)
        if fut is not None and not fut.done():
            fut.set_result(reply)

    async def apply(self, doc: object) -> tuple[WorkloadRecord, bool, bool]:
        """Create or update; returns (record, created, changed). Raises SpecError for a bad document."""
        w = parse_workload(doc)
        if w.namespace in RESERVED_NAMESPACES:
            raise SpecError("metadata.namespace", f"{w.namespace!r} is reserved for the cluster's built-in services "
                            "(s3.cloudless): put the workload in another namespace")
        check_sendable(w)
        canonical = workload_to_doc(w)
        h = spec_hash(w)
        now = self.clock()
        async with self.lock:
            await self.journal.begin()  # all or nothing from here: a 503 leaves no trace (issue 16, Medium 9)
            try:
                self.admit(w)
            except PolicyDenied:
                await self.journal.flush()  # the decision's events are listed by the time the caller hears the 403
                raise
            old = self.cluster.workloads.get(w.key)
            if old is not None and old.doc == canonical and not old.deleting:
                await self.journal.flush()  # the admission events
                return old, False, False
            if old is None:
                rec = revisions.created(w.namespace, w.name, doc=canonical, spec_hash=h, now=now)
                self.journal.event("Normal", "Created", f"workload/{w.key}",
                                   f"{w.spec.replicas} replicas of {w.spec.image}")
            elif old.spec_hash != h:
                rec = revisions.rolled_out(old, doc=canonical, spec_hash=h, now=now,
                                           in_use=self.cluster.spec_hashes_in_use())
                self.journal.event("Normal", "RolloutStarted", f"workload/{w.key}",
                                   f"revision {rec.revision} ({w.spec.image})")
            else:
                rec = revisions.updated(old, doc=canonical)
                self.journal.event("Normal", "Updated", f"workload/{w.key}", "spec updated (no restart needed)")
            self.save_workload(rec)
            await self.journal.commit(undo=self._restore_workload(w.key, old))
        self.wake()
        return rec, old is None, True

    def _restore_workload(self, key: str, old: WorkloadRecord | None) -> Callable[[], None]:
        """What puts a workload back as it was, if the write of its change fails."""
        def undo() -> None:
            if old is None:
                self.cluster.workloads.pop(key, None)
            else:
                self.cluster.workloads[key] = old
        return undo

    def admit(self, w: Workload) -> Decision:
        """Run the admission policy; every decision is recorded as an event; a denial raises PolicyDenied."""
        policies = self.policies if self.policies is not None else default_policies()
        decision = evaluate(policies, w)
        obj = f"workload/{w.key}"
        for v in decision.violations:
            self.journal.event("Warning" if v.action != "audit" else "Normal", f"Policy{str(v.action).title()}", obj,
                               f"{v.field}: {v.message} ({v.policy}/{v.rule})")
        if not decision.allowed:
            self.journal.event("Warning", "PolicyDenied", obj, f"refused by admission policy "
                               f"({len(decision.reasons)} violation(s))")
            raise PolicyDenied(decision)
        if not decision.violations:
            self.journal.event("Normal", "PolicyAllowed", obj,
                               f"admitted by {', '.join(decision.policies) or 'no policy'}")
        return decision

    def get(self, namespace: str, name: str) -> WorkloadRecord:
        w = self.cluster.workloads.get(f"{namespace}/{name}")
        if w is None:
            raise NotFound(f"workload {namespace}/{name} not found")
        return w

    async def delete(self, namespace: str, name: str) -> WorkloadRecord:
        async with self.lock:
            await self.journal.begin()
            old = self.get(namespace, name)
            w = replace(old, deleting=True)
            self.save_workload(w)
            self.journal.event("Normal", "Deleting", f"workload/{w.key}", "stopping every replica")
            await self.journal.commit(undo=self._restore_workload(w.key, old))
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
        async with self.lock:
            await self.journal.begin()
            w = self.get(namespace, name)
            try:
                rec = self.roll_back(w, revision, cause="rollback requested", now=self.clock(), auto=False)
            except (NotFound, PolicyDenied):
                await self.journal.flush()  # a refusal's events
                raise
            await self.journal.commit(undo=self._restore_workload(w.key, w))
        self.wake()
        return rec

    def roll_back(self, w: WorkloadRecord, revision: int | None, *, cause: str, now: float,
                  auto: bool) -> WorkloadRecord:
        """Roll `w` back (under the lock; the caller flushes): to `revision`, or the newest other revision."""
        target = revisions.rollback_target(w, revision)
        if target is None:
            raise NotFound(f"workload {w.key}: no revision to roll back to" +
                           (f" (revision {revision} not in history)" if revision is not None else ""))
        parsed = parse_workload(revisions.rollback_doc(w, target))
        self.admit(parsed)  # a revision admitted under an older policy is checked again
        rec = revisions.rolled_back(w, target, doc=workload_to_doc(parsed), spec_hash=spec_hash(parsed), now=now,
                                    in_use=self.cluster.spec_hashes_in_use())
        self.save_workload(rec)
        self.journal.event("Warning" if auto else "Normal", "RollingBack", f"workload/{w.key}", cause)
        return rec

    async def set_admin(self, node_id: str, *, cordoned: bool | None = None,
                        draining: bool | None = None) -> NodeAdmin:
        if node_id not in self.cluster.members:
            raise NotFound(f"node {node_id} not found")
        async with self.lock:
            await self.journal.begin()
            had = self.cluster.admin.get(node_id)
            cur = had or NodeAdmin()
            new = NodeAdmin(cordoned=cur.cordoned if cordoned is None else cordoned,
                            draining=cur.draining if draining is None else draining)
            if draining:
                new = replace(new, cordoned=True)
            if cordoned is False:
                new = replace(new, draining=False)
            self.cluster.admin[node_id] = new
            self.cluster.touch_node(node_id)  # a drain moves its replicas: their workloads are looked at
            self.journal.queue(put(model.node_key(node_id), model.to_json(new)))
            what = "draining" if new.draining else "cordoned" if new.cordoned else "uncordoned"
            self.journal.event("Normal", what.title(), f"node/{node_id}", f"node {node_id} {what}")

            def undo() -> None:
                if had is None:
                    self.cluster.admin.pop(node_id, None)
                else:
                    self.cluster.admin[node_id] = had
                self.cluster.touch_node(node_id)
            await self.journal.commit(undo=undo)
        self.wake()
        return new

    async def command(self, replica: ReplicaRecord, name: CommandName, *, args: dict[str, str] | None = None,
                      argv: tuple[str, ...] = (), timeout_s: float = 10.0) -> CommandReply:
        """Carry a command to the replica's node over MQTT and wait for its reply."""
        if replica.node is None:
            raise CommandFailed(f"replica {replica.replica_id} has no node yet")
        return await self.command_node(replica.node, name, args={"replica": replica.replica_id, **(args or {})},
                                       argv=argv, timeout_s=timeout_s)

    async def command_node(self, node_id: str, name: CommandName, *, args: dict[str, str] | None = None,
                           argv: tuple[str, ...] = (), timeout_s: float = 10.0) -> CommandReply:
        """Carry a command to a node over MQTT and wait for its reply."""
        info = self.cluster.members.get(node_id)
        if info is None:
            raise NotFound(f"node {node_id} not found")
        if info.state is not NodeState.ONLINE:
            raise CommandFailed(f"node {node_id} is not online")
        request_id, now = secrets.token_hex(8), self.clock()
        req = CommandRequest(request_id=request_id, node_id=node_id, command=name,
                             reply_to=topics.node_reply(node_id), deadline=now + timeout_s, sent=now,
                             args=dict(args or {}), argv=argv)
        fut: asyncio.Future[CommandReply] = asyncio.get_running_loop().create_future()
        self.replies[request_id] = fut
        try:
            await self.bus.publish(topics.node_cmd(node_id), wire.encode(req), qos=1)
            async with asyncio.timeout(timeout_s + 2.0):
                return await fut
        except TimeoutError:
            raise CommandFailed(f"node {node_id} did not answer within {timeout_s:.0f}s") from None
        except MqttError as exc:
            raise CommandFailed(f"cannot reach node {node_id}: {exc}") from None
        finally:
            self.replies.pop(request_id, None)

    async def delete_node(self, node_id: str) -> None:
        """Forget a node that is gone: its record, its admin state, its retained presence and observed state, the
        dashboard mirror and its Home Assistant entities (an empty retained payload removes a discovery config).
        Its desired state stays, empty: if the device ever comes back it stops what it ran (those replicas were
        rescheduled) and joins again as a new node; its generation counter is kept so that message is not
        mistaken for an old one. A node still online, or still holding replicas, is refused: stop or revoke it
        (its replicas move once it is lost), or drain it, first."""
        info = self.cluster.members.get(node_id)
        if info is None and node_id not in self.cluster.admin:
            raise NotFound(f"node {node_id} not found")
        if info is not None and info.state is NodeState.ONLINE:
            raise InUse(f"node {node_id} is online; stop its agent or `cloudless node revoke {node_id}` first")
        held = [r.replica_id for r in self.cluster.replicas.on_node(node_id)]
        if held:
            raise InUse(f"node {node_id} still holds {len(held)} replica(s) ({', '.join(held[:3])}); wait until "
                        f"they are rescheduled, or `cloudless drain {node_id}`")
        async with self.lock:
            self.cluster.members.pop(node_id, None)
            self.cluster.admin.pop(node_id, None)
            self.cluster.touch_node(node_id)
            self.journal.queue(delete_op(model.node_key(node_id)))
            self.journal.queue(delete_op(model.member_key(node_id)))
            self.journal.event("Normal", "NodeDeleted", f"node/{node_id}", f"node {node_id} deleted")
            await self.journal.flush()
        self.on_node_deleted(node_id)  # its retained presence, observed state, mirror and entities
        self.wake()

    async def mark_revoked(self, node_id: str, serials: tuple[str, ...] = ()) -> None:
        """A revoked node is gone for good: treat it as lost now, so its replicas are replaced at once; its
        certificate serials (hex) go to every node's peer directory, so live overlay connections with it are cut."""
        async with self.lock:
            self.cluster.revoked_nodes.add(node_id)
            self.cluster.touch_node(node_id)  # lost now: its replicas are replaced
            if serials:
                self.on_revoked(serials)
            info = self.cluster.members.get(node_id)
            if info is not None:
                self.cluster.members[node_id] = membership.mark_lost(info, self.clock())
        self.wake()

    def enrolled(self, node_id: str) -> None:
        """A node (re-)enrolled with a fresh certificate: it may join again."""
        self.cluster.revoked_nodes.discard(node_id)
        self.cluster.touch_node(node_id)

"""Secret delivery, coordinator side: seal each secret a node's replicas consume to that node's enrolled key.

Only nodes that run a consumer get a secret, and only as a sealed box (`broker.sealed`, HPKE-style to the public key
of the node's current certificate) inside that node's desired state: the broker, its retained store and anyone
subscribed see ciphertext. The agent opens the box in memory (edge_agent/secrets.py).

Boxes are cached per (node, node key, secret, version): an unchanged desired state stays byte-identical (nothing is
republished), while a new secret version, or a renewed node key (agents make a new key at every renewal), produces
new boxes — and so a new desired state — on the next round. Every seal is audited by the secrets service as a
`deliver` to `node:<id>`. A secret that cannot be delivered (no secrets service, a node without an enrolled key,
a deleted or expired secret) is reported in `problems`; the replica then stays without it and its agent says why.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from broker import sealed
from broker.wire import SealedSecret
from coordinator.store import Store, StoreError

log = logging.getLogger(__name__)
KEYS_REFRESH_S = 2.0  # how often node keys and secret versions are re-read (a renewal or an update shows up)

Want = tuple[str, str, str]  # (node, namespace, secret name)


@dataclass(frozen=True, slots=True)
class _NodeKey:
    fingerprint: str
    public_key: Any


class SecretDelivery:
    def __init__(self, secrets: Any, store: Store, *, clock: Callable[[], float]) -> None:
        self.secrets = secrets
        self.store = store
        self.clock = clock
        self._keys: dict[str, _NodeKey | None] = {}
        self._versions: dict[tuple[str, str], int] = {}
        self._boxes: dict[tuple[str, str, str, str, int], SealedSecret] = {}  # (node, key fp, ns, name, version)
        self._refreshed_at = float("-inf")
        self.problems: dict[Want, str] = {}
        # the nodes whose sealed boxes the last refresh added or dropped: only their desired state can have changed
        # (when it raised, the caller re-checks every wanting node)
        self.changed: set[str] = set()

    async def refresh(self, wanted: Iterable[Want], *, force: bool = False) -> dict[Want, str]:
        """Make sure every wanted (node, ns, name) has a current box; returns the problems that are new since the
        last call (for events). `changed` then holds the nodes whose boxes were added or dropped."""
        wanted = set(wanted)
        now = self.clock()
        if force or now - self._refreshed_at >= KEYS_REFRESH_S:
            self._refreshed_at = now
            await self._reload({n for n, _, _ in wanted}, {(ns, name) for _, ns, name in wanted})
        before = dict(self.problems)
        self.problems = {}
        self.changed = set()
        keep: set[tuple[str, str, str, str, int]] = set()
        for node, ns, name in sorted(wanted):
            key = self._keys.get(node)
            version = self._versions.get((ns, name))
            if key is None:
                self.problems[(node, ns, name)] = (f"node {node} has no enrolled key to seal secrets to (secrets "
                                                   "need certificate enrolment: `cloudless token create`)")
                continue
            if version is None:
                self.problems[(node, ns, name)] = f"secret {ns}/{name} does not exist (create it, or fix the name)"
                continue
            box_key = (node, key.fingerprint, ns, name, version)
            keep.add(box_key)
            if box_key in self._boxes:
                continue
            self.changed.add(node)  # a new version or a renewed key: new boxes, so a new desired state
            revealed = await self.secrets.values_for_delivery(ns, name, node_id=node, version=version)
            data = getattr(revealed, "data", None)
            if data is None:  # a Rejection: expired, deleted meanwhile, ...
                self.problems[(node, ns, name)] = f"secret {ns}/{name}: {getattr(revealed, 'reason', revealed)}"
                keep.discard(box_key)
                continue
            plain = msgpack.packb({k: bytes(v) for k, v in data.items()}, use_bin_type=True)
            box = sealed.seal(key.public_key, plain, sealed.delivery_aad(node, ns, name, version))
            self._boxes[box_key] = SealedSecret(secret=name, version=version, box=box)
        for stale in set(self._boxes) - keep:
            del self._boxes[stale]
            self.changed.add(stale[0])
        return {w: why for w, why in self.problems.items() if before.get(w) != why}

    def sealed_for(self, node: str, namespace: str, names: Iterable[str]) -> tuple[SealedSecret, ...]:
        key = self._keys.get(node)
        if key is None:
            return ()
        out = []
        for name in sorted(set(names)):
            version = self._versions.get((namespace, name))
            box = self._boxes.get((node, key.fingerprint, namespace, name, version)) if version else None
            if box is not None:
                out.append(box)
        return tuple(out)

    async def _reload(self, nodes: set[str], secrets: set[tuple[str, str]]) -> None:
        keys: dict[str, _NodeKey | None] = {}
        for node in nodes:
            try:
                entry = await self.store.get(f"/certs/{node}")
            except StoreError as exc:
                log.warning("cannot read node %s's certificate record: %s", node, exc)
                keys[node] = self._keys.get(node)
                continue
            keys[node] = _node_key(entry.value) if entry is not None else None
        self._keys = keys
        self._versions = await self.secrets.active_versions(sorted(secrets)) if secrets else {}


def _node_key(raw: bytes) -> _NodeKey | None:
    try:
        record: Mapping[str, Any] = json.loads(raw)
        pem = str(record.get("certificate") or "")
        if not pem or record.get("revoked"):
            return None
        public = sealed.public_key_from_cert_pem(pem.encode())
    except (ValueError, sealed.SealedError):
        return None
    return _NodeKey(hashlib.sha256(pem.encode()).hexdigest()[:16], public)

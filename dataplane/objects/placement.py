"""Where a chunk's copies go: `place(chunk_id, size, candidates, r)` -> `Placed | Unplaceable`. Pure.

Rendezvous (highest random weight) hashing makes the choice stable: each node gets a score from hash(chunk, node), so
adding or removing one node only moves the chunks whose top-r set it enters or leaves (~r/N of them), never reshuffles
the rest. The score is weighted (Schindelhauer & Schomaker's logarithmic method, score = -w / ln(u)) so that a node
takes chunks in proportion to its free space times its reliability, without giving up stability.

Rules, in order: a node that offers no storage (quota 0), is offline, is excluded (already holds the chunk, or just
failed) or lacks free space for the chunk is not a candidate, with the reason as a value; copies go to distinct
nodes; the first pass takes the best node of each zone (distinct zones while zones with room remain), the second
fills up by score. Fewer eligible nodes than `minimum` (default r) is `Unplaceable` with every node's reason."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum

from dataplane.objects.model import StorageNode


class Reason(StrEnum):
    NO_STORAGE = "offers no storage"
    OFFLINE = "offline"
    EXCLUDED = "excluded"
    FULL = "not enough free space"
    UNRELIABLE = "reliability is zero"
    DUPLICATE = "duplicate node id"


@dataclass(frozen=True, slots=True)
class Placed:
    nodes: tuple[str, ...]  # best first; len == min(r, eligible nodes)
    wanted: int

    @property
    def short(self) -> int:
        return self.wanted - len(self.nodes)


@dataclass(frozen=True, slots=True)
class Unplaceable:
    wanted: int
    eligible: tuple[str, ...]
    reasons: tuple[tuple[str, Reason], ...]  # (node id, why not) for every node that was not eligible

    def explain(self) -> str:
        why = ", ".join(f"{node}: {reason.value}" for node, reason in self.reasons) or "no storage nodes"
        return f"{len(self.eligible)} of {self.wanted} copies placeable ({why})"


def score(chunk_id: str, node: StorageNode) -> float:
    """The weighted rendezvous score of `node` for `chunk_id` (higher wins)."""
    digest = hashlib.sha256(f"{chunk_id}\x00{node.node_id}".encode()).digest()
    u = (int.from_bytes(digest[:8], "big") + 1) / (2**64 + 2)  # uniform in (0, 1), never 0 or 1
    weight = max(node.free, 1) * node.reliability
    return -weight / math.log(u)


def _reject(node: StorageNode, size: int, exclude: Collection[str]) -> Reason | None:
    if node.quota <= 0:
        return Reason.NO_STORAGE
    if not node.online:
        return Reason.OFFLINE
    if node.node_id in exclude:
        return Reason.EXCLUDED
    if node.free < size:
        return Reason.FULL
    if node.reliability <= 0:
        return Reason.UNRELIABLE
    return None


def place(chunk_id: str, size: int, candidates: Sequence[StorageNode], r: int, *, exclude: Collection[str] = (),
          minimum: int | None = None) -> Placed | Unplaceable:
    if r < 1:
        raise ValueError(f"r must be at least 1, got {r}")
    need = r if minimum is None else minimum
    eligible: list[StorageNode] = []
    reasons: list[tuple[str, Reason]] = []
    seen: set[str] = set()
    for node in candidates:
        reason = Reason.DUPLICATE if node.node_id in seen else _reject(node, size, exclude)
        seen.add(node.node_id)
        if reason is None:
            eligible.append(node)
        else:
            reasons.append((node.node_id, reason))
    ranked = sorted(eligible, key=lambda n: (-score(chunk_id, n), n.node_id))
    if len(ranked) < need or not ranked:
        return Unplaceable(r, tuple(n.node_id for n in ranked), tuple(reasons))
    chosen: list[str] = []
    zones: set[str] = set()
    for node in ranked:  # first pass: one per zone
        if len(chosen) < r and node.zone not in zones:
            chosen.append(node.node_id)
            zones.add(node.zone)
    for node in ranked:  # second pass: fill by score
        if len(chosen) < r and node.node_id not in chosen:
            chosen.append(node.node_id)
    return Placed(tuple(chosen), r)

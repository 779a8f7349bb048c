"""Erasure coding for the object store (issue 20): a bucket may store its chunks as RS(4,2) stripes instead of R
copies. This module is the pure layout core (where a stripe's fragments are, which are missing, where missing ones
may go, whether a bucket may be erasure-coded) and the thin codec adapter over pyeclib; the I/O is in `stripeio`.

Decisions (documented in docs/storage.md):
- **One stripe per chunk.** Each 1 MiB content-addressed chunk (`chunking`) is encoded on its own into k = 4 data and
  m = 2 parity fragments of ~256 KiB (plus pyeclib's 80-byte header). Ranged reads, dedup, manifests and multipart
  stay exactly as for replicated chunks: a manifest still lists chunk ids; the chunk's record carries the `Stripe`
  (model.py), which lists the fragment ids. Storage overhead 1.5x (R = 2: 2x) for tolerance of any 2 lost nodes
  (R = 3 at 3x).
- **Fragments are chunks.** A fragment's id is the SHA-256 of its bytes, so the chunk protocol (the agent verifies
  what it stores and serves), the agent's scrub, bad-copy records and deletion work on fragments unchanged; each
  fragment has its own `ChunkRecord` (holders, bad). Encoding is deterministic (pinned pyeclib, the backend named in
  the stripe), so a rebuilt fragment has the id it had; a codec that produced other bytes is refused, never stored
  under a wrong id.
- **Placement.** The k + m fragments of a stripe go to k + m distinct nodes ranked by the existing weighted
  rendezvous core (`placement`: same eligibility, same scores keyed by the chunk id), spread evenly over zones (each
  fragment to the best node of the zone holding fewest of the stripe: with 3 zones, 2 per zone, so a lost zone costs
  at most m). A rebuilt fragment goes to a node that holds (or held) no fragment of the stripe, so a stripe never has
  two fragments on one node, and one lost node costs each stripe at most one fragment.
- **Write rule.** A stripe counts as written when k + 1 fragments are acknowledged (one more loss tolerated right
  away; with only k acknowledged, any single loss would make the chunk unreadable until repair). The writer tries
  for all k + m, replacing failed targets; a stripe below k + m is degraded and the repair planner rebuilds it.
- **Reads** fetch k good fragments (data fragments first: decoding them is a copy), verify each against its id, decode,
  and verify the chunk against its id. A fragment found corrupt is recorded bad; one found corrupt or lost (no good
  copy on an online node) is re-encoded from the decoded chunk and written to a new node (read-repair).
- **Eligibility.** An erasure-coded bucket needs a loadable codec and at least k + m nodes that offer storage.
- **Shared chunks.** A chunk is stored in the form its first writer chose: an EC bucket's object that shares a chunk
  already replicated relies on those copies (its manifests ask R = m + 1, the same loss tolerance), a replicated
  bucket's object that shares a striped chunk relies on the stripe."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from dataplane.objects.chunking import chunk_id, is_chunk_id
from dataplane.objects.model import ChunkRecord, ErasureCode, StorageNode, Stripe
from dataplane.objects.placement import Unplaceable, place, score

RS_4_2 = ErasureCode(4, 2)
# pyeclib backends for Reed-Solomon over a Vandermonde matrix, preferred first. Both ship in the pyeclib 1.8.0
# wheels (x86_64 and aarch64: ISA-L and liberasurecode bundled). Their fragments differ, so a stripe names its own.
BACKENDS = ("isa_l_rs_vand", "liberasurecode_rs_vand")


class CodecUnavailable(Exception):
    """No erasure codec can be loaded here: the message says what is missing."""


# ---- the codec adapter ------------------------------------------------------------------------------------------

class Codec:
    """pyeclib's driver for one (k, m, backend): `encode` a chunk into k + m fragments, `decode` it from any k."""

    def __init__(self, code: ErasureCode, backend: str, driver: Any) -> None:
        self.code, self.backend, self._driver = code, backend, driver

    def encode(self, data: bytes) -> list[bytes]:
        fragments = self._driver.encode(data)
        return [bytes(f) for f in fragments]

    def decode(self, fragments: Sequence[bytes]) -> bytes:
        """The chunk from at least k fragments (each carries its index in its header)."""
        if len(fragments) < self.code.k:
            raise ValueError(f"decoding needs {self.code.k} fragments, got {len(fragments)}")
        return bytes(self._driver.decode(list(fragments)))


@cache
def _load(k: int, m: int, backend: str) -> Codec | str:
    try:
        from pyeclib.ec_iface import ECDriver  # the `coordinator` extra; agents store fragments, never code them
    except ImportError as exc:
        return f"pyeclib is not installed ({exc}); install cloudless[coordinator] (pyeclib==1.8.0)"
    try:
        driver = ECDriver(k=k, m=m, ec_type=backend)
        probe = driver.encode(b"probe")  # a backend can be listed and still fail to load its library
        driver.decode(probe[:k])
    except Exception as exc:  # pyeclib raises its own ECDriverError family, and OSError for a missing library
        return f"pyeclib backend {backend} does not load: {exc}"
    return Codec(ErasureCode(k, m), backend, driver)


def load_codec(code: ErasureCode, backend: str | None = None) -> Codec:
    """The codec of `backend` (a stripe's), or the first of BACKENDS that loads; CodecUnavailable naming why not."""
    problems = []
    for name in (backend,) if backend is not None else BACKENDS:
        loaded = _load(code.k, code.m, name)
        if isinstance(loaded, Codec):
            return loaded
        problems.append(loaded)
    raise CodecUnavailable(f"no erasure codec for RS({code.k},{code.m}): {'; '.join(problems)}")


def codec_problem(code: ErasureCode = RS_4_2) -> str | None:
    """Why erasure coding cannot be used here, or None."""
    try:
        load_codec(code)
    except CodecUnavailable as exc:
        return str(exc)
    return None


# ---- buckets ----------------------------------------------------------------------------------------------------

def parse_code(text: str) -> ErasureCode | str:
    """"4+2" (or "rs(4,2)") -> the code; anything else -> why not. Only RS(4,2) is offered."""
    cleaned = text.strip().lower().removeprefix("rs").strip("()").replace(",", "+")
    if cleaned != "4+2":
        return f"erasure code {text!r} is not offered: use 4+2 (RS(4,2): 4 data + 2 parity fragments per chunk)"
    return RS_4_2


def bucket_refusal(code: ErasureCode, nodes: Sequence[StorageNode], problem: str | None = None) -> str | None:
    """Why a bucket may not be created with `code` (None: it may). `problem`: `codec_problem()`'s answer (passed in
    so this stays pure). Counts the nodes that offer storage, online or not: a stripe needs k + m distinct nodes."""
    if problem is not None:
        return f"erasure-coded buckets are unavailable: {problem}"
    storage = sorted({n.node_id for n in nodes if n.quota > 0})
    if len(storage) < code.total:
        known = ", ".join(storage) or "none"
        return (f"erasure coding {code} needs at least {code.total} storage nodes (one per fragment); "
                f"{len(storage)} known ({known}): use a replicated bucket, or add nodes that offer storage")
    return None


# ---- stripes ----------------------------------------------------------------------------------------------------

def make_stripe(codec: Codec, fragments: Sequence[bytes]) -> Stripe:
    if len(fragments) != codec.code.total or len({len(f) for f in fragments}) != 1:
        raise ValueError(f"a stripe needs {codec.code.total} fragments of one size, got {[len(f) for f in fragments]}")
    return Stripe(codec.code.k, codec.code.m, codec.backend, len(fragments[0]), tuple(chunk_id(f) for f in fragments))


def check_fragments(stripe: Stripe, fragments: Sequence[bytes]) -> str | None:
    """None when `fragments` (a fresh encoding) are exactly the stripe's; else what differs (a different codec
    library than the one that wrote the stripe: never store such a fragment under the stripe's id)."""
    ids = tuple(chunk_id(f) for f in fragments)
    if ids == stripe.fragments:
        return None
    wrong = [i for i, (a, b) in enumerate(zip(ids, stripe.fragments, strict=False)) if a != b]
    return (f"re-encoding gives other bytes for fragments {wrong} (codec {stripe.backend}: was the pyeclib version "
            f"changed since the stripe was written?)")


@dataclass(frozen=True, slots=True)
class Layout:
    """Where a stripe's fragments are now. `holders[i]`: nodes with a good copy of fragment i on an online node,
    best first; `occupied`: every node that holds or held (even corrupt, even offline) any fragment of the stripe:
    never a target for another; `offline`: (fragment, node) copies not known bad on nodes not online (a read tries
    them last: an offline verdict may be stale)."""

    stripe: Stripe
    holders: tuple[tuple[str, ...], ...]
    occupied: frozenset[str]
    offline: tuple[tuple[int, str], ...] = ()

    @property
    def good(self) -> tuple[int, ...]:
        return tuple(i for i, h in enumerate(self.holders) if h)

    @property
    def missing(self) -> tuple[int, ...]:
        return tuple(i for i, h in enumerate(self.holders) if not h)

    @property
    def holding(self) -> frozenset[str]:
        """The nodes with a good copy of some fragment, online."""
        return frozenset(n for h in self.holders for n in h)

    @property
    def readable(self) -> bool:
        return len(self.good) >= self.stripe.k

    def read_order(self) -> list[tuple[int, str]]:
        """(fragment, node) attempts for a read: the best copy of each fragment, data fragments first (decoding from
        them is a copy), then second copies, and so on; copies on offline nodes last."""
        rounds = max((len(h) for h in self.holders), default=0)
        return [(i, h[r]) for r in range(rounds) for i, h in enumerate(self.holders) if r < len(h)] + list(self.offline)


def _rank(node: StorageNode | None) -> tuple[bool, float]:
    return (node is None, -(node.reliability if node else 0.0))


def layout(stripe: Stripe, fragments: Mapping[str, ChunkRecord], nodes: Sequence[StorageNode]) -> Layout:
    """`fragments`: the fragments' records by id (a missing record: nobody holds it)."""
    info = {n.node_id: n for n in nodes}
    holders: list[tuple[str, ...]] = []
    occupied: set[str] = set()
    offline: list[tuple[int, str]] = []
    for i, fid in enumerate(stripe.fragments):
        record = fragments.get(fid)
        if record is None:
            holders.append(())
            continue
        occupied |= record.holders | record.bad
        good = [n for n in record.good() if n in info and info[n].online]
        holders.append(tuple(sorted(good, key=lambda n: (_rank(info.get(n)), n))))
        offline.extend((i, n) for n in sorted(record.good() - set(good)))
    return Layout(stripe, tuple(holders), frozenset(occupied), tuple(offline))


def targets(chunk: str, stripe: Stripe, indices: Sequence[int], nodes: Sequence[StorageNode],
            exclude: Collection[str], *, holding: Collection[str] = ()) -> list[tuple[int, str]] | Unplaceable:
    """New homes for fragments `indices` of the stripe of `chunk`: distinct nodes none in `exclude` (the stripe's
    occupied nodes and any that just failed), eligible by the rendezvous core's rules (`placement.place`: storage
    offered, online, room). Each goes to the best-scored node of the zone that holds the fewest fragments of the
    stripe so far (`holding`: the nodes with its good fragments), so fragments spread evenly over zones: with 3
    zones, 2 each, and losing a whole zone loses at most m = 2. Fewer nodes than indices: the first indices get one;
    no node at all: Unplaceable with every node's reason."""
    if not indices:
        return []
    placed = place(chunk, stripe.fragment_size, nodes, max(1, len(nodes)), exclude=exclude, minimum=1)
    if isinstance(placed, Unplaceable):
        return placed
    info = {n.node_id: n for n in nodes}
    ranked = sorted(placed.nodes, key=lambda n: (-score(chunk, info[n]), n))
    load = Counter(info[n].zone for n in holding if n in info)
    chosen: list[tuple[int, str]] = []
    for index in indices:
        if not ranked:
            break
        best = min(ranked, key=lambda n: load[info[n].zone])  # min keeps the first (best-scored) of equals
        ranked.remove(best)
        load[info[best].zone] += 1
        chosen.append((index, best))
    return chosen


def fragment_owners(records: Iterable[ChunkRecord]) -> dict[str, set[str]]:
    """fragment id -> the chunks whose stripes list it (garbage collection keeps a fragment while one is kept)."""
    owners: dict[str, set[str]] = {}
    for record in records:
        if record.stripe is not None:
            for fid in record.stripe.fragments:
                owners.setdefault(fid, set()).add(record.id)
    return owners


# ---- documents (the coordinator's codec stores these inside its JSON records) -----------------------------------

def code_doc(code: ErasureCode | None) -> list[int] | None:
    return None if code is None else [code.k, code.m]


def code_from_doc(value: object) -> ErasureCode | None:
    """Raises ValueError naming what is wrong."""
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == 2 and all(type(v) is int for v in value)):
        raise ValueError("erasure must be [k, m] or null")
    code = ErasureCode(value[0], value[1])
    if code != RS_4_2:
        raise ValueError(f"erasure {code} is not a supported code (4+2)")
    return code


def stripe_doc(stripe: Stripe | None) -> dict[str, Any] | None:
    if stripe is None:
        return None
    return {"k": stripe.k, "m": stripe.m, "backend": stripe.backend, "fragment_size": stripe.fragment_size,
            "fragments": list(stripe.fragments)}


def stripe_from_doc(value: object) -> Stripe | None:
    """Raises ValueError naming the field that is wrong."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("stripe must be an object or null")
    for name in ("k", "m", "fragment_size"):
        if type(value.get(name)) is not int or value[name] < 1:
            raise ValueError(f"stripe field {name!r} must be a positive integer")
    backend, fragments = value.get("backend"), value.get("fragments")
    if backend not in BACKENDS:
        raise ValueError(f"stripe field 'backend' must be one of {', '.join(BACKENDS)}")
    if not (isinstance(fragments, list) and len(fragments) == value["k"] + value["m"]
            and all(is_chunk_id(f) for f in fragments)):
        raise ValueError("stripe field 'fragments' must list k + m fragment ids")
    return Stripe(value["k"], value["m"], backend, value["fragment_size"], tuple(fragments))

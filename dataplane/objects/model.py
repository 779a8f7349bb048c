"""The object store's records: storage nodes, chunk locations, object manifests and multipart parts. Frozen values;
the coordinator's store serialises them (coordinator/objects.py), the in-memory fake keeps them as they are."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field

from dataplane.objects.chunking import ChunkRef
from dataplane.s3.backend import ObjectInfo, PartInfo

DEFAULT_REPLICAS = 2


@dataclass(frozen=True, slots=True)
class ErasureCode:
    """A bucket's erasure code: each chunk is stored as `k` data + `m` parity fragments on k + m distinct nodes,
    readable from any k of them (dataplane/objects/erasure.py). RS(4,2) is the one offered."""

    k: int = 4
    m: int = 2

    @property
    def total(self) -> int:
        return self.k + self.m

    @property
    def replicas(self) -> int:
        """The R of equal loss tolerance (m + 1 copies survive m losses): what an erasure-coded bucket asks of a
        chunk it shares (dedup) with a replicated bucket, which stays in the form its first writer stored."""
        return self.m + 1

    def __str__(self) -> str:
        return f"{self.k}+{self.m}"


@dataclass(frozen=True, slots=True)
class Stripe:
    """How an erasure-coded chunk is stored: `fragments[i]` is the id (SHA-256 of its bytes, like a chunk's) of
    fragment i, 0..k-1 data, k..k+m-1 parity, each `fragment_size` bytes, made by the codec `backend`. Fixed once
    written: encoding is deterministic, so a rebuilt fragment has the same bytes and id. Where each fragment lives
    is its own `ChunkRecord` (holders, bad), kept by the same machinery as a replicated chunk's."""

    k: int
    m: int
    backend: str
    fragment_size: int
    fragments: tuple[str, ...]

    @property
    def code(self) -> ErasureCode:
        return ErasureCode(self.k, self.m)


@dataclass(frozen=True, slots=True)
class StorageNode:
    """A node as placement and repair see it. `quota` is what it offers (0: holds nothing: phones on battery, nodes
    the owner excluded); `used` what its chunks take now; `reliability` in [0, 1] (uptime history: 1 always there);
    `online` false for a node declared lost or down (or offering no storage), whose copies do not count; `reachable`
    false also for a node suspect or offline (its copies probably exist, but a writer does not dedup onto them)."""

    node_id: str
    zone: str = ""
    _: KW_ONLY
    quota: int = 0
    used: int = 0
    reliability: float = 1.0
    online: bool = True
    reachable: bool = True

    @property
    def free(self) -> int:
        return max(0, self.quota - self.used)


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    """Where a chunk lives. `holders`: nodes with a copy acknowledged as written; `bad`: copies found corrupt (by a
    read or the scrub), to be deleted and replaced. `touched`: when a writer last relied on this chunk (written or
    deduplicated onto): garbage collection spares chunks touched within its grace period. `stripe`: set when the chunk
    is stored erasure-coded (then `holders` is normally empty: the fragments' own records say where they are)."""

    id: str
    size: int
    holders: frozenset[str] = frozenset()
    bad: frozenset[str] = frozenset()
    touched: float = 0.0
    stripe: Stripe | None = None

    def good(self) -> frozenset[str]:
        return self.holders - self.bad


@dataclass(frozen=True, slots=True)
class Manifest:
    """An object: what S3 says about it and its chunks in order. `replicas`: the R its bucket asked for."""

    info: ObjectInfo
    chunks: tuple[ChunkRef, ...] = ()
    replicas: int = DEFAULT_REPLICAS


@dataclass(frozen=True, slots=True)
class PartRecord:
    info: PartInfo
    chunks: tuple[ChunkRef, ...] = ()


@dataclass(frozen=True, slots=True)
class BucketRecord:
    """`erasure`: None for a replicated bucket (R = `replicas` copies of each chunk); else the code new chunks are
    stored with (`replicas` is then `erasure.replicas`, what its manifests ask of a shared replicated chunk).
    `compression`: None, or "zstd": new chunks are compressed before they are stored (dataplane/objects/compression.py;
    each manifest's refs say how to read their chunks, so the setting only decides how new chunks are written)."""

    name: str
    created: float
    replicas: int = DEFAULT_REPLICAS
    erasure: ErasureCode | None = None
    compression: str | None = None


@dataclass(frozen=True, slots=True)
class AccessKey:
    """An S3 access key: its secret and what each bucket allows ("*" for every bucket); `write` implies read."""

    access_key: str
    secret: str = field(repr=False)
    owner: str = ""
    buckets: tuple[tuple[str, str], ...] = ()  # (bucket or "*", "read" | "write")

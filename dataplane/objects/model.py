"""The object store's records: storage nodes, chunk locations, object manifests and multipart parts. Frozen values;
the coordinator's store serialises them (coordinator/objects.py), the in-memory fake keeps them as they are."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field

from dataplane.objects.chunking import ChunkRef
from dataplane.s3.backend import ObjectInfo, PartInfo

DEFAULT_REPLICAS = 2


@dataclass(frozen=True, slots=True)
class StorageNode:
    """A node as placement and repair see it. `quota` is what it offers (0: holds nothing: phones on battery, nodes
    the owner excluded); `used` what its chunks take now; `reliability` in [0, 1] (uptime history: 1 always there);
    `online` false for a node declared lost or down, whose copies do not count."""

    node_id: str
    zone: str = ""
    _: KW_ONLY
    quota: int = 0
    used: int = 0
    reliability: float = 1.0
    online: bool = True

    @property
    def free(self) -> int:
        return max(0, self.quota - self.used)


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    """Where a chunk lives. `holders`: nodes with a copy acknowledged as written; `bad`: copies found corrupt (by a
    read or the scrub), to be deleted and replaced. `touched`: when a writer last relied on this chunk (written or
    deduplicated onto): garbage collection spares chunks touched within its grace period."""

    id: str
    size: int
    holders: frozenset[str] = frozenset()
    bad: frozenset[str] = frozenset()
    touched: float = 0.0

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
    name: str
    created: float
    replicas: int = DEFAULT_REPLICAS


@dataclass(frozen=True, slots=True)
class AccessKey:
    """An S3 access key: its secret and what each bucket allows ("*" for every bucket); `write` implies read."""

    access_key: str
    secret: str = field(repr=False)
    owner: str = ""
    buckets: tuple[tuple[str, str], ...] = ()  # (bucket or "*", "read" | "write")

"""The Workload document's enums and shared value kinds (names, labels, paths, ports, quantities): the
vocabulary `coordinator.spec` and its parts build on. Pure."""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum

from broker.wire.schema import ID_MAX_LEN, ID_PATTERN
from coordinator.spec_kinds import (
    Int,
    ListOf,
    Quantity,
    Str,
)

# ---- enums -----------------------------------------------------------------------------------------------


class Runtime(StrEnum):
    """Where a workload may run: in a container (an image), as a plain process (no image: Termux, hosts without
    Podman), or either, as the rest of the spec allows (`coordinator.scheduler.abilities`)."""

    CONTAINER = "container"
    PROCESS = "process"
    ANY = "any"


class Spread(StrEnum):
    NONE = "none"
    ZONE = "zone"
    NODE = "node"


class Scope(StrEnum):
    NODE = "node"
    ZONE = "zone"


class Ability(StrEnum):
    """What a node can do (NodeFacts.abilities): a workload may require any of them (`placement.requires`)."""

    CONTAINERS = "containers"
    PORT_REMAP = "port-remap"
    VOLUMES = "volumes"
    IMAGES = "images"
    PROCESS = "process"
    OVERLAY = "overlay"  # the node runs the QUIC overlay (docs/overlay.md)


class Strategy(StrEnum):
    BINPACK = "binpack"
    SPREAD = "spread"


class Operator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class TolerationOperator(StrEnum):
    EQUAL = "Equal"
    EXISTS = "Exists"


class TaintEffect(StrEnum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"


class RolloutStrategy(StrEnum):
    ROLLING_UPDATE = "RollingUpdate"
    RECREATE = "Recreate"


class SeccompType(StrEnum):
    RUNTIME_DEFAULT = "RuntimeDefault"
    LOCALHOST = "Localhost"
    UNCONFINED = "Unconfined"


class Medium(StrEnum):
    DISK = ""
    MEMORY = "Memory"


class SecretUpdate(StrEnum):
    RESTART = "restart"
    FILES = "files"


# ---- shared value kinds ----------------------------------------------------------------------------------

NAME = Str(ID_MAX_LEN, 1, ID_PATTERN.pattern, "name (letters, digits, '.', '_', '-'; max 63; starts alphanumeric)")
LABEL_KEY = Str(128, 1, r"[A-Za-z0-9][A-Za-z0-9._/-]*", "label key")
LABEL_VALUE = Str(128)
TEXT = Str(4096)
ARGV = ListOf(TEXT, 256)
ENV_NAME = Str(256, 1, r"[A-Za-z_][A-Za-z0-9_.-]*", "environment variable name")
SECRET_ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*"  # noqa: S105 (a pattern, not a password)
ABS_PATH = Str(1024, 1, r"/[^\x00]*", "absolute path")
PORT = Int(1, 65535)
CAPABILITY = Str(64, 1, r"[A-Z][A-Z0-9_]*", "capability (e.g. NET_BIND_SERVICE)")
ARCH = Str(32, 1, r"[A-Za-z0-9_]+", "architecture")
ZONE = Str(64, 1, ID_PATTERN.pattern, "zone or region name")
UID = Int(0, 2**31 - 1)
CPU = Quantity("cpu")
MEMORY = Quantity("memory")


def duplicates(values: list[object]) -> Iterator[int]:
    seen: set[object] = set()
    for i, v in enumerate(values):
        if v in seen:
            yield i
        seen.add(v)

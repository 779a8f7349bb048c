"""The scheduler core (STYLE §3): small named filters and scorers, and a deterministic engine.

    result = schedule(snapshot, PlacementRequest.for_replica(workload, "web-0"), config, seed=7)
    match result:
        case Placement(node_id=node): ...
        case Unschedulable(summary=why): ...   # "0/5 nodes available: 3 insufficient memory, 2 cordoned"

Pure: no I/O, no clocks, no unseeded randomness.
"""

from coordinator.scheduler import filters, scorers
from coordinator.scheduler.context import Context, domain
from coordinator.scheduler.engine import SchedulingPass, schedule, schedule_many, schedule_slices, tiebreak
from coordinator.scheduler.filters import DEFAULT_FILTERS, Filter
from coordinator.scheduler.model import (
    DEFAULT_CONFIG,
    LABEL_ARCH,
    LABEL_NODE,
    LABEL_OS,
    LABEL_REGION,
    LABEL_ZONE,
    NodeView,
    Placement,
    PlacementRequest,
    Reject,
    SchedulerConfig,
    Snapshot,
    Taint,
    Unschedulable,
    matches,
    normalize_arch,
)
from coordinator.scheduler.scorers import DEFAULT_SCORERS, Scorer

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_FILTERS",
    "DEFAULT_SCORERS",
    "LABEL_ARCH",
    "LABEL_NODE",
    "LABEL_OS",
    "LABEL_REGION",
    "LABEL_ZONE",
    "Context",
    "Filter",
    "NodeView",
    "Placement",
    "PlacementRequest",
    "Reject",
    "SchedulerConfig",
    "Scorer",
    "SchedulingPass",
    "Snapshot",
    "Taint",
    "Unschedulable",
    "domain",
    "filters",
    "matches",
    "normalize_arch",
    "schedule",
    "schedule_many",
    "schedule_slices",
    "scorers",
    "tiebreak",
]

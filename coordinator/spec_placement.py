"""The Workload document's placement part: node selectors, affinity, anti-affinity, spread and tolerations. Pure;
see `coordinator.spec` for how the field tables are parsed, dumped and turned into a JSON Schema."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from coordinator.spec_kinds import (
    Checked,
    Choice,
    Int,
    ListOf,
    MapOf,
    Obj,
    spec_field,
)
from coordinator.spec_values import (
    ARCH,
    LABEL_KEY,
    LABEL_VALUE,
    NAME,
    ZONE,
    Ability,
    Operator,
    Scope,
    Spread,
    Strategy,
    TaintEffect,
    TolerationOperator,
)

# ---- placement -------------------------------------------------------------------------------------------


def _operator_problems(operator: Operator, values: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    if operator in (Operator.IN, Operator.NOT_IN) and not values:
        yield "values", f"operator {operator} needs at least one value"
    if operator in (Operator.EXISTS, Operator.DOES_NOT_EXIST) and values:
        yield "values", f"operator {operator} takes no values"


_OPERATOR_SCHEMA: dict[str, Any] = {
    "if": {"properties": {"operator": {"enum": ["In", "NotIn"]}}},
    "then": {"required": ["values"], "properties": {"values": {"minItems": 1}}},
    "else": {"properties": {"values": {"maxItems": 0}}},
}


@dataclass(frozen=True, slots=True)
class NodeSelectorRequirement(Checked):
    """A hard rule on a node label (In/NotIn need values; Exists/DoesNotExist take none)."""

    key: str = field(metadata=spec_field(LABEL_KEY))
    operator: Operator = field(metadata=spec_field(Choice(Operator)))
    values: tuple[str, ...] = field(default=(), metadata=spec_field(ListOf(LABEL_VALUE, 64)))

    SCHEMA_EXTRA: ClassVar[dict[str, Any]] = _OPERATOR_SCHEMA

    def _problems(self) -> Iterator[tuple[str, str]]:
        return _operator_problems(self.operator, self.values)


@dataclass(frozen=True, slots=True)
class PreferredTerm(Checked):
    """A soft rule on a node label, worth `weight` (1-100) when it matches."""

    weight: int = field(metadata=spec_field(Int(1, 100)))
    key: str = field(metadata=spec_field(LABEL_KEY))
    operator: Operator = field(metadata=spec_field(Choice(Operator)))
    values: tuple[str, ...] = field(default=(), metadata=spec_field(ListOf(LABEL_VALUE, 64)))

    SCHEMA_EXTRA: ClassVar[dict[str, Any]] = _OPERATOR_SCHEMA

    def _problems(self) -> Iterator[tuple[str, str]]:
        return _operator_problems(self.operator, self.values)


@dataclass(frozen=True, slots=True)
class NodeAffinity(Checked):
    """Label rules: all `required` must match; matching `preferred` terms raise a node's score."""

    required: tuple[NodeSelectorRequirement, ...] = field(
        default=(), metadata=spec_field(ListOf(Obj(NodeSelectorRequirement), 32))
    )
    preferred: tuple[PreferredTerm, ...] = field(default=(), metadata=spec_field(ListOf(Obj(PreferredTerm), 32)))


@dataclass(frozen=True, slots=True)
class AntiAffinity(Checked):
    """Never share a node (or zone) with a replica of these workloads (same namespace; may name itself)."""

    workloads: tuple[str, ...] = field(default=(), metadata=spec_field(ListOf(NAME, 32)))
    scope: Scope = field(default=Scope.NODE, metadata=spec_field(Choice(Scope)))


@dataclass(frozen=True, slots=True)
class Toleration(Checked):
    """Allows nodes with a matching taint. Exists matches any value (and with no key, any taint)."""

    key: str = field(default="", metadata=spec_field(LABEL_KEY))
    operator: TolerationOperator = field(
        default=TolerationOperator.EQUAL, metadata=spec_field(Choice(TolerationOperator))
    )
    value: str = field(default="", metadata=spec_field(LABEL_VALUE))
    effect: TaintEffect | None = field(default=None, metadata=spec_field(Choice(TaintEffect)))

    SCHEMA_EXTRA: ClassVar[dict[str, Any]] = {
        "if": {"properties": {"operator": {"const": "Exists"}}, "required": ["operator"]},
        "then": {"properties": {"value": {"maxLength": 0}}},
        "else": {"required": ["key"]},
    }

    def _problems(self) -> Iterator[tuple[str, str]]:
        if self.operator is TolerationOperator.EXISTS and self.value:
            yield "value", "operator Exists takes no value"
        if self.operator is TolerationOperator.EQUAL and not self.key:
            yield "key", "operator Equal needs a key"


@dataclass(frozen=True, slots=True)
class PlacementSpec(Checked):
    """Where replicas may run (hard rules) and where they would rather run (scoring)."""

    node_selector: dict[str, str] = field(default_factory=dict, metadata=spec_field(MapOf(LABEL_KEY, LABEL_VALUE)))
    zones: tuple[str, ...] = field(default=(), metadata=spec_field(ListOf(ZONE)))
    regions: tuple[str, ...] = field(default=(), metadata=spec_field(ListOf(ZONE)))
    arch: tuple[str, ...] = field(default=(), metadata=spec_field(ListOf(ARCH, 16)))
    os: tuple[str, ...] = field(default=(), metadata=spec_field(ListOf(ARCH, 16)))
    spread: Spread = field(default=Spread.NONE, metadata=spec_field(Choice(Spread)))
    node_affinity: NodeAffinity = field(default_factory=NodeAffinity, metadata=spec_field(Obj(NodeAffinity)))
    anti_affinity: AntiAffinity = field(default_factory=AntiAffinity, metadata=spec_field(Obj(AntiAffinity)))
    tolerations: tuple[Toleration, ...] = field(default=(), metadata=spec_field(ListOf(Obj(Toleration), 32)))
    strategy: Strategy = field(default=Strategy.SPREAD, metadata=spec_field(Choice(Strategy)))
    # abilities every node that runs a replica must have, beyond what the runtime needs (e.g. [overlay])
    requires: tuple[Ability, ...] = field(default=(), metadata=spec_field(ListOf(Choice(Ability), 8)))

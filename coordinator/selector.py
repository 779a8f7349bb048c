"""Label selectors, Kubernetes syntax (pure): `a=b,c!=d,e,!f,g in (x,y),h notin (z)` (issue 17).

Requirements are ANDed. `a=b` / `a==b`: label a is b; `a!=b`: a is not b (or a is absent, as in Kubernetes);
`a`: a is present; `!a`: a is absent; `a in (x,y)`: a is x or y; `a notin (x,y)`: a is neither (or absent).
A selector that does not parse is a SpecError naming the query parameter, with the offending requirement.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from coordinator.errors import SpecError

MAX_SELECTOR_CHARS = 1024
_KEY = r"[A-Za-z0-9](?:[A-Za-z0-9._/-]{0,251}[A-Za-z0-9])?"
_VALUE = r"[^\s,()=!]{0,63}"
_EQ = re.compile(rf"\s*({_KEY})\s*(==|=|!=)\s*({_VALUE})\s*")
_SET = re.compile(rf"\s*({_KEY})\s+(in|notin)\s*\(([^()]*)\)\s*")
_EXISTS = re.compile(rf"\s*(!?)\s*({_KEY})\s*")
_VALUE_RE = re.compile(_VALUE)


class Op(StrEnum):
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    ABSENT = "absent"


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: Op
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        match self.op:
            case Op.IN:
                return labels.get(self.key) in self.values
            case Op.NOT_IN:
                return labels.get(self.key) not in self.values
            case Op.EXISTS:
                return self.key in labels
            case Op.ABSENT:
                return self.key not in labels
        raise AssertionError(self.op)


@dataclass(frozen=True, slots=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def __bool__(self) -> bool:
        return bool(self.requirements)


def parse_selector(text: str | None, *, field: str = "labelSelector") -> Selector:
    """The selector `text` states (empty or None: everything matches)."""
    if text is None or not text.strip():
        return Selector()
    if len(text) > MAX_SELECTOR_CHARS:
        raise SpecError(field, f"is longer than {MAX_SELECTOR_CHARS} characters")
    return Selector(tuple(_requirement(part, field) for part in _split(text, field)))


def _split(text: str, field: str) -> list[str]:
    """The requirements: split on the commas outside parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SpecError(field, f"unbalanced ')' at character {i + 1} of {text[:80]!r}")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise SpecError(field, f"unbalanced '(' in {text[:80]!r}")
    parts.append(text[start:])
    return parts


def _requirement(part: str, field: str) -> Requirement:
    if m := _SET.fullmatch(part):
        values = [v.strip() for v in m.group(3).split(",")]
        if not values or any(not _VALUE_RE.fullmatch(v) for v in values) or values == [""]:
            raise SpecError(field, f"{part.strip()[:80]!r}: the set must list values, like `zone in (a,b)`")
        return Requirement(m.group(1), Op.IN if m.group(2) == "in" else Op.NOT_IN, frozenset(values))
    if m := _EQ.fullmatch(part):
        return Requirement(m.group(1), Op.NOT_IN if m.group(2) == "!=" else Op.IN, frozenset({m.group(3)}))
    if m := _EXISTS.fullmatch(part):
        return Requirement(m.group(2), Op.ABSENT if m.group(1) else Op.EXISTS)
    raise SpecError(field, f"{part.strip()[:80]!r} is not a requirement: use key=value, key!=value, key, !key, "
                    "key in (v1,v2) or key notin (v1,v2), separated by commas")

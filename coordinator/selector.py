"""Label selectors, Kubernetes syntax (pure): `a=b,c!=d,e,!f,g in (x,y),h notin (z)` (issue 17).

Requirements are ANDed. `a=b` / `a==b`: label a is b; `a!=b`: a is not b (or a is absent, as in Kubernetes);
`a`: a is present; `!a`: a is absent; `a in (x,y)`: a is x or y; `a notin (x,y)`: a is neither (or absent).
A selector that does not parse is a SpecError naming the query parameter, with the offending requirement.

Every label that may be set can be selected. A bare key is a workload label key (`[A-Za-z0-9][A-Za-z0-9._/-]*`,
up to 128 characters, so `tier-` too); a bare value is up to 128 characters other than spaces and `,()=!"`. Node
labels (agent `--labels`, enrolment tokens, firmware profiles) may hold more, such as `room=Living Room`: any key
or value may be written as a JSON string, `room="Living Room"`, `"my key" in ("a,b", "c")`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from coordinator.errors import SpecError

MAX_SELECTOR_CHARS = 1024
MAX_LABEL_CHARS = 128  # coordinator.spec_values.LABEL_KEY / LABEL_VALUE and the agent's --labels
_QUOTED = r'"(?:[^"\\]|\\.)*"'  # a JSON string
_KEY = rf"(?:[A-Za-z0-9][A-Za-z0-9._/-]{{0,{MAX_LABEL_CHARS - 1}}}|{_QUOTED})"
_VALUE = rf'(?:[^\s,()=!"]{{0,{MAX_LABEL_CHARS}}}|{_QUOTED})'
_EQ = re.compile(rf"\s*({_KEY})\s*(==|=|!=)\s*({_VALUE})\s*")
_SET = re.compile(rf"\s*({_KEY})\s+(in|notin)\s*\((.*)\)\s*", re.DOTALL)
_EXISTS = re.compile(rf"\s*(!?)\s*({_KEY})\s*")
_VALUE_RE = re.compile(rf"\s*({_VALUE})\s*")


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


def _split(text: str, field: str, *, nested: bool = True) -> list[str]:
    """The parts between the commas outside parentheses and quoted strings (`nested=False`: outside quoted strings
    only, for a set's values)."""
    parts, depth, start, quoted, escaped = [], 0, 0, False, False
    for i, ch in enumerate(text):
        if quoted:
            quoted, escaped = (escaped or ch != '"'), (not escaped and ch == "\\")
        elif ch == '"':
            quoted = True
        elif ch == "(" and nested:
            depth += 1
        elif ch == ")" and nested:
            depth -= 1
            if depth < 0:
                raise SpecError(field, f"unbalanced ')' at character {i + 1} of {text[:80]!r}")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if quoted:
        raise SpecError(field, f"unterminated quoted string in {text[:80]!r}")
    if depth:
        raise SpecError(field, f"unbalanced '(' in {text[:80]!r}")
    parts.append(text[start:])
    return parts


def _text(token: str, part: str, field: str) -> str:
    """A key or value as written: bare, or a JSON string (at most MAX_LABEL_CHARS once decoded)."""
    if not token.startswith('"'):
        return token
    try:
        value = json.loads(token)
    except ValueError:
        raise SpecError(field, f"{part.strip()[:80]!r}: {token[:40]} is not a valid quoted string") from None
    if not isinstance(value, str) or len(value) > MAX_LABEL_CHARS:
        raise SpecError(field, f"{part.strip()[:80]!r}: a quoted key or value holds at most {MAX_LABEL_CHARS} "
                        "characters")
    return value


def _requirement(part: str, field: str) -> Requirement:
    if m := _SET.fullmatch(part):
        matched = [_VALUE_RE.fullmatch(v) for v in _split(m.group(3), field, nested=False)]
        if not matched or any(v is None for v in matched) or [v.group(1) for v in matched if v] == [""]:
            raise SpecError(field, f"{part.strip()[:80]!r}: the set must list values, like `zone in (a,b)`")
        values = frozenset(_text(v.group(1), part, field) for v in matched if v)
        return Requirement(_text(m.group(1), part, field), Op.IN if m.group(2) == "in" else Op.NOT_IN, values)
    if m := _EQ.fullmatch(part):
        return Requirement(_text(m.group(1), part, field), Op.NOT_IN if m.group(2) == "!=" else Op.IN,
                           frozenset({_text(m.group(3), part, field)}))
    if m := _EXISTS.fullmatch(part):
        return Requirement(_text(m.group(2), part, field), Op.ABSENT if m.group(1) else Op.EXISTS)
    raise SpecError(field, f"{part.strip()[:80]!r} is not a requirement: use key=value, key!=value, key, !key, "
                    "key in (v1,v2) or key notin (v1,v2), separated by commas; quote a key or value that holds "
                    'spaces or ,()=!" as a JSON string: room="Living Room"')

"""Hypothesis strategies for valid workload documents, derived from the parser's own field tables.

Generic per Kind; a few classes with cross-field rules get hand-written strategies so most generated
documents are valid (the rest are filtered by the caller with `assume`).
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from coordinator import spec, spec_kinds
from firmware_profiles.units import format_cpu, format_memory


def for_kind(kind: spec_kinds.Kind) -> st.SearchStrategy[Any]:
    match kind:
        case spec_kinds.Str(max_len=max_len, min_len=min_len, pattern=pattern) if pattern:
            return st.from_regex(f"^(?:{pattern})$", fullmatch=True).filter(lambda s: min_len <= len(s) <= max_len)
        case spec_kinds.Str(max_len=max_len, min_len=min_len):
            return st.text(min_size=min_len, max_size=min(max_len, 12))
        case spec_kinds.Int(lo=lo, hi=hi):
            return st.integers(lo, hi)
        case spec_kinds.Num(lo=lo, hi=hi):
            return st.one_of(st.integers(int(lo) + 1, int(hi)), st.floats(lo, hi, allow_nan=False))
        case spec_kinds.Bool():
            return st.booleans()
        case spec_kinds.Choice(enum=enum):
            return st.sampled_from([m.value for m in enum])
        case spec_kinds.Const(value=value):
            return st.just(value)
        case spec_kinds.Quantity(resource="cpu"):
            return st.one_of(st.integers(0, 64_000).map(format_cpu), st.sampled_from([0.5, 2, "0.25", "1.5"]))
        case spec_kinds.Quantity():
            return st.one_of(st.integers(0, 2**36).map(format_memory), st.sampled_from(["500M", "1.5Gi", 4096]))
        case spec_kinds.Amount(hi=hi):
            return st.one_of(st.integers(1, hi), st.integers(1, 100).map(lambda p: f"{p}%"))
        case spec_kinds.ListOf(item=item, max_items=max_items, min_items=min_items):
            return st.lists(for_kind(item), min_size=min_items, max_size=min(max_items, 3))
        case spec_kinds.MapOf(key=key, value=value):
            return st.dictionaries(for_kind(key), for_kind(value), max_size=3)
        case spec_kinds.Obj(cls=cls):
            return for_class(cls)
    raise AssertionError(f"no strategy for {kind!r}")


def for_class(cls: type[Any]) -> st.SearchStrategy[dict[str, Any]]:
    if cls in OVERRIDES:
        return OVERRIDES[cls]()
    table = spec_kinds.field_table(cls)
    required = {f.key: for_kind(f.kind) for f in table if f.required}
    optional = {f.key: for_kind(f.kind) for f in table if not f.required}
    return st.fixed_dictionaries(required, optional=optional)


def _probe() -> st.SearchStrategy[dict[str, Any]]:
    table = {f.key: f for f in spec_kinds.field_table(spec.ProbeSpec)}
    timing = {k: for_kind(f.kind) for k, f in table.items() if k not in ("exec", "httpGet", "tcpSocket")}
    handler = st.sampled_from(["exec", "httpGet", "tcpSocket"]).flatmap(
        lambda h: st.fixed_dictionaries({h: for_kind(table[h].kind)})
    )
    return st.tuples(handler, st.fixed_dictionaries({}, optional=timing)).map(lambda t: {**t[0], **t[1]})


def _term(weighted: bool) -> st.SearchStrategy[dict[str, Any]]:
    key = for_kind(spec.LABEL_KEY)
    values = st.lists(for_kind(spec.LABEL_VALUE), min_size=1, max_size=3)
    with_values = st.fixed_dictionaries({"key": key, "operator": st.sampled_from(["In", "NotIn"]), "values": values})
    without = st.fixed_dictionaries({"key": key, "operator": st.sampled_from(["Exists", "DoesNotExist"])})
    term = st.one_of(with_values, without)
    if weighted:
        return st.tuples(term, st.integers(1, 100)).map(lambda t: {"weight": t[1], **t[0]})
    return term


def _toleration() -> st.SearchStrategy[dict[str, Any]]:
    effect = {"effect": st.sampled_from(["NoSchedule", "PreferNoSchedule"])}
    key = for_kind(spec.LABEL_KEY)
    exists = st.fixed_dictionaries({"operator": st.just("Exists")}, optional={"key": key, **effect})
    equal = st.fixed_dictionaries(
        {"key": key}, optional={"operator": st.just("Equal"), "value": for_kind(spec.LABEL_VALUE), **effect}
    )
    return st.one_of(exists, equal)


def _seccomp() -> st.SearchStrategy[dict[str, Any]]:
    profile = for_kind(spec_kinds.field_table(spec.SeccompProfile)[1].kind)
    return st.one_of(
        st.fixed_dictionaries({"type": st.just("Localhost"), "localhostProfile": profile}),
        st.fixed_dictionaries({}, optional={"type": st.sampled_from(["RuntimeDefault", "Unconfined"])}),
    )


def _env() -> st.SearchStrategy[dict[str, Any]]:
    name = for_kind(spec.ENV_NAME)
    source = for_class(spec.EnvVarSource)
    return st.one_of(
        st.fixed_dictionaries({"name": name}, optional={"value": for_kind(spec.TEXT)}),
        st.fixed_dictionaries({"name": st.from_regex(rf"\A{spec.SECRET_ENV_NAME}\Z").filter(lambda n: len(n) <= 256),
                               "valueFrom": source}),
    )


def _resources() -> st.SearchStrategy[dict[str, Any]]:
    amounts = for_class(spec.ResourceList)
    return st.one_of(
        st.fixed_dictionaries({}, optional={"requests": amounts}),
        st.fixed_dictionaries({}, optional={"limits": amounts}),
    )


OVERRIDES = {
    spec.ProbeSpec: _probe,
    spec.NodeSelectorRequirement: lambda: _term(weighted=False),
    spec.PreferredTerm: lambda: _term(weighted=True),
    spec.Toleration: _toleration,
    spec.SeccompProfile: _seccomp,
    spec.EnvVar: _env,
    spec.Resources: _resources,
}

workload_docs = for_class(spec.Workload)

"""cloudless.render is pure: values in, text out."""

from __future__ import annotations

import builtins
from typing import Any

import pytest

from cloudless import render

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("then", "expected"),
    [(NOW, "0s"), (NOW - 59, "59s"), (NOW - 119, "119s"), (NOW - 150, "2m30s"), (NOW - 300, "5m"),
     (NOW - 3600, "60m"), (NOW - 4 * 3600, "4h"), (NOW - 3 * 86400, "3d"), (NOW + 30, "0s"), (None, "-"),
     ("2023-11-14T22:13:10Z", "10s"), ("not a time", "-"), (True, "-")],
    ids=str,
)
def test_age(then: object, expected: str) -> None:
    assert render.age(then, NOW) == expected


@pytest.mark.parametrize(
    ("fn", "value", "expected"),
    [(render.cpu, 250, "250m"), (render.cpu, 4000, "4"), (render.cpu, 1500, "1.5"), (render.cpu, None, "-"),
     (render.memory, 512, "512"), (render.memory, 256 * 1024**2, "256Mi"), (render.memory, int(1.5 * 1024**3), "1.5Gi"),
     (render.memory, 3 * 1024**5, "3072Ti"), (render.memory, "x", "-"), (render.percent, 12.49, "12%"),
     (render.percent, None, "-"), (render.text, False, "false"), (render.text, "", "-")],
    ids=str,
)
def test_values(fn: Any, value: object, expected: str) -> None:
    assert fn(value) == expected


def test_table_aligns_columns_and_does_not_pad_the_last() -> None:
    out = render.table(["A", "BB"], [["xxx", "y"], ["z", "long value"]])
    assert out.splitlines() == ["A     BB", "xxx   y", "z     long value"]


def test_table_widths_keep_later_rows_in_line() -> None:
    widths = render.widths_of(["A", "B", "C"], [["x", "y", "z"]], (4, 0))
    assert render.table([], [["1", "2", "3"]], widths=widths) == "1      2   3"


@pytest.mark.parametrize(
    ("node", "status"),
    [({"online": True}, "Ready"), ({"online": False}, "NotReady"),
     ({"online": True, "cordoned": True, "draining": True}, "Ready,SchedulingDisabled,Draining"),
     ({"online": True, "gates": ["thermal"]}, "Ready,Gated"), ({"online": False, "gates": ["x"]}, "NotReady"),
     ({"online": True, "problem": "desired state not sent"}, "Ready,Problem")],
    ids=str,
)
def test_node_status(node: dict[str, Any], status: str) -> None:
    assert render.node_status(node) == status


def test_tables_survive_missing_fields() -> None:
    """A coordinator older or newer than the CLI still gets a readable table, never a KeyError."""
    assert render.nodes_table([{"id": "n"}], NOW, wide=True).splitlines()[1].split()[:3] == ["n", "NotReady", "-"]
    assert "-/-" in render.workloads_table([{"metadata": {"name": "w"}}], NOW, wide=True)
    assert render.replicas_table([{}], NOW, wide=True).count("-") >= 5
    assert "Name:          -" in render.describe_workload({}, [], NOW)
    assert "Name:          -" in render.describe_node({}, [], [], NOW)


def test_rollout_line() -> None:
    line = render.rollout_line("workload/web", {"revision": 2, "phase": "progressing", "desired": 3, "updated": 1,
                                                "ready": 1, "available": 0, "message": "waiting for web-1"})
    assert line == ("workload/web revision 2: progressing, 1 of 3 updated, 1 ready, 0 available "
                    "(waiting for web-1)")


def test_yaml_without_pyyaml_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_yaml(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "yaml":
            raise ImportError("No module named 'yaml'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_yaml)
    with pytest.raises(render.RenderError, match="pip install pyyaml"):
        render.to_yaml({})

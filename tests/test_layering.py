"""Layering, checked by parsing imports (STYLE §1, ARCHITECTURE §2): cores import no I/O, the packages depend on each
other only as the dependency rule says, no module is part of an import circle, and the agent-only install needs none
of the broker/coordinator extras.

The dependency rule, as `ALLOWED` states it: `cloudless -> anything`; `edge_agent -> broker, dataplane,
firmware_profiles`; `coordinator -> broker, firmware_profiles` and `dataplane`'s pure contract modules (the dataplane
modules in `CORES`) only; `dataplane -> broker`; `firmware_profiles -> nothing`; `broker -> nothing`. So never
`edge_agent <-> coordinator`, never `dataplane -> edge_agent | coordinator`, and nothing imports `cloudless`.

The checks read source with `ast`; nothing is imported. Which imports count:

- Every `import`/`from ... import` statement, at any depth (a lazy import inside a function is still a
  dependency), plus `importlib.import_module("x")` / `__import__("x")` with a literal name.
- Imports under `if TYPE_CHECKING:` never run; they are ignored by the purity and install checks (a) and (c) but
  still count for (b): the agent and the coordinator must not even name each other's types.
- "Reached" modules: project modules a file imports at module level, followed recursively, so a core cannot
  launder an I/O import through a helper module. For (c) the package `__init__`s on the way count as well
  (Python runs them); for (a) they do not: a core depends on what it names, not on what its package re-exports.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("broker", "dataplane", "edge_agent", "coordinator", "firmware_profiles", "cloudless")

# Cores (STYLE §1): the modules that decide. Every pattern must match a file, so a core that is renamed or moved
# cannot silently drop out of the checks; a new core is added here in the change that creates it.
CORE_GLOBS = (
    # the bus: wire contract, ACL, outbox, reconnect back-off, password hashing, sealed payloads
    "broker/wire/*.py", "broker/acl.py", "broker/outbox.py", "broker/backoff.py", "broker/passwords.py",
    "broker/sealed.py", "broker/limits.py", "broker/client_settings.py",
    # the agent: what to run, which desired state to accept, probe verdicts, sandbox policy, container body, image
    # pulls, what it reports, where secret files go
    "edge_agent/reconcile.py", "edge_agent/desired.py", "edge_agent/health.py", "edge_agent/sandbox.py",
    "edge_agent/runtime/podman_spec.py", "edge_agent/images.py", "edge_agent/report.py", "edge_agent/secret_layout.py",
    "edge_agent/storage_plan.py",  # what the storage node scrubs next and reports (issue 20)
    # the coordinator: cluster view, revisions, the broker-link clock, lifecycle, membership, scheduling, admission,
    # spec, translation, enrolment checks, damping, the dashboard documents, the records and views REST shows
    "coordinator/cluster.py", "coordinator/revisions.py", "coordinator/link.py", "coordinator/lifecycle.py",
    "coordinator/membership.py",
    "coordinator/scheduler/**/*.py", "coordinator/policy.py", "coordinator/spec*.py", "coordinator/translate.py",
    "coordinator/enroll.py", "coordinator/damper.py", "coordinator/dashboard.py", "coordinator/model.py",
    "coordinator/views.py", "coordinator/secrets/envelope.py", "coordinator/secrets/tokens.py",
    "coordinator/secrets/model.py", "coordinator/overlay.py", "coordinator/replica_events.py", "coordinator/tty.py",
    "coordinator/services.py",
    # device profiles: detection, gates, schema, quantities
    "firmware_profiles/detect.py", "firmware_profiles/gates.py", "firmware_profiles/model.py",
    "firmware_profiles/schema.py", "firmware_profiles/units.py",
    # the data plane: who a peer is, which path carries its traffic
    "dataplane/identity.py", "dataplane/paths.py", "dataplane/frames.py", "dataplane/overlay_plan.py",
    "dataplane/birthday.py", "dataplane/balance.py", "dataplane/dns.py", "dataplane/service_plan.py",
    # the S3 protocol layer: signatures, aws-chunked bodies, checksums, routing, ranges, listing, XML (http.py is its
    # aiohttp adapter)
    "dataplane/s3/auth.py", "dataplane/s3/sigv2.py", "dataplane/s3/sigv4.py", "dataplane/s3/chunked.py",
    "dataplane/s3/checksums.py", "dataplane/s3/integrity.py", "dataplane/s3/body.py", "dataplane/s3/routing.py",
    "dataplane/s3/ranges.py", "dataplane/s3/listing.py", "dataplane/s3/multipart.py", "dataplane/s3/xmlbodies.py",
    "dataplane/s3/errors.py", "dataplane/s3/backend.py", "dataplane/s3/handlers.py",
    # the object store: chunking, records, placement, repair planning, access keys, the Metadata/ChunkClient ports
    # (chunkio.py and store.py are its adapters, peer.py the overlay transport)
    "dataplane/objects/chunking.py", "dataplane/objects/model.py", "dataplane/objects/placement.py",
    "dataplane/objects/repair.py", "dataplane/objects/ports.py", "dataplane/objects/access.py",
    # erasure coding: the stripe layout, placement and store documents (its Codec loads pyeclib lazily, on first use)
    "dataplane/objects/erasure.py",
)
# Which top-level packages each may import (itself always). `dataplane` is marked: the coordinator may import only
# its pure contract modules (those in CORES), never the overlay's adapters.
ALLOWED: dict[str, frozenset[str]] = {
    "broker": frozenset(),
    "firmware_profiles": frozenset(),
    "dataplane": frozenset({"broker"}),
    "edge_agent": frozenset({"broker", "dataplane", "firmware_profiles"}),
    "coordinator": frozenset({"broker", "firmware_profiles", "dataplane"}),
    "cloudless": frozenset(PROJECT_PACKAGES),
}
CONTRACT_ONLY: dict[str, str] = {"coordinator": "dataplane"}
# Adapter and I/O libraries a core must not import. `random` is allowed only as `Random`, passed in seeded.
CORE_FORBIDDEN = frozenset({
    "asyncio", "socket", "subprocess", "paho", "amqtt", "aiohttp", "podman", "aioquic", "sqlite3", "time",
    "random", "os", "pathlib", "ssl", "selectors", "threading", "multiprocessing", "shutil", "tempfile", "signal",
    "psutil", "requests", "urllib3",
})
# Not installed with the agent (pyproject: only paho-mqtt, msgpack, psutil), or coordinator-side code.
AGENT_FORBIDDEN = ("amqtt", "aiohttp", "yaml", "broker.embedded", "broker.embedded_session", "broker.mosquitto",
                   "coordinator")


@dataclass(frozen=True)
class Import:
    module: str  # absolute dotted name: "os.path", "broker.wire.topics"
    names: tuple[str, ...]  # what a from-import takes; () for `import x`
    lineno: int
    top_level: bool  # runs when the module is imported (not inside a def or lambda)
    type_checking: bool  # under `if TYPE_CHECKING:`

    def within(self, dotted: str) -> bool:
        return self.module == dotted or self.module.startswith(dotted + ".")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _ImportVisitor(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool) -> None:
        self.package = module if is_package else module.rpartition(".")[0]
        self.found: list[Import] = []
        self._depth = 0
        self._type_checking = 0

    def _add(self, module: str, names: tuple[str, ...], node: ast.AST) -> None:
        self.found.append(Import(module, names, getattr(node, "lineno", 0), self._depth == 0,
                                 self._type_checking > 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, (), node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            parts = self.package.split(".")
            anchor = parts[: len(parts) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        self._add(base, tuple(a.name for a in node.names), node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        dynamic = (isinstance(func, ast.Name) and func.id == "__import__") or (
            isinstance(func, ast.Attribute) and func.attr == "import_module"
        )
        if dynamic and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            self._add(node.args[0].value, (), node)
        self.generic_visit(node)

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self._type_checking += 1
            for child in node.body:
                self.visit(child)
            self._type_checking -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def _nested(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _nested


def parse_imports(source: str, module: str, *, is_package: bool = False) -> list[Import]:
    visitor = _ImportVisitor(module, is_package)
    visitor.visit(ast.parse(source))
    return visitor.found


def imports_of(path: Path) -> list[Import]:
    return parse_imports(path.read_text(encoding="utf-8"), module_name(path), is_package=path.name == "__init__.py")


def module_file(dotted: str) -> Path | None:
    """The project file that defines module `dotted`, if it is one of ours."""
    if dotted.split(".", maxsplit=1)[0] not in PROJECT_PACKAGES:
        return None
    base = REPO.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def targets(imp: Import) -> list[str]:
    """The modules an import names: `from a.b import c` names `a.b.c` when that is a module, else `a.b`."""
    subs = [f"{imp.module}.{name}" for name in imp.names if module_file(f"{imp.module}.{name}")]
    return subs if len(subs) == len(imp.names) and subs else [imp.module, *subs]


def _parents(dotted: str) -> list[str]:
    parts = dotted.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def reached(path: Path, *, with_parents: bool) -> Iterator[tuple[tuple[str, ...], Import]]:
    """Every module-level, runtime import of `path` and of the project modules it reaches, with the chain."""
    seen: set[Path] = set()
    stack: list[tuple[Path, tuple[str, ...]]] = [(path, (module_name(path),))]
    while stack:
        current, chain = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        for imp in imports_of(current):
            if not imp.top_level or imp.type_checking:
                continue
            yield chain, imp
            for target in targets(imp):
                for name in [*(_parents(target) if with_parents else []), target]:
                    file = module_file(name)
                    if file is not None and file not in seen:
                        stack.append((file, (*chain, name)))


def project_files(*globs: str) -> list[Path]:
    return sorted({p for g in globs for p in REPO.glob(g) if p.is_file() and ".venv" not in p.parts})


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


# ---- (a) cores import no adapter or I/O library ---------------------------------------------------------------

def core_violations(imps: list[Import], source: str) -> list[str]:
    """Why these imports (of one core file with `source`) break purity; empty when they do not."""
    problems = []
    for imp in imps:
        if imp.type_checking:
            continue
        root = imp.module.split(".", maxsplit=1)[0]
        if root == "random" and imp.names and set(imp.names) <= {"Random"}:
            continue  # the type of an injected, seeded generator
        if root == "random" and not imp.names and _only_random_type(source):
            continue
        if root in CORE_FORBIDDEN:
            problems.append(f"line {imp.lineno}: imports {imp.module}")
    if _constructs_unseeded_random(source):
        problems.append("constructs Random() without a seed: take a seeded Random as a parameter")
    return problems


def _only_random_type(source: str) -> bool:
    """`import random` used only as `random.Random`."""
    attrs = {node.attr for node in ast.walk(ast.parse(source))
             if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "random"}
    return attrs <= {"Random"}


def _constructs_unseeded_random(source: str) -> bool:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and not node.args and not node.keywords:
            func = node.func
            if (isinstance(func, ast.Name) and func.id == "Random") or (
                isinstance(func, ast.Attribute) and func.attr == "Random"
            ):
                return True
    return False


CORES = project_files(*CORE_GLOBS)


@pytest.mark.parametrize("pattern", CORE_GLOBS)
def test_every_core_pattern_names_a_module(pattern: str) -> None:
    assert project_files(pattern), f"no core module matches {pattern}: moved or renamed? update CORE_GLOBS"


@pytest.mark.parametrize("path", CORES, ids=rel)
def test_core_imports_no_io_library(path: Path) -> None:
    problems = core_violations(imports_of(path), path.read_text(encoding="utf-8"))
    assert not problems, f"{rel(path)} is a core (STYLE §1) but: " + "; ".join(problems)


@pytest.mark.parametrize("path", CORES, ids=rel)
def test_core_reaches_no_io_library_through_project_modules(path: Path) -> None:
    problems = [
        f"{' -> '.join(chain)} imports {imp.module} (line {imp.lineno})"
        for chain, imp in reached(path, with_parents=False)
        if len(chain) > 1 and core_violations([imp], "")
    ]
    assert not problems, f"{rel(path)} is a core (STYLE §1) but reaches I/O: " + "; ".join(problems)


# ---- (b) the dependency rule between packages -------------------------------------------------------------------

ALL_FILES = project_files(*(f"{package}/**/*.py" for package in PROJECT_PACKAGES))
AGENT_FILES = project_files("edge_agent/**/*.py")
CORE_MODULES = frozenset(module_name(p) for p in CORES)


def rule_violations(module: str, imps: list[Import]) -> list[str]:
    """Why these imports (of `module`, every one: lazy and TYPE_CHECKING ones count, since naming another side's
    types is depending on it) break the dependency rule; empty when they do not."""
    own = module.split(".", maxsplit=1)[0]
    problems = []
    for imp in imps:
        for target in targets(imp):
            root = target.split(".", maxsplit=1)[0]
            if root not in PROJECT_PACKAGES or root == own:
                continue
            if root not in ALLOWED[own]:
                problems.append(f"line {imp.lineno}: {own} may not import {root} ({target})")
            elif CONTRACT_ONLY.get(own) == root and _module_of(target) not in CORE_MODULES:
                problems.append(f"line {imp.lineno}: {own} may import only {root}'s pure contract modules, not "
                                f"{target}")
    return problems


def _module_of(dotted: str) -> str:
    """The module a dotted name lives in (`a.b.Name` -> `a.b`)."""
    while module_file(dotted) is None and "." in dotted:
        dotted = dotted.rsplit(".", 1)[0]
    return dotted


@pytest.mark.parametrize("path", ALL_FILES, ids=rel)
def test_imports_follow_the_dependency_rule(path: Path) -> None:
    problems = rule_violations(module_name(path), imports_of(path))
    assert not problems, f"{rel(path)} breaks the dependency rule (ARCHITECTURE §2): " + "; ".join(problems)


def test_there_are_agent_files_to_check() -> None:
    assert AGENT_FILES, "edge_agent/ has no Python files: did the package move?"


# ---- (d) no import circles --------------------------------------------------------------------------------------

def import_graph(files: list[Path]) -> dict[str, set[str]]:
    """module -> the project modules it imports (any import: lazy and TYPE_CHECKING ones are dependencies too)."""
    graph: dict[str, set[str]] = {}
    for path in files:
        module = module_name(path)
        graph[module] = {_module_of(t) for imp in imports_of(path) for t in targets(imp)
                         if module_file(_module_of(t)) is not None} - {module}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            nxt = next(edges, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_module_is_part_of_an_import_circle() -> None:
    found = circles(import_graph(ALL_FILES))
    assert not found, "import circles (break them with a Protocol or by moving the shared piece down): " + "; ".join(
        " <-> ".join(c) for c in found)


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        pytest.param({"a": {"b"}, "b": set()}, [], id="chain"),
        pytest.param({"a": {"b"}, "b": {"a"}}, [["a", "b"]], id="pair"),
        pytest.param({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]], id="triangle"),
    ],
)
def test_circles(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert circles(graph) == expected


# ---- (c) the agent-only install has none of the broker/coordinator extras --------------------------------------

def lacks(imp: Import) -> bool:
    """Whether an import names something the agent-only install lacks (`from broker import embedded` too)."""
    named = [imp.module, *targets(imp)]
    return any(n == m or n.startswith(m + ".") for n in named for m in AGENT_FORBIDDEN)


@pytest.mark.parametrize("path", AGENT_FILES, ids=rel)
def test_agent_imports_nothing_the_agent_install_lacks(path: Path) -> None:
    direct = [
        f"line {imp.lineno}: {imp.module}"
        for imp in imports_of(path)
        if not imp.type_checking and lacks(imp)
    ]
    assert not direct, f"{rel(path)} imports what the agent install lacks: " + "; ".join(direct)
    via = [
        f"{' -> '.join(chain)} imports {imp.module} (line {imp.lineno})"
        for chain, imp in reached(path, with_parents=True)
        if len(chain) > 1 and lacks(imp)
    ]
    assert not via, f"{rel(path)} reaches what the agent install lacks: " + "; ".join(via)


# ---- the checker itself ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        pytest.param("import os.path", "broker.acl", [("os.path", (), True, False)], id="plain"),
        pytest.param("from . import topics", "broker.wire.codec", [("broker.wire", ("topics",), True, False)],
                     id="relative-sibling"),
        pytest.param("from ..errors import WireError", "broker.wire.codec",
                     [("broker.errors", ("WireError",), True, False)], id="relative-parent"),
        pytest.param("def f():\n    import time\n", "broker.acl", [("time", (), False, False)], id="lazy"),
        pytest.param("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import asyncio\n", "broker.acl",
                     [("typing", ("TYPE_CHECKING",), True, False), ("asyncio", (), True, True)], id="type-checking"),
        pytest.param("import importlib\nm = importlib.import_module('socket')\n", "broker.acl",
                     [("importlib", (), True, False), ("socket", (), True, False)], id="dynamic"),
    ],
)
def test_parse_imports(source: str, module: str, expected: list[tuple[object, ...]]) -> None:
    got = [(i.module, i.names, i.top_level, i.type_checking) for i in parse_imports(source, module)]
    assert got == expected


@pytest.mark.parametrize(
    ("source", "lacking"),
    [("import yaml", True), ("from broker import embedded", True), ("from broker.mosquitto import render", True),
     ("import aiohttp.web", True), ("from coordinator.spec import Spec", True), ("from broker import client", False),
     ("import yamlish", False), ("from broker.wire import topics", False)],
    ids=str,
)
def test_lacks(source: str, lacking: bool) -> None:
    assert lacks(parse_imports(source, "edge_agent.agent")[0]) is lacking


def test_relative_import_in_a_package_init() -> None:
    assert parse_imports("from .codec import decode", "broker.wire", is_package=True)[0].module == "broker.wire.codec"


@pytest.mark.parametrize(
    ("source", "pure"),
    [
        pytest.param("from random import Random\ndef f(rng: Random) -> float:\n    return rng.random()\n", True,
                     id="injected-Random"),
        pytest.param("import random\ndef f(rng: random.Random) -> float:\n    return rng.random()\n", True,
                     id="random.Random-annotation"),
        pytest.param("import random\nx = random.random()\n", False, id="module-random"),
        pytest.param("from random import Random\nRNG = Random()\n", False, id="unseeded-Random"),
        pytest.param("from random import choice\n", False, id="from-random-choice"),
        pytest.param("import time\n", False, id="time"),
        pytest.param("from pathlib import Path\n", False, id="pathlib"),
        pytest.param("import paho.mqtt.client as paho\n", False, id="paho"),
        pytest.param("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import asyncio\n", True,
                     id="type-checking-only"),
        pytest.param("import math\nimport dataclasses\n", True, id="pure"),
    ],
)
def test_core_violations(source: str, pure: bool) -> None:
    assert (core_violations(parse_imports(source, "broker.acl"), source) == []) is pure


@pytest.mark.parametrize(
    ("module", "source", "ok"),
    [
        pytest.param("edge_agent.agent", "from coordinator.spec import Workload", False, id="agent->coordinator"),
        pytest.param("coordinator.service", "import edge_agent.reconcile", False, id="coordinator->agent"),
        pytest.param("coordinator.cli", "from cloudless import logs", False, id="daemon->cloudless"),
        pytest.param("dataplane.overlay", "from edge_agent import agent", False, id="dataplane->agent"),
        pytest.param("dataplane.overlay", "from broker.wire import topics", True, id="dataplane->broker"),
        pytest.param("broker.client", "import firmware_profiles", False, id="broker->profiles"),
        pytest.param("coordinator.service", "from dataplane import overlay_adapter", False,
                     id="coordinator->dataplane-adapter"),
        pytest.param("edge_agent.agent", "from dataplane import overlay_adapter", True, id="agent->dataplane"),
        pytest.param("cloudless.up", "from coordinator import service", True, id="cloudless->anything"),
        pytest.param("edge_agent.agent", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                     "    from coordinator.model import Event\n", False, id="type-checking-counts"),
    ],
)
def test_rule_violations(module: str, source: str, ok: bool) -> None:
    assert (rule_violations(module, parse_imports(source, module)) == []) is ok

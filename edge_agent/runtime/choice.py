"""Which runtime the agent runs: the decision (pure) and the two facts it needs from the host.

Podman needs both the `podman` program and the agent's Podman support (podman-py and requests: the `podman`
extra). An agent installed without the extra on a host that has Podman, or under a profile that asks for Podman
(every Raspberry Pi profile), would otherwise die importing `requests` (issue 15: `ModuleNotFoundError:
requests`). It runs the process runtime instead and says once, in one line, why and how to get containers; its
node facts then say `process`, so the scheduler sends it only what a process can run.
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass

PODMAN_MODULES = ("requests", "urllib3", "podman")  # what edge_agent.runtime.podman imports, in that order


@dataclass(frozen=True, slots=True)
class Choice:
    name: str  # "podman" | "process"
    warning: str = ""  # one line for the log when the choice is not what was asked for


def decide(requested: str, *, podman_on_path: bool, missing_module: str | None) -> Choice:
    """`requested`: "auto", "podman" or "process" (the flag, else the profile's); `missing_module`: the first
    Python module of the Podman support that cannot be imported, None when it all imports."""
    if requested == "process":
        return Choice("process")
    if requested == "auto" and not podman_on_path:
        return Choice("process")
    if missing_module is None:
        return Choice("podman")
    asked = "this profile asks for Podman" if requested == "podman" else "podman is installed"
    return Choice("process", (
        f"{asked}, but the agent was installed without its Podman support (Python module {missing_module!r} "
        "is missing): running workloads as plain processes (runtime: process) instead. For containers, install "
        "the agent with the podman extra (pip install '<the agent wheel>[podman]') and restart it"))


def missing_podman_module() -> str | None:
    """The first module of the Podman support that is not installed, None when all are. Looked up, not imported:
    importing requests here would load what `cli.slim_podman_imports` keeps out of the agent."""
    return next((name for name in PODMAN_MODULES if importlib.util.find_spec(name) is None), None)


def choose(requested: str) -> Choice:
    """The decision on this host (the adapter: looks at PATH and imports the Podman support when relevant)."""
    if requested == "process":
        return Choice("process")
    on_path = shutil.which("podman") is not None
    if requested == "auto" and not on_path:
        return Choice("process")
    return decide(requested, podman_on_path=on_path, missing_module=missing_podman_module())

"""What a node says it can do (`NodeFacts.abilities`): the runtime it really runs, and the overlay when aioquic is
there. The scheduler trusts these words, so each runtime's list must match what that runtime refuses."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from broker import wire
from edge_agent import facts
from edge_agent.errors import SpecUnsupported
from edge_agent.runtime.process import ProcessRuntime


@pytest.mark.parametrize(("runtime", "overlay", "expected"), [
    ("podman", False, ("containers", "port-remap", "volumes", "images")),
    ("podman", True, ("containers", "port-remap", "volumes", "images", "overlay")),
    ("process", False, ("process",)),
    ("process", True, ("process", "overlay")),
    ("fake", False, ()),
], ids=["podman", "podman+overlay", "process", "process+overlay", "unknown-runtime"])
def test_abilities_follow_the_runtime_and_the_overlay(runtime: str, overlay: bool, expected: tuple[str, ...]) -> None:
    assert facts.abilities(runtime, overlay=overlay) == expected
    assert set(expected) <= set(wire.NodeFacts.ABILITIES)


def test_node_facts_report_abilities_and_overlay_only_when_aioquic_is_importable(tmp_path: Path) -> None:
    got = facts.node_facts(data_dir=tmp_path, runtime="process", runtime_version="", rootless=True, profile="",
                           zone="", labels={}, agent_version="0", readings=facts.Readings(None, None, {}))
    has_aioquic = importlib.util.find_spec("aioquic") is not None
    assert got.abilities == (("process", "overlay") if has_aioquic else ("process",))
    assert wire.decode(wire.encode(wire.NodeStatus(node_id="n1", presence=wire.Presence.ONLINE, ts=1.0,
                                                   facts=got))).facts.abilities == got.abilities


@pytest.mark.parametrize("spec", [
    wire.ReplicaSpec(replica_id="r1", workload="w", command=("true",),
                     ports=(wire.PortMapping(container_port=80, host_port=8080),)),
    wire.ReplicaSpec(replica_id="r1", workload="w", command=("true",),
                     volumes=(wire.VolumeMount(name="data", mount_path="/data"),)),
], ids=["port-remap", "volumes"])
async def test_the_process_runtime_refuses_what_it_does_not_claim(spec: wire.ReplicaSpec, tmp_path: Path) -> None:
    """The words it leaves out ("port-remap", "volumes") are exactly what it refuses."""
    assert not {"port-remap", "volumes"} & set(facts.abilities("process", overlay=False))
    runtime = ProcessRuntime(node_id="n1", cluster="c1", root=tmp_path / "process")
    with pytest.raises(SpecUnsupported):
        await runtime.create(spec, 1)

"""AgentOverlay.serve: a service registered once (the chunk store's handler) is served by the running overlay and
again by every overlay started later, so the store and its accounting outlive any one overlay."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edge_agent.overlay import AgentOverlay, OverlaySettings
from tests.edge_agent.test_overlay_agent import enrolled


class NoMqtt:
    """AgentOverlay._start_overlay uses no MQTT; anything else would be a bug here."""


async def handler(_node: str, _reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
    return None


async def test_a_service_is_served_again_after_the_overlay_restarts(tmp_path: Path) -> None:
    ident = enrolled(tmp_path, "A")
    overlay = AgentOverlay(node_id="A", mqtt=NoMqtt(), clock=lambda: 0.0,  # type: ignore[arg-type]
                           settings=OverlaySettings(port=0, host="127.0.0.1"), identity=lambda: ident,
                           local_addresses=lambda: ["127.0.0.1"])
    overlay.serve("chunks", handler)  # before any overlay runs: kept for when one starts
    for _ in range(2):
        await overlay._start_overlay()
        assert overlay.overlay is not None
        assert overlay.overlay._services["chunks"] is handler
        await overlay.overlay.stop()
        overlay.overlay = None
    await overlay._start_overlay()
    overlay.serve("other", handler)  # while one runs: served at once
    assert overlay.overlay is not None and overlay.overlay._services["other"] is handler
    await overlay.stop()

"""The agent's overlay (adapter): runs dataplane.overlay on this device, fed by MQTT, reporting on MQTT.

- **Start** when the overlay is switched on (`--no-overlay` switches it off), aioquic imports (the `overlay` extra),
  and the node has its enrolled certificate, key and CA (a password-authenticated agent has none). Otherwise the
  agent publishes `OverlayReport(enabled=False, disabled=<why, and what to do>)` (again on every reconnect) and runs
  its workloads without the overlay. dataplane (aioquic, cryptography) is imported only when the overlay starts: a
  device without it pays nothing.
- **In**: the coordinator's PeerDirectory on `node/<id>/peers` (retained, qos 1). Fenced like desired state
  (`consider_directory`): a directory from an epoch lower than the highest seen — this agent's desired-state epoch
  or a directory's — is ignored, and within an epoch only a higher generation applies.
- **Out**: the OverlayReport, retained on `node/<id>/overlay`, published ~1 s after something changed (paths,
  relay links, peers: the facade's `changed`), on every MQTT reconnect, and at least every 60 s.
- **Renewal**: `reload_credential()` (the agent calls it after edge_agent.renewal has written the renewed
  certificate) reads the identity files again and hands the new credential to the Endpoint: every connection made
  from then on presents the new certificate; live ones keep the old one until they end (a renewal comes at 2/3 of
  the old certificate's life).
- **overlay-ping** (`answer_ping`): the command's args checked (a bad `peer`/`count` is an error naming the arg),
  then the facade's ping; the reply's output is the OverlayPingResult as JSON (the wire schema's plain form).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import ipaddress
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from broker import wire
from broker.client import Message, MqttClient
from broker.errors import MqttError, WireError
from broker.wire import OverlayPingResult, OverlayReport, PeerDirectory, topics, valid_id
from broker.wire.schema import compile_schema
from edge_agent.identity import NodeIdentity

if TYPE_CHECKING:
    from dataplane.overlay import Overlay, ServiceHandler
    from dataplane.quic import NodeCredential

log = logging.getLogger(__name__)

DEFAULT_PORT = 41641  # dataplane.overlay_plan.DEFAULT_PORT (not imported: dataplane loads only when it runs)
DEBOUNCE_S = 1.0
REFRESH_S = 60.0  # the shortest interval between unchanged reports; the agent passes its profile's heartbeat maximum
MAX_PING_COUNT = 100
NO_AIOQUIC = ("aioquic is not installed: pip install 'cloudless[overlay]' (armv7/Termux: the install script says how "
              "to build it), or run without the overlay (--no-overlay)")
NO_CERTIFICATE = ("this node has no enrolled certificate (it authenticates to the broker with a password): enrol it "
                  "with --token to run the overlay")
SWITCHED_OFF = "switched off on this node (--no-overlay / overlay: false); restart the agent without it to run it"


@dataclass(frozen=True, slots=True)
class OverlaySettings:
    enabled: bool = True
    port: int = DEFAULT_PORT
    host: str = "0.0.0.0"
    # a report with nothing new goes out this often (RTTs shown by `get peers` are at most this old); path changes go
    # out at once. The control link's budget (docs/control-link.md) needs it as long as the profile's heartbeat
    # maximum: a report a minute alone was 0.65 MiB/day
    refresh_s: float = REFRESH_S


# ---- decisions (pure) ---------------------------------------------------------------------------------------

def why_not(settings: OverlaySettings, *, have_aioquic: bool, identity: NodeIdentity | None) -> str | None:
    """Why the overlay cannot run on this node (None: it can)."""
    if not settings.enabled:
        return SWITCHED_OFF
    if not have_aioquic:
        return NO_AIOQUIC
    if identity is None:
        return NO_CERTIFICATE
    return None


def consider_directory(current: PeerDirectory | None, max_epoch: int, incoming: PeerDirectory) -> str | None:
    """Why `incoming` is not applied (None: apply it). `max_epoch`: the highest epoch this agent has seen."""
    if incoming.epoch < max_epoch:
        return f"epoch {incoming.epoch} is lower than {max_epoch} (fenced: stale leader)"
    if current is not None and incoming.epoch == current.epoch and incoming.generation <= current.generation:
        return f"generation {incoming.generation} is not newer than {current.generation}"
    return None


def ping_args(args: dict[str, str]) -> tuple[str, int] | str:
    """(peer, count) from an overlay-ping command's args, or the error naming the bad arg."""
    peer = args.get("peer", "")
    if not valid_id(peer):
        return f"args.peer: expected a node id, got {peer[:80]!r}"
    text = args.get("count", "5")
    try:
        count = int(text)
    except ValueError:
        return f"args.count: expected a number 1-{MAX_PING_COUNT}, got {text[:20]!r}"
    if not 1 <= count <= MAX_PING_COUNT:
        return f"args.count: {count} is not within 1-{MAX_PING_COUNT}"
    return peer, count


def ping_output(result: OverlayPingResult) -> bytes:
    """The reply's output: the result as JSON, in the wire schema's plain form (coordinator.overlay_ops reads it)."""
    return json.dumps(compile_schema(OverlayPingResult).to_plain(result, omit_defaults=False)).encode()


def have_aioquic() -> bool:
    return importlib.util.find_spec("aioquic") is not None


def interface_addresses() -> list[str]:
    """This device's IPv4 addresses other than loopback and link-local: its LAN candidates (the overlay socket is
    IPv4)."""
    import psutil

    found = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            with contextlib.suppress(ValueError):
                ip = ipaddress.ip_address(a.address)
                if ip.version == 4 and not (ip.is_loopback or ip.is_link_local or ip.is_unspecified):
                    found.append(str(ip))
    return sorted(set(found))


# ---- the adapter ----------------------------------------------------------------------------------------------

class AgentOverlay:
    """The overlay of one agent. `await start()` after the MQTT client is set up; `await stop()` before it stops."""

    def __init__(self, *, node_id: str, mqtt: MqttClient, clock: Callable[[], float], settings: OverlaySettings,
                 identity: Callable[[], NodeIdentity | None], max_epoch: Callable[[], int] = lambda: 0,
                 local_addresses: Callable[[], list[str]] = interface_addresses,
                 aioquic_available: Callable[[], bool] = have_aioquic) -> None:
        self.node_id = node_id
        self.mqtt = mqtt
        self.clock = clock
        self.settings = settings
        self._identity = identity
        self._agent_epoch = max_epoch
        self.local_addresses = local_addresses
        self._aioquic_available = aioquic_available
        self.overlay: Overlay | None = None
        self.disabled = ""  # why the overlay does not run here ("" while it does)
        self.directory: PeerDirectory | None = None
        self.max_epoch = 0  # the highest directory epoch seen
        self.published: OverlayReport | None = None
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._services: dict[str, ServiceHandler] = {}  # registered again whenever the overlay (re)starts

    @property
    def enabled(self) -> bool:
        return self.overlay is not None

    async def start(self) -> None:
        why = why_not(self.settings, have_aioquic=self._aioquic_available(), identity=self._identity())
        if why is None:
            try:
                await self._start_overlay()
            except Exception as exc:  # a taken port, unreadable key files: the agent runs on without the overlay
                why = f"the overlay did not start: {exc}"
                log.error("overlay: %s", why)
        self.mqtt.on_connect(self._on_connected)  # (re)connected: the report goes out (the broker may have lost it)
        if why is not None:
            self.disabled = why
            log.info("overlay: not running: %s", why)
            return
        await self.mqtt.subscribe(topics.node_peers(self.node_id), self._on_directory, qos=1)
        self._task = asyncio.get_running_loop().create_task(self._report_loop())

    async def _start_overlay(self) -> None:
        from dataplane.overlay import Overlay, is_node

        # other nodes are dialled and kept alive; members a coordinator runs (the S3 gateway, `s3@<id>`) only when
        # used: a storage node's link to it is kept by the gateway's side, a workload's opens with its first request
        overlay = Overlay(self._credential(), clock=self.clock, local_addresses=self.local_addresses,
                          eager=is_node)
        await overlay.start(self.settings.host, self.settings.port)
        for name, handler in self._services.items():
            overlay.serve(name, handler)
        self.overlay = overlay

    def serve(self, service: str, handler: ServiceHandler) -> None:
        """Serve `service` to peers now (when the overlay runs) and every time the overlay starts again: the handler
        and what it serves (the chunk store) outlive any one overlay."""
        self._services[service] = handler
        if self.overlay is not None:
            self.overlay.serve(service, handler)

    def _credential(self) -> NodeCredential:
        from dataplane.quic import NodeCredential

        ident = self._identity()
        assert ident is not None
        return NodeCredential.from_files(self.node_id, cert=ident.cert, key=ident.key, ca=ident.ca)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.overlay is not None:
            await self.overlay.stop()
            self.overlay = None

    def reload_credential(self) -> None:
        """The node certificate was renewed: new connections present the new one (see the module docstring)."""
        if self.overlay is None:
            return
        try:
            self.overlay.set_credential(self._credential())
            log.info("overlay: renewed certificate loaded for new connections")
        except (OSError, ValueError) as exc:
            log.error("overlay: renewed certificate not loaded: %s (new connections keep the old one)", exc)

    # ---- the directory in --------------------------------------------------------------------------------

    def _on_directory(self, message: Message) -> None:
        try:
            incoming = wire.decode_node_message(message.topic, message.payload)
            if not isinstance(incoming, PeerDirectory):
                raise WireError(f"expected a peer directory, got {type(incoming).__name__}")
        except WireError as exc:
            log.warning("overlay: ignored a message on %s: %s", message.topic, exc)
            return
        why = consider_directory(self.directory, max(self.max_epoch, self._agent_epoch()), incoming)
        if why is not None:
            log.info("overlay: peer directory generation %d not applied: %s", incoming.generation, why)
            return
        if self.overlay is None:  # stopped (or never started) while the message was on its way
            return
        self.directory, self.max_epoch = incoming, max(self.max_epoch, incoming.epoch)
        log.info("overlay: peer directory generation %d (epoch %d): %d relays, %d peers, %d revoked",
                 incoming.generation, incoming.epoch, len(incoming.relays), len(incoming.peers), len(incoming.revoked))
        self.overlay.apply(incoming.relays, incoming.peers, incoming.revoked)

    # ---- the report out ----------------------------------------------------------------------------------

    async def _on_connected(self) -> None:
        if self.overlay is None:
            self._publish(OverlayReport(node_id=self.node_id, ts=self.clock(), enabled=False,
                                        disabled=self.disabled[:512]))
        else:
            self._dirty.set()

    async def _report_loop(self) -> None:
        assert self.overlay is not None
        changed = self.overlay.changed
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.refresh_s):
                    await _first(changed, self._dirty)
            if changed.is_set():
                await asyncio.sleep(DEBOUNCE_S)  # paths settle in bursts: one report for the burst
            self._dirty.clear()
            try:
                self._publish(self.overlay.report(self.clock()))
            except Exception:  # a report that does not encode is our bug: logged, the loop goes on
                log.exception("overlay: report not published")

    def _publish(self, report: OverlayReport) -> None:
        spec = topics.NODE_CHANNELS[topics.Channel.OVERLAY]
        try:
            self.mqtt.publish_nowait(topics.node_overlay(self.node_id), wire.encode(report), qos=spec.qos,
                                     retain=spec.retain)
            self.published = report
        except MqttError as exc:
            log.warning("overlay: report not queued: %s", exc)

    # ---- overlay-ping ------------------------------------------------------------------------------------

    async def answer_ping(self, args: dict[str, str], *, seconds: float) -> tuple[bytes, str]:
        """(output, error) for an overlay-ping command that may take `seconds`: the result's JSON, or an error."""
        parsed = ping_args(args)
        if isinstance(parsed, str):
            return b"", parsed
        if self.overlay is None:
            return b"", f"the overlay is not running on this node: {self.disabled or 'not started'}"
        peer, count = parsed
        result = await self.overlay.ping(peer, count, timeout_s=max(0.5, seconds))
        return ping_output(result), ""


async def _first(*events: asyncio.Event) -> None:
    """Wait until any of `events` is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()

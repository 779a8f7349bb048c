"""UDP services (adapter): per-client flows from a listener to one endpoint, over the overlay's datagrams between
nodes (dataplane.service_plan has the format).

A flow is (listener, client address): its first datagram picks an endpoint (dataplane.balance; UDP gives no connect
failure to retry on, so only an endpoint that cannot be addressed at all is skipped) and every later datagram of
the flow goes to the same one, so a client's request/answer exchanges stay together. On this node a flow has its
own connected UDP socket to the replica; to another node its datagrams travel as overlay datagrams tagged with the
flow id and the serving node keeps its own (peer, flow id) -> socket mapping. A flow with no datagram either way
for `idle_s` is forgotten on both sides (conntrack's UDP timeout works the same way). Overlay datagrams are at most
MAX_DATAGRAM bytes with our header; a larger payload is dropped and counted, like an oversized UDP packet.

Every flow holds a socket (on the node of its replica) until it idles out, so flows are bounded: at most `max_flows`
on this node (client and served together) and `max_per_source` per source — a client listener (a workload spraying
source ports) or a peer node (spraying flow ids). A datagram that would open one more is dropped and counted
(`udp_refused`, `udp_dropped`), as a full conntrack table drops new flows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from typing import Protocol as Role

from broker.wire import Protocol, ServiceRecord
from dataplane.balance import Choice, choose
from dataplane.frames import MAX_APP_DATAGRAM as MAX_DATAGRAM
from dataplane.service_plan import (
    DATAGRAM_SERVICE,
    UDP_REPLY,
    Counters,
    ServiceKey,
    Target,
    View,
    admit,
    decode_udp,
    udp_reply,
    udp_request,
)

if TYPE_CHECKING:  # the overlay needs aioquic; a node without it still serves same-node services
    from dataplane.overlay import Overlay

log = logging.getLogger(__name__)

MAX_PENDING = 16  # datagrams held while a flow's socket opens
MAX_FLOWS = 1024  # flows on this node, client and served together
MAX_FLOWS_PER_SOURCE = 256  # flows per client listener and per peer node
Address = tuple[str, int]


class Host(Role):
    """What the flows need from the proxy that owns them."""

    overlay: Overlay | None
    node_id: str
    view: View
    rng: random.Random
    clock: Callable[[], float]

    def local_endpoint(self, replica: str, port: int, protocol: Protocol) -> Address | None: ...

    def counters(self, key: ServiceKey) -> Counters: ...


class _Socket(asyncio.DatagramProtocol):
    """A UDP socket that hands what it receives to a callback."""

    def __init__(self, received: Callable[[bytes, Address], None]) -> None:
        self.received = received
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.received(data, addr)

    def send(self, data: bytes, addr: Address | None = None) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, addr)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@dataclass
class _Flow:
    """One flow's way to its endpoint: a socket to a local replica, or (node, target) over the overlay."""

    counters: Counters
    last: float
    node: str = ""
    target: Target | None = None
    local: _Socket | None = None
    pending: list[bytes] = field(default_factory=list)
    reply: Callable[[bytes], None] = lambda _data: None
    closed: bool = False

    def close(self) -> None:
        self.closed = True
        if self.local is not None:
            self.local.close()


class UdpFlows:
    def __init__(self, host: Host, *, idle_s: float, max_flows: int = MAX_FLOWS,
                 max_per_source: int = MAX_FLOWS_PER_SOURCE) -> None:
        self.host = host
        self.idle_s = idle_s
        self.max_flows = max_flows
        self.max_per_source = max_per_source
        self._client: dict[tuple[int, Address], tuple[int, _Flow]] = {}  # (listener, client) -> (flow id, flow)
        self._by_id: dict[int, _Flow] = {}
        self._served: dict[tuple[str, int], _Flow] = {}  # (peer, flow id) -> flow to a replica here
        self._per_listener: dict[int, int] = {}  # client flows per listener
        self._per_peer: dict[str, int] = {}  # served flows per peer node
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._sweep())

    async def stop(self) -> None:
        for task in [t for t in (self._task, *self._tasks) if t is not None]:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        for flow in [*self._by_id.values(), *self._served.values()]:
            flow.close()
        self._client.clear()
        self._by_id.clear()
        self._served.clear()
        self._per_listener.clear()
        self._per_peer.clear()

    def active(self) -> int:
        return len(self._by_id) + len(self._served)

    async def listen(self, sock: socket.socket, route: tuple[ServiceKey, int]) -> Callable[[], None]:
        """Serve a bound UDP socket as the listener of `route`; returns its close."""
        front = _Socket(lambda data, addr: self._from_client(front, route, data, addr))
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: front, sock=sock)

        def close() -> None:
            front.close()
            for key in [k for k in self._client if k[0] == id(front)]:
                self._forget_client(key)

        return close

    # ---- client side ---------------------------------------------------------------------------------------

    def _from_client(self, front: _Socket, route: tuple[ServiceKey, int], data: bytes, addr: Address) -> None:
        counters = self.host.counters(route[0])
        entry = self._client.get((id(front), addr))
        if entry is None:
            if not self._room(self._per_listener.get(id(front), 0)):
                counters.udp_refused += 1
                counters.udp_dropped += 1
                return
            entry = self._open(front, route, addr, counters)
            if entry is None:
                counters.udp_dropped += 1
                return
        flow_id, flow = entry
        flow.last = self.host.clock()
        counters.bytes_out += len(data)
        self._send(flow, flow_id, data)

    def _open(self, front: _Socket, route: tuple[ServiceKey, int], addr: Address,
              counters: Counters) -> tuple[int, _Flow] | None:
        record = self.host.view.services.get(route[0])
        spec = next((p for p in record.ports if p.port == route[1] and p.protocol == Protocol.UDP), None) \
            if record is not None else None
        if record is None or spec is None:
            return None
        choice = self._choose(record, spec.target_port)
        if choice is None:
            counters.no_endpoint += 1
            return None
        flow_id = self.host.rng.getrandbits(64)
        target = Target(record.namespace, record.name, choice.endpoint.replica, spec.target_port)

        def reply(data: bytes) -> None:
            flow.last = self.host.clock()
            counters.bytes_in += len(data)
            front.send(data, addr)

        flow = _Flow(counters, self.host.clock(), node=choice.endpoint.node, target=target, reply=reply)
        if choice.endpoint.node == self.host.node_id:
            self._open_local(flow, target)
        counters.udp_flows += 1
        counters.connections[choice.tier.value] += 1
        self._client[(id(front), addr)] = (flow_id, flow)
        self._by_id[flow_id] = flow
        self._per_listener[id(front)] = self._per_listener.get(id(front), 0) + 1
        return flow_id, flow

    def _room(self, from_source: int) -> bool:
        """Another flow fits: under the node's limit and its source's."""
        return self.active() < self.max_flows and from_source < self.max_per_source

    def _forget_client(self, key: tuple[int, Address]) -> None:
        flow_id, flow = self._client.pop(key)
        self._by_id.pop(flow_id, None)
        flow.close()
        left = self._per_listener.get(key[0], 0) - 1
        if left > 0:
            self._per_listener[key[0]] = left
        else:
            self._per_listener.pop(key[0], None)

    def _forget_served(self, key: tuple[str, int]) -> None:
        self._served.pop(key).close()
        left = self._per_peer.get(key[0], 0) - 1
        if left > 0:
            self._per_peer[key[0]] = left
        else:
            self._per_peer.pop(key[0], None)

    def _choose(self, record: ServiceRecord, target_port: int) -> Choice | None:
        exclude: set[tuple[str, str]] = set()
        while True:
            choice = choose(record.endpoints, node=self.host.node_id, zone=self.host.view.zone, rng=self.host.rng,
                            exclude=exclude)
            if not isinstance(choice, Choice):
                return None
            local = choice.endpoint.node == self.host.node_id
            if (local and self.host.local_endpoint(choice.endpoint.replica, target_port, Protocol.UDP) is not None) or \
                    (not local and self.host.overlay is not None):
                return choice
            exclude.add(choice.key)

    def _send(self, flow: _Flow, flow_id: int, data: bytes) -> None:
        if flow.node == self.host.node_id:
            if flow.local is not None and flow.local.transport is not None:
                flow.local.send(data)
            elif len(flow.pending) < MAX_PENDING:
                flow.pending.append(data)
            else:
                flow.counters.udp_dropped += 1
            return
        assert flow.target is not None
        packet = udp_request(flow_id, flow.target, data)
        if self.host.overlay is None or len(packet) > MAX_DATAGRAM \
                or not self.host.overlay.send_datagram(flow.node, DATAGRAM_SERVICE, packet):
            flow.counters.udp_dropped += 1

    def _open_local(self, flow: _Flow, target: Target) -> None:
        address = self.host.local_endpoint(target.replica, target.target_port, Protocol.UDP)
        if address is None:
            flow.closed = True
            return
        sock = _Socket(lambda data, _addr: flow.reply(data))
        flow.local = sock

        async def connect() -> None:
            try:
                await asyncio.get_running_loop().create_datagram_endpoint(lambda: sock, remote_addr=address)
            except OSError as exc:
                log.info("services: UDP to %s:%d failed: %s", *address, exc)
                flow.counters.connect_failures += 1
                return
            if flow.closed:
                sock.close()
                return
            for data in flow.pending:
                sock.send(data)
            flow.pending.clear()

        task = asyncio.get_running_loop().create_task(connect())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- overlay datagrams (both sides) --------------------------------------------------------------------

    def on_datagram(self, node_id: str, payload: bytes) -> None:
        datagram = decode_udp(payload)
        if isinstance(datagram, str):
            log.debug("services: a bad datagram from %s: %s", node_id, datagram)
            return
        if datagram.kind == UDP_REPLY:
            flow = self._by_id.get(datagram.flow)
            if flow is not None and flow.node == node_id:
                flow.reply(datagram.payload)
            return
        target = datagram.target
        assert target is not None
        flow = self._served.get((node_id, datagram.flow))
        if flow is None:
            problem = admit(self.host.view, target, self.host.node_id, Protocol.UDP)
            if problem is not None:
                log.debug("services: refused a UDP flow from %s: %s", node_id, problem)
                return
            if not self._room(self._per_peer.get(node_id, 0)):
                counters = self.host.counters((target.namespace, target.service))
                counters.udp_refused += 1
                counters.udp_dropped += 1
                return
            flow = self._serve_flow(node_id, datagram.flow, target)
        flow.last = self.host.clock()
        flow.counters.bytes_out += len(datagram.payload)
        self._send(flow, datagram.flow, datagram.payload)

    def _serve_flow(self, node_id: str, flow_id: int, target: Target) -> _Flow:
        counters = self.host.counters((target.namespace, target.service))
        counters.served += 1

        def reply(data: bytes) -> None:
            flow.last = self.host.clock()
            counters.bytes_in += len(data)
            packet = udp_reply(flow_id, data)
            if self.host.overlay is None or len(packet) > MAX_DATAGRAM \
                    or not self.host.overlay.send_datagram(node_id, DATAGRAM_SERVICE, packet):
                counters.udp_dropped += 1

        flow = _Flow(counters, self.host.clock(), node=self.host.node_id, target=target, reply=reply)
        self._open_local(flow, target)
        self._served[(node_id, flow_id)] = flow
        self._per_peer[node_id] = self._per_peer.get(node_id, 0) + 1
        return flow

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(max(self.idle_s / 4, 0.05))
            cutoff = self.host.clock() - self.idle_s
            for key, (_flow_id, flow) in list(self._client.items()):
                if flow.last < cutoff or flow.closed:
                    self._forget_client(key)
            for served_key, flow in list(self._served.items()):
                if flow.last < cutoff or flow.closed:
                    self._forget_served(served_key)

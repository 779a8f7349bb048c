"""The S3 gateway as an overlay member (adapter): its own CA-issued identity `s3@<coordinator id>`, its own QUIC
endpoint, and its peer directory fed in-process from the coordinator's `OverlayBook` instead of over MQTT.

- **Identity.** A node-role certificate (agents take only node certificates on the overlay) for `s3@<id>`, issued
  by the cluster CA into the coordinator's pki dir like the coordinator's own certificates (`issue_local`), and
  issued again when missing or due (`local_cert_due`, checked at every sync). `@` is not a valid node id, so no
  device can enrol under the gateway's name.
- **Pairs.** Every sync wants a pair between the gateway and each storage node (`book.want(..., until=now +
  PAIR_TTL_S)`: kept in memory like a probe's pair, refreshed while the node stores chunks, gone a while after it
  stops). The coordinator publishes the storage nodes' directories (with the gateway's candidates) as for any pair.
- **Directory and report.** `book.directory(gateway)` is applied to the gateway's Overlay when it changed (when
  it is full — MAX_PEERS_PER_NODE, the wire's cap, reached now that every node running workloads is paired with the
  gateway for `s3.cloudless` — it is built again with the storage nodes first: a big fleet's workload pairs never
  crowd out the nodes holding the chunks); the
  gateway's own `report()` goes into `book.on_report` (and a changed one wakes the coordinator so the nodes'
  directories go out at once). The gateway is not a cluster member: it registers in `book.local` (present, and no
  PeerDirectory is published for it: it has no node topics).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coordinator.overlay import OverlayBook
from coordinator.pki import CertRole

if TYPE_CHECKING:
    from coordinator.identity import IdentityService
    from dataplane.overlay import Overlay
    from dataplane.quic import NodeCredential

log = logging.getLogger(__name__)

PAIR_TTL_S = 600.0
RENEW_CHECK_S = 3600.0
WHY = "object storage (S3 gateway)"


def gateway_identity(coordinator_id: str) -> str:
    return f"s3@{coordinator_id}"


def ensure_credential(identity_service: IdentityService, coordinator_id: str) -> tuple[NodeCredential, bool]:
    """The gateway's overlay credential from the pki dir, issued (again) when missing or due. (credential, issued)."""
    from dataplane.quic import NodeCredential

    name = gateway_identity(coordinator_id)
    pki: Path = identity_service.dir
    cert, key = pki / f"{name}.pem", pki / f"{name}.key"
    issued = identity_service.local_cert_due(cert, key)
    if issued:
        identity_service.issue_local(name, CertRole.NODE, key, cert)
    return NodeCredential.from_files(name, cert=cert, key=key, ca=pki / "ca.pem"), issued


class GatewayOverlay:
    """The gateway's overlay and its bookkeeping in the coordinator's OverlayBook. `await start()`, then `sync(now,
    storage nodes)` every few seconds; `await stop()`."""

    def __init__(self, *, book: OverlayBook, wake: Callable[[], None], credential: Callable[[], NodeCredential],
                 clock: Callable[[], float], local_addresses: Callable[[], list[str]],
                 renew: Callable[[], None] = lambda: None, host: str = "0.0.0.0", port: int = 0) -> None:
        """`credential()` is the current one; `renew()` (called hourly) may replace what it returns."""
        self.book, self._wake, self._credential, self.clock = book, wake, credential, clock
        self._renew, self._next_renew = renew, 0.0
        self.local_addresses, self.host, self.port = local_addresses, host, port
        self.overlay: Overlay | None = None
        self._applied: Any = None
        self._paired: set[str] = set()
        self._storage: set[str] = set()  # the storage nodes of the last sync: the peers this overlay keeps links to

    @property
    def identity(self) -> str:
        return self._credential().identity

    async def start(self) -> Overlay:
        from dataplane.overlay import Overlay

        # storage nodes are dialled and kept alive (repair and reads need them at any time); the nodes paired only for
        # s3.cloudless connect when a workload uses it, and their links idle out after (no keep-alive traffic to a
        # metered device for a service it may never use)
        overlay = Overlay(self._credential(), clock=self.clock, local_addresses=self.local_addresses,
                          eager=lambda peer: peer in self._storage)
        await overlay.start(self.host, self.port)
        self.overlay = overlay
        self.book.local.add(self.identity)  # present, and no PeerDirectory published for it (it reads its own)
        return overlay

    async def stop(self) -> None:
        me = self.identity
        for node in sorted(self._paired):
            self.book.unwant(me, node)
        self._paired.clear()
        self.book.reports.pop(me, None)
        self.book.local.discard(me)
        if self.overlay is not None:
            await self.overlay.stop()
            self.overlay = None
        self._wake()

    def sync(self, now: float, storage: Iterable[str]) -> bool:
        """Want a pair with every storage node, apply the gateway's directory if it changed, and put its report into
        the book. True when the coordinator was woken (the nodes' directories must change)."""
        if self.overlay is None:
            return False
        if now >= self._next_renew:
            self._next_renew = now + RENEW_CHECK_S
            before = self._credential()
            self._renew()
            if self._credential() is not before:  # issued again: new connections present the new one
                self.overlay.set_credential(self._credential())
        me, wanted = self.identity, set(storage) - {self.identity}
        self._storage = wanted
        changed = False
        for node in sorted(wanted):
            changed |= self.book.want(me, node, until=now + PAIR_TTL_S, why=WHY)
        self._paired = (self._paired | wanted) & {n for n in self.book.peers_of(me)}
        _events, moved = self.book.on_report(self.overlay.report(now))  # first: the book knows the gateway is on
        directory = self.book.directory(me, first=wanted)  # storage nodes kept first in a full one
        if directory != self._applied:
            self.overlay.apply(*directory)
            self._applied = directory
        if changed or moved:
            self._wake()
        return changed or moved

"""The S3 gateway a coordinator runs (issue 20): the composition of the object store's parts of both sides.

    ObjectBackend(StoreMetadata(store, EnvelopeSealer), OverlayChunkClient(gateway overlay), storage nodes)
      served by dataplane.s3.http.s3_app over HTTPS (the coordinator's server certificate) on --s3-port

Public surface (what `coordinator/cli.py`, the REST API (`StorageAdmin`), `cloudless storage` and the lab use):

- `attach(parts) -> Gateway`: build and start one for a running coordinator (`coordinator.cli.StorageParts`).
- `Gateway.url`, `.port`: where S3 is served. `.metadata`: the StoreMetadata (seals access-key secrets).
  `.backend`: the ObjectBackend.
- `Gateway.status() -> dict` (JSON, camelCase): `nodes` [{node, zone, quotaBytes, usedBytes, chunks, online, state,
  reliability}], `chunks` (referenced), `underReplicated`, `unrecoverable`, `deferred`, `leader` (this gateway runs
  repair/GC), `repair` {copied, copiedBytes, deleted, failed (totals since start), rateBytesPerS (last pass),
  budgetBytesPerS, lastRun (epoch seconds or None), lastCopied, lastCopiedBytes}, `gc` {lastRun, collected,
  orphansSettled},
  `scrub` {reported (corrupt copies reported by agents and forgotten)}, `compression` {writtenBytes, storedBytes,
  savedBytes, chunksCompressed, chunksRaw: chunks this gateway wrote to compressing buckets since it started},
  `endpoint`, `identity`.
- `await Gateway.keys_changed()`: reload the keyring now (after a key was created or deleted).
- `await Gateway.create_bucket(name, now, replicas=, erasure=, compression=)`: a bucket with its R or an erasure code
  ("4+2"), optionally compressing its chunks (`compression="zstd"`).
- `await Gateway.repair_now()` / `collect_garbage_now()` / `sweep_orphans_now()`: one pass now (tests, the lab).
- `await Gateway.stop()`.
- `Gateway.endpoint`: S3 for workloads, `s3.cloudless` over the overlay (cloudless.gateway_endpoint), the same app.

Background (one task, `tick_s` apart, sooner when a node is declared lost):
- overlay: pairs with every storage node, the gateway's directory and report (cloudless.gateway_overlay);
- scrub reports: chunk ids an agent's status lists as corrupt are forgotten as that node's copies, so repair
  replaces them from a good copy;
- keyring: rebuilt from `list_keys()` every `keys_poll_s` and on `keys_changed()`; an unknown access key asks for a
  reload (at most once a second), so a key made through another coordinator works after a retry;
- repair: `Repairer.repair_once(now, budget=rate x elapsed)` (rate-limited, resumable: the plan is derived from the
  state each pass), run at once when the set of lost nodes grows, every tick while there is work or the storage
  nodes changed, else every `idle_every_s` (a pass reads every manifest: not every 5 s for nothing); GC every
  `gc_every_s`; copies noted as possibly orphaned (a failed delete or write) swept every `orphan_sweep_s`. Only the
  leading coordinator repairs and collects; every coordinator serves S3 (object metadata commits use an unfenced store
  handle: the store's own transactions are linearizable, the fence protects the scheduler).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cloudless.gateway_nodes import ScrubLedger, lost_nodes, storage_nodes, storage_rows
from dataplane.objects.access import Keyring
from dataplane.objects.model import StorageNode
from dataplane.objects.repairer import Repairer, RepairReport, sweep_orphans

if TYPE_CHECKING:
    import ssl

    from aiohttp import web

    from cloudless.gateway_endpoint import WorkloadEndpoint
    from cloudless.gateway_overlay import GatewayOverlay
    from coordinator.cli import StorageParts
    from coordinator.membership import NodeInfo
    from coordinator.metrics import StorageMetrics
    from dataplane.objects.ports import ChunkClient, Metadata
    from dataplane.objects.store import ObjectBackend
    from dataplane.s3.errors import S3Error
    from dataplane.s3.routing import Operation

log = logging.getLogger(__name__)

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    host: str = "0.0.0.0"
    port: int = 9000  # 0: a free port (tests)
    region: str = "us-east-1"
    tick_s: float = 5.0  # overlay sync, scrub reports, repair
    repair_rate: int = 32 * MiB  # bytes per second repair may copy
    gc_every_s: float = 3600.0
    keys_poll_s: float = 10.0
    orphan_sweep_s: float = 300.0
    status_every_s: float = 30.0  # a follower plans (without acting) this often, for status()
    idle_every_s: float = 60.0  # nothing new (no node lost, back or corrupt; last pass idle): a pass this often


@dataclass
class _Totals:
    copied: int = 0
    copied_bytes: int = 0
    deleted: int = 0
    failed: int = 0
    scrub_reported: int = 0
    last_repair: float | None = None
    last_rate: float = 0.0
    last_copied: int = 0
    last_copied_bytes: int = 0
    last_gc: float | None = None
    collected: int = 0
    orphans: int = 0
    chunks: int | None = None
    under_replicated: int | None = None
    unrecoverable: int | None = None
    deferred: int | None = None
    planned_at: float = 0.0


@dataclass
class Gateway:
    """See the module docstring. Built by `attach` (or by tests with fakes for the overlay and the membership)."""

    config: GatewayConfig
    metadata: Metadata  # coordinator.objects.StoreMetadata in a coordinator (it seals access-key secrets)
    backend: ObjectBackend
    client: ChunkClient
    members: Callable[[], Mapping[str, NodeInfo]]
    leading: Callable[[], bool]
    overlay: GatewayOverlay | None = None
    endpoint: WorkloadEndpoint | None = None  # S3 for workloads over the overlay (needs `overlay`)
    ssl_context: ssl.SSLContext | None = None
    metrics: StorageMetrics | None = None
    clock: Callable[[], float] = time.time
    keyring: Keyring = field(default_factory=lambda: Keyring(()))
    port: int = 0
    _totals: _Totals = field(default_factory=_Totals)
    _scrub: ScrubLedger = field(default_factory=ScrubLedger)
    _runner: web.AppRunner | None = None
    _task: asyncio.Task[None] | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _keys_wanted: bool = False
    _keys_asked: float = 0.0
    _lost: frozenset[str] = frozenset()
    _shape: frozenset[tuple[str, bool]] = frozenset()  # the storage nodes and whether each is online
    _busy: bool = True  # the last pass found work: the next tick runs one again

    # ---- lifecycle ---------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.config.host in ("0.0.0.0", "", "::") else self.config.host
        return f"{'https' if self.ssl_context else 'http'}://{host}:{self.port}"

    def nodes(self) -> list[StorageNode]:
        return storage_nodes(self.members(), self.clock())

    async def start(self) -> None:
        from dataplane.s3.http import S3Config, s3_app

        await self.keys_changed()
        app = s3_app(self.backend, self._secret, S3Config(region=self.config.region, clock=self.clock,
                                                         authorize=self._authorize))
        if self.metrics is not None:
            app.middlewares.append(_timing(self.metrics))
        self._runner = await _serve(app, self.config.host, self.config.port, self.ssl_context)
        self.port = _bound_port(self._runner)
        if self.endpoint is not None and self.overlay is not None and self.overlay.overlay is not None:
            await self.endpoint.start(self._runner, self.overlay.overlay)
        self._task = asyncio.get_running_loop().create_task(self._loop())
        log.info("S3 gateway on %s", self.url)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.endpoint is not None:
            await self.endpoint.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.overlay is not None:
            await self.overlay.stop()

    # ---- access keys -------------------------------------------------------------------------------------

    def _secret(self, access_key: str) -> str | None:
        secret = self.keyring.secret(access_key)
        if secret is None and self.clock() - self._keys_asked >= 1.0:
            self._keys_asked, self._keys_wanted = self.clock(), True  # made elsewhere? reload; the client retries
            self._wake.set()
        return secret

    async def create_bucket(self, name: str, now: float, *, replicas: int, erasure: str | None,
                            compression: str | None = None) -> S3Error | None:
        """For REST (`POST /v1/storage/buckets`): a bucket with R = `replicas`, or erasure coded (`erasure` "4+2"),
        its chunks compressed when `compression` is "zstd" (the backend refuses other values, naming
        `compression`)."""
        from dataplane.objects.erasure import parse_code
        from dataplane.s3.errors import ErrorCode, S3Error

        code = None
        if erasure is not None:
            parsed = parse_code(erasure)
            if isinstance(parsed, str):
                return S3Error(ErrorCode.INVALID_ARGUMENT, parsed)
            code = parsed
        return await self.backend.create_bucket(name, now, replicas, code, compression=compression)

    def _authorize(self, access_key: str, operation: Operation, bucket: str) -> bool:
        return self.keyring.authorize(access_key, operation, bucket)  # the keyring of the moment

    async def keys_changed(self) -> None:
        self.keyring = Keyring(await self.metadata.list_keys())

    # ---- maintenance -------------------------------------------------------------------------------------

    def _repairer(self) -> Repairer:
        return Repairer(self.metadata, self.client, self.nodes)

    async def repair_now(self, *, budget: int | None = None) -> RepairReport:
        """One repair pass now (no budget: everything the plan holds)."""
        started = self.clock()
        report = await self._repairer().repair_once(started, budget=budget)
        t, st = self._totals, report.stripes
        copied = report.copied + (st.rebuilt if st else 0)
        copied_bytes = report.copied_bytes + (st.rebuilt_bytes if st else 0)
        t.copied, t.copied_bytes = t.copied + copied, t.copied_bytes + copied_bytes
        t.deleted = t.deleted + report.deleted + (st.deleted if st else 0)
        t.failed = t.failed + report.failed + (st.failed if st else 0)
        t.last_repair, t.last_copied, t.last_copied_bytes = started, copied, copied_bytes
        t.last_rate = copied_bytes / max(self.clock() - started, 1e-3)
        self._planned(report.plan, report.chunks, started)
        if st is not None:  # erasure-coded chunks: a degraded stripe is under-replicated, below k unrecoverable
            t.under_replicated = (t.under_replicated or 0) + st.plan.degraded
            t.unrecoverable = (t.unrecoverable or 0) + len(st.plan.unrecoverable)
        if report.copied or report.deleted or report.failed:
            log.info("repair: %d copies (%d bytes), %d deletes, %d failed; %d under-replicated, %d unrecoverable, "
                     "%d deferred", report.copied, report.copied_bytes, report.deleted, report.failed,
                     report.plan.under_replicated, len(report.plan.unrecoverable), len(report.plan.deferred))
        return report

    def _planned(self, plan: Any, chunks: int, now: float) -> None:
        t = self._totals
        t.chunks, t.under_replicated = chunks, plan.under_replicated
        t.unrecoverable, t.deferred, t.planned_at = len(plan.unrecoverable), len(plan.deferred), now

    async def collect_garbage_now(self) -> list[str]:
        collected = await self.backend.collect_garbage(self.clock())
        self._totals.last_gc, self._totals.collected = self.clock(), self._totals.collected + len(collected)
        if collected:
            log.info("garbage collection: %d unreferenced chunk(s) dropped", len(collected))
        return collected

    async def sweep_orphans_now(self) -> int:
        """Delete noted copies no record lists (repairer.sweep_orphans); how many notes were settled."""
        settled = await sweep_orphans(self.metadata, self.client, self.nodes, self.clock())
        self._totals.orphans += settled
        return settled

    async def take_scrub_reports(self) -> int:
        """Forget the copies agents reported corrupt (new reports only); how many. A follower only keeps its ledger
        current (it writes no metadata; the leader acts on the reports), so once it leads it does not take the
        reports agents still republish for news (review 4, L3)."""
        news = self._scrub.news(self.members())
        if not self.leading():
            return len(news)
        for node, cid in news:
            record = (await self.metadata.get_chunks([cid])).get(cid)
            if record is not None and node in record.holders:
                log.warning("scrub: %s found its copy of chunk %s corrupt: forgotten, repair replaces it", node,
                            cid[:12])
                await self.metadata.update_chunk(cid, record.size, remove=[node])
                self._totals.scrub_reported += 1
        return len(news)

    async def _loop(self) -> None:
        cfg = self.config
        next_repair = next_gc = next_keys = next_sweep = next_full = 0.0
        last_repair = self.clock()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(1.0, cfg.tick_s)):
                    await self._wake.wait()
            self._wake.clear()
            now = self.clock()
            try:
                if now >= next_keys or self._keys_wanted:
                    self._keys_wanted = False
                    await self.keys_changed()
                    next_keys = now + cfg.keys_poll_s
                lost = lost_nodes(self.members())
                newly_lost, self._lost = lost - self._lost, lost
                if now < next_repair and not newly_lost:
                    continue
                next_repair = now + cfg.tick_s
                nodes = self.nodes()
                if self.overlay is not None:
                    self.overlay.sync(now, [n.node_id for n in nodes if n.quota > 0 and n.online])
                shape = frozenset((n.node_id, n.online) for n in nodes)
                news = await self.take_scrub_reports() > 0 or shape != self._shape or bool(newly_lost)
                self._shape = shape
                if not (news or self._busy or now >= next_full):
                    continue  # nothing moved and the last pass found nothing to do: no full scan every tick
                next_full = now + cfg.idle_every_s
                if not self.leading():
                    if now - self._totals.planned_at >= cfg.status_every_s:
                        plan, chunks = await self._repairer().plan(now, budget=0)
                        self._planned(plan, chunks, now)
                    continue
                budget = int(cfg.repair_rate * min(max(now - last_repair, cfg.tick_s), 4 * cfg.tick_s))
                last_repair = now
                report = await self.repair_now(budget=budget)
                plan = report.plan
                self._busy = bool(plan.copies or plan.deletes or plan.deferred or plan.under_replicated
                                  or (report.stripes is not None and not report.stripes.plan.empty))
                if now >= next_gc:
                    next_gc = now + cfg.gc_every_s
                    await self.collect_garbage_now()
                if now >= next_sweep:
                    next_sweep = now + cfg.orphan_sweep_s
                    await self.sweep_orphans_now()
            except asyncio.CancelledError:
                raise
            except Exception:  # a store or overlay hiccup: logged, the next tick tries again
                log.exception("S3 gateway maintenance failed; retrying")

    # ---- status ------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        t, members = self._totals, self.members()
        return {
            "endpoint": self.url, "identity": self.overlay.identity if self.overlay is not None else None,
            "leader": self.leading(), "nodes": storage_rows(members, self.nodes()),
            "chunks": t.chunks, "underReplicated": t.under_replicated, "unrecoverable": t.unrecoverable,
            "deferred": t.deferred,
            "repair": {"copied": t.copied, "copiedBytes": t.copied_bytes, "deleted": t.deleted, "failed": t.failed,
                       "rateBytesPerS": round(t.last_rate, 1), "budgetBytesPerS": self.config.repair_rate,
                       "lastRun": t.last_repair, "lastCopied": t.last_copied,
                       "lastCopiedBytes": t.last_copied_bytes},
            "gc": {"lastRun": t.last_gc, "collected": t.collected, "orphansSettled": t.orphans},
            "scrub": {"reported": t.scrub_reported},
            "compression": self.backend.compression_stats(),
        }


def _timing(metrics: StorageMetrics) -> Any:
    """An aiohttp middleware that observes each S3 request's latency under its operation's name."""
    from aiohttp import web

    from dataplane.s3 import routing, sigv4

    @web.middleware
    async def timed(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        started = time.perf_counter()
        raw_path, _, raw_query = request.raw_path.partition("?")
        route = routing.route(request.method, raw_path, dict(sigv4.query_pairs(raw_query)), host=request.host,
                              copy_source="x-amz-copy-source" in request.headers)
        operation = "invalid" if not isinstance(route, routing.Route) else route.operation.value
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        finally:
            metrics.request(operation, status, time.perf_counter() - started)

    return timed


async def _serve(app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext | None) -> web.AppRunner:
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=ssl_context, reuse_address=True).start()
    return runner


def _bound_port(runner: web.AppRunner) -> int:
    for site in runner.sites:
        server = getattr(site, "_server", None)
        for sock in getattr(server, "sockets", None) or ():
            return int(sock.getsockname()[1])
    raise RuntimeError("the S3 listener has no socket")


# ---- composition in a coordinator process --------------------------------------------------------------------

async def attach(parts: StorageParts) -> Gateway:
    """Build and start the gateway of a running coordinator (the hook `cloudless coordinator --s3-port` calls)."""
    from cloudless.gateway_endpoint import WorkloadEndpoint
    from cloudless.gateway_overlay import GatewayOverlay, ensure_credential
    from coordinator.objects import EnvelopeSealer, StoreMetadata
    from dataplane.objects.peer import OverlayChunkClient
    from dataplane.objects.store import ObjectBackend
    from dataplane.objects.throttle import NodeLimited
    from edge_agent.overlay import interface_addresses

    coord, coord_id = parts.coordinator, parts.coordinator.cfg.coordinator_id
    credential = [ensure_credential(parts.identity, coord_id)[0]]

    def renew() -> None:
        fresh, issued = ensure_credential(parts.identity, coord_id)
        if issued:
            credential[0] = fresh
            log.warning("renewed the S3 gateway's overlay certificate (%s)", fresh.identity)

    gateway_overlay = GatewayOverlay(book=coord.overlay, wake=coord.wake, credential=lambda: credential[0],
                                     renew=renew, clock=time.time, local_addresses=interface_addresses)
    overlay = await gateway_overlay.start()
    client = NodeLimited(OverlayChunkClient(overlay))  # within what a node's chunk server takes from one peer
    metadata = StoreMetadata(parts.store, EnvelopeSealer(lambda: parts.secrets.keyring))

    def members() -> Mapping[str, NodeInfo]:
        return coord.cluster.members

    backend = ObjectBackend(metadata, client, lambda: storage_nodes(members(), time.time()))
    gateway = Gateway(GatewayConfig(host=parts.host, port=parts.port), metadata, backend, client, members,
                      leading=lambda: bool(coord.acting), overlay=gateway_overlay, ssl_context=parts.ssl_context,
                      endpoint=WorkloadEndpoint(registry=coord.services, member=gateway_overlay.identity,
                                                wake=coord.wake))
    gateway.metrics = coord.metrics.storage(gateway)
    try:
        await gateway.start()
        if parts.admin_credentials is not None:
            from cloudless.gateway_keys import ensure_admin_credentials

            if await ensure_admin_credentials(metadata, parts.admin_credentials, endpoint=gateway.url,
                                              region=gateway.config.region, ca=parts.ca_file):
                await gateway.keys_changed()
    except BaseException:
        await gateway.stop()
        raise
    return gateway

"""etcd store: the `Store` protocol on an etcd 3.4+ cluster, for replicated coordinators (issue 8).

Built on aetcd's gRPC stubs (`aetcd.rpc`) over channels opened here, not on `aetcd.Client`: the client in aetcd
1.0 has no TLS, one endpoint and one timeout for every call; the stubs are the same generated etcd v3 API.

Mapping. Store keys live under a root (default "/cloudless"): "/workloads/x" is the etcd key
"/cloudless/workloads/x". Revisions are etcd's: one cluster-wide counter (other roots on the same cluster advance
it too, so only order is meaningful, never gaps). `txn` is one etcd Txn: a compare per key with an expectation
(`expect=0` → create_revision == 0, i.e. missing; `expect=N` → mod_revision == N), puts/deletes on success,
and on failure a read of every compared key in the same Txn, so the `Conflict` names the first key whose revision
differed as it was when the Txn was evaluated.

Differences from SqliteStore, all forced by etcd:
- etcd refuses a Txn that writes one key twice, so ops on the same key are collapsed to the last one (the final
  state is the same; a watcher sees only the last change of that key at that revision). An expectation on a key
  the same txn already wrote is refused (StoreError) except `expect=0` after a delete.
- At most `max_txn_ops` distinct keys per txn (etcd's `--max-txn-ops`, 128 by default): a larger txn raises
  StoreError before anything is sent, since splitting it would lose atomicity.
- An empty txn or deleting a missing key does not advance the revision.
- `watch` starts just after the newest revision this store has seen (every answer's header counts), so a
  list-then-watch has no gap; a compacted start revision or a broken stream raises StoreError: re-list, watch again.

Failures. Every call has a deadline (`timeout_s`, 3 s by default) covering connecting, failing over and the call
itself, so a lost quorum makes callers fail with StoreUnavailable instead of hanging. Calls carry etcd's
"hasleader" metadata: a member that lost its leader answers "no leader" at once and ends its watches.

Endpoints. One gRPC channel per endpoint. Calls go to the current endpoint; when it cannot be connected to
(refused, unreachable, TLS failure) the next one is tried, in URL order, within the same deadline. A read that
fails on a connected endpoint is retried on the next one; a write is retried only when etcd refused it before
applying it ("no leader") — otherwise its outcome is unknown and StoreUnavailable says so (the next call starts
from the next endpoint).
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import grpc
from aetcd import rpc

from coordinator.store.base import Change, Conflict, Entry, Fenced, Op, OpKind, StoreError, StoreUnavailable

log = logging.getLogger(__name__)

DEFAULT_ROOT = "/cloudless"
DEFAULT_PORT = 2379
DEFAULT_TIMEOUT_S = 3.0
DEFAULT_MAX_TXN_OPS = 128  # etcd's --max-txn-ops default
LIST_PAGE = 500
_REQUIRE_LEADER = (("hasleader", "true"),)  # etcd rpctypes.MetadataRequireLeaderKey
_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),  # a restarted member is used again within a second,
    ("grpc.max_reconnect_backoff_ms", 1000),  # not after gRPC's default two-minute backoff
    ("grpc.keepalive_time_ms", 10_000),  # detect a silently dead member under a long watch; etcd allows >= 5 s
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
)
_UNAVAILABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
T = TypeVar("T")


# ---- URL --------------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class EtcdTarget:
    endpoints: tuple[str, ...]  # "host:port", "[v6]:port"
    tls: bool
    root: str | None  # from the URL path, if any


def parse_etcd_url(url: str, *, tls: bool = False) -> EtcdTarget:
    """`etcd://host:port[,host:port...][/root]` (`etcds://` for TLS). Raises ValueError naming the problem."""
    usage = "expected etcd://host:port[,host:port...] (or etcds:// for TLS)"
    parts = urlsplit(url)
    if parts.scheme not in ("etcd", "etcds"):
        raise ValueError(f"etcd URL {url!r}: scheme must be etcd:// or etcds://; {usage}")
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(f"etcd URL {url!r}: query strings, fragments and user:password@ are not supported; {usage}")
    if not parts.netloc:
        raise ValueError(f"etcd URL {url!r}: no endpoint; {usage}")
    endpoints = tuple(_endpoint(url, item.strip()) for item in parts.netloc.split(","))
    root = parts.path.rstrip("/") or None
    return EtcdTarget(endpoints, tls or parts.scheme == "etcds", root)


def _endpoint(url: str, item: str) -> str:
    if not item:
        raise ValueError(f"etcd URL {url!r}: empty endpoint between commas")
    if item.startswith("["):  # [v6]:port
        host, _, rest = item.partition("]")
        host, port_s = host + "]", (rest[1:] if rest.startswith(":") else rest or str(DEFAULT_PORT))
    elif item.count(":") > 1:
        raise ValueError(f"etcd URL {url!r}: write the IPv6 endpoint {item!r} as [address]:port")
    else:
        host, sep, port_s = item.partition(":")
        port_s = port_s if sep else str(DEFAULT_PORT)
    if host in ("", "[]"):
        raise ValueError(f"etcd URL {url!r}: endpoint {item!r} has no host")
    if not (port_s.isascii() and port_s.isdigit()) or not 0 < int(port_s) < 65536:
        raise ValueError(f"etcd URL {url!r}: endpoint {item!r} has an invalid port {port_s!r}")
    return f"{host}:{int(port_s)}"


def _credentials(ca: Path | str | None, cert: Path | str | None, key: Path | str | None) -> Any:
    if (cert is None) != (key is None):
        raise ValueError("etcd TLS: a client certificate needs its key and vice versa (give both or neither)")

    def read(what: str, path: Path | str | None) -> bytes | None:
        if path is None:
            return None
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise ValueError(f"etcd TLS: cannot read the {what} {path}: {exc.strerror}") from exc

    return grpc.ssl_channel_credentials(root_certificates=read("CA bundle", ca), private_key=read("client key", key),
                                        certificate_chain=read("client certificate", cert))


# ---- endpoints and failover -------------------------------------------------------------------------------------

class _Endpoints:
    def __init__(self, endpoints: tuple[str, ...], credentials: Any, timeout: float) -> None:
        self.endpoints, self.timeout, self._credentials = endpoints, timeout, credentials
        self._channels: dict[int, Any] = {}
        self._current = 0

    def describe(self) -> str:
        return ",".join(self.endpoints)

    def _channel(self, i: int) -> Any:
        if i not in self._channels:
            target = self.endpoints[i]
            self._channels[i] = (grpc.aio.secure_channel(target, self._credentials, _CHANNEL_OPTIONS)
                                 if self._credentials is not None
                                 else grpc.aio.insecure_channel(target, _CHANNEL_OPTIONS))
        return self._channels[i]

    async def call(self, invoke: Callable[[Any, float], Awaitable[T]], *, idempotent: bool,
                   timeout_s: float | None = None) -> T:
        """`invoke(channel, seconds_left)` on the first endpoint that connects, failing over as the module says."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout_s or self.timeout)
        problems: builtins.list[str] = []
        n = len(self.endpoints)
        start = self._current
        for attempt in range(n):
            i = (start + attempt) % n
            left = deadline - loop.time()
            if left <= 0:
                break
            if not await _connected(self._channel(i), left / (n - attempt)):
                problems.append(f"{self.endpoints[i]}: cannot connect")
                continue
            self._current = i
            left = deadline - loop.time()
            # a read gets its share of the time left (at least 1 s), so a frozen member that still holds the TCP
            # connection costs one share, not the whole deadline; a write gets it all (it is not retried anyway)
            share = max(left / (n - attempt), min(left, 1.0)) if idempotent else left
            try:
                return await invoke(self._channel(i), max(share, 0.001))
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in _UNAVAILABLE:
                    raise self.error(exc) from exc
                problems.append(f"{self.endpoints[i]}: " + (f"no answer within {timeout_s or self.timeout:g} s"
                                if exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED else exc.details() or "unavailable"))
                self._current = (i + 1) % n
                if not idempotent and "no leader" not in (exc.details() or ""):
                    raise self.unavailable(problems, "the write may or may not have been applied") from exc
        raise self.unavailable(problems)

    def skip(self) -> None:
        """Start the next call from the next endpoint (a stream on the current one failed)."""
        self._current = (self._current + 1) % len(self.endpoints)

    async def channel(self, timeout_s: float | None = None) -> Any:
        """A connected channel, for streams (watch, keepalive)."""
        async def pick(channel: Any, _left: float) -> Any:
            return channel
        return await self.call(pick, idempotent=True, timeout_s=timeout_s)

    def unavailable(self, problems: builtins.list[str], note: str = "") -> StoreUnavailable:
        detail = "; ".join(problems) or f"no answer within {self.timeout:g} s"
        tls = " and that the CA bundle and client certificate match the cluster's" if self._credentials else ""
        return StoreUnavailable(
            f"etcd at {self.describe()} is unavailable ({detail}){': ' + note if note else ''}. Check that a majority "
            f"of the etcd members are running and reachable from this host{tls} "
            f"(etcdctl --endpoints={self.describe()} endpoint health)")

    def error(self, exc: grpc.aio.AioRpcError) -> StoreError:
        code, details = exc.code(), exc.details()
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            return StoreError(f"etcd at {self.describe()} refused this client ({details}): check its certificate "
                              "and the etcd user's role")
        if code in _UNAVAILABLE:
            return self.unavailable([details or code.name])
        return StoreError(f"etcd at {self.describe()} failed the request: {code.name}: {details}")

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close()


async def _connected(channel: Any, wait: float) -> bool:
    """Whether `channel` is (or within `wait` becomes) READY; False at once on a refused/failed connection."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    state = channel.get_state(try_to_connect=True)
    while state is not grpc.ChannelConnectivity.READY:
        left = deadline - loop.time()
        if state in (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN) or left <= 0:
            return False
        try:
            async with asyncio.timeout(left):
                await channel.wait_for_state_change(state)
        except TimeoutError:
            return False
        state = channel.get_state(try_to_connect=True)
    return True


# ---- the store ---------------------------------------------------------------------------------------------------

def _prefix_end(prefix: bytes) -> bytes:
    """etcd's range_end for "every key starting with prefix" (clientv3.GetPrefixRangeEnd)."""
    trimmed = prefix.rstrip(b"\xff")
    return trimmed[:-1] + bytes([trimmed[-1] + 1]) if trimmed else b"\0"


def collapse(ops: Sequence[Op]) -> tuple[builtins.list[Op], builtins.list[tuple[str, int]]]:
    """The ops etcd can take in one Txn (last op per key, in the order of those last ops) and the compares
    (key, expected revision) in the order keys first appear. See the module doc for the one refused case."""
    final: dict[str, Op] = {}
    compares: dict[str, int] = {}
    for op in ops:
        prior = final.pop(op.key, None)
        if op.expect is not None:
            if prior is None:
                compares[op.key] = op.expect
            elif not (prior.kind is OpKind.DELETE and op.expect == 0):
                raise StoreError(f"txn: an expectation on {op.key!r}, which the same txn already wrote, cannot be "
                                 "checked by etcd (split the txn or drop the expectation)")
        final[op.key] = op
    return builtins.list(final.values()), builtins.list(compares.items())


class EtcdStore:
    """The Store protocol on etcd; build it with `open_etcd_store`. Also the lease calls the Elector uses."""

    def __init__(self, endpoints: _Endpoints, *, root: str = DEFAULT_ROOT,
                 max_txn_ops: int = DEFAULT_MAX_TXN_OPS) -> None:
        if root and (not root.startswith("/") or root.endswith("/")):
            raise ValueError(f"etcd key root {root!r} must start with '/' and not end with one (or be empty)")
        self.root, self.max_txn_ops = root, max_txn_ops
        self._ep = endpoints
        self._seen = 0  # newest revision any answer carried: where a new watch starts (after it)
        # (election key, epoch) while this process leads: every transaction then also requires the election key to
        # still have that create revision, so a deposed leader's late writes are refused by etcd itself
        self._fence: tuple[str, int] | None = None

    def fence(self, guard: tuple[str, int] | None) -> None:
        self._fence = guard

    @property
    def endpoints(self) -> tuple[str, ...]:
        return self._ep.endpoints

    def _k(self, key: str) -> bytes:
        return (self.root + key).encode()

    def _entry(self, kv: Any) -> Entry:
        return Entry(kv.key.decode()[len(self.root):], bytes(kv.value), kv.mod_revision, kv.create_revision)

    def _saw(self, header: Any) -> None:
        self._seen = max(self._seen, header.revision)

    async def _kv(self, method: str, request: Any, *, idempotent: bool, timeout_s: float | None = None) -> Any:
        async def invoke(channel: Any, left: float) -> Any:
            return await getattr(rpc.KVStub(channel), method)(request, timeout=left, metadata=_REQUIRE_LEADER)
        response = await self._ep.call(invoke, idempotent=idempotent, timeout_s=timeout_s)
        self._saw(response.header)
        return response

    async def get(self, key: str) -> Entry | None:
        response = await self._kv("Range", rpc.RangeRequest(key=self._k(key)), idempotent=True)
        return self._entry(response.kvs[0]) if response.kvs else None

    async def list(self, prefix: str) -> builtins.list[Entry]:
        start = self._k(prefix) or b"\0"
        end = _prefix_end(start) if start != b"\0" else b"\0"
        entries: builtins.list[Entry] = []
        pinned = 0  # later pages read at the first page's revision: one consistent snapshot
        while True:
            request = rpc.RangeRequest(key=start, range_end=end, limit=LIST_PAGE, revision=pinned)
            response = await self._kv("Range", request, idempotent=True)
            entries.extend(self._entry(kv) for kv in response.kvs)
            if not response.more or not response.kvs:
                return entries
            pinned = pinned or response.header.revision
            start = response.kvs[-1].key + b"\0"

    async def revision(self) -> int:
        request = rpc.RangeRequest(key=self._k("") or b"\0", count_only=True)
        return int((await self._kv("Range", request, idempotent=True)).header.revision)

    async def txn(self, ops: Sequence[Op]) -> int:
        if not ops:
            return await self.revision()
        writes, compares = collapse(ops)
        if len(writes) > self.max_txn_ops:
            raise StoreError(f"txn writes {len(writes)} keys; etcd takes at most {self.max_txn_ops} per transaction "
                             "(--max-txn-ops) and splitting it would not be atomic")
        fence = self._fence
        guard = [] if fence is None else [rpc.Compare(key=self._k(fence[0]), target=rpc.Compare.CREATE,
                                                       result=rpc.Compare.EQUAL, create_revision=fence[1])]
        request = rpc.TxnRequest(
            compare=[self._compare(key, expect) for key, expect in compares] + guard,
            success=[self._request_op(op) for op in writes],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=self._k(key), keys_only=True))
                     for key, _ in compares],
        )
        response = await self._kv("Txn", request, idempotent=False)
        if response.succeeded:
            return int(response.header.revision)
        for (key, expect), result in zip(compares, response.responses, strict=True):
            kvs = result.response_range.kvs
            actual = kvs[0].mod_revision if kvs else 0
            if actual != expect:
                raise Conflict(key, expect, actual)
        if fence is not None:
            raise Fenced(fence)
        raise StoreError(f"etcd refused txn on {[k for k, _ in compares]} but every compared revision matches")

    def _compare(self, key: str, expect: int) -> Any:
        if expect == 0:
            return rpc.Compare(key=self._k(key), target=rpc.Compare.CREATE, result=rpc.Compare.EQUAL,
                               create_revision=0)
        return rpc.Compare(key=self._k(key), target=rpc.Compare.MOD, result=rpc.Compare.EQUAL, mod_revision=expect)

    def _request_op(self, op: Op, lease: int = 0) -> Any:
        if op.kind is OpKind.PUT:
            return rpc.RequestOp(request_put=rpc.PutRequest(key=self._k(op.key), value=op.value, lease=lease))
        return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=self._k(op.key)))

    async def watch(self, prefix: str, *, start_revision: int | None = None) -> AsyncGenerator[Change, None]:
        """Changes under `prefix` from `start_revision` on; by default from just after the newest revision this
        store has seen (taken before any await, so changes committed after the call are all included)."""
        start = start_revision or self._seen + 1
        key = self._k(prefix) or b"\0"
        create = rpc.WatchCreateRequest(key=key, range_end=_prefix_end(key) if key != b"\0" else b"\0",
                                        start_revision=start)
        channel = await self._ep.channel()
        call = rpc.WatchStub(channel).Watch(metadata=_REQUIRE_LEADER)
        try:
            async with asyncio.timeout(self._ep.timeout):
                await call.write(rpc.WatchRequest(create_request=create))
            first = True
            while True:
                # the member's "created" answer is awaited with the deadline; events may take forever
                async with asyncio.timeout(self._ep.timeout if first else None):
                    response = await call.read()
                first = False
                if response is grpc.aio.EOF:
                    raise StoreError(f"etcd ended the watch on {prefix!r}; re-list and watch again")
                if response.compact_revision or response.canceled:
                    raise StoreError(f"etcd cancelled the watch on {prefix!r} (compacted up to revision "
                                     f"{response.compact_revision}; {response.cancel_reason or 'no reason given'});"
                                     " re-list and watch again")
                for event in response.events:
                    kind = OpKind.DELETE if event.type == rpc.Event.DELETE else OpKind.PUT
                    entry = self._entry(event.kv)
                    self._seen = max(self._seen, entry.mod_revision)
                    yield Change(kind, entry.key, entry.value, entry.mod_revision)
        except TimeoutError as exc:
            self._ep.skip()
            raise self._ep.unavailable([f"watch on {prefix!r} not accepted in time"]) from exc
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _UNAVAILABLE:
                self._ep.skip()
            raise StoreError(f"watch on {prefix!r} broke ({self._ep.error(exc)}); re-list and watch again") from exc
        finally:
            call.cancel()

    # ---- leases (for coordinator.leadership) ------------------------------------------------------------------

    async def grant_lease(self, ttl_s: int) -> tuple[int, int]:
        """A new lease; returns (lease id, granted TTL in seconds — etcd may raise a small TTL to its minimum)."""
        async def invoke(channel: Any, left: float) -> Any:
            return await rpc.LeaseStub(channel).LeaseGrant(rpc.LeaseGrantRequest(TTL=ttl_s), timeout=left,
                                                           metadata=_REQUIRE_LEADER)
        response = await self._ep.call(invoke, idempotent=False)
        if response.error:
            raise StoreError(f"etcd refused a {ttl_s} s lease: {response.error}")
        return int(response.ID), int(response.TTL)

    async def keep_alive(self, lease_id: int, *, timeout_s: float | None = None) -> int:
        """Refresh a lease once; returns its TTL in seconds, 0 when the lease no longer exists."""
        async def invoke(channel: Any, left: float) -> int:
            call = rpc.LeaseStub(channel).LeaseKeepAlive(timeout=left, metadata=_REQUIRE_LEADER)
            try:
                await call.write(rpc.LeaseKeepAliveRequest(ID=lease_id))
                response = await call.read()
            finally:
                call.cancel()
            if response is grpc.aio.EOF:
                raise self._ep.unavailable([f"keepalive of lease {lease_id:x} got no answer"])
            return int(response.TTL)
        return await self._ep.call(invoke, idempotent=True, timeout_s=timeout_s)

    async def revoke_lease(self, lease_id: int, *, timeout_s: float | None = None) -> None:
        """Revoke a lease (its keys are deleted at once); a lease that is already gone is not an error."""
        async def invoke(channel: Any, left: float) -> None:
            try:
                await rpc.LeaseStub(channel).LeaseRevoke(rpc.LeaseRevokeRequest(ID=lease_id), timeout=left,
                                                         metadata=_REQUIRE_LEADER)
            except grpc.aio.AioRpcError as exc:
                if exc.code() is not grpc.StatusCode.NOT_FOUND:
                    raise
        await self._ep.call(invoke, idempotent=True, timeout_s=timeout_s)

    async def create_leased(self, key: str, value: bytes, lease_id: int) -> tuple[bool, Entry | None, int]:
        """Put `key` bound to the lease only if it does not exist. Returns (created, the key's entry, the revision
        the answer reflects: watch from the next one to miss nothing)."""
        request = rpc.TxnRequest(
            compare=[self._compare(key, 0)],
            success=[self._request_op(Op(OpKind.PUT, key, value), lease=lease_id)],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=self._k(key)))],
        )
        response = await self._kv("Txn", request, idempotent=False)
        rev = int(response.header.revision)
        if response.succeeded:
            return True, Entry(key, value, rev, rev), rev
        kvs = response.responses[0].response_range.kvs
        return False, (self._entry(kvs[0]) if kvs else None), rev

    async def close(self) -> None:
        await self._ep.close()


async def open_etcd_store(url: str, *, ca: Path | str | None = None, cert: Path | str | None = None,
                          key: Path | str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S, root: str | None = None,
                          max_txn_ops: int = DEFAULT_MAX_TXN_OPS) -> EtcdStore:
    """Connect to the cluster `url` names and check it answers (StoreUnavailable if not, ValueError for a bad URL
    or unreadable TLS files). TLS when the scheme is etcds:// or any of ca/cert/key is given. The key root is
    `root`, else the URL's path, else "/cloudless"."""
    if timeout_s <= 0:
        raise ValueError(f"etcd timeout must be positive, not {timeout_s}")
    target = parse_etcd_url(url, tls=any(x is not None for x in (ca, cert, key)))
    credentials = _credentials(ca, cert, key) if target.tls else None
    root = root if root is not None else (target.root or DEFAULT_ROOT)
    store = EtcdStore(_Endpoints(target.endpoints, credentials, timeout_s), root=root, max_txn_ops=max_txn_ops)
    try:
        await store.revision()  # fails early with the operator-facing message; seeds where watches start
    except BaseException:
        await store.close()
        raise
    log.info("etcd store at %s (key root %r, %g s timeout)", ",".join(target.endpoints), root, timeout_s)
    return store

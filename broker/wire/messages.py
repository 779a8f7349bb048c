"""Every control message the agent and the coordinator exchange, as frozen dataclasses with a KIND.

Field constraints live in the annotations (see `schema`). Sizes are bounded so a hostile peer cannot make a
decoder allocate without limit. Timestamps are Unix seconds as floats; `now` is always passed in by the
caller, never read here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, ClassVar

from broker.wire.schema import Blob, Float, Hex, Ident, Int, Items, Keys, Member, Text

NodeId = Annotated[str, Ident()]
PeerId = Annotated[str, Member()]  # an overlay peer: a node id, or a service member such as "s3@<coordinator id>"
Name = Annotated[str, Ident()]
Timestamp = Annotated[float, Float(0.0, 2.0**40)]
Count = Annotated[int, Int(0, 2**31 - 1)]
Generation = Annotated[int, Int(0, 2**62)]
Percent = Annotated[float, Float(0.0, 100.0 * 64)]  # per-process CPU % can exceed 100 on multicore
Bytes = Annotated[int, Int(0, 2**62)]
Labels = Annotated[dict[str, Annotated[str, Text(128)]], Items(64), Keys(Text(128))]
EnvMap = Annotated[dict[str, Annotated[str, Text(4096)]], Items(256), Keys(Text(256))]
Args = Annotated[tuple[Annotated[str, Text(4096)], ...], Items(256)]
ChunkId = Annotated[str, Hex(64)]  # an object-store chunk: the SHA-256 of its bytes
MAX_CORRUPT_REPORTED = 256


class Presence(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class RestartPolicy(StrEnum):
    ALWAYS = "Always"
    ON_FAILURE = "OnFailure"
    NEVER = "Never"


class ProbeKind(StrEnum):
    EXEC = "exec"
    HTTP = "http"
    TCP = "tcp"


class ReplicaState(StrEnum):
    PENDING = "pending"
    PULLING = "pulling"
    STARTING = "starting"
    RUNNING = "running"
    EXITED = "exited"
    FAILED = "failed"
    CRASH_LOOP = "crash_loop"
    STOPPING = "stopping"
    STOPPED = "stopped"
    UNKNOWN = "unknown"


class Protocol(StrEnum):
    TCP = "TCP"
    UDP = "UDP"


# ---- node status and heartbeat --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class NodeFacts:
    """What a node is. Every fact is optional: a device that cannot read one simply leaves it out."""

    arch: Annotated[str, Text(32)] = ""
    os: Annotated[str, Text(64)] = ""
    os_release: Annotated[str, Text(128)] = ""
    hostname: Annotated[str, Text(255)] = ""
    cpu_count: Annotated[int, Int(0, 4096)] | None = None
    memory_bytes: Bytes | None = None
    disk_bytes: Bytes | None = None
    runtime: Annotated[str, Text(32)] = ""
    podman_version: Annotated[str, Text(64)] = ""
    rootless: bool | None = None
    battery_percent: Annotated[float, Float(0.0, 100.0)] | None = None
    charging: bool | None = None
    temperatures: Annotated[dict[str, Annotated[float, Float(-273.0, 1000.0)]], Items(32)] = field(
        default_factory=dict
    )
    profile: Annotated[str, Text(64)] = ""
    zone: Annotated[str, Text(64)] = ""
    labels: Labels = field(default_factory=dict)
    agent_version: Annotated[str, Text(32)] = ""
    # what keeps a workload from the agent's own files (its key, other replicas' secrets) on this node's runtime;
    # "" for containers, which never see them
    workload_isolation: Annotated[str, Text(160)] = ""
    # what the node can do for a workload, each among ABILITIES (unknown words are a newer agent's: ignored); the
    # scheduler places a replica only where every ability it needs is present. Empty: an older agent that did not
    # say (the coordinator infers them from `runtime`)
    abilities: Annotated[tuple[Annotated[str, Text(32)], ...], Items(16)] = ()

    # containers: runs OCI images in containers; port-remap: publishes a container port on another host port;
    # volumes: emptyDir volumes; images: pulls and stores images; process: runs a command as a plain process, no
    # image; overlay: takes part in the QUIC overlay (aioquic available)
    ABILITIES: ClassVar[tuple[str, ...]] = ("containers", "port-remap", "volumes", "images", "process", "overlay")
    # a replica the node's runtime cannot run (a remapped port on the process runtime, a sandbox it cannot honour)
    # is reported `failed` with a last_error that starts with this; the coordinator places it on another node
    REFUSED: ClassVar[str] = "refused by runtime: "


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """Retained presence of a node; its last will is the same message with `presence=offline`."""

    KIND: ClassVar[str] = "node.status"
    node_id: NodeId
    presence: Presence
    ts: Timestamp
    facts: NodeFacts = field(default_factory=NodeFacts)
    schedulable: bool = True
    gates: Annotated[tuple[Annotated[str, Text(128)], ...], Items(16)] = ()  # why not schedulable
    boot_id: Annotated[str, Text(64)] = ""
    # the node's control-link timers (issue 17): it heartbeats at least every `heartbeat_max_s` (more often only
    # when something changed) and its MQTT keep-alive is `keepalive_s`, so the coordinator derives this node's
    # silence TTL from them and leaves presence to the broker's keep-alive and the last will. Optional: older
    # agents leave them out and keep the coordinator's default TTL
    heartbeat_max_s: Annotated[float, Float(0.0, 7 * 86400.0)] | None = None
    keepalive_s: Annotated[int, Int(0, 65535)] | None = None  # MQTT 3.1.1 §3.1.2.10: 16 bits
    # the node's share of the object store (issue 20): the quota it offers (0: none), what its chunks take, how many
    # it holds, and the chunks its scrub or a read found corrupt there (the copy already deleted) and not stored
    # there again since, newest last. Retained with the status, so the coordinator learns of a bad copy even if it
    # missed the status that first named it. Optional: older agents leave them out (no storage known)
    storage_quota_bytes: Bytes | None = None
    storage_used_bytes: Bytes | None = None
    storage_chunks: Count | None = None
    storage_corrupt: Annotated[tuple[ChunkId, ...], Items(MAX_CORRUPT_REPORTED)] = ()


@dataclass(frozen=True, slots=True)
class ReplicaUsage:
    replica_id: Name
    cpu_percent: Percent | None = None
    memory_bytes: Bytes | None = None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    KIND: ClassVar[str] = "node.heartbeat"
    node_id: NodeId
    seq: Annotated[int, Int(0, 2**62)]
    ts: Timestamp
    cpu_percent: Percent | None = None
    memory_used_bytes: Bytes | None = None
    memory_total_bytes: Bytes | None = None
    disk_used_bytes: Bytes | None = None
    disk_total_bytes: Bytes | None = None
    battery_percent: Annotated[float, Float(0.0, 100.0)] | None = None
    replicas: Annotated[tuple[ReplicaUsage, ...], Items(256)] = ()
    # the highest leadership epoch the agent honours (it ignores desired state under a lower one): lets a
    # coordinator whose epoch went back (state restored from an older copy) notice that nodes ignore it.
    # Optional: older agents leave it out
    max_epoch: Generation | None = None


# ---- desired state ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Probe:
    kind: ProbeKind
    command: Args = ()
    path: Annotated[str, Text(1024)] = "/"
    port: Annotated[int, Int(0, 65535)] = 0
    initial_delay_s: Annotated[float, Float(0.0, 86400.0)] = 0.0
    period_s: Annotated[float, Float(0.1, 86400.0)] = 10.0
    timeout_s: Annotated[float, Float(0.1, 3600.0)] = 1.0
    success_threshold: Annotated[int, Int(1, 1000)] = 1
    failure_threshold: Annotated[int, Int(1, 1000)] = 3


@dataclass(frozen=True, slots=True)
class PortMapping:
    container_port: Annotated[int, Int(1, 65535)]
    host_port: Annotated[int, Int(0, 65535)] = 0
    protocol: Protocol = Protocol.TCP


@dataclass(frozen=True, slots=True)
class VolumeMount:
    """An emptyDir volume mounted at `mount_path` (later issues add other sources)."""

    name: Name
    mount_path: Annotated[str, Text(1024)]
    medium: Annotated[str, Text(16)] = ""  # "" (disk) or "Memory" (tmpfs)
    size_limit_bytes: Bytes | None = None


class SeccompType(StrEnum):
    RUNTIME_DEFAULT = "RuntimeDefault"
    LOCALHOST = "Localhost"
    UNCONFINED = "Unconfined"


Capability = Annotated[str, Text(64)]


@dataclass(frozen=True, slots=True)
class Security:
    """The replica's sandbox, already admitted by the coordinator's policy; the agent maps it onto the runtime
    and refuses what the runtime cannot honour (never silently weaker). Defaults are the runtime's defaults."""

    run_as_user: Annotated[int, Int(0, 2**32 - 2)] | None = None
    run_as_group: Annotated[int, Int(0, 2**32 - 2)] | None = None
    run_as_non_root: bool = False
    read_only_root_filesystem: bool = False
    privileged: bool = False
    allow_privilege_escalation: bool | None = None  # None: runtime default; False: no-new-privileges
    capabilities_add: Annotated[tuple[Capability, ...], Items(64)] = ()
    capabilities_drop: Annotated[tuple[Capability, ...], Items(64)] = ()
    seccomp: SeccompType = SeccompType.RUNTIME_DEFAULT
    seccomp_profile: Annotated[str, Text(256)] = ""  # Localhost: a file name under the agent's seccomp dir
    host_network: bool = False
    host_pid: bool = False
    host_ipc: bool = False


SecretKey = Annotated[str, Text(253)]
FileMode = Annotated[int, Int(0, 0o777)]


@dataclass(frozen=True, slots=True)
class SecretEnv:
    """Environment variable `name` takes the value of `key` in secret `secret` (of the replica's namespace)."""

    name: Annotated[str, Text(256)]
    secret: Name
    key: SecretKey


@dataclass(frozen=True, slots=True)
class SecretFile:
    key: SecretKey
    path: Annotated[str, Text(253)]  # relative to the volume's mount path, no "..", no leading "/"
    mode: FileMode | None = None  # None: the volume's default_mode


@dataclass(frozen=True, slots=True)
class SecretVolume:
    """Secret `secret` as files under `mount_path` (on a tmpfs): the listed keys, or every key when none is."""

    secret: Name
    mount_path: Annotated[str, Text(1024)]
    items: Annotated[tuple[SecretFile, ...], Items(64)] = ()
    default_mode: FileMode = 0o400


@dataclass(frozen=True, slots=True)
class SealedSecret:
    """One secret version sealed to this node's enrolled key (broker.sealed): the box holds the msgpack map
    key -> value bytes; its associated data is `sealed.delivery_aad(node, namespace, secret, version)`. The
    broker and anyone on it see only the box."""

    secret: Name
    version: Annotated[int, Int(1, 2**31 - 1)]
    box: Annotated[bytes, Blob(300_000)]


class SecretUpdate(StrEnum):
    RESTART = "restart"  # a new secret version restarts the replica (always so for secrets in env)
    FILES = "files"  # files are rewritten in place; the replica keeps running


@dataclass(frozen=True, slots=True)
class ReplicaSpec:
    """One replica a node must run. `spec_hash` changes whenever anything that needs a restart changes."""

    replica_id: Name
    workload: Name
    namespace: Name = "default"
    spec_hash: Annotated[str, Text(64)] = ""
    image: Annotated[str, Text(512)] = ""
    command: Args = ()
    args: Args = ()
    env: EnvMap = field(default_factory=dict)
    working_dir: Annotated[str, Text(1024)] = ""
    cpu_millis: Annotated[int, Int(0, 1_000_000)] = 0
    memory_bytes: Bytes = 0
    ports: Annotated[tuple[PortMapping, ...], Items(64)] = ()
    volumes: Annotated[tuple[VolumeMount, ...], Items(32)] = ()
    restart_policy: RestartPolicy = RestartPolicy.ALWAYS
    liveness: Probe | None = None
    readiness: Probe | None = None
    labels: Labels = field(default_factory=dict)
    security: Security | None = None
    secret_env: Annotated[tuple[SecretEnv, ...], Items(256)] = ()
    secret_volumes: Annotated[tuple[SecretVolume, ...], Items(16)] = ()
    secrets: Annotated[tuple[SealedSecret, ...], Items(16)] = ()
    secret_update: SecretUpdate = SecretUpdate.RESTART


@dataclass(frozen=True, slots=True)
class DesiredState:
    """The full set of replicas one node must run (level-triggered, retained).

    `generation` increases with every change for this node; `epoch` is the publishing coordinator's
    leadership epoch, used for fencing (ARCHITECTURE §4): agents ignore any epoch lower than the highest seen.
    """

    KIND: ClassVar[str] = "node.desired"
    node_id: NodeId
    generation: Generation
    epoch: Generation
    issued_at: Timestamp
    replicas: Annotated[tuple[ReplicaSpec, ...], Items(512)] = ()


# ---- observed state --------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ReplicaObserved:
    replica_id: Name
    workload: Name
    state: ReplicaState
    spec_hash: Annotated[str, Text(64)] = ""
    ready: bool = False
    restarts: Count = 0
    exit_code: Annotated[int, Int(-(2**31), 2**31 - 1)] | None = None
    last_error: Annotated[str, Text(1024)] = ""
    started_at: Timestamp | None = None
    container_id: Annotated[str, Text(128)] = ""


@dataclass(frozen=True, slots=True)
class ObservedState:
    KIND: ClassVar[str] = "node.observed"
    node_id: NodeId
    generation: Generation  # the desired generation last applied
    epoch: Generation
    ts: Timestamp
    replicas: Annotated[tuple[ReplicaObserved, ...], Items(512)] = ()


# ---- commands --------------------------------------------------------------------------------------------

class CommandName(StrEnum):
    LOGS = "logs"
    EXEC = "exec"
    DRAIN = "drain"
    PING = "ping"
    # args: peer (a node id), count (1..100, default 5): the node reaches `peer` over the overlay and answers
    # with an OverlayPingResult as JSON in `output`
    OVERLAY_PING = "overlay-ping"
    # args: replica, session (an id), tty ("1": on a terminal, "0": pipes), rows, cols; argv: the command. The node
    # starts it, answers ok at once, then streams on its tty-out topic (TtyOutput) and reads its tty-in (TtyInput)
    TTY = "tty"


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """A one-off request to a node; the reply goes to `reply_to` carrying the same `request_id`."""

    KIND: ClassVar[str] = "node.cmd"
    request_id: Name
    node_id: NodeId
    command: CommandName
    reply_to: Annotated[str, Text(256)]
    deadline: Timestamp
    args: Annotated[dict[str, Annotated[str, Text(4096)]], Items(32), Keys(Text(64))] = field(
        default_factory=dict
    )
    argv: Args = ()
    # the coordinator's clock when it sent this: deadline - sent is the most a node may spend on it, however
    # its own clock is set (None: from an older coordinator)
    sent: Timestamp | None = None


@dataclass(frozen=True, slots=True)
class CommandReply:
    KIND: ClassVar[str] = "node.reply"
    request_id: Name
    node_id: NodeId
    ok: bool
    ts: Timestamp
    exit_code: Annotated[int, Int(-(2**31), 2**31 - 1)] | None = None
    output: Annotated[bytes, Blob(1024 * 1024)] = b""
    error: Annotated[str, Text(4096)] = ""


# ---- interactive sessions (`cloudless exec -it`) ----------------------------------------------------------------
# One session's bytes go both ways in small numbered frames: coord -> node on node/<id>/tty-in, node -> coord on
# node/<id>/tty-out (QoS 1). Each direction numbers its frames from 0; the receiver drops repeats and notices a gap
# (broker.wire.stream). A frame with no data is a keepalive: each side sends one when it has been quiet, so either
# can tell the other is gone.

TTY_FRAME_BYTES = 16 * 1024
SessionId = Annotated[str, Ident()]
Seq = Annotated[int, Int(0, 2**62)]
WindowSide = Annotated[int, Int(0, 4096)]


@dataclass(frozen=True, slots=True)
class TtyInput:
    """Coordinator -> node: what the user typed (`data`), a window size (`rows` and `cols`, 0: unchanged), the end
    of the input (`eof`), or the end of the session (`close`: the user left; the node kills the command)."""

    KIND: ClassVar[str] = "node.tty-in"
    node_id: NodeId
    session: SessionId
    seq: Seq
    ts: Timestamp
    data: Annotated[bytes, Blob(TTY_FRAME_BYTES)] = b""
    rows: WindowSide = 0
    cols: WindowSide = 0
    eof: bool = False
    close: bool = False


@dataclass(frozen=True, slots=True)
class TtyOutput:
    """Node -> coordinator: what the command wrote (`data`); the last frame of a session carries its `exit_code`
    (negative: killed by that signal) or, when it ended otherwise (lost frames, timeout, a failed start), `error`."""

    KIND: ClassVar[str] = "node.tty-out"
    node_id: NodeId
    session: SessionId
    seq: Seq
    ts: Timestamp
    data: Annotated[bytes, Blob(TTY_FRAME_BYTES)] = b""
    exit_code: Annotated[int, Int(-(2**31), 2**31 - 1)] | None = None
    error: Annotated[str, Text(1024)] = ""

    @property
    def last(self) -> bool:
        return self.exit_code is not None or bool(self.error)


# ---- the overlay (data plane) control: candidates, peer directories ---------------------------------------
# Bytes never travel here; these messages only say who is where (ARCHITECTURE §8).

RelayId = Annotated[str, Text(80)]  # a relay's certificate identity, "relay@<name>"
HostPort = Annotated[str, Text(80)]  # "host:port" (IPv6 as "[addr]:port")
SerialHex = Annotated[str, Text(40)]


class CandidateKind(StrEnum):
    LOCAL = "local"  # an address of the node's own interfaces (same LAN)
    REFLEXIVE = "reflexive"  # the node's address as a relay sees it (outside its NAT)
    RELAY = "relay"  # reachable through this relay


class PathKind(StrEnum):
    LAN = "lan"  # direct, to a local candidate
    DIRECT = "direct"  # direct, to a reflexive (hole-punched) candidate
    RELAYED = "relayed"
    CONNECTING = "connecting"
    DOWN = "down"  # wanted, not connected (last_error says why)


@dataclass(frozen=True, slots=True)
class OverlayCandidate:
    kind: CandidateKind
    address: HostPort
    via: RelayId = ""  # reflexive: the relay that saw it; relay: the relay itself


@dataclass(frozen=True, slots=True)
class PeerPath:
    """How a node reaches one peer right now."""

    node_id: PeerId
    path: PathKind
    relay: RelayId = ""
    address: HostPort = ""  # the direct address in use (LAN or punched)
    rtt_ms: Annotated[float, Float(0.0, 600_000.0)] | None = None
    bytes_out: Bytes = 0
    bytes_in: Bytes = 0
    since: Timestamp | None = None  # when the current path was chosen
    changes: Count = 0  # path changes since the connection was made
    last_error: Annotated[str, Text(512)] = ""


@dataclass(frozen=True, slots=True)
class OverlayReport:
    """A node's overlay as it is (retained, sent on change and at most every few seconds while paths change):
    whether it runs one, its candidates, the relays it holds links to, and every peer's path. `disabled` says
    why a node runs without the overlay (no aioquic build, no certificate, switched off)."""

    KIND: ClassVar[str] = "node.overlay"
    node_id: NodeId
    ts: Timestamp
    enabled: bool
    disabled: Annotated[str, Text(512)] = ""
    port: Annotated[int, Int(0, 65535)] = 0
    candidates: Annotated[tuple[OverlayCandidate, ...], Items(32)] = ()
    relays: Annotated[tuple[RelayId, ...], Items(16)] = ()
    peers: Annotated[tuple[PeerPath, ...], Items(1024)] = ()
    # counters since the agent started: direct-path attempts, how many found a direct path, falls back to a relay
    punch_attempts: Count = 0
    punch_successes: Count = 0
    fallbacks: Count = 0
    relay_bytes: Bytes = 0  # peer bytes this node sent and received through relays


@dataclass(frozen=True, slots=True)
class RelayInfo:
    relay_id: RelayId
    addresses: Annotated[tuple[HostPort, ...], Items(8)]  # tried in order; UDP, then TCP/TLS on the same port


@dataclass(frozen=True, slots=True)
class PeerEntry:
    """A peer a node must be able to reach: what the coordinator knows of it from its own OverlayReport."""

    node_id: PeerId
    candidates: Annotated[tuple[OverlayCandidate, ...], Items(32)] = ()
    relays: Annotated[tuple[RelayId, ...], Items(16)] = ()  # the relays the peer holds links to
    dial: bool = False  # this node opens the connection (exactly one side of a pair does; the other accepts)


@dataclass(frozen=True, slots=True)
class PeerDirectory:
    """The overlay as one node must know it (retained, coord -> that node only): the relays to hold links to,
    the peers to reach, and the revoked certificate serials (live overlay connections with them are cut).
    Fenced like DesiredState: `epoch` is the publisher's leadership epoch, `generation` grows per node."""

    KIND: ClassVar[str] = "node.peers"
    node_id: NodeId
    generation: Generation
    epoch: Generation
    ts: Timestamp
    relays: Annotated[tuple[RelayInfo, ...], Items(16)] = ()
    peers: Annotated[tuple[PeerEntry, ...], Items(1024)] = ()
    revoked: Annotated[tuple[SerialHex, ...], Items(2048)] = ()


@dataclass(frozen=True, slots=True)
class OverlayPingResult:
    """What an `overlay-ping` command answers (JSON in CommandReply.output)."""

    peer: NodeId
    path: PathKind
    relay: RelayId = ""
    address: HostPort = ""
    rtts_ms: Annotated[tuple[Annotated[float, Float(0.0, 600_000.0)], ...], Items(100)] = ()
    connect_ms: Annotated[float, Float(0.0, 600_000.0)] | None = None
    error: Annotated[str, Text(512)] = ""


# ---- services (data plane) ------------------------------------------------------------------------------

VirtualIp = Annotated[str, Text(15)]  # dotted IPv4 from the service range (127.0.0.0/8); the agent checks it
Zone = Annotated[str, Text(64)]


@dataclass(frozen=True, slots=True)
class ServicePort:
    """One port of a service: clients connect to `port` (on the virtual address, or as SRV says); traffic goes to
    `target_port` of the chosen endpoint's container (or process)."""

    port: Annotated[int, Int(1, 65535)]
    target_port: Annotated[int, Int(1, 65535)]
    name: Annotated[str, Text(63)] = ""
    protocol: Protocol = Protocol.TCP


@dataclass(frozen=True, slots=True)
class ServiceEndpoint:
    """A ready replica behind a service: where it runs (node, zone: locality) and its relative share. `node` is an
    overlay member: a node id, or an in-process member of a coordinator serving a built-in service (the S3 gateway
    "s3@<coordinator id>" behind `s3.cloudless`)."""

    node: PeerId
    replica: Name
    zone: Zone = ""
    weight: Annotated[int, Int(1, 100)] = 1


@dataclass(frozen=True, slots=True)
class IngressPort:
    """This node publishes service port `port` on its own `host_port` (all interfaces), for clients outside."""

    port: Annotated[int, Int(1, 65535)]
    host_port: Annotated[int, Int(1, 65535)]


@dataclass(frozen=True, slots=True)
class ServiceRecord:
    """One service as a node needs it: its stable virtual address, its ports and its ready endpoints (an empty
    tuple: none ready now; the name still resolves, connections are refused)."""

    name: Name
    namespace: Name
    vip: VirtualIp
    ports: Annotated[tuple[ServicePort, ...], Items(64)] = ()
    endpoints: Annotated[tuple[ServiceEndpoint, ...], Items(1024)] = ()
    ingress: Annotated[tuple[IngressPort, ...], Items(16)] = ()  # only in the tables of the nodes publishing it


@dataclass(frozen=True, slots=True)
class ServiceTable:
    """The services one node must know (retained, coord -> that node only): those of the namespaces it runs
    workloads of, and those it publishes as ingress. Fenced like DesiredState (`epoch`, `generation`)."""

    KIND: ClassVar[str] = "node.services"
    node_id: NodeId
    generation: Generation
    epoch: Generation
    ts: Timestamp
    zone: Zone = ""  # this node's zone as the coordinator knows it (locality: same node, same zone, anywhere)
    services: Annotated[tuple[ServiceRecord, ...], Items(1024)] = ()


# ---- coordinators ----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CoordinatorStatus:
    KIND: ClassVar[str] = "coord.status"
    coordinator_id: NodeId
    presence: Presence
    ts: Timestamp
    api_url: Annotated[str, Text(256)] = ""
    version: Annotated[str, Text(32)] = ""


@dataclass(frozen=True, slots=True)
class LeaderClaim:
    KIND: ClassVar[str] = "coord.leader"
    coordinator_id: NodeId
    epoch: Generation
    ts: Timestamp
    lease_until: Timestamp


MESSAGE_TYPES: tuple[type, ...] = (
    NodeStatus,
    Heartbeat,
    DesiredState,
    ObservedState,
    CommandRequest,
    CommandReply,
    TtyInput,
    TtyOutput,
    OverlayReport,
    PeerDirectory,
    ServiceTable,
    CoordinatorStatus,
    LeaderClaim,
)

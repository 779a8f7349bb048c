"""The wire contract: the only code the agent and the coordinator share (STYLE §2).

    from broker import wire
    payload = wire.encode(wire.Heartbeat(node_id="pi-1", seq=1, ts=now))
    msg = wire.decode(payload)          # raises WireError on any defect
    wire.topics.node_heartbeat("pi-1")  # -> "cloudless/v1/node/pi-1/heartbeat"
"""

from broker.errors import WireError
from broker.wire import topics
from broker.wire.codec import (
    CHANNEL_KINDS,
    KINDS,
    MAX_PAYLOAD_BYTES,
    PROTOCOL_MAJOR,
    decode,
    decode_as,
    decode_node_message,
    encode,
    encoded_size,
)
from broker.wire.dashboard import to_json, to_json_obj
from broker.wire.messages import (
    MESSAGE_TYPES,
    CandidateKind,
    CommandName,
    CommandReply,
    CommandRequest,
    CoordinatorStatus,
    DesiredState,
    Heartbeat,
    IngressPort,
    LeaderClaim,
    NodeFacts,
    NodeStatus,
    ObservedState,
    OverlayCandidate,
    OverlayPingResult,
    OverlayReport,
    PathKind,
    PeerDirectory,
    PeerEntry,
    PeerPath,
    PortMapping,
    Presence,
    Probe,
    ProbeKind,
    Protocol,
    RelayInfo,
    ReplicaObserved,
    ReplicaSpec,
    ReplicaState,
    ReplicaUsage,
    RestartPolicy,
    SealedSecret,
    SeccompType,
    SecretEnv,
    SecretFile,
    SecretUpdate,
    SecretVolume,
    Security,
    ServiceEndpoint,
    ServicePort,
    ServiceRecord,
    ServiceTable,
    TtyInput,
    TtyOutput,
    VolumeMount,
)
from broker.wire.schema import ID_MAX_LEN, ID_PATTERN, check_id, is_service_member, valid_id

__all__ = [
    "CHANNEL_KINDS", "ID_MAX_LEN", "ID_PATTERN", "KINDS", "MAX_PAYLOAD_BYTES", "MESSAGE_TYPES", "PROTOCOL_MAJOR",
    "CandidateKind", "CommandName", "CommandReply", "CommandRequest", "CoordinatorStatus", "DesiredState",
    "Heartbeat", "IngressPort", "LeaderClaim", "NodeFacts", "NodeStatus", "ObservedState", "OverlayCandidate",
    "OverlayPingResult", "OverlayReport", "PathKind", "PeerDirectory", "PeerEntry", "PeerPath", "PortMapping",
    "Presence", "Probe", "ProbeKind", "Protocol", "RelayInfo", "ReplicaObserved", "ReplicaSpec", "ReplicaState",
    "ReplicaUsage", "RestartPolicy", "SealedSecret", "SeccompType", "SecretEnv", "SecretFile", "SecretUpdate",
    "SecretVolume", "Security", "ServiceEndpoint", "ServicePort", "ServiceRecord", "ServiceTable", "TtyInput",
    "TtyOutput", "VolumeMount",
    "WireError", "check_id", "decode", "decode_as", "decode_node_message", "encode", "encoded_size", "to_json",
    "to_json_obj", "topics", "valid_id", "is_service_member",
]

"""Builders for wire messages (STYLE §5): `make_heartbeat(seq=7)` instead of long literals.

Every builder returns a *fully populated* message: every field, nested ones included, differs from its
default, so the golden bytes exercise every field's encoding. Keyword overrides replace top-level fields.
Values are fixed (no clock, no randomness) and floats are exactly representable, so encodings are stable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from broker import wire

TS = 1_700_000_000.25  # an exactly representable float timestamp


def make_facts(**overrides: Any) -> wire.NodeFacts:
    fields: dict[str, Any] = {
        "arch": "aarch64",
        "os": "linux",
        "os_release": "6.6.31+rpt-rpi-v8",
        "hostname": "pi-kitchen",
        "cpu_count": 4,
        "memory_bytes": 8 * 2**30,
        "disk_bytes": 64 * 2**30,
        "runtime": "podman",
        "podman_version": "4.9.3",
        "rootless": True,
        "battery_percent": 87.5,
        "charging": False,
        "temperatures": {"cpu": 48.5, "gpu": -1.25},
        "profile": "raspberry-pi-4",
        "zone": "home",
        "labels": {"room": "kitchen", "tier": "edge"},
        "agent_version": "0.1.0",
        "workload_isolation": "landlock",
        "abilities": ("containers", "port-remap", "volumes", "images", "overlay"),
    }
    return wire.NodeFacts(**{**fields, **overrides})


def make_node_status(**overrides: Any) -> wire.NodeStatus:
    fields: dict[str, Any] = {
        "node_id": "pi-1",
        "presence": wire.Presence.ONLINE,
        "ts": TS,
        "facts": make_facts(),
        "schedulable": False,
        "gates": ("battery below 20%", "thermal"),
        "boot_id": "3f0c6c2e-boot",
        "heartbeat_max_s": 300.0,
        "keepalive_s": 60,
        "storage_quota_bytes": 20 * 2**30,
        "storage_used_bytes": 3 * 2**30 + 4096,
        "storage_chunks": 3075,
        "storage_corrupt": ("9f" * 32, "0a1b" * 16),
    }
    return wire.NodeStatus(**{**fields, **overrides})


def make_usage(**overrides: Any) -> wire.ReplicaUsage:
    fields: dict[str, Any] = {"replica_id": "web-0", "cpu_percent": 12.5, "memory_bytes": 64 * 2**20}
    return wire.ReplicaUsage(**{**fields, **overrides})


def make_heartbeat(**overrides: Any) -> wire.Heartbeat:
    fields: dict[str, Any] = {
        "node_id": "pi-1",
        "seq": 42,
        "ts": TS,
        "cpu_percent": 150.5,
        "memory_used_bytes": 3 * 2**30,
        "memory_total_bytes": 8 * 2**30,
        "disk_used_bytes": 10 * 2**30,
        "disk_total_bytes": 64 * 2**30,
        "battery_percent": 55.0,
        "replicas": (make_usage(), make_usage(replica_id="db-0", cpu_percent=0.5, memory_bytes=2**30)),
        "max_epoch": 7,
    }
    return wire.Heartbeat(**{**fields, **overrides})


def make_probe(**overrides: Any) -> wire.Probe:
    fields: dict[str, Any] = {
        "kind": wire.ProbeKind.HTTP,
        "command": ("curl", "-f", "http://localhost/healthz"),
        "path": "/healthz",
        "port": 8080,
        "initial_delay_s": 2.5,
        "period_s": 5.0,
        "timeout_s": 2.0,
        "success_threshold": 2,
        "failure_threshold": 5,
    }
    return wire.Probe(**{**fields, **overrides})


def make_security(**overrides: Any) -> wire.Security:
    fields: dict[str, Any] = {
        "run_as_user": 1000,
        "run_as_group": 1000,
        "run_as_non_root": True,
        "read_only_root_filesystem": True,
        "privileged": True,
        "allow_privilege_escalation": False,
        "capabilities_add": ("NET_BIND_SERVICE",),
        "capabilities_drop": ("ALL",),
        "seccomp": wire.SeccompType.LOCALHOST,
        "seccomp_profile": "web.json",
        "host_network": True,
        "host_pid": True,
        "host_ipc": True,
    }
    return wire.Security(**{**fields, **overrides})


def make_replica_spec(**overrides: Any) -> wire.ReplicaSpec:
    fields: dict[str, Any] = {
        "replica_id": "web-0",
        "workload": "web",
        "namespace": "home",
        "spec_hash": "sha256-9c1e",
        "image": "localhost/cloudless/web:1.2",
        "command": ("/bin/server",),
        "args": ("--port", "8080"),
        "env": {"LOG_LEVEL": "debug", "GREETING": "grüß dich"},
        "working_dir": "/srv",
        "cpu_millis": 500,
        "memory_bytes": 256 * 2**20,
        "ports": (wire.PortMapping(container_port=8080, host_port=18080, protocol=wire.Protocol.UDP),),
        "volumes": (
            wire.VolumeMount(name="cache", mount_path="/cache", medium="Memory", size_limit_bytes=2**26),
        ),
        "restart_policy": wire.RestartPolicy.ON_FAILURE,
        "liveness": make_probe(),
        "readiness": make_probe(kind=wire.ProbeKind.TCP, port=8081),
        "labels": {"app": "web"},
        "security": make_security(),
        "secret_env": (wire.SecretEnv(name="DB_PASSWORD", secret="db", key="password"),),
        "secret_volumes": (wire.SecretVolume(secret="tls", mount_path="/etc/tls", default_mode=0o440, items=(
            wire.SecretFile(key="tls.key", path="server.key", mode=0o400),)),),
        "secrets": (wire.SealedSecret(secret="db", version=3, box=bytes(range(120))),),
        "secret_update": wire.SecretUpdate.FILES,
    }
    return wire.ReplicaSpec(**{**fields, **overrides})


def make_desired(**overrides: Any) -> wire.DesiredState:
    fields: dict[str, Any] = {
        "node_id": "pi-1",
        "generation": 7,
        "epoch": 3,
        "issued_at": TS,
        "replicas": (make_replica_spec(),),
    }
    return wire.DesiredState(**{**fields, **overrides})


def make_replica_observed(**overrides: Any) -> wire.ReplicaObserved:
    fields: dict[str, Any] = {
        "replica_id": "web-0",
        "workload": "web",
        "state": wire.ReplicaState.CRASH_LOOP,
        "spec_hash": "sha256-9c1e",
        "ready": True,
        "restarts": 3,
        "exit_code": -9,
        "last_error": "OOMKilled",
        "started_at": TS - 60.0,
        "container_id": "c0ffee",
    }
    return wire.ReplicaObserved(**{**fields, **overrides})


def make_observed(**overrides: Any) -> wire.ObservedState:
    fields: dict[str, Any] = {
        "node_id": "pi-1",
        "generation": 7,
        "epoch": 3,
        "ts": TS,
        "replicas": (make_replica_observed(),),
    }
    return wire.ObservedState(**{**fields, **overrides})


def make_command(**overrides: Any) -> wire.CommandRequest:
    fields: dict[str, Any] = {
        "request_id": "req-1",
        "node_id": "pi-1",
        "command": wire.CommandName.EXEC,
        "reply_to": "cloudless/v1/node/pi-1/reply",
        "deadline": TS + 30.0,
        "args": {"replica_id": "web-0", "tty": "false"},
        "argv": ("ls", "-l", "/srv"),
        "sent": TS,
    }
    return wire.CommandRequest(**{**fields, **overrides})


def make_reply(**overrides: Any) -> wire.CommandReply:
    fields: dict[str, Any] = {
        "request_id": "req-1",
        "node_id": "pi-1",
        "ok": True,
        "ts": TS + 1.0,
        "exit_code": 2,
        "output": b"total 0\n\xff\xfe not utf-8",
        "error": "ls: cannot access",
    }
    return wire.CommandReply(**{**fields, **overrides})


def make_coord_status(**overrides: Any) -> wire.CoordinatorStatus:
    fields: dict[str, Any] = {
        "coordinator_id": "coord-a",
        "presence": wire.Presence.OFFLINE,
        "ts": TS,
        "api_url": "https://coord-a.local:8443",
        "version": "0.1.0",
    }
    return wire.CoordinatorStatus(**{**fields, **overrides})


def make_leader_claim(**overrides: Any) -> wire.LeaderClaim:
    fields: dict[str, Any] = {"coordinator_id": "coord-a", "epoch": 3, "ts": TS, "lease_until": TS + 15.0}
    return wire.LeaderClaim(**{**fields, **overrides})


def make_overlay_report(**overrides: Any) -> wire.OverlayReport:
    fields: dict[str, Any] = {
        "node_id": "pi-1",
        "ts": TS,
        "enabled": True,
        "disabled": "relay relay@b: no answer over UDP or TCP",  # a partial problem, shown beside a running overlay
        "port": 41641,
        "candidates": (wire.OverlayCandidate(wire.CandidateKind.REFLEXIVE, "203.0.113.7:61000", via="relay@vps"),),
        "relays": ("relay@vps",),
        "peers": (wire.PeerPath("laptop", wire.PathKind.DIRECT, relay="relay@vps", address="198.51.100.4:41641",
                                rtt_ms=12.5, bytes_out=1000, bytes_in=2000, since=TS - 60.0, changes=1,
                                last_error="direct path lost once"),),
        "punch_attempts": 3,
        "punch_successes": 2,
        "fallbacks": 1,
        "relay_bytes": 4096,
    }
    return wire.OverlayReport(**{**fields, **overrides})


def make_peer_directory(**overrides: Any) -> wire.PeerDirectory:
    fields: dict[str, Any] = {
        "node_id": "pi-1",
        "generation": 4,
        "epoch": 2,
        "ts": TS,
        "relays": (wire.RelayInfo("relay@vps", ("203.0.113.1:7000", "[2001:db8::1]:7000")),),
        "peers": (wire.PeerEntry("laptop", (wire.OverlayCandidate(wire.CandidateKind.REFLEXIVE, "198.51.100.4:41641",
                                                            via="relay@vps"),),
                                 ("relay@vps",), dial=True),),
        "revoked": ("1f2e3d",),
    }
    return wire.PeerDirectory(**{**fields, **overrides})


def make_service_table(**overrides: Any) -> wire.ServiceTable:
    fields: dict[str, Any] = {
        "node_id": "pi-1",
        "generation": 3,
        "epoch": 2,
        "ts": TS,
        "zone": "kitchen",
        "services": (wire.ServiceRecord(
            "web", "default", "127.77.0.10",
            ports=(wire.ServicePort(80, 8080, name="dns", protocol=wire.Protocol.UDP),),
            endpoints=(wire.ServiceEndpoint("laptop", "web-7f3a", zone="office", weight=3),),
            ingress=(wire.IngressPort(80, 8080),)),),
    }
    return wire.ServiceTable(**{**fields, **overrides})


def make_tty_input(**overrides: Any) -> wire.TtyInput:
    fields: dict[str, Any] = {
        "node_id": "pi-1",
        "session": "5e551017",
        "seq": 7,
        "ts": TS,
        "data": b"echo hi\r\x03\xff",
        "rows": 40,
        "cols": 132,
        "eof": True,
        "close": True,
    }
    return wire.TtyInput(**{**fields, **overrides})


def make_tty_output(**overrides: Any) -> wire.TtyOutput:
    fields: dict[str, Any] = {
        "node_id": "pi-1",
        "session": "5e551017",
        "seq": 9,
        "ts": TS + 1.0,
        "data": b"hi\r\n\x1b[0m\xfe",
        "exit_code": 3,
        "error": "input frames 4..6 lost",
    }
    return wire.TtyOutput(**{**fields, **overrides})


BUILDERS: dict[type, Callable[..., Any]] = {
    wire.NodeStatus: make_node_status,
    wire.Heartbeat: make_heartbeat,
    wire.DesiredState: make_desired,
    wire.ObservedState: make_observed,
    wire.CommandRequest: make_command,
    wire.CommandReply: make_reply,
    wire.OverlayReport: make_overlay_report,
    wire.PeerDirectory: make_peer_directory,
    wire.ServiceTable: make_service_table,
    wire.TtyInput: make_tty_input,
    wire.TtyOutput: make_tty_output,
    wire.CoordinatorStatus: make_coord_status,
    wire.LeaderClaim: make_leader_claim,
}


def make_message(cls: type) -> Any:
    """The fully populated builder message of kind `cls`."""
    return BUILDERS[cls]()


def kind_id(cls: type) -> str:
    """A readable pytest id for a message class."""
    return str(cls.KIND)  # type: ignore[attr-defined]


def unpopulated_fields(obj: Any, path: str = "") -> list[str]:
    """Paths of fields (recursively) that still hold their default, or whose containers are empty."""
    missing: list[str] = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        fpath = f"{path}.{f.name}" if path else f.name
        default = (
            f.default if f.default is not dataclasses.MISSING
            else f.default_factory() if f.default_factory is not dataclasses.MISSING
            else dataclasses.MISSING
        )
        if default is not dataclasses.MISSING and value == default:
            missing.append(fpath)
        if dataclasses.is_dataclass(value):
            missing += unpopulated_fields(value, fpath)
        elif isinstance(value, tuple):
            for i, item in enumerate(value):
                if dataclasses.is_dataclass(item):
                    missing += unpopulated_fields(item, f"{fpath}[{i}]")
    return missing


# Strings that are not identifiers (schema.ID_PATTERN): each is refused as a node id, a topic level, ...
BAD_IDS = {
    "slash": "a/b",
    "plus": "a+b",
    "hash": "a#b",
    "lone-plus": "+",
    "lone-hash": "#",
    "nul": "a\x00b",
    "too-long": "x" * 64,
    "empty": "",
    "leading-dash": "-a",
    "leading-dot": ".a",
    "dot-dot": "..",
    "space": "a b",
    "newline": "a\n",
    "non-ascii": "knoten-ü",
    "colon": "a:b",
    "at": "coordinator@main",
}

"""`cloudless agent`: parse the command line into an AgentConfig, pick the profile and runtime, run the daemon."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.errors import AgentError, ConfigError

if TYPE_CHECKING:
    from edge_agent.config import AgentConfig
    from edge_agent.identity import NodeIdentity

log = logging.getLogger("cloudless.agent")


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "cloudless-agent"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "agent", help="run the edge agent on this device",
        description="Run the Cloudless edge agent: it dials out to the MQTT broker, reports this device, and runs "
        "the workloads the coordinator assigns it (rootless Podman, or plain processes where containers are "
        "impossible). Workloads keep running while the broker is unreachable.",
    )
    p.add_argument("--broker", default=None, metavar="URL",
                   help="mqtt://HOST:PORT or mqtts://HOST:PORT (default: the broker named at enrolment)")
    p.add_argument("--token", default=None, help="enrolment token from `cloudless token create` (first start, or "
                   "re-enrolment after the certificate expired); prefer --token-file or $CLOUDLESS_TOKEN")
    p.add_argument("--token-file", type=Path, default=None, help="file holding the enrolment token")
    p.add_argument("--data-dir", type=Path, default=None,
                   help=f"node identity, local state and logs (default {default_data_dir()})")
    p.add_argument("--node-id", default=None,
                   help="this node's id (default: from the host name; kept in the data dir)")
    p.add_argument("--profile", default="auto", help="device profile name, or 'auto' to detect (default auto)")
    p.add_argument("--labels", default="", metavar="K=V,...",
                   help="node labels for placement, e.g. disk=ssd,room=attic")
    p.add_argument("--zone", default="", help="failure zone of this device (e.g. 'home', 'office')")
    p.add_argument("--runtime", choices=["auto", "podman", "process"], default="auto",
                   help="workload runtime (default: the profile's; podman if usable, else process)")
    p.add_argument("--podman-socket", type=Path, default=None,
                   help="Podman REST socket (default: $XDG_RUNTIME_DIR/podman/podman.sock, started if absent)")
    p.add_argument("--containers-conf", type=Path, default=os.environ.get("CONTAINERS_CONF") or None,
                   help="containers.conf for the Podman service this agent starts (default $CONTAINERS_CONF)")
    p.add_argument("--username", default=None, help="broker username (default: the node id)")
    p.add_argument("--password-file", type=Path, default=None,
                   help="file holding a broker password: password authentication instead of the enrolled "
                   "certificate (development, or brokers without mutual TLS)")
    p.add_argument("--tls-ca", type=Path, default=None, help="CA bundle to verify the broker (mqtts)")
    p.add_argument("--heartbeat-interval", type=float, default=None, metavar="SECONDS",
                   help="override the profile's sampling interval (gates, usage); given alone, a heartbeat goes "
                   "every SECONDS (development, tests)")
    p.add_argument("--heartbeat-max-interval", type=float, default=None, metavar="SECONDS",
                   help="override the profile's longest silence between heartbeats (between, a heartbeat goes only "
                   "when a reading moved past the profile's thresholds; docs/control-link.md)")
    p.add_argument("--keepalive", type=int, default=None, metavar="SECONDS",
                   help="override the profile's MQTT keep-alive: a silent power-off is noticed after ~1.5 x this "
                   "(5-65535)")
    p.add_argument("--reconcile-interval", type=float, default=2.0, metavar="SECONDS",
                   help="how often to check workloads against the desired state (default 2)")
    p.add_argument("--sensor-file", type=Path, default=None,
                   help="read battery/temperature readings from this JSON file instead of the device's sensors "
                   '(e.g. {"battery_percent": 40, "charging": false, "temperatures": {"cpu": 50}}); for devices '
                   "whose sensors psutil cannot read, fed by a script, and for testing gates")
    p.add_argument("--metrics-listen", default="auto", metavar="HOST:PORT|off|auto",
                   help="serve Prometheus metrics at http://HOST:PORT/metrics; 'auto' (default) is 127.0.0.1:9471 "
                   "(loopback only), or off on phones; use 0.0.0.0:9471 to let a Prometheus elsewhere scrape it")
    p.add_argument("--overlay-port", type=int, default=41641, metavar="PORT",
                   help="UDP port of the QUIC overlay between devices (default 41641; 0: any free port)")
    p.add_argument("--no-overlay", action="store_true",
                   help="run without the overlay (workloads still run; the node reports it has none)")
    p.add_argument("--storage-quota", default=None, metavar="SIZE",
                   help="disk space this node offers the cluster's object store (S3), in bytes or e.g. 20G, 500MiB, "
                   "1.5GiB; 0 offers none (default: the profile's [storage] quota, at most half the free disk; none "
                   "on phones and battery devices)")
    p.add_argument("--storage-dir", type=Path, default=None, metavar="PATH",
                   help="where this node keeps the object store's chunks (default DATA_DIR/chunks)")
    p.add_argument("--no-services", action="store_true",
                   help="run without services: no service names or addresses inside this node's workloads (by "
                   "default containers resolve through the agent and processes get <SVC>_SERVICE_HOST/_PORT)")
    p.add_argument("--no-s3-endpoint", action="store_true",
                   help="do not serve the cluster's S3 endpoint to this node's workloads (by default, while the "
                   "cluster runs an S3 gateway, containers reach it as http://s3.cloudless and processes through "
                   "AWS_ENDPOINT_URL_S3, over the overlay)")
    p.set_defaults(func=_cmd_agent)


def _read_secret(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"--password-file: cannot read {path}: {exc.strerror}") from None


def build_config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from broker.client import Secret
    from edge_agent.config import AgentConfig, parse_broker_url, parse_labels, parse_storage_quota, resolve_node_id

    if not 0 <= args.overlay_port <= 65535:
        raise ConfigError(f"--overlay-port: {args.overlay_port} is not a UDP port (0-65535)")
    if args.reconcile_interval <= 0 or (args.heartbeat_interval is not None and args.heartbeat_interval <= 0):
        raise ConfigError("--reconcile-interval/--heartbeat-interval: must be positive")
    max_interval = getattr(args, "heartbeat_max_interval", None)
    if max_interval is not None and not 1 <= max_interval <= 7 * 86400:
        raise ConfigError(f"--heartbeat-max-interval: must be 1-604800 seconds, got {max_interval:g}")
    keepalive = getattr(args, "keepalive", None)
    if keepalive is not None and not 5 <= keepalive <= 65535:
        raise ConfigError(f"--keepalive: must be 5-65535 seconds (MQTT's 16-bit keep-alive), got {keepalive}")
    storage_quota = parse_storage_quota(getattr(args, "storage_quota", None))
    storage_dir = getattr(args, "storage_dir", None)
    data_dir = (args.data_dir or default_data_dir()).resolve()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    node_id = resolve_node_id(data_dir, args.node_id)
    password = _read_secret(args.password_file)
    token = _read_secret(args.token_file) or args.token or os.environ.get("CLOUDLESS_TOKEN") or None
    if password is None and token is None and not (data_dir / "identity" / "node.pem").exists():
        raise ConfigError("this node has no identity yet: enrol it with --token TOKEN (from `cloudless token "
                          "create` on the coordinator), or use --password-file for password authentication")
    if args.broker is None and password is not None:
        raise ConfigError("--broker: required with --password-file")
    return AgentConfig(
        broker=parse_broker_url(args.broker) if args.broker else None, data_dir=data_dir, node_id=node_id,
        username=args.username or node_id, password=Secret(password) if password is not None else None,
        profile=args.profile, runtime=args.runtime, labels=parse_labels(args.labels), zone=args.zone,
        podman_socket=args.podman_socket, containers_conf=args.containers_conf,
        heartbeat_interval_s=args.heartbeat_interval, heartbeat_max_interval_s=max_interval, keepalive_s=keepalive,
        reconcile_interval_s=args.reconcile_interval,
        tls_ca=args.tls_ca, sensor_file=args.sensor_file, token=Secret(token) if token else None,
        metrics_listen=_metrics_flag(args.metrics_listen), version=getattr(args, "version", "0+unknown"),
        overlay=not args.no_overlay, overlay_port=args.overlay_port,
        storage_quota_bytes=storage_quota, storage_dir=storage_dir.resolve() if storage_dir is not None else None,
    )


def _metrics_flag(text: str) -> str:
    from edge_agent.metrics import parse_listen

    if text.strip().lower() != "auto":
        parse_listen(text)  # checked now: a typo is a usage error, not a surprise at startup
    return text.strip()


def slim_podman_imports() -> None:
    """Keep out what podman-py and requests import only because it happens to be installed, and the agent never
    uses (a None entry in sys.modules fails their optional import as if the package were absent):
    - rich (3 MiB): podman-py's image-pull progress bars (amqtt, the embedded broker, installs rich); the agent
      reports pull progress itself;
    - chardet / charset_normalizer (2.3 MiB): requests guessing the charset of a text body that names none; the
      agent reads only Podman's JSON API, which is UTF-8 — requests' own fallback without them (it warns about
      that once at import; the warning is silenced here)."""
    for name in ("rich.progress", "chardet", "charset_normalizer"):
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]
    warnings.filterwarnings("ignore", message="Unable to find acceptable character detection", module="requests")


def choose_runtime(cfg, runtime_name: str, *, services: bool = False):  # type: ignore[no-untyped-def]
    """The runtime adapter: explicit choice, else the profile's, else Podman when installed; the process runtime, with
    one warning, when the agent was installed without its Podman support (edge_agent.runtime.choice)."""
    from edge_agent.runtime import choice

    picked = choice.choose(runtime_name)
    if picked.warning:
        logging.getLogger("cloudless.agent").warning("%s", picked.warning)
    if picked.name == "podman":
        slim_podman_imports()
        from edge_agent.runtime.podman import PodmanRuntime

        return PodmanRuntime(node_id=cfg.node_id, cluster=cfg.cluster_id, adopt=known_replicas(cfg.data_dir),
                             socket_path=cfg.podman_socket, containers_conf=cfg.containers_conf, services=services)
    from edge_agent.runtime.process import ProcessRuntime

    return ProcessRuntime(node_id=cfg.node_id, cluster=cfg.cluster_id, root=cfg.data_dir / "process",
                          adopt=known_replicas(cfg.data_dir))


def known_replicas(data_dir: Path) -> frozenset[str]:
    """The replicas this agent's local state knows: instances made before they carried a cluster label are adopted
    only if they are among these (`runtime.base.Owner`)."""
    from edge_agent.state import StateStore

    local = StateStore(data_dir).load()
    wanted = {s.replica_id for s in local.desired.replicas} if local.desired is not None else set()
    return frozenset(wanted | set(local.records))


def _no_identity(kind: str, value: str) -> None:
    """Without the `cloudless` command's log setup (a caller that builds args itself) there is no log prefix."""


def _no_log_file(path: Path) -> None:
    """Without the `cloudless` command's log setup the agent logs only to its stderr."""


async def run(cfg, *, log_identity: Callable[[str, str], None] = _no_identity,  # type: ignore[no-untyped-def]
              log_to_file: Callable[[Path], None] = _no_log_file, services: bool = True,
              s3_endpoint: bool = True) -> int:
    """Run the agent until SIGINT/SIGTERM. `log_identity`/`log_to_file`: the `cloudless` command's log setup
    (args.log_identity, args.log_to_file: the daemons never import that package). `services`: False for
    --no-services, `s3_endpoint`: False for --no-s3-endpoint (edge_agent.services)."""
    from broker import wire
    from broker.client import ClientTls, MqttClient, MqttSettings, Will
    from broker.wire import NodeStatus, Presence, topics
    from edge_agent import cluster
    from edge_agent.agent import Agent
    from edge_agent.config import StorageSettings, parse_broker_url
    from edge_agent.gating import Gate
    from edge_agent.profile import select_profile
    from edge_agent.services import ServiceSettings

    log_identity("node", cfg.node_id)
    log_to_file(cfg.data_dir / "logs" / "agent.log")  # the device keeps its own recent history (rotated)
    profile = select_profile(cfg.profile)
    log.info("node %s: profile %s (%s)", cfg.node_id, profile.name, profile.why)
    policy, keepalive = profile.beat_policy(cfg.heartbeat_interval_s, cfg.heartbeat_max_interval_s), \
        profile.keepalive_s(cfg.keepalive_s)
    log.info("control link: MQTT keep-alive %ds (a silent power-off is noticed after ~%.0fs), a heartbeat at least "
             "every %.0fs, readings sampled every %.0fs", keepalive, 1.5 * keepalive, policy.max_interval_s,
             policy.min_interval_s)
    will = NodeStatus(node_id=cfg.node_id, presence=Presence.OFFLINE, ts=0.0, schedulable=False)
    identity = None
    if cfg.password is None:
        identity = await _identity(cfg)
        # labels and zone from the enrolment token; the command line adds to and overrides them
        cfg = dataclasses.replace(cfg, labels={**dict(identity.labels), **cfg.labels}, zone=cfg.zone or identity.zone)
    broker = cfg.broker or parse_broker_url(identity.broker_url if identity else "")
    cfg = dataclasses.replace(cfg, cluster_id=cluster.of_ca_file(identity.ca) if identity is not None
                              else cluster.remembered(cfg.data_dir, cluster.of_broker(broker.host, broker.port)))
    log.info("node %s of cluster %s", cfg.node_id, cfg.cluster_id)
    runtime = choose_runtime(cfg, cfg.runtime if cfg.runtime != "auto" else profile.runtime, services=services)
    tls: ClientTls | None
    if identity is not None:
        tls = ClientTls(ca_file=identity.ca, cert_file=identity.cert, key_file=identity.key)
    else:
        tls = ClientTls(ca_file=cfg.tls_ca) if broker.tls else None
    settings = MqttSettings(
        host=broker.host, port=broker.port, client_id=cfg.node_id,
        username=None if identity else cfg.username, password=cfg.password, tls=tls,
        keepalive_s=keepalive,
        clean_session=True, will=Will(topics.node_status(cfg.node_id), wire.encode(will), qos=1, retain=True),
    )
    storage = StorageSettings(root=cfg.chunks_dir, state_file=cfg.data_dir / "storage-state.json",
                              quota_flag=cfg.storage_quota_bytes, profile_quota=profile.profile.storage.quota_bytes,
                              profile=profile.name)
    agent = Agent(cfg, runtime=runtime, mqtt=MqttClient(settings), gate=Gate(profile.profile, cfg.sensor_file),
                  profile_name=profile.name, heartbeat_interval_s=cfg.heartbeat_interval_s or profile.heartbeat_s,
                  beat=policy, keepalive_s=keepalive,
                  identity=identity, services=ServiceSettings(enabled=services, builtins=s3_endpoint), storage=storage)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await agent.start()
    listener = await _start_metrics(cfg, agent, phone=profile.profile.metered and profile.profile.battery is not None)
    until = ""
    if identity is not None:
        until = f", certificate until {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(identity.not_after))}"
    print(f"cloudless agent: node {cfg.node_id} running ({agent.runtime_info.name}"
          f"{', rootless' if agent.runtime_info.rootless else ''}), broker "
          f"{'mqtts' if broker.tls else 'mqtt'}://{broker.host}:{broker.port}{until}"
          + (f", metrics {listener.url}" if listener is not None else "")
          + (f", storage {agent.storage.quota.bytes} bytes in {agent.storage.store.root}"
             if agent.storage is not None else ""), flush=True)
    await stop.wait()
    log.info("stopping the agent (workloads keep running)")
    if listener is not None:
        await listener.close()
    await agent.stop()
    return 0


async def _start_metrics(cfg, agent, *, phone: bool):  # type: ignore[no-untyped-def]
    from edge_agent.metrics import MetricsListener, default_listen, parse_listen, render

    text = default_listen(phone=phone) if cfg.metrics_listen.lower() == "auto" else cfg.metrics_listen
    where = parse_listen(text)
    if where is None:
        log.info("metrics listener off (--metrics-listen HOST:PORT turns it on)")
        return None
    listener = MetricsListener(lambda: render(agent.metrics_sample()))
    try:
        await listener.start(*where)
    except OSError as exc:  # the agent's job is the workloads: a taken port must not stop it
        log.error("metrics listener not started on %s: %s; pick another with --metrics-listen", text, exc)
        return None
    log.info("metrics on %s", listener.url)
    return listener


async def _identity(cfg: AgentConfig) -> NodeIdentity:
    """The enrolled identity, enrolling (or re-enrolling after expiry) with the token when needed."""
    from edge_agent import identity as ident

    current = ident.load(cfg.data_dir)
    now = time.time()
    if current is not None and not current.expired(now):
        return current
    if cfg.token is None:
        assert current is not None  # build_config refused a node with neither identity nor token
        raise ConfigError(
            f"the node certificate expired at {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(current.not_after))} "
            "(the node was offline past its lifetime): re-enrol with --token NEW_TOKEN from `cloudless token create`; "
            "its workloads keep running meanwhile")
    why = "expired certificate" if current is not None else "first start"
    log.info("enrolling node %s (%s) ...", cfg.node_id, why)
    enrolled = await asyncio.to_thread(ident.enrol_isolated, cfg.data_dir, cfg.node_id, str(cfg.token))
    log.info("enrolled: certificate valid until %s", time.strftime("%Y-%m-%d %H:%M UTC",
                                                                   time.gmtime(enrolled.not_after)))
    return enrolled


def _cmd_agent(args: argparse.Namespace) -> int:
    try:
        cfg = build_config(args)
        from broker.listeners import raise_nofile_limit

        raise_nofile_limit()  # issue 16: the agent opens workloads' logs, sockets and podman's API
        return asyncio.run(run(cfg, log_identity=getattr(args, "log_identity", _no_identity),
                               log_to_file=getattr(args, "log_to_file", _no_log_file),
                               services=not args.no_services,
                               s3_endpoint=not getattr(args, "no_s3_endpoint", False)))
    except AgentError as exc:
        print(f"cloudless agent: error: {exc}", flush=True)
        return 2

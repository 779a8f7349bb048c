"""`cloudless coordinator`: run a coordinator (REST API + scheduler + reconciler) against a broker."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
from pathlib import Path

from coordinator.errors import CoordinatorError

log = logging.getLogger("cloudless.coordinator")
TOKENS_FILE = "api-tokens.json"


class CoordinatorConfigError(CoordinatorError):
    pass


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "coordinator", help="run a coordinator (REST API, scheduler, reconciler)",
        description="Run a Cloudless coordinator: it keeps cluster state in its data dir, serves the REST API, "
        "schedules replicas onto nodes and publishes each node's desired state over MQTT.",
    )
    p.add_argument("--broker", required=True, metavar="URL", help="mqtt://HOST:PORT")
    p.add_argument("--api", default="127.0.0.1:8470", metavar="HOST:PORT",
                   help="where the REST API listens (default 127.0.0.1:8470; port 0 picks a free one)")
    p.add_argument("--data-dir", type=Path, required=True, help="state database, API tokens")
    p.add_argument("--id", default="main", help="this coordinator's id (default main)")
    p.add_argument("--username", default=None, help="broker username (default coordinator@<id>)")
    p.add_argument("--password-file", type=Path, default=None, help="file holding the broker password")
    p.add_argument("--lost-after", type=float, default=30.0, metavar="SECONDS",
                   help="grace period before replicas of a node that went offline cleanly are replaced "
                   "(default 30; a crashed node, seen by its last will, is replaced at once)")
    p.add_argument("--heartbeat-ttl", type=float, default=45.0, metavar="SECONDS",
                   help="silence after which a node is suspect (default 45)")
    p.set_defaults(func=_cmd_coordinator)


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise CoordinatorConfigError(f"--api: expected HOST:PORT, got {text!r}")
    return host or "127.0.0.1", int(port)


def load_token_digests(data_dir: Path) -> dict[str, str]:
    path = data_dir / TOKENS_FILE
    try:
        doc = json.loads(path.read_text())
        return {t["sha256"]: t["name"] for t in doc["tokens"]}
    except FileNotFoundError:
        raise CoordinatorConfigError(f"{path} is missing: create an admin token with `cloudless up` "
                                     "(or write {\"tokens\": [{\"name\": ..., \"sha256\": ...}]})") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise CoordinatorConfigError(f"{path}: not a valid token file ({exc})") from None


def write_token_digests(data_dir: Path, tokens: dict[str, str]) -> None:
    """name -> raw token; only the sha256 digests are stored (0600)."""
    from coordinator.api import token_digest

    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / TOKENS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    tmp.chmod(0o600)
    tmp.write_text(json.dumps({"tokens": [{"name": n, "sha256": token_digest(t)} for n, t in tokens.items()]}))
    tmp.replace(path)


def _cmd_coordinator(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args))
    except CoordinatorError as exc:
        print(f"cloudless coordinator: error: {exc}", flush=True)
        return 2


async def _run(args: argparse.Namespace) -> int:
    from urllib.parse import urlsplit

    from broker import wire
    from broker.client import MqttClient, MqttSettings, Secret, Will
    from broker.wire import CoordinatorStatus, Presence, topics, valid_id
    from coordinator.api import Api, serve
    from coordinator.membership import MembershipConfig
    from coordinator.service import Coordinator, CoordinatorConfig
    from coordinator.store import SqliteStore

    if not valid_id(args.id):
        raise CoordinatorConfigError(f"--id: {args.id!r} is not a valid id")
    parts = urlsplit(args.broker)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise CoordinatorConfigError(f"--broker: expected mqtt://HOST:PORT, got {args.broker!r}")
    host, port = _hostport(args.api)
    data_dir: Path = args.data_dir.resolve()
    tokens = load_token_digests(data_dir)
    password = None
    if args.password_file is not None:
        try:
            password = Secret(args.password_file.read_text().strip())
        except OSError as exc:
            raise CoordinatorConfigError(f"--password-file: {exc.strerror}") from None
    will = CoordinatorStatus(coordinator_id=args.id, presence=Presence.OFFLINE, ts=0.0)
    settings = MqttSettings(host=parts.hostname, port=parts.port or 1883, client_id=args.username or
                            f"coordinator@{args.id}", username=args.username or f"coordinator@{args.id}",
                            password=password, keepalive_s=10,
                            will=Will(topics.coord_status(args.id), wire.encode(will), qos=1, retain=True))
    store = SqliteStore(data_dir / "state.db")
    cfg = CoordinatorConfig(coordinator_id=args.id, membership=MembershipConfig(
        heartbeat_ttl_s=args.heartbeat_ttl, lost_after_s=args.lost_after))
    coord = Coordinator(cfg, store=store, mqtt=MqttClient(settings))
    await coord.start()
    runner, bound = await serve(Api(coord, token_digests=tokens), host, port)
    coord.cfg = CoordinatorConfig(**{**cfg.__dict__, "api_url": f"http://{host}:{bound}"})
    print(f"cloudless coordinator: API on http://{host}:{bound} (epoch {coord.epoch})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    await runner.cleanup()
    await coord.stop()
    await store.close()
    return 0

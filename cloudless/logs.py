"""Log setup for every daemon: `--log-format text|json` and `--log-level`.

JSON lines carry `ts`, `level`, `logger`, `msg`, the daemon's identity (`node` or `coordinator`, set once the
daemon knows it) and `exc` for tracebacks. Messages are formatted by the code that logs them, which never
passes a token, key or payload (secrets are wrapped in types whose repr is redacted)."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

_identity: dict[str, str] = {}


def set_identity(kind: str, value: str) -> None:
    """Stamp every following log line with e.g. node=pi-kitchen or coordinator=main."""
    _identity[kind] = value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_identity,
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        return f"[{' '.join(f'{k}={v}' for k, v in _identity.items())}] {line}" if _identity else line


def configure(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if level != "DEBUG":  # amqtt and its state machine narrate every packet at INFO
        for noisy in ("amqtt", "transitions"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def to_file(path: Path, *, max_bytes: int = 1024 * 1024, backups: int = 3) -> None:
    """Also write the log to `path`, rotated (small devices: at most (backups + 1) x max_bytes on disk), in the
    format already chosen for stderr. A file that cannot be opened is reported, never fatal."""
    from logging.handlers import RotatingFileHandler

    root = logging.getLogger()
    formatter = root.handlers[0].formatter if root.handlers else TextFormatter()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        handler = RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
    except OSError as exc:
        logging.getLogger(__name__).warning("cannot log to %s: %s", path, exc)
        return
    handler.setFormatter(formatter)
    root.addHandler(handler)

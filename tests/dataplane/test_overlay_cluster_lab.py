"""The overlay as a user gets it (tests/lab): `cloudless up --advertise` on a public machine (broker, coordinator and
relay), real agents enrolled with a token on devices behind three NATs, and the CLI asking for connections. Nothing
in the test talks to the overlay itself: the agents learn their peers from the coordinator over MQTT, connect through
the relay `up` started, punch through the NATs, report their paths, and the CLI shows them.

    internet ── vps (cloudless up --advertise)
       ├── home NAT (port-restricted) ── pi, pi2     (same LAN)
       ├── cafe NAT (full cone)        ── laptop
       └── mobile NAT (symmetric)      ── phone
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab.netlab import Host, Lab, NatKind

pytestmark = pytest.mark.integration

REPO = str(Path(__file__).resolve().parents[2])
DEVICES = ("pi", "pi2", "laptop", "phone")


def env(home: Path, **extra: str) -> dict[str, str]:
    return {"PYTHONPATH": REPO, "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
            "CLOUDLESS_LOG_LEVEL": "INFO", **extra}


def until(pred: Callable[[], Any], timeout: float, what: str, logs: Callable[[], str] = lambda: "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except (AssertionError, subprocess.SubprocessError, ValueError, KeyError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})\n{logs()}")


class Cluster:
    def __init__(self, lab: Lab, tmp: Path) -> None:
        self.lab, self.tmp = lab, tmp
        inet = lab.network("inet")
        self.vps = lab.host("vps", inet)
        home = lab.nat("home", inet, NatKind.PORT_RESTRICTED)
        cafe = lab.nat("cafe", inet, NatKind.FULL_CONE)
        mobile = lab.nat("mobile", inet, NatKind.SYMMETRIC)
        self.hosts: dict[str, Host] = {"pi": lab.host("pi", home.lan), "pi2": lab.host("pi2", home.lan),
                                       "laptop": lab.host("laptop", cafe.lan), "phone": lab.host("phone", mobile.lan)}
        self.config = tmp / "cli.json"
        self.logs: dict[str, Path] = {}

    def start_up(self) -> None:
        log = self.tmp / "up.log"
        self.logs["up"] = log
        proc = self.vps.popen(sys.executable, "-u", "-m", "cloudless", "up", "--advertise", self.vps.addr, "--no-agent",
                              "--data-dir", str(self.tmp / "vps"), "--config", str(self.config),
                              stdout=log.open("w"), stderr=subprocess.STDOUT, env=env(self.tmp))
        until(lambda: "Press Ctrl-C to stop." in log.read_text() or proc.poll() is not None, 90,
              "cloudless up on the vps")
        assert proc.poll() is None, log.read_text()

    def cli(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        out = self.vps.run(sys.executable, "-m", "cloudless", *args, check=False, timeout=timeout,
                           env=env(self.tmp, CLOUDLESS_CONFIG=str(self.config)))
        if check:
            assert out.returncode == 0, f"cloudless {' '.join(args)}: {out.stdout}\n{out.stderr}\n{self.tail()}"
        return out

    def json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "-o", "json").stdout)

    def start_agent(self, name: str, token: str) -> None:
        log = self.tmp / f"{name}.log"
        self.logs[name] = log
        self.hosts[name].popen(sys.executable, "-u", "-m", "cloudless", "agent", "--token", token, "--node-id", name,
                               "--data-dir", str(self.tmp / name), "--runtime", "process", "--metrics-listen", "off",
                               stdout=log.open("w"), stderr=subprocess.STDOUT, env=env(self.tmp))

    def peer(self, node: str, peer: str) -> dict[str, Any] | None:
        rows = self.json("get", "peers", node)["items"]
        return next((r for r in rows if r["peer"] == peer), None)

    def tail(self) -> str:
        return "\n".join(f"--- {name}:\n" + "\n".join(p.read_text(errors="replace").splitlines()[-25:])
                         for name, p in self.logs.items() if p.exists())


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with Lab() as lab:
        c = Cluster(lab, tmp_path)
        c.start_up()
        token = json.loads(c.cli("token", "create", "--max-uses", str(len(DEVICES)), "-o", "json").stdout)["token"]
        for name in DEVICES:
            c.start_agent(name, token)
        until(lambda: {n["id"] for n in c.json("get", "nodes")["items"] if n["online"]} >= set(DEVICES), 60,
              "every device enrolled and online", c.tail)
        yield c


def test_enrolled_devices_reach_each_other_through_the_coordinator_relay_and_nats(cluster: Cluster) -> None:
    c = cluster
    status = c.json("overlay", "status")
    assert [r["id"] for r in status["relays"]] == ["relay@local"]
    until(lambda: all(n["enabled"] and n["relays"] == ["relay@local"] for n in c.json("overlay", "status")["nodes"]),
          30, "every device's overlay on, linked to the relay", c.tail)

    # a kept connection: the coordinator tells both, they connect through the relay and punch to a direct path
    c.cli("overlay", "connect", "pi", "laptop")
    row = until(lambda: (r := c.peer("laptop", "pi")) and r["path"] == "direct" and r, 45,
                "laptop -> pi direct (full cone <-> port-restricted)", c.tail)
    assert row["rttMs"] is not None and row["wanted"] is True
    out = c.cli("get", "peers", "pi", "-o", "wide").stdout
    assert "laptop" in out and "direct" in out

    # pings ask a device to reach another; the path is the one the NATs allow
    lan = json.loads(c.cli("overlay", "ping", "pi", "pi2", "--count", "3", "-o", "json", timeout=90).stdout)
    assert len(lan["rttsMs"]) == 3
    until(lambda: (r := c.peer("pi", "pi2")) and r["path"] == "lan", 30, "pi -> pi2 over the LAN", c.tail)
    relayed = json.loads(c.cli("overlay", "ping", "phone", "pi", "-o", "json", timeout=90).stdout)
    assert relayed["rttsMs"] and relayed["path"] == "relayed" and relayed["relay"] == "relay@local"
    # symmetric <-> port-restricted: ordinary punching cannot work; after 10 s birthday punching finds a path
    until(lambda: (r := c.peer("phone", "pi")) and r["path"] == "direct", 60,
          "phone -> pi direct by birthday punching (symmetric <-> port-restricted)", c.tail)
    hard_easy = json.loads(c.cli("overlay", "ping", "phone", "laptop", "-o", "json", timeout=90).stdout)
    assert hard_easy["rttsMs"]
    until(lambda: (r := c.peer("phone", "laptop")) and r["path"] == "direct", 30,
          "phone -> laptop direct (symmetric <-> full cone)", c.tail)
    text = c.cli("overlay", "ping", "laptop", "pi").stdout
    assert text.startswith("laptop -> pi: direct ")

    # what people see: NAT classes, path events, metrics
    nats = {n["node"]: n["nat"] for n in c.json("overlay", "status")["nodes"]}
    assert set(nats.values()) <= {"nat-unknown", "udp-blocked", "public"} and nats["pi"] == "nat-unknown"
    events = c.cli("get", "events", "node/laptop").stdout
    assert "laptop -> pi: direct" in events

    # a revoked device is cut off: its live connections end, and the others report it gone
    c.cli("node", "revoke", "laptop")
    until(lambda: (r := c.peer("pi", "laptop")) is None or r["path"] in ("down", "connecting"), 30,
          "pi's connection to the revoked laptop cut", c.tail)

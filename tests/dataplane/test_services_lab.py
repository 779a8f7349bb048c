"""Services across devices as a user gets them (issue 19), in the network-namespace lab: `cloudless up --advertise`
on a public machine, real agents enrolled by token behind different NATs, workloads applied with the CLI, clients
that are real containers (rootful and rootless Podman) and real processes. Nothing in the test talks to the proxy or
the overlay: the coordinator tells every agent its services, and traffic goes where the tables send it.

    internet ── vps (cloudless up --advertise: broker, coordinator, relay) ── "the internet" clients
       ├── home NAT (port-restricted) ── svc-a  rootful Podman  zone east  web-a, split-a, client-a (containers)
       ├── cafe NAT (full cone)        ── svc-b  process        zone east  web-b, split-b (busybox httpd processes)
       ├── svc-c (public)                        process        zone west  web-c, client-c; split's ingress :18080
       └── mobile NAT (symmetric)      ── svc-r  rootless Podman (no zone)  client-r (container)

Every replica serves its own name ("a", "b", "c", "split-a", "split-b"), so a client sees who answered.

- `web` (port 8080, SRV _http._tcp) is backed by three workloads, one per node, each gated by a readiness probe
  on a file the test creates or removes; `split` (port 80 -> 8081) by split-a (weight 3) and split-b (weight 1),
  published as ingress on svc-c's host port 18080.
- One module-scoped cluster; the tests run in file order on it and leave it as they found it (the last one kills
  svc-b's agent). About a minute here (cluster up ~8 s); `pytest -s` prints the measured numbers: the locality
  counts, the 3:1 split, the times from kill -9 to the coordinator's verdict, to the client node's table change and
  to the first answer from elsewhere.
- Busybox 1.35 (Debian bookworm, the test image's) segfaults on `wget -T`: fetches are bounded with `timeout`.
"""

from __future__ import annotations

import collections
import json
import os
import pwd
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.dataplane.services_lab import REPO, LabAgent
from tests.dataplane.test_overlay_cluster_lab import until
from tests.install.lab_fabric import CONTAINERS_CONF, IMAGE, Coordinator, tail
from tests.integration.agent_env import ROOTLESS_USER
from tests.integration.podman_env import require_podman
from tests.lab.netlab import Host, Lab, NatKind
from tests.need import require_root, unavailable

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

A, B, C, R = "svc-a", "svc-b", "svc-c", "svc-r"
WEB = "web.default.svc.cloudless"
INGRESS_PORT = 18080
NON_ROOT = {"runAsNonRoot": True, "runAsUser": 65534, "capabilities": {"drop": ["ALL"]},
            "allowPrivilegeEscalation": False}
SMALL = {"requests": {"cpu": "10m", "memory": "8Mi"}, "limits": {"cpu": "200m", "memory": "64Mi"}}
# readiness: a file the test creates (ready) or removes (unready); checked twice a second, one miss is enough
READY_FILE = {"exec": {"command": ["test", "-f", "ready"]}, "periodSeconds": 0.5, "failureThreshold": 1}
LOCAL_N = 1000  # connections that must all stay on the client's node
SPILL_N = 200  # connections per spill stage
SPLIT_N = 2000  # connections split 3:1


def doc(name: str, spec: dict[str, Any]) -> str:
    return json.dumps({"apiVersion": "cloudless/v1", "kind": "Workload", "metadata": {"name": name}, "spec": spec})


def httpd_container(name: str, site: str, body: str, port: int, service: dict[str, Any],
                    ready_at_start: bool) -> str:
    """busybox httpd in a container on the node labelled site=`site`, serving `body`; ready while /tmp/ready is
    there (the probe's cwd is the container's /)."""
    script = (f"mkdir -p /tmp/www && echo {body} > /tmp/www/index.html && "
              + ("touch /tmp/ready && " if ready_at_start else "") + f"exec httpd -f -p {port} -h /tmp/www")
    # a probe in a container is a Podman exec (the image has no `test` binary: a shell runs it), which can take over
    # a second on a loaded 2-core machine
    probe = {**READY_FILE, "exec": {"command": ["sh", "-c", "test -f /tmp/ready"]}, "timeoutSeconds": 10}
    return doc(name, {"runtime": "container", "image": IMAGE, "command": ["sh", "-c", script],
                      "ports": [{"name": "http", "containerPort": port}], "readinessProbe": probe,
                      "placement": {"nodeSelector": {"site": site}}, "securityContext": NON_ROOT,
                      "resources": SMALL, "service": service})


def httpd_process(name: str, site: str, body: str, port: int, service: dict[str, Any]) -> str:
    """busybox httpd as a process (cwd: the instance's work dir), ready while ./ready is there. Paths are relative:
    a root agent runs the process as 65534, which may not traverse the agent's data dir to its own $HOME."""
    script = (f"mkdir -p www && echo {body} > www/index.html && touch ready && "
              f"exec /bin/busybox httpd -f -p {port} -h www")
    return doc(name, {"runtime": "process", "command": ["/bin/sh", "-c", script],
                      "ports": [{"name": "http", "containerPort": port}], "readinessProbe": READY_FILE,
                      "placement": {"nodeSelector": {"site": site}}, "securityContext": NON_ROOT,
                      "resources": SMALL, "service": service})


WEB_SVC = {"name": "web", "ports": [{"port": 8080, "targetPort": 8080, "name": "http"}]}


def split_svc(weight: int) -> dict[str, Any]:
    return {"name": "split", "weight": weight, "ports": [{"port": 80, "targetPort": 8081, "name": "http"}],
            "ingress": [{"port": 80, "hostPort": INGRESS_PORT, "nodes": [C]}]}


@dataclass
class Svc:
    lab: Lab
    coord: Coordinator
    vps: Host
    agents: dict[str, LabAgent]
    rootless_error: str = ""  # why the rootless agent could not run here ("" when it does)
    numbers: dict[str, str] = field(default_factory=dict)

    def logs(self) -> str:
        replicas = self.coord.cli("get", "replicas", "-o", "wide", check=False).stdout
        return "\n".join([f"--- cloudless get replicas:\n{replicas}", tail(self.coord.log, 2500, "coordinator"),
                          *(a.tail() for a in self.agents.values())])

    def until(self, pred: Callable[[], Any], timeout: float, what: str) -> Any:
        return until(pred, timeout, what, self.logs)

    def until_eq(self, get: Callable[[], Any], want: Any, timeout: float, what: str) -> None:
        """Poll `get()` until it equals `want`; the failure shows the last value."""
        seen: list[Any] = [None]

        def check() -> bool:
            seen[0] = get()
            return bool(seen[0] == want)

        try:
            until(check, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nlast: {seen[0]!r}, want {want!r}\n{self.logs()}") from None

    def until_answers(self, get: Callable[[], collections.Counter[str]],
                      ok: Callable[[collections.Counter[str]], bool], timeout: float,
                      what: str) -> collections.Counter[str]:
        """Poll a client until its answers satisfy `ok`; the failure shows the last answers."""
        seen: list[collections.Counter[str]] = [collections.Counter()]

        def check() -> bool:
            seen[0] = get()
            return ok(seen[0])

        try:
            until(check, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nlast answers: {_answers_text(seen[0])}\n{self.logs()}") from None
        return seen[0]

    def until_all(self, node: str, workload: str, url: str, who: str, n: int, timeout: float,
                  what: str) -> collections.Counter[str]:
        """Until `n` fetches of `url` from the container are all answered by `who`."""
        return self.until_answers(lambda: self.container_answers(node, workload, url, n), lambda c: _all(c, who, n),
                                  timeout, what)

    # ---- clients ---------------------------------------------------------------------------------------------

    def in_container(self, node: str, workload: str, script: str, timeout: float = 120) -> str:
        agent = self.agents[node]
        cid = agent.container(workload)
        assert cid, f"no running container of {workload} on {node}\n{self.logs()}"
        out = agent.podman("exec", cid, "sh", "-c", script, timeout=timeout)
        assert out.returncode == 0, f"{script!r} in {workload} on {node}: {out.stdout}{out.stderr}\n{self.logs()}"
        return out.stdout

    def container_answers(self, node: str, workload: str, url: str, n: int) -> collections.Counter[str]:
        """Who answered each of `n` fetches of `url` from inside the client container, one connection each."""
        loop = (f"i=0; while [ $i -lt {n} ]; do timeout 20 wget -q -O- {url} || echo FAIL; i=$((i+1)); done")
        return collections.Counter(self.in_container(node, workload, loop, timeout=60 + n * 0.5).split())

    def host_answers(self, host: Host, url: str, n: int, parallel: int = 4) -> collections.Counter[str]:
        """Who answered `n` fetches of `url` by processes on a lab machine (busybox wget), `parallel` at a time."""
        each = -(-n // parallel)
        fetch = f"/bin/busybox timeout 20 /bin/busybox wget -q -O- {url} || echo FAIL"
        loop = f"i=0; while [ $i -lt {each} ]; do {fetch}; i=$((i+1)); done"
        script = " & ".join(f"( {loop} )" for _ in range(parallel)) + " & wait"
        out = host.run("/bin/sh", "-c", script, timeout=60 + each * 0.5, check=False)
        return collections.Counter(out.stdout.split())

    def service_env(self) -> dict[str, str]:
        """The environment client-c (a process on svc-c) was started with."""
        dirs = [d for d in self.agents[C].work_dirs() if (d / "env.txt").exists()]
        assert dirs, f"client-c wrote no env.txt\n{self.logs()}"
        pairs = (line.split("=", 1) for line in (dirs[0] / "env.txt").read_text().splitlines() if "=" in line)
        return dict(pairs)

    def web_url_on_c(self) -> str:
        e = self.service_env()
        return f"http://{e['WEB_SERVICE_HOST']}:{e['WEB_SERVICE_PORT']}/"

    # ---- readiness ---------------------------------------------------------------------------------------------

    def set_ready(self, node: str, workload: str, ready: bool) -> None:
        agent = self.agents[node]
        if agent.kind == "process":
            marks = [d / "ready" for d in agent.work_dirs() if (d / "www").exists()
                     and (d / "www" / "index.html").read_text().strip() == _body(workload)]
            assert marks, f"no instance of {workload} on {node}\n{self.logs()}"
            for m in marks:
                if ready:
                    m.touch()
                else:
                    m.unlink(missing_ok=True)
        else:
            self.in_container(node, workload, "touch /tmp/ready" if ready else "rm -f /tmp/ready")

    def endpoints(self, service: str) -> dict[str, bool]:
        """replica node -> ready, as `cloudless get services` shows them."""
        rows = self.coord.json("get", "services")["items"]
        row = next((r for r in rows if r["name"] == service), None)
        return {e["node"]: e["ready"] for e in row["endpoints"]} if row else {}


def _body(workload: str) -> str:
    return {"web-a": "a", "web-b": "b", "web-c": "c", "split-a": "split-a", "split-b": "split-b"}[workload]


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Svc]:
    require_root("network namespaces and rootful Podman")
    require_podman()
    if subprocess.run(["podman", "image", "exists", IMAGE], capture_output=True, timeout=60,
                      check=False).returncode != 0:
        unavailable(f"{IMAGE} is missing: run `make image` (make test does)")
    tmp = tmp_path_factory.mktemp("svclab")
    started = time.monotonic()
    with Lab() as lab:
        inet = lab.network("inet")
        vps = lab.host("vps", inet)
        home = lab.nat("home", inet, NatKind.PORT_RESTRICTED)
        cafe = lab.nat("cafe", inet, NatKind.FULL_CONE)
        mobile = lab.nat("mobile", inet, NatKind.SYMMETRIC)
        agents = {A: LabAgent(lab.host("a", home.lan_net), A, "podman", zone="east", labels="site=a"),
                  B: LabAgent(lab.host("b", cafe.lan_net), B, "process", zone="east", labels="site=b"),
                  C: LabAgent(lab.host("c", inet), C, "process", zone="west", labels="site=c", storage="64MiB")}
        rootless_error = ""
        try:
            pwd.getpwnam(ROOTLESS_USER)
        except KeyError:
            rootless_error = f"user {ROOTLESS_USER} missing: run scripts/setup-rootless.sh (make test does)"
        else:
            agents[R] = LabAgent(lab.host("r", mobile.lan_net), R, "rootless", labels="site=r")
        coord = Coordinator(vps, tmp, REPO)
        s = Svc(lab, coord, vps, agents, rootless_error=rootless_error)
        try:
            coord.start()
            token = coord.json("token", "create", "--max-uses", str(len(agents)))["token"]
            for a in agents.values():
                a.start(token)
            s.until(lambda: {n for n, v in coord.nodes().items() if v["online"]} >= {A, B, C}, 120,
                    "svc-a, svc-b, svc-c enrolled and online")
            if R in agents:
                try:
                    until(lambda: coord.nodes().get(R, {}).get("online"), 60, "svc-r online")
                except AssertionError:
                    s.rootless_error = "the rootless agent did not come online:\n" + agents[R].tail()
            for text in (httpd_container("web-a", "a", "a", 8080, WEB_SVC, ready_at_start=False),
                         httpd_process("web-b", "b", "b", 8080, WEB_SVC),
                         httpd_process("web-c", "c", "c", 8080, WEB_SVC),
                         httpd_container("split-a", "a", "split-a", 8081, split_svc(3), ready_at_start=True),
                         httpd_process("split-b", "b", "split-b", 8081, split_svc(1))):
                coord.cli("apply", "-f", "-", input=text)
            s.until_eq(lambda: (s.endpoints("web"), s.endpoints("split")),
                       ({A: False, B: True, C: True}, {A: True, B: True}), 120,
                       "web ready on svc-b and svc-c (web-a waits for its file), split ready on svc-a and svc-b")
            # the clients come after the services: a process sees the services known when it starts
            clients = [("client-a", "a", "container"), ("client-c", "c", "process")]
            if not s.rootless_error:
                clients.append(("client-r", "r", "container"))
            for name, site, runtime in clients:
                run: dict[str, Any] = ({"image": IMAGE, "command": ["sleep", "100000"]} if runtime == "container"
                                       else {"command": ["/bin/sh", "-c", "env > env.tmp && mv env.tmp env.txt && "
                                                         "exec sleep 100000"]})
                coord.cli("apply", "-f", "-", input=doc(name, {
                    "runtime": runtime, **run, "placement": {"nodeSelector": {"site": site}},
                    "securityContext": NON_ROOT, "resources": SMALL}))
            s.until(lambda: {r["workload"] for r in coord.json("get", "replicas")["items"] if r.get("ready")}
                    >= {n for n, _, _ in clients}, 180, "the clients running")
            s.numbers["cluster up"] = f"{time.monotonic() - started:.1f} s"
            print(f"cluster up in {time.monotonic() - started:.1f} s")
            yield s
        finally:
            print("numbers: " + "; ".join(f"{k}: {v}" for k, v in s.numbers.items()))
            for a in agents.values():
                a.close()


def _answers_text(c: collections.Counter[str]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(c.items()))


# ---- 1. names, from every kind of client -----------------------------------------------------------------------


def test_containers_and_processes_reach_web_by_name_across_nats(svc: Svc) -> None:
    s = svc
    row = next(r for r in s.coord.json("get", "services")["items"] if r["name"] == "web")
    vip = row["vip"]
    assert re.fullmatch(r"127\.77\.\d+\.\d+", vip), row

    # svc-a (rootful Podman, home NAT): its own web-a is not ready, so the zone's (svc-b, behind the cafe NAT) answers
    got = s.until_answers(lambda: s.container_answers(A, "client-a", f"http://{WEB}:8080/", 5),
                          lambda c: _all(c, "b", 5), 60, "client-a's wget answered by svc-b")
    assert set(got) == {"b"}, got
    assert set(s.container_answers(A, "client-a", "http://web:8080/", 3)) == {"b"}
    lookup = s.in_container(A, "client-a", f"nslookup {WEB}")
    assert vip in lookup, lookup
    srv = s.in_container(A, "client-a", "nslookup -type=SRV _http._tcp.web.default.svc.cloudless")
    assert "8080" in srv and WEB in srv, srv
    print(f"client-a nslookup:\n{lookup}\nSRV:\n{srv}")
    described = s.coord.cli("describe", "service", "web").stdout
    rows = {ln.split()[1]: ln.split() for ln in described.splitlines() if ln.strip().startswith("web-")}
    assert set(rows) == {A, B, C}, described
    assert rows[B][2:5] == ["east", "1", "yes"] and rows[C][2:5] == ["west", "1", "yes"], described
    assert rows[A][2:5] == ["east", "1", "no"] and " ".join(rows[A][5:]) == "not ready", described
    assert vip in described, described

    # a process on svc-c (public) through WEB_SERVICE_HOST/PORT: its own node's web-c answers
    env = s.service_env()
    assert env["WEB_SERVICE_HOST"] == "127.0.0.1" and env["WEB_SERVICE_PORT"] != "8080", env
    assert env["SPLIT_SERVICE_PORT"].isdigit(), env
    got = s.until_answers(lambda: s.host_answers(s.agents[C].host, s.web_url_on_c(), 4, 1),
                          lambda c: _all(c, "c", 4), 60, "client-c (process) answered by svc-c")

    # a rootless container on svc-r (symmetric NAT, no zone): svc-b and svc-c are equally far; both answer
    if s.rootless_error.startswith("user "):
        unavailable(s.rootless_error)
    if s.rootless_error:
        pytest.fail(f"rootless Podman agent in a lab namespace: {s.rootless_error}")
    got = s.until_answers(lambda: s.container_answers(R, "client-r", f"http://{WEB}:8080/", 20),
                          lambda c: c["b"] + c["c"] == 20 and c["b"] > 0 and c["c"] > 0, 120,
                          "client-r (rootless) answered by both svc-b and svc-c")
    print(f"client-r answers: {_answers_text(got)}")
    assert vip in s.in_container(R, "client-r", f"nslookup {WEB}")


# ---- 2. locality and weights -----------------------------------------------------------------------------------


def _all(c: collections.Counter[str], who: str, n: int) -> bool:
    return c[who] == n


def test_locality_keeps_traffic_on_the_node_then_spills_to_the_zone_then_anywhere(svc: Svc) -> None:
    s, url = svc, f"http://{WEB}:8080/"
    s.set_ready(A, "web-a", True)
    s.until_all(A, "client-a", url, "a", 5, 60, "client-a answered by its own node")
    started = time.monotonic()
    got = s.container_answers(A, "client-a", url, LOCAL_N)
    took = time.monotonic() - started
    s.numbers["locality"] = f"{LOCAL_N} connections from a container in {took:.1f} s"
    assert got == collections.Counter({"a": LOCAL_N}), f"not all local: {_answers_text(got)}\n{s.logs()}"

    # unready on this node: the zone (svc-b, behind another NAT) takes every new connection
    s.set_ready(A, "web-a", False)
    unready_at = time.monotonic()
    s.until_all(A, "client-a", url, "b", 3, 30, "spill to the zone (svc-b)")
    s.numbers["spill to zone after unready"] = f"{time.monotonic() - unready_at:.1f} s (probe 0.5 s included)"
    got = s.container_answers(A, "client-a", url, SPILL_N)
    assert got == collections.Counter({"b": SPILL_N}), f"zone spill: {_answers_text(got)}\n{s.logs()}"

    # the zone unready too: anywhere (svc-c, another zone, public)
    s.set_ready(B, "web-b", False)
    s.until_all(A, "client-a", url, "c", 3, 30, "spill anywhere (svc-c)")
    got = s.container_answers(A, "client-a", url, SPILL_N)
    assert got == collections.Counter({"c": SPILL_N}), f"anywhere: {_answers_text(got)}\n{s.logs()}"

    s.set_ready(B, "web-b", True)
    s.until_all(A, "client-a", url, "b", 3, 30, "svc-b back as the zone's")
    print(f"locality: {LOCAL_N}/{LOCAL_N} local; {SPILL_N}/{SPILL_N} zone; {SPILL_N}/{SPILL_N} anywhere")


def test_weights_split_connections_three_to_one(svc: Svc) -> None:
    """split-a (weight 3, svc-a) and split-b (weight 1, svc-b) are both in another zone than svc-c: every connection
    of a process on svc-c is a weighted draw. 2,000 draws at p = 0.75: sd 0.97 points; +-5 points is > 5 sd."""
    s = svc
    url = f"http://127.0.0.1:{s.service_env()['SPLIT_SERVICE_PORT']}/"
    started = time.monotonic()
    got = s.host_answers(s.agents[C].host, url, SPLIT_N, parallel=4)
    took = time.monotonic() - started
    total = got["split-a"] + got["split-b"]
    assert total == SPLIT_N and not got["FAIL"], f"{_answers_text(got)}\n{s.logs()}"
    heavy = got["split-a"] / total
    s.numbers["weights 3:1"] = f"{got['split-a']}:{got['split-b']} = {heavy:.1%} heavy over {total} in {took:.1f} s"
    print(f"weights: {s.numbers['weights 3:1']}")
    assert abs(heavy - 0.75) <= 0.05, f"weight 3 got {heavy:.1%} (want 75 % +- 5): {_answers_text(got)}"


# ---- 4. ingress ------------------------------------------------------------------------------------------------


def test_ingress_on_a_public_node_reaches_replicas_behind_two_nats(svc: Svc) -> None:
    s = svc
    url = f"http://{s.agents[C].host.addr}:{INGRESS_PORT}/"
    got = s.until_answers(lambda: s.host_answers(s.vps, url, 40, parallel=2),
                          lambda c: c["split-a"] > 0 and c["split-b"] > 0, 60,
                          "the internet reaching split-a (home NAT) and split-b (cafe NAT) through svc-c's ingress")
    assert not got["FAIL"] and got["split-a"] + got["split-b"] == 40, _answers_text(got)
    print(f"ingress from the internet: {_answers_text(got)}")
    row = next(r for r in s.coord.json("get", "services")["items"] if r["name"] == "split")
    assert row["ingress"] == [{"port": 80, "hostPort": INGRESS_PORT, "nodes": [C]}], row


# ---- 3. failure: drain, then kill -9 ---------------------------------------------------------------------------


def _established_to(host: Host, port: int) -> int:
    out = host.run("ss", "-Htn", "state", "established", f"( sport = :{port} )", check=False).stdout
    return len(out.splitlines())


HOLD = """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=60)
s.sendall(b"GET / HTTP/1.0\\r\\n")
print("connected", flush=True)
sys.stdin.readline()
s.sendall(b"\\r\\n")
data = b""
while chunk := s.recv(65536):
    data += chunk
print(data.decode(errors="replace").split("\\r\\n\\r\\n", 1)[-1].strip(), flush=True)
"""


def test_a_removed_but_alive_endpoint_finishes_its_open_connections(svc: Svc) -> None:
    s = svc
    # across the overlay: client-a holds a connection to svc-b (its zone's), then web-b turns unready
    cid = s.agents[A].container("client-a")
    remote = s.agents[A].host.popen("podman", "exec", "-i", cid, "nc", WEB, "8080", stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, host_mounts=True, text=True,
                                    env={"CONTAINERS_CONF": str(CONTAINERS_CONF), "PATH": "/usr/bin:/bin"})
    assert remote.stdin is not None and remote.stdout is not None
    remote.stdin.write("GET / HTTP/1.0\r\n")
    remote.stdin.flush()
    s.until(lambda: _established_to(s.agents[B].host, 8080) >= 1, 30, "the held connection reaching web-b on svc-b")
    s.set_ready(B, "web-b", False)
    s.until_answers(lambda: s.container_answers(A, "client-a", f"http://{WEB}:8080/", 3), lambda c: _all(c, "c", 3), 30,
            "new connections from client-a avoiding the removed web-b")
    remote.stdin.write("\r\n")
    remote.stdin.flush()
    out, _ = remote.communicate(timeout=30)
    assert out.strip().endswith("b"), f"the held connection to web-b did not finish: {out!r}\n{s.logs()}"
    s.set_ready(B, "web-b", True)

    # on the node: a process on svc-c holds a connection to its own web-c, which turns unready
    port = s.service_env()["WEB_SERVICE_PORT"]
    local = s.agents[C].host.popen(sys.executable, "-c", HOLD, port, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   text=True)
    assert local.stdin is not None and local.stdout is not None
    assert local.stdout.readline().strip() == "connected"
    s.until(lambda: _established_to(s.agents[C].host, 8080) >= 1, 30, "the held connection reaching web-c")
    s.set_ready(C, "web-c", False)
    s.until_answers(lambda: s.host_answers(s.agents[C].host, s.web_url_on_c(), 3, 1), lambda c: _all(c, "b", 3), 30,
                    "new connections on svc-c going to svc-b")
    local.stdin.write("\n")
    local.stdin.flush()
    out, _ = local.communicate(timeout=30)
    assert out.strip() == "c", f"the held connection to web-c did not finish: {out!r}\n{s.logs()}"
    s.set_ready(C, "web-c", True)
    s.until_eq(lambda: s.endpoints("web"), {A: False, B: True, C: True}, 30, "web-b and web-c ready again")


# ---- 5. S3 for workloads: the built-in service s3.cloudless ----------------------------------------------------

S3_CLIENT = r"""
import json, os, socket, struct, sys, time
import boto3
from botocore.exceptions import ClientError

def lookup(name):  # the container's own resolver (the agent's, on 127.0.0.1:53 in this network namespace)
    query = struct.pack("!HHHHHH", 7, 0x100, 1, 0, 0, 0) + b"".join(
        bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack("!HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(query, ("127.0.0.1", 53))
        reply = s.recv(512)
    return socket.inet_ntoa(reply[-4:])  # the one A record ends the answer

vip = lookup("s3.cloudless")
real = socket.getaddrinfo
socket.getaddrinfo = lambda host, *a, **k: real(vip if host == "s3.cloudless" else host, *a, **k)
out = {"vip": vip}
s3 = boto3.client("s3")  # the secret's variables, boto3's defaults
deadline = time.monotonic() + 90
while True:  # the node's overlay path to the gateway may still be coming up
    try:
        s3.put_object(Bucket="lab", Key="from-a.txt", Body=b"from a container behind a NAT")
        break
    except Exception as exc:
        if time.monotonic() > deadline:
            raise
        print("retrying:", exc, file=sys.stderr, flush=True)
        time.sleep(1)
out["get"] = s3.get_object(Bucket="lab", Key="from-a.txt")["Body"].read().decode()
try:
    boto3.client("s3", aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"], aws_secret_access_key="x" * 40
                 ).get_object(Bucket="lab", Key="from-a.txt")
    out["wrong"] = "accepted"
except ClientError as exc:
    out["wrong"] = exc.response["Error"]["Code"]
print(json.dumps(out))
"""


def test_a_container_behind_a_nat_reaches_s3_through_its_own_endpoint_with_the_secrets_key(svc: Svc) -> None:
    """`cloudless up` serves S3 (port 9000) with svc-c offering storage. A key stored as secret default/s3 is given to
    a container on svc-a (home NAT) with secretKeyRef; boto3 with its defaults and that container's environment runs
    inside its network namespace (nsenter): `s3.cloudless` resolves through the container's resolver to the service
    address, whose listener the agent carries over the overlay to the gateway's member on the vps."""
    s = svc
    s.coord.cli("storage", "buckets", "create", "lab")
    s.coord.cli("storage", "keys", "create", "lab-job", "--bucket", "lab:rw", "--secret", "default/s3")
    env = [{"name": k, "valueFrom": {"secretKeyRef": {"name": "s3", "key": k}}}
           for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION")]
    s.coord.cli("apply", "-f", "-", input=doc("s3-client", {
        "image": IMAGE, "command": ["sleep", "100000"], "env": env, "placement": {"nodeSelector": {"site": "a"}},
        "securityContext": NON_ROOT, "resources": SMALL}))
    s.until(lambda: s.agents[A].container("s3-client"), 120, "s3-client running on svc-a")
    pid = s.agents[A].podman("inspect", "-f", "{{.State.Pid}}", s.agents[A].container("s3-client"),
                             check=True).stdout.strip()
    # the environment the container's process got (the secret's variables are set by the entry wrapper)
    got = dict(e.split("=", 1) for e in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in e)
    aws = {k: v for k, v in got.items() if k.startswith("AWS_")}
    assert aws.get("AWS_ENDPOINT_URL") == "http://s3.cloudless" and aws["AWS_ACCESS_KEY_ID"].startswith("CLK"), aws
    started = time.monotonic()
    run = s.agents[A].host.run("nsenter", f"--net=/proc/{pid}/ns/net", "env", "-i", f"PATH={os.environ['PATH']}",
                               "HOME=/nonexistent", *(f"{k}={v}" for k, v in aws.items()), sys.executable, "-c",
                               S3_CLIENT, check=False, timeout=180)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\n{s.logs()}"
    out = json.loads(run.stdout.strip().splitlines()[-1])
    s.numbers["s3 from a container"] = f"{time.monotonic() - started:.1f} s"
    vip = next(r["vip"] for r in s.coord.json("get", "services", "-A")["items"] if r["name"] == "s3")
    assert out == {"vip": vip, "get": "from a container behind a NAT", "wrong": "SignatureDoesNotMatch"}, out
    s.coord.cli("delete", "workload", "s3-client")


def test_kill_9_of_the_zones_only_endpoint_node_moves_new_connections_elsewhere(svc: Svc) -> None:
    """client-a's nearest ready endpoint is web-b (its own node's web-a is unready): kill -9 svc-b's agent. The
    broker publishes its last will, the coordinator declares it lost and drops web-b from every table; new
    connections go to svc-c. Times are the kernel's uptime, read inside the container and by the test."""
    s = svc
    url = f"http://{WEB}:8080/"
    assert s.endpoints("web") == {A: False, B: True, C: True}
    s.until_all(A, "client-a", url, "b", 3, 30, "client-a answered by svc-b")
    loop = ("rm -f /tmp/flog /tmp/stop; i=0; while [ $i -lt 2000 ] && [ ! -e /tmp/stop ]; do "
            "read t0 _ < /proc/uptime; r=$(timeout 20 wget -q -O- " + url + " || echo FAIL); read t1 _ < /proc/uptime; "
            'echo "$t0 $t1 $r" >> /tmp/flog; i=$((i+1)); done')
    cid = s.agents[A].container("client-a")
    s.agents[A].podman("exec", "-d", cid, "sh", "-c", loop, check=True)
    s.until(lambda: "b" in s.in_container(A, "client-a", "cat /tmp/flog 2>/dev/null || true"), 30, "the loop running")
    web_b = _replica(s, "web-b")
    wall_minus_up = time.time() - _uptime()
    killed = _uptime()
    s.agents[B].kill9()
    # the coordinator's verdict: web-b leaves the service when svc-b goes offline (its last will), then the node is
    # declared lost; the first of the two is when every table changes
    lost = s.until(lambda: next((e for e in s.coord.json("get", "events", f"node/{B}")["items"]
                                 if e["reason"] in ("NodeLost", "NodeLeft")
                                 and e["time"] - wall_minus_up >= killed - 1), None), 60,
                   "the coordinator's verdict on svc-b")
    removed = s.until(lambda: next((e for e in s.coord.json("get", "events")["items"]
                                    if e["reason"] == "EndpointRemoved" and f"{web_b} on {B} removed" in e["message"]
                                    and e["time"] - wall_minus_up >= killed - 1),
                                   None), 30, "web-b's EndpointRemoved event")
    verdict_wall = min(lost["time"], removed["time"])
    verdict = verdict_wall - wall_minus_up

    def rows() -> list[tuple[float, float, str]]:
        text = s.in_container(A, "client-a", "cat /tmp/flog")
        return [(float(t0), float(t1), r) for t0, t1, r in (ln.split(maxsplit=2) for ln in text.splitlines())]

    s.until(lambda: sum(1 for t0, _, r in rows() if t0 > verdict + 2.0 and r == "c") >= 10, 60,
            "ten connections to svc-c opened 2 s after the verdict")
    s.in_container(A, "client-a", "touch /tmp/stop")
    log = rows()
    after_kill = [r for r in log if r[0] >= killed]
    after_verdict = [r for r in log if r[0] >= verdict]
    first_c = next((r for r in after_kill if r[2] == "c"), None)
    first_c_new = next((r for r in after_verdict if r[2] == "c"), None)
    fails = [r for r in after_kill if r[2] not in ("b", "c")]
    assert first_c is not None and first_c_new is not None
    went = _logged_at(s.agents[A].log, f"default/web endpoint {web_b} on {B} went")
    assert went is not None, f"svc-a never dropped web-b from its table\n{s.logs()}"
    table_s = went - verdict_wall
    settled = [r for r in after_verdict if r[0] >= verdict + 2.0]
    slowest = max((t1 - t0 for t0, t1, _ in settled), default=0.0)
    measured = (f"{lost['reason']} {lost['time'] - wall_minus_up - killed:.2f} s and EndpointRemoved "
                f"{removed['time'] - wall_minus_up - killed:.2f} s after kill -9; svc-a's table without web-b "
                f"{table_s:.2f} s after the verdict; first answer from svc-c "
                f"{first_c[1] - killed:.2f} s after the kill; the first connection opened after the verdict answered "
                f"by svc-c {first_c_new[1] - verdict:.2f} s after it (took {first_c_new[1] - first_c_new[0]:.2f} s); "
                f"slowest of {len(settled)} opened 2 s after the verdict: {slowest:.2f} s; {len(fails)} failed of "
                f"{len(after_kill)} after the kill")
    s.numbers["kill -9"] = measured
    print(f"kill -9: {measured}")
    assert not [r for r in after_verdict if r[2] != "c"], f"after the verdict: {after_verdict[:10]}\n{s.logs()}"
    # no new connection waits on the dead node (its connect timeout is 5 s); the table change is timed above
    assert settled and slowest < 3.0, f"{measured}\n{s.logs()}"
    assert table_s < 5.0, f"{measured}\n{s.logs()}"  # the issue's 2 s, with room for a loaded CI machine


def _replica(s: Svc, workload: str) -> str:
    return str(next(r["id"] for r in s.coord.json("get", "replicas")["items"] if r["workload"] == workload))


def _logged_at(log: Path, text: str) -> float | None:
    """Wall-clock time of the last agent log line containing `text` (the log's times are local, to the ms)."""
    found = None
    for line in log.read_text(errors="replace").splitlines():
        m = _LOG_TIME.search(line)
        if m and text in line:
            found = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000
    return found


_LOG_TIME = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})")


def _uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])

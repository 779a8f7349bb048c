"""Services through a real agent: a real `cloudless agent` process (Podman as root, Podman as the rootless test user,
and the process runtime), a real broker, and the ServiceTable published retained on the node's services topic as the
coordinator would. A busybox httpd replica is the endpoint; a client replica on the same agent reaches it by name:

- containers: `wget http://web.default.svc.cloudless:8080/` and `wget http://web:8080/` from inside the client
  container (its resolver is the agent's, bound at 127.0.0.1:53 in the container's namespace), and `nslookup web`
  answers the service's stable address;
- processes: the client reads WEB_SERVICE_HOST/WEB_SERVICE_PORT from its environment and fetches from there.
Then the agent's /metrics counts the connections (tier node)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from broker import wire
from broker.wire import PortMapping, ReplicaState, ServiceEndpoint, ServicePort, ServiceRecord, ServiceTable, topics
from tests.edge_agent.builders import make_desired, make_spec
from tests.integration.agent_env import IMAGE, AgentProc, Observer, podman_ids, run_podman
from tests.integration.conftest import BrokerUnderTest, make_auth

pytestmark = pytest.mark.integration

NODE = "A"
VIP = "127.77.80.80"
PAGE = "cloudless test image"  # the image's /www/index.html


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[BrokerUnderTest]:
    b = BrokerUnderTest(kind="embedded", workdir=tmp_path)
    b.passwords = make_auth(tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(params=["podman-root", "podman-rootless", "process"])
def agent(request: pytest.FixtureRequest, embedded: BrokerUnderTest) -> Iterator[AgentProc]:
    mode = request.param
    a = AgentProc(node_id=NODE, broker=embedded, runtime="process" if mode == "process" else "podman",
                  rootless=mode == "podman-rootless")
    if a.runtime == "podman":
        a.extra += ["--podman-socket", str(a.workdir / "podman.sock")]
    try:
        yield a
    finally:
        a.cleanup()


@pytest.fixture
async def observer(embedded: BrokerUnderTest) -> AsyncIterator[Observer]:
    async with Observer(embedded) as obs:
        yield obs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_table(target_port: int) -> ServiceTable:
    web = ServiceRecord("web", "default", VIP, ports=(ServicePort(8080, target_port, name="http"),),
                        endpoints=(ServiceEndpoint(NODE, "web-0"),))
    return ServiceTable(node_id=NODE, generation=1, epoch=1, ts=time.time(), services=(web,))


async def until_log(agent: AgentProc, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in agent.log_path.read_text(errors="replace"):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"agent never logged {text!r}:\n{agent.log_tail()}")


async def in_container(agent: AgentProc, cid: str, argv: list[str], expect: str, timeout: float) -> str:
    """Run `argv` in the container until its output contains `expect` (the attachment follows the start)."""
    deadline, out = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        out = await asyncio.to_thread(run_podman, ["exec", cid, *argv], user=agent.user, check=False)
        if expect in out:
            return out
        await asyncio.sleep(0.5)
    raise AssertionError(f"{argv} in {cid[:12]} never said {expect!r} (last: {out!r}); agent log:\n"
                         f"{agent.log_tail()}")


async def test_a_replica_reaches_a_service_by_name(agent: AgentProc, observer: Observer, tmp_path: Path) -> None:
    if agent.runtime == "podman":
        target = 8080
        web = make_spec("web-0", workload="web", image=IMAGE, command=("httpd", "-f", "-p", "8080", "-h", "/www"),
                        ports=(PortMapping(8080),))
        client = make_spec("client-0", workload="client", image=IMAGE, command=("sleep", "300"))
    else:
        target, out = free_port(), tmp_path / "client"
        www = tmp_path / "www"
        www.mkdir()
        (www / "index.html").write_text(PAGE + "\n")
        out.mkdir()
        os.chmod(tmp_path, 0o755)
        web = make_spec("web-0", workload="web", image="", ports=(PortMapping(target),),
                        command=("/bin/busybox", "httpd", "-f", "-p", str(target), "-h", str(www)))
        fetch = (f'echo "$WEB_SERVICE_HOST:$WEB_SERVICE_PORT" > {out}/env; '
                 f"until /bin/busybox wget -qO {out}/got.tmp http://$WEB_SERVICE_HOST:$WEB_SERVICE_PORT/; "
                 f"do sleep 0.5; done; mv {out}/got.tmp {out}/got; sleep 300")
        client = make_spec("client-0", workload="client", image="", command=("/bin/sh", "-c", fetch))

    agent.start()
    await observer.publish_desired(make_desired(NODE, web, generation=1))
    await observer.until(lambda: (r := observer.replica(NODE, "web-0")) is not None
                         and r.state is ReplicaState.RUNNING, 90, "web-0 running", agent)
    await observer.client.publish(topics.node_services(NODE), wire.encode(service_table(target)), qos=1, retain=True)
    await until_log(agent, "services: table generation 1", 30)
    # the client comes after the table: a process replica's variables name the services known when it is created
    await observer.publish_desired(make_desired(NODE, web, client, generation=2))
    await observer.until(lambda: (r := observer.replica(NODE, "client-0")) is not None
                         and r.state is ReplicaState.RUNNING, 90, "client-0 running", agent)

    if agent.runtime == "podman":
        cid = podman_ids(NODE, user=agent.user)["client-0"]
        await in_container(agent, cid, ["wget", "-qO-", "http://web.default.svc.cloudless:8080/"], PAGE, 60)
        await in_container(agent, cid, ["wget", "-qO-", "http://web:8080/"], PAGE, 30)
        await in_container(agent, cid, ["nslookup", "web"], VIP, 30)
        resolv = await asyncio.to_thread(run_podman, ["exec", cid, "cat", "/etc/resolv.conf"], user=agent.user)
        assert "nameserver 127.0.0.1" in resolv and "default.svc.cloudless" in resolv, resolv
        expected_connections = 2
    else:
        got = tmp_path / "client" / "got"
        deadline = time.monotonic() + 60
        while not got.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        env = (tmp_path / "client" / "env").read_text().strip() if (tmp_path / "client" / "env").exists() else ""
        assert got.exists(), f"the client never fetched (its env: {env!r}); agent log:\n{agent.log_tail()}"
        assert got.read_text().strip() == PAGE
        host, _, port = env.partition(":")
        assert host == "127.0.0.1" and port.isdigit() and int(port) != target, env  # the proxy's port, not httpd's
        expected_connections = 1

    from tests.integration.test_agent import scrape

    metrics = scrape(agent)
    key = ("cloudless_service_connections_total", (("namespace", "default"), ("service", "web"), ("tier", "node")))
    assert metrics.get(key, 0) >= expected_connections, {k: v for k, v in metrics.items() if "service" in k[0]}


async def test_no_services_leaves_containers_resolving_as_before(embedded: BrokerUnderTest,
                                                                 observer: Observer) -> None:
    """--no-services: the agent says why it runs none, and a container keeps Podman's own resolv.conf (a resolver
    at 127.0.0.1 that nobody answers would break every name in it)."""
    agent = AgentProc(node_id=NODE, broker=embedded, runtime="podman", extra=["--no-services"])
    agent.extra += ["--podman-socket", str(agent.workdir / "podman.sock")]
    try:
        agent.start()
        client = make_spec("client-0", workload="client", image=IMAGE, command=("sleep", "300"))
        await observer.publish_desired(make_desired(NODE, client, generation=1))
        await observer.until(lambda: (r := observer.replica(NODE, "client-0")) is not None
                             and r.state is ReplicaState.RUNNING, 90, "client-0 running", agent)
        await until_log(agent, "services: not running: switched off", 10)
        cid = podman_ids(NODE, user=agent.user)["client-0"]
        resolv = await asyncio.to_thread(run_podman, ["exec", cid, "cat", "/etc/resolv.conf"], user=agent.user)
        assert "nameserver 127.0.0.1" not in resolv and "svc.cloudless" not in resolv, resolv
    finally:
        agent.cleanup()

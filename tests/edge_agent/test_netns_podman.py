"""edge_agent.netns against real Podman, rootful and rootless: sockets bound inside a running busybox container's
network namespace (127.0.0.1:53/udp and 127.77.x.y:80/tcp) and served by another process's event loop — the
agent's, here `netns_driver` run as root or as the rootless test user, as the agent would be — are reached by
clients inside the container (`nslookup`, `wget` through `podman exec`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import uuid
from collections.abc import Iterator

import pytest

from tests.edge_agent.netns_driver import ANSWER_IP, BODY
from tests.integration.podman_env import IMAGE, REPO, ROOTLESS_USER, PodmanTarget, podman_target  # noqa: F401

pytestmark = pytest.mark.integration


def driver_argv(target: PodmanTarget, pid: int, addr: str) -> list[str]:
    argv = [sys.executable, "-m", "tests.edge_agent.netns_driver", str(pid), addr]
    if not target.rootless:
        return argv
    run_dir = f"/run/user/{os.stat(target.socket_path).st_uid}"
    # the user cannot run the venv's interpreter (under /root): the system Python with the repo on its path
    return ["runuser", "-u", ROOTLESS_USER, "--", "env", f"PYTHONPATH={REPO}:{sysconfig.get_paths()['purelib']}",
            f"XDG_RUNTIME_DIR={run_dir}", f"PATH={os.environ.get('PATH', '/usr/bin:/bin')}",
            "/usr/bin/python3", *argv[1:]]


@pytest.fixture
def container(podman_target: PodmanTarget) -> Iterator[tuple[str, int]]:  # noqa: F811
    name = f"cl-netns-{uuid.uuid4().hex[:8]}"
    podman_target.cli("run", "-d", "--name", name, IMAGE, "sleep", "300")
    try:
        pid = int(podman_target.cli("inspect", "--format", "{{.State.Pid}}", name).stdout.strip())
        yield name, pid
    finally:
        subprocess.run(["podman", "--url", f"unix://{podman_target.socket_path}", "rm", "-f", "-t", "0", name],
                       capture_output=True, timeout=60, check=False)


def test_sockets_bound_in_the_container_netns_are_served_by_the_agent(
        podman_target: PodmanTarget, container: tuple[str, int]) -> None:  # noqa: F811
    name, pid = container
    addr = f"127.77.{os.getpid() % 250 + 1}.{uuid.uuid4().int % 250 + 1}"
    driver = subprocess.Popen(driver_argv(podman_target, pid, addr), cwd=REPO if not podman_target.rootless else "/",
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert driver.stdout is not None
        line = driver.stdout.readline()
        assert line, f"driver said nothing: {driver.stderr.read() if driver.poll() is not None else ''}"
        bound = json.loads(line)
        assert bound[0] == ["127.0.0.1", 53], bound
        assert bound[1] == [addr, 80], bound
        assert bound[2].startswith("ip: not an IP address"), bound  # a bad request is a value, not a crash
        got = podman_target.cli("exec", name, "wget", "-qO-", f"http://{addr}/", timeout=60).stdout
        assert got == BODY.decode()  # (busybox-static 1.35 wget -T segfaults: the CLI timeout bounds it)
        looked = podman_target.cli("exec", name, "nslookup", "-type=a", "probe.test", "127.0.0.1", timeout=60)
        assert ANSWER_IP in looked.stdout, looked.stdout
        # nothing listens on those addresses in the host's own namespace: the container reached the agent's sockets
        with pytest.raises(OSError):
            import socket
            socket.create_connection((addr, 80), timeout=2).close()
    finally:
        if driver.stdin is not None:
            driver.stdin.close()
        try:
            driver.wait(timeout=15)
        except subprocess.TimeoutExpired:
            driver.kill()
            driver.wait()

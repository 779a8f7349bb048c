"""Podman services for integration tests: one rootful service on a private socket, one rootless service run as
the `cloudless-test` user that scripts/setup-rootless.sh prepares. The test process (root) talks to both
sockets, exactly as an agent would talk to its own user's service.

Import the fixtures from here (`from tests.integration.podman_env import podman_target`); conftest.py is
someone else's.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from podman import PodmanClient

from edge_agent.runtime.base import LABEL_CLUSTER, LABEL_NODE
from edge_agent.runtime.podman import PodmanRuntime
from edge_agent.runtime.podman_service import PodmanService, socket_answers

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "scripts" / "containers.conf"
IMAGE = "localhost/cloudless/busybox:latest"
ROOTLESS_USER = "cloudless-test"


from tests.need import unavailable  # noqa: E402  (re-exported: the Podman fixtures skip through it)


def require_podman() -> str:
    path = shutil.which("podman")
    if path is None:
        unavailable("podman is not installed: run scripts/install-system-deps.sh (make test does)")
    assert path is not None
    return path


TEST_CLUSTER = "c0ffee000000"  # the cluster id of the runtimes these tests make (cleanup removes only its own)


@dataclass
class PodmanTarget:
    """A Podman service under test: where it listens and whose it is."""

    mode: str  # "root" | "rootless"
    socket_path: Path

    @property
    def rootless(self) -> bool:
        return self.mode == "rootless"

    def runtime(self, node_id: str, **kw: object) -> PodmanRuntime:
        # root: the runtime may start a service itself (it finds the module's already answering);
        # rootless: the service runs as another user, so the runtime must only connect.
        kw.setdefault("cluster", TEST_CLUSTER)
        return PodmanRuntime(node_id=node_id, socket_path=self.socket_path, containers_conf=CONF,
                             start_service=not self.rootless, stop_timeout_default=1, **kw)  # type: ignore[arg-type]

    def client(self) -> PodmanClient:
        return PodmanClient(base_url=f"unix://{self.socket_path}", timeout=30)

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """The podman CLI as a remote client of this service ("from outside" the runtime under test)."""
        return subprocess.run([require_podman(), "--url", f"unix://{self.socket_path}", *args],
                              capture_output=True, text=True, timeout=timeout, check=True)

    def cleanup(self, node_id: str) -> None:
        """Remove every container (and its anonymous volumes) labelled with `node_id`."""
        with self.client() as client:
            # one label per filter: podman-py sends a list of labels so that the service matches nothing, and this
            # cleanup removed no container at all (dozens per run were left, some running, for the whole run)
            for c in client.containers.list(all=True, filters={"label": f"{LABEL_NODE}={node_id}"}):
                if (c.attrs.get("Labels") or {}).get(LABEL_CLUSTER) != TEST_CLUSTER:
                    continue
                try:
                    client.containers.remove(c.id, force=True, v=True)
                except Exception as exc:  # best effort: report and go on
                    print(f"cleanup: cannot remove {c.id[:12]}: {exc}")


def _root_service(workdir: Path) -> Iterator[PodmanTarget]:
    service = PodmanService(socket_path=workdir / "podman.sock", containers_conf=CONF,
                            podman_binary=require_podman())
    service.start()
    try:
        yield PodmanTarget("root", service.socket_path)
    finally:
        service.stop()


def _rootless_service(workdir: Path) -> Iterator[PodmanTarget]:
    podman = require_podman()
    if os.geteuid() != 0:
        unavailable("rootless Podman tests start the service as another user: run them as root")
    try:
        user = pwd.getpwnam(ROOTLESS_USER)
    except KeyError:
        unavailable(f"user {ROOTLESS_USER} missing: run `bash scripts/setup-rootless.sh` as root first")
        raise
    run_dir = Path(f"/run/user/{user.pw_uid}")
    env = ["env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", f"HOME={user.pw_dir}",
           f"USER={ROOTLESS_USER}", f"LOGNAME={ROOTLESS_USER}", f"XDG_RUNTIME_DIR={run_dir}",
           f"CONTAINERS_CONF={CONF}"]
    as_user = ["runuser", "-u", ROOTLESS_USER, "--", *env]
    if not run_dir.is_dir() or subprocess.run([*as_user, podman, "image", "exists", IMAGE], cwd="/", check=False,
                                              capture_output=True, timeout=60).returncode != 0:
        unavailable(f"{ROOTLESS_USER} has no {run_dir} or no {IMAGE}: run `bash scripts/setup-rootless.sh`")
    socket_path = run_dir / "podman" / f"podman-test-{os.getpid()}.sock"
    subprocess.run([*as_user, "mkdir", "-p", str(socket_path.parent)], cwd="/", check=True, timeout=10)
    log = open(workdir / "service.log", "ab")  # open for the service's lifetime
    proc = subprocess.Popen([*as_user, podman, "system", "service", "--time=0", f"unix://{socket_path}"],
                            cwd="/", stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not socket_answers(socket_path):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"rootless podman service did not start: {Path(log.name).read_text()[-2000:]}")
            time.sleep(0.05)
        yield PodmanTarget("rootless", socket_path)
    finally:
        proc.terminate()  # runuser passes SIGTERM on to the service
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module", params=["root", "rootless"])
def podman_target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodmanTarget]:
    require_podman()
    if request.param == "root":
        if os.geteuid() != 0:
            unavailable("rootful Podman tests need root")
        yield from _root_service(tmp_path_factory.mktemp("podman-root"))
    else:
        yield from _rootless_service(tmp_path_factory.mktemp("podman-rootless"))

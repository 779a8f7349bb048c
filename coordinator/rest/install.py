"""The device install served by the coordinator (the k3s join experience): the install script, the wheels it fetches.

    GET /v1/install.sh                 the POSIX sh script (scripts/install-agent.sh) with this coordinator's URL in it
    GET /v1/install/wheels             "sha256  file" lines: the project's wheel and any dependency wheels
    GET /v1/install/wheels/{file}      one of them

All three are unauthenticated: a device has nothing but an enrolment token yet, and what it fetches here is public
code. It is the *pin* that makes this safe: the one-liner `cloudless token create --join-command` prints fetches the
script with curl's `--pinnedpubkey` (the API certificate's public key), the script fetches every wheel with the same
pin and checks each file's sha256 against the list.

The project's wheel is built from the source tree this coordinator runs from (`pip wheel --no-deps`), once per
source hash, into `<repo>/.cache/wheels/<hash>/` (a cache the scripts own, never committed). Dependency wheels are
served from `<repo>/.cache/wheelhouse/` when someone put them there (scripts/agent-wheelhouse.sh does, for devices
that cannot reach the package index — the namespace lab is one); a device that can reach the index gets them there.
A coordinator installed without its source tree serves the script, and answers 404 for the wheel, saying why.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from coordinator.http import error
from coordinator.rest.routes import Route

log = logging.getLogger(__name__)

ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/install.sh", "install_script", "The device install script (fetch it with the API key pinned: "
          "`cloudless token create --join-command`)", auth=False, media="text/x-shellscript"),
    Route("GET", "/v1/install/wheels", "list_wheels", "The wheels a device installs from: `sha256  file` lines",
          auth=False, media="text/plain"),
    Route("GET", "/v1/install/wheels/{file}", "get_wheel", "One wheel from that list", auth=False,
          media="application/octet-stream"),
)

SOURCE_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("broker", "cloudless", "coordinator", "dataplane", "edge_agent", "firmware_profiles")
SOURCE_SUFFIXES = (".py", ".toml", ".json", ".yaml", ".yml", ".typed")
# a wheel name (PEP 427): name-version(-build)?-python-abi-platform.whl, each part from a small alphabet
WHEEL_NAME = re.compile(r"[A-Za-z0-9_.]+-[A-Za-z0-9_.!+]+(-[0-9][A-Za-z0-9_.]*)?-[A-Za-z0-9_.]+-[A-Za-z0-9_.]+"
                        r"-[A-Za-z0-9_.]+\.whl")
HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?")
BUILD_TIMEOUT_S = 300.0


class WheelUnavailable(Exception):
    """The project's wheel cannot be built here (no source tree, or the build failed): `reason` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def valid_wheel_name(name: str) -> bool:
    """A plain wheel file name: no directory part, no dot-dot, nothing a path could be made of."""
    return len(name) <= 200 and WHEEL_NAME.fullmatch(name) is not None and ".." not in name


def source_hash(root: Path) -> str:
    """sha256 over the files a wheel is made of (paths and contents, in a stable order)."""
    h = hashlib.sha256()
    files = [root / "pyproject.toml", *(p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*"))
                                        if p.suffix in SOURCE_SUFFIXES and "__pycache__" not in p.parts)]
    for path in files:
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


def build_wheel(root: Path, cache: Path) -> Path:
    """The project's wheel for the source at `root`, built once per source hash under `cache` (blocking)."""
    if not (root / "pyproject.toml").is_file() or not (root / "edge_agent").is_dir():
        raise WheelUnavailable(f"this coordinator does not run from a source tree ({root} has no pyproject.toml); "
                               "build the agent wheel with `pip wheel --no-deps .` in the repository and install "
                               "it on the device by hand")
    digest = source_hash(root)[:16]
    out = cache / digest
    if found := sorted(out.glob("cloudless-*.whl")):
        return found[-1]
    cache.mkdir(parents=True, exist_ok=True)
    gitignore = cache.parent / ".gitignore"
    if not gitignore.exists():
        gitignore.write_text("*\n")  # a cache, never committed
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        # a copy of the tree: an in-tree build writes build/ and *.egg-info, which concurrent builds would share
        src = Path(tmp) / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            if (root / name).exists():
                shutil.copy2(root / name, src / name)
        for pkg in PACKAGES:
            shutil.copytree(root / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        dist = Path(tmp) / "dist"
        cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
               "--wheel-dir", str(dist), str(src)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
        if done.returncode != 0:  # no setuptools next to this interpreter: let pip fetch the build backend
            cmd.remove("--no-build-isolation")
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
        wheels = sorted(dist.glob("cloudless-*.whl"))
        if done.returncode != 0 or not wheels:
            raise WheelUnavailable(f"building the agent wheel failed: {(done.stderr or done.stdout)[-400:]}")
        staged = Path(tmp) / digest
        staged.mkdir()
        shutil.move(str(wheels[0]), staged / wheels[0].name)
        try:
            staged.rename(out)  # atomic: a concurrent builder either wins or finds ours
        except OSError:
            pass
    log.info("install: built %s", next(out.glob("cloudless-*.whl")).name)
    return next(out.glob("cloudless-*.whl"))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class InstallPaths:
    """Where the script, the source tree, the wheel cache and the dependency wheelhouse are."""

    source: Path = SOURCE_ROOT
    script: Path = SOURCE_ROOT / "scripts" / "install-agent.sh"
    cache: Path = SOURCE_ROOT / ".cache" / "wheels"
    wheelhouse: Path = SOURCE_ROOT / ".cache" / "wheelhouse"


class InstallHandlers:
    def __init__(self, paths: InstallPaths | None = None) -> None:
        self.paths = paths or InstallPaths()
        self._lock = asyncio.Lock()
        self._hashes: dict[Path, tuple[float, str]] = {}

    async def _project_wheel(self) -> Path:
        async with self._lock:  # one build at a time; later callers find it cached
            return await asyncio.to_thread(build_wheel, self.paths.source, self.paths.cache)

    async def _wheels(self) -> dict[str, Path]:
        found = {p.name: p for p in sorted(self.paths.wheelhouse.glob("*.whl")) if valid_wheel_name(p.name)}
        project = await self._project_wheel()
        found[project.name] = project
        return found

    def _sha256(self, path: Path) -> str:
        mtime = path.stat().st_mtime
        cached = self._hashes.get(path)
        if cached is None or cached[0] != mtime:
            cached = (mtime, file_sha256(path))
            self._hashes[path] = cached
        return cached[1]

    async def install_script(self, request: web.Request) -> web.Response:
        host = request.host
        if HOST.fullmatch(host) is None:
            return error(400, f"{host[:80]!r} is not a host[:port]", field="Host")
        try:
            script = self.paths.script.read_text()
        except OSError as exc:
            return error(404, f"the install script is not available on this coordinator ({exc.strerror})")
        asyncio.get_running_loop().create_task(self._warm())  # the wheel is asked for next: start building it
        # the only substitution: where the script fetches its wheels from, the URL it was fetched from
        body = script.replace('SERVER="${CLOUDLESS_SERVER:-}"', f'SERVER="${{CLOUDLESS_SERVER:-https://{host}}}"', 1)
        return web.Response(text=body, content_type="text/x-shellscript")

    async def _warm(self) -> None:
        try:
            await self._project_wheel()
        except WheelUnavailable as exc:
            log.warning("install: %s", exc.reason)

    async def list_wheels(self, request: web.Request) -> web.Response:
        try:
            wheels = await self._wheels()
        except WheelUnavailable as exc:
            return error(404, exc.reason)
        lines = [f"{await asyncio.to_thread(self._sha256, p)}  {name}" for name, p in sorted(wheels.items())]
        return web.Response(text="".join(f"{line}\n" for line in lines), content_type="text/plain")

    async def get_wheel(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["file"]
        if not valid_wheel_name(name):
            return error(400, f"{name[:80]!r} is not a wheel file name", field="file")
        try:
            wheels = await self._wheels()
        except WheelUnavailable as exc:
            return error(404, exc.reason)
        path = wheels.get(name)
        if path is None:
            return error(404, f"no wheel {name!r} here; GET /v1/install/wheels lists them")
        return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})

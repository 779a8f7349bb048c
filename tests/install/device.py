"""An emulated Raspberry Pi in the namespace lab: a Debian bookworm arm64/armhf root filesystem (scripts/
emulated-rootfs.sh, cached) unpacked per test and entered with `chroot` from a lab host's network namespace, its
foreign binaries run by qemu-user-static through binfmt_misc.

What the chroot gets from the host: /proc and /dev (bind mounts: psutil and Python need them). /sys is *not*
mounted: the rootfs's own /sys directory holds `firmware/devicetree/base/model`, the file the firmware_profiles
probe reads on a real Pi (firmware_profiles/probe.py), so the agent detects a Raspberry Pi 4. Processes the chroot
runs share the host's PID namespace: `processes()` finds them by their root directory, which is how the test proves
`--uninstall` leaves nothing running and how teardown stops whatever a failed test left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.lab.netlab import Host

REPO = Path(__file__).resolve().parents[2]
PI_MODEL = "Raspberry Pi 4 Model B Rev 1.4"
ARCHES = {"arm64": "aarch64", "armhf": "armv7l"}  # Debian architecture -> what uname -m says
CHROOT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
              "LANG": "C.UTF-8"}


def cached_rootfs(arch: str) -> Path:
    """The cached tarball (built on first use: minutes; then seconds)."""
    done = subprocess.run([str(REPO / "scripts" / "emulated-rootfs.sh"), arch], capture_output=True, text=True,
                          timeout=1800, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"emulated-rootfs.sh {arch} failed:\n{done.stderr[-2000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


class Device:
    """A chroot of `arch`'s rootfs, entered from `host`'s network namespace."""

    def __init__(self, host: Host, arch: str, root: Path) -> None:
        self.host, self.arch, self.root = host, arch, root
        self.machine = ARCHES[arch]
        self._mounts: list[Path] = []

    def unpack(self, tarball: Path) -> float:
        """Unpack and prepare; returns the seconds it took."""
        started = time.monotonic()
        self.root.mkdir(parents=True)
        subprocess.run(["tar", "--zstd", "-xf", str(tarball), "-C", str(self.root)], check=True, timeout=600)
        model = self.root / "sys" / "firmware" / "devicetree" / "base" / "model"
        model.parent.mkdir(parents=True, exist_ok=True)
        model.write_bytes(PI_MODEL.encode() + b"\0")  # device-tree strings end in NUL
        for sub in ("proc", "dev"):
            target = self.root / sub
            subprocess.run(["mount", "--bind", f"/{sub}", str(target)], check=True, timeout=30)
            self._mounts.append(target)
        return time.monotonic() - started

    def sh(self, script: str, *, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        out = self.host.run("chroot", str(self.root), "/bin/sh", "-c", script, check=False, timeout=timeout,
                            env=CHROOT_ENV)
        if check:
            assert out.returncode == 0, f"{self.arch}: {script[:200]}\n{out.stdout}\n{out.stderr}"
        return out

    def file(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def processes(self) -> list[int]:
        """PIDs of every process running inside this chroot."""
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.readlink(f"/proc/{entry}/root") == str(self.root):
                        found.append(int(entry))
                except OSError:
                    continue
        return found

    def close(self) -> None:
        for pid in self.processes():  # only what this test's chroot started
            with _quiet():
                os.kill(pid, signal.SIGKILL)
        for target in reversed(self._mounts):
            subprocess.run(["umount", "-l", str(target)], check=False, timeout=30)
        self._mounts.clear()


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> bool:
        return exc[0] is ProcessLookupError

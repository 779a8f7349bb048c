"""Stand-ins for the device tools scripts/install-agent.sh calls where this host has none (tests/install/
test_install_paths.py): Termux's `pkg`, `termux-wake-lock`/`termux-wake-unlock`, and a user systemd's `systemctl`
and `loginctl`. Each call is recorded (one JSON argv per line in STATE/calls.jsonl); a tripwire (TOOL given as
`!apt-get`: a tool the branch under test must not call) is recorded and fails.

    python fake_tools.py STATE TOOL|!TOOL [ARGS...]

The fake `systemctl --user` does what the user manager would for one unit, enough for the agent to really run:
`start`/`restart`/`enable --now` read the unit file the script wrote (~/.config/systemd/user/NAME) and start its
ExecStart in a session of its own, with the small environment a user manager gives (no variable of the script's
own), output in STATE/NAME.log, pid in STATE/NAME.pid; `stop`/`disable --now` end that process group. It does not
restart a unit that exits (Restart= is asserted in the unit file only). `loginctl enable-linger USER` creates
$XDG_RUNTIME_DIR/bus, as the user manager linger starts would. Stdlib only: it runs with any python.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path


def unit_exec(name: str) -> list[str]:
    unit = Path(os.environ["HOME"]) / ".config" / "systemd" / "user" / name
    section = ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line.startswith("ExecStart="):
            return shlex.split(line.removeprefix("ExecStart="))
    raise SystemExit(f"fake systemctl: {unit} has no ExecStart in [Service]")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop(state: Path, name: str) -> None:
    pid_file = state / f"{name}.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    if alive(pid):
        os.killpg(pid, signal.SIGTERM)  # the unit's whole control group, as systemd's KillMode=control-group
        deadline = time.monotonic() + 20
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        if alive(pid):
            os.killpg(pid, signal.SIGKILL)
    pid_file.unlink()


def start(state: Path, name: str) -> None:
    pid_file = state / f"{name}.pid"
    if pid_file.exists() and alive(int(pid_file.read_text())):
        return
    argv = unit_exec(name)
    env = {"HOME": os.environ["HOME"], "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
           "USER": os.environ.get("USER", "root"), "XDG_RUNTIME_DIR": os.environ.get("XDG_RUNTIME_DIR", "")}
    with (state / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=env["HOME"], start_new_session=True)
    pid_file.write_text(str(proc.pid))


def systemctl(state: Path, args: list[str]) -> int:
    if not args or args[0] != "--user":
        print("fake systemctl: only --user units here", file=sys.stderr)
        return 1
    verb, rest = args[1], args[2:]
    now = "--now" in rest
    names = [a for a in rest if not a.startswith("-")]
    if verb == "daemon-reload":
        return 0
    for name in names:
        if verb in ("enable", "disable"):
            wants = Path(os.environ["HOME"]) / ".config" / "systemd" / "user" / "default.target.wants" / name
            if verb == "enable":
                wants.parent.mkdir(parents=True, exist_ok=True)
                wants.unlink(missing_ok=True)
                wants.symlink_to(wants.parent.parent / name)
                if now:
                    start(state, name)
            else:
                wants.unlink(missing_ok=True)
                if now:
                    stop(state, name)
        elif verb == "start":
            start(state, name)
        elif verb == "stop":
            stop(state, name)
        elif verb == "restart":
            stop(state, name)
            start(state, name)
        else:
            print(f"fake systemctl: {verb} is not simulated", file=sys.stderr)
            return 1
    return 0


def main(argv: list[str]) -> int:
    state, tool, args = Path(argv[1]), argv[2], argv[3:]
    tripwire = tool.startswith("!")
    tool = tool.lstrip("!")
    state.mkdir(parents=True, exist_ok=True)
    with (state / "calls.jsonl").open("a") as calls:
        calls.write(json.dumps([tool, *args]) + "\n")
    if tripwire:
        print(f"{tool}: not expected on this path (test tripwire)", file=sys.stderr)
        return 97
    if tool == "systemctl":
        return systemctl(state, args)
    if tool == "loginctl":
        if args[:1] == ["enable-linger"]:
            runtime = Path(os.environ["XDG_RUNTIME_DIR"])
            runtime.mkdir(parents=True, exist_ok=True)
            (runtime / "bus").touch()
        return 0
    return 0  # pkg, termux-wake-lock, termux-wake-unlock: recorded, nothing else


if __name__ == "__main__":
    sys.exit(main(sys.argv))

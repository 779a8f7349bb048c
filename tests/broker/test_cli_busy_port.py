"""A port already taken gives one line naming the port and the flag, exit 2, no traceback (issue 15: a second
`make up`, or Home Assistant's broker on 1883, printed 60 lines of amqtt tracebacks)."""

from __future__ import annotations

import socket
import subprocess
import sys

from broker.cli import port_in_use


def test_a_busy_port_is_one_line_and_exit_2() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert port_in_use("127.0.0.1", port) is not None
        out = subprocess.run([sys.executable, "-m", "cloudless", "broker", "--allow-anonymous", "--port", str(port)],
                             capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if "WARNING" not in line]
    assert lines == [f"cloudless broker: port {port} on 127.0.0.1 is in use (Address already in use; another "
                     "broker? Home Assistant's?): pass --port N (cloudless up: --mqtt-port N)"]


def test_a_free_port_is_not_reported() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert port_in_use("127.0.0.1", port) is None
    assert port_in_use("127.0.0.1", 0) is None


def test_up_names_the_busy_port_and_the_flag_before_starting_anything(tmp_path: object) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "cloudless", "up", "--mqtt-port", str(port), "--no-agent",
                              "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2
    assert out.stderr.strip() == (f"cloudless up: port {port} (MQTT) on 127.0.0.1 is in use (another broker? Home "
                                  f"Assistant's? a second `cloudless up`?): pass --mqtt-port {port + 10}")
    assert "starting broker" not in out.stdout

"""A tiny UDP program for lab tests, run inside a lab machine: `echo PORT` answers every datagram with the sender's
address as seen by it (a reflexive-address server, like STUN's); `punch LOCAL_PORT PEER_IP PEER_PORT SECONDS` sends a
probe every 100 ms from LOCAL_PORT and prints `got FROM` for the first datagram received from the peer (exit 0),
or exits 1 after SECONDS; `ask LOCAL_PORT SERVER_IP SERVER_PORT` prints the reflexive address the echo server saw."""

from __future__ import annotations

import socket
import sys
import time


def main(argv: list[str]) -> int:
    match argv:
        case ["echo", port]:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("0.0.0.0", int(port)))
            while True:
                _data, addr = sock.recvfrom(2048)
                sock.sendto(f"{addr[0]}:{addr[1]}".encode(), addr)
        case ["ask", local, host, port]:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("0.0.0.0", int(local)))
            sock.settimeout(0.2)
            for _ in range(15):  # the server may still be starting: ask again every 200 ms, for 3 s
                sock.sendto(b"?", (host, int(port)))
                try:
                    print(sock.recvfrom(2048)[0].decode())
                except (TimeoutError, ConnectionRefusedError):
                    continue
                return 0
            return 1
        case ["punch", local, host, port, seconds]:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("0.0.0.0", int(local)))
            sock.settimeout(0.1)
            peer = (host, int(port))
            deadline = time.monotonic() + float(seconds)
            heard: tuple[str, int] | None = None
            while time.monotonic() < deadline:
                sock.sendto(b"punch", heard or peer)
                try:
                    _data, addr = sock.recvfrom(2048)
                except TimeoutError:
                    continue
                if heard is None:  # answer where the peer's packet came from (a symmetric NAT's fresh port)
                    heard = addr
                    print(f"got {addr[0]}:{addr[1]}", flush=True)
                    finish = min(deadline, time.monotonic() + 1.0)  # keep answering so the peer hears us too
                    while time.monotonic() < finish:
                        sock.sendto(b"punch", heard)
                        time.sleep(0.05)
                    return 0
            return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

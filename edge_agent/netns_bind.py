"""The one-shot helper `edge_agent.netns` starts inside a container's network namespace (through `nsenter`): it
binds the sockets it is asked for there and hands them back to the agent over a unix socket with SCM_RIGHTS, then
exits. A socket keeps the network namespace it was created in, so the agent's own event loop then serves
addresses inside the container (its 127.0.0.1:53, service addresses from 127/8) without being in it.

Standalone on purpose: it is run by path with `python -I -S` (stdlib only, no site, no project imports), since the
process lives inside another user/network namespace where the agent's import path and environment mean nothing.

Protocol (argv: the inherited unix socket's fd number; stdin: one JSON request):
    request  {"binds": [{"ip": "127.0.0.1", "port": 53, "proto": "udp"}, ...]}   (at most MAX_BINDS)
    reply    one message on the unix socket: JSON {"ok": [true, false, ...], "errors": ["", "why", ...]} with one
             fd attached per `true`, in order. A bind that fails is reported, never fatal for the others.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import sys

MAX_BINDS = 64
MAX_REQUEST = 16 * 1024


def bind_one(item: object) -> socket.socket | str:
    """A bound (and, for TCP, listening) non-blocking socket, or why not."""
    if not isinstance(item, dict):
        return "a bind must be an object"
    ip, port, proto = item.get("ip"), item.get("port"), item.get("proto")
    try:
        addr = ipaddress.ip_address(ip if isinstance(ip, str) else "")
    except ValueError:
        return f"ip: not an IP address: {str(ip)[:64]!r}"
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        return f"port: expected 1-65535, got {str(port)[:16]!r}"
    if proto not in ("tcp", "udp"):
        return f"proto: expected tcp or udp, got {str(proto)[:16]!r}"
    family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((str(addr), port))
        if proto == "tcp":
            sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        return f"{proto} {addr}:{port}: {exc.strerror or exc}"
    return sock


def main(argv: list[str]) -> int:
    try:
        channel = socket.socket(fileno=int(argv[1]))
    except (IndexError, ValueError, OSError) as exc:
        print(f"netns_bind: expected the reply socket's fd as the only argument: {exc}", file=sys.stderr)
        return 2
    try:
        request = json.loads(sys.stdin.buffer.read(MAX_REQUEST + 1)[:MAX_REQUEST])
        binds = request["binds"]
        if not isinstance(binds, list) or len(binds) > MAX_BINDS:
            raise ValueError(f"binds: expected a list of at most {MAX_BINDS}")
    except (ValueError, KeyError, TypeError) as exc:
        channel.sendall(json.dumps({"error": f"bad request: {exc}"}).encode())
        return 2
    results = [bind_one(item) for item in binds]
    sockets = [r for r in results if isinstance(r, socket.socket)]
    reply = {"ok": [isinstance(r, socket.socket) for r in results],
             "errors": ["" if isinstance(r, socket.socket) else r for r in results]}
    socket.send_fds(channel, [json.dumps(reply).encode()], [s.fileno() for s in sockets])
    for s in sockets:
        s.close()
    channel.close()
    return 0


if __name__ == "__main__":
    os.umask(0o077)
    sys.exit(main(sys.argv))

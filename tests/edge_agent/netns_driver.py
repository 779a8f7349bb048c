"""Run by tests/edge_agent/test_netns_podman.py as the agent would be (root, or the rootless test user): binds
127.0.0.1:53/udp and ADDR:80/tcp inside the network namespace of PID through edge_agent.netns, then serves them from
its own event loop: every DNS query for an A record is answered with ANSWER_IP, every HTTP request with BODY.
Prints one JSON line (what was bound, or why not), then serves until its stdin closes.

Usage: python -m tests.edge_agent.netns_driver PID ADDR"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import sys

from edge_agent.netns import BindSpec, bind_in_netns

ANSWER_IP = "10.9.8.7"
BODY = b"served-by-the-agent-loop\n"


def dns_answer(query: bytes) -> bytes | None:
    """A reply to a one-question query: ANSWER_IP for type A, no records otherwise."""
    if len(query) < 12:
        return None
    end = 12
    while end < len(query) and query[end]:
        end += query[end] + 1
    qtype = struct.unpack_from("!H", query, end + 1)[0] if end + 5 <= len(query) else 0
    question = query[12:end + 5]
    answers = b""
    if qtype == 1:
        answers = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 5, 4) + socket.inet_aton(ANSWER_IP)
    header = query[:2] + struct.pack("!HHHHH", 0x8180, 1, 1 if answers else 0, 0, 0)
    return header + question + answers


class Dns(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = dns_answer(data)
        if reply is not None:
            self.transport.sendto(reply, addr)  # type: ignore[attr-defined]


async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY)
    await writer.drain()
    writer.close()


async def main(pid: int, addr: str) -> None:
    results = await bind_in_netns(pid, [BindSpec("127.0.0.1", 53, "udp"), BindSpec(addr, 80, "tcp"),
                                        BindSpec("not-an-ip", 1, "tcp")])
    print(json.dumps([r if isinstance(r, str) else list(r.getsockname()) for r in results]), flush=True)
    udp, tcp = results[0], results[1]
    if isinstance(udp, str) or isinstance(tcp, str):
        return
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(Dns, sock=udp)
    server = await asyncio.start_server(http, sock=tcp)
    await loop.run_in_executor(None, sys.stdin.read)  # until the test closes our stdin
    server.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))

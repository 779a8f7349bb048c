"""An overlay node for lab tests, run inside a lab machine (`ip netns exec ... python overlay_node.py ...`).

    relay  DIR PORT                                  run a relay with the credentials in DIR
    serve  DIR LAN_IP RELAY_ADDR RELAY_ID            attach to the relay, serve echo streams; print {"ready": ...}
    dial   DIR LAN_IP RELAY_ADDR RELAY_ID PEER SECS  attach, connect to PEER through the relay, then for SECS
                                                     seconds echo a message every 100 ms and print every path
                                                     change and a final summary, as JSON lines
    stream DIR LAN_IP RELAY_ADDR RELAY_ID PEER MIB [LINGER]
                                                     connect, stream MIB MiB through one echo stream (a sink here)
                                                     while paths may change; print the bytes back and the paths;
                                                     then stay LINGER seconds, printing path changes

DIR holds key.pem, cert.pem, ca.pem and `identity`. Output is JSON lines on stdout (flushed), for the test to read.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path

from dataplane.endpoint import Endpoint
from dataplane.paths import PathChanged, Timers
from dataplane.quic import NodeCredential, Peer
from dataplane.relay import RelayServer


def say(**doc: object) -> None:
    print(json.dumps(doc), flush=True)


def credential(directory: str) -> NodeCredential:
    d = Path(directory)
    return NodeCredential.from_files((d / "identity").read_text().strip(), cert=d / "cert.pem", key=d / "key.pem",
                                     ca=d / "ca.pem")


def addr(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


async def echo(_peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A stream that starts with SINK is counted and hashed (the summary is the answer); any other is echoed."""
    try:
        head = await reader.readexactly(4)
    except asyncio.IncompleteReadError as short:
        head = short.partial
    if head != b"SINK":
        writer.write(head + await reader.read())
        writer.write_eof()
        return
    digest = hashlib.sha256()
    total = 0
    while chunk := await reader.read(65536):
        total += len(chunk)
        digest.update(chunk)
    writer.write(json.dumps({"bytes": total, "sha256": digest.hexdigest()}).encode())
    writer.write_eof()


def on_path(node: str, event: PathChanged) -> None:
    say(path=str(event.new), old=str(event.old), peer=node, reason=event.reason, t=time.time())


async def node(directory: str, lan_ip: str, relay_addr: str, relay_id: str) -> Endpoint:
    endpoint = await Endpoint.open(credential(directory), "0.0.0.0", 41641, clock=time.time,
                                   on_stream=echo, local_addresses=lambda: [lan_ip], on_path=on_path,
                                   timers=Timers())
    await endpoint.attach_relay(addr(relay_addr), relay_id=relay_id)
    return endpoint


async def main(argv: list[str]) -> int:
    match argv:
        case ["relay", directory, port]:
            relay = await RelayServer.open(credential(directory), "0.0.0.0", int(port), clock=time.time)
            await relay.listen_tls("0.0.0.0", int(port))
            say(ready=relay.address)
            await asyncio.Event().wait()
        case ["serve", directory, lan_ip, relay_addr, relay_id]:
            endpoint = await node(directory, lan_ip, relay_addr, relay_id)
            say(ready=endpoint.address, reflexive=endpoint.reflexive.get(relay_id))
            await asyncio.Event().wait()
        case ["dial", directory, lan_ip, relay_addr, relay_id, peer_id, seconds]:
            endpoint = await node(directory, lan_ip, relay_addr, relay_id)
            started = time.time()
            peer = await endpoint.connect(peer_id, via=relay_id)
            say(connected=time.time() - started, started=started)
            first = await ask(peer, b"hello")
            say(first_byte=time.time() - started, answer=first.decode())
            failures = 0
            while time.time() - started < float(seconds):
                try:
                    assert await ask(peer, b"ping") == b"ping"
                except Exception as exc:
                    failures += 1
                    say(error=repr(exc))
                await asyncio.sleep(0.1)
            link = endpoint.links[peer_id]
            say(final=str(link.state.path()), failures=failures, bytes_out=link.bytes_out, bytes_in=link.bytes_in,
                birthday=link.birthday.started if link.birthday else 0, dropped=endpoint.dropped)
        case ["stream", directory, lan_ip, relay_addr, relay_id, peer_id, mib, *linger]:
            endpoint = await node(directory, lan_ip, relay_addr, relay_id)
            peer = await endpoint.connect(peer_id, via=relay_id)
            reader, writer = await peer.open_stream()
            writer.write(b"SINK")
            digest = hashlib.sha256()
            block = bytes(range(256)) * 256  # 64 KiB
            for i in range(int(float(mib) * 16)):
                chunk = block[i % 256:] + block[: i % 256]
                digest.update(chunk)
                writer.write(chunk)
                await writer.drain()
            writer.write_eof()
            summary = json.loads(await reader.read())
            link = endpoint.links[peer_id]
            say(sent=int(float(mib) * 16) * len(block), sha256=digest.hexdigest(), received=summary,
                final=str(link.state.path()), bytes_out=link.bytes_out)
            await asyncio.sleep(float(linger[0]) if linger else 0.0)  # path changes are still printed meanwhile
        case _:
            print(__doc__, file=sys.stderr)
            return 2
    return 0


async def ask(peer: Peer, data: bytes) -> bytes:
    reader, writer = await peer.open_stream()
    writer.write(data)
    writer.write_eof()
    async with asyncio.timeout(5):
        return await reader.read()


if __name__ == "__main__":
    if os.environ.get("OVERLAY_NODE_LOG"):  # the overlay's own log (paths, birthday attempts), for failure messages
        logging.basicConfig(filename=os.environ["OVERLAY_NODE_LOG"], level=logging.INFO,
                            format="%(asctime)s %(name)s %(message)s")
    sys.exit(asyncio.run(main(sys.argv[1:])))

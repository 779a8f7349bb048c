"""`cloudless exec -i/-t`: this terminal joined to a command in a replica, over the API's WebSocket
(coordinator.rest.tty describes the protocol).

With `-it` the local terminal goes to raw mode for the session (every key, Ctrl-C and Ctrl-D included, goes to the
remote terminal, whose line discipline turns them into SIGINT and end of file) and is restored however the session
ends. With `-t` its size is sent at the start and again on every SIGWINCH. With `-i` alone, standard input is copied
as bytes and its end is sent as end of file. Without `-i` keys are not sent, so (as with kubectl) the terminal stays
as it is; whenever it is not raw, Ctrl-C here ends the session (the node kills the command) with status 130.

aiohttp is imported only here, and only when a session starts: the rest of the CLI runs without it (an admin
machine without the coordinator extra gets a clear message instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import ssl
import termios
import tty as ttymod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from cloudless.client import ClientError, ConnectionFailed

HEARTBEAT_S = 15.0
READ_CHUNK = 4096


@dataclass(frozen=True, slots=True)
class SessionTarget:
    server: str
    token: str | None
    ca: str | None
    namespace: str
    workload: str
    replica: str


def session_query(command: Sequence[str], *, tty: bool, stdin: bool, rows: int, cols: int,
                  term: str) -> list[tuple[str, str]]:
    """The route's query: one `command` per word, then the flags and the window."""
    return [*(("command", w) for w in command), ("tty", "1" if tty else "0"), ("stdin", "1" if stdin else "0"),
            ("rows", str(rows)), ("cols", str(cols)), ("term", term)]


def window_size(fd: int) -> tuple[int, int]:
    """(rows, cols) of the terminal on `fd` (24 x 80 when it is not one)."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return 24, 80
    return max(1, min(size.lines, 4096)), max(1, min(size.columns, 4096))


def run(target: SessionTarget, command: Sequence[str], *, tty: bool, stdin: bool,
        in_fd: int = 0, out_fd: int = 1) -> int:
    """Run the session to its end; the remote exit code (or raises ClientError)."""
    try:
        import aiohttp  # noqa: F401 - checked here so a missing extra is a message, not a traceback later
    except ImportError:
        raise ClientError("exec -i/-t needs aiohttp, which the CLI installs with the coordinator extra",
                          hint="pip install 'cloudless[coordinator]' (or run exec without -i/-t)") from None
    saved = termios.tcgetattr(in_fd) if tty and stdin else None  # -t alone reads no keys: Ctrl-C must stay ours
    try:
        if saved is not None:
            ttymod.setraw(in_fd, termios.TCSANOW)
        return asyncio.run(_Session(target, in_fd=in_fd, out_fd=out_fd, tty=tty, stdin=stdin).run(command))
    finally:
        if saved is not None:
            termios.tcsetattr(in_fd, termios.TCSADRAIN, saved)


class _Session:
    def __init__(self, target: SessionTarget, *, in_fd: int, out_fd: int, tty: bool, stdin: bool) -> None:
        self.target, self.in_fd, self.out_fd, self.tty, self.stdin = target, in_fd, out_fd, tty, stdin
        self.outgoing: asyncio.Queue[bytes | dict[str, Any] | None] = asyncio.Queue(maxsize=64)
        self.raw = tty and stdin  # the local terminal is in raw mode (run)
        self.interrupted = False
        self.paused = False  # stdin left unread while the coordinator catches up

    def _path(self) -> str:
        t = self.target
        return "/v1/workloads/" + "/".join(quote(p, safe="") for p in (t.namespace, t.workload)) + \
            f"/replicas/{quote(t.replica, safe='')}/tty"

    def _ssl(self) -> ssl.SSLContext | bool:
        if self.target.ca and self.target.server.startswith("https"):
            return ssl.create_default_context(cafile=self.target.ca)
        return True

    async def run(self, command: Sequence[str]) -> int:
        import aiohttp

        rows, cols = window_size(self.in_fd if self.tty else self.out_fd)
        query = session_query(command, tty=self.tty, stdin=self.stdin, rows=rows, cols=cols,
                              term=os.environ.get("TERM", "xterm") or "xterm")
        headers = {"Authorization": f"Bearer {self.target.token}"} if self.target.token else {}
        url = self.target.server.rstrip("/") + self._path()
        async with aiohttp.ClientSession() as http:
            try:
                ws = await http.ws_connect(url, params=query, headers=headers, ssl=self._ssl(),
                                           heartbeat=HEARTBEAT_S, max_msg_size=1024 * 1024)
            except aiohttp.WSServerHandshakeError as exc:
                raise await self._refusal(http, url, query, headers, exc.status) from None
            except (aiohttp.ClientError, OSError) as exc:
                raise ConnectionFailed(f"cannot open a session at {self.target.server}: {exc}",
                                       hint="check --server and that the coordinator runs") from None
            async with ws:
                return await self._relay(ws)

    async def _refusal(self, http: Any, url: str, query: list[tuple[str, str]], headers: dict[str, str],
                       status: int) -> ClientError:
        """Why the coordinator refused the upgrade: the same request without it answers with the JSON error."""
        with contextlib.suppress(Exception):
            async with http.get(url, params=query, headers=headers, ssl=self._ssl()) as resp:
                body = await resp.json(content_type=None)
                message = ((body or {}).get("error") or {}).get("message")
                if resp.status == status and isinstance(message, str):
                    return ClientError(message)
        return ClientError(f"the coordinator refused the session (HTTP {status})")

    async def _relay(self, ws: Any) -> int:
        import aiohttp

        loop = asyncio.get_running_loop()
        sender = asyncio.create_task(self._send_loop(ws))
        if self.stdin:
            loop.add_reader(self.in_fd, self._on_input)
        if self.tty:
            loop.add_signal_handler(signal.SIGWINCH, self._on_resize)
        if not self.raw:  # a raw terminal sends Ctrl-C as a byte; otherwise it is SIGINT here, and ends the session
            loop.add_signal_handler(signal.SIGINT, self._on_interrupt, ws)
        try:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.BINARY:
                    self._write(msg.data)
                elif msg.type is aiohttp.WSMsgType.TEXT:
                    end = self._control(msg.data)
                    if end is not None:
                        return end
            if self.interrupted:
                return 130
            raise ClientError("the session ended without an exit code (the connection to the coordinator closed)")
        finally:
            if self.stdin:
                loop.remove_reader(self.in_fd)
            if self.tty:
                loop.remove_signal_handler(signal.SIGWINCH)
            if not self.raw:
                loop.remove_signal_handler(signal.SIGINT)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    def _control(self, text: str) -> int | None:
        try:
            doc = json.loads(text)
        except ValueError:
            return None
        if isinstance(doc, dict) and isinstance(doc.get("exit"), int):
            return int(doc["exit"])
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            raise ClientError(doc["error"])
        return None

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.out_fd, view)
            except BlockingIOError:
                continue
            view = view[n:]

    def _on_input(self) -> None:
        if self.outgoing.full():  # the coordinator is slower than the input (a pipe): leave it unread until then
            asyncio.get_running_loop().remove_reader(self.in_fd)
            self.paused = True
            return
        try:
            data = os.read(self.in_fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.in_fd)
            self.outgoing.put_nowait({"eof": True})
            return
        self.outgoing.put_nowait(data)

    def _on_resize(self) -> None:
        rows, cols = window_size(self.in_fd)
        with contextlib.suppress(asyncio.QueueFull):
            self.outgoing.put_nowait({"resize": [rows, cols]})

    def _on_interrupt(self, ws: Any) -> None:
        self.interrupted = True
        asyncio.get_running_loop().create_task(ws.close())

    async def _send_loop(self, ws: Any) -> None:
        while True:
            item = await self.outgoing.get()
            if self.paused:
                self.paused = False
                asyncio.get_running_loop().add_reader(self.in_fd, self._on_input)
            if isinstance(item, bytes):
                await ws.send_bytes(item)
            elif item is not None:
                await ws.send_str(json.dumps(item))


"""A deliberately minimal MQTT 3.1.1 client over a plain socket, for tests that need to misbehave:
stay silent past keep-alive, withhold PUBACK, or connect and subscribe to nothing. (MQTT 3.1.1 §2-§3.)"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 1, 2, 3, 4, 8, 9, 12, 13, 14


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(ptype: int, flags: int, body: bytes) -> bytes:
    return bytes([(ptype << 4) | flags]) + _remaining_length(len(body)) + body


@dataclass
class Packet:
    ptype: int
    flags: int
    body: bytes

    @property
    def dup(self) -> bool:
        return bool(self.flags & 0x08)

    @property
    def qos(self) -> int:
        return (self.flags >> 1) & 0x03

    @property
    def retain(self) -> bool:
        return bool(self.flags & 0x01)

    def publish_fields(self) -> tuple[str, int | None, bytes]:
        (tlen,) = struct.unpack("!H", self.body[:2])
        topic = self.body[2 : 2 + tlen].decode()
        rest = self.body[2 + tlen :]
        if self.qos:
            (pid,) = struct.unpack("!H", rest[:2])
            return topic, pid, rest[2:]
        return topic, None, rest


class RawClient:
    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=5)
        self._buf = b""
        self._held: list[Packet] = []  # packets read while waiting for a SUBACK (e.g. retained PUBLISHes)

    def connect(
        self,
        client_id: str,
        *,
        username: str | None = None,
        password: str | None = None,
        clean: bool = True,
        keepalive: int = 60,
        will: tuple[str, bytes, int, bool] | None = None,
    ) -> int:
        flags = (0x02 if clean else 0)
        payload = _str(client_id)
        if will is not None:
            topic, msg, qos, retain = will
            flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
            payload += _str(topic) + _str(msg)
        if username is not None:
            flags |= 0x80
            payload += _str(username)
        if password is not None:
            flags |= 0x40
            payload += _str(password)
        body = _str("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + payload
        self.sock.sendall(_packet(CONNECT, 0, body))
        ack = self.read(timeout=5)
        assert ack is not None and ack.ptype == CONNACK, f"expected CONNACK, got {ack}"
        return ack.body[1]  # return code (0 = accepted)

    def subscribe(self, topic_filter: str, qos: int = 1, pid: int = 1) -> int:
        body = struct.pack("!H", pid) + _str(topic_filter) + bytes([qos])
        self.sock.sendall(_packet(SUBSCRIBE, 0x02, body))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            p = self._read_new(timeout=5)
            if p is None:
                break
            if p.ptype == SUBACK:
                return p.body[2]
            self._held.append(p)  # a retained message may arrive before the SUBACK: keep it for read()
        raise AssertionError("no SUBACK")

    def puback(self, pid: int) -> None:
        self.sock.sendall(_packet(PUBACK, 0, struct.pack("!H", pid)))

    def ping(self) -> None:
        self.sock.sendall(_packet(PINGREQ, 0, b""))

    def disconnect(self) -> None:
        self.sock.sendall(_packet(DISCONNECT, 0, b""))
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self, timeout: float) -> bool:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return True
        except OSError:
            return False
        if not data:
            return False
        self._buf += data
        return True

    def read(self, timeout: float = 2.0) -> Packet | None:
        """The next packet, or None on timeout. Raises EOFError when the server closed the connection."""
        if self._held:
            return self._held.pop(0)
        return self._read_new(timeout)

    def _read_new(self, timeout: float) -> Packet | None:
        deadline = time.monotonic() + timeout
        while True:
            pkt = self._parse()
            if pkt is not None:
                return pkt
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            before = len(self._buf)
            if not self._fill(left):
                raise EOFError("connection closed by the broker")
            if len(self._buf) == before and time.monotonic() >= deadline:
                return None

    def _parse(self) -> Packet | None:
        if len(self._buf) < 2:
            return None
        mult, length, i = 1, 0, 1
        while True:
            if i >= len(self._buf):
                return None
            byte = self._buf[i]
            length += (byte & 0x7F) * mult
            mult *= 128
            i += 1
            if not byte & 0x80:
                break
        if len(self._buf) < i + length:
            return None
        head = self._buf[0]
        body = self._buf[i : i + length]
        self._buf = self._buf[i + length :]
        return Packet(head >> 4, head & 0x0F, body)

    def publishes(self, duration: float) -> list[Packet]:
        """All PUBLISH packets received within `duration` seconds (bounded wait)."""
        out: list[Packet] = []
        deadline = time.monotonic() + duration
        while (left := deadline - time.monotonic()) > 0:
            p = self.read(timeout=left)
            if p is None:
                break
            if p.ptype == PUBLISH:
                out.append(p)
        return out

"""The data plane's error hierarchy (STYLE §4): one base, data attributes, no aioquic or socket exception escapes."""

from __future__ import annotations

from dataplane.identity import Refused


class DataPlaneError(Exception):
    """Base of every error the data plane raises."""


class PeerRefused(DataPlaneError):
    """The other side is not who it must be (`refusal` says why), or it refused us (`by_peer`)."""

    def __init__(self, refusal: Refused | str, *, by_peer: bool = False) -> None:
        self.refusal = refusal
        self.by_peer = by_peer
        super().__init__(f"{'refused by the peer' if by_peer else 'peer refused'}: {refusal}")


class Unreachable(DataPlaneError):
    """No answer from the peer within the time allowed (`addr` names where we tried)."""

    def __init__(self, addr: object, seconds: float) -> None:
        self.addr = addr
        self.seconds = seconds
        super().__init__(f"no overlay handshake with {addr} within {seconds:.0f}s")


class ConnectionLost(DataPlaneError):
    """The connection ended (idle timeout, closed by either side) while something still used it."""

"""The edge agent's error hierarchy (STYLE §4): I/O failures and bugs raise; expected "no"s are values.

Runtime adapters convert their library's exceptions at the boundary (`raise RuntimeUnavailable(...) from exc`),
so no podman-py, requests or OS error escapes an adapter.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error raised by the `edge_agent` package."""


class ConfigError(AgentError):
    """Agent settings or files are invalid; the message names the setting and says what to do."""


class StateError(AgentError):
    """The local state in the data dir could not be read or written."""


class RuntimeError_(AgentError):
    """Base of runtime adapter failures (named with a trailing underscore to not shadow the builtin)."""


class RuntimeUnavailable(RuntimeError_):
    """The runtime cannot be reached at all (no Podman socket, service failed to start, ...)."""


class ImageUnavailable(RuntimeError_):
    """An image is not present locally and could not be pulled (yet); retried with backoff."""


class InstanceNotFound(RuntimeError_):
    """The container or process the agent asked about no longer exists."""


class SpecUnsupported(RuntimeError_):
    """The runtime cannot honour this replica spec safely (e.g. the process runtime and a container image)."""


class RuntimeFailed(RuntimeError_):
    """A runtime operation failed for another reason; `detail` is the runtime's own message."""

    def __init__(self, message: str, *, detail: str = "") -> None:
        self.detail = detail
        super().__init__(f"{message}: {detail}" if detail else message)

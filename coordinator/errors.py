"""The coordinator's error hierarchy.

One small hierarchy (STYLE §4): expected "no"s are values (`Reject`, `Unschedulable`); exceptions are for input
that violates a contract (a malformed workload spec, an inconsistent snapshot) and for bugs. Each carries its
data as attributes so the REST layer can turn it into JSON without parsing messages.
"""

from __future__ import annotations

from collections.abc import Sequence


class CoordinatorError(Exception):
    """Base of every error the `coordinator` package raises on purpose."""


class SpecError(CoordinatorError):
    """A workload document is invalid.

    `errors` lists every problem found as `(path, message)`, e.g.
    `("spec.imagee", 'unknown field (did you mean "image"?)')`; `path` and `message` are the first one.
    The parser collects all problems in one pass so a user fixes a document in one round trip.
    """

    def __init__(self, path: str, message: str, *, errors: Sequence[tuple[str, str]] = ()) -> None:
        self.errors: list[tuple[str, str]] = list(errors) or [(path, message)]
        self.path, self.message = self.errors[0]
        first = f"{self.path}: {self.message}" if self.path else self.message
        more = len(self.errors) - 1
        super().__init__(first + (f" (and {more} more)" if more else ""))

    @classmethod
    def collected(cls, errors: Sequence[tuple[str, str]]) -> SpecError:
        """One error carrying every problem of a document (`errors` must not be empty)."""
        path, message = errors[0]
        return cls(path, message, errors=errors)

    def to_json(self) -> dict[str, list[dict[str, str]]]:
        """The shape the REST API returns: `{"errors": [{"path": ..., "message": ...}, ...]}`."""
        return {"errors": [{"path": p, "message": m} for p, m in self.errors]}


class ConfigError(CoordinatorError, ValueError):
    """A configuration value is out of range (raised once, at startup, when config is parsed)."""


class SnapshotError(CoordinatorError):
    """A scheduler snapshot is inconsistent (e.g. two nodes share an id): a bug in whoever built it."""

    def __init__(self, message: str, *, node_id: str = "") -> None:
        self.node_id = node_id
        super().__init__(message)


class SchedulerInvariantError(CoordinatorError):
    """The scheduler caught itself contradicting its own invariants: always a bug, never a user error."""

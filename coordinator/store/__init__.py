"""State stores behind one Protocol (`base.Store`): SQLite (embedded default); etcd for replicated coordinators."""

from coordinator.store.base import (
    Change,
    Conflict,
    Entry,
    Fenced,
    Op,
    OpKind,
    Store,
    StoreError,
    StoreUnavailable,
    delete,
    put,
)
from coordinator.store.sqlite import SqliteStore

__all__ = ["Change", "Conflict", "Entry", "Fenced", "Op", "OpKind", "SqliteStore", "Store", "StoreError",
           "StoreUnavailable", "delete", "put"]

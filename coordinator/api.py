"""The REST API lives in coordinator.rest (one module per resource, each with its route table); this name stays
for the callers that import the app from here. `StorageAdmin` is the hook the object store's gateway fills
(`Api(..., storage=gateway)` or `api.storage = gateway`)."""

from coordinator.rest.app import ROUTES, Api, openapi_document, serve, serve_socket
from coordinator.rest.ports import StorageAdmin, StorageMetadata

__all__ = ["ROUTES", "Api", "StorageAdmin", "StorageMetadata", "openapi_document", "serve", "serve_socket"]

"""The REST API lives in coordinator.rest (one module per resource, each with its route table); this name stays
for the callers that import the app from here."""

from coordinator.rest.app import ROUTES, Api, openapi_document, serve, serve_socket

__all__ = ["ROUTES", "Api", "openapi_document", "serve", "serve_socket"]

"""The coordinator's REST API (coordinator.rest.app): one module per resource, each with its route table."""

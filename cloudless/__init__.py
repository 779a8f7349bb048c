"""The `cloudless` command: a thin dispatcher that imports only the part a subcommand needs.

It lives outside the four top-level packages so that `edge_agent` and `coordinator` never import each other:
`cloudless agent` loads only the agent side (an agent-only install has no amqtt, aiohttp, ...).
"""

__version__ = "0.1.0"

"""The data plane: the second bus of Cloudless, side-neutral like `broker/`.

What lives here (ARCHITECTURE §8): the QUIC overlay between devices (identity checks on both sides, candidates,
hole punching, relay client and server, streams and datagrams), the peer wire format, object chunks and their
transfer, the OCI mirror, and service resolution and proxying. Bytes between devices travel here; control about
them (candidates, peer directories, service endpoints, object placement, image single-flight) stays on MQTT as
wire-contract messages in `broker.wire`.

The rule (tests/test_layering.py states it):
- `dataplane` imports only `broker` (and itself). Nothing in it knows an agent or a coordinator: it is handed
  identities, peers and decisions as values and reports events, so either side can run it.
- `edge_agent` may import all of it (the agent wires the data plane on a device).
- `coordinator` may import only its pure contract modules (formats and cores listed in the layering test's
  CORES), never an adapter (sockets, aioquic).
- Decisions (path choice, timers, peer state, placement) are sans-IO cores that take `now`, as aioquic's own
  `QuicConnection` does; aioquic and sockets live in adapters named for them. aioquic is the `overlay` extra:
  a device without it still runs workloads, and the scheduler knows which nodes have the overlay.
"""

"""Topic-indexed subscriptions: which clients a PUBLISH goes to, without looking at every client (pure core).

Theory of operation. A subscription is (client, filter, qos). Filters are stored in a trie keyed by topic level
(MQTT 3.1.1 §4.7.1: levels are separated by '/', and empty levels are levels too). Each node holds the clients
whose filter ends exactly there; the wildcard levels '+' and '#' are ordinary children with those names.

`match(topic)` walks the topic's levels once, following at each level the literal child and the '+' child, and
collecting the '#' child's clients wherever one exists (a trailing '#' also matches the parent level itself:
"sport/#" matches "sport", §4.7.1.2). Topics starting with '$' are not matched by a filter whose *first* level is
a wildcard (§4.7.2). The cost is O(levels x wildcard branching), independent of the number of clients: a broker
with 2,000 nodes each subscribed to its own exact topics touches one path per message instead of 6,000 filters.

A client that has several matching subscriptions receives one copy at the highest QoS among them (§3.3.5 allows
either; Mosquitto 2 also sends one copy). Subscribing again to the same filter replaces its QoS (§3.8.4).

Invariants: a node exists only while some subscription lies at or below it (removal prunes empty branches);
`filters(client)` is exactly the set of (filter, qos) added and not removed for that client. Filters are taken
as given: validating them (§4.7.1) and authorising them is the caller's job (broker.acl). Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

_PLUS = "+"
_HASH = "#"


class _Node(Generic[K]):
    __slots__ = ("children", "clients")

    def __init__(self) -> None:
        self.children: dict[str, _Node[K]] = {}
        self.clients: dict[K, int] = {}  # client -> QoS of its filter that ends at this node


class SubscriptionTree(Generic[K]):
    """Subscriptions indexed by topic level; clients are any hashable key (the broker uses client ids)."""

    def __init__(self) -> None:
        self._root: _Node[K] = _Node()
        self._by_client: dict[K, dict[str, int]] = {}

    def add(self, client: K, topic_filter: str, qos: int) -> bool:
        """Subscribe `client` to `topic_filter` at `qos`; True if new, False if it replaced an existing QoS."""
        node = self._root
        for level in topic_filter.split("/"):
            node = node.children.setdefault(level, _Node())
        new = client not in node.clients
        node.clients[client] = qos
        self._by_client.setdefault(client, {})[topic_filter] = qos
        return new

    def remove(self, client: K, topic_filter: str) -> bool:
        """Unsubscribe; False if there was no such subscription. Empty branches are pruned."""
        own = self._by_client.get(client)
        if own is None or topic_filter not in own:
            return False
        del own[topic_filter]
        if not own:
            del self._by_client[client]
        path: list[tuple[_Node[K], str]] = []
        node = self._root
        for level in topic_filter.split("/"):
            path.append((node, level))
            node = node.children[level]
        del node.clients[client]
        for parent, level in reversed(path):
            child = parent.children[level]
            if child.clients or child.children:
                break
            del parent.children[level]
        return True

    def remove_client(self, client: K) -> list[str]:
        """Every subscription of `client` removed; returns the filters it had."""
        filters = list(self._by_client.get(client, ()))
        for topic_filter in filters:
            self.remove(client, topic_filter)
        return filters

    def filters(self, client: K) -> Mapping[str, int]:
        return dict(self._by_client.get(client, {}))

    def clients(self) -> Iterator[K]:
        return iter(self._by_client)

    def __len__(self) -> int:
        """The number of (client, filter) subscriptions."""
        return sum(len(f) for f in self._by_client.values())

    def match(self, topic: str) -> dict[K, int]:
        """Clients with a subscription matching the concrete `topic`, each with the highest QoS among them."""
        out: dict[K, int] = {}
        levels = topic.split("/")
        dollar = topic.startswith("$")  # §4.7.2: no leading wildcard matches a '$' topic
        frontier: list[_Node[K]] = [self._root]
        last = len(levels) - 1
        for i, level in enumerate(levels):
            nxt: list[_Node[K]] = []
            for node in frontier:
                wild = not (dollar and i == 0)
                if wild and (multi := node.children.get(_HASH)) is not None:
                    _merge(out, multi.clients)
                if (exact := node.children.get(level)) is not None:
                    nxt.append(exact)
                if wild and (single := node.children.get(_PLUS)) is not None:
                    nxt.append(single)
            if not nxt:
                return out
            frontier = nxt
            if i == last:
                for node in frontier:
                    _merge(out, node.clients)
                    if (multi := node.children.get(_HASH)) is not None:  # "a/#" matches "a" (§4.7.1.2)
                        _merge(out, multi.clients)
        return out


def _merge(out: dict[K, int], clients: Mapping[K, int]) -> None:
    for client, qos in clients.items():
        have = out.get(client)
        if have is None or qos > have:
            out[client] = qos

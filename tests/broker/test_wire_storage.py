"""The storage facts in NodeStatus (issue 20): they round-trip, an older agent's status (without them) still
decodes, and a corrupt-chunk list is refused when an entry is not a chunk id or when it is too long."""

from __future__ import annotations

import hashlib

import msgpack
import pytest

from broker import wire
from broker.errors import WireError
from broker.wire.codec import PROTOCOL_MAJOR
from broker.wire.messages import MAX_CORRUPT_REPORTED
from tests.broker.builders import make_node_status


def cid(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def raw_status(**body: object) -> bytes:
    """A status as a peer could send it, bypassing our encoder's checks."""
    base = {"node_id": "pi-1", "presence": "online", "ts": 1.0}
    return msgpack.packb({"v": PROTOCOL_MAJOR, "k": wire.NodeStatus.KIND, "b": {**base, **body}}, use_bin_type=True)


def test_storage_facts_round_trip_with_a_full_corrupt_list() -> None:
    status = make_node_status(storage_quota_bytes=64 << 20, storage_used_bytes=5 << 20, storage_chunks=5,
                              storage_corrupt=tuple(cid(i) for i in range(MAX_CORRUPT_REPORTED)))
    back = wire.decode(wire.encode(status))
    assert back == status
    assert isinstance(back, wire.NodeStatus) and back.storage_corrupt[-1] == cid(MAX_CORRUPT_REPORTED - 1)


def test_an_older_agents_status_has_no_storage_facts() -> None:
    status = wire.decode(raw_status())
    assert isinstance(status, wire.NodeStatus)
    assert (status.storage_quota_bytes, status.storage_used_bytes, status.storage_chunks, status.storage_corrupt) \
        == (None, None, None, ())


@pytest.mark.parametrize(("value", "path"), [
    (["ab" * 31], "b.storage_corrupt[0]"),  # 62 digits
    ([cid(1), cid(2).upper()], "b.storage_corrupt[1]"),  # upper case is not the id's spelling
    ([cid(1)[:-1] + "g"], "b.storage_corrupt[0]"),
    ([123], "b.storage_corrupt[0]"),
    ([cid(i) for i in range(MAX_CORRUPT_REPORTED + 1)], "b.storage_corrupt"),
], ids=["short", "upper-case", "not-hex", "not-a-string", "too-many"])
def test_a_bad_corrupt_list_is_refused_naming_the_field(value: object, path: str) -> None:
    with pytest.raises(WireError) as caught:
        wire.decode(raw_status(storage_corrupt=value))
    assert caught.value.path == path


@pytest.mark.parametrize("field", ["storage_quota_bytes", "storage_used_bytes", "storage_chunks"])
def test_negative_storage_numbers_are_refused(field: str) -> None:
    with pytest.raises(WireError) as caught:
        wire.decode(raw_status(**{field: -1}))
    assert caught.value.path == f"b.{field}"


# ---- overlay peers that are not nodes: the S3 gateway "s3@<coordinator id>" --------------------------------------

def directory_with_peer(peer: object) -> bytes:
    body = {"node_id": "pi-1", "generation": 1, "epoch": 1, "ts": 1.0, "peers": [{"node_id": peer}]}
    return msgpack.packb({"v": PROTOCOL_MAJOR, "k": wire.PeerDirectory.KIND, "b": body}, use_bin_type=True)


def test_a_gateway_member_is_a_valid_peer_in_directories_and_reports() -> None:
    directory = wire.PeerDirectory(node_id="pi-1", generation=1, epoch=1, ts=1.0,
                                   peers=(wire.PeerEntry(node_id="s3@local", dial=False),))
    assert wire.decode(wire.encode(directory)) == directory
    report = wire.OverlayReport(node_id="pi-1", ts=1.0, enabled=True,
                                peers=(wire.PeerPath(node_id="s3@c-1.example", path=wire.PathKind.RELAYED),))
    assert wire.decode(wire.encode(report)) == report


@pytest.mark.parametrize("peer", ["a@b@c", "@local", "s3@", "s3@lo/cal", "x" * 64 + "@a", "", 7],
                         ids=["two-ats", "no-name", "no-id", "slash", "name-too-long", "empty", "number"])
def test_a_bad_peer_identity_is_refused(peer: object) -> None:
    with pytest.raises(WireError) as caught:
        wire.decode(directory_with_peer(peer))
    assert caught.value.path == "b.peers[0].node_id"


def test_node_ids_still_refuse_the_member_form() -> None:
    with pytest.raises(WireError):
        wire.decode(raw_status(node_id="s3@local"))

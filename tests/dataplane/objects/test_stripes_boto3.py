"""An erasure-coded bucket driven by real boto3 through the real S3 adapter over 6 fake storage nodes: single PUTs
and a multipart upload (its parts striped as they arrive) come back whole and in ranges with 2 of the 6 nodes lost;
the repairer then brings every stripe back to 6 fragments on the 2 nodes that replaced them."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from dataplane.objects.erasure import RS_4_2
from dataplane.objects.model import StorageNode
from dataplane.objects.repairer import Repairer
from tests.dataplane.objects.fake_chunks import FakeNode
from tests.dataplane.objects.objserver import MiB, ObjectServer, serving
from tests.dataplane.s3.s3server import ACCESS_KEY, REGION, SECRET_KEY


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ObjectServer]:
    nodes = [StorageNode(f"n{i}", f"z{i % 3}", quota=1 << 30) for i in range(6)]
    with serving(tmp_path, nodes, chunk_size=MiB) as s:
        yield s


def client(server: ObjectServer) -> Any:
    config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1})
    return boto3.client("s3", endpoint_url=server.https_url, aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET_KEY, region_name=REGION, config=config,
                        verify=str(server.ca_file))


def test_an_erasure_coded_bucket_survives_two_lost_nodes_and_is_repaired(server: ObjectServer) -> None:
    assert server.run(server.backend.create_bucket("coded", 0.0, erasure=RS_4_2)) is None
    s3 = client(server)
    bodies = {"small": os.urandom(1000), "three": os.urandom(3 * MiB + 5), "empty": b""}
    for key, body in bodies.items():
        s3.put_object(Bucket="coded", Key=key, Body=body)
    big = os.urandom(11 * MiB + 3)
    s3.upload_fileobj(io.BytesIO(big), "coded", "multipart",
                      Config=TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB))
    bodies["multipart"] = big
    stripes = [r.stripe for r in server.metadata.chunks.values() if r.stripe is not None]
    assert len(stripes) == 1 + 4 + 12 and all(not r.holders for r in server.metadata.chunks.values() if r.stripe)
    for name in ("n2", "n5"):  # lost: unreachable, and known offline to placement and reads
        server.chunks.nodes[name].down = True
    for key, body in bodies.items():
        assert s3.get_object(Bucket="coded", Key=key)["Body"].read() == body
    ranged = s3.get_object(Bucket="coded", Key="multipart", Range=f"bytes={MiB - 10}-{5 * MiB + 10}")
    assert ranged["Body"].read() == big[MiB - 10:5 * MiB + 11]
    for name in ("n6", "n7"):
        server.chunks.nodes[name] = FakeNode(StorageNode(name, "z9", quota=1 << 30))
    repairer = Repairer(server.metadata, server.chunks, server.chunks.storage_nodes)
    report = server.run(repairer.repair_once(1.0))
    assert report.stripes is not None and report.stripes.rebuilt == 2 * len(stripes) and report.stripes.failed == 0
    online = {n.node_id for n in server.chunks.storage_nodes() if n.online}
    for stripe in stripes:
        homes = [server.metadata.chunks[f].good() & online for f in stripe.fragments]
        assert all(len(h) == 1 for h in homes) and len(set().union(*homes)) == 6
        for fid, (home,) in zip(stripe.fragments, homes, strict=True):
            assert fid in server.chunks.nodes[home].chunks
    for key, body in bodies.items():
        assert s3.get_object(Bucket="coded", Key=key)["Body"].read() == body
    assert server.chunks.nodes["n6"].chunks and server.chunks.nodes["n7"].chunks  # the new nodes took fragments

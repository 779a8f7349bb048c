"""Namespace `cloudless` holds the cluster's built-in services (the S3 gateway as s3.cloudless): a workload there
would add services every namespace's workloads see, or stand in for s3.cloudless while no gateway is registered
(review 6, L2). Applying one is refused with the field named; other namespaces are untouched."""

from __future__ import annotations

from tests.coordinator.rest_harness import AUTH, rest
from tests.pair.test_pair import workload


async def test_a_workload_in_the_builtin_namespace_is_refused_naming_the_field() -> None:
    async with rest() as r:
        doc = workload("s3", 1)
        doc["metadata"]["namespace"] = "cloudless"
        resp = await r.client.put("/v1/workloads/cloudless/s3", json=doc, headers=AUTH)
        assert resp.status == 400, await resp.text()
        body = await resp.json()
        assert body["error"]["field"] == "metadata.namespace" and "reserved" in body["error"]["message"]
        assert "cloudless/s3" not in r.coord.workloads
        doc["metadata"]["namespace"] = "shop"
        assert (await r.client.put("/v1/workloads/shop/s3", json=doc, headers=AUTH)).status == 201

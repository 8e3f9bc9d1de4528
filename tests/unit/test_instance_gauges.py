"""The instance count gauges sampled with the backlog (the console's instance chart)."""

from __future__ import annotations

import asyncio

from sagequeue.domain.metrics import METRICS, Backlog, Kind
from sagequeue.monitoring.backlog import endpoint_backlogs
from sagequeue.ports import Resource, ResourceKind
from sagequeue.stores.memory import MemoryStore


def test_backlog_gauges_carry_running_and_desired_instances() -> None:
    gauges = Backlog(
        queued=3, in_progress=1, running_instances=2, oldest_queued_at=None, desired_instances=5
    ).gauges(now=100.0)

    assert gauges["CurrentInstanceCount"] == 2.0
    assert gauges["DesiredInstanceCount"] == 5.0
    for name in ("CurrentInstanceCount", "DesiredInstanceCount"):
        assert METRICS[name].kind is Kind.GAUGE and not METRICS[name].per_variant


def test_desired_instances_add_up_the_variants_of_the_endpoint_document() -> None:
    store = MemoryStore()
    doc = {
        "EndpointName": "ep",
        "EndpointStatus": "InService",
        "ProductionVariants": [
            {"VariantName": "a", "DesiredInstanceCount": 2},
            {"VariantName": "b", "DesiredInstanceCount": 3},
        ],
    }
    asyncio.run(store.create_resource(Resource(ResourceKind.ENDPOINT, "ep", doc)))

    backlog = asyncio.run(endpoint_backlogs(store))["ep"]

    assert (backlog.desired_instances, backlog.running_instances) == (5, 0)

"""The backlog of each endpoint, read from the shared store: requests queued and in
progress, the oldest queued one, and the instances running in the whole fleet."""

from __future__ import annotations

from typing import Any, Protocol

from sagequeue.domain.metrics import Backlog
from sagequeue.domain.placement import plan_endpoint, running_counts
from sagequeue.ports import (
    FleetStore,
    InstanceClaim,
    InvocationStatus,
    MetadataStore,
    QueueStore,
    ResourceKind,
)


class BacklogStore(QueueStore, MetadataStore, FleetStore, Protocol):
    """Queue counts, endpoint documents and instance claims."""


def variant_running_counts(doc: dict[str, Any], claims: list[InstanceClaim]) -> dict[str, int]:
    """Running instances per variant of the generation that serves the endpoint."""
    plan = plan_endpoint(doc, default_concurrency=1)
    return dict(running_counts(plan, claims)) if plan is not None else {}


async def running_instances(store: BacklogStore, endpoint_name: str) -> dict[str, int]:
    """Running instances per variant of one endpoint (for InvocationsPerInstance)."""
    resource = await store.get_resource(ResourceKind.ENDPOINT, endpoint_name)
    if resource is None:
        return {}
    return variant_running_counts(resource.doc, await store.list_instances(endpoint_name))


async def endpoint_backlogs(store: BacklogStore) -> dict[str, Backlog]:
    """Every endpoint's backlog, by endpoint name as created."""
    endpoints = await store.list_resources(ResourceKind.ENDPOINT)
    claims = await store.list_instances()
    by_endpoint: dict[str, list[InstanceClaim]] = {}
    for claim in claims:
        by_endpoint.setdefault(claim.endpoint_name, []).append(claim)
    backlogs = {}
    for resource in endpoints:
        doc = resource.doc
        name = str(doc.get("EndpointName", resource.name))
        counts = await store.count_by_status(name)
        running = variant_running_counts(doc, by_endpoint.get(name.lower(), []))
        oldest: float | None = None
        for variant in doc.get("ProductionVariants") or []:
            queued_at = await store.oldest_queued(name, str(variant.get("VariantName", "")))
            if queued_at is not None and (oldest is None or queued_at < oldest):
                oldest = queued_at
        backlogs[name] = Backlog(
            queued=counts.get(InvocationStatus.QUEUED.value, 0),
            in_progress=counts.get(InvocationStatus.IN_PROGRESS.value, 0),
            running_instances=sum(running.values()),
            oldest_queued_at=oldest,
            desired_instances=sum(
                int(variant.get("DesiredInstanceCount", 0))
                for variant in doc.get("ProductionVariants") or []
            ),
        )
    return backlogs

"""Placement of model instances across a fleet of workers (DESIGN.md, "A fleet"). Pure:
the worker's placement loop reads a snapshot of the store (endpoint documents, live
workers, instance claims) and applies what these functions decide.

* An endpoint variant's desired instance count is a total for the fleet. Each desired
  instance is a slot ``(endpoint, variant, generation, slot)``; a worker owns a slot by
  claiming it in the store, where a slot can have one owner only.
* A worker claims up to its fair share of a variant's slots at once (desired / eligible
  workers, rounded up), so that instances spread over the fleet; a slot left unclaimed
  for a while is taken by any worker with room.
* ``generation`` is the endpoint's deployment generation (bumped by CreateEndpoint and
  UpdateEndpoint). The *serving* generation takes the requests; during an update the
  *target* generation starts beside it, and once its instances run the endpoint switches
  to it and the old generation's instances drain and go.
* A *capacity update* (UpdateEndpointWeightsAndCapacities: Updating with no new
  generation) changes the serving generation's desired counts; the endpoint is back
  InService once they run.
"""

from __future__ import annotations

import enum
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sagequeue.domain.resources import (
    DEPLOYMENT_KEY,
    FAILED_GENERATION_KEY,
    GENERATION_KEY,
    SERVING_KEY,
    EndpointStatus,
)
from sagequeue.ports import InstanceClaim, InstanceState, WorkerRecord

SlotKey = tuple[str, str, int]  # (endpoint name lower-cased, variant, generation)


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    """The instances one variant of one deployment generation wants."""

    endpoint_name: str  # as created
    variant_name: str
    generation: int
    desired: int
    model: dict[str, Any]  # the DescribeModel document the instances run
    max_concurrency: int  # MaxConcurrentInvocationsPerInstance

    @property
    def key(self) -> SlotKey:
        return (self.endpoint_name.lower(), self.variant_name, self.generation)


@dataclass(frozen=True, slots=True)
class EndpointPlan:
    """What an endpoint document asks of the fleet."""

    name: str
    status: str
    serving_generation: int | None  # takes the requests; None while Creating
    target_generation: int | None  # being rolled out; None when nothing is
    specs: tuple[InstanceSpec, ...]  # for the serving and the target generations

    @property
    def capacity_update(self) -> bool:
        """Updating with no new generation to roll out: the serving generation's
        desired counts changed (UpdateEndpointWeightsAndCapacities)."""
        return (
            self.status == EndpointStatus.UPDATING
            and self.target_generation is None
            and self.serving_generation is not None
        )

    @property
    def key(self) -> str:
        return self.name.lower()

    def spec(self, key: SlotKey) -> InstanceSpec | None:
        return next((spec for spec in self.specs if spec.key == key), None)


class RolloutOutcome(enum.Enum):
    IN_SERVICE = "InService"  # the target generation serves now
    FAILED = "Failed"  # an instance of the target generation could not start


@dataclass(frozen=True, slots=True)
class Rollout:
    outcome: RolloutOutcome
    generation: int
    reason: str | None = None
    # A capacity update of the serving generation, not a new generation's rollout.
    capacity: bool = False


def plan_endpoint(doc: dict[str, Any], default_concurrency: int) -> EndpointPlan | None:
    """The instances an endpoint document wants; None for documents without a
    deployment (nothing to run)."""
    deployment = doc.get(DEPLOYMENT_KEY)
    if not isinstance(deployment, dict):
        return None
    name = str(doc["EndpointName"])
    status = str(doc.get("EndpointStatus"))
    generation = int(doc.get(GENERATION_KEY, 0))
    serving = doc.get(SERVING_KEY)
    if serving is None and status == EndpointStatus.IN_SERVICE:
        # Written before deployments kept their serving generation: it is the deployed one.
        serving = {"Generation": generation, "Deployment": deployment}
    specs: list[InstanceSpec] = []
    serving_generation: int | None = None
    if isinstance(serving, dict) and status != EndpointStatus.FAILED:
        serving_generation = int(serving["Generation"])
        desired = {
            str(v.get("VariantName")): int(v.get("DesiredInstanceCount", 0))
            for v in doc.get("ProductionVariants") or []
        }
        specs += _specs(
            name, serving_generation, serving["Deployment"], desired, default_concurrency
        )
    target_generation: int | None = None
    rolling_out = status in (EndpointStatus.CREATING, EndpointStatus.UPDATING)
    if (
        rolling_out
        and generation != serving_generation
        and doc.get(FAILED_GENERATION_KEY) != generation
    ):
        target_generation = generation
        specs += _specs(name, generation, deployment, None, default_concurrency)
    return EndpointPlan(name, status, serving_generation, target_generation, tuple(specs))


def _specs(
    name: str,
    generation: int,
    deployment: dict[str, Any],
    desired: dict[str, int] | None,
    default_concurrency: int,
) -> list[InstanceSpec]:
    """One spec per production variant of a deployment snapshot. ``desired`` overrides
    the config's InitialInstanceCount (the live DesiredInstanceCount of the serving
    generation, which the autoscaler changes)."""
    config = deployment["EndpointConfig"]
    client = (config.get("AsyncInferenceConfig") or {}).get("ClientConfig") or {}
    concurrency = int(client.get("MaxConcurrentInvocationsPerInstance") or default_concurrency)
    specs = []
    for variant in config.get("ProductionVariants") or []:
        variant_name = str(variant["VariantName"])
        count = int(variant.get("InitialInstanceCount", 1))
        if desired is not None:
            count = desired.get(variant_name, count)
        specs.append(
            InstanceSpec(
                endpoint_name=name,
                variant_name=variant_name,
                generation=generation,
                desired=max(count, 0),
                model=deployment["Models"][variant["ModelName"]],
                max_concurrency=max(concurrency, 1),
            )
        )
    return specs


# ------------------------------------------------------------------------ workers


def serves(worker: WorkerRecord, endpoint_name: str) -> bool:
    return not worker.endpoints or endpoint_name.lower() in worker.endpoints


def live_workers(workers: Iterable[WorkerRecord], now: float) -> list[WorkerRecord]:
    return [w for w in workers if w.heartbeat_expires_at >= now]


def free_capacity(worker: WorkerRecord, claims: Sequence[InstanceClaim]) -> float:
    """How many more instances ``worker`` may claim (``max_instances=0`` or negative:
    none; the store keeps no "unlimited", so callers pass a large number for it)."""
    held = sum(1 for claim in claims if claim.worker_id == worker.worker_id)
    return max(worker.max_instances - held, 0)


# ------------------------------------------------------------------------ claims


def unwanted_claims(
    worker_id: str, plans: dict[str, EndpointPlan], claims: Sequence[InstanceClaim]
) -> list[InstanceClaim]:
    """This worker's claims that no endpoint wants any more: the endpoint is gone or
    failed, the generation neither serves nor rolls out, or the slot is past the desired
    count (scaled in). Their instances drain, then the claims are released."""
    unwanted = []
    for claim in claims:
        if claim.worker_id != worker_id:
            continue
        plan = plans.get(claim.endpoint_name)
        spec = (
            plan.spec((claim.endpoint_name, claim.variant_name, claim.generation)) if plan else None
        )
        if spec is None or claim.slot >= spec.desired:
            unwanted.append(claim)
    return unwanted


def slots_to_claim(
    me: WorkerRecord,
    plans: dict[str, EndpointPlan],
    workers: Sequence[WorkerRecord],
    claims: Sequence[InstanceClaim],
    overdue: set[tuple[str, str, int, int]],
) -> list[tuple[InstanceSpec, int]]:
    """The (spec, slot) pairs this worker should claim now, within its free capacity:
    up to its fair share of each variant (serving generations first, then the ones
    rolling out), and any slot in ``overdue`` (unclaimed for a while) it has room for.
    ``workers`` are the live workers, ``me`` among them."""
    room = free_capacity(me, claims)
    if room <= 0:
        return []
    claimed: dict[SlotKey, set[int]] = defaultdict(set)
    mine: dict[SlotKey, int] = defaultdict(int)
    for claim in claims:
        key = (claim.endpoint_name, claim.variant_name, claim.generation)
        claimed[key].add(claim.slot)
        if claim.worker_id == me.worker_id:
            mine[key] += 1
    specs = [spec for plan in plans.values() for spec in plan.specs if serves(me, plan.name)]
    # Serving generations first: they carry the traffic.
    specs.sort(key=lambda s: (plans[s.key[0]].serving_generation != s.generation, s.key))
    chosen: list[tuple[InstanceSpec, int]] = []
    for spec in specs:
        free_slots = [n for n in range(spec.desired) if n not in claimed[spec.key]]
        if not free_slots:
            continue
        eligible = sum(1 for w in workers if serves(w, spec.endpoint_name)) or 1
        share = math.ceil(spec.desired / eligible)
        for slot in free_slots:
            if room <= 0:
                return chosen
            if mine[spec.key] < share or (*spec.key, slot) in overdue:
                chosen.append((spec, slot))
                mine[spec.key] += 1
                room -= 1
    return chosen


def unclaimed_slots(
    plans: dict[str, EndpointPlan], claims: Sequence[InstanceClaim]
) -> set[tuple[str, str, int, int]]:
    claimed = {(c.endpoint_name, c.variant_name, c.generation, c.slot) for c in claims}
    return {
        (*spec.key, slot)
        for plan in plans.values()
        for spec in plan.specs
        for slot in range(spec.desired)
        if (*spec.key, slot) not in claimed
    }


# ------------------------------------------------------------------------ rollouts


def rollout(
    plan: EndpointPlan,
    workers: Sequence[WorkerRecord],
    claims: Sequence[InstanceClaim],
) -> Rollout | None:
    """Whether the target generation is ready to serve, failed, or neither yet; for a
    capacity update, whether the serving generation runs its new desired counts.

    Ready: every variant runs its desired count, or nothing is starting and no live
    worker that serves the endpoint has room for more. The endpoint then serves with
    what it has (DescribeEndpoint shows CurrentInstanceCount < DesiredInstanceCount); in
    a full fleet that may be no new instance at all, and the old generation's instances
    then make room as they drain (requests wait in the queue meanwhile). A variant that
    wants no instance is ready at once (scaled to zero). With no live worker serving
    the endpoint, nothing is decided."""
    if plan.target_generation is not None:
        generation, capacity = plan.target_generation, False
    elif plan.capacity_update:
        assert plan.serving_generation is not None
        generation, capacity = plan.serving_generation, True
    else:
        return None
    targets = [spec for spec in plan.specs if spec.generation == generation]
    desired = {spec.variant_name: spec.desired for spec in targets}
    ours = [c for c in claims if c.endpoint_name == plan.key and c.generation == generation]
    failed = [
        c
        for c in ours
        if c.state == InstanceState.FAILED and c.slot < desired.get(c.variant_name, 0)
    ]
    if failed:
        return Rollout(RolloutOutcome.FAILED, generation, failed[0].detail, capacity)
    eligible = [w for w in workers if serves(w, plan.name)]
    if not eligible:
        return None
    room = sum(free_capacity(w, claims) for w in eligible)
    for spec in targets:
        running = sum(
            1
            for c in ours
            if c.variant_name == spec.variant_name
            and c.state == InstanceState.RUNNING
            and c.slot < spec.desired
        )
        if running >= spec.desired:
            continue
        starting = any(
            c.variant_name == spec.variant_name and c.state == InstanceState.STARTING for c in ours
        )
        if starting or room > 0:
            return None
    return Rollout(RolloutOutcome.IN_SERVICE, generation, capacity=capacity)


def running_counts(plan: EndpointPlan, claims: Sequence[InstanceClaim]) -> dict[str, int]:
    """Running instances per variant of the generation that serves (or, while
    Creating, of the one being created): DescribeEndpoint's CurrentInstanceCount."""
    generation = plan.serving_generation
    if generation is None:
        generation = plan.target_generation
    counts: dict[str, int] = defaultdict(int)
    for claim in claims:
        if (
            claim.endpoint_name == plan.key
            and claim.generation == generation
            and claim.state == InstanceState.RUNNING
        ):
            counts[claim.variant_name] += 1
    return counts

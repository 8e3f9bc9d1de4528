"""Placement decisions (sagequeue.domain.placement): pure functions over a snapshot of
endpoint documents, live workers and instance claims."""

from __future__ import annotations

from typing import Any

from sagequeue.domain.placement import (
    RolloutOutcome,
    plan_endpoint,
    rollout,
    running_counts,
    slots_to_claim,
    unwanted_claims,
)
from sagequeue.domain.resources import choose_variant
from sagequeue.ports import InstanceClaim, InstanceState, WorkerRecord

NOW = 1_700_000_000.0


def deployment(count: int = 1, variants: tuple[str, ...] = ("AllTraffic",), model: str = "m"):
    config = {
        "EndpointConfigName": f"config-{model}",
        "ProductionVariants": [
            {"VariantName": v, "ModelName": model, "InitialInstanceCount": count} for v in variants
        ],
        "AsyncInferenceConfig": {"ClientConfig": {"MaxConcurrentInvocationsPerInstance": 4}},
    }
    return {"EndpointConfig": config, "Models": {model: {"ModelName": model}}}


def endpoint(status: str = "InService", generation: int = 1, count: int = 1, **extra) -> dict:
    doc: dict[str, Any] = {
        "EndpointName": "Ep",
        "EndpointStatus": status,
        "ProductionVariants": [
            {"VariantName": "AllTraffic", "DesiredInstanceCount": count, "CurrentWeight": 1.0}
        ],
        "_Generation": generation,
        "_Deployment": deployment(count),
    }
    doc.update(extra)
    return doc


def worker(name: str, max_instances: int = 100, endpoints: tuple[str, ...] = ()) -> WorkerRecord:
    return WorkerRecord(name, "h", 1, max_instances, endpoints, NOW, NOW, NOW + 10)


def claim(worker_id: str, slot: int, generation: int = 1, state: str = "Running", **kw):
    return InstanceClaim(
        "ep",
        kw.pop("variant", "AllTraffic"),
        generation,
        slot,
        worker_id,
        InstanceState(state),
        NOW,
        NOW,
        kw.pop("detail", None),
    )


def plans(*docs: dict) -> dict:
    return {p.key: p for doc in docs if (p := plan_endpoint(doc, 2)) is not None}


# ------------------------------------------------------------------------ plans


def test_in_service_endpoint_wants_its_desired_count_of_its_serving_generation() -> None:
    (plan,) = plans(endpoint(count=3)).values()
    assert (plan.serving_generation, plan.target_generation) == (1, None)
    (spec,) = plan.specs
    assert (spec.variant_name, spec.generation, spec.desired, spec.max_concurrency) == (
        "AllTraffic",
        1,
        3,
        4,
    )


def test_creating_endpoint_wants_only_its_target_generation() -> None:
    (plan,) = plans(endpoint("Creating")).values()
    assert (plan.serving_generation, plan.target_generation) == (None, 1)


def test_updating_endpoint_wants_the_serving_and_the_target_generation() -> None:
    doc = endpoint(
        "Updating",
        generation=2,
        _Serving={"Generation": 1, "Deployment": deployment(2)},
    )
    (plan,) = plans(doc).values()
    assert sorted(spec.generation for spec in plan.specs) == [1, 2]
    assert (plan.serving_generation, plan.target_generation) == (1, 2)


def test_a_failed_generation_is_not_rolled_out_again() -> None:
    doc = endpoint(
        "InService",
        generation=2,
        _FailedGeneration=2,
        _Serving={"Generation": 1, "Deployment": deployment()},
    )
    (plan,) = plans(doc).values()
    assert plan.target_generation is None
    assert [spec.generation for spec in plan.specs] == [1]


def test_failed_endpoint_wants_nothing() -> None:
    (plan,) = plans(endpoint("Failed")).values()
    assert plan.specs == ()


def test_desired_count_of_the_serving_generation_is_the_live_one() -> None:
    doc = endpoint(count=1)
    doc["ProductionVariants"][0]["DesiredInstanceCount"] = 0  # scaled to zero
    (plan,) = plans(doc).values()
    assert plan.specs[0].desired == 0


# ------------------------------------------------------------------------ claims


def test_workers_claim_their_fair_share_first() -> None:
    fleet = [worker("a"), worker("b"), worker("c")]
    chosen = slots_to_claim(fleet[0], plans(endpoint(count=4)), fleet, [], set())
    assert [slot for _, slot in chosen] == [0, 1]


def test_a_worker_never_claims_beyond_its_capacity() -> None:
    me = worker("a", max_instances=1)
    chosen = slots_to_claim(me, plans(endpoint(count=4)), [me], [], set())
    assert len(chosen) == 1


def test_claimed_slots_are_not_claimed_again() -> None:
    fleet = [worker("a"), worker("b")]
    claims = [claim("b", 0), claim("b", 1)]
    chosen = slots_to_claim(fleet[0], plans(endpoint(count=4)), fleet, claims, set())
    assert [slot for _, slot in chosen] == [2, 3]


def test_an_overdue_slot_is_claimed_beyond_the_fair_share() -> None:
    fleet = [worker("a"), worker("b")]
    claims = [claim("a", 0)]
    overdue = {("ep", "AllTraffic", 1, 1)}
    chosen = slots_to_claim(fleet[0], plans(endpoint(count=2)), fleet, claims, overdue)
    assert [slot for _, slot in chosen] == [1]


def test_a_worker_claims_nothing_of_endpoints_it_does_not_serve() -> None:
    me = worker("gpu", endpoints=("other",))
    assert slots_to_claim(me, plans(endpoint(count=2)), [me], [], set()) == []


def test_workers_not_serving_an_endpoint_do_not_shrink_its_share() -> None:
    fleet = [worker("a"), worker("gpu", endpoints=("other",))]
    chosen = slots_to_claim(fleet[0], plans(endpoint(count=2)), fleet, [], set())
    assert len(chosen) == 2


def test_claims_past_the_desired_count_are_unwanted() -> None:
    claims = [claim("a", 0), claim("a", 1)]
    assert unwanted_claims("a", plans(endpoint(count=1)), claims) == [claims[1]]


def test_claims_of_a_deleted_endpoint_or_a_replaced_generation_are_unwanted() -> None:
    claims = [claim("a", 0, generation=1)]
    assert unwanted_claims("a", {}, claims) == claims
    doc = endpoint(generation=2, _Serving={"Generation": 2, "Deployment": deployment()})
    assert unwanted_claims("a", plans(doc), claims) == claims


def test_only_the_workers_own_claims_are_its_to_release() -> None:
    assert unwanted_claims("a", {}, [claim("b", 0)]) == []


# ------------------------------------------------------------------------ rollouts


def creating(count: int = 2) -> dict:
    return plans(endpoint("Creating", count=count))["ep"]


def test_rollout_is_ready_once_every_desired_instance_runs() -> None:
    outcome = rollout(creating(), [worker("a")], [claim("a", 0), claim("a", 1)])
    assert outcome is not None and outcome.outcome is RolloutOutcome.IN_SERVICE


def test_rollout_waits_while_an_instance_is_starting() -> None:
    claims = [claim("a", 0), claim("a", 1, state="Starting")]
    assert rollout(creating(), [worker("a")], claims) is None


def test_rollout_waits_while_the_fleet_has_room_for_the_missing_instances() -> None:
    assert rollout(creating(), [worker("a")], [claim("a", 0)]) is None


def test_rollout_serves_with_what_it_has_when_the_fleet_is_full() -> None:
    outcome = rollout(creating(), [worker("a", max_instances=1)], [claim("a", 0)])
    assert outcome is not None and outcome.outcome is RolloutOutcome.IN_SERVICE


def test_rollout_fails_when_an_instance_cannot_start() -> None:
    claims = [claim("a", 0, state="Failed", detail="no model")]
    outcome = rollout(creating(), [worker("a")], claims)
    assert outcome is not None and outcome.outcome is RolloutOutcome.FAILED
    assert outcome.reason == "no model"


def test_rollout_waits_without_a_live_worker_for_the_endpoint() -> None:
    assert rollout(creating(), [worker("gpu", endpoints=("other",))], []) is None


def test_rollout_to_zero_instances_is_ready_at_once() -> None:
    outcome = rollout(creating(count=0), [worker("a")], [])
    assert outcome is not None and outcome.outcome is RolloutOutcome.IN_SERVICE


def capacity_update(count: int) -> dict:
    """Updating with no new generation: UpdateEndpointWeightsAndCapacities set ``count``."""
    serving = {"Generation": 1, "Deployment": deployment()}
    return plans(endpoint("Updating", count=count, _Serving=serving))["ep"]


def test_a_capacity_update_has_no_generation_to_roll_out() -> None:
    plan = capacity_update(2)
    assert plan.capacity_update
    assert (plan.serving_generation, plan.target_generation) == (1, None)
    assert [spec.desired for spec in plan.specs] == [2]


def test_a_capacity_update_waits_for_the_new_instances() -> None:
    assert rollout(capacity_update(2), [worker("a")], [claim("a", 0)]) is None


def test_a_capacity_update_settles_once_the_new_count_runs() -> None:
    outcome = rollout(capacity_update(2), [worker("a")], [claim("a", 0), claim("a", 1)])
    assert outcome is not None and outcome.capacity
    assert (outcome.outcome, outcome.generation) == (RolloutOutcome.IN_SERVICE, 1)


def test_a_scale_in_settles_while_the_extra_instances_drain() -> None:
    outcome = rollout(capacity_update(1), [worker("a")], [claim("a", 0), claim("a", 1)])
    assert outcome is not None and outcome.outcome is RolloutOutcome.IN_SERVICE


def test_a_capacity_update_whose_instance_cannot_start_settles_with_the_reason() -> None:
    claims = [claim("a", 0), claim("a", 1, state="Failed", detail="no model")]
    outcome = rollout(capacity_update(2), [worker("a")], claims)
    assert outcome is not None and outcome.capacity
    assert (outcome.outcome, outcome.reason) == (RolloutOutcome.FAILED, "no model")


def test_an_in_service_endpoint_has_nothing_to_settle() -> None:
    assert rollout(plans(endpoint())["ep"], [worker("a")], [claim("a", 0)]) is None


def test_running_counts_are_of_the_serving_generation() -> None:
    doc = endpoint("Updating", generation=2, _Serving={"Generation": 1, "Deployment": deployment()})
    claims = [claim("a", 0, generation=1), claim("a", 0, generation=2)]
    assert running_counts(plans(doc)["ep"], claims) == {"AllTraffic": 1}


# ------------------------------------------------------------------------ variants


def test_requests_are_split_by_variant_weight() -> None:
    doc = {
        "ProductionVariants": [
            {"VariantName": "A", "CurrentWeight": 3.0},
            {"VariantName": "B", "CurrentWeight": 1.0},
        ]
    }
    picks = [choose_variant(doc, n / 100) for n in range(100)]
    assert (picks.count("A"), picks.count("B")) == (75, 25)


def test_variants_with_zero_weight_get_no_requests_unless_all_are_zero() -> None:
    doc = {
        "ProductionVariants": [
            {"VariantName": "A", "CurrentWeight": 0.0},
            {"VariantName": "B", "CurrentWeight": 2.0},
        ]
    }
    assert {choose_variant(doc, n / 10) for n in range(10)} == {"B"}
    doc["ProductionVariants"][1]["CurrentWeight"] = 0.0
    assert choose_variant(doc, 0.5) == "A"

"""Application Auto Scaling for SageMaker endpoint variants: scalable targets, scaling
policies (step scaling and target tracking), and the capacity a policy asks for. Pure.

A target is ``endpoint/<EndpointName>/variant/<VariantName>`` with the dimension
``sagemaker:variant:DesiredInstanceCount``; scaling it changes the variant's desired
instance count (a fleet total), and placement starts or stops instances.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SERVICE_NAMESPACE = "sagemaker"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
DEFAULT_COOLDOWN_SECONDS = 300
INVOCATIONS_PER_INSTANCE = "SageMakerVariantInvocationsPerInstance"
# Target tracking's alarms (as Application Auto Scaling creates them for SageMaker): scale
# out after 3 one-minute datapoints above the target, in after 15 below 90% of it.
HIGH_ALARM_DATAPOINTS = 3
LOW_ALARM_DATAPOINTS = 15
LOW_ALARM_RATIO = 0.9
MAX_ACTIVITIES = 100  # kept per scalable target, newest first

_RESOURCE_ID = re.compile(r"endpoint/([^/]+)/variant/([^/]+)")


def parse_resource_id(resource_id: str) -> tuple[str, str] | None:
    """(EndpointName, VariantName) of ``endpoint/<name>/variant/<variant>``."""
    match = _RESOURCE_ID.fullmatch(resource_id)
    return (match.group(1), match.group(2)) if match else None


def target_key(namespace: str, resource_id: str, dimension: str) -> str:
    """Store key of a scalable target (case-sensitive names, case-free store keys)."""
    return f"{namespace}|{resource_id}|{dimension}".encode().hex()


def policy_key(namespace: str, resource_id: str, dimension: str, policy_name: str) -> str:
    return f"{namespace}|{resource_id}|{dimension}|{policy_name}".encode().hex()


def policy_arn(region: str, account_id: str, uid: str, resource_id: str, name: str) -> str:
    return (
        f"arn:aws:autoscaling:{region}:{account_id}:scalingPolicy:{uid}:"
        f"resource/{SERVICE_NAMESPACE}/{resource_id}:policyName/{name}"
    )


def target_arn(region: str, account_id: str, uid: str) -> str:
    return f"arn:aws:application-autoscaling:{region}:{account_id}:scalable-target/{uid}"


# ------------------------------------------------------------------ step scaling


def check_step_adjustments(steps: Sequence[dict[str, Any]]) -> str | None:
    """Why a StepAdjustments list is invalid (None when it is valid): the intervals may
    not overlap or leave gaps, and only the first and last may be open."""
    if not steps:
        return "StepAdjustments must contain at least one adjustment."
    intervals = []
    for step in steps:
        lower = step.get("MetricIntervalLowerBound")
        upper = step.get("MetricIntervalUpperBound")
        if lower is None and upper is None and len(steps) > 1:
            return "Only one step adjustment may have both bounds unset."
        if lower is not None and upper is not None and lower >= upper:
            return (
                "MetricIntervalLowerBound must be less than MetricIntervalUpperBound "
                f"({lower} >= {upper})."
            )
        intervals.append(
            (-math.inf if lower is None else lower, math.inf if upper is None else upper)
        )
    intervals.sort()
    for (_, upper), (lower, _) in itertools.pairwise(intervals):
        if lower < upper:
            return "Step adjustments may not overlap."
        if lower > upper:
            return "Step adjustments may not have gaps between their intervals."
    return None


def step_adjustment(steps: Sequence[dict[str, Any]], breach: float) -> int | None:
    """The ScalingAdjustment whose interval holds ``breach`` (metric value minus the
    alarm threshold). Above the threshold the lower bound is inclusive; below it the
    upper bound is (Application Auto Scaling's rule)."""
    for step in steps:
        lower = step.get("MetricIntervalLowerBound")
        upper = step.get("MetricIntervalUpperBound")
        low = -math.inf if lower is None else float(lower)
        high = math.inf if upper is None else float(upper)
        inside = low <= breach < high if breach >= 0 else low < breach <= high
        if inside:
            return int(step["ScalingAdjustment"])
    return None


def adjusted_capacity(
    adjustment_type: str, adjustment: int, current: int, min_magnitude: int | None = None
) -> int:
    """The capacity a step adjustment asks for from ``current``."""
    if adjustment_type == "ExactCapacity":
        return adjustment
    if adjustment_type == "PercentChangeInCapacity":
        change = current * adjustment / 100
        # Fractions round away from zero below 1, toward zero above (AWS's rule).
        change = math.copysign(1, change) if 0 < abs(change) < 1 else math.trunc(change)
        if min_magnitude and abs(change) < min_magnitude:
            change = math.copysign(min_magnitude, change)
        return current + int(change)
    return current + adjustment


# ------------------------------------------------------------------ target tracking


def tracking_capacity(current: int, metric_value: float, target: float) -> int:
    """The capacity that brings a per-instance metric to ``target``: proportional to the
    current capacity (taken as 1 at zero, so that a backlog at zero scales out)."""
    if target <= 0:
        return current
    return math.ceil(max(current, 1) * metric_value / target - 1e-9)


@dataclass(frozen=True, slots=True)
class TrackedMetric:
    """The CloudWatch metric a target-tracking policy's alarms watch."""

    namespace: str
    metric_name: str
    dimensions: list[dict[str, str]]
    statistic: str
    unit: str | None = None


def tracked_metric(config: dict[str, Any], endpoint: str, variant: str) -> TrackedMetric:
    custom = config.get("CustomizedMetricSpecification")
    if custom is not None:
        return TrackedMetric(
            namespace=custom["Namespace"],
            metric_name=custom["MetricName"],
            dimensions=[
                {"Name": d["Name"], "Value": d["Value"]} for d in custom.get("Dimensions") or []
            ],
            statistic=custom.get("Statistic") or "Average",
            unit=custom.get("Unit"),
        )
    # SageMakerVariantInvocationsPerInstance: invocations per instance per minute.
    return TrackedMetric(
        namespace="AWS/SageMaker",
        metric_name="InvocationsPerInstance",
        dimensions=[
            {"Name": "EndpointName", "Value": endpoint},
            {"Name": "VariantName", "Value": variant},
        ],
        statistic="Sum",
    )


# ------------------------------------------------------------------ cooldowns


@dataclass(frozen=True, slots=True)
class Decision:
    capacity: int | None  # None: no change
    reason: str


def decide(
    *,
    desired: int,
    current: int,
    minimum: int,
    maximum: int,
    now: float,
    scale_out_until: float,
    capacity_before_scale_out: int | None,
    scale_in_until: float,
    suspended: dict[str, Any],
) -> Decision:
    """Whether to set a new capacity, given what a policy asks (``desired``, computed
    from ``current``) and the cooldowns. During a scale-out cooldown, a further
    scale-out counts from the capacity before the first one (so it never adds twice);
    scale-in waits for every cooldown to end."""
    wanted = min(max(desired, minimum), maximum)
    if wanted > current:
        if suspended.get("DynamicScalingOutSuspended"):
            return Decision(None, "dynamic scale-out is suspended")
        if now < scale_out_until and capacity_before_scale_out is not None:
            base_wanted = min(
                max(capacity_before_scale_out + (desired - current), minimum), maximum
            )
            wanted = min(wanted, max(base_wanted, current))
            if wanted <= current:
                return Decision(None, "scale-out cooldown in progress")
        return Decision(wanted, "scale out")
    if wanted < current:
        if suspended.get("DynamicScalingInSuspended"):
            return Decision(None, "dynamic scale-in is suspended")
        if now < scale_in_until or now < scale_out_until:
            return Decision(None, "cooldown in progress")
        return Decision(wanted, "scale in")
    return Decision(None, "already at the capacity asked for")

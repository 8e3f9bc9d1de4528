"""The autoscaler, a fleet singleton (one worker holds its lease; another takes over when
that one dies): it evaluates every CloudWatch alarm once per period, moves it between
OK, ALARM and INSUFFICIENT_DATA, runs the scaling policies its actions name (entering a
state, and again every period while an alarm with scaling actions stays in it, as
CloudWatch does for Auto Scaling actions), and keeps each scalable target's desired
instance count within [MinCapacity, MaxCapacity].

Scaling writes the variant's DesiredInstanceCount into the endpoint document (an
optimistic update); placement starts and stops the instances.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sagequeue.autoscaling.operations import AutoScalingStore
from sagequeue.dispatch.membership import Membership
from sagequeue.domain.alarms import AlarmState, evaluate
from sagequeue.domain.metrics import MetricClock, statistic
from sagequeue.domain.resources import EndpointStatus
from sagequeue.domain.scaling import (
    DEFAULT_COOLDOWN_SECONDS,
    MAX_ACTIVITIES,
    adjusted_capacity,
    decide,
    parse_resource_id,
    step_adjustment,
    tracking_capacity,
)
from sagequeue.monitoring.cloudwatch import bucket_points, series_of
from sagequeue.ports import Clock, Resource, ResourceKind

log = logging.getLogger("sagequeue.autoscaler")

AUTOSCALER_LEASE = "autoscaler"
_UPDATE_ATTEMPTS = 10
_STATE_ACTIONS = {
    AlarmState.OK: "OKActions",
    AlarmState.ALARM: "AlarmActions",
    AlarmState.INSUFFICIENT_DATA: "InsufficientDataActions",
}


class Autoscaler:
    def __init__(
        self,
        store: AutoScalingStore,
        membership: Membership,
        metric_clock: MetricClock,
        clock: Clock,
    ) -> None:
        self.store = store
        self.membership = membership
        self.metric_clock = metric_clock
        self.clock = clock
        # Alarm name -> end (epoch ms) of the last period it was evaluated through.
        self._evaluated: dict[str, int] = {}

    @property
    def grace_ms(self) -> int:
        """How long after a period ends it is evaluated: its producers flush and the
        sampler samples meanwhile."""
        clock = self.metric_clock
        return int((clock.flush_seconds + clock.sample_seconds) * 1000) + 250

    async def tick(self) -> bool:
        """One round, while holding the autoscaler lease; True when it ran."""
        if not await self.membership.hold(AUTOSCALER_LEASE):
            self._evaluated.clear()
            return False
        now = self.clock.now()
        await self._enforce_bounds(now)
        policies = {
            r.doc["PolicyARN"]: r.doc
            for r in await self.store.list_resources(ResourceKind.SCALING_POLICY)
        }
        alarms = await self.store.list_resources(ResourceKind.ALARM)
        names = {alarm.doc["AlarmName"] for alarm in alarms}
        for gone in [name for name in self._evaluated if name not in names]:
            del self._evaluated[gone]
        for alarm in alarms:
            try:
                await self._evaluate(alarm, now, policies)
            except Exception:
                log.exception("evaluating alarm %s failed", alarm.doc.get("AlarmName"))
        return True

    # ------------------------------------------------------------------ alarms

    async def _evaluate(self, alarm: Resource, now: float, policies: dict[str, Any]) -> None:
        doc = alarm.doc
        name = doc["AlarmName"]
        period_ms = self.metric_clock.period_ms(int(doc["Period"]))
        through = (int(now * 1000) - self.grace_ms) // period_ms * period_ms
        if self._evaluated.get(name) == through:
            return
        self._evaluated[name] = through
        count = int(doc["EvaluationPeriods"])
        values = await self._datapoints(doc, through - count * period_ms, through, period_ms)
        result = evaluate(
            values,
            threshold=float(doc["Threshold"]),
            comparison=doc["ComparisonOperator"],
            datapoints_to_alarm=int(doc.get("DatapointsToAlarm") or count),
            treat_missing=doc.get("TreatMissingData") or "missing",
            period=int(doc["Period"]),
        )
        state = result.state or AlarmState(doc["StateValue"])
        latest = next((v for v in reversed(values) if v is not None), None)
        changed = state != doc.get("StateValue")
        if changed:
            updated = await self._set_state(alarm, state, result.reason, now)
            if updated is None:
                return
            alarm = updated
            log.info("alarm %s: %s -> %s", name, doc.get("StateValue"), state)
        actions = alarm.doc.get(_STATE_ACTIONS[state]) or []
        if not alarm.doc.get("ActionsEnabled", True) or not actions:
            return
        for arn in actions:
            policy = policies.get(arn)
            # Scaling actions run on entering the state and every period while in it;
            # other actions (SNS topics...) are not run here.
            if policy is not None and (changed or state is AlarmState.ALARM):
                await self._run_policy(policy, alarm.doc, latest, now)

    async def _datapoints(
        self, alarm: dict[str, Any], start: int, end: int, period_ms: int
    ) -> list[float | None]:
        series = series_of(alarm)
        if series is None:
            return [None] * ((end - start) // period_ms)
        points = await self.store.read_metrics(
            start, end, metrics=[alarm["MetricName"]], endpoint_name=series[0]
        )
        periods = bucket_points([p for p in points if p.variant_name == series[1]], period_ms)
        name = alarm.get("Statistic") or alarm.get("ExtendedStatistic") or "Average"
        values: list[float | None] = []
        for begin in range(start, end, period_ms):
            point = periods.get(begin)
            values.append(statistic(point, name) if point is not None else None)
        return values

    async def _set_state(
        self, alarm: Resource, state: AlarmState, reason: str, now: float
    ) -> Resource | None:
        for _ in range(_UPDATE_ATTEMPTS):
            doc = dict(alarm.doc)
            doc["StateValue"] = str(state)
            doc["StateReason"] = reason
            doc["StateUpdatedTimestamp"] = now
            doc["StateTransitionedTimestamp"] = now
            alarm.doc = doc
            if await self.store.update_resource(alarm):
                return alarm
            fresh = await self.store.get_resource(ResourceKind.ALARM, alarm.name)
            if fresh is None:
                return None  # deleted meanwhile
            alarm = fresh
        return None

    # ------------------------------------------------------------------ policies

    async def _run_policy(
        self, policy: dict[str, Any], alarm: dict[str, Any], value: float | None, now: float
    ) -> None:
        target = await self._target_of(policy["ResourceId"])
        if target is None:
            return
        current = await self._desired(policy["ResourceId"])
        if current is None:
            return
        cause = (
            f"monitor alarm {alarm['AlarmName']} in state {alarm['StateValue']} triggered "
            f"policy {policy['PolicyName']}"
        )
        if policy["PolicyType"] == "StepScaling":
            config = policy["StepScalingPolicyConfiguration"]
            breach = (value if value is not None else float(alarm["Threshold"])) - float(
                alarm["Threshold"]
            )
            adjustment = step_adjustment(config.get("StepAdjustments") or [], breach)
            if adjustment is None:
                return
            wanted = adjusted_capacity(
                config["AdjustmentType"], adjustment, current, config.get("MinAdjustmentMagnitude")
            )
            cooldown = float(config.get("Cooldown", DEFAULT_COOLDOWN_SECONDS))
            out_cooldown = in_cooldown = cooldown
        else:
            config = policy["TargetTrackingScalingPolicyConfiguration"]
            if value is None:
                return
            wanted = tracking_capacity(current, value, float(config["TargetValue"]))
            # The high alarm only scales out, the low one only in.
            scales_out = alarm["ComparisonOperator"].startswith("Greater")
            if (wanted > current) != scales_out or wanted == current:
                return
            if wanted < current and config.get("DisableScaleIn"):
                return
            out_cooldown = float(config.get("ScaleOutCooldown", DEFAULT_COOLDOWN_SECONDS))
            in_cooldown = float(config.get("ScaleInCooldown", DEFAULT_COOLDOWN_SECONDS))
        await self._scale(target, current, wanted, cause, now, out_cooldown, in_cooldown)

    async def _scale(
        self,
        target: Resource,
        current: int,
        wanted: int,
        cause: str,
        now: float,
        out_cooldown: float,
        in_cooldown: float,
    ) -> None:
        doc = target.doc
        decision = decide(
            desired=wanted,
            current=current,
            minimum=int(doc["MinCapacity"]),
            maximum=int(doc["MaxCapacity"]),
            now=now,
            scale_out_until=float(doc.get("_ScaleOutUntil", 0.0)),
            capacity_before_scale_out=doc.get("_CapacityBeforeScaleOut"),
            scale_in_until=float(doc.get("_ScaleInUntil", 0.0)),
            suspended=doc.get("SuspendedState") or {},
        )
        if decision.capacity is None:
            return
        capacity = decision.capacity
        ok, message = await self._set_desired(doc["ResourceId"], capacity)
        new_doc = dict(doc)
        if ok and capacity > current:
            if now >= float(doc.get("_ScaleOutUntil", 0.0)):
                new_doc["_CapacityBeforeScaleOut"] = current
            new_doc["_ScaleOutUntil"] = now + self.metric_clock.real_seconds(out_cooldown)
        elif ok:
            new_doc["_ScaleInUntil"] = now + self.metric_clock.real_seconds(in_cooldown)
        self._add_activity(new_doc, capacity, cause, now, ok, message)
        target.doc = new_doc
        if not await self.store.update_resource(target):
            log.warning(
                "scalable target %s changed meanwhile: its cooldown was not kept", doc["ResourceId"]
            )
        log.info(
            "%s: desired instance count %d -> %d (%s)", doc["ResourceId"], current, capacity, cause
        )

    async def _enforce_bounds(self, now: float) -> None:
        for target in await self.store.list_resources(ResourceKind.SCALABLE_TARGET):
            current = await self._desired(target.doc["ResourceId"])
            if current is None:
                continue
            minimum, maximum = int(target.doc["MinCapacity"]), int(target.doc["MaxCapacity"])
            if current < minimum:
                wanted, cause = minimum, f"minimum capacity was set to {minimum}"
            elif current > maximum:
                wanted, cause = maximum, f"maximum capacity was set to {maximum}"
            else:
                continue
            ok, message = await self._set_desired(target.doc["ResourceId"], wanted)
            doc = dict(target.doc)
            self._add_activity(doc, wanted, cause, now, ok, message)
            target.doc = doc
            await self.store.update_resource(target)

    @staticmethod
    def _add_activity(
        doc: dict[str, Any], capacity: int, cause: str, now: float, ok: bool, message: str
    ) -> None:
        activity = {
            "ActivityId": str(uuid.uuid4()),
            "ServiceNamespace": doc["ServiceNamespace"],
            "ResourceId": doc["ResourceId"],
            "ScalableDimension": doc["ScalableDimension"],
            "Description": f"Setting desired instance count to {capacity}.",
            "Cause": cause,
            "StartTime": now,
            "EndTime": now,
            "StatusCode": "Successful" if ok else "Failed",
            "StatusMessage": message,
        }
        doc["_Activities"] = [activity, *(doc.get("_Activities") or [])][:MAX_ACTIVITIES]

    # ------------------------------------------------------------------ endpoints

    async def _target_of(self, resource_id: str) -> Resource | None:
        for target in await self.store.list_resources(ResourceKind.SCALABLE_TARGET):
            if target.doc.get("ResourceId") == resource_id:
                return target
        return None

    async def _desired(self, resource_id: str) -> int | None:
        parsed = parse_resource_id(resource_id)
        if parsed is None:
            return None
        endpoint = await self.store.get_resource(ResourceKind.ENDPOINT, parsed[0])
        if endpoint is None:
            return None
        for variant in endpoint.doc.get("ProductionVariants") or []:
            if variant.get("VariantName") == parsed[1]:
                return int(variant.get("DesiredInstanceCount", 0))
        return None

    async def _set_desired(self, resource_id: str, capacity: int) -> tuple[bool, str]:
        endpoint_name, variant_name = parse_resource_id(resource_id) or ("", "")
        for _ in range(_UPDATE_ATTEMPTS):
            endpoint = await self.store.get_resource(ResourceKind.ENDPOINT, endpoint_name)
            if endpoint is None:
                return (
                    False,
                    f"Failed to set desired instance count: endpoint {endpoint_name} not found.",
                )
            status = endpoint.doc.get("EndpointStatus")
            if status != EndpointStatus.IN_SERVICE:
                return False, (
                    f"Failed to set desired instance count to {capacity}: endpoint "
                    f"{endpoint_name} is {status}, not InService."
                )
            doc = dict(endpoint.doc)
            variants = [dict(v) for v in doc.get("ProductionVariants") or []]
            for variant in variants:
                if variant.get("VariantName") == variant_name:
                    variant["DesiredInstanceCount"] = capacity
            doc["ProductionVariants"] = variants
            endpoint.doc = doc
            if await self.store.update_resource(endpoint):
                return True, (
                    f"Successfully set desired instance count to {capacity}. Change "
                    "successfully fulfilled by sagemaker."
                )
        return False, "Failed to set desired instance count: the endpoint kept changing."

"""Application Auto Scaling operations for SageMaker endpoint variants:
RegisterScalableTarget, DescribeScalableTargets, DeregisterScalableTarget,
PutScalingPolicy, DescribeScalingPolicies, DeleteScalingPolicy,
DescribeScalingActivities. Targets and policies are documents in the MetadataStore; the
fleet's autoscaler (sagequeue.autoscaling.autoscaler) acts on them. Inputs are validated
against botocore's ``application-autoscaling`` model; errors are AWS's.

A target-tracking policy owns two CloudWatch alarms, as on AWS (``TargetTracking-...-
AlarmHigh-...`` and ``-AlarmLow-...``), created and deleted with it.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import cache
from typing import Any, Protocol

from sagequeue.domain.errors import (
    AutoScalingLimitExceeded,
    ObjectNotFound,
    ServiceError,
    ServiceUnavailable,
    UnknownOperation,
    ValidationException,
)
from sagequeue.domain.resources import INVOCABLE_STATUSES
from sagequeue.domain.scaling import (
    DEFAULT_COOLDOWN_SECONDS,
    HIGH_ALARM_DATAPOINTS,
    INVOCATIONS_PER_INSTANCE,
    LOW_ALARM_DATAPOINTS,
    LOW_ALARM_RATIO,
    SCALABLE_DIMENSION,
    SERVICE_NAMESPACE,
    check_step_adjustments,
    parse_resource_id,
    policy_arn,
    policy_key,
    target_arn,
    target_key,
    tracked_metric,
)
from sagequeue.domain.validation import ShapeValidator, raise_if_invalid
from sagequeue.monitoring.cloudwatch import CloudWatch, alarm_arn, alarm_key
from sagequeue.ports import MetadataStore, MetricsStore, Resource, ResourceKind

MAX_TARGETS = 1000
MAX_POLICIES_PER_TARGET = 50
_UPDATE_ATTEMPTS = 20


class InvalidNextTokenException(ServiceError):
    code = "InvalidNextTokenException"
    status = 400


class AutoScalingStore(MetadataStore, MetricsStore, Protocol):
    """Targets, policies, their alarms; the endpoints they scale."""


@cache
def _model() -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model("application-autoscaling")


@cache
def _validator(action: str) -> ShapeValidator:
    return ShapeValidator(_model().operation_model(action).input_shape)


def public(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if not k.startswith("_")}


class ApplicationAutoScaling:
    def __init__(
        self,
        store: AutoScalingStore,
        cloudwatch: CloudWatch,
        *,
        region: str,
        account_id: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._cloudwatch = cloudwatch
        self._region = region
        self._account_id = account_id
        self._clock = clock
        self._actions: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            "RegisterScalableTarget": self.register_scalable_target,
            "DescribeScalableTargets": self.describe_scalable_targets,
            "DeregisterScalableTarget": self.deregister_scalable_target,
            "PutScalingPolicy": self.put_scaling_policy,
            "DescribeScalingPolicies": self.describe_scaling_policies,
            "DeleteScalingPolicy": self.delete_scaling_policy,
            "DescribeScalingActivities": self.describe_scaling_activities,
        }

    async def call(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        handler = self._actions.get(action)
        if handler is None:
            raise UnknownOperation(
                f"Operation {action} is not supported. Supported operations: "
                + ", ".join(self._actions)
                + "."
            )
        validator = _validator(action)
        raise_if_invalid(validator.validate(params), ValidationException)
        return await handler(validator.prune(params))

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _sagemaker_only(params: dict[str, Any]) -> None:
        namespace = params.get("ServiceNamespace")
        if namespace != SERVICE_NAMESPACE:
            raise ValidationException(
                f"Unsupported service namespace {namespace}: this server scales SageMaker "
                "endpoint variants only (ServiceNamespace sagemaker)."
            )
        dimension = params.get("ScalableDimension")
        if dimension is not None and dimension != SCALABLE_DIMENSION:
            raise ValidationException(
                f"Unsupported scalable dimension {dimension} for service namespace sagemaker: "
                f"use {SCALABLE_DIMENSION}."
            )
        resource_id = params.get("ResourceId")
        if resource_id is not None and parse_resource_id(resource_id) is None:
            raise ValidationException(
                f"Unsupported resource ID {resource_id}: a SageMaker variant is "
                "endpoint/<EndpointName>/variant/<VariantName>."
            )

    async def _target(self, params: dict[str, Any]) -> Resource | None:
        key = target_key(
            params["ServiceNamespace"], params["ResourceId"], params["ScalableDimension"]
        )
        return await self._store.get_resource(ResourceKind.SCALABLE_TARGET, key)

    def _no_target(self, params: dict[str, Any]) -> ObjectNotFound:
        return ObjectNotFound(
            f"No scalable target registered for service namespace: "
            f"{params['ServiceNamespace']}, resource ID: {params['ResourceId']}, "
            f"scalable dimension: {params['ScalableDimension']}"
        )

    async def _variant_exists(self, resource_id: str) -> bool:
        parsed = parse_resource_id(resource_id)
        if parsed is None:
            return False
        endpoint = await self._store.get_resource(ResourceKind.ENDPOINT, parsed[0])
        if endpoint is None or endpoint.doc.get("EndpointName") != parsed[0]:
            return False
        return any(
            v.get("VariantName") == parsed[1] for v in endpoint.doc.get("ProductionVariants") or []
        )

    # ------------------------------------------------------------------ targets

    async def register_scalable_target(self, params: dict[str, Any]) -> dict[str, Any]:
        self._sagemaker_only(params)
        minimum, maximum = params.get("MinCapacity"), params.get("MaxCapacity")
        if (minimum is not None and minimum < 0) or (maximum is not None and maximum < 0):
            raise ValidationException("MinCapacity and MaxCapacity must not be negative.")
        for _ in range(_UPDATE_ATTEMPTS):
            existing = await self._target(params)
            if existing is None:
                if minimum is None or maximum is None:
                    raise ValidationException(
                        "MinCapacity and MaxCapacity are required when registering a new "
                        "scalable target."
                    )
                if minimum > maximum:
                    raise ValidationException(
                        f"Minimum capacity cannot be greater than maximum capacity "
                        f"({minimum} > {maximum})."
                    )
                if not await self._variant_exists(params["ResourceId"]):
                    raise ValidationException(
                        f"The target resource {params['ResourceId']} does not exist: no "
                        "endpoint with that variant (names are case-sensitive here)."
                    )
                if (
                    len(await self._store.list_resources(ResourceKind.SCALABLE_TARGET))
                    >= MAX_TARGETS
                ):
                    raise AutoScalingLimitExceeded(
                        f"The maximum number of scalable targets ({MAX_TARGETS}) is reached."
                    )
                now = self._clock()
                uid = uuid.uuid4().hex + uuid.uuid4().hex[:4]
                doc = {
                    "ServiceNamespace": SERVICE_NAMESPACE,
                    "ResourceId": params["ResourceId"],
                    "ScalableDimension": SCALABLE_DIMENSION,
                    "MinCapacity": minimum,
                    "MaxCapacity": maximum,
                    "RoleARN": params.get("RoleARN")
                    or f"arn:aws:iam::{self._account_id}:role/aws-service-role/sagemaker."
                    "application-autoscaling.amazonaws.com/"
                    "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint",
                    "CreationTime": now,
                    "SuspendedState": _suspended(params.get("SuspendedState")),
                    "ScalableTargetARN": target_arn(self._region, self._account_id, uid),
                    "_Activities": [],
                }
                resource = Resource(
                    ResourceKind.SCALABLE_TARGET,
                    target_key(SERVICE_NAMESPACE, params["ResourceId"], SCALABLE_DIMENSION),
                    doc,
                    created_at=now,
                )
                if await self._store.create_resource(resource):
                    return {"ScalableTargetARN": doc["ScalableTargetARN"]}
                continue
            doc = dict(existing.doc)
            if minimum is not None:
                doc["MinCapacity"] = minimum
            if maximum is not None:
                doc["MaxCapacity"] = maximum
            if doc["MinCapacity"] > doc["MaxCapacity"]:
                raise ValidationException(
                    f"Minimum capacity cannot be greater than maximum capacity "
                    f"({doc['MinCapacity']} > {doc['MaxCapacity']})."
                )
            if params.get("SuspendedState") is not None:
                doc["SuspendedState"] = _suspended(
                    {**doc.get("SuspendedState", {}), **params["SuspendedState"]}
                )
            if params.get("RoleARN"):
                doc["RoleARN"] = params["RoleARN"]
            existing.doc = doc
            if await self._store.update_resource(existing):
                return {"ScalableTargetARN": doc["ScalableTargetARN"]}
        raise ServiceUnavailable("The scalable target is being changed concurrently; retry.")

    async def describe_scalable_targets(self, params: dict[str, Any]) -> dict[str, Any]:
        docs = await self._list(ResourceKind.SCALABLE_TARGET, params)
        ids = params.get("ResourceIds")
        if ids:
            docs = [d for d in docs if d["ResourceId"] in ids]
        return self._page(docs, params, "ScalableTargets")

    async def deregister_scalable_target(self, params: dict[str, Any]) -> dict[str, Any]:
        self._sagemaker_only(params)
        target = await self._target(params)
        if target is None:
            raise self._no_target(params)
        for policy in await self._policies_of(params["ResourceId"]):
            await self._delete_policy(policy)
        await self._store.delete_resource(ResourceKind.SCALABLE_TARGET, target.name)
        return {}

    # ------------------------------------------------------------------ policies

    async def put_scaling_policy(self, params: dict[str, Any]) -> dict[str, Any]:
        self._sagemaker_only(params)
        policy_type = params.get("PolicyType") or "StepScaling"
        if await self._target(params) is None:
            raise self._no_target(params)
        endpoint, variant = parse_resource_id(params["ResourceId"]) or ("", "")
        step = params.get("StepScalingPolicyConfiguration")
        tracking = params.get("TargetTrackingScalingPolicyConfiguration")
        if policy_type == "PredictiveScaling":
            raise ValidationException("PredictiveScaling policies are not supported.")
        if policy_type == "StepScaling":
            if step is None or tracking is not None:
                raise ValidationException(
                    "StepScalingPolicyConfiguration (and no TargetTrackingScalingPolicy"
                    "Configuration) is required for a StepScaling policy."
                )
            if not step.get("AdjustmentType"):
                raise ValidationException("AdjustmentType is required for a StepScaling policy.")
            problem = check_step_adjustments(step.get("StepAdjustments") or [])
            if problem:
                raise ValidationException(problem)
            if step.get("MinAdjustmentMagnitude") is not None and (
                step["AdjustmentType"] != "PercentChangeInCapacity"
            ):
                raise ValidationException(
                    "MinAdjustmentMagnitude is only valid with PercentChangeInCapacity."
                )
        else:
            if tracking is None or step is not None:
                raise ValidationException(
                    "TargetTrackingScalingPolicyConfiguration (and no StepScalingPolicy"
                    "Configuration) is required for a TargetTrackingScaling policy."
                )
            predefined = tracking.get("PredefinedMetricSpecification")
            custom = tracking.get("CustomizedMetricSpecification")
            if (predefined is None) == (custom is None):
                raise ValidationException(
                    "Exactly one of PredefinedMetricSpecification and "
                    "CustomizedMetricSpecification is required."
                )
            if predefined is not None and (
                predefined.get("PredefinedMetricType") != INVOCATIONS_PER_INSTANCE
            ):
                raise ValidationException(
                    f"Unsupported predefined metric {predefined.get('PredefinedMetricType')} "
                    f"for a SageMaker variant: use {INVOCATIONS_PER_INSTANCE} or a "
                    "CustomizedMetricSpecification."
                )
            if custom is not None:
                if custom.get("Metrics"):
                    raise ValidationException(
                        "Metric math in CustomizedMetricSpecification is not supported."
                    )
                if not custom.get("MetricName") or not custom.get("Namespace"):
                    raise ValidationException(
                        "CustomizedMetricSpecification needs MetricName and Namespace."
                    )
            if tracking["TargetValue"] <= 0:
                raise ValidationException("TargetValue must be greater than 0.")
        key = policy_key(
            SERVICE_NAMESPACE, params["ResourceId"], SCALABLE_DIMENSION, params["PolicyName"]
        )
        existing = await self._store.get_resource(ResourceKind.SCALING_POLICY, key)
        if existing is None and len(await self._policies_of(params["ResourceId"])) >= (
            MAX_POLICIES_PER_TARGET
        ):
            raise AutoScalingLimitExceeded(
                f"The maximum number of scaling policies per target ({MAX_POLICIES_PER_TARGET}) "
                "is reached."
            )
        uid = existing.doc["_Uid"] if existing is not None else str(uuid.uuid4())
        arn = policy_arn(
            self._region, self._account_id, uid, params["ResourceId"], params["PolicyName"]
        )
        now = self._clock()
        doc: dict[str, Any] = {
            "PolicyARN": arn,
            "PolicyName": params["PolicyName"],
            "ServiceNamespace": SERVICE_NAMESPACE,
            "ResourceId": params["ResourceId"],
            "ScalableDimension": SCALABLE_DIMENSION,
            "PolicyType": policy_type,
            "Alarms": [],
            "CreationTime": existing.doc["CreationTime"] if existing is not None else now,
            "_Uid": uid,
        }
        if step is not None:
            doc["StepScalingPolicyConfiguration"] = {"Cooldown": DEFAULT_COOLDOWN_SECONDS, **step}
        if tracking is not None:
            doc["TargetTrackingScalingPolicyConfiguration"] = {
                "ScaleOutCooldown": DEFAULT_COOLDOWN_SECONDS,
                "ScaleInCooldown": DEFAULT_COOLDOWN_SECONDS,
                **tracking,
            }
        if existing is not None:
            await self._delete_owned_alarms(existing.doc)
        if tracking is not None:
            doc["Alarms"] = await self._tracking_alarms(doc, tracking, endpoint, variant)
        resource = Resource(ResourceKind.SCALING_POLICY, key, doc, created_at=now)
        if existing is None:
            if not await self._store.create_resource(resource):
                raise ServiceError(
                    "The policy is being changed concurrently; retry.",
                    code="ConcurrentUpdateException",
                    status=400,
                )
        else:
            existing.doc = doc
            if not await self._store.update_resource(existing):
                raise ServiceError(
                    "The policy is being changed concurrently; retry.",
                    code="ConcurrentUpdateException",
                    status=400,
                )
        return {"PolicyARN": arn, "Alarms": doc["Alarms"]}

    async def _tracking_alarms(
        self, policy: dict[str, Any], config: dict[str, Any], endpoint: str, variant: str
    ) -> list[dict[str, str]]:
        metric = tracked_metric(config, endpoint, variant)
        target = float(config["TargetValue"])
        resource_id = policy["ResourceId"]
        specs = [("AlarmHigh", "GreaterThanThreshold", target, HIGH_ALARM_DATAPOINTS)]
        if not config.get("DisableScaleIn"):
            specs.append(
                ("AlarmLow", "LessThanThreshold", target * LOW_ALARM_RATIO, LOW_ALARM_DATAPOINTS)
            )
        alarms = []
        for suffix, comparison, threshold, datapoints in specs:
            name = f"TargetTracking-{resource_id}-{suffix}-{uuid.uuid4()}"
            alarm: dict[str, Any] = {
                "AlarmName": name,
                "AlarmDescription": "DO NOT EDIT OR DELETE. For TargetTrackingScaling policy "
                f"{policy['PolicyARN']}.",
                "AlarmActions": [policy["PolicyARN"]],
                "MetricName": metric.metric_name,
                "Namespace": metric.namespace,
                "Statistic": metric.statistic,
                "Dimensions": metric.dimensions,
                "Period": 60,
                "EvaluationPeriods": datapoints,
                "DatapointsToAlarm": datapoints,
                "Threshold": threshold,
                "ComparisonOperator": comparison,
            }
            if metric.unit:
                alarm["Unit"] = metric.unit
            await self._cloudwatch.put_metric_alarm(alarm)
            alarms.append(
                {"AlarmName": name, "AlarmARN": alarm_arn(self._region, self._account_id, name)}
            )
        return alarms

    async def _delete_owned_alarms(self, policy: dict[str, Any]) -> None:
        if policy.get("PolicyType") != "TargetTrackingScaling":
            return
        for alarm in policy.get("Alarms") or []:
            await self._store.delete_resource(ResourceKind.ALARM, alarm_key(alarm["AlarmName"]))

    async def _delete_policy(self, policy: Resource) -> None:
        await self._delete_owned_alarms(policy.doc)
        await self._store.delete_resource(ResourceKind.SCALING_POLICY, policy.name)

    async def _policies_of(self, resource_id: str) -> list[Resource]:
        return [
            r
            for r in await self._store.list_resources(ResourceKind.SCALING_POLICY)
            if r.doc.get("ResourceId") == resource_id
        ]

    async def describe_scaling_policies(self, params: dict[str, Any]) -> dict[str, Any]:
        docs = await self._list(ResourceKind.SCALING_POLICY, params)
        if params.get("ResourceId"):
            docs = [d for d in docs if d["ResourceId"] == params["ResourceId"]]
        names = params.get("PolicyNames")
        if names:
            docs = [d for d in docs if d["PolicyName"] in names]
        return self._page(docs, params, "ScalingPolicies")

    async def delete_scaling_policy(self, params: dict[str, Any]) -> dict[str, Any]:
        self._sagemaker_only(params)
        key = policy_key(
            SERVICE_NAMESPACE, params["ResourceId"], SCALABLE_DIMENSION, params["PolicyName"]
        )
        policy = await self._store.get_resource(ResourceKind.SCALING_POLICY, key)
        if policy is None:
            raise ObjectNotFound(
                f"No scaling policy found for service namespace: {params['ServiceNamespace']}, "
                f"resource ID: {params['ResourceId']}, scalable dimension: "
                f"{params['ScalableDimension']}, policy name: {params['PolicyName']}"
            )
        await self._delete_policy(policy)
        return {}

    # ------------------------------------------------------------------ activities

    async def describe_scaling_activities(self, params: dict[str, Any]) -> dict[str, Any]:
        self._sagemaker_only(params)
        targets = await self._list(ResourceKind.SCALABLE_TARGET, params, keep_internal=True)
        if params.get("ResourceId"):
            targets = [d for d in targets if d["ResourceId"] == params["ResourceId"]]
        activities = [a for d in targets for a in d.get("_Activities") or []]
        activities.sort(key=lambda a: a["StartTime"], reverse=True)
        if not params.get("IncludeNotScaledActivities"):
            activities = [a for a in activities if a.get("StatusCode") != "NotScaled"]
        return self._page(activities, params, "ScalingActivities")

    # ------------------------------------------------------------------ listing

    async def _list(
        self, kind: ResourceKind, params: dict[str, Any], *, keep_internal: bool = False
    ) -> list[dict[str, Any]]:
        self._sagemaker_only({"ServiceNamespace": params.get("ServiceNamespace")})
        dimension = params.get("ScalableDimension")
        docs = [r.doc for r in await self._store.list_resources(kind)]
        if dimension:
            docs = [d for d in docs if d.get("ScalableDimension") == dimension]
        return docs if keep_internal else [public(d) for d in docs]

    @staticmethod
    def _page(items: list[dict[str, Any]], params: dict[str, Any], key: str) -> dict[str, Any]:
        size = params.get("MaxResults") or 50
        start = _decode_token(params.get("NextToken"))
        result: dict[str, Any] = {key: items[start : start + size]}
        if start + size < len(items):
            result["NextToken"] = _encode_token(start + size)
        return result


def _suspended(state: dict[str, Any] | None) -> dict[str, bool]:
    state = state or {}
    return {
        name: bool(state.get(name, False))
        for name in (
            "DynamicScalingInSuspended",
            "DynamicScalingOutSuspended",
            "ScheduledScalingSuspended",
        )
    }


def variant_is_scalable(endpoint_doc: dict[str, Any] | None) -> bool:
    return endpoint_doc is not None and endpoint_doc.get("EndpointStatus") in INVOCABLE_STATUSES


def _encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _decode_token(token: Any) -> int:
    if not token:
        return 0
    try:
        kind, _, value = base64.urlsafe_b64decode(str(token).encode()).decode().partition(":")
        if kind == "offset" and value.isdigit():
            return int(value)
    except (ValueError, UnicodeDecodeError):
        pass
    raise InvalidNextTokenException("The NextToken is invalid.")

"""Application Auto Scaling with boto3: what it answers, AWS's errors for bad input,
and no state change from a refused call."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from acceptance.helpers import deploy
from conftest import wait_until

from .conftest import variant_counts

ENDPOINT = "aas-api"
RESOURCE = {
    "ServiceNamespace": "sagemaker",
    "ResourceId": f"endpoint/{ENDPOINT}/variant/AllTraffic",
    "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
}
STEP = {
    "AdjustmentType": "ChangeInCapacity",
    "Cooldown": 60,
    "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}],
}


@pytest.fixture(scope="module")
def autoscaling(scaled_server):
    deploy(scaled_server, ENDPOINT, instances=1)
    return scaled_server.client("application-autoscaling")


def error_code(call) -> str:
    with pytest.raises(ClientError) as refused:
        call()
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert refused.value.response["Error"]["Message"]
    return refused.value.response["Error"]["Code"]


def test_a_registered_target_is_described_with_its_bounds(autoscaling) -> None:
    arn = autoscaling.register_scalable_target(**RESOURCE, MinCapacity=1, MaxCapacity=3)[
        "ScalableTargetARN"
    ]
    (target,) = autoscaling.describe_scalable_targets(
        ServiceNamespace="sagemaker", ResourceIds=[RESOURCE["ResourceId"]]
    )["ScalableTargets"]
    assert (target["MinCapacity"], target["MaxCapacity"], target["ScalableTargetARN"]) == (
        1,
        3,
        arn,
    )
    assert target["SuspendedState"]["DynamicScalingInSuspended"] is False


def test_raising_the_minimum_scales_the_variant_up_to_it(autoscaling, scaled_server) -> None:
    sagemaker = scaled_server.client("sagemaker")
    autoscaling.register_scalable_target(**RESOURCE, MinCapacity=2, MaxCapacity=3)
    wait_until(lambda: variant_counts(sagemaker, ENDPOINT) == (2, 2), "two instances")
    (activity, *_) = autoscaling.describe_scaling_activities(
        ServiceNamespace="sagemaker", ResourceId=RESOURCE["ResourceId"]
    )["ScalingActivities"]
    assert activity["Cause"] == "minimum capacity was set to 2"
    assert activity["StatusCode"] == "Successful"
    autoscaling.register_scalable_target(**RESOURCE, MinCapacity=1, MaxCapacity=1)
    wait_until(lambda: variant_counts(sagemaker, ENDPOINT) == (1, 1), "back to one")


def test_a_policy_is_described_and_deleted(autoscaling) -> None:
    autoscaling.register_scalable_target(**RESOURCE, MinCapacity=1, MaxCapacity=3)
    arn = autoscaling.put_scaling_policy(
        PolicyName="step", PolicyType="StepScaling", StepScalingPolicyConfiguration=STEP, **RESOURCE
    )["PolicyARN"]
    assert arn.startswith("arn:aws:autoscaling:us-east-1:000000000000:scalingPolicy:")
    assert arn.endswith(f":resource/sagemaker/{RESOURCE['ResourceId']}:policyName/step")
    (policy,) = autoscaling.describe_scaling_policies(
        ServiceNamespace="sagemaker", PolicyNames=["step"]
    )["ScalingPolicies"]
    assert policy["StepScalingPolicyConfiguration"]["StepAdjustments"] == STEP["StepAdjustments"]
    autoscaling.delete_scaling_policy(PolicyName="step", **RESOURCE)
    assert (
        autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker", PolicyNames=["step"])[
            "ScalingPolicies"
        ]
        == []
    )


def test_target_tracking_alarms_go_with_their_policy(autoscaling, scaled_server) -> None:
    cloudwatch = scaled_server.client("cloudwatch")
    autoscaling.register_scalable_target(**RESOURCE, MinCapacity=1, MaxCapacity=3)
    alarms = autoscaling.put_scaling_policy(
        PolicyName="per-instance",
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 100.0,
            "PredefinedMetricSpecification": {
                "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
            },
        },
        **RESOURCE,
    )["Alarms"]
    names = [a["AlarmName"] for a in alarms]
    described = cloudwatch.describe_alarms(AlarmNames=names)["MetricAlarms"]
    assert {a["MetricName"] for a in described} == {"InvocationsPerInstance"}
    assert {a["ComparisonOperator"] for a in described} == {
        "GreaterThanThreshold",
        "LessThanThreshold",
    }
    autoscaling.delete_scaling_policy(PolicyName="per-instance", **RESOURCE)
    assert cloudwatch.describe_alarms(AlarmNames=names)["MetricAlarms"] == []


def test_bad_input_gets_aws_errors_and_changes_nothing(autoscaling) -> None:
    other = {**RESOURCE, "ResourceId": "endpoint/no-such-endpoint/variant/AllTraffic"}
    assert (
        error_code(
            lambda: autoscaling.register_scalable_target(**other, MinCapacity=0, MaxCapacity=1)
        )
        == "ValidationException"
    )
    assert (
        error_code(
            lambda: autoscaling.register_scalable_target(
                **{**RESOURCE, "ResourceId": "endpoint/x/variant/y/z"}, MinCapacity=0, MaxCapacity=1
            )
        )
        == "ValidationException"
    )
    autoscaling.register_scalable_target(**RESOURCE, MinCapacity=1, MaxCapacity=3)
    assert (
        error_code(
            lambda: autoscaling.register_scalable_target(**RESOURCE, MinCapacity=5, MaxCapacity=2)
        )
        == "ValidationException"
    )
    assert (
        error_code(
            lambda: autoscaling.put_scaling_policy(
                PolicyName="p",
                PolicyType="StepScaling",
                StepScalingPolicyConfiguration=STEP,
                **other,
            )
        )
        == "ObjectNotFoundException"
    )
    overlapping = {
        **STEP,
        "StepAdjustments": [
            {"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1},
            {"MetricIntervalLowerBound": 0, "MetricIntervalUpperBound": 5, "ScalingAdjustment": 2},
        ],
    }
    assert (
        error_code(
            lambda: autoscaling.put_scaling_policy(
                PolicyName="p",
                PolicyType="StepScaling",
                StepScalingPolicyConfiguration=overlapping,
                **RESOURCE,
            )
        )
        == "ValidationException"
    )
    assert (
        error_code(
            lambda: autoscaling.put_scaling_policy(
                PolicyName="p",
                PolicyType="TargetTrackingScaling",
                TargetTrackingScalingPolicyConfiguration={"TargetValue": 5.0},
                **RESOURCE,
            )
        )
        == "ValidationException"
    )
    assert (
        error_code(lambda: autoscaling.delete_scaling_policy(PolicyName="nope", **RESOURCE))
        == "ObjectNotFoundException"
    )
    assert error_code(lambda: autoscaling.deregister_scalable_target(**other)) == (
        "ObjectNotFoundException"
    )
    (target,) = autoscaling.describe_scalable_targets(
        ServiceNamespace="sagemaker", ResourceIds=[RESOURCE["ResourceId"]]
    )["ScalableTargets"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 3)
    assert (
        autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker", PolicyNames=["p"])[
            "ScalingPolicies"
        ]
        == []
    )


def test_deregistering_a_target_deletes_its_policies(autoscaling) -> None:
    autoscaling.register_scalable_target(**RESOURCE, MinCapacity=1, MaxCapacity=3)
    autoscaling.put_scaling_policy(
        PolicyName="doomed",
        PolicyType="StepScaling",
        StepScalingPolicyConfiguration=STEP,
        **RESOURCE,
    )
    autoscaling.deregister_scalable_target(**RESOURCE)
    assert (
        autoscaling.describe_scaling_policies(
            ServiceNamespace="sagemaker", ResourceId=RESOURCE["ResourceId"]
        )["ScalingPolicies"]
        == []
    )
    assert (
        autoscaling.describe_scalable_targets(
            ServiceNamespace="sagemaker", ResourceIds=[RESOURCE["ResourceId"]]
        )["ScalableTargets"]
        == []
    )

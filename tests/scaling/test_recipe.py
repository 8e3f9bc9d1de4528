"""AWS's "Autoscale an asynchronous endpoint" recipe, run unchanged with boto3 and with
the AWS CLI: register the variant (MinCapacity 0), target tracking on
ApproximateBacklogSizePerInstance, and a step policy triggered by a
HasBacklogWithoutCapacity alarm that wakes the endpoint from zero."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from acceptance.helpers import deploy, wait_for_object
from conftest import wait_until

from .conftest import variant_counts


def apply_recipe_with_boto3(server, endpoint_name: str) -> None:
    """The recipe's code as AWS documents it (only the clients point at this server)."""
    client = server.client("application-autoscaling")
    cw_client = server.client("cloudwatch")

    resource_id = "endpoint/" + endpoint_name + "/variant/" + "AllTraffic"
    client.register_scalable_target(
        ServiceNamespace="sagemaker",
        ResourceId=resource_id,
        ScalableDimension="sagemaker:variant:DesiredInstanceCount",
        MinCapacity=0,
        MaxCapacity=5,
    )
    client.put_scaling_policy(
        PolicyName="Invocations-ScalingPolicy",
        ServiceNamespace="sagemaker",
        ResourceId=resource_id,
        ScalableDimension="sagemaker:variant:DesiredInstanceCount",
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 5.0,
            "CustomizedMetricSpecification": {
                "MetricName": "ApproximateBacklogSizePerInstance",
                "Namespace": "AWS/SageMaker",
                "Dimensions": [{"Name": "EndpointName", "Value": endpoint_name}],
                "Statistic": "Average",
            },
            "ScaleInCooldown": 600,
            "ScaleOutCooldown": 300,
        },
    )
    response = client.put_scaling_policy(
        PolicyName="HasBacklogWithoutCapacity-ScalingPolicy",
        ServiceNamespace="sagemaker",
        ResourceId=resource_id,
        ScalableDimension="sagemaker:variant:DesiredInstanceCount",
        PolicyType="StepScaling",
        StepScalingPolicyConfiguration={
            "AdjustmentType": "ChangeInCapacity",
            "MetricAggregationType": "Average",
            "Cooldown": 300,
            "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}],
        },
    )
    step_scaling_policy_arn = response["PolicyARN"]
    cw_client.put_metric_alarm(
        AlarmName=endpoint_name + "-StepScalingAlarm",
        MetricName="HasBacklogWithoutCapacity",
        Namespace="AWS/SageMaker",
        Statistic="Average",
        EvaluationPeriods=2,
        DatapointsToAlarm=2,
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
        TreatMissingData="missing",
        Dimensions=[{"Name": "EndpointName", "Value": endpoint_name}],
        Period=60,
        AlarmActions=[step_scaling_policy_arn],
    )


def test_boto3_recipe_scales_an_idle_endpoint_to_zero_and_wakes_it_for_a_request(
    scaled_server,
) -> None:
    server = scaled_server
    sagemaker = server.client("sagemaker")
    deploy(server, "recipe-boto3", instances=1)
    apply_recipe_with_boto3(server, "recipe-boto3")

    # Idle: target tracking's low alarm (15 periods under 90% of the target) scales in.
    wait_until(lambda: variant_counts(sagemaker, "recipe-boto3") == (0, 0), "scaled to zero")

    # A request at zero is accepted and waits; the alarm wakes the endpoint.
    s3 = server.client("s3")
    s3.put_object(Bucket="acceptance", Key="in/recipe.json", Body=b'{"value": 7}')
    runtime = server.client("sagemaker-runtime")
    accepted = time.monotonic()
    response = runtime.invoke_endpoint_async(
        EndpointName="recipe-boto3",
        InputLocation="s3://acceptance/in/recipe.json",
        ContentType="application/json",
    )
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 202
    body, _ = wait_for_object(s3, response["OutputLocation"], timeout=60)
    cold_start = time.monotonic() - accepted
    assert json.loads(body) == {"echo": 7}
    assert variant_counts(sagemaker, "recipe-boto3")[0] == 1
    print(f"cold start from zero: {cold_start:.1f} s", file=sys.stderr)

    activities = server.client("application-autoscaling").describe_scaling_activities(
        ServiceNamespace="sagemaker", ResourceId="endpoint/recipe-boto3/variant/AllTraffic"
    )["ScalingActivities"]
    causes = [a["Cause"] for a in activities]
    assert any("recipe-boto3-StepScalingAlarm" in cause for cause in causes), causes
    assert any("AlarmLow" in cause for cause in causes), causes
    assert all(a["StatusCode"] == "Successful" for a in activities)


def run_aws(server, *args: str) -> dict:
    completed = subprocess.run(
        [sys.executable, "-m", "awscli", "--endpoint-url", server.url, "--output", "json", *args],
        env=server.aws_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout) if completed.stdout.strip() else {}


def test_aws_cli_recipe_registers_policies_whose_alarms_evaluate(scaled_server, tmp_path) -> None:
    server = scaled_server
    deploy(server, "recipe-cli", instances=1)
    resource_id = "endpoint/recipe-cli/variant/AllTraffic"
    run_aws(
        server,
        "application-autoscaling",
        "register-scalable-target",
        "--service-namespace",
        "sagemaker",
        "--resource-id",
        resource_id,
        "--scalable-dimension",
        "sagemaker:variant:DesiredInstanceCount",
        "--min-capacity",
        "0",
        "--max-capacity",
        "5",
    )
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "TargetValue": 5.0,
                "CustomizedMetricSpecification": {
                    "MetricName": "ApproximateBacklogSizePerInstance",
                    "Namespace": "AWS/SageMaker",
                    "Dimensions": [{"Name": "EndpointName", "Value": "recipe-cli"}],
                    "Statistic": "Average",
                },
                "ScaleInCooldown": 600,
                "ScaleOutCooldown": 300,
            }
        )
    )
    tracking = run_aws(
        server,
        "application-autoscaling",
        "put-scaling-policy",
        "--policy-name",
        "Invocations-ScalingPolicy",
        "--policy-type",
        "TargetTrackingScaling",
        "--resource-id",
        resource_id,
        "--service-namespace",
        "sagemaker",
        "--scalable-dimension",
        "sagemaker:variant:DesiredInstanceCount",
        "--target-tracking-scaling-policy-configuration",
        f"file://{config}",
    )
    step = run_aws(
        server,
        "application-autoscaling",
        "put-scaling-policy",
        "--policy-name",
        "HasBacklogWithoutCapacity-ScalingPolicy",
        "--policy-type",
        "StepScaling",
        "--resource-id",
        resource_id,
        "--service-namespace",
        "sagemaker",
        "--scalable-dimension",
        "sagemaker:variant:DesiredInstanceCount",
        "--step-scaling-policy-configuration",
        '{"AdjustmentType": "ChangeInCapacity", "MetricAggregationType": "Average", '
        '"Cooldown": 300, "StepAdjustments": [{"MetricIntervalLowerBound": 0, '
        '"ScalingAdjustment": 1}]}',
    )
    run_aws(
        server,
        "cloudwatch",
        "put-metric-alarm",
        "--alarm-name",
        "recipe-cli-StepScalingAlarm",
        "--metric-name",
        "HasBacklogWithoutCapacity",
        "--namespace",
        "AWS/SageMaker",
        "--statistic",
        "Average",
        "--evaluation-periods",
        "2",
        "--datapoints-to-alarm",
        "2",
        "--threshold",
        "1",
        "--comparison-operator",
        "GreaterThanOrEqualToThreshold",
        "--treat-missing-data",
        "missing",
        "--dimensions",
        "Name=EndpointName,Value=recipe-cli",
        "--period",
        "60",
        "--alarm-actions",
        step["PolicyARN"],
    )

    policies = run_aws(
        server,
        "application-autoscaling",
        "describe-scaling-policies",
        "--service-namespace",
        "sagemaker",
        "--resource-id",
        resource_id,
    )["ScalingPolicies"]
    assert sorted(p["PolicyName"] for p in policies) == [
        "HasBacklogWithoutCapacity-ScalingPolicy",
        "Invocations-ScalingPolicy",
    ]
    tracking_alarms = [a["AlarmName"] for a in tracking["Alarms"]]
    assert len(tracking_alarms) == 2 and "AlarmHigh" in tracking_alarms[0]

    def states() -> dict[str, str]:
        alarms = run_aws(
            server,
            "cloudwatch",
            "describe-alarms",
            "--alarm-names",
            *tracking_alarms,
            "recipe-cli-StepScalingAlarm",
        )["MetricAlarms"]
        return {a["AlarmName"]: a["StateValue"] for a in alarms}

    # An idle endpoint with an instance: no backlog, so every alarm is OK but the low one.
    settled = wait_until(
        lambda: (s := states())["recipe-cli-StepScalingAlarm"] == "OK" and s, "alarms evaluated"
    )
    assert settled[tracking_alarms[0]] == "OK"

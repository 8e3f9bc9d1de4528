"""The CloudWatch API in each protocol botocore's model lists, with real clients: boto3
and the AWS CLI speak JSON 1.0 as installed; the same clients are made to speak
``query`` (older botocore) or ``smithy-rpc-v2-cbor`` by a copy of the service model that
lists only that protocol, on AWS_DATA_PATH. Bad input gets CloudWatch's errors and
changes nothing."""

from __future__ import annotations

import datetime
import gzip
import json
import subprocess
import sys
from pathlib import Path

import boto3
import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from acceptance.helpers import deploy
from conftest import wait_until

ENDPOINT = "cw-api"


def model_with_protocol(root: Path, protocol: str) -> Path:
    """A data path whose cloudwatch model speaks only ``protocol``."""
    source = Path(botocore.__file__).parent / "data" / "cloudwatch" / "2010-08-01"
    target = root / protocol / "cloudwatch" / "2010-08-01"
    target.mkdir(parents=True)
    model = json.loads(gzip.decompress((source / "service-2.json.gz").read_bytes()))
    model["metadata"]["protocol"] = protocol
    model["metadata"]["protocols"] = [protocol]
    (target / "service-2.json").write_text(json.dumps(model))
    for extra in source.iterdir():
        if extra.name != "service-2.json.gz":
            (target / extra.name).write_bytes(extra.read_bytes())
    return root / protocol


def cloudwatch_client(server, data_path: Path | None = None):
    session = botocore.session.get_session()
    if data_path is not None:
        session = botocore.session.Session()
        session.get_component("data_loader").search_paths.insert(0, str(data_path))
    access, secret = server.credentials
    return boto3.Session(botocore_session=session).client(
        "cloudwatch",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}),
    )


@pytest.fixture(scope="module")
def server(scaled_server):
    deploy(scaled_server, ENDPOINT, instances=1)
    runtime = scaled_server.client("sagemaker-runtime")
    runtime.invoke_endpoint_async(
        EndpointName=ENDPOINT, InputLocation="s3://acceptance/missing", ContentType="x/y"
    )
    cloudwatch = scaled_server.client("cloudwatch")
    wait_until(lambda: invocations(cloudwatch) == [1.0], "the invocation counted")
    return scaled_server


def invocations(cloudwatch) -> list[float]:
    now = datetime.datetime.now(datetime.UTC)
    return [
        d["Sum"]
        for d in cloudwatch.get_metric_statistics(
            Namespace="AWS/SageMaker",
            MetricName="Invocations",
            Dimensions=[
                {"Name": "EndpointName", "Value": ENDPOINT},
                {"Name": "VariantName", "Value": "AllTraffic"},
            ],
            StartTime=now - datetime.timedelta(minutes=10),
            EndTime=now + datetime.timedelta(minutes=1),
            Period=3600,
            Statistics=["Sum"],
        )["Datapoints"]
    ]


@pytest.mark.parametrize("protocol", ["query", "json", "smithy-rpc-v2-cbor"])
def test_boto3_reads_metrics_and_manages_alarms_in_each_protocol(
    server, tmp_path, protocol
) -> None:
    cloudwatch = cloudwatch_client(server, model_with_protocol(tmp_path, protocol))
    assert cloudwatch.meta.service_model.resolved_protocol == protocol
    assert invocations(cloudwatch) == [1.0]

    now = datetime.datetime.now(datetime.UTC)
    data = cloudwatch.get_metric_data(
        MetricDataQueries=[
            {
                "Id": "invocations",
                "MetricStat": {
                    "Metric": {
                        "Namespace": "AWS/SageMaker",
                        "MetricName": "Invocations",
                        "Dimensions": [
                            {"Name": "EndpointName", "Value": ENDPOINT},
                            {"Name": "VariantName", "Value": "AllTraffic"},
                        ],
                    },
                    "Period": 3600,
                    "Stat": "Sum",
                },
            }
        ],
        StartTime=now - datetime.timedelta(minutes=10),
        EndTime=now + datetime.timedelta(minutes=1),
    )
    (result,) = data["MetricDataResults"]
    assert (result["Id"], result["Values"], result["StatusCode"]) == (
        "invocations",
        [1.0],
        "Complete",
    )
    assert isinstance(result["Timestamps"][0], datetime.datetime)

    listed = cloudwatch.list_metrics(
        Namespace="AWS/SageMaker", Dimensions=[{"Name": "EndpointName", "Value": ENDPOINT}]
    )["Metrics"]
    assert {"Invocations", "ApproximateBacklogSize"} <= {m["MetricName"] for m in listed}

    name = f"alarm-{protocol}"
    cloudwatch.put_metric_alarm(
        AlarmName=name,
        MetricName="ApproximateBacklogSize",
        Namespace="AWS/SageMaker",
        Statistic="Maximum",
        Dimensions=[{"Name": "EndpointName", "Value": ENDPOINT}],
        Period=60,
        EvaluationPeriods=1,
        Threshold=100,
        ComparisonOperator="GreaterThanThreshold",
    )
    (alarm,) = cloudwatch.describe_alarms(AlarmNames=[name])["MetricAlarms"]
    assert alarm["AlarmArn"] == f"arn:aws:cloudwatch:us-east-1:000000000000:alarm:{name}"
    assert alarm["Threshold"] == 100 and alarm["ActionsEnabled"] is True
    assert isinstance(alarm["StateUpdatedTimestamp"], datetime.datetime)
    wait_until(
        lambda: (
            cloudwatch.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]["StateValue"] == "OK"
        ),
        "alarm evaluated",
    )
    cloudwatch.delete_alarms(AlarmNames=[name])
    assert cloudwatch.describe_alarms(AlarmNames=[name])["MetricAlarms"] == []

    with pytest.raises(ClientError) as refused:
        cloudwatch.delete_alarms(AlarmNames=[name])
    assert refused.value.response["Error"]["Code"] == "ResourceNotFound"


@pytest.mark.parametrize("protocol", ["query", "json"])
def test_aws_cli_reads_statistics_in_query_and_json(server, tmp_path, protocol) -> None:
    env = server.aws_env()
    if protocol == "query":
        env["AWS_DATA_PATH"] = str(model_with_protocol(tmp_path, "query"))
    now = datetime.datetime.now(datetime.UTC)
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "awscli",
            "--endpoint-url",
            server.url,
            "--output",
            "json",
            "cloudwatch",
            "get-metric-statistics",
            "--namespace",
            "AWS/SageMaker",
            "--metric-name",
            "Invocations",
            "--dimensions",
            f"Name=EndpointName,Value={ENDPOINT}",
            "Name=VariantName,Value=AllTraffic",
            "--start-time",
            (now - datetime.timedelta(minutes=10)).isoformat(),
            "--end-time",
            (now + datetime.timedelta(minutes=1)).isoformat(),
            "--period",
            "3600",
            "--statistics",
            "Sum",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert [d["Sum"] for d in json.loads(completed.stdout)["Datapoints"]] == [1.0]
    # The protocol the CLI's own (vendored) botocore resolved with that data path.
    resolved = subprocess.run(
        [
            sys.executable,
            "-c",
            "from awscli.botocore.session import get_session; "
            "print(get_session().get_service_model('cloudwatch').resolved_protocol)",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert resolved.stdout.strip() == protocol


@pytest.mark.parametrize("protocol", ["query", "json", "smithy-rpc-v2-cbor"])
def test_bad_input_gets_cloudwatchs_error_codes_and_changes_nothing(
    server, tmp_path, protocol
) -> None:
    cloudwatch = cloudwatch_client(server, model_with_protocol(tmp_path, protocol))
    now = datetime.datetime.now(datetime.UTC)
    cases = [
        (
            "InvalidParameterValue",
            lambda: cloudwatch.get_metric_statistics(
                Namespace="AWS/SageMaker",
                MetricName="Invocations",
                StartTime=now,
                EndTime=now - datetime.timedelta(minutes=5),
                Period=60,
                Statistics=["Sum"],
            ),
        ),
        (
            "InvalidParameterValue",
            lambda: cloudwatch.get_metric_statistics(
                Namespace="AWS/SageMaker",
                MetricName="Invocations",
                StartTime=now - datetime.timedelta(minutes=5),
                EndTime=now,
                Period=61,
                Statistics=["Sum"],
            ),
        ),
        (
            "MissingParameter",
            lambda: cloudwatch.get_metric_statistics(
                Namespace="AWS/SageMaker",
                MetricName="Invocations",
                StartTime=now - datetime.timedelta(minutes=5),
                EndTime=now,
                Period=60,
            ),
        ),
        (
            "InvalidParameterCombination",
            lambda: cloudwatch.put_metric_alarm(
                AlarmName="bad-alarm",
                MetricName="ApproximateBacklogSize",
                Namespace="AWS/SageMaker",
                Statistic="Average",
                Period=60,
                EvaluationPeriods=1,
                DatapointsToAlarm=2,
                Threshold=1,
                ComparisonOperator="GreaterThanThreshold",
            ),
        ),
        (
            "MissingParameter",
            lambda: cloudwatch.put_metric_alarm(
                AlarmName="bad-alarm",
                MetricName="ApproximateBacklogSize",
                Namespace="AWS/SageMaker",
                Period=60,
                EvaluationPeriods=1,
                Threshold=1,
                ComparisonOperator="GreaterThanThreshold",
            ),
        ),
        ("InvalidNextToken", lambda: cloudwatch.describe_alarms(NextToken="not-a-token")),
    ]
    for code, call in cases:
        with pytest.raises(ClientError) as refused:
            call()
        error = refused.value.response["Error"]
        assert error["Code"] == code, (code, error)
        assert error["Message"]
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert cloudwatch.describe_alarms(AlarmNames=["bad-alarm"])["MetricAlarms"] == []

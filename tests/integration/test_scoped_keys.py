"""Scoped keys end to end: keys in the config file carry IAM-style policies, and boto3
clients using them get exactly what the policies allow, with each protocol's
AccessDenied shape for the rest."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from conftest import ServerProcess, free_port

ADMIN = ("SQADMIN0000000000001", "admin-secret-0000000000000000000000001")
TEAM_A = ("SQTEAMA0000000000001", "team-a-secret-000000000000000000000001")
INVOKE_ONLY = ("SQINVOKE000000000001", "invoke-secret-00000000000000000000001")
NO_DELETE = ("SQNODELETE0000000001", "nodelete-secret-000000000000000000001")
ACCOUNT = "000000000000"

KEYS = [
    {"AccessKeyId": ADMIN[0], "SecretAccessKey": ADMIN[1]},
    {
        "AccessKeyId": TEAM_A[0],
        "SecretAccessKey": TEAM_A[1],
        "UserName": "team-a",
        "Policy": {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": [
                        "sagemaker:InvokeEndpointAsync",
                        "sagemaker:DescribeInferenceStatus",
                    ],
                    "Resource": "arn:aws:sagemaker:*:*:endpoint/fraud-*",
                },
                {
                    "Effect": "Allow",
                    "Action": ["s3:GetObject", "s3:PutObject"],
                    "Resource": "arn:aws:s3:::results/team-a/*",
                },
                {
                    "Effect": "Allow",
                    "Action": "s3:GetObject",
                    "Resource": "arn:aws:s3:::inputs/team-a/*",
                },
                {
                    "Effect": "Allow",
                    "Action": ["logs:FilterLogEvents", "logs:GetLogEvents"],
                    "Resource": "arn:aws:logs:*:*:log-group:/aws/sagemaker/Endpoints/fraud-*",
                },
            ],
        },
    },
    {
        "AccessKeyId": INVOKE_ONLY[0],
        "SecretAccessKey": INVOKE_ONLY[1],
        "Policy": {
            "Statement": {
                "Effect": "Allow",
                "Action": "sagemaker:InvokeEndpointAsync",
                "Resource": "*",
            }
        },
    },
    {
        "AccessKeyId": NO_DELETE[0],
        "SecretAccessKey": NO_DELETE[1],
        "UserName": "archiver",
        "Policy": {
            "Statement": [
                {"Effect": "Allow", "Action": "*", "Resource": "*"},
                {
                    "Effect": "Deny",
                    "Action": "s3:DeleteObject",
                    "Resource": "arn:aws:s3:::results/*",
                },
            ]
        },
    },
]


def client(server: ServerProcess, service: str, key: tuple[str, str]) -> Any:
    return boto3.client(
        service,
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=key[0],
        aws_secret_access_key=key[1],
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


def error_of(call: Any, **kwargs: Any) -> tuple[str, int, str]:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    response = caught.value.response
    return (
        response["Error"]["Code"],
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"].get("Message", ""),
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, container: str) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("scoped")
    config = root / "sagequeue.yaml"
    config.write_text(yaml.safe_dump({"access_keys": KEYS}))
    process = ServerProcess(
        data_dir=root / "data", port=free_port(), extra_args=["--config", str(config)]
    ).start()
    sagemaker = client(process, "sagemaker", ADMIN)
    s3 = client(process, "s3", ADMIN)
    for bucket in ("results", "inputs"):
        s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket="inputs", Key="team-a/x.json", Body=b'{"x": 1}')
    s3.put_object(Bucket="inputs", Key="other/secret.json", Body=b"secret")
    s3.put_object(Bucket="results", Key="team-b/report", Body=b"b's")
    sagemaker.create_model(ModelName="fraud", PrimaryContainer={"Image": container})
    sagemaker.create_endpoint_config(
        EndpointConfigName="fraud-config",
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": "fraud", "InitialInstanceCount": 1}
        ],
        AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": "s3://results/team-a/"}},
    )
    sagemaker.create_endpoint(EndpointName="fraud-detector", EndpointConfigName="fraud-config")
    sagemaker.get_waiter("endpoint_in_service").wait(
        EndpointName="fraud-detector", WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    yield process
    process.stop()


def test_scoped_key_invokes_its_endpoint_and_reads_its_results(server: ServerProcess) -> None:
    runtime = client(server, "sagemaker-runtime", TEAM_A)
    s3 = client(server, "s3", TEAM_A)
    allowed_input = runtime.invoke_endpoint_async(
        EndpointName="fraud-detector", InputLocation="s3://inputs/team-a/x.json"
    )
    assert allowed_input["ResponseMetadata"]["HTTPStatusCode"] == 202
    answer = runtime.invoke_endpoint_async(
        EndpointName="fraud-detector", Body=b'{"x": 1}', ContentType="application/json"
    )
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 202
    key = answer["OutputLocation"].removeprefix("s3://results/")
    deadline = time.monotonic() + 30
    while True:
        try:
            body = s3.get_object(Bucket="results", Key=key)["Body"].read()
            break
        except ClientError as error:
            if error.response["Error"]["Code"] != "NoSuchKey" or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert body == b'{"x": 1}'


def test_scoped_key_cannot_invoke_other_endpoints(server: ServerProcess) -> None:
    runtime = client(server, "sagemaker-runtime", TEAM_A)
    code, status, message = error_of(
        runtime.invoke_endpoint_async, EndpointName="pricing", InputLocation="s3://inputs/team-a/x"
    )
    assert (code, status) == ("AccessDeniedException", 400)
    assert message == (
        f"User: arn:aws:iam::{ACCOUNT}:user/team-a is not authorized to perform: "
        f"sagemaker:InvokeEndpointAsync on resource: arn:aws:sagemaker:us-east-1:{ACCOUNT}:"
        "endpoint/pricing because no identity-based policy allows the "
        "sagemaker:InvokeEndpointAsync action"
    )


def test_scoped_key_cannot_have_the_server_read_inputs_it_may_not_read(
    server: ServerProcess,
) -> None:
    runtime = client(server, "sagemaker-runtime", TEAM_A)
    code, _, message = error_of(
        runtime.invoke_endpoint_async,
        EndpointName="fraud-detector",
        InputLocation="s3://inputs/other/secret.json",
    )
    assert code == "AccessDeniedException"
    assert "s3:GetObject on resource: arn:aws:s3:::inputs/other/secret.json" in message


def test_scoped_key_without_create_model_cannot_run_code(server: ServerProcess) -> None:
    sagemaker = client(server, "sagemaker", TEAM_A)
    code, status, message = error_of(
        sagemaker.create_model,
        ModelName="evil",
        PrimaryContainer={"Image": "sagequeue/python", "ModelDataUrl": "s3://inputs/x.tar.gz"},
    )
    assert (code, status) == ("AccessDeniedException", 400)
    assert "model/evil because no identity-based policy allows" in message
    assert error_of(sagemaker.list_models)[0] == "AccessDeniedException"
    names = [m["ModelName"] for m in client(server, "sagemaker", ADMIN).list_models()["Models"]]
    assert "evil" not in names


def test_scoped_key_reads_and_writes_only_under_its_prefix(server: ServerProcess) -> None:
    s3 = client(server, "s3", TEAM_A)
    s3.put_object(Bucket="results", Key="team-a/notes", Body=b"mine")
    assert s3.get_object(Bucket="results", Key="team-a/notes")["Body"].read() == b"mine"
    code, status, _ = error_of(s3.get_object, Bucket="results", Key="team-b/report")
    assert (code, status) == ("AccessDenied", 403)
    assert error_of(s3.put_object, Bucket="results", Key="team-b/x", Body=b"x")[0] == (
        "AccessDenied"
    )
    assert error_of(s3.list_objects_v2, Bucket="results")[0] == "AccessDenied"
    assert error_of(s3.list_buckets)[0] == "AccessDenied"
    assert error_of(s3.delete_object, Bucket="results", Key="team-a/notes")[0] == "AccessDenied"


def test_copy_needs_read_access_to_the_source(server: ServerProcess) -> None:
    s3 = client(server, "s3", TEAM_A)
    code, _, _ = error_of(
        s3.copy_object,
        Bucket="results",
        Key="team-a/stolen",
        CopySource={"Bucket": "results", "Key": "team-b/report"},
    )
    assert code == "AccessDenied"
    s3.copy_object(
        Bucket="results",
        Key="team-a/copy",
        CopySource={"Bucket": "inputs", "Key": "team-a/x.json"},
    )


def test_status_call_needs_its_own_action(server: ServerProcess) -> None:
    runtime = client(server, "sagemaker-runtime", INVOKE_ONLY)
    answer = runtime.invoke_endpoint_async(
        EndpointName="fraud-detector", InputLocation="https://example.invalid/x"
    )
    inference_id = answer["InferenceId"]
    path = f"/endpoints/fraud-detector/async-invocations/{inference_id}"

    def status_with(key: tuple[str, str]) -> tuple[int, dict]:
        request = AWSRequest(method="GET", url=server.url + path)
        SigV4Auth(Credentials(*key), "sagemaker", "us-east-1").add_auth(request)
        prepared = request.prepare()
        try:
            with urllib.request.urlopen(
                urllib.request.Request(prepared.url, headers=dict(prepared.headers)), timeout=10
            ) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    status, body = status_with(INVOKE_ONLY)
    assert (status, body["__type"]) == (400, "AccessDeniedException")
    assert "sagemaker:DescribeInferenceStatus" in body["message"]
    status, body = status_with(TEAM_A)
    assert status == 200 and body["InferenceId"] == inference_id


def test_explicit_deny_wins_over_allow_everything(server: ServerProcess) -> None:
    s3 = client(server, "s3", NO_DELETE)
    s3.put_object(Bucket="results", Key="keep", Body=b"x")
    s3.put_object(Bucket="inputs", Key="scratch", Body=b"x")
    code, status, message = error_of(s3.delete_object, Bucket="results", Key="keep")
    assert (code, status) == ("AccessDenied", 403)
    assert message.endswith("with an explicit deny in an identity-based policy")
    s3.delete_object(Bucket="inputs", Key="scratch")
    assert client(server, "s3", ADMIN).head_object(Bucket="results", Key="keep")


def test_delete_objects_is_checked_key_by_key(server: ServerProcess) -> None:
    s3 = client(server, "s3", NO_DELETE)
    s3.put_object(Bucket="results", Key="batch-keep", Body=b"x")
    answer = s3.delete_objects(
        Bucket="results",
        Delete={"Objects": [{"Key": "batch-keep"}, {"Key": "team-b/absent"}]},
    )
    assert [e["Code"] for e in answer["Errors"]] == ["AccessDenied", "AccessDenied"]
    assert s3.head_object(Bucket="results", Key="batch-keep")


def test_keys_without_a_policy_keep_full_access(server: ServerProcess) -> None:
    sagemaker = client(server, "sagemaker", ADMIN)
    assert sagemaker.describe_endpoint(EndpointName="fraud-detector")["EndpointStatus"]
    assert client(server, "s3", ADMIN).list_buckets()["Buckets"]


def test_a_policy_that_cannot_be_evaluated_stops_the_start(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "access_keys": [
                    {
                        "AccessKeyId": "SQBAD",
                        "SecretAccessKey": "bad-secret-000000000000",
                        "Policy": {"Statement": [{"Effect": "Allow", "NotAction": "s3:*"}]},
                    }
                ]
            }
        )
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sagequeue",
            "serve",
            "--config",
            str(config),
            "--data-dir",
            str(tmp_path / "data"),
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "the Policy of SQBAD" in result.stderr and "Traceback" not in result.stderr


def test_scoped_key_without_cloudwatch_actions_cannot_read_metrics_or_set_alarms(
    server: ServerProcess,
) -> None:
    cloudwatch = client(server, "cloudwatch", INVOKE_ONLY)
    code, status, message = error_of(cloudwatch.list_metrics, Namespace="AWS/SageMaker")
    assert (code, status) == ("AccessDenied", 403)
    assert "cloudwatch:ListMetrics on resource: *" in message
    code, _, message = error_of(
        cloudwatch.put_metric_alarm,
        AlarmName="mine",
        MetricName="ApproximateBacklogSize",
        Namespace="AWS/SageMaker",
        Statistic="Average",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="GreaterThanThreshold",
    )
    assert code == "AccessDenied"
    assert f"arn:aws:cloudwatch:us-east-1:{ACCOUNT}:alarm:mine" in message
    assert client(server, "cloudwatch", ADMIN).describe_alarms()["MetricAlarms"] == []


def test_scoped_key_without_autoscaling_actions_cannot_scale(server: ServerProcess) -> None:
    autoscaling = client(server, "application-autoscaling", INVOKE_ONLY)
    code, status, message = error_of(
        autoscaling.register_scalable_target,
        ServiceNamespace="sagemaker",
        ResourceId="endpoint/fraud-detector/variant/AllTraffic",
        ScalableDimension="sagemaker:variant:DesiredInstanceCount",
        MinCapacity=0,
        MaxCapacity=9,
    )
    assert (code, status) == ("AccessDeniedException", 400)
    assert "application-autoscaling:RegisterScalableTarget" in message
    allowed = client(server, "application-autoscaling", NO_DELETE)
    assert allowed.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []


def test_metrics_take_a_signed_request_and_refuse_a_scoped_key_without_cloudwatch(
    server: ServerProcess,
) -> None:
    def fetch(key: tuple[str, str]) -> int:
        request = AWSRequest(method="GET", url=server.url + "/metrics")
        SigV4Auth(Credentials(*key), "monitoring", "us-east-1").add_auth(request)
        prepared = request.prepare()
        try:
            with urllib.request.urlopen(
                urllib.request.Request(prepared.url, headers=dict(prepared.headers)), timeout=10
            ) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    assert fetch(ADMIN) == 200
    assert fetch(INVOKE_ONLY) == 403
    assert fetch((ADMIN[0], "wrong-secret-000000000000000000000000")) == 403


def test_scoped_key_reads_the_logs_of_its_endpoints_only(server: ServerProcess) -> None:
    runtime = client(server, "sagemaker-runtime", TEAM_A)
    logs = client(server, "logs", TEAM_A)
    inference_id = runtime.invoke_endpoint_async(
        EndpointName="fraud-detector", Body=b'{"x": 2}', ContentType="application/json"
    )["InferenceId"]
    group = "/aws/sagemaker/Endpoints/fraud-detector"
    deadline = time.monotonic() + 30
    while True:
        try:
            events = logs.filter_log_events(logGroupName=group, filterPattern=f'"{inference_id}"')
        except ClientError as error:  # no line shipped yet: the group does not exist yet
            assert error.response["Error"]["Code"] == "ResourceNotFoundException"
            events = {"events": []}
        if any("completed" in e["message"] for e in events["events"]):
            break
        assert time.monotonic() < deadline, "no log line of the request"
        time.sleep(0.2)

    code, status, message = error_of(
        logs.filter_log_events, logGroupName="/aws/sagemaker/Endpoints/pricing"
    )
    assert (code, status) == ("AccessDeniedException", 400)
    assert message == (
        f"User: arn:aws:iam::{ACCOUNT}:user/team-a is not authorized to perform: "
        f"logs:FilterLogEvents on resource: arn:aws:logs:us-east-1:{ACCOUNT}:log-group:"
        "/aws/sagemaker/Endpoints/pricing:* because no identity-based policy allows the "
        "logs:FilterLogEvents action"
    )
    code, _, _ = error_of(logs.describe_log_groups)
    assert code == "AccessDeniedException"

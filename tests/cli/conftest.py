"""Fixtures for the sagequeue CLI tests: the CLI against the shared server, an echo endpoint."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from cli.clitools import BUCKET, ENDPOINT, CliResult, echo_model_tarball, run_cli


@pytest.fixture(scope="module")
def cli_env(shared_server) -> dict[str, str]:
    """Environment for the CLI: the server's keys, its URL as the default endpoint."""
    return {**shared_server.aws_env(), "SAGEQUEUE_ENDPOINT_URL": shared_server.url, "AWS_PAGER": ""}


@pytest.fixture(scope="module")
def cli(cli_env) -> Callable[..., CliResult]:
    def run(*args: str, env: dict[str, str] | None = None, **kwargs) -> CliResult:
        return run_cli(*args, env={**cli_env, **(env or {})}, **kwargs)

    return run


@pytest.fixture(scope="module")
def echo_endpoint(shared_server) -> str:
    """An InService endpoint running the echo handler; outputs under s3://cli-tests/out."""
    s3 = shared_server.client("s3")
    sagemaker = shared_server.client("sagemaker")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="echo/model.tar.gz", Body=echo_model_tarball())
    s3.put_object(Bucket=BUCKET, Key="inputs/hello.txt", Body=b"hello")
    s3.put_object(Bucket=BUCKET, Key="inputs/fail.txt", Body=b"fail")
    sagemaker.create_model(
        ModelName=ENDPOINT,
        PrimaryContainer={
            "Image": "sagequeue/python",
            "ModelDataUrl": f"s3://{BUCKET}/echo/model.tar.gz",
        },
        ExecutionRoleArn="arn:aws:iam::000000000000:role/sagequeue",
    )
    sagemaker.create_endpoint_config(
        EndpointConfigName=ENDPOINT,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": ENDPOINT,
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
            }
        ],
        AsyncInferenceConfig={
            "OutputConfig": {
                "S3OutputPath": f"s3://{BUCKET}/out",
                "S3FailurePath": f"s3://{BUCKET}/failures",
            }
        },
    )
    sagemaker.create_endpoint(EndpointName=ENDPOINT, EndpointConfigName=ENDPOINT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = sagemaker.describe_endpoint(EndpointName=ENDPOINT)["EndpointStatus"]
        if status == "InService":
            return ENDPOINT
        if status == "Failed":
            raise RuntimeError("echo endpoint failed to start")
        time.sleep(0.2)
    raise TimeoutError("echo endpoint not InService after 60s")

"""End to end through a real server running the example models: boto3 uploads an input,
calls InvokeEndpointAsync and reads the model's real output (or failure) from S3."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterator

import pytest

from conftest import REPO, ServerProcess, free_port

sys.path.insert(0, str(REPO / "examples"))
from build import build

BUCKET = "sagequeue-examples"
IRIS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("examples")
    shutil.copy(REPO / "examples" / "sagequeue.yaml", root / "sagequeue.yaml")
    build(root / "build")
    process = ServerProcess(
        data_dir=root / "data",
        port=free_port(),
        extra_args=["--config", str(root / "sagequeue.yaml")],
    ).start()
    sagemaker = process.client("sagemaker")
    for name in ("echo", "sklearn"):
        sagemaker.get_waiter("endpoint_in_service").wait(
            EndpointName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
        )
    yield process
    process.stop()


def wait_object(s3, location: str, timeout: float = 30.0) -> dict:
    key = location.removeprefix(f"s3://{BUCKET}/")
    deadline = time.monotonic() + timeout
    while True:
        try:
            return s3.get_object(Bucket=BUCKET, Key=key)
        except s3.exceptions.NoSuchKey:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_sklearn_example_predicts_from_an_uploaded_input(server) -> None:
    s3, runtime = server.client("s3"), server.client("sagemaker-runtime")
    s3.put_object(Bucket=BUCKET, Key="in/iris.json", Body=json.dumps(IRIS).encode())
    answer = runtime.invoke_endpoint_async(
        EndpointName="sklearn",
        InputLocation=f"s3://{BUCKET}/in/iris.json",
        ContentType="application/json",
    )
    output = wait_object(s3, answer["OutputLocation"])
    assert output["ContentType"] == "application/json"
    assert json.loads(output["Body"].read()) == {
        "predictions": [0, 2],
        "labels": ["setosa", "virginica"],
    }


def test_sklearn_example_answers_csv_when_accept_asks(server) -> None:
    s3, runtime = server.client("s3"), server.client("sagemaker-runtime")
    s3.put_object(Bucket=BUCKET, Key="in/iris.csv", Body=b"5.1,3.5,1.4,0.2\n")
    answer = runtime.invoke_endpoint_async(
        EndpointName="sklearn",
        InputLocation=f"s3://{BUCKET}/in/iris.csv",
        ContentType="text/csv",
        Accept="text/csv",
    )
    output = wait_object(s3, answer["OutputLocation"])
    assert (output["ContentType"], output["Body"].read()) == ("text/csv", b"0\n")


def test_echo_example_returns_an_inline_body(server) -> None:
    s3, runtime = server.client("s3"), server.client("sagemaker-runtime")
    answer = runtime.invoke_endpoint_async(
        EndpointName="echo", Body=b"hello sagequeue", ContentType="text/plain"
    )
    output = wait_object(s3, answer["OutputLocation"])
    assert (output["ContentType"], output["Body"].read()) == ("text/plain", b"hello sagequeue")


def test_handler_exception_lands_in_the_failure_location(server) -> None:
    s3, runtime = server.client("s3"), server.client("sagemaker-runtime")
    s3.put_object(Bucket=BUCKET, Key="in/picture.png", Body=b"\x89PNG")
    answer = runtime.invoke_endpoint_async(
        EndpointName="sklearn",
        InputLocation=f"s3://{BUCKET}/in/picture.png",
        ContentType="image/png",
    )
    failure = wait_object(s3, answer["FailureLocation"])
    assert failure["Body"].read().decode() == (
        "ValueError: unsupported content type 'image/png': use JSON, CSV or NPY"
    )


def test_invocation_past_its_timeout_fails(server) -> None:
    s3, runtime = server.client("s3"), server.client("sagemaker-runtime")
    answer = runtime.invoke_endpoint_async(
        EndpointName="echo",
        Body=b"slow",
        ContentType="text/plain",
        CustomAttributes="sleep_ms=3000",
        InvocationTimeoutSeconds=1,
    )
    failure = wait_object(s3, answer["FailureLocation"])
    assert b"timed out after 1 s" in failure["Body"].read()

"""Async inference end to end: real boto3 clients against a real server, real model code."""

from __future__ import annotations

import json
import time

import pytest

from acceptance.helpers import (
    deploy,
    invocation_status,
    object_exists,
    read_object,
    wait_for_object,
    wait_for_status,
)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def endpoint(shared_server):
    deploy(shared_server, "behave", instances=1, concurrency=2)
    return "behave"


def test_invocation_with_input_location_writes_model_output(shared_server, s3, runtime, endpoint):
    s3.put_object(
        Bucket="acceptance",
        Key="inputs/echo.json",
        Body=json.dumps({"action": "echo", "value": 42}).encode(),
        ContentType="application/json",
    )
    response = runtime.invoke_endpoint_async(
        EndpointName=endpoint,
        InputLocation="s3://acceptance/inputs/echo.json",
        ContentType="application/json",
        Accept="application/json",
    )
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert response["OutputLocation"].startswith("s3://acceptance/output/behave/")
    body, content_type = wait_for_object(s3, response["OutputLocation"])
    assert json.loads(body) == {"echo": 42}
    assert content_type == "application/json"


def test_invocation_with_inline_body_writes_model_output(shared_server, s3, runtime, endpoint):
    response = runtime.invoke_endpoint_async(
        EndpointName=endpoint,
        Body=json.dumps({"action": "echo", "value": "inline"}).encode(),
        ContentType="application/json",
    )
    body, _ = wait_for_object(s3, response["OutputLocation"])
    assert json.loads(body) == {"echo": "inline"}


def test_output_location_uses_filename_and_path_extension(shared_server, s3, runtime, endpoint):
    response = runtime.invoke_endpoint_async(
        EndpointName=endpoint,
        Body=json.dumps({"action": "echo", "value": 1}).encode(),
        ContentType="application/json",
        S3OutputPathExtension="daily/run-1",
        Filename="result.json",
    )
    assert response["OutputLocation"] == "s3://acceptance/output/behave/daily/run-1/result.json.out"
    body, _ = wait_for_object(s3, response["OutputLocation"])
    assert json.loads(body) == {"echo": 1}


def test_status_extension_reports_completed_invocation(shared_server, runtime, endpoint):
    response = runtime.invoke_endpoint_async(
        EndpointName=endpoint,
        Body=json.dumps({"action": "echo", "value": 7}).encode(),
        ContentType="application/json",
        InferenceId="status-check-1",
    )
    assert response["InferenceId"] == "status-check-1"
    status = wait_for_status(shared_server, endpoint, "status-check-1")
    assert status["Status"] == "Completed"
    assert status["OutputLocation"] == response["OutputLocation"]


def test_model_exception_writes_failure_object_with_type_and_message(
    shared_server, s3, runtime, endpoint
):
    response = runtime.invoke_endpoint_async(
        EndpointName=endpoint,
        Body=json.dumps({"action": "raise", "message": "bad input row 3"}).encode(),
        ContentType="application/json",
    )
    assert response["FailureLocation"].startswith("s3://acceptance/failures/behave/")
    status = wait_for_status(shared_server, endpoint, response["InferenceId"])
    assert status["Status"] == "Failed"
    body, _ = wait_for_object(s3, response["FailureLocation"])
    assert b"ValueError" in body
    assert b"bad input row 3" in body
    assert not object_exists(s3, response["OutputLocation"])


def test_invocation_past_its_timeout_fails(shared_server, s3, runtime, endpoint):
    response = runtime.invoke_endpoint_async(
        EndpointName=endpoint,
        Body=json.dumps({"action": "sleep", "seconds": 4}).encode(),
        ContentType="application/json",
        InvocationTimeoutSeconds=1,
    )
    status = wait_for_status(shared_server, endpoint, response["InferenceId"], timeout=30)
    assert status["Status"] == "Failed"
    assert "timed out" in status["FailureReason"].lower()
    body, _ = read_object(s3, response["FailureLocation"])
    assert b"timed out" in body.lower()
    # The endpoint keeps serving after a timed-out invocation.
    after = runtime.invoke_endpoint_async(
        EndpointName=endpoint,
        Body=json.dumps({"action": "echo", "value": "after"}).encode(),
        ContentType="application/json",
    )
    body, _ = wait_for_object(s3, after["OutputLocation"], timeout=60)
    assert json.loads(body) == {"echo": "after"}


@pytest.mark.slow
def test_finished_invocations_are_purged_after_the_retention_but_outputs_stay(
    server_factory,
) -> None:
    server = server_factory("--retention", "2s")
    deploy(server, "short-lived")
    runtime = server.client("sagemaker-runtime")
    response = runtime.invoke_endpoint_async(
        EndpointName="short-lived",
        InferenceId="soon-purged",
        Body=json.dumps({"action": "echo", "value": "kept"}).encode(),
        ContentType="application/json",
    )
    assert wait_for_status(server, "short-lived", "soon-purged")["Status"] == "Completed"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            invocation_status(server, "short-lived", "soon-purged")
        except AssertionError as exc:
            assert "404" in str(exc) and "ResourceNotFound" in str(exc)
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the finished invocation was never purged")
    body, _ = read_object(server.client("s3"), response["OutputLocation"])
    assert json.loads(body) == {"echo": "kept"}

"""InvokeEndpointAsync and the status extension through boto3 against a real server.

The endpoint's model is a tiny SageMaker-contract container (``GET /ping``,
``POST /invocations``) run by the test, so that the endpoint reaches InService.
botocore's client-side validation is off, so every rule is the server's.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError


def invoke(raw_runtime: Any, endpoint: str, **members: Any) -> dict[str, Any]:
    members.setdefault("InputLocation", "s3://inputs/x.json")
    return raw_runtime.invoke_endpoint_async(EndpointName=endpoint, **members)


def error_of(raw_runtime: Any, endpoint: str, **members: Any) -> dict[str, Any]:
    with pytest.raises(ClientError) as caught:
        invoke(raw_runtime, endpoint, **members)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    return caught.value.response["Error"]


def test_accepted_request_returns_202_with_locations(raw_runtime: Any, endpoint: str) -> None:
    response = invoke(raw_runtime, endpoint)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 202
    inference_id = response["InferenceId"]
    uuid.UUID(inference_id)
    assert response["OutputLocation"] == f"s3://results/out/{inference_id}.out"
    assert response["FailureLocation"] == f"s3://results/failed/{inference_id}-error.out"


def test_given_inference_id_is_returned(raw_runtime: Any, endpoint: str) -> None:
    response = invoke(raw_runtime, endpoint, InferenceId="my id/1")
    assert response["InferenceId"] == "my id/1"


def test_inference_id_may_start_with_any_non_space_character(
    raw_runtime: Any, endpoint: str
) -> None:
    # The model's pattern is \A\S[\p{Print}]*\z: only the first character may be
    # non-ASCII.
    response = invoke(raw_runtime, endpoint, InferenceId="\u2713ok")
    assert response["InferenceId"] == "\u2713ok"


def test_filename_and_extension_shape_the_locations(raw_runtime: Any, endpoint: str) -> None:
    response = invoke(raw_runtime, endpoint, Filename="answer.json", S3OutputPathExtension="day/1")
    assert response["OutputLocation"] == "s3://results/out/day/1/answer.json.out"
    assert response["FailureLocation"] == "s3://results/failed/day/1/answer.json-error.out"


def test_inline_body_is_accepted(raw_runtime: Any, endpoint: str) -> None:
    response = raw_runtime.invoke_endpoint_async(
        EndpointName=endpoint, Body=b'{"x": 1}', ContentType="application/json"
    )
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 202


def test_status_extension_reports_a_known_invocation(
    shared_server: Any, raw_runtime: Any, endpoint: str
) -> None:
    inference_id = f"status-{uuid.uuid4().hex}"
    invoke(raw_runtime, endpoint, InferenceId=inference_id)
    status = _signed_get(shared_server, f"/endpoints/{endpoint}/async-invocations/{inference_id}")
    assert status[0] == 200
    assert status[1]["InferenceId"] == inference_id
    assert status[1]["Status"] in ("Queued", "InProgress", "Completed", "Failed")
    assert status[1]["OutputLocation"].endswith(".out")


def test_status_of_unknown_invocation_is_404(shared_server: Any, endpoint: str) -> None:
    status, body = _signed_get(shared_server, f"/endpoints/{endpoint}/async-invocations/nope")
    assert status == 404
    assert body["__type"] == "ResourceNotFound"


def test_unknown_endpoint_is_validation_error_with_sagemaker_text(raw_runtime: Any) -> None:
    error = error_of(raw_runtime, "no-such-endpoint")
    assert error == {
        "Code": "ValidationError",
        "Message": "Endpoint no-such-endpoint of account 000000000000 not found.",
    }


def test_endpoint_not_in_service_is_refused(raw_runtime: Any, sagemaker: Any) -> None:
    sagemaker.create_model(ModelName="never", PrimaryContainer={"Image": "http://127.0.0.1:9"})
    sagemaker.create_endpoint_config(
        EndpointConfigName="never-config",
        ProductionVariants=[{"VariantName": "v", "ModelName": "never", "InitialInstanceCount": 1}],
        AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": "s3://results/never"}},
    )
    sagemaker.create_endpoint(EndpointName="never", EndpointConfigName="never-config")
    error = error_of(raw_runtime, "never")
    assert error["Message"] == "Endpoint never of account 000000000000 not found."


@pytest.mark.parametrize(
    ("members", "member_path"),
    [
        ({"InferenceId": "x" * 65}, "inferenceId"),
        ({"InputLocation": "ftp://bucket/key"}, "inputLocation"),
        ({"InputLocation": "s3://b/" + "k" * 1020}, "inputLocation"),
        ({"RequestTTLSeconds": 59}, "requestTTLSeconds"),
        ({"RequestTTLSeconds": 21601}, "requestTTLSeconds"),
        ({"InvocationTimeoutSeconds": 0}, "invocationTimeoutSeconds"),
        ({"InvocationTimeoutSeconds": 3601}, "invocationTimeoutSeconds"),
        ({"CustomAttributes": "a" * 1025}, "customAttributes"),
        ({"ContentType": "t" * 1025}, "contentType"),
        ({"Accept": "t" * 1025}, "accept"),
        ({"S3OutputPathExtension": "s3:bad"}, "s3OutputPathExtension"),
        ({"S3OutputPathExtension": "a b"}, "s3OutputPathExtension"),
        ({"Filename": "a.b.c"}, "filename"),
        ({"Filename": "f" * 33}, "filename"),
        # Non-ASCII header values arrive UTF-8 encoded and signed as such: the rule
        # decides, not a signature mismatch.
        ({"InferenceId": "caf\u00e9"}, "inferenceId"),
        ({"CustomAttributes": "x=\u00e9"}, "customAttributes"),
        ({"ContentType": "text/\u00e9"}, "contentType"),
    ],
)
def test_each_rule_is_enforced_by_the_server(
    raw_runtime: Any, endpoint: str, members: dict[str, Any], member_path: str
) -> None:
    error = error_of(raw_runtime, endpoint, **members)
    assert error["Code"] == "ValidationError"
    assert error["Message"].startswith("1 validation error detected: ")
    assert f"at '{member_path}'" in error["Message"]


def test_invalid_endpoint_name_is_refused(raw_runtime: Any) -> None:
    error = error_of(raw_runtime, "bad_name")
    assert "at 'endpointName'" in error["Message"]


def test_body_and_input_location_together_are_refused(raw_runtime: Any, endpoint: str) -> None:
    error = error_of(raw_runtime, endpoint, Body=b"x")
    assert "mutually exclusive" in error["Message"]


def test_neither_body_nor_input_location_is_refused(raw_runtime: Any, endpoint: str) -> None:
    with pytest.raises(ClientError) as caught:
        raw_runtime.invoke_endpoint_async(EndpointName=endpoint)
    assert caught.value.response["Error"]["Code"] == "ValidationError"


def test_body_over_128000_bytes_is_refused(raw_runtime: Any, endpoint: str) -> None:
    with pytest.raises(ClientError) as caught:
        raw_runtime.invoke_endpoint_async(EndpointName=endpoint, Body=b"x" * 128_001)
    error = caught.value.response["Error"]
    assert error["Code"] == "ValidationError"
    assert "at 'body'" in error["Message"]


def test_body_of_128000_bytes_is_accepted(raw_runtime: Any, endpoint: str) -> None:
    response = raw_runtime.invoke_endpoint_async(EndpointName=endpoint, Body=b"x" * 128_000)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 202


def test_other_paths_under_endpoints_are_unknown_operations(shared_server: Any) -> None:
    status, body = _signed_get(shared_server, "/endpoints/echo/invocations")
    assert status == 404
    assert body["__type"] == "UnknownOperationException"


def test_aws_cli_invoke_endpoint_async(shared_server: Any, endpoint: str) -> None:
    import json
    import subprocess
    import sys
    from pathlib import Path

    aws = Path(sys.executable).parent / "aws"
    result = subprocess.run(
        [
            str(aws),
            "--endpoint-url",
            shared_server.url,
            "sagemaker-runtime",
            "invoke-endpoint-async",
            "--endpoint-name",
            endpoint,
            "--input-location",
            "s3://inputs/x.json",
        ],
        env=shared_server.aws_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["OutputLocation"] == f"s3://results/out/{output['InferenceId']}.out"


def _signed_get(server: Any, path: str) -> tuple[int, dict[str, Any]]:
    """A SigV4-signed GET (the status extension is not in botocore's model)."""
    import json
    import urllib.error
    import urllib.request

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method="GET", url=server.url + path)
    SigV4Auth(Credentials(*server.credentials), "sagemaker", "us-east-1").add_auth(request)
    prepared = request.prepare()
    http_request = urllib.request.Request(prepared.url, headers=dict(prepared.headers))
    try:
        with urllib.request.urlopen(http_request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())

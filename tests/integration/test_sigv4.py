"""SigV4 failures end to end: boto3 and hand-signed requests against a real server; each
failure parses in botocore into the AWS error code."""

from __future__ import annotations

import datetime
import urllib.error
import urllib.request
from datetime import timedelta
from typing import Any
from unittest import mock

import boto3
import pytest
from botocore import UNSIGNED
from botocore.auth import S3SigV4Auth, SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError


def client(server: Any, service: str, access: str, secret: str, **config: Any) -> Any:
    return boto3.client(
        service,
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, **config),
    )


def code_of(call: Any, **kwargs: Any) -> tuple[str, int]:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    response = caught.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def test_unsigned_control_plane_call_is_missing_authentication_token(shared_server: Any) -> None:
    sagemaker = client(shared_server, "sagemaker", "x", "y", signature_version=UNSIGNED)
    assert code_of(sagemaker.list_models) == ("MissingAuthenticationToken", 403)


def test_unsigned_runtime_call_is_missing_authentication_token(shared_server: Any) -> None:
    runtime = client(shared_server, "sagemaker-runtime", "x", "y", signature_version=UNSIGNED)
    assert code_of(runtime.invoke_endpoint_async, EndpointName="e", InputLocation="s3://b/k") == (
        "MissingAuthenticationToken",
        403,
    )


def test_wrong_secret_is_invalid_signature(shared_server: Any) -> None:
    access, _ = shared_server.credentials
    sagemaker = client(shared_server, "sagemaker", access, "wrong-secret")
    assert code_of(sagemaker.list_models) == ("InvalidSignatureException", 403)


def test_wrong_secret_on_runtime_is_invalid_signature(shared_server: Any) -> None:
    access, _ = shared_server.credentials
    runtime = client(shared_server, "sagemaker-runtime", access, "wrong-secret")
    assert code_of(runtime.invoke_endpoint_async, EndpointName="e", InputLocation="s3://b/k") == (
        "InvalidSignatureException",
        403,
    )


def test_unknown_access_key_is_unrecognized_client(shared_server: Any) -> None:
    sagemaker = client(shared_server, "sagemaker", "AKIDUNKNOWN", "whatever")
    assert code_of(sagemaker.list_models) == ("UnrecognizedClientException", 403)


def test_wrong_secret_on_s3_is_signature_does_not_match(shared_server: Any) -> None:
    access, _ = shared_server.credentials
    s3 = client(shared_server, "s3", access, "wrong-secret")
    assert code_of(s3.list_buckets) == ("SignatureDoesNotMatch", 403)


def test_unknown_access_key_on_s3_is_invalid_access_key_id(shared_server: Any) -> None:
    s3 = client(shared_server, "s3", "AKIDUNKNOWN", "whatever")
    assert code_of(s3.list_buckets) == ("InvalidAccessKeyId", 403)


def _signed_at(
    server: Any, service: str, at: datetime.datetime, url_path: str = "/"
) -> tuple[int, str, str]:
    """Sign with botocore's pure-Python signer at a chosen time (boto3 clients may sign
    with awscrt, which reads its own clock) and send; (status, error code, body)."""
    if service == "s3":
        request = AWSRequest(method="GET", url=server.url + url_path)
        signer: SigV4Auth = S3SigV4Auth(Credentials(*server.credentials), "s3", "us-east-1")
    else:
        request = AWSRequest(
            method="POST",
            url=server.url + url_path,
            data=b"{}",
            headers={
                "X-Amz-Target": "SageMaker.ListModels",
                "Content-Type": "application/x-amz-json-1.1",
            },
        )
        signer = SigV4Auth(Credentials(*server.credentials), "sagemaker", "us-east-1")
    with mock.patch("botocore.auth.get_current_datetime", lambda: at.replace(tzinfo=None)):
        signer.add_auth(request)
    prepared = request.prepare()
    http_request = urllib.request.Request(
        prepared.url, data=prepared.body, headers=dict(prepared.headers), method=prepared.method
    )
    try:
        with urllib.request.urlopen(http_request, timeout=10) as response:
            return response.status, "", response.read().decode()
    except urllib.error.HTTPError as error:
        body = error.read().decode()
        code = error.headers.get("x-amzn-errortype", "")
        if service == "s3":
            code = body.split("<Code>", 1)[1].split("</Code>", 1)[0]
        return error.code, code, body


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def test_clock_skew_beyond_15_minutes_is_refused(shared_server: Any) -> None:
    status, code, body = _signed_at(shared_server, "sagemaker", _now() - timedelta(minutes=20))
    assert (status, code) == (403, "InvalidSignatureException")
    assert "Signature expired" in body


def test_signature_from_the_future_is_refused(shared_server: Any) -> None:
    status, code, body = _signed_at(shared_server, "sagemaker", _now() + timedelta(minutes=20))
    assert (status, code) == (403, "InvalidSignatureException")
    assert "Signature not yet current" in body


def test_clock_skew_on_s3_is_request_time_too_skewed(shared_server: Any) -> None:
    status, code, _ = _signed_at(shared_server, "s3", _now() + timedelta(minutes=20))
    assert (status, code) == (403, "RequestTimeTooSkewed")


def test_clock_skew_within_15_minutes_is_accepted(shared_server: Any) -> None:
    status, _, body = _signed_at(shared_server, "sagemaker", _now() - timedelta(minutes=10))
    assert status == 200, body


def _send(server: Any, headers: dict[str, str], body: bytes = b"{}") -> tuple[int, str]:
    request = urllib.request.Request(server.url + "/", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("x-amzn-errortype", "")
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("x-amzn-errortype", "")


def test_malformed_authorization_is_incomplete_signature(shared_server: Any) -> None:
    headers = {
        "X-Amz-Target": "SageMaker.ListModels",
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Date": "20260101T000000Z",
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKID",
    }
    assert _send(shared_server, headers) == (403, "IncompleteSignature")


def test_presigned_url_for_runtime_status_is_accepted(shared_server: Any) -> None:
    """The presigned form authenticates sagemaker calls too (404: no such invocation)."""
    request = AWSRequest(
        method="GET", url=shared_server.url + "/endpoints/e/async-invocations/none"
    )
    SigV4QueryAuth(
        Credentials(*shared_server.credentials), "sagemaker", "us-east-1", expires=60
    ).add_auth(request)
    prepared = request.prepare()
    try:
        urllib.request.urlopen(urllib.request.Request(prepared.url), timeout=10)
        status = 200
    except urllib.error.HTTPError as error:
        status = error.code
    assert status == 404

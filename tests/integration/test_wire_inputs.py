"""Inputs AWS refuses or ignores, sent signed by hand (botocore would not send them):
deeply nested JSON, integers in forms Python's int() takes but AWS does not, members
the service model does not define, and container Image URLs that would reach other
services."""

from __future__ import annotations

import http.client
import json
from typing import Any

import pytest
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

NOT_INTEGERS = ["+600", "6_0_0", "\u0666\u0660\u0660", "600.0", "0x258", "6 00"]


def signed_call(
    server: Any,
    method: str,
    path: str,
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    service: str = "sagemaker",
) -> tuple[int, dict[str, str], bytes]:
    """Sign with botocore's SigV4 signer and send exactly these headers (values may be
    any Unicode: they go out as UTF-8, as they were signed)."""
    host = f"127.0.0.1:{server.port}"
    request = AWSRequest(
        method=method, url=f"http://{host}{path}", data=body, headers=dict(headers or {})
    )
    signer = S3SigV4Auth if service == "s3" else SigV4Auth
    signer(Credentials(*server.credentials), service, "us-east-1").add_auth(request)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", host)
        for name, value in request.headers.items():
            if name.lower() != "host":
                connection.putheader(name, str(value).encode("utf-8"))
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return (
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            response.read(),
        )
    finally:
        connection.close()


def control(server: Any, action: str, document: bytes | dict) -> tuple[int, str, dict]:
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    status, headers, answer = signed_call(
        server,
        "POST",
        "/",
        body=body,
        headers={
            "X-Amz-Target": f"SageMaker.{action}",
            "Content-Type": "application/x-amz-json-1.1",
        },
    )
    return status, headers.get("x-amzn-errortype", ""), json.loads(answer or b"{}")


# ------------------------------------------------------------------ nested JSON (item 5)


@pytest.mark.parametrize("opening,closing", [(b'{"a":', b"}"), (b"[", b"]")])
def test_json_nested_2000_levels_is_a_serialization_error(
    shared_server: Any, opening: bytes, closing: bytes
) -> None:
    nested = opening * 2000 + b"1" + closing * 2000
    document = b'{"ModelName": "deep", "Extra": ' + nested + b"}"
    status, code, _ = control(shared_server, "CreateModel", document)
    assert (status, code) == (400, "SerializationException")


def test_json_nested_inside_a_known_member_is_refused_without_a_500(shared_server: Any) -> None:
    nested = b'{"a":' * 400 + b"1" + b"}" * 400
    document = b'{"ModelName": "deep2", "PrimaryContainer": {"Environment": ' + nested + b"}}"
    status, code, _ = control(shared_server, "CreateModel", document)
    assert status == 400
    assert code in ("SerializationException", "ValidationException")


# ------------------------------------------------------------------ integers (item 8)


@pytest.mark.parametrize("value", NOT_INTEGERS)
def test_runtime_integer_header_in_a_form_aws_refuses_is_a_validation_error(
    shared_server: Any, value: str
) -> None:
    status, headers, body = signed_call(
        shared_server,
        "POST",
        "/endpoints/no-such-endpoint/async-invocations",
        headers={
            "X-Amzn-SageMaker-InputLocation": "s3://b/k",
            "X-Amzn-SageMaker-RequestTTLSeconds": value,
        },
    )
    assert (status, headers["x-amzn-errortype"]) == (400, "ValidationError")
    assert b"requestTTLSeconds" in body


def test_runtime_plain_integer_header_passes_validation(shared_server: Any) -> None:
    status, _, body = signed_call(
        shared_server,
        "POST",
        "/endpoints/no-such-endpoint/async-invocations",
        headers={
            "X-Amzn-SageMaker-InputLocation": "s3://b/k",
            "X-Amzn-SageMaker-RequestTTLSeconds": "600",
        },
    )
    # Past validation: the endpoint lookup answers.
    assert status == 400 and b"not found" in body


@pytest.fixture(scope="module")
def bucket(s3: Any) -> str:
    s3.create_bucket(Bucket="wire-inputs")
    s3.put_object(Bucket="wire-inputs", Key="ten", Body=b"0123456789")
    return "wire-inputs"


@pytest.mark.parametrize("value", ["+5", "5_0", "\u0665", "0x5"])
def test_s3_max_keys_in_a_form_aws_refuses_is_invalid_argument(
    shared_server: Any, bucket: str, value: str
) -> None:
    from urllib.parse import quote

    status, _, body = signed_call(
        shared_server,
        "GET",
        f"/{bucket}?list-type=2&max-keys={quote(value)}",
        service="s3",
    )
    assert status == 400
    assert b"<Code>InvalidArgument</Code>" in body


@pytest.mark.parametrize("value", ["+1", "1_0", "\u0661"])
def test_s3_part_number_in_a_form_aws_refuses_is_refused(
    shared_server: Any, s3: Any, bucket: str, value: str
) -> None:
    from urllib.parse import quote

    upload = s3.create_multipart_upload(Bucket=bucket, Key="parts")["UploadId"]
    status, _, _ = signed_call(
        shared_server,
        "PUT",
        f"/{bucket}/parts?partNumber={quote(value)}&uploadId={upload}",
        body=b"data",
        service="s3",
    )
    assert status in (400, 416)
    assert s3.list_parts(Bucket=bucket, Key="parts", UploadId=upload).get("Parts", []) == []


@pytest.mark.parametrize("value", ["bytes=+0-3", "bytes=0-+3", "bytes=\u0660-3", "bytes=0_0-3"])
def test_s3_range_in_a_form_aws_refuses_is_ignored(s3: Any, bucket: str, value: str) -> None:
    """S3 ignores a Range it cannot parse and answers the whole object."""
    answer = s3.get_object(Bucket=bucket, Key="ten", Range=value)
    assert answer["Body"].read() == b"0123456789"


def test_s3_plain_range_is_honoured(s3: Any, bucket: str) -> None:
    assert s3.get_object(Bucket=bucket, Key="ten", Range="bytes=2-4")["Body"].read() == b"234"


# ------------------------------------------------------------------ unknown members (item 9)


def test_unknown_members_are_neither_stored_nor_echoed(shared_server: Any, sagemaker: Any) -> None:
    status, code, _ = control(
        shared_server,
        "CreateModel",
        {
            "ModelName": "with-unknown-members",
            "PrimaryContainer": {"Image": "sagequeue/python", "Injected": "x" * 100},
            "NotAMember": {"a": [1, 2, 3]},
            "_Deployment": "internal-looking",
        },
    )
    assert (status, code) == (200, "")
    described = control(shared_server, "DescribeModel", {"ModelName": "with-unknown-members"})[2]
    assert described["ModelName"] == "with-unknown-members"
    assert described["PrimaryContainer"] == {"Image": "sagequeue/python"}
    assert "NotAMember" not in described and "_Deployment" not in described
    echoed = sagemaker.describe_model(ModelName="with-unknown-members")
    assert "Injected" not in json.dumps(echoed, default=str)


# ------------------------------------------------------------------ container URLs (item 10)


@pytest.mark.parametrize(
    "image",
    [
        "http://127.0.0.1:9000/internal/admin?token=1",
        "http://127.0.0.1:9000/?x=1",
        "http://user:secret@127.0.0.1:9000",
        "http://127.0.0.1:9000#fragment",
    ],
)
def test_container_image_with_more_than_scheme_host_and_port_is_refused(
    sagemaker: Any, image: str
) -> None:
    with pytest.raises(ClientError) as caught:
        sagemaker.create_model(ModelName="ssrf", PrimaryContainer={"Image": image})
    assert caught.value.response["Error"]["Code"] == "ValidationException"


def test_container_host_off_the_allow_list_is_refused(sagemaker: Any) -> None:
    with pytest.raises(ClientError) as caught:
        sagemaker.create_model(
            ModelName="ssrf-host", PrimaryContainer={"Image": "http://169.254.169.254"}
        )
    error = caught.value.response["Error"]
    assert error["Code"] == "ValidationException"
    assert "container_allow_hosts" in error["Message"]


def test_loopback_container_is_allowed_when_the_server_listens_on_loopback(
    sagemaker: Any,
) -> None:
    sagemaker.create_model(
        ModelName="loopback-container", PrimaryContainer={"Image": "http://127.0.0.1:9/"}
    )

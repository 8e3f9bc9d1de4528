"""SigV4 rules beyond a matching signature, end to end with S3's and SageMaker's error
codes: every x-amz-* header signed (S3), presigned URLs' expiry and date, the credential
scope's region, and S3's codes for a missing date."""

from __future__ import annotations

import datetime
import urllib.error
import urllib.parse
import urllib.request
from datetime import timedelta
from typing import Any
from unittest import mock

import boto3
import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def send(
    prepared_url: str, method: str = "GET", headers: dict[str, str] | None = None, body=None
) -> tuple[int, str]:
    request = urllib.request.Request(prepared_url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def xml_field(body: str, name: str) -> str:
    return body.split(f"<{name}>", 1)[1].split(f"</{name}>", 1)[0]


def presign(
    server: Any,
    path: str,
    *,
    expires: int = 3600,
    at: datetime.datetime | None = None,
    region: str = "us-east-1",
) -> str:
    request = AWSRequest(method="GET", url=server.url + path)
    signer = S3SigV4QueryAuth(Credentials(*server.credentials), "s3", region, expires=expires)
    when = (at or _now()).replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime", lambda: when):
        signer.add_auth(request)
    return request.prepare().url


@pytest.fixture(scope="module")
def objects(s3: Any) -> str:
    s3.create_bucket(Bucket="sigv4-rules")
    s3.put_object(Bucket="sigv4-rules", Key="source", Body=b"secret source")
    s3.put_object(Bucket="sigv4-rules", Key="public", Body=b"hello")
    return "sigv4-rules"


# ------------------------------------------------------------------ unsigned x-amz-* headers


def test_unsigned_copy_source_added_to_a_signed_put_is_refused(
    shared_server: Any, s3: Any, objects: str
) -> None:
    url = f"{shared_server.url}/{objects}/target"
    request = AWSRequest(method="PUT", url=url, data=b"own body")
    S3SigV4Auth(Credentials(*shared_server.credentials), "s3", "us-east-1").add_auth(request)
    prepared = request.prepare()
    headers = dict(prepared.headers)
    headers["x-amz-copy-source"] = f"/{objects}/source"
    status, body = send(prepared.url, "PUT", headers, prepared.body)
    assert status == 403
    assert xml_field(body, "Code") == "AccessDenied"
    assert xml_field(body, "Message") == (
        "There were headers present in the request which were not signed"
    )
    assert xml_field(body, "HeadersNotSigned") == "x-amz-copy-source"
    with pytest.raises(ClientError):
        s3.head_object(Bucket=objects, Key="target")


def test_unsigned_x_amz_header_on_a_presigned_url_is_refused(
    shared_server: Any, objects: str
) -> None:
    status, body = send(
        presign(shared_server, f"/{objects}/public"), headers={"x-amz-meta-added": "1"}
    )
    assert status == 403
    assert xml_field(body, "HeadersNotSigned") == "x-amz-meta-added"


def test_signed_x_amz_headers_are_accepted(s3: Any, objects: str) -> None:
    s3.put_object(Bucket=objects, Key="meta", Body=b"x", Metadata={"color": "blue"})
    assert s3.head_object(Bucket=objects, Key="meta")["Metadata"] == {"color": "blue"}


# ------------------------------------------------------------------ presigned URLs


def test_presigned_url_works_within_its_expiry(shared_server: Any, objects: str) -> None:
    assert send(presign(shared_server, f"/{objects}/public")) == (200, "hello")


def test_presigned_url_without_x_amz_expires_is_refused(shared_server: Any, objects: str) -> None:
    url = presign(shared_server, f"/{objects}/public")
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "X-Amz-Expires"]
    status, body = send(parts._replace(query=urllib.parse.urlencode(query)).geturl())
    assert status == 400
    assert xml_field(body, "Code") == "AuthorizationQueryParametersError"
    assert "X-Amz-Expires" in xml_field(body, "Message")


def test_presigned_url_expiring_after_more_than_7_days_is_refused(
    shared_server: Any, objects: str
) -> None:
    status, body = send(presign(shared_server, f"/{objects}/public", expires=604801))
    assert status == 400
    assert xml_field(body, "Code") == "AuthorizationQueryParametersError"
    assert xml_field(body, "Message") == (
        "X-Amz-Expires must be less than a week (in seconds); that is, the given "
        "X-Amz-Expires must be less than 604800 seconds"
    )


def test_presigned_url_dated_30_days_ahead_is_not_yet_valid(
    shared_server: Any, objects: str
) -> None:
    url = presign(
        shared_server, f"/{objects}/public", expires=604800, at=_now() + timedelta(days=30)
    )
    status, body = send(url)
    assert status == 403
    assert xml_field(body, "Code") == "AccessDenied"
    assert xml_field(body, "Message") == "Request is not yet valid"


def test_presigned_url_dated_a_few_minutes_ahead_is_accepted(
    shared_server: Any, objects: str
) -> None:
    url = presign(shared_server, f"/{objects}/public", at=_now() + timedelta(minutes=5))
    assert send(url)[0] == 200


def test_presigned_url_past_its_expiry_has_expired(shared_server: Any, objects: str) -> None:
    url = presign(shared_server, f"/{objects}/public", expires=60, at=_now() - timedelta(hours=1))
    status, body = send(url)
    assert status == 403
    assert (xml_field(body, "Code"), xml_field(body, "Message")) == (
        "AccessDenied",
        "Request has expired",
    )
    assert xml_field(body, "X-Amz-Expires") == "60"


@pytest.mark.parametrize("value", ["+60", "6_0", "\u0666\u0660", "-5", "60.0"])
def test_presign_expiry_that_is_not_a_plain_number_is_refused(
    shared_server: Any, objects: str, value: str
) -> None:
    url = presign(shared_server, f"/{objects}/public", expires=60)
    url = url.replace("X-Amz-Expires=60", "X-Amz-Expires=" + urllib.parse.quote(value))
    status, body = send(url)
    assert (status, xml_field(body, "Code")) == (400, "AuthorizationQueryParametersError")


def test_sigv2_presigned_url_living_beyond_a_week_is_refused(
    shared_server: Any, objects: str
) -> None:
    access, secret = shared_server.credentials
    legacy = boto3.client(
        "s3",
        endpoint_url=shared_server.url,
        region_name="us-east-1",
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        config=Config(signature_version="s3"),
    )
    short = legacy.generate_presigned_url(
        "get_object", Params={"Bucket": objects, "Key": "public"}, ExpiresIn=3600
    )
    assert "AWSAccessKeyId=" in short
    assert send(short) == (200, "hello")
    month = legacy.generate_presigned_url(
        "get_object", Params={"Bucket": objects, "Key": "public"}, ExpiresIn=30 * 86400
    )
    status, body = send(month)
    assert (status, xml_field(body, "Code")) == (400, "AuthorizationQueryParametersError")


# ------------------------------------------------------------------ missing date (S3)


def test_s3_request_without_a_date_is_access_denied(shared_server: Any) -> None:
    request = AWSRequest(method="GET", url=shared_server.url + "/")
    S3SigV4Auth(Credentials(*shared_server.credentials), "s3", "us-east-1").add_auth(request)
    headers = {k: v for k, v in request.prepare().headers.items() if k.lower() != "x-amz-date"}
    status, body = send(shared_server.url + "/", headers=headers)
    assert status == 403
    assert (xml_field(body, "Code"), xml_field(body, "Message")) == (
        "AccessDenied",
        "AWS authentication requires a valid Date or x-amz-date header",
    )


# ------------------------------------------------------------------ credential-scope region


def client_in(server: Any, service: str, region: str) -> Any:
    access, secret = server.credentials
    return boto3.client(
        service,
        endpoint_url=server.url,
        region_name=region,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


def test_s3_request_signed_for_another_region_is_refused_with_the_expected_region(
    shared_server: Any,
) -> None:
    request = AWSRequest(method="PUT", url=shared_server.url + "/wrong-region")
    S3SigV4Auth(Credentials(*shared_server.credentials), "s3", "eu-west-1").add_auth(request)
    prepared = request.prepare()
    status, body = send(prepared.url, "PUT", dict(prepared.headers))
    assert status == 400
    assert xml_field(body, "Code") == "AuthorizationHeaderMalformed"
    assert xml_field(body, "Region") == "us-east-1"
    assert xml_field(body, "Message") == (
        "The authorization header is malformed; the region 'eu-west-1' is wrong; "
        "expecting 'us-east-1'"
    )
    with pytest.raises(ClientError):
        client_in(shared_server, "s3", "us-east-1").head_bucket(Bucket="wrong-region")


def test_boto3_s3_client_of_another_region_is_redirected_by_the_expected_region(
    shared_server: Any, objects: str
) -> None:
    """botocore reads <Region> from AuthorizationHeaderMalformed and signs again for it,
    as it does against S3."""
    body = client_in(shared_server, "s3", "eu-west-1").get_object(Bucket=objects, Key="public")
    assert body["Body"].read() == b"hello"


def test_presigned_s3_url_for_another_region_is_refused(shared_server: Any, objects: str) -> None:
    status, body = send(presign(shared_server, f"/{objects}/public", region="eu-west-1"))
    assert status == 400
    assert xml_field(body, "Code") == "AuthorizationQueryParametersError"
    assert xml_field(body, "Region") == "us-east-1"


def test_control_plane_call_signed_for_another_region_is_refused(shared_server: Any) -> None:
    sagemaker = client_in(shared_server, "sagemaker", "eu-west-1")
    with pytest.raises(ClientError) as caught:
        sagemaker.create_model(
            ModelName="wrong-region", PrimaryContainer={"Image": "sagequeue/python"}
        )
    error = caught.value.response["Error"]
    assert error["Code"] == "InvalidSignatureException"
    assert error["Message"].startswith(
        "Credential should be scoped to a valid region, not 'eu-west-1'."
    )
    models = client_in(shared_server, "sagemaker", "us-east-1").list_models()["Models"]
    assert "wrong-region" not in [m["ModelName"] for m in models]


def test_runtime_call_signed_for_another_region_is_refused(shared_server: Any) -> None:
    runtime = client_in(shared_server, "sagemaker-runtime", "eu-west-1")
    with pytest.raises(ClientError) as caught:
        runtime.invoke_endpoint_async(EndpointName="e", InputLocation="s3://b/k")
    assert caught.value.response["Error"]["Code"] == "InvalidSignatureException"


def test_signed_request_for_this_region_by_hand_is_accepted(shared_server: Any) -> None:
    request = AWSRequest(
        method="POST",
        url=shared_server.url + "/",
        data=b"{}",
        headers={"X-Amz-Target": "SageMaker.ListModels"},
    )
    SigV4Auth(Credentials(*shared_server.credentials), "sagemaker", "us-east-1").add_auth(request)
    prepared = request.prepare()
    assert send(prepared.url, "POST", dict(prepared.headers), prepared.body)[0] == 200

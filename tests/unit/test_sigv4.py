"""The SigV4 verifier against botocore's own signers (header and presigned forms,
``sagemaker`` and ``s3``), and each failure it reports."""

from __future__ import annotations

import datetime
import hashlib
from urllib.parse import urlsplit

import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from sagequeue.domain.errors import AuthFailure, SignatureError
from sagequeue.frontdoor.sigv4 import (
    UNSIGNED_PAYLOAD,
    AuthContext,
    SigV4Verifier,
    parse_authorization,
)

ACCESS, SECRET = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
REGION = "us-east-1"
NOW = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=datetime.UTC)


@pytest.fixture(autouse=True)
def frozen_botocore_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore signs with this time (naive UTC, as botocore uses)."""
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: NOW.replace(tzinfo=None))


def verifier(secret: str = SECRET, at: datetime.datetime = NOW) -> SigV4Verifier:
    return SigV4Verifier({ACCESS: secret}, clock=lambda: at.timestamp())


def sign(
    signer_class: type,
    service: str,
    url: str,
    *,
    method: str = "POST",
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    expires: int | None = None,
) -> AWSRequest:
    request = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    credentials = Credentials(ACCESS, SECRET)
    if expires is None:
        signer = signer_class(credentials, service, REGION)
    else:
        signer = signer_class(credentials, service, REGION, expires=expires)
    signer.add_auth(request)
    return request


def verify(
    request: AWSRequest, payload_hash: str | None = None, v: SigV4Verifier | None = None
) -> AuthContext:
    """Feed a signed botocore request to the verifier as the front door would."""
    parts_of_url = urlsplit(request.url)
    headers = {k.lower(): v for k, v in request.headers.items()}
    headers.setdefault("host", parts_of_url.netloc)
    from urllib.parse import parse_qsl

    query = dict(parse_qsl(parts_of_url.query, keep_blank_values=True))
    presign_query = query if "X-Amz-Signature" in query else {}
    parts = parse_authorization(headers, presign_query)
    if payload_hash is None:
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        payload_hash = headers.get("x-amz-content-sha256") or hashlib.sha256(body).hexdigest()
    return (v or verifier()).verify(
        parts, request.method, parts_of_url.path, parts_of_url.query, headers, payload_hash
    )


def failure_of(request: AWSRequest, **kwargs: object) -> AuthFailure:
    with pytest.raises(SignatureError) as caught:
        verify(request, **kwargs)  # type: ignore[arg-type]
    return caught.value.failure


RUNTIME_URL = "http://127.0.0.1:8765/endpoints/my-ep/async-invocations"


def test_sagemaker_header_signature_verifies() -> None:
    request = sign(
        SigV4Auth,
        "sagemaker",
        RUNTIME_URL,
        body=b'{"a": 1}',
        headers={"X-Amzn-SageMaker-InputLocation": "s3://b/k"},
    )
    context = verify(request)
    assert (context.access_key, context.service, context.region) == (ACCESS, "sagemaker", REGION)
    assert not context.presigned


def test_sagemaker_json_control_plane_signature_verifies() -> None:
    request = sign(
        SigV4Auth,
        "sagemaker",
        "http://127.0.0.1:8765/",
        body=b'{"EndpointName": "e"}',
        headers={
            "X-Amz-Target": "SageMaker.DescribeEndpoint",
            "Content-Type": "application/x-amz-json-1.1",
        },
    )
    assert verify(request).service == "sagemaker"


def test_sagemaker_path_with_encoded_characters_verifies() -> None:
    request = sign(
        SigV4Auth,
        "sagemaker",
        "http://127.0.0.1:8765/endpoints/ep/async-invocations/id%20with%2Fslash",
        method="GET",
    )
    assert verify(request).service == "sagemaker"


def test_sagemaker_presigned_url_verifies() -> None:
    request = sign(SigV4QueryAuth, "sagemaker", RUNTIME_URL, method="GET", expires=300)
    assert verify(request, payload_hash=hashlib.sha256(b"").hexdigest()).presigned


def test_s3_header_signature_verifies() -> None:
    request = sign(
        S3SigV4Auth,
        "s3",
        "http://127.0.0.1:8765/bucket/some%20key.txt",
        method="PUT",
        body=b"hello",
        headers={"Content-Type": "text/plain", "x-amz-meta-color": "blue"},
    )
    context = verify(request)
    assert context.service == "s3"
    assert context.payload_hash == hashlib.sha256(b"hello").hexdigest()


def test_s3_presigned_get_verifies() -> None:
    request = sign(
        S3SigV4QueryAuth,
        "s3",
        "http://127.0.0.1:8765/bucket/key?versionId=null",
        method="GET",
        expires=3600,
    )
    assert verify(request, payload_hash=UNSIGNED_PAYLOAD).presigned


def test_missing_signature_is_missing() -> None:
    with pytest.raises(SignatureError) as caught:
        parse_authorization({"host": "h"}, {})
    assert caught.value.failure is AuthFailure.MISSING


def test_wrong_secret_is_mismatch() -> None:
    request = sign(SigV4Auth, "sagemaker", RUNTIME_URL, body=b"x")
    assert failure_of(request, v=verifier(secret="not-the-secret")) is AuthFailure.MISMATCH


def test_tampered_body_is_mismatch() -> None:
    request = sign(SigV4Auth, "sagemaker", RUNTIME_URL, body=b"x")
    assert failure_of(request, payload_hash=hashlib.sha256(b"y").hexdigest()) is (
        AuthFailure.MISMATCH
    )


def test_tampered_signed_header_is_mismatch() -> None:
    request = sign(
        SigV4Auth,
        "sagemaker",
        RUNTIME_URL,
        headers={"X-Amzn-SageMaker-InputLocation": "s3://b/k"},
    )
    request.headers.replace_header("X-Amzn-SageMaker-InputLocation", "s3://b/other")
    assert failure_of(request) is AuthFailure.MISMATCH


def test_unknown_access_key_is_unknown_key() -> None:
    request = sign(SigV4Auth, "sagemaker", RUNTIME_URL)
    other = SigV4Verifier({"SOMEONEELSE": SECRET}, clock=lambda: NOW.timestamp())
    assert failure_of(request, v=other) is AuthFailure.UNKNOWN_KEY


def test_malformed_authorization_is_incomplete() -> None:
    headers = {"authorization": "AWS4-HMAC-SHA256 Credential=x", "x-amz-date": "20260301T120000Z"}
    with pytest.raises(SignatureError) as caught:
        parse_authorization(headers, {})
    assert caught.value.failure is AuthFailure.INCOMPLETE


def test_missing_date_is_missing_date() -> None:
    request = sign(SigV4Auth, "sagemaker", RUNTIME_URL)
    headers = {k.lower(): v for k, v in request.headers.items() if k.lower() != "x-amz-date"}
    with pytest.raises(SignatureError) as caught:
        parse_authorization(headers, {})
    assert caught.value.failure is AuthFailure.MISSING_DATE


def test_other_algorithm_is_incomplete() -> None:
    headers = {"authorization": "AWS AKID:sig", "x-amz-date": "20260301T120000Z"}
    with pytest.raises(SignatureError) as caught:
        parse_authorization(headers, {})
    assert caught.value.failure is AuthFailure.INCOMPLETE


def test_credential_without_scope_is_incomplete() -> None:
    headers = {
        "authorization": "AWS4-HMAC-SHA256 Credential=AKID/20260301/us-east-1, "
        "SignedHeaders=host, Signature=abc",
        "x-amz-date": "20260301T120000Z",
    }
    with pytest.raises(SignatureError) as caught:
        parse_authorization(headers, {})
    assert caught.value.failure is AuthFailure.INCOMPLETE


def test_presign_missing_parameters_is_query_malformed() -> None:
    with pytest.raises(SignatureError) as caught:
        parse_authorization({}, {"X-Amz-Signature": "abc"})
    assert caught.value.failure is AuthFailure.QUERY_MALFORMED


def test_signature_16_minutes_old_is_skewed() -> None:
    request = sign(SigV4Auth, "sagemaker", RUNTIME_URL)
    later = verifier(at=NOW + datetime.timedelta(minutes=16))
    assert failure_of(request, v=later) is AuthFailure.SKEWED


def test_signature_16_minutes_in_the_future_is_skewed() -> None:
    request = sign(SigV4Auth, "sagemaker", RUNTIME_URL)
    earlier = verifier(at=NOW - datetime.timedelta(minutes=16))
    assert failure_of(request, v=earlier) is AuthFailure.SKEWED


def test_signature_14_minutes_old_is_accepted() -> None:
    request = sign(SigV4Auth, "sagemaker", RUNTIME_URL)
    assert verify(request, v=verifier(at=NOW + datetime.timedelta(minutes=14)))


def test_skew_message_names_both_times() -> None:
    request = sign(SigV4Auth, "sagemaker", RUNTIME_URL)
    with pytest.raises(SignatureError) as caught:
        verify(request, v=verifier(at=NOW + datetime.timedelta(hours=1)))
    assert "20260301T120000Z" in caught.value.message
    assert "Signature expired" in caught.value.message


def test_expired_presigned_url_is_expired() -> None:
    request = sign(SigV4QueryAuth, "sagemaker", RUNTIME_URL, method="GET", expires=60)
    late = verifier(at=NOW + datetime.timedelta(seconds=61))
    with pytest.raises(SignatureError) as caught:
        verify(request, payload_hash=hashlib.sha256(b"").hexdigest(), v=late)
    assert caught.value.failure is AuthFailure.EXPIRED


def test_presigned_url_used_hours_later_within_its_expiry_is_accepted() -> None:
    request = sign(S3SigV4QueryAuth, "s3", "http://h/b/k", method="GET", expires=7200)
    later = verifier(at=NOW + datetime.timedelta(hours=1))
    assert verify(request, payload_hash=UNSIGNED_PAYLOAD, v=later).presigned


def test_presign_expiry_over_seven_days_is_query_malformed() -> None:
    request = sign(S3SigV4QueryAuth, "s3", "http://h/b/k", method="GET", expires=604801)
    assert failure_of(request, payload_hash=UNSIGNED_PAYLOAD) is AuthFailure.QUERY_MALFORMED


def test_host_must_be_signed() -> None:
    request = sign(SigV4Auth, "sagemaker", RUNTIME_URL)
    authorization = request.headers["Authorization"].replace(
        "SignedHeaders=host;", "SignedHeaders="
    )
    headers = {k.lower(): v for k, v in request.headers.items()}
    headers["authorization"] = authorization
    parts = parse_authorization(headers, {})
    with pytest.raises(SignatureError) as caught:
        verifier().verify(parts, "POST", "/endpoints/my-ep/async-invocations", "", headers, "x")
    assert caught.value.failure is AuthFailure.INCOMPLETE


def test_signing_key_is_cached_per_scope() -> None:
    v = verifier()
    verify(sign(SigV4Auth, "sagemaker", RUNTIME_URL), v=v)
    verify(sign(SigV4Auth, "sagemaker", RUNTIME_URL, body=b"other"), v=v)
    assert len(v._key_cache) == 1


def test_dates_are_read_as_utc_whatever_the_local_time_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """X-Amz-Date is UTC: a server in a zone observing summer time must not be an hour off."""
    import time

    summer = datetime.datetime(2026, 7, 1, 12, 0, 0, tzinfo=datetime.UTC)
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: summer.replace(tzinfo=None))
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        request = sign(SigV4Auth, "sagemaker", RUNTIME_URL)
        late = verifier(at=summer + datetime.timedelta(minutes=50))
        assert failure_of(request, v=late) is AuthFailure.SKEWED
        assert verify(request, v=verifier(at=summer + datetime.timedelta(minutes=5)))
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


# ------------------------------------------------------------------ scope, presign, S3 headers


def test_scope_naming_another_region_is_wrong_region() -> None:
    request = sign(SigV4Auth, "sagemaker", RUNTIME_URL)
    here = SigV4Verifier({ACCESS: SECRET}, region="eu-west-1", clock=lambda: NOW.timestamp())
    with pytest.raises(SignatureError) as caught:
        verify(request, v=here)
    assert caught.value.failure is AuthFailure.WRONG_REGION
    assert caught.value.extra == {"Region": "eu-west-1"}


def test_scope_naming_this_region_verifies() -> None:
    here = SigV4Verifier({ACCESS: SECRET}, region=REGION, clock=lambda: NOW.timestamp())
    assert verify(sign(SigV4Auth, "sagemaker", RUNTIME_URL), v=here)


def test_presigned_url_dated_beyond_the_skew_is_not_yet_valid() -> None:
    request = sign(S3SigV4QueryAuth, "s3", "http://h/b/k", method="GET", expires=604800)
    earlier = verifier(at=NOW - datetime.timedelta(days=30))
    with pytest.raises(SignatureError) as caught:
        verify(request, payload_hash=UNSIGNED_PAYLOAD, v=earlier)
    assert caught.value.failure is AuthFailure.NOT_YET_VALID


def test_presigned_url_without_expiry_is_query_malformed() -> None:
    request = sign(S3SigV4QueryAuth, "s3", "http://h/b/k", method="GET", expires=60)
    request.url = request.url.replace("X-Amz-Expires=60&", "")
    assert failure_of(request, payload_hash=UNSIGNED_PAYLOAD) is AuthFailure.QUERY_MALFORMED


def test_unsigned_x_amz_header_on_s3_is_headers_not_signed() -> None:
    request = sign(S3SigV4Auth, "s3", "http://127.0.0.1:8765/b/k", method="PUT", body=b"x")
    request.headers["x-amz-copy-source"] = "/b/other"
    with pytest.raises(SignatureError) as caught:
        verify(request)
    assert caught.value.failure is AuthFailure.HEADERS_NOT_SIGNED
    assert caught.value.extra == {"HeadersNotSigned": "x-amz-copy-source"}


def test_unsigned_content_sha256_is_tolerated_on_s3() -> None:
    request = sign(S3SigV4QueryAuth, "s3", "http://h/b/k", method="GET", expires=60)
    request.headers["x-amz-content-sha256"] = UNSIGNED_PAYLOAD
    assert verify(request, payload_hash=UNSIGNED_PAYLOAD).presigned


def test_unsigned_x_amz_headers_are_not_checked_for_sagemaker() -> None:
    request = sign(SigV4Auth, "sagemaker", RUNTIME_URL)
    request.headers["x-amz-extra"] = "1"
    assert verify(request)

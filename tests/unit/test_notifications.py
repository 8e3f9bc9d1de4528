"""SageMaker's notification JSON, topics, webhook signatures and the retry schedule
(sagequeue.domain.notifications), against AWS's documented examples."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from sagequeue.domain.notifications import (
    MAX_INCLUDED_RESPONSE_BYTES,
    RETRY_FIRST_SECONDS,
    RETRY_MAX_SECONDS,
    NotificationConfig,
    Outcome,
    TopicKind,
    event_time,
    model_error_reason,
    notification_config,
    notification_id,
    notification_message,
    retry_delay,
    signature,
    signature_valid,
    topic_form_problem,
    topic_host_problem,
    topic_kind,
)
from sagequeue.ports import InvocationStatus

FIXTURES = Path(__file__).parent.parent / "fixtures" / "notifications"
DOCS_INPUT = "s3://<bucket>/<input-directory>/input-data.csv"
DOCS_OUTPUT = "s3://<bucket>/<output_directory>/prediction.out"
DOCS_ID = "11111111-2222-3333-4444-555555555555"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def message(outcome: Outcome, **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "region": "us-east-1",
        "endpoint_name": "<example-endpoint>",
        "inference_id": DOCS_ID,
        "received_at": epoch("2022-01-25T22:46:00.455Z"),
        "finished_at": epoch("2022-01-25T22:46:00.608Z"),
        "accept": None,
        "content_type": "text/csv",
        "input_location": DOCS_INPUT,
        "output_location": DOCS_OUTPUT,
        "failure_location": "s3://<bucket>/<failure_directory>/prediction-error.out",
        "outcome": outcome,
        "include_response": False,
        **overrides,
    }
    return json.loads(notification_message(**fields))


def test_success_message_is_the_documented_example_field_for_field() -> None:
    got = message(Outcome(InvocationStatus.COMPLETED, content_type="text/csv; charset=utf-8"))

    expected = fixture("aws-docs-success.json")
    assert got == expected
    assert list(got) == list(expected)  # key order, too
    assert list(got["requestParameters"]) == list(expected["requestParameters"])


def test_error_message_is_the_documented_example_with_its_failure_location() -> None:
    got = message(
        Outcome(InvocationStatus.FAILED, failure_reason=model_error_reason(500)), content_type=None
    )

    expected = fixture("aws-docs-error.json")
    failure_location = got.pop("responseParameters")
    assert failure_location == {
        "failureLocation": "s3://<bucket>/<failure_directory>/prediction-error.out"
    }
    assert got == expected
    assert list(got) == list(expected)


def test_error_notification_places_response_parameters_after_request_parameters() -> None:
    got = message(Outcome(InvocationStatus.EXPIRED, failure_reason="expired"))
    keys = list(got)
    assert keys.index("responseParameters") == keys.index("requestParameters") + 1
    assert got["invocationStatus"] == "Expired"
    assert got["failureReason"] == "expired"


def test_accept_comes_before_content_type_as_sagemaker_sends_them() -> None:
    expected = fixture("captured-success-accept.json")
    got = message(
        Outcome(InvocationStatus.COMPLETED, content_type="application/json"),
        endpoint_name="async-embed-endpoint",
        inference_id=expected["inferenceId"],
        received_at=epoch(expected["receivedTime"]),
        finished_at=epoch(expected["eventTime"]),
        accept="application/json",
        content_type="application/json",
        input_location="s3://bucket/input/request.json",
        output_location="s3://bucket/output/result.out",
    )
    assert got == expected
    assert list(got["requestParameters"]) == [
        "accept",
        "contentType",
        "endpointName",
        "inputLocation",
    ]


def test_an_inline_body_request_has_no_input_location() -> None:
    got = message(Outcome(InvocationStatus.COMPLETED), input_location=None)
    assert got["requestParameters"] == {
        "contentType": "text/csv",
        "endpointName": "<example-endpoint>",
    }


def test_a_model_error_is_worded_as_sagemaker_words_it() -> None:
    assert model_error_reason(500) == (
        "ClientError: Received server error (500) from model. See the SageMaker Endpoint logs "
        "in your account for more information."
    )
    assert model_error_reason(400).startswith(
        "ClientError: Received client error (400) from model."
    )


def test_included_success_response_is_base64_content() -> None:
    body = b'{"echo": 1}\x00\xff'
    got = message(
        Outcome(InvocationStatus.COMPLETED, response=body, content_type="application/json"),
        include_response=True,
    )
    assert list(got)[-5:] == [
        "responseBody",
        "inferenceId",
        "eventVersion",
        "eventSource",
        "eventName",
    ]
    assert got["responseBody"] == {
        "content": base64.b64encode(body).decode(),
        "message": "",
        "encoding": "BASE64",
    }


def test_included_error_response_is_the_failure_text() -> None:
    reason = model_error_reason(500)
    got = message(
        Outcome(InvocationStatus.FAILED, failure_reason=reason, response=b"ValueError: boom"),
        include_response=True,
    )
    assert got["responseBody"] == {"content": "ValueError: boom", "message": reason}


def test_response_is_included_only_up_to_128_kb() -> None:
    at_limit = b"x" * MAX_INCLUDED_RESPONSE_BYTES
    over = at_limit + b"x"
    included = message(
        Outcome(InvocationStatus.COMPLETED, response=at_limit), include_response=True
    )
    left_out = message(Outcome(InvocationStatus.COMPLETED, response=over), include_response=True)
    assert "responseBody" in included
    assert "responseBody" not in left_out


def test_response_is_not_included_unless_the_topic_asks_for_it() -> None:
    got = message(Outcome(InvocationStatus.COMPLETED, response=b"r"), include_response=False)
    assert "responseBody" not in got


@pytest.mark.parametrize(
    "seconds,text",
    [
        (epoch("2022-01-25T22:46:00.608Z"), "2022-01-25T22:46:00.608Z"),
        (0.0, "1970-01-01T00:00:00.000Z"),
        (1_700_000_000.9999, "2023-11-14T22:13:20.999Z"),
    ],
)
def test_times_are_utc_with_milliseconds(seconds: float, text: str) -> None:
    assert event_time(seconds) == text


# ------------------------------------------------------------------ config and topics
def endpoint_doc(notification: dict[str, Any], key: str = "_Deployment") -> dict[str, Any]:
    config = {"AsyncInferenceConfig": {"OutputConfig": {"NotificationConfig": notification}}}
    if key == "_Serving":
        return {"_Serving": {"Generation": 1, "Deployment": {"EndpointConfig": config}}}
    return {"_Deployment": {"EndpointConfig": config}}


def test_notification_config_comes_from_the_serving_deployment() -> None:
    doc = endpoint_doc({"SuccessTopic": "http://127.0.0.1:1/new"})
    doc.update(endpoint_doc({"SuccessTopic": "http://127.0.0.1:1/serving"}, "_Serving"))
    config = notification_config(doc)
    assert config is not None and config.success_topic == "http://127.0.0.1:1/serving"


def test_no_topics_means_no_notifications() -> None:
    assert notification_config(endpoint_doc({})) is None
    assert notification_config({}) is None


def test_each_outcome_goes_to_its_topic() -> None:
    config = NotificationConfig(
        "arn:aws:sns:us-east-1:123456789012:ok",
        "http://127.0.0.1:1/err",
        frozenset({"ERROR_NOTIFICATION_TOPIC"}),
    )
    assert config.topic_for(InvocationStatus.COMPLETED) == "arn:aws:sns:us-east-1:123456789012:ok"
    assert config.topic_for(InvocationStatus.FAILED) == "http://127.0.0.1:1/err"
    assert config.topic_for(InvocationStatus.EXPIRED) == "http://127.0.0.1:1/err"
    assert not config.includes_response(InvocationStatus.COMPLETED)
    assert config.includes_response(InvocationStatus.EXPIRED)


@pytest.mark.parametrize(
    "topic,kind",
    [
        ("arn:aws:sns:us-east-1:123456789012:results", TopicKind.SNS),
        ("arn:aws-cn:sns:cn-north-1:123456789012:results.fifo", TopicKind.SNS),
        ("https://hooks.example.com/sagemaker?x=1", TopicKind.WEBHOOK),
        ("HTTP://127.0.0.1:8080/", TopicKind.WEBHOOK),
        ("arn:aws:sqs:us-east-1:123456789012:queue", None),
        ("ftp://example.com/x", None),
    ],
)
def test_topic_kinds(topic: str, kind: TopicKind | None) -> None:
    assert topic_kind(topic) is kind


@pytest.mark.parametrize(
    "topic,problem",
    [
        ("arn:aws:sns:us-east-1:123:short-account", "regular expression pattern"),
        ("not a topic", "regular expression pattern"),
        ("https://", "with a host"),
        ("https://user:pw@hooks.example.com/x", "credentials"),
        ("https://hooks.example.com:99999/x", "valid http(s) URL"),
        ("https://hooks.example.com/x#frag", "fragment"),
        ("https://" + "a" * 2048, "length less than or equal to 2048"),
    ],
)
def test_malformed_topics_are_refused(topic: str, problem: str) -> None:
    found = topic_form_problem(topic)
    assert found is not None and problem in found


def test_a_malformed_arn_gets_the_service_models_constraint_word_for_word() -> None:
    assert topic_form_problem("arn:aws:sns:x") == (
        r"Member must satisfy regular expression pattern: "
        r"arn:aws[a-z\-]*:sns:[a-z0-9\-]*:[0-9]{12}:[a-zA-Z0-9_.-]+"
    )


def test_webhook_hosts_follow_the_allow_list() -> None:
    assert (
        topic_host_problem("https://hooks.example.com/x", ["hooks.example.com"], "0.0.0.0") is None
    )
    assert topic_host_problem("https://hooks.example.com/x", ["*"], "0.0.0.0") is None
    assert topic_host_problem("http://127.0.0.1:9/x", [], "127.0.0.1") is None
    refused = topic_host_problem("http://127.0.0.1:9/x", [], "0.0.0.0")
    assert refused is not None and "notification_allow_hosts" in refused
    refused = topic_host_problem("https://169.254.169.254/latest", [], "127.0.0.1")
    assert refused is not None and "169.254.169.254" in refused


def test_sns_topics_name_no_host_to_allow() -> None:
    assert topic_host_problem("arn:aws:sns:us-east-1:123456789012:t", [], "0.0.0.0") is None


def test_message_ids_are_stable_per_request_outcome_and_topic() -> None:
    first = notification_id("r-1", InvocationStatus.COMPLETED, "http://h/x")
    assert first == notification_id("r-1", InvocationStatus.COMPLETED, "http://h/x")
    assert first != notification_id("r-2", InvocationStatus.COMPLETED, "http://h/x")
    assert first != notification_id("r-1", InvocationStatus.FAILED, "http://h/x")
    assert first != notification_id("r-1", InvocationStatus.COMPLETED, "http://h/y")


# ------------------------------------------------------------------ signatures
def test_signature_verifies_and_binds_id_time_and_body() -> None:
    header = signature("s3cret", "msg-1", 1_700_000_000, b'{"a": 1}')
    assert header.startswith("v1,")
    assert signature_valid("s3cret", "msg-1", 1_700_000_000, b'{"a": 1}', header)
    assert not signature_valid("other", "msg-1", 1_700_000_000, b'{"a": 1}', header)
    assert not signature_valid("s3cret", "msg-2", 1_700_000_000, b'{"a": 1}', header)
    assert not signature_valid("s3cret", "msg-1", 1_700_000_001, b'{"a": 1}', header)
    assert not signature_valid("s3cret", "msg-1", 1_700_000_000, b'{"a": 2}', header)


def test_signature_is_hmac_sha256_of_id_timestamp_and_body() -> None:
    import hashlib
    import hmac

    digest = hmac.new(b"k", b"id.12.body", hashlib.sha256).digest()
    assert signature("k", "id", 12, b"body") == "v1," + base64.b64encode(digest).decode()


def test_whsec_secrets_are_base64_keys() -> None:
    key = b"\x01\x02secret-bytes"
    secret = "whsec_" + base64.b64encode(key).decode()
    import hashlib
    import hmac

    digest = hmac.new(key, b"id.12.body", hashlib.sha256).digest()
    assert signature(secret, "id", 12, b"body") == "v1," + base64.b64encode(digest).decode()


# ------------------------------------------------------------------ retries
def test_retry_pauses_grow_exponentially_with_jitter_up_to_a_cap() -> None:
    assert retry_delay(1, 0.0) == RETRY_FIRST_SECONDS / 2
    assert retry_delay(1, 0.999) < RETRY_FIRST_SECONDS
    assert retry_delay(2, 0.0) == RETRY_FIRST_SECONDS
    assert retry_delay(4, 0.0) == 4 * RETRY_FIRST_SECONDS
    assert retry_delay(40, 0.999) <= RETRY_MAX_SECONDS
    assert retry_delay(40, 0.0) == RETRY_MAX_SECONDS / 2

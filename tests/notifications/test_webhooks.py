"""Webhook notifications end to end: a real ``sagequeue serve``, boto3 clients, and a
webhook receiver run by the tests get SageMaker's notification JSON, field for field, for
a success, a model error, a timeout and an expiry, with IncludeInferenceResponseIn on and
off; a receiver that fails twice gets the message on the third attempt, signed."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from acceptance.helpers import object_exists, read_object, wait_for_status
from conftest import ServerProcess, free_port
from sagequeue.domain.notifications import signature_valid

from .conftest import Delivery, WebhookReceiver, deploy_notifying

FIXTURES = Path(__file__).parent.parent / "fixtures" / "notifications"
DOCUMENTED_KEYS = list(json.loads((FIXTURES / "aws-docs-success.json").read_text()))
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
MODEL_ERROR = (
    "ClientError: Received server error (500) from model. See the SageMaker Endpoint logs in "
    "your account for more information."
)
SECRET = "test-webhook-secret"
EXPIRY_TTL = 60  # the smallest RequestTTLSeconds SageMaker takes


class Module:
    def __init__(self, server: ServerProcess, receiver: WebhookReceiver) -> None:
        self.server = server
        self.receiver = receiver
        self.runtime = server.client("sagemaker-runtime")
        self.s3 = server.client("s3")

    def invoke(self, endpoint: str, request: dict[str, Any], **options: Any) -> dict[str, Any]:
        return self.runtime.invoke_endpoint_async(
            EndpointName=endpoint,
            Body=json.dumps(request).encode(),
            ContentType="application/json",
            **options,
        )


@pytest.fixture(scope="module")
def module(tmp_path_factory: pytest.TempPathFactory, receiver: WebhookReceiver) -> Iterator[Module]:
    root = tmp_path_factory.mktemp("webhooks")
    topics = [
        f"/{name}/{outcome}"
        for name in ("plain", "include", "expiry")
        for outcome in ("success", "error")
    ] + ["/flaky-2/retry"]
    config = root / "sagequeue.yaml"
    config.write_text(
        "webhook_secrets:\n"
        + "".join(f'  "{receiver.url(topic)}": "{SECRET}"\n' for topic in topics)
    )
    server = ServerProcess(root / "data", free_port(), ["--config", str(config)]).start()
    state = Module(server, receiver)
    try:
        for name, include in (("expiry", []), ("plain", []), ("include", ["both"])):
            deploy_notifying(
                server,
                name,
                {
                    "SuccessTopic": receiver.url(f"/{name}/success"),
                    "ErrorTopic": receiver.url(f"/{name}/error"),
                    **(
                        {
                            "IncludeInferenceResponseIn": [
                                "SUCCESS_NOTIFICATION_TOPIC",
                                "ERROR_NOTIFICATION_TOPIC",
                            ]
                        }
                        if include
                        else {}
                    ),
                },
                concurrency=1 if name == "expiry" else 4,
            )
        deploy_notifying(server, "retry", {"SuccessTopic": receiver.url("/flaky-2/retry")})
        yield state
    finally:
        server.kill9()  # the blocker would hold a graceful stop up


def delivery_for(receiver: WebhookReceiver, path: str, inference_id: str, **wait) -> Delivery:
    deadline = time.monotonic() + wait.get("timeout", 30.0)
    while True:
        remaining = max(0.1, deadline - time.monotonic())
        for delivery in receiver.received(path, timeout=remaining):
            if delivery.json["inferenceId"] == inference_id:
                return delivery
        assert time.monotonic() < deadline, f"no notification of {inference_id} on {path}"
        time.sleep(0.05)


def assert_documented_shape(message: dict[str, Any], started: float) -> None:
    """The keys in AWS's order (with failureReason / responseBody where they belong),
    the times in SageMaker's format and in order."""
    expected = [*DOCUMENTED_KEYS]
    if "failureReason" in message:
        expected.insert(expected.index("requestParameters"), "failureReason")
    if "responseBody" in message:
        expected.insert(expected.index("inferenceId"), "responseBody")
    assert list(message) == expected
    assert TIME.fullmatch(message["eventTime"]) and TIME.fullmatch(message["receivedTime"])
    assert message["receivedTime"] <= message["eventTime"]
    started_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(started)))
    assert message["receivedTime"] >= started_text


def assert_signed(delivery: Delivery) -> None:
    headers = delivery.headers
    assert headers["content-type"] == "application/json"
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    assert signature_valid(
        SECRET,
        headers["webhook-id"],
        int(headers["webhook-timestamp"]),
        delivery.body,
        headers["webhook-signature"],
    )


def test_success_notifies_sagemakers_json_after_the_output_is_written(module: Module) -> None:
    module.s3.put_object(Bucket="notify", Key="inputs/hello.json", Body=b'{"value": "hi"}')
    started = time.time()
    response = module.runtime.invoke_endpoint_async(
        EndpointName="plain",
        InputLocation="s3://notify/inputs/hello.json",
        ContentType="application/json",
        Accept="application/json",
        InferenceId="success-1",
    )

    delivery = delivery_for(module.receiver, "/plain/success", "success-1")

    message = delivery.json
    assert message == {
        "awsRegion": "us-east-1",
        "eventTime": message["eventTime"],
        "receivedTime": message["receivedTime"],
        "invocationStatus": "Completed",
        "requestParameters": {
            "accept": "application/json",
            "contentType": "application/json",
            "endpointName": "plain",
            "inputLocation": "s3://notify/inputs/hello.json",
        },
        "responseParameters": {
            "contentType": "application/json",
            "outputLocation": response["OutputLocation"],
        },
        "inferenceId": "success-1",
        "eventVersion": "1.0",
        "eventSource": "aws:sagemaker",
        "eventName": "InferenceResult",
    }
    assert_documented_shape(message, started)
    assert_signed(delivery)
    assert read_object(module.s3, response["OutputLocation"])[0] == b'{"echo": "hi"}'


def test_model_error_notifies_the_error_topic_in_sagemakers_words(module: Module) -> None:
    started = time.time()
    response = module.invoke("plain", {"action": "raise", "message": "bad input"})

    delivery = delivery_for(module.receiver, "/plain/error", response["InferenceId"])

    message = delivery.json
    assert message == {
        "awsRegion": "us-east-1",
        "eventTime": message["eventTime"],
        "receivedTime": message["receivedTime"],
        "invocationStatus": "Failed",
        "failureReason": MODEL_ERROR,
        "requestParameters": {"contentType": "application/json", "endpointName": "plain"},
        "responseParameters": {"failureLocation": response["FailureLocation"]},
        "inferenceId": response["InferenceId"],
        "eventVersion": "1.0",
        "eventSource": "aws:sagemaker",
        "eventName": "InferenceResult",
    }
    assert_documented_shape(message, started)
    assert_signed(delivery)
    assert object_exists(module.s3, response["FailureLocation"])


def test_timeout_notifies_the_error_topic(module: Module) -> None:
    started = time.time()
    response = module.invoke("plain", {"action": "sleep", "seconds": 3}, InvocationTimeoutSeconds=1)

    message = delivery_for(module.receiver, "/plain/error", response["InferenceId"]).json

    assert message["invocationStatus"] == "Failed"
    assert message["failureReason"] == (
        "Model invocation timed out after 1 s (InvocationTimeoutSeconds)"
    )
    assert message["responseParameters"] == {"failureLocation": response["FailureLocation"]}
    assert_documented_shape(message, started)


def test_included_success_response_carries_the_output(module: Module) -> None:
    response = module.invoke("include", {"action": "echo", "value": [1, 2]})

    message = delivery_for(module.receiver, "/include/success", response["InferenceId"]).json

    import base64

    assert message["responseBody"] == {
        "content": base64.b64encode(b'{"echo": [1, 2]}').decode(),
        "message": "",
        "encoding": "BASE64",
    }
    assert list(message)[-5] == "responseBody"
    assert message["responseParameters"]["outputLocation"] == response["OutputLocation"]


def test_included_error_response_carries_the_failure(module: Module) -> None:
    response = module.invoke("include", {"action": "raise", "message": "boom"})

    message = delivery_for(module.receiver, "/include/error", response["InferenceId"]).json

    assert message["failureReason"] == MODEL_ERROR
    assert (
        message["responseBody"]["content"]
        == read_object(module.s3, response["FailureLocation"])[0].decode()
    )
    assert "boom" in message["responseBody"]["content"]


def test_without_include_no_response_body_is_sent(module: Module) -> None:
    response = module.invoke("plain", {"action": "echo", "value": "x"})
    message = delivery_for(module.receiver, "/plain/success", response["InferenceId"]).json
    assert "responseBody" not in message


def test_a_receiver_failing_twice_gets_the_message_on_the_third_attempt(module: Module) -> None:
    response = module.invoke("retry", {"action": "echo", "value": "again"})

    delivery = delivery_for(module.receiver, "/flaky-2/retry", response["InferenceId"])

    assert module.receiver.attempts_on("/flaky-2/retry") == 3  # one id, three attempts
    assert_signed(delivery)
    assert delivery.json["invocationStatus"] == "Completed"
    status = wait_for_status(module.server, "retry", response["InferenceId"])
    assert status["Status"] == "Completed"  # delivery never held the request back


def queued_for(server: ServerProcess, inference_id: str, seconds: float) -> None:
    """Make a queued request look queued ``seconds`` longer: its enqueue time moves back
    in the store (RequestTTLSeconds is at least 60 s, too long for a test to wait)."""
    with sqlite3.connect(server.data_dir / "sagequeue.db", timeout=30) as conn:
        changed = conn.execute(
            "UPDATE invocations SET enqueued_at = enqueued_at - ?, expires_at = expires_at - ? "
            "WHERE inference_id = ? AND status = 'Queued'",
            (seconds, seconds, inference_id),
        ).rowcount
    assert changed == 1, "the request was not queued"


def test_expiry_notifies_the_error_topic(module: Module) -> None:
    # Its one slot, and the one request leased ahead for it, are taken: the next waits.
    for _ in range(2):
        module.invoke("expiry", {"action": "sleep", "seconds": 20})
    expiring = module.invoke(
        "expiry", {"action": "echo", "value": "late"}, RequestTTLSeconds=EXPIRY_TTL
    )
    time.sleep(0.3)
    started = time.time()
    queued_for(module.server, expiring["InferenceId"], EXPIRY_TTL + 1)

    message = delivery_for(module.receiver, "/expiry/error", expiring["InferenceId"]).json

    assert message["invocationStatus"] == "Expired"
    assert message["failureReason"] == (
        f"Request expired: queued longer than RequestTTLSeconds ({EXPIRY_TTL} s)"
    )
    assert message["responseParameters"] == {"failureLocation": expiring["FailureLocation"]}
    assert message["requestParameters"] == {
        "contentType": "application/json",
        "endpointName": "expiry",
    }
    assert_documented_shape(message, started - EXPIRY_TTL - 2)
    successes = module.receiver.received("/expiry/success", timeout=0, count=0)
    assert expiring["InferenceId"] not in [d.json["inferenceId"] for d in successes]

"""SNS topic notifications end to end: sagequeue publishes with boto3 to moto's server
(an independent SNS implementation, the test session's), whose topic delivers
to a subscribed SQS queue, where the test reads SageMaker's notification JSON."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import boto3
import pytest

from acceptance.helpers import wait_for_status
from conftest import ServerProcess, free_port
from sagequeue.notifiers.sns import ID_ATTRIBUTE

from .conftest import deploy_notifying

MOTO_KEYS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def moto_url(moto_endpoint: str) -> str:
    """The session's moto server."""
    return moto_endpoint


def moto_client(service: str, url: str):
    return boto3.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture(scope="module")
def subscribed_queue(moto_url: str) -> tuple[str, str]:
    """(topic ARN, queue URL): an SNS topic with an SQS queue subscribed to it."""
    sns, sqs = moto_client("sns", moto_url), moto_client("sqs", moto_url)
    topic_arn = sns.create_topic(Name="inference-results")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="inference-results")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    return topic_arn, queue_url


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, moto_url: str, subscribed_queue: tuple[str, str]
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("sns")
    process = ServerProcess(
        root / "data",
        free_port(),
        # A missing topic is given up on (and counted) after a second.
        ["--sns-endpoint-url", moto_url, "--notification-retry-for", "1s"],
        env=MOTO_KEYS,
    ).start()
    topic_arn, _ = subscribed_queue
    missing = topic_arn.rsplit(":", 1)[0] + ":no-such-topic"
    deploy_notifying(process, "sns", {"SuccessTopic": topic_arn, "ErrorTopic": missing})
    yield process
    process.stop()


def next_message(moto_url: str, queue_url: str, timeout: float = 30.0) -> dict:
    sqs = moto_client("sqs", moto_url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        received = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1).get("Messages", [])
        if received:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=received[0]["ReceiptHandle"])
            return json.loads(received[0]["Body"])
    raise AssertionError("no message reached the subscribed queue")


def test_success_is_published_to_the_sns_topic_and_reaches_the_queue(
    server: ServerProcess, moto_url: str, subscribed_queue: tuple[str, str]
) -> None:
    topic_arn, queue_url = subscribed_queue
    response = server.client("sagemaker-runtime").invoke_endpoint_async(
        EndpointName="sns",
        Body=json.dumps({"action": "echo", "value": 7}).encode(),
        ContentType="application/json",
        InferenceId="via-sns",
    )

    envelope = next_message(moto_url, queue_url)

    assert envelope["Type"] == "Notification"
    assert envelope["TopicArn"] == topic_arn
    message = json.loads(envelope["Message"])
    assert message == {
        "awsRegion": "us-east-1",
        "eventTime": message["eventTime"],
        "receivedTime": message["receivedTime"],
        "invocationStatus": "Completed",
        "requestParameters": {"contentType": "application/json", "endpointName": "sns"},
        "responseParameters": {
            "contentType": "application/json",
            "outputLocation": response["OutputLocation"],
        },
        "inferenceId": "via-sns",
        "eventVersion": "1.0",
        "eventSource": "aws:sagemaker",
        "eventName": "InferenceResult",
    }
    # The stable id rides along as a message attribute, for deduplication.
    attribute = envelope["MessageAttributes"][ID_ATTRIBUTE]
    assert attribute["Type"] == "String" and len(attribute["Value"]) == 36


def test_an_unreachable_topic_never_fails_the_request(server: ServerProcess) -> None:
    response = server.client("sagemaker-runtime").invoke_endpoint_async(
        EndpointName="sns",
        Body=json.dumps({"action": "raise", "message": "x"}).encode(),
        ContentType="application/json",
    )

    status = wait_for_status(server, "sns", response["InferenceId"])

    assert status["Status"] == "Failed"  # the model's failure, nothing from the topic
    # Given up after the retry period: counted as NotificationFailures of the endpoint.
    counted = 'sagequeue_notification_failures_total{endpoint="sns",variant=""} 1.0'
    deadline = time.monotonic() + 30
    while counted not in (text := metrics_text(server)):
        assert time.monotonic() < deadline, f"no NotificationFailures: {text}"
        time.sleep(0.5)
    assert "NotFound" in server.log_text()


def metrics_text(server: ServerProcess) -> str:
    import urllib.request

    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as response:
        return response.read().decode()

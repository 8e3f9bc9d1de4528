"""NotificationConfig at CreateEndpointConfig through boto3: SNS topic ARNs and allowed
webhook URLs are stored; a malformed ARN or URL, or a webhook host outside the allow-list,
is refused with SageMaker's ValidationException message shape and changes nothing."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

PATH = "asyncInferenceConfig.outputConfig.notificationConfig"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def model(sagemaker: Any) -> str:
    name = unique("notify-model")
    sagemaker.create_model(ModelName=name, PrimaryContainer={"Image": "sagequeue/python"})
    return name


def create(sagemaker: Any, model: str, name: str, notification: dict[str, Any]) -> None:
    sagemaker.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": model,
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
            }
        ],
        AsyncInferenceConfig={
            "OutputConfig": {"S3OutputPath": "s3://results/out", "NotificationConfig": notification}
        },
    )


def refusal(sagemaker: Any, model: str, notification: dict[str, Any]) -> dict[str, str]:
    name = unique("refused")
    with pytest.raises(ClientError) as caught:
        create(sagemaker, model, name, notification)
    with pytest.raises(ClientError):
        sagemaker.describe_endpoint_config(EndpointConfigName=name)  # nothing was stored
    return caught.value.response["Error"]


def test_sns_topics_and_allowed_webhooks_are_stored(sagemaker: Any, model: str) -> None:
    name = unique("notifying")
    notification = {
        "SuccessTopic": "arn:aws:sns:us-east-1:123456789012:results",
        "ErrorTopic": "http://127.0.0.1:9/hooks/errors?source=sagemaker",
        "IncludeInferenceResponseIn": ["ERROR_NOTIFICATION_TOPIC"],
    }
    create(sagemaker, model, name, notification)

    described = sagemaker.describe_endpoint_config(EndpointConfigName=name)
    assert described["AsyncInferenceConfig"]["OutputConfig"]["NotificationConfig"] == notification


def test_a_malformed_topic_arn_is_refused_in_sagemakers_words(sagemaker: Any, model: str) -> None:
    error = refusal(sagemaker, model, {"SuccessTopic": "arn:aws:sns:us-east-1:12:t"})

    assert error["Code"] == "ValidationException"
    assert error["Message"] == (
        "1 validation error detected: Value 'arn:aws:sns:us-east-1:12:t' at "
        f"'{PATH}.successTopic' failed to satisfy constraint: Member must satisfy regular "
        r"expression pattern: arn:aws[a-z\-]*:sns:[a-z0-9\-]*:[0-9]{12}:[a-zA-Z0-9_.-]+"
    )


def test_a_malformed_webhook_url_is_refused(sagemaker: Any, model: str) -> None:
    error = refusal(sagemaker, model, {"ErrorTopic": "https://user:pw@127.0.0.1/x"})

    assert error["Code"] == "ValidationException"
    assert error["Message"].startswith(
        "1 validation error detected: Value 'https://user:pw@127.0.0.1/x' at "
        f"'{PATH}.errorTopic' failed to satisfy constraint: Member must not carry credentials"
    )


def test_a_webhook_host_outside_the_allow_list_is_refused(sagemaker: Any, model: str) -> None:
    error = refusal(
        sagemaker,
        model,
        {
            "SuccessTopic": "https://169.254.169.254/latest/meta-data",
            "ErrorTopic": "https://hooks.example.com/x",
        },
    )

    assert error["Code"] == "ValidationException"
    assert error["Message"].startswith("2 validation errors detected: ")
    assert f"'{PATH}.successTopic'" in error["Message"]
    assert f"'{PATH}.errorTopic'" in error["Message"]
    assert "notification_allow_hosts" in error["Message"]

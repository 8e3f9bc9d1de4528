"""SageMaker asynchronous inference notifications: the topics an endpoint names, the
message each finished request sends (SageMaker's notification JSON, field for field),
how webhook deliveries are signed, and how failed deliveries are retried. Pure: no I/O.

The message format follows AWS's documented examples (SageMaker Developer Guide, "Check
prediction results"; docs/notifications.md lists the sources and the test fixtures in
tests/fixtures/notifications keep them)::

    {"awsRegion": "us-east-1",
     "eventTime": "2022-01-25T22:46:00.608Z",
     "receivedTime": "2022-01-25T22:46:00.455Z",
     "invocationStatus": "Completed",
     "requestParameters": {"contentType": "text/csv", "endpointName": "...",
                           "inputLocation": "s3://..."},
     "responseParameters": {"contentType": "text/csv; charset=utf-8",
                            "outputLocation": "s3://..."},
     "inferenceId": "...", "eventVersion": "1.0", "eventSource": "aws:sagemaker",
     "eventName": "InferenceResult"}

A topic is an SNS topic ARN (as in SageMaker) or, beyond SageMaker, an ``http(s)://``
URL: a webhook that receives the same JSON.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import msgspec

from sagequeue.domain.outbound import host_allowed, refusal
from sagequeue.domain.resources import DEPLOYMENT_KEY, SERVING_KEY
from sagequeue.ports import InvocationStatus

# AsyncInferenceNotificationConfig's SnsTopicArn in the sagemaker service model.
SNS_TOPIC_PATTERN = r"arn:aws[a-z\-]*:sns:[a-z0-9\-]*:[0-9]{12}:[a-zA-Z0-9_.-]+"
_SNS_TOPIC = re.compile(SNS_TOPIC_PATTERN)
MAX_TOPIC_LENGTH = 2048
WEBHOOK_SCHEMES = ("http://", "https://")
# IncludeInferenceResponseIn: "The inference response is included only if the response
# size is less than or equal to 128 KB."
MAX_INCLUDED_RESPONSE_BYTES = 128 * 1024
SUCCESS_NOTIFICATION_TOPIC = "SUCCESS_NOTIFICATION_TOPIC"
ERROR_NOTIFICATION_TOPIC = "ERROR_NOTIFICATION_TOPIC"
ALLOW_HOSTS_SETTING = "notification_allow_hosts"

EVENT_VERSION = "1.0"
EVENT_SOURCE = "aws:sagemaker"
EVENT_NAME = "InferenceResult"

# Stable message ids: a uuid5 of the request, the outcome and the topic, so that a
# request that ran again after a lost finish (an OS crash) notifies under the same id.
_ID_NAMESPACE = uuid.UUID("5b0f7b4e-3c55-4a53-9a0e-6a2f5e4f1c11")

# Failed deliveries are retried after exponentially growing pauses with jitter.
RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 300.0


class TopicKind(StrEnum):
    SNS = "sns"
    WEBHOOK = "webhook"


def topic_kind(topic: str) -> TopicKind | None:
    """What a topic names: an SNS topic ARN, a webhook URL, or (None) neither."""
    if _SNS_TOPIC.fullmatch(topic):
        return TopicKind.SNS
    if topic.lower().startswith(WEBHOOK_SCHEMES):
        return TopicKind.WEBHOOK
    return None


def webhook_url_problem(url: str) -> str | None:
    """Why an http(s):// URL cannot be a webhook (None: it can)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        return f"Member must be a valid http(s) URL ({exc})"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return "Member must be an http(s) URL with a host"
    if parts.username is not None or parts.password is not None:
        return "Member must not carry credentials in the URL (set a webhook secret instead)"
    if parts.fragment or any(c.isspace() for c in url):
        return "Member must be an http(s) URL without a fragment or blanks"
    return None


def topic_form_problem(topic: str) -> str | None:
    """Why a SuccessTopic / ErrorTopic is malformed (None: it is an SNS topic ARN or a
    webhook URL), as the constraint of a ValidationException. A malformed ARN gets the
    service model's pattern constraint, word for word as SageMaker's."""
    if len(topic) > MAX_TOPIC_LENGTH:
        return f"Member must have length less than or equal to {MAX_TOPIC_LENGTH}"
    kind = topic_kind(topic)
    if kind is None:
        return f"Member must satisfy regular expression pattern: {SNS_TOPIC_PATTERN}"
    if kind is TopicKind.WEBHOOK:
        return webhook_url_problem(topic)
    return None


def topic_host_problem(topic: str, allow_hosts: list[str], server_host: str) -> str | None:
    """Why a webhook topic's host may not be used (None: it may, or the topic is an SNS
    topic, which names no host: it is published to the operator's ``--sns-endpoint-url``
    or to AWS's SNS in the ARN's region)."""
    if topic_kind(topic) is not TopicKind.WEBHOOK:
        return None
    host = urlsplit(topic).hostname or ""
    if host_allowed(host, allow_hosts, server_host):
        return None
    return "Member must name an allowed webhook host: " + refusal(
        host, ALLOW_HOSTS_SETTING, server_host
    )


@dataclass(frozen=True, slots=True)
class NotificationConfig:
    """An endpoint's ``AsyncInferenceConfig.OutputConfig.NotificationConfig``."""

    success_topic: str | None = None
    error_topic: str | None = None
    include_response_in: frozenset[str] = frozenset()

    def topic_for(self, status: InvocationStatus) -> str | None:
        return self.success_topic if status is InvocationStatus.COMPLETED else self.error_topic

    def includes_response(self, status: InvocationStatus) -> bool:
        wanted = (
            SUCCESS_NOTIFICATION_TOPIC
            if status is InvocationStatus.COMPLETED
            else ERROR_NOTIFICATION_TOPIC
        )
        return wanted in self.include_response_in


def notification_config(endpoint_doc: dict[str, Any]) -> NotificationConfig | None:
    """The NotificationConfig of the deployment serving an endpoint (the one being
    created while none serves yet); None when it names no topic."""
    serving = endpoint_doc.get(SERVING_KEY) or {}
    deployment = serving.get("Deployment") or endpoint_doc.get(DEPLOYMENT_KEY) or {}
    config = deployment.get("EndpointConfig") or {}
    output = (config.get("AsyncInferenceConfig") or {}).get("OutputConfig") or {}
    notification = output.get("NotificationConfig") or {}
    success = notification.get("SuccessTopic") or None
    error = notification.get("ErrorTopic") or None
    if success is None and error is None:
        return None
    return NotificationConfig(
        success, error, frozenset(notification.get("IncludeInferenceResponseIn") or ())
    )


# ======================================================================================
# The message
# ======================================================================================


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a request ended, as its notification tells it."""

    status: InvocationStatus  # Completed, Failed or Expired
    failure_reason: str | None = None  # in SageMaker's wording where it defines one
    # The response to embed when IncludeInferenceResponseIn asks for it: the model's
    # output (Completed) or the failure object's content (Failed / Expired).
    response: bytes | None = None
    content_type: str | None = None  # the output's content type (Completed)


def model_error_reason(status: int) -> str:
    """SageMaker's failureReason for a model that answered an error status (a handler
    that raised counts as 500, as in SageMaker's serving containers)."""
    side = "client" if 400 <= status < 500 else "server"
    return (
        f"ClientError: Received {side} error ({status}) from model. See the SageMaker "
        "Endpoint logs in your account for more information."
    )


def event_time(epoch_seconds: float) -> str:
    """ISO 8601 in UTC with milliseconds, as SageMaker writes eventTime / receivedTime
    ("2022-01-25T22:46:00.608Z")."""
    millis = int(epoch_seconds * 1000)
    seconds, ms = divmod(millis, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}Z"


def notification_id(request_id: str, status: InvocationStatus, topic: str) -> str:
    """The stable id of one notification (for deduplication by receivers)."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{request_id}\n{status}\n{topic}"))


_encode = msgspec.json.Encoder().encode


def notification_message(
    *,
    region: str,
    endpoint_name: str,
    inference_id: str,
    received_at: float,
    finished_at: float,
    accept: str | None,
    content_type: str | None,
    input_location: str | None,
    output_location: str,
    failure_location: str,
    outcome: Outcome,
    include_response: bool,
) -> bytes:
    """SageMaker's notification JSON for one finished request, keys in AWS's order.

    ``requestParameters`` carries the request's Accept and ContentType only when the
    request gave them, and ``inputLocation`` only for a request that named one (a
    request with an inline Body has no input object). ``responseBody`` is present when
    the topic asked for the response and it is at most 128 KB: the output base64-encoded
    for a success, the failure text for an error."""
    message: dict[str, Any] = {
        "awsRegion": region,
        "eventTime": event_time(finished_at),
        "receivedTime": event_time(received_at),
        "invocationStatus": str(outcome.status),
    }
    completed = outcome.status is InvocationStatus.COMPLETED
    if not completed:
        message["failureReason"] = outcome.failure_reason or ""
    request: dict[str, str] = {}
    if accept is not None:
        request["accept"] = accept
    if content_type is not None:
        request["contentType"] = content_type
    request["endpointName"] = endpoint_name
    if input_location is not None:
        request["inputLocation"] = input_location
    message["requestParameters"] = request
    if completed:
        response: dict[str, str] = {}
        if outcome.content_type is not None:
            response["contentType"] = outcome.content_type
        response["outputLocation"] = output_location
        message["responseParameters"] = response
    else:
        message["responseParameters"] = {"failureLocation": failure_location}
    body = outcome.response
    if include_response and body is not None and len(body) <= MAX_INCLUDED_RESPONSE_BYTES:
        if completed:
            message["responseBody"] = {
                "content": base64.b64encode(body).decode("ascii"),
                "message": "",
                "encoding": "BASE64",
            }
        else:
            message["responseBody"] = {
                "content": body.decode("utf-8", "replace"),
                "message": outcome.failure_reason or "",
            }
    message["inferenceId"] = inference_id
    message["eventVersion"] = EVENT_VERSION
    message["eventSource"] = EVENT_SOURCE
    message["eventName"] = EVENT_NAME
    return _encode(message)


# ======================================================================================
# Webhook signatures (the Standard Webhooks scheme)
# ======================================================================================

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"  # a secret written so is base64 (as Standard Webhooks issues them)


def signing_key(secret: str) -> bytes:
    if secret.startswith(SECRET_PREFIX):
        return base64.b64decode(secret[len(SECRET_PREFIX) :])
    return secret.encode("utf-8")


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``: the id and the time are
    signed with the body, so a receiver can refuse stale and replayed deliveries."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_valid(secret: str, message_id: str, timestamp: int, body: bytes, header: str) -> bool:
    """Whether a ``webhook-signature`` header (space-separated ``v1,<sig>`` values)
    holds the signature of this delivery."""
    expected = signature(secret, message_id, timestamp, body)
    return any(hmac.compare_digest(expected, given) for given in header.split())


# ======================================================================================
# Retries
# ======================================================================================


def retry_delay(attempts: int, draw: float) -> float:
    """The pause before the next attempt after ``attempts`` failed ones: exponential
    from RETRY_FIRST_SECONDS up to RETRY_MAX_SECONDS, with jitter (``draw`` uniform in
    [0, 1) picks from half to all of it)."""
    base = min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2.0 ** max(attempts - 1, 0))
    return base * (0.5 + draw / 2)

"""SNS topics: ``Publish`` of the notification JSON with boto3, to ``--sns-endpoint-url``
or to AWS's SNS in the topic's region. boto3 blocks, so it runs on a thread pool of its
own, never on the event loop."""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sagequeue.config import Settings
from sagequeue.ports import DeliveryError, OutboxMessage

log = logging.getLogger("sagequeue.notify")

# The message attribute that carries the notification's stable id (for deduplication).
ID_ATTRIBUTE = "sagequeue-notification-id"


class SnsNotifier:
    def __init__(self, settings: Settings, *, max_threads: int) -> None:
        self._endpoint_url = settings.sns_endpoint_url
        self._default_region = settings.region
        self._max_threads = max(1, max_threads)
        self._threads: ThreadPoolExecutor | None = None
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()

    async def deliver(self, message: OutboxMessage, timeout: float) -> None:
        if self._threads is None:
            self._threads = ThreadPoolExecutor(
                self._max_threads, thread_name_prefix="sagequeue-sns"
            )
        loop = asyncio.get_running_loop()
        try:
            # A publish that outlives the timeout finishes on its thread; the message is
            # then sent again later (at least once: receivers deduplicate by its id).
            await asyncio.wait_for(
                loop.run_in_executor(self._threads, self._publish, message, timeout), timeout
            )
        except TimeoutError:
            raise DeliveryError(f"SNS {message.topic}: no answer within {timeout:g} s") from None

    def _publish(self, message: OutboxMessage, timeout: float) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        arn = message.topic
        params: dict[str, Any] = {
            "TopicArn": arn,
            "Message": message.body.decode("utf-8"),
            "MessageAttributes": {
                ID_ATTRIBUTE: {"DataType": "String", "StringValue": message.message_id}
            },
        }
        if arn.endswith(".fifo"):
            # FIFO topics deduplicate by this id themselves; one group per endpoint.
            params["MessageDeduplicationId"] = message.message_id
            params["MessageGroupId"] = message.endpoint_name
        try:
            self._client(_region_of(arn) or self._default_region, timeout).publish(**params)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise DeliveryError(
                f"SNS {arn}: {error.get('Code', 'error')}: {error.get('Message', '')}"
            ) from None
        except BotoCoreError as exc:
            raise DeliveryError(f"SNS {arn}: {exc}") from None

    def _client(self, region: str, timeout: float) -> Any:
        with self._clients_lock:
            client = self._clients.get(region)
            if client is None:
                import boto3
                from botocore.config import Config

                config = Config(
                    connect_timeout=min(timeout, 5.0),
                    read_timeout=timeout,
                    retries={"max_attempts": 1},  # the outbox retries, with its own schedule
                )
                client = boto3.session.Session().client(
                    "sns", region_name=region, endpoint_url=self._endpoint_url, config=config
                )
                self._clients[region] = client
            return client

    async def close(self) -> None:
        if self._threads is not None:
            await asyncio.to_thread(self._threads.shutdown, True)
            self._threads = None


def _region_of(arn: str) -> str:
    parts = arn.split(":")
    return parts[3] if len(parts) > 3 else ""

"""Notifier adapters: SNS topics (boto3) and http(s):// webhooks, chosen per topic."""

from __future__ import annotations

from sagequeue.config import Settings
from sagequeue.domain.notifications import TopicKind, topic_kind
from sagequeue.notifiers.sns import SnsNotifier
from sagequeue.notifiers.webhook import WebhookNotifier
from sagequeue.ports import DeliveryError, OutboxMessage


class TopicNotifier:
    """Implements ``Notifier``: each message goes to the adapter its topic names."""

    def __init__(self, settings: Settings, *, max_concurrency: int) -> None:
        self.webhook = WebhookNotifier(settings)
        self.sns = SnsNotifier(settings, max_threads=max_concurrency)

    async def deliver(self, message: OutboxMessage, timeout: float) -> None:
        kind = topic_kind(message.topic)
        if kind is TopicKind.WEBHOOK:
            await self.webhook.deliver(message, timeout)
        elif kind is TopicKind.SNS:
            await self.sns.deliver(message, timeout)
        else:
            raise DeliveryError(
                f"topic {message.topic!r} is neither an SNS topic ARN nor an http(s) URL",
                permanent=True,
            )

    async def close(self) -> None:
        await self.webhook.close()
        await self.sns.close()

"""What a finishing request must notify: its endpoint's NotificationConfig turned into
outbox messages, which ``QueueStore.finish`` records in the finish's own transaction."""

from __future__ import annotations

import time
from collections.abc import Callable

from sagequeue.config import Settings
from sagequeue.domain.notifications import (
    NotificationConfig,
    Outcome,
    notification_config,
    notification_id,
    notification_message,
)
from sagequeue.ports import Invocation, MetadataStore, OutboxMessage, ResourceKind

# An endpoint's NotificationConfig is read at most this often per endpoint: a change
# (UpdateEndpoint) shows in notifications this late.
CONFIG_CACHE_SECONDS = 1.0


class Notices:
    def __init__(
        self,
        metadata: MetadataStore,
        settings: Settings,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._metadata = metadata
        self._region = settings.region
        self._monotonic = monotonic
        # lower-cased endpoint name -> (valid until, its config or None)
        self._configs: dict[str, tuple[float, NotificationConfig | None]] = {}

    async def config_for(self, endpoint_name: str) -> NotificationConfig | None:
        key = endpoint_name.lower()
        now = self._monotonic()
        cached = self._configs.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        resource = await self._metadata.get_resource(ResourceKind.ENDPOINT, endpoint_name)
        config = notification_config(resource.doc) if resource is not None else None
        if len(self._configs) > 10_000:
            self._configs.clear()
        self._configs[key] = (now + CONFIG_CACHE_SECONDS, config)
        return config

    async def messages(
        self, inv: Invocation, outcome: Outcome, finished_at: float
    ) -> list[OutboxMessage]:
        """The notifications of ``inv`` ending with ``outcome`` (none when its endpoint
        names no topic for it)."""
        config = await self.config_for(inv.endpoint_name)
        if config is None:
            return []
        topic = config.topic_for(outcome.status)
        if not topic:
            return []
        body = notification_message(
            region=self._region,
            endpoint_name=inv.endpoint_name,
            inference_id=inv.inference_id,
            received_at=inv.enqueued_at,
            finished_at=finished_at,
            accept=inv.accept,
            content_type=inv.content_type,
            input_location=inv.input_location,
            output_location=inv.output_location,
            failure_location=inv.failure_location,
            outcome=outcome,
            include_response=config.includes_response(outcome.status),
        )
        return [
            OutboxMessage(
                message_id=notification_id(inv.request_id, outcome.status, topic),
                endpoint_name=inv.endpoint_name,
                inference_id=inv.inference_id,
                topic=topic,
                body=body,
                created_at=finished_at,
            )
        ]

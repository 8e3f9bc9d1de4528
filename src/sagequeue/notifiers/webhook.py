"""Webhook topics: ``POST`` of the notification JSON to an http(s):// URL, signed with
the topic's secret (docs/notifications.md)."""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import urlsplit

from sagequeue.config import Settings
from sagequeue.domain.notifications import (
    ALLOW_HOSTS_SETTING,
    ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    signature,
    webhook_url_problem,
)
from sagequeue.domain.outbound import host_allowed, refusal
from sagequeue.ports import DeliveryError, OutboxMessage
from sagequeue.runtimes.http_client import HttpError, request

log = logging.getLogger("sagequeue.notify")

USER_AGENT = "sagequeue-notifications/1"
# A receiver's answer is read up to this much (for the log), then the connection closes.
MAX_ANSWER_BYTES = 4096


class WebhookNotifier:
    def __init__(self, settings: Settings) -> None:
        self._secrets = settings.webhook_secrets
        self._allow_hosts = settings.notification_allow_hosts
        self._server_host = settings.host
        self._unsigned_warned: set[str] = set()

    async def deliver(self, message: OutboxMessage, timeout: float) -> None:
        url = message.topic
        problem = webhook_url_problem(url)
        if problem is not None:
            raise DeliveryError(f"webhook {url}: {problem}", permanent=True)
        host = urlsplit(url).hostname or ""
        # Checked again at each delivery: the allow-list may have changed since the
        # endpoint config was created.
        if not host_allowed(host, self._allow_hosts, self._server_host):
            reason = refusal(host, ALLOW_HOSTS_SETTING, self._server_host)
            raise DeliveryError(f"webhook {url}: {reason}", permanent=True)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            ID_HEADER: message.message_id,
            TIMESTAMP_HEADER: str(timestamp),
        }
        secret = self._secrets.get(url)
        if secret is not None:
            headers[SIGNATURE_HEADER] = signature(
                secret, message.message_id, timestamp, message.body
            )
        elif url not in self._unsigned_warned:
            self._unsigned_warned.add(url)
            log.warning(
                "webhook %s has no secret in webhook_secrets: its deliveries are not signed", url
            )
        try:
            async with asyncio.timeout(timeout):
                response = await request("POST", url, headers, message.body)
                answer = await response.read(MAX_ANSWER_BYTES)
        except TimeoutError:
            raise DeliveryError(f"webhook {url}: no answer within {timeout:g} s") from None
        except (HttpError, OSError, ValueError) as exc:
            raise DeliveryError(f"webhook {url}: {exc}") from None
        if not 200 <= response.status < 300:
            text = answer[:200].decode("utf-8", "replace")
            raise DeliveryError(f"webhook {url}: HTTP {response.status} {text}".rstrip())

    async def close(self) -> None:
        """Nothing kept open: one connection per delivery."""

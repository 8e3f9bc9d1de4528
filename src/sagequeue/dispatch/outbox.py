"""The outbox sender: delivers the notifications that finishes recorded in the store.

Every worker process runs one. Senders lease due messages from the store (one statement,
like invocations), so exactly one process of the fleet delivers a message at a time; a
sender that dies leaves its leases to lapse and another takes the messages over. A failed
delivery is tried again after an exponentially growing pause with jitter, for the retry
period (``--notification-retry-for``), then recorded as failed and counted
(NotificationFailures). Deliveries run as their own tasks, at most ``concurrency`` at a
time and each within ``timeout``: a slow or dead receiver never slows dispatch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from sagequeue.domain.notifications import retry_delay
from sagequeue.ports import Clock, DeliveryError, Notifier, OutboxMessage, OutboxStore

if TYPE_CHECKING:
    from sagequeue.monitoring.recorder import MetricsSink

log = logging.getLogger("sagequeue.notify")

DELIVERY_CONCURRENCY = 32
DELIVERY_TIMEOUT_SECONDS = 10.0
POLL_SECONDS = 1.0  # looks for due messages this often when nothing wakes it
MAX_ERROR_LENGTH = 1024


class OutboxSender:
    def __init__(
        self,
        store: OutboxStore,
        notifier: Notifier,
        clock: Clock,
        owner: Callable[[], str],
        *,
        retry_for: float,
        concurrency: int = DELIVERY_CONCURRENCY,
        timeout: float = DELIVERY_TIMEOUT_SECONDS,
        poll_seconds: float = POLL_SECONDS,
        draw: Callable[[], float] = random.random,
        metrics: MetricsSink | None = None,
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.clock = clock
        self._owner = owner
        self._retry_for = retry_for
        self._concurrency = max(1, concurrency)
        self._timeout = timeout
        # A lease outlives an attempt and the write that settles it.
        self._lease_seconds = 3 * timeout + 5
        self._poll = poll_seconds
        self._draw = draw
        self._metrics = metrics  # NotificationFailures (per endpoint)
        self._wakeup = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="notification sender")

    def wake(self) -> None:
        """A finish recorded notifications: look for due messages now."""
        self._wakeup.set()

    async def stop(self, grace: float) -> None:
        """Deliver what is due now (the last finishes' notifications) for up to ``grace``
        seconds, then stop. Deliveries still under way are cancelled: their leases lapse
        and the messages are sent again later (at least once)."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while loop.time() < deadline:
            leased = await self._lease_and_start()
            if not leased and not self._in_flight:
                break
            if self._in_flight:
                await asyncio.wait(
                    list(self._in_flight),
                    timeout=max(0.0, deadline - loop.time()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
        for task in list(self._in_flight):
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            self._wakeup.clear()
            free = self._concurrency - len(self._in_flight)
            if free > 0 and await self._lease_and_start() == free:
                continue  # there may be more due
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._poll)

    async def _lease_and_start(self) -> int:
        """Lease due messages for the free delivery slots and start delivering them;
        returns how many."""
        free = self._concurrency - len(self._in_flight)
        if free <= 0:
            return 0
        try:
            leased = await self.store.lease_notifications(
                self._owner(), free, self._lease_seconds, self.clock.now()
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("leasing notifications failed")
            return 0
        for message in leased:
            task = asyncio.create_task(self._deliver(message))
            self._in_flight.add(task)
            task.add_done_callback(self._done)
        return len(leased)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._wakeup.set()  # a slot is free

    async def _deliver(self, message: OutboxMessage) -> None:
        owner = message.lease_owner or self._owner()
        try:
            # The adapter keeps to the timeout; this guards against one that does not.
            async with asyncio.timeout(self._timeout + min(1.0, self._timeout)):
                await self.notifier.deliver(message, self._timeout)
        except DeliveryError as exc:
            await self._not_delivered(message, owner, exc.message, exc.permanent)
            return
        except TimeoutError:
            await self._not_delivered(message, owner, "no answer in time", False)
            return
        except Exception as exc:  # a bug in an adapter must not lose the message
            log.exception("delivering notification %s failed", message.message_id)
            await self._not_delivered(message, owner, repr(exc), False)
            return
        try:
            await self.store.notification_delivered(message.message_id, owner, self.clock.now())
        except Exception:
            # Delivered but not recorded: its lease lapses and it is sent again (the
            # receiver sees the same id twice).
            log.exception("recording the delivery of notification %s failed", message.message_id)

    async def _not_delivered(
        self, message: OutboxMessage, owner: str, error: str, permanent: bool
    ) -> None:
        now = self.clock.now()
        error = error[:MAX_ERROR_LENGTH]
        next_attempt = now + retry_delay(message.attempts, self._draw())
        try:
            if permanent or next_attempt > message.created_at + self._retry_for:
                log.warning(
                    "notification %s of %s to %s failed for good after %d attempt(s): %s",
                    message.message_id,
                    message.inference_id,
                    message.topic,
                    message.attempts,
                    error,
                )
                failed = await self.store.notification_failed(message.message_id, owner, now, error)
                if failed and self._metrics is not None:
                    self._metrics.count("NotificationFailures", message.endpoint_name, "")
            else:
                log.info(
                    "notification %s to %s failed (attempt %d): %s; next attempt in %.1f s",
                    message.message_id,
                    message.topic,
                    message.attempts,
                    error,
                    next_attempt - now,
                )
                await self.store.notification_retry(message.message_id, owner, next_attempt, error)
        except Exception:
            log.exception("recording a failed notification attempt failed")

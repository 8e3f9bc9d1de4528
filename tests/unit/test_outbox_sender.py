"""The outbox sender (sagequeue.dispatch.outbox) on the in-memory store with a scripted
notifier: delivery, retries with backoff, giving up after the retry period, bounded
concurrency and timeouts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from sagequeue.dispatch.outbox import OutboxSender
from sagequeue.domain.notifications import retry_delay
from sagequeue.ports import DeliveryError, InvocationStatus, NotificationState, OutboxMessage
from sagequeue.stores.memory import MemoryStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic() + self.offset


class ScriptedNotifier:
    """Fails the first ``failures`` deliveries of each message, then succeeds."""

    def __init__(self, failures: int = 0, *, permanent: bool = False, hang: bool = False) -> None:
        self.failures = failures
        self.permanent = permanent
        self.hang = hang
        self.attempts: dict[str, int] = {}
        self.delivered: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def deliver(self, message: OutboxMessage, timeout: float) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            count = self.attempts[message.message_id] = self.attempts.get(message.message_id, 0) + 1
            if self.hang:
                await asyncio.sleep(3600)
            await asyncio.sleep(0.01)
            if count <= self.failures:
                raise DeliveryError("HTTP 500", permanent=self.permanent)
            self.delivered.append(message.message_id)
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        pass


async def recorded(store: MemoryStore, count: int, *, endpoint: str = "ep") -> list[str]:
    """Finish ``count`` requests whose finishes record one notification each."""
    from sagequeue.ports import Invocation

    ids = []
    for number in range(count):
        inv = Invocation(f"r-{endpoint}-{number}", f"i-{number}", endpoint, "s3://o/x", "s3://f/x")
        await store.enqueue(inv)
        await store.lease(endpoint, "w", 1, 30, time.time())
        message = OutboxMessage(
            f"m-{endpoint}-{number}", endpoint, inv.inference_id, "http://h/x", b"{}", time.time()
        )
        await store.finish(
            inv.request_id,
            "w",
            InvocationStatus.COMPLETED,
            None,
            time.time(),
            notifications=[message],
        )
        ids.append(message.message_id)
    return ids


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def sender(store: MemoryStore, notifier: ScriptedNotifier, clock: Clock, **options) -> OutboxSender:
    options.setdefault("retry_for", 3600.0)
    options.setdefault("poll_seconds", 0.05)
    return OutboxSender(store, notifier, clock, lambda: "worker-1", draw=lambda: 0.0, **options)


async def test_recorded_notifications_are_delivered_and_marked_delivered() -> None:
    store, notifier, clock = MemoryStore(), ScriptedNotifier(), Clock()
    ids = await recorded(store, 3)
    running = sender(store, notifier, clock)
    running.start()
    try:
        await until(lambda: len(notifier.delivered) == 3)
    finally:
        await running.stop(1.0)
    assert sorted(notifier.delivered) == sorted(ids)
    states = [m.state for i in range(3) for m in await store.notifications_of("ep", f"i-{i}")]
    assert states == [NotificationState.DELIVERED] * 3


async def test_a_failed_delivery_is_retried_after_a_backoff_and_then_delivered() -> None:
    store, notifier, clock = MemoryStore(), ScriptedNotifier(failures=2), Clock()
    (message_id,) = await recorded(store, 1)
    running = sender(store, notifier, clock)
    running.start()
    try:
        await until(lambda: notifier.attempts.get(message_id) == 1)
        await asyncio.sleep(0.2)
        assert notifier.attempts[message_id] == 1  # waits for its backoff (0.5 s)
        (pending,) = await store.notifications_of("ep", "i-0")
        assert pending.last_error == "HTTP 500"
        await until(lambda: notifier.delivered == [message_id])
    finally:
        await running.stop(1.0)
    assert notifier.attempts[message_id] == 3


async def test_a_message_failing_past_the_retry_period_is_failed_and_counted() -> None:
    store, notifier, clock = MemoryStore(), ScriptedNotifier(failures=100), Clock()
    (message_id,) = await recorded(store, 1)
    counted: list[tuple[str, str, str]] = []
    sink = type("Sink", (), {"count": lambda self, *key: counted.append(key)})()
    # The next pause (retry_delay(1, 0) = 0.5 s) would end past a 0.3 s retry period.
    running = sender(store, notifier, clock, retry_for=0.3, metrics=sink)
    running.start()
    try:
        await until(lambda: notifier.attempts.get(message_id) == 1)
        for _ in range(100):
            (message,) = await store.notifications_of("ep", "i-0")
            if message.state is NotificationState.FAILED:
                break
            await asyncio.sleep(0.02)
    finally:
        await running.stop(1.0)
    assert message.state is NotificationState.FAILED
    assert message.last_error == "HTTP 500"
    assert await store.notification_failure_counts() == {"ep": 1}
    assert counted == [("NotificationFailures", "ep", "")]  # the metric, per endpoint
    assert notifier.attempts[message_id] == 1


async def test_a_permanent_failure_is_not_retried() -> None:
    store, notifier, clock = MemoryStore(), ScriptedNotifier(failures=1, permanent=True), Clock()
    (message_id,) = await recorded(store, 1)
    running = sender(store, notifier, clock)
    running.start()
    try:
        await until(lambda: bool(notifier.attempts))
        await asyncio.sleep(0.1)
    finally:
        await running.stop(1.0)
    (message,) = await store.notifications_of("ep", "i-0")
    assert message.state is NotificationState.FAILED
    assert notifier.attempts[message_id] == 1


async def test_deliveries_run_at_most_the_concurrency_at_a_time() -> None:
    store, notifier, clock = MemoryStore(), ScriptedNotifier(), Clock()
    await recorded(store, 20)
    running = sender(store, notifier, clock, concurrency=4)
    running.start()
    try:
        await until(lambda: len(notifier.delivered) == 20)
    finally:
        await running.stop(1.0)
    assert notifier.most_in_flight == 4


async def test_a_receiver_that_never_answers_times_out_and_is_retried_later() -> None:
    store, notifier, clock = MemoryStore(), ScriptedNotifier(hang=True), Clock()
    (message_id,) = await recorded(store, 1)
    running = sender(store, notifier, clock, timeout=0.1)
    running.start()
    try:
        await until(lambda: notifier.attempts.get(message_id) == 1)
        await asyncio.sleep(0.5)
    finally:
        await running.stop(0.1)
    (message,) = await store.notifications_of("ep", "i-0")
    assert message.state is NotificationState.PENDING
    assert message.lease_owner is None and message.last_error is not None
    assert message.next_attempt_at > time.time()  # due again after its backoff


async def test_stop_delivers_what_is_due_before_it_returns() -> None:
    store, notifier, clock = MemoryStore(), ScriptedNotifier(), Clock()
    running = sender(store, notifier, clock, poll_seconds=60)
    running.start()
    await asyncio.sleep(0.05)  # the sender is idle, polling slowly
    await recorded(store, 2)  # finished without waking it
    await running.stop(2.0)
    assert len(notifier.delivered) == 2


def test_backoff_schedule_starts_at_half_a_second_with_no_jitter_drawn() -> None:
    assert retry_delay(1, 0.0) == 0.5

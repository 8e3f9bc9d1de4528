"""OutboxStore contract (and ``QueueStore.finish`` with notifications): every backend
must behave exactly like this."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from sagequeue.ports import InvocationStatus, NotificationState, OutboxMessage

from .conftest import Backend, Store
from .test_queue_store import LEASE_SECONDS, NOW, invocation

pytestmark = pytest.mark.anyio

_numbers = itertools.count()


def message(endpoint: str = "ep", inference_id: str = "inf", **fields) -> OutboxMessage:
    number = next(_numbers)
    fields.setdefault("created_at", NOW)
    return OutboxMessage(
        message_id=f"message-{number}",
        endpoint_name=endpoint,
        inference_id=inference_id,
        topic=fields.pop("topic", "http://127.0.0.1:9/hook"),
        body=fields.pop("body", b'{"invocationStatus": "Completed"}'),
        **fields,
    )


async def finished_with(store: Store, *messages: OutboxMessage, endpoint: str = "ep") -> None:
    """Enqueue, lease and finish a request whose finish records ``messages``."""
    inv = invocation(endpoint)
    await store.enqueue(inv)
    await store.lease(endpoint, "worker", 1, LEASE_SECONDS, NOW)
    finished = await store.finish(
        inv.request_id, "worker", InvocationStatus.COMPLETED, None, NOW, notifications=messages
    )
    assert finished


# ------------------------------------------------------------------ finish + outbox
async def test_finish_records_its_notifications_with_every_field(store: Store) -> None:
    sent = message(inference_id="i-1", topic="arn:aws:sns:us-east-1:000000000000:t", body=b"{}")
    await finished_with(store, sent)

    (got,) = await store.notifications_of("ep", "i-1")

    assert (got.message_id, got.endpoint_name, got.inference_id) == (sent.message_id, "ep", "i-1")
    assert (got.topic, got.body, got.created_at) == (sent.topic, b"{}", NOW)
    assert got.state is NotificationState.PENDING
    assert (got.attempts, got.lease_owner, got.finished_at, got.last_error) == (0, None, None, None)
    assert got.next_attempt_at == NOW  # due at once


async def test_refused_finish_records_no_notification(store: Store) -> None:
    inv = invocation()
    await store.enqueue(inv)
    await store.lease("ep", "worker", 1, LEASE_SECONDS, NOW)

    finished = await store.finish(
        inv.request_id,
        "not-the-owner",
        InvocationStatus.COMPLETED,
        None,
        NOW,
        notifications=[message(inference_id=inv.inference_id)],
    )

    assert not finished
    assert await store.notifications_of("ep", inv.inference_id) == []
    assert await store.lease_notifications("sender", 10, LEASE_SECONDS, NOW) == []


async def test_a_message_id_is_recorded_once(store: Store) -> None:
    first = message(inference_id="same")
    again = message(inference_id="same")
    again.message_id = first.message_id
    await finished_with(store, first)
    await finished_with(store, again)

    assert len(await store.notifications_of("ep", "same")) == 1


# ------------------------------------------------------------------ lease
async def test_lease_takes_due_messages_oldest_due_first(store: Store) -> None:
    late, early = message(next_attempt_at=NOW + 5), message(next_attempt_at=NOW + 1)
    await finished_with(store, late, early)

    (first,) = await store.lease_notifications("sender", 1, LEASE_SECONDS, NOW + 10)
    (second,) = await store.lease_notifications("sender", 10, LEASE_SECONDS, NOW + 10)

    assert (first.message_id, second.message_id) == (early.message_id, late.message_id)
    assert all(m.attempts == 1 and m.lease_owner == "sender" for m in (first, second))
    assert first.next_attempt_at == NOW + 10 + LEASE_SECONDS  # when the lease lapses


async def test_messages_not_yet_due_are_not_leased(store: Store) -> None:
    await finished_with(store, message(next_attempt_at=NOW + 30))
    assert await store.lease_notifications("sender", 10, LEASE_SECONDS, NOW + 29) == []


async def test_leased_message_is_not_leased_again_until_the_lease_lapses(store: Store) -> None:
    sent = message()
    await finished_with(store, sent)
    await store.lease_notifications("first", 10, LEASE_SECONDS, NOW)

    assert await store.lease_notifications("second", 10, LEASE_SECONDS, NOW + 1) == []
    (again,) = await store.lease_notifications("second", 10, LEASE_SECONDS, NOW + LEASE_SECONDS)
    assert (again.message_id, again.lease_owner, again.attempts) == (sent.message_id, "second", 2)
    # The first sender's lease is gone: it can no longer settle the message.
    assert not await store.notification_delivered(sent.message_id, "first", NOW + 31)


async def test_lease_with_a_zero_limit_takes_nothing(store: Store) -> None:
    await finished_with(store, message())
    assert await store.lease_notifications("sender", 0, LEASE_SECONDS, NOW) == []


async def test_concurrent_senders_on_separate_handles_never_share_a_message(
    backend: Backend,
) -> None:
    writer = await backend.open()
    sent = [message() for _ in range(300)]
    for chunk in range(0, len(sent), 30):
        await finished_with(writer, *sent[chunk : chunk + 30])
    handles = [writer, await backend.open(), await backend.open()]

    async def sender(handle: Store, owner: str) -> list[str]:
        taken: list[str] = []
        while batch := await handle.lease_notifications(owner, 4, LEASE_SECONDS, NOW):
            taken.extend(m.message_id for m in batch)
        return taken

    results = await asyncio.gather(*(sender(handles[i % 3], f"s-{i}") for i in range(9)))

    leased = [message_id for taken in results for message_id in taken]
    assert len(leased) == len(set(leased)) == 300


# ------------------------------------------------------------------ settle
async def test_delivered_message_is_done(store: Store) -> None:
    sent = message(inference_id="d")
    await finished_with(store, sent)
    await store.lease_notifications("sender", 1, LEASE_SECONDS, NOW)

    assert await store.notification_delivered(sent.message_id, "sender", NOW + 2)

    (got,) = await store.notifications_of("ep", "d")
    assert (got.state, got.finished_at, got.lease_owner) == (
        NotificationState.DELIVERED,
        NOW + 2,
        None,
    )
    assert await store.lease_notifications("sender", 1, LEASE_SECONDS, NOW + 3600) == []


async def test_only_the_lease_owner_settles_a_message(store: Store) -> None:
    sent = message()
    await finished_with(store, sent)
    await store.lease_notifications("sender", 1, LEASE_SECONDS, NOW)

    assert not await store.notification_delivered(sent.message_id, "intruder", NOW)
    assert not await store.notification_retry(sent.message_id, "intruder", NOW, "x")
    assert not await store.notification_failed(sent.message_id, "intruder", NOW, "x")
    assert not await store.notification_delivered("no-such-message", "sender", NOW)


async def test_retried_message_is_due_again_at_the_given_time(store: Store) -> None:
    sent = message(inference_id="r")
    await finished_with(store, sent)
    await store.lease_notifications("sender", 1, LEASE_SECONDS, NOW)

    assert await store.notification_retry(sent.message_id, "sender", NOW + 4, "HTTP 500")

    (got,) = await store.notifications_of("ep", "r")
    assert (got.state, got.lease_owner, got.last_error) == (
        NotificationState.PENDING,
        None,
        "HTTP 500",
    )
    assert await store.lease_notifications("other", 1, LEASE_SECONDS, NOW + 3) == []
    (again,) = await store.lease_notifications("other", 1, LEASE_SECONDS, NOW + 4)
    assert again.attempts == 2


async def test_failed_messages_are_counted_per_endpoint(store: Store) -> None:
    a1, a2, b1 = message("a", "a1"), message("a", "a2"), message("b", "b1")
    await finished_with(store, a1, a2, endpoint="a")
    await finished_with(store, b1, endpoint="b")
    assert await store.notification_failure_counts() == {}
    await store.lease_notifications("sender", 10, LEASE_SECONDS, NOW)

    for sent in (a1, a2, b1):
        assert await store.notification_failed(sent.message_id, "sender", NOW + 9, "gone")
    assert not await store.notification_failed(a1.message_id, "sender", NOW + 9, "twice")

    assert await store.notification_failure_counts() == {"a": 2, "b": 1}
    (got,) = await store.notifications_of("a", "a1")
    assert (got.state, got.finished_at, got.last_error) == (
        NotificationState.FAILED,
        NOW + 9,
        "gone",
    )
    assert await store.lease_notifications("sender", 10, LEASE_SECONDS, NOW + 3600) == []


# ------------------------------------------------------------------ purge
async def test_purge_deletes_settled_messages_past_their_cutoffs(store: Store) -> None:
    delivered_old, delivered_new = message(inference_id="do"), message(inference_id="dn")
    failed_old, pending = message(inference_id="fo"), message(inference_id="p")
    await finished_with(store, delivered_old, delivered_new, failed_old, pending)
    await store.lease_notifications("s", 3, LEASE_SECONDS, NOW)  # the first three
    await store.notification_delivered(delivered_old.message_id, "s", NOW + 1)
    await store.notification_delivered(delivered_new.message_id, "s", NOW + 100)
    await store.notification_failed(failed_old.message_id, "s", NOW + 1, "gone")

    # Delivered ones before NOW + 50, failed ones before NOW + 2.
    assert await store.purge_notifications(NOW + 50, NOW + 2, 100) == 2

    assert await store.notifications_of("ep", "do") == []
    assert await store.notifications_of("ep", "fo") == []
    assert len(await store.notifications_of("ep", "dn")) == 1
    assert len(await store.notifications_of("ep", "p")) == 1
    assert await store.notification_failure_counts() == {"ep": 1}  # counts stay


async def test_purge_keeps_failed_messages_until_their_own_cutoff(store: Store) -> None:
    failed = message(inference_id="f")
    await finished_with(store, failed)
    await store.lease_notifications("s", 1, LEASE_SECONDS, NOW)
    await store.notification_failed(failed.message_id, "s", NOW + 1, "gone")

    assert await store.purge_notifications(NOW + 3600, NOW, 100) == 0
    assert len(await store.notifications_of("ep", "f")) == 1


async def test_purge_removes_at_most_the_limit(store: Store) -> None:
    sent = [message() for _ in range(5)]
    await finished_with(store, *sent)
    await store.lease_notifications("s", 5, LEASE_SECONDS, NOW)
    for m in sent:
        await store.notification_delivered(m.message_id, "s", NOW)

    assert await store.purge_notifications(NOW + 1, NOW + 1, 3) == 3
    assert await store.purge_notifications(NOW + 1, NOW + 1, 3) == 2


# ------------------------------------------------------------------ durability
async def test_outbox_survives_close_and_reopen(durable_backend: Backend) -> None:
    first = await durable_backend.open()
    sent = message(inference_id="kept")
    await finished_with(first, sent)
    await first.close()

    second = await durable_backend.open()
    (leased,) = await second.lease_notifications("after-restart", 1, LEASE_SECONDS, NOW)
    assert (leased.message_id, leased.body) == (sent.message_id, sent.body)


async def test_sqlite_outbox_queries_search_indices_instead_of_scanning(
    durable_backend: Backend, tmp_path: Path
) -> None:
    if durable_backend.name != "sqlite":
        pytest.skip("SQLite query plans")
    import sqlite3

    from sagequeue.stores import sqlite as sqlite_store

    await durable_backend.open()
    conn = sqlite3.connect(tmp_path / "sagequeue.db")
    for name in ("_LEASE_OUTBOX", "_OUTBOX_DELIVERED", "_OUTBOX_RETRY", "_PURGE_OUTBOX"):
        sql = getattr(sqlite_store, name)
        plan = conn.execute("EXPLAIN QUERY PLAN " + sql, [None] * sql.count("?")).fetchall()
        details = [row[3] for row in plan]
        assert not [d for d in details if d.startswith("SCAN")], (name, details)
    conn.close()

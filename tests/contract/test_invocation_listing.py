"""QueueStore.list_invocations contract: an endpoint's invocations newest first, by status,
in keyset pages (the console's recent invocations). Every backend behaves like this."""

from __future__ import annotations

from pathlib import Path

import pytest

from sagequeue.ports import InvocationStatus

from .conftest import Backend, Store
from .test_queue_store import LEASE_SECONDS, NOW, enqueue_all, invocation

pytestmark = pytest.mark.anyio


async def finished(store: Store, *statuses: InvocationStatus) -> list[str]:
    """One invocation of endpoint "ep" per status given, in that order; their ids. (The
    ones left queued are of another variant, so that each lease takes the one just sent.)"""
    ids = []
    for status in statuses:
        queued = status is InvocationStatus.QUEUED
        inv = invocation(inline_body=b"x" * 1000, variant_name="idle" if queued else "run")
        await store.enqueue(inv)
        ids.append(inv.inference_id)
        if queued:
            continue
        (leased,) = await store.lease("ep", "w", 1, LEASE_SECONDS, NOW, variant_name="run")
        assert leased.request_id == inv.request_id
        if status is not InvocationStatus.IN_PROGRESS:
            reason = None if status is InvocationStatus.COMPLETED else "why"
            assert await store.finish(inv.request_id, "w", status, reason, NOW + 1)
    return ids


async def test_listing_is_newest_first(store: Store) -> None:
    sent = await enqueue_all(store, *(invocation() for _ in range(5)))

    page = await store.list_invocations("ep")

    assert [inv.inference_id for inv in page] == [inv.inference_id for inv in reversed(sent)]
    assert [inv.seq for inv in page] == sorted((inv.seq for inv in page), reverse=True)


async def test_listing_is_scoped_to_the_endpoint(store: Store) -> None:
    mine = await enqueue_all(store, invocation("ep"), invocation("ep"))
    await enqueue_all(store, invocation("other"))

    page = await store.list_invocations("ep")

    assert {inv.inference_id for inv in page} == {inv.inference_id for inv in mine}


async def test_listing_reads_every_field_but_the_request_body(store: Store) -> None:
    ids = await finished(store, InvocationStatus.FAILED)

    (listed,) = await store.list_invocations("ep")

    assert listed.inference_id == ids[0]
    assert listed.status is InvocationStatus.FAILED
    assert listed.failure_reason == "why"
    assert (listed.enqueued_at, listed.started_at, listed.finished_at) == (NOW, NOW, NOW + 1)
    assert listed.attempts == 1
    assert listed.output_location.startswith("s3://out/")
    assert listed.inline_body is None  # never read by a listing


async def test_listing_filters_by_status(store: Store) -> None:
    statuses = [
        InvocationStatus.COMPLETED,
        InvocationStatus.FAILED,
        InvocationStatus.COMPLETED,
        InvocationStatus.IN_PROGRESS,
        InvocationStatus.QUEUED,
    ]
    ids = await finished(store, *statuses)

    completed = await store.list_invocations("ep", status=InvocationStatus.COMPLETED)
    failed = await store.list_invocations("ep", status=InvocationStatus.FAILED)
    queued = await store.list_invocations("ep", status=InvocationStatus.QUEUED)
    expired = await store.list_invocations("ep", status=InvocationStatus.EXPIRED)

    assert [inv.inference_id for inv in completed] == [ids[2], ids[0]]
    assert [inv.inference_id for inv in failed] == [ids[1]]
    assert [inv.inference_id for inv in queued] == [ids[4]]
    assert expired == []
    mixed = await store.list_invocations("ep")
    assert [inv.status for inv in mixed] == list(reversed(statuses))


@pytest.mark.parametrize("status", [None, InvocationStatus.COMPLETED])
async def test_keyset_pages_cover_every_invocation_once_in_order(
    store: Store, status: InvocationStatus | None
) -> None:
    ids = await finished(
        store, *[InvocationStatus.COMPLETED, InvocationStatus.QUEUED] * 3, InvocationStatus.FAILED
    )
    expected = [
        inference_id
        for inference_id, inv_status in zip(
            ids,
            [InvocationStatus.COMPLETED, InvocationStatus.QUEUED] * 3 + [InvocationStatus.FAILED],
            strict=True,
        )
        if status is None or inv_status is status
    ][::-1]

    seen: list[str] = []
    before = None
    while True:
        page = await store.list_invocations("ep", status=status, before_seq=before, limit=2)
        assert len(page) <= 2
        if not page:
            break
        seen += [inv.inference_id for inv in page]
        before = page[-1].seq

    assert seen == expected


async def test_listing_takes_at_most_the_limit_and_nothing_for_zero(store: Store) -> None:
    await enqueue_all(store, *(invocation() for _ in range(4)))

    assert len(await store.list_invocations("ep", limit=3)) == 3
    assert await store.list_invocations("ep", limit=0) == []


async def test_listing_an_endpoint_without_invocations_is_empty(store: Store) -> None:
    await enqueue_all(store, invocation("ep"))

    assert await store.list_invocations("nothing-here") == []


async def test_sqlite_listing_searches_an_index_for_every_status(
    durable_backend: Backend, tmp_path: Path
) -> None:
    """No plan of a listing page reads the table in full nor sorts it (the merge of the
    statuses' newest seqs works on at most five pages)."""
    if durable_backend.name != "sqlite":
        pytest.skip("SQLite query plans (PostgreSQL's: tests/integration)")
    import sqlite3

    from sagequeue.stores import sqlite as sqlite_store

    await durable_backend.open()  # creates the schema
    conn = sqlite3.connect(tmp_path / "sagequeue.db")
    for name in ("_LIST_BY_STATUS", "_LIST_SEQS"):
        sql = getattr(sqlite_store, name)
        plan = conn.execute("EXPLAIN QUERY PLAN " + sql, [None] * sql.count("?")).fetchall()
        details = [row[3] for row in plan]
        searches = [d for d in details if d.startswith("SEARCH invocations")]
        assert searches and all("invocations_by_status" in d for d in searches), (name, details)
        assert not [d for d in details if d.startswith("SCAN invocations")], (name, details)
        assert not [d for d in details if "TEMP B-TREE" in d], (name, details)
    conn.close()

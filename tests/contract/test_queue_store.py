"""QueueStore contract: every backend must behave exactly like this."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from conftest import release_together
from sagequeue.ports import Invocation, InvocationStatus

from .conftest import Backend, Store

pytestmark = pytest.mark.anyio

NOW = 1_700_000_000.0
LEASE_SECONDS = 30.0
_inference_numbers = itertools.count()


def invocation(endpoint: str = "ep", inference_id: str | None = None, **fields) -> Invocation:
    request_id = str(uuid.uuid4())
    fields.setdefault("enqueued_at", NOW)
    return Invocation(
        request_id=request_id,
        inference_id=inference_id or f"inference-{next(_inference_numbers)}",
        endpoint_name=endpoint,
        output_location=f"s3://out/{request_id}.out",
        failure_location=f"s3://failures/{request_id}-error.out",
        **fields,
    )


async def enqueue_all(store: Store, *invocations: Invocation) -> list[Invocation]:
    for inv in invocations:
        await store.enqueue(inv)
    return list(invocations)


# ------------------------------------------------------------------------- enqueue / get
async def test_enqueued_invocation_reads_back_with_every_field(store: Store) -> None:
    sent = invocation(
        input_location="s3://in/payload.json",
        inline_body=b"\x00\x01binary",
        content_type="application/json",
        accept="text/csv",
        custom_attributes="trace=1",
        request_ttl_seconds=120,
        invocation_timeout_seconds=60,
    )
    await store.enqueue(sent)

    got = await store.get("ep", sent.inference_id)

    assert got is not None
    assert got.status is InvocationStatus.QUEUED
    assert (got.request_id, got.output_location, got.failure_location) == (
        sent.request_id,
        sent.output_location,
        sent.failure_location,
    )
    assert got.input_location == "s3://in/payload.json"
    assert got.inline_body == b"\x00\x01binary"
    assert (got.content_type, got.accept, got.custom_attributes) == (
        "application/json",
        "text/csv",
        "trace=1",
    )
    assert (got.request_ttl_seconds, got.invocation_timeout_seconds) == (120, 60)
    assert got.enqueued_at == NOW
    assert got.expires_at == NOW + 120
    assert (got.attempts, got.lease_owner, got.started_at, got.finished_at) == (0, None, None, None)


async def test_enqueue_assigns_increasing_seq(store: Store) -> None:
    first, second = await enqueue_all(store, invocation(), invocation())
    assert first.seq is not None and second.seq is not None
    assert first.seq < second.seq


async def test_get_unknown_inference_id_is_none(store: Store) -> None:
    await store.enqueue(invocation(inference_id="known"))
    assert await store.get("ep", "unknown") is None


async def test_get_returns_newest_invocation_with_that_inference_id(store: Store) -> None:
    _, newer = await enqueue_all(
        store, invocation(inference_id="same"), invocation(inference_id="same")
    )
    got = await store.get("ep", "same")
    assert got is not None and got.request_id == newer.request_id


async def test_get_is_scoped_to_the_endpoint(store: Store) -> None:
    await store.enqueue(invocation(endpoint="other", inference_id="id-1"))
    assert await store.get("ep", "id-1") is None


async def test_duplicate_request_id_is_refused_without_failing_concurrent_enqueues(
    store: Store,
) -> None:
    original = invocation()
    await store.enqueue(original)
    duplicate = invocation()
    duplicate.request_id = original.request_id
    others = [invocation() for _ in range(20)]

    results = await asyncio.gather(
        *(store.enqueue(inv) for inv in [*others[:10], duplicate, *others[10:]]),
        return_exceptions=True,
    )

    assert isinstance(results[10], Exception)
    assert [r for i, r in enumerate(results) if i != 10] == [None] * 20
    for inv in others:
        assert await store.get("ep", inv.inference_id) is not None


async def test_concurrent_enqueues_are_all_recorded(store: Store) -> None:
    sent = [invocation() for _ in range(300)]
    await asyncio.gather(*(store.enqueue(inv) for inv in sent))
    assert len({inv.seq for inv in sent}) == 300
    assert (await store.count_by_status("ep"))["Queued"] == 300


# ------------------------------------------------------------------------------- lease
async def test_lease_returns_oldest_queued_first(store: Store) -> None:
    sent = await enqueue_all(store, *(invocation() for _ in range(5)))
    leased = await store.lease("ep", "w1", 3, LEASE_SECONDS, NOW)
    assert [inv.request_id for inv in leased] == [inv.request_id for inv in sent[:3]]


async def test_lease_is_fifo_per_endpoint(store: Store) -> None:
    a1, b1, a2, b2 = await enqueue_all(
        store, invocation("a"), invocation("b"), invocation("a"), invocation("b")
    )
    leased_a = await store.lease("a", "w1", 10, LEASE_SECONDS, NOW)
    leased_b = await store.lease("b", "w1", 10, LEASE_SECONDS, NOW)
    assert [inv.request_id for inv in leased_a] == [a1.request_id, a2.request_id]
    assert [inv.request_id for inv in leased_b] == [b1.request_id, b2.request_id]


async def test_lease_marks_invocations_in_progress_for_the_owner(store: Store) -> None:
    sent = await enqueue_all(store, invocation())
    (leased,) = await store.lease("ep", "w1", 1, LEASE_SECONDS, NOW + 5)
    assert leased.status is InvocationStatus.IN_PROGRESS
    assert leased.lease_owner == "w1"
    assert leased.lease_expires_at == NOW + 5 + LEASE_SECONDS
    assert leased.started_at == NOW + 5
    assert leased.attempts == 1
    stored = await store.get("ep", sent[0].inference_id)
    assert stored is not None and stored.status is InvocationStatus.IN_PROGRESS


async def test_leased_invocation_is_not_leased_again(store: Store) -> None:
    await enqueue_all(store, invocation(), invocation())
    first = await store.lease("ep", "w1", 1, LEASE_SECONDS, NOW)
    second = await store.lease("ep", "w2", 5, LEASE_SECONDS, NOW)
    assert len(first) == 1 and len(second) == 1
    assert first[0].request_id != second[0].request_id
    assert await store.lease("ep", "w3", 5, LEASE_SECONDS, NOW) == []


async def test_lease_with_a_zero_limit_takes_nothing(store: Store) -> None:
    await enqueue_all(store, invocation())
    assert await store.lease("ep", "w1", 0, LEASE_SECONDS, NOW) == []
    assert await store.lease_overdue("w1", 0, LEASE_SECONDS, NOW + 10**6) == []


async def test_lease_also_returns_invocations_past_their_ttl(store: Store) -> None:
    """The caller (dispatcher) checks expires_at and finishes those Expired."""
    (old,) = await enqueue_all(store, invocation(request_ttl_seconds=60))
    (leased,) = await store.lease("ep", "w1", 1, LEASE_SECONDS, NOW + 3600)
    assert leased.request_id == old.request_id
    assert leased.expires_at < NOW + 3600


async def test_concurrent_leasers_on_separate_handles_never_share_an_invocation(
    backend: Backend,
) -> None:
    writer = await backend.open()
    sent = [invocation() for _ in range(400)]
    await asyncio.gather(*(writer.enqueue(inv) for inv in sent))
    handles = [writer, await backend.open(), await backend.open()]

    async def leaser(handle: Store, owner: str) -> list[str]:
        taken: list[str] = []
        while batch := await handle.lease("ep", owner, 3, LEASE_SECONDS, NOW):
            taken.extend(inv.request_id for inv in batch)
        return taken

    results = await asyncio.gather(*(leaser(handles[i % 3], f"worker-{i}") for i in range(12)))

    leased = [request_id for taken in results for request_id in taken]
    assert len(leased) == len(set(leased)) == 400


# ------------------------------------------------------------------------- lease_overdue
async def test_lease_overdue_takes_only_invocations_past_their_ttl(store: Store) -> None:
    short, _long = await enqueue_all(
        store, invocation("a", request_ttl_seconds=60), invocation("a", request_ttl_seconds=600)
    )
    overdue = await store.lease_overdue("sweeper", 10, LEASE_SECONDS, NOW + 61)
    assert [inv.request_id for inv in overdue] == [short.request_id]
    assert overdue[0].status is InvocationStatus.IN_PROGRESS
    assert overdue[0].lease_owner == "sweeper"


async def test_lease_overdue_spans_endpoints(store: Store) -> None:
    await enqueue_all(
        store, invocation("a", request_ttl_seconds=60), invocation("b", request_ttl_seconds=60)
    )
    overdue = await store.lease_overdue("sweeper", 10, LEASE_SECONDS, NOW + 61)
    assert sorted(inv.endpoint_name for inv in overdue) == ["a", "b"]


async def test_lease_overdue_skips_invocations_already_in_progress(store: Store) -> None:
    await enqueue_all(store, invocation(request_ttl_seconds=60))
    await store.lease("ep", "w1", 1, LEASE_SECONDS, NOW)
    assert await store.lease_overdue("sweeper", 10, LEASE_SECONDS, NOW + 61) == []


async def test_lease_overdue_respects_limit(store: Store) -> None:
    await enqueue_all(store, *(invocation(request_ttl_seconds=60) for _ in range(5)))
    overdue = await store.lease_overdue("sweeper", 2, LEASE_SECONDS, NOW + 61)
    assert len(overdue) == 2


# ------------------------------------------------------------------------------- renew
async def test_renew_extends_the_owners_lease(store: Store) -> None:
    (sent,) = await enqueue_all(store, invocation())
    await store.lease("ep", "w1", 1, LEASE_SECONDS, NOW)
    await store.renew([sent.request_id], "w1", NOW + 500)
    assert await store.requeue_lapsed(NOW + 100) == 0
    got = await store.get("ep", sent.inference_id)
    assert got is not None and got.lease_expires_at == NOW + 500


async def test_renew_by_another_owner_changes_nothing(store: Store) -> None:
    (sent,) = await enqueue_all(store, invocation())
    await store.lease("ep", "w1", 1, LEASE_SECONDS, NOW)
    await store.renew([sent.request_id], "w2", NOW + 500)
    got = await store.get("ep", sent.inference_id)
    assert got is not None and got.lease_expires_at == NOW + LEASE_SECONDS


# ------------------------------------------------------------------------------ finish
async def test_finish_by_the_owner_records_the_final_status(store: Store) -> None:
    (sent,) = await enqueue_all(store, invocation())
    await store.lease("ep", "w1", 1, LEASE_SECONDS, NOW)
    assert await store.finish(sent.request_id, "w1", InvocationStatus.FAILED, "boom", NOW + 7)
    got = await store.get("ep", sent.inference_id)
    assert got is not None
    assert (got.status, got.failure_reason, got.finished_at) == (
        InvocationStatus.FAILED,
        "boom",
        NOW + 7,
    )


async def test_finish_by_a_non_owner_is_refused(store: Store) -> None:
    (sent,) = await enqueue_all(store, invocation())
    await store.lease("ep", "w1", 1, LEASE_SECONDS, NOW)
    assert not await store.finish(sent.request_id, "w2", InvocationStatus.COMPLETED, None, NOW)
    got = await store.get("ep", sent.inference_id)
    assert got is not None and got.status is InvocationStatus.IN_PROGRESS


async def test_finish_twice_is_refused(store: Store) -> None:
    (sent,) = await enqueue_all(store, invocation())
    await store.lease("ep", "w1", 1, LEASE_SECONDS, NOW)
    assert await store.finish(sent.request_id, "w1", InvocationStatus.COMPLETED, None, NOW)
    assert not await store.finish(sent.request_id, "w1", InvocationStatus.FAILED, "x", NOW)
    got = await store.get("ep", sent.inference_id)
    assert got is not None and got.status is InvocationStatus.COMPLETED


async def test_finish_of_a_queued_invocation_is_refused(store: Store) -> None:
    (sent,) = await enqueue_all(store, invocation())
    assert not await store.finish(sent.request_id, "w1", InvocationStatus.COMPLETED, None, NOW)


async def test_finish_with_a_non_final_status_is_an_error(store: Store) -> None:
    (sent,) = await enqueue_all(store, invocation())
    await store.lease("ep", "w1", 1, LEASE_SECONDS, NOW)
    with pytest.raises(Exception, match="final status"):
        await store.finish(sent.request_id, "w1", InvocationStatus.QUEUED, None, NOW)


async def test_finished_invocation_is_not_leased_again(store: Store) -> None:
    (sent,) = await enqueue_all(store, invocation())
    await store.lease("ep", "w1", 1, LEASE_SECONDS, NOW)
    await store.finish(sent.request_id, "w1", InvocationStatus.EXPIRED, "ttl", NOW)
    assert await store.lease("ep", "w1", 1, LEASE_SECONDS, NOW) == []
    assert await store.requeue_lapsed(NOW + 10 * LEASE_SECONDS) == 0


# ----------------------------------------------------------------------------- release
async def test_release_puts_the_invocation_back_at_its_place_in_the_queue(store: Store) -> None:
    first, second = await enqueue_all(store, invocation(), invocation())
    await store.lease("ep", "w1", 1, LEASE_SECONDS, NOW)
    assert await store.release(first.request_id, "w1")
    releases = await store.lease("ep", "w2", 2, LEASE_SECONDS, NOW)
    assert [inv.request_id for inv in releases] == [first.request_id, second.request_id]
    assert releases[0].attempts == 2  # attempts are kept


async def test_release_of_an_unattempted_lease_does_not_count_an_attempt(store: Store) -> None:
    """Leased ahead of a free slot and given back unstarted: its next lease is still its
    first attempt, so the crash limit counts only what a model actually ran."""
    (sent,) = await enqueue_all(store, invocation())
    await store.lease("ep", "w1", 1, LEASE_SECONDS, NOW)
    assert await store.release(sent.request_id, "w1", attempted=False)
    (again,) = await store.lease("ep", "w2", 1, LEASE_SECONDS, NOW)
    assert again.request_id == sent.request_id
    assert again.attempts == 1


async def test_release_by_a_non_owner_is_refused(store: Store) -> None:
    (sent,) = await enqueue_all(store, invocation())
    await store.lease("ep", "w1", 1, LEASE_SECONDS, NOW)
    assert not await store.release(sent.request_id, "w2")
    got = await store.get("ep", sent.inference_id)
    assert got is not None and got.lease_owner == "w1"


# ---------------------------------------------------------------------- requeue_lapsed
async def test_lapsed_lease_is_requeued_keeping_attempts(store: Store) -> None:
    (sent,) = await enqueue_all(store, invocation())
    await store.lease("ep", "w1", 1, LEASE_SECONDS, NOW)
    assert await store.requeue_lapsed(NOW + LEASE_SECONDS + 1) == 1
    got = await store.get("ep", sent.inference_id)
    assert got is not None
    assert (got.status, got.lease_owner, got.attempts) == (InvocationStatus.QUEUED, None, 1)
    (again,) = await store.lease("ep", "w2", 1, LEASE_SECONDS, NOW + 40)
    assert again.request_id == sent.request_id and again.attempts == 2


async def test_lease_not_yet_lapsed_is_kept(store: Store) -> None:
    await enqueue_all(store, invocation())
    await store.lease("ep", "w1", 1, LEASE_SECONDS, NOW)
    assert await store.requeue_lapsed(NOW + LEASE_SECONDS - 1) == 0


async def test_previous_owner_cannot_finish_after_its_lease_lapsed_and_was_retaken(
    store: Store,
) -> None:
    (sent,) = await enqueue_all(store, invocation())
    await store.lease("ep", "w1", 1, LEASE_SECONDS, NOW)
    await store.requeue_lapsed(NOW + LEASE_SECONDS + 1)
    await store.lease("ep", "w2", 1, LEASE_SECONDS, NOW + 40)
    assert not await store.finish(sent.request_id, "w1", InvocationStatus.COMPLETED, None, NOW)
    assert await store.finish(sent.request_id, "w2", InvocationStatus.COMPLETED, None, NOW)


# ---------------------------------------------------------------------- count_by_status
async def test_count_by_status_counts_every_status_overall_and_per_endpoint(store: Store) -> None:
    a1, _a2, _a3, b1 = await enqueue_all(
        store, invocation("a"), invocation("a"), invocation("a"), invocation("b")
    )
    await store.lease("a", "w1", 2, LEASE_SECONDS, NOW)
    await store.finish(a1.request_id, "w1", InvocationStatus.COMPLETED, None, NOW)
    await store.lease("b", "w1", 1, LEASE_SECONDS, NOW)
    await store.finish(b1.request_id, "w1", InvocationStatus.FAILED, "x", NOW)

    assert await store.count_by_status("a") == {
        "Queued": 1,
        "InProgress": 1,
        "Completed": 1,
        "Failed": 0,
        "Expired": 0,
    }
    assert await store.count_by_status() == {
        "Queued": 1,
        "InProgress": 1,
        "Completed": 1,
        "Failed": 1,
        "Expired": 0,
    }


# -------------------------------------------------------------------------- durability
async def test_lease_of_a_variant_takes_only_that_variants_invocations(store: Store) -> None:
    a1, b1, a2 = await enqueue_all(
        store,
        invocation(variant_name="A"),
        invocation(variant_name="B"),
        invocation(variant_name="A"),
    )
    leased = await store.lease("ep", "w1", 10, LEASE_SECONDS, NOW, variant_name="A")
    assert [inv.request_id for inv in leased] == [a1.request_id, a2.request_id]
    assert [inv.variant_name for inv in leased] == ["A", "A"]
    (only_b,) = await store.lease("ep", "w1", 10, LEASE_SECONDS, NOW, variant_name="B")
    assert only_b.request_id == b1.request_id


async def test_lease_without_a_variant_takes_every_variant_in_fifo_order(store: Store) -> None:
    sent = await enqueue_all(
        store, invocation(variant_name="A"), invocation(variant_name="B"), invocation()
    )
    leased = await store.lease("ep", "w1", 10, LEASE_SECONDS, NOW)
    assert [inv.request_id for inv in leased] == [inv.request_id for inv in sent]


async def test_variant_reads_back_with_the_invocation(store: Store) -> None:
    await enqueue_all(store, invocation(inference_id="v", variant_name="Blue"))
    got = await store.get("ep", "v")
    assert got is not None and got.variant_name == "Blue"


# ------------------------------------------------------------------------- retention


async def finished(store: Store, at: float, status: str = "Completed") -> Invocation:
    (inv,) = await enqueue_all(store, invocation())
    await store.lease("ep", "w1", 1, LEASE_SECONDS, NOW)
    assert await store.finish(inv.request_id, "w1", InvocationStatus(status), None, at)
    return inv


async def test_purge_deletes_invocations_finished_before_the_cutoff(store: Store) -> None:
    old = [
        await finished(store, NOW + n, status)
        for n, status in enumerate(("Completed", "Failed", "Expired"))
    ]
    young = await finished(store, NOW + 100)
    assert await store.purge_finished(NOW + 50, 100) == 3
    for inv in old:
        assert await store.get("ep", inv.inference_id) is None
    assert await store.get("ep", young.inference_id) is not None


async def test_purge_removes_at_most_the_limit_oldest_first(store: Store) -> None:
    first, second, third = [await finished(store, NOW + n) for n in range(3)]
    assert await store.purge_finished(NOW + 50, 2) == 2
    assert await store.get("ep", first.inference_id) is None
    assert await store.get("ep", second.inference_id) is None
    assert await store.get("ep", third.inference_id) is not None


async def test_purge_never_deletes_queued_or_running_invocations(store: Store) -> None:
    queued, running = await enqueue_all(store, invocation(), invocation())
    await store.lease("ep", "w1", 1, LEASE_SECONDS, NOW)
    assert await store.purge_finished(NOW + 10**9, 100) == 0
    assert await store.get("ep", queued.inference_id) is not None
    assert await store.get("ep", running.inference_id) is not None


async def test_purged_invocations_leave_the_status_counts(store: Store) -> None:
    await finished(store, NOW)
    await store.purge_finished(NOW + 1, 100)
    assert (await store.count_by_status("ep"))["Completed"] == 0


async def test_queued_invocations_survive_close_and_reopen(durable_backend: Backend) -> None:
    store = await durable_backend.open()
    sent = await enqueue_all(store, invocation(), invocation())
    await store.close()

    reopened = await durable_backend.open()

    leased = await reopened.lease("ep", "w1", 10, LEASE_SECONDS, NOW)
    assert [inv.request_id for inv in leased] == [inv.request_id for inv in sent]


async def test_lease_state_survives_close_and_reopen(durable_backend: Backend) -> None:
    store = await durable_backend.open()
    done, running = await enqueue_all(store, invocation(), invocation())
    await store.lease("ep", "w1", 2, LEASE_SECONDS, NOW)
    await store.finish(done.request_id, "w1", InvocationStatus.COMPLETED, None, NOW)
    await store.close()

    reopened = await durable_backend.open()

    got_done = await reopened.get("ep", done.inference_id)
    got_running = await reopened.get("ep", running.inference_id)
    assert got_done is not None and got_done.status is InvocationStatus.COMPLETED
    assert got_running is not None and got_running.lease_owner == "w1"
    assert await reopened.requeue_lapsed(NOW + LEASE_SECONDS + 1) == 1


CRASHING_ENQUEUER = textwrap.dedent(
    """
    import asyncio, sys, uuid
    from pathlib import Path
    from sagequeue.ports import Invocation
    from sagequeue.stores.sqlite import SqliteStore

    async def main() -> None:
        store = SqliteStore(Path(sys.argv[1]))
        await store.open()

        async def enqueuer() -> None:
            while True:
                request_id = str(uuid.uuid4())
                await store.enqueue(Invocation(request_id, request_id, "ep", "s3://o", "s3://f"))
                sys.stdout.write(request_id + "\\n")  # acknowledged: it got its 202
                sys.stdout.flush()

        await asyncio.gather(*(enqueuer() for _ in range(16)))

    asyncio.run(main())
    """
)


@pytest.mark.slow
async def test_every_acknowledged_enqueue_survives_sigkill(
    durable_backend: Backend, tmp_path: Path
) -> None:
    if durable_backend.name != "sqlite":
        pytest.skip("the crash test drives a SqliteStore in a child process")
    db_path = tmp_path / "sagequeue.db"
    child = subprocess.Popen(
        [sys.executable, "-c", CRASHING_ENQUEUER, str(db_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    acknowledged = [child.stdout.readline().strip() for _ in range(500)]
    os.kill(child.pid, signal.SIGKILL)
    acknowledged += child.stdout.read().split()  # acks written before the kill landed
    child.wait()

    reopened = await durable_backend.open()

    missing = [rid for rid in acknowledged if await reopened.get("ep", rid) is None]
    assert missing == []
    assert len(acknowledged) >= 500


LEASING_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from sagequeue.stores.sqlite import SqliteStore

    async def main() -> None:
        store = SqliteStore(Path(sys.argv[1]))
        await store.open()
        print("ready", flush=True)
        sys.stdin.readline()  # start together, so that the leases interleave
        while batch := await store.lease("ep", sys.argv[2], 3, 30.0, 1_700_000_000.0):
            sys.stdout.write("".join(inv.request_id + "\\n" for inv in batch))
        await store.close()

    asyncio.run(main())
    """
)


@pytest.mark.slow
async def test_leasing_processes_on_one_file_never_share_an_invocation(
    durable_backend: Backend, tmp_path: Path
) -> None:
    if durable_backend.name != "sqlite":
        pytest.skip("drives SqliteStore in child processes")
    store = await durable_backend.open()
    sent = [invocation() for _ in range(1500)]
    await asyncio.gather(*(store.enqueue(inv) for inv in sent))
    children = [
        subprocess.Popen(
            [sys.executable, "-c", LEASING_CHILD, str(tmp_path / "sagequeue.db"), f"proc-{n}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(3)
    ]
    release_together(children)
    per_child = [child.communicate(timeout=60)[0].split() for child in children]
    leased = [rid for taken in per_child for rid in taken]
    assert [child.returncode for child in children] == [0, 0, 0]
    assert len(leased) == len(set(leased)) == 1500


async def test_sqlite_queue_queries_search_indices_instead_of_scanning(
    durable_backend: Backend, tmp_path: Path
) -> None:
    """With a million finished rows, lease / get / sweeps must not read them all."""
    if durable_backend.name != "sqlite":
        pytest.skip("SQLite query plans")
    import sqlite3

    from sagequeue.stores import sqlite as sqlite_store

    await durable_backend.open()  # creates the schema
    conn = sqlite3.connect(tmp_path / "sagequeue.db")
    queries = [
        "_LEASE",
        "_LEASE_OVERDUE",
        "_GET",
        "_REQUEUE_LAPSED",
        "_FINISH",
        "_RELEASE",
        "_PURGE_FINISHED",
    ]
    for name in queries:
        sql = getattr(sqlite_store, name)
        plan = conn.execute("EXPLAIN QUERY PLAN " + sql, [None] * sql.count("?")).fetchall()
        details = [row[3] for row in plan]
        assert not [d for d in details if d.startswith("SCAN")], (name, details)
        assert not [d for d in details if "TEMP B-TREE" in d], (name, details)
    conn.close()


async def test_sqlite_database_uses_write_ahead_logging(
    durable_backend: Backend, tmp_path: Path
) -> None:
    if durable_backend.name != "sqlite":
        pytest.skip("SQLite journal mode")
    import sqlite3

    await durable_backend.open()
    conn = sqlite3.connect(tmp_path / "sagequeue.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()

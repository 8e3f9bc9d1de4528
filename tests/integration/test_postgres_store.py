"""PostgresStore beyond the shared contract (tests/contract runs that on PostgreSQL too):
query plans, counters that do not serialise enqueues, migrations raced by ten processes,
outages, and LISTEN/NOTIFY wake-ups across handles and processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest

from conftest import release_together
from sagequeue.domain.errors import ServiceUnavailable, StartupError
from sagequeue.ports import Invocation, InvocationStatus, ResourceKind
from sagequeue.stores import postgres as pg
from sagequeue.stores.postgres import PostgresStore
from sagequeue.stores.postgres_wakeups import PostgresWakeups
from sagequeue.testing.postgres import PostgresServer

pytestmark = pytest.mark.anyio
NOW = 1_700_000_000.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def invocation(endpoint: str = "ep", inference_id: str | None = None, **fields) -> Invocation:
    request_id = str(uuid.uuid4())
    return Invocation(
        request_id,
        inference_id or request_id,
        endpoint,
        "s3://out/o",
        "s3://out/f",
        enqueued_at=NOW,
        **fields,
    )


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[PostgresStore]:
    opened = PostgresStore(postgres_url)
    await opened.open()
    yield opened
    await opened.close()


async def sql(url: str, statement: str, params: tuple = ()) -> list[tuple]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(statement, params)
        return await cursor.fetchall() if cursor.description else []


# ------------------------------------------------------------------------- query plans
FINISHED_ROWS = 200_000


async def test_queue_queries_search_indices_instead_of_scanning_finished_rows(
    store: PostgresStore, postgres_url: str
) -> None:
    """With many finished rows (and a few live ones), every hot query reads an index."""
    await sql(
        postgres_url,
        """
        INSERT INTO invocations (request_id, inference_id, endpoint_name, output_location,
            failure_location, request_ttl_seconds, invocation_timeout_seconds, status,
            enqueued_at, finished_at, expires_at, variant_name)
        SELECT 'done-' || i, 'done-' || i, 'ep', 's3://o', 's3://f', 60, 60,
            (ARRAY['Completed', 'Failed', 'Expired'])[1 + i %% 3], %s, %s + i, %s + 60,
            'AllTraffic'
        FROM generate_series(1, %s) AS i
        """,
        (NOW, NOW, NOW, FINISHED_ROWS),
    )
    for _ in range(20):
        await store.enqueue(invocation(variant_name="AllTraffic"))
    await store.lease("ep", "w1", 5, 30.0, NOW, variant_name="AllTraffic")
    await sql(postgres_url, "ANALYZE invocations")
    queries = {
        "_LEASE": ("w", NOW, NOW, "ep", "AllTraffic", 3),
        "_LEASE_OVERDUE": ("w", NOW, NOW, NOW, 3),
        "_GET": ("ep", "done-7"),
        "_REQUEUE_LAPSED": (NOW,),
        "_FINISH": ("Completed", None, NOW, "done-7", "w"),
        "_RELEASE": (0, "done-7", "w"),
        "_PURGE_FINISHED": (NOW + 10, 100),
    }
    for name, params in queries.items():
        statement = getattr(pg, name)
        plan = await sql(postgres_url, "EXPLAIN " + statement, params)
        text = "\n".join(row[0] for row in plan)
        assert "Seq Scan" not in text, (name, text)
        # The ordered ones read their index in order rather than sorting what they found.
        if name in ("_LEASE", "_LEASE_OVERDUE", "_GET", "_PURGE_FINISHED"):
            assert "Sort" not in text, (name, text)


async def test_lease_reads_the_queued_index_behind_a_deep_backlog_of_newer_rows(
    store: PostgresStore, postgres_url: str
) -> None:
    """Finished rows hold the low seqs and a large backlog the high ones: a plan that walks
    the primary key in seq order (as if queued rows were spread evenly) reads every
    finished row before the first queued one. The lease must read the queued index."""
    fill = """
        INSERT INTO invocations (request_id, inference_id, endpoint_name, output_location,
            failure_location, request_ttl_seconds, invocation_timeout_seconds, status,
            enqueued_at, finished_at, expires_at, variant_name)
        SELECT %s || i, %s || i, 'ep', 's3://o', 's3://f', 60, 60, %s, %s, %s, %s,
            'AllTraffic'
        FROM generate_series(1, %s) AS i
    """
    await sql(postgres_url, fill, ("done-", "done-", "Completed", NOW, NOW, NOW, 150_000))
    await sql(postgres_url, fill, ("q-", "q-", "Queued", NOW, None, NOW + 60, 100_000))
    await sql(postgres_url, "ANALYZE invocations")
    queries = {
        "_LEASE": ("w", NOW, NOW, "ep", "AllTraffic", 8),
        "_OLDEST_QUEUED": ("ep", "AllTraffic"),
    }
    for name, params in queries.items():
        plan = await sql(postgres_url, "EXPLAIN " + getattr(pg, name), params)
        text = "\n".join(row[0] for row in plan)
        assert "Index Scan using invocations_queued_fifo" in text, (name, text)
        # No rows read only to be thrown away (the primary key walk filters on these).
        assert "Filter: ((endpoint_name" not in text, (name, text)
        assert "Sort" not in text, (name, text)


# ------------------------------------------------------------------------- status counts
async def test_enqueues_on_two_connections_do_not_wait_on_one_counter_row(
    store: PostgresStore, postgres_url: str
) -> None:
    """Status counts are sharded by backend: a transaction that enqueued (and holds its
    counter rows until commit) does not block another connection's enqueue."""
    first = await psycopg.AsyncConnection.connect(postgres_url)
    others: list[psycopg.AsyncConnection] = []
    try:
        first_pid = first.info.backend_pid
        second = await psycopg.AsyncConnection.connect(postgres_url, autocommit=True)
        others.append(second)
        while second.info.backend_pid % pg.COUNTER_SHARDS == first_pid % pg.COUNTER_SHARDS:
            second = await psycopg.AsyncConnection.connect(postgres_url, autocommit=True)
            others.append(second)
        await second.execute("SET lock_timeout = '2s'")
        insert = """
            INSERT INTO invocations (request_id, inference_id, endpoint_name, output_location,
                failure_location, request_ttl_seconds, invocation_timeout_seconds, status,
                enqueued_at, expires_at)
            VALUES (%s, %s, 'ep', 's3://o', 's3://f', 60, 60, 'Queued', 0, 60)
        """
        await first.execute(insert, ("held", "held"))  # not committed: its rows stay locked

        await second.execute(insert, ("free", "free"))  # raises LockNotAvailable if blocked

        await first.commit()
        assert (await store.count_by_status("ep"))["Queued"] == 2
    finally:
        for conn in [first, *others]:
            await conn.close()


async def test_counts_stay_exact_under_concurrent_enqueue_lease_and_finish(
    store: PostgresStore, postgres_url: str
) -> None:
    second = PostgresStore(postgres_url)
    await second.open()
    try:
        sent = [invocation() for _ in range(200)]
        await asyncio.gather(
            *(h.enqueue(inv) for h, inv in zip([store, second] * 100, sent, strict=True))
        )

        async def work(handle: PostgresStore, owner: str) -> None:
            while leased := await handle.lease("ep", owner, 7, 30.0, NOW):
                for inv in leased[::2]:
                    await handle.finish(inv.request_id, owner, InvocationStatus.COMPLETED, None, 1)

        await asyncio.gather(work(store, "a"), work(second, "b"), work(second, "c"))
        counts = await store.count_by_status("ep")
        truth = dict(await sql(postgres_url, "SELECT status, count(*) FROM invocations GROUP BY 1"))
        assert counts == {status.value: truth.get(status.value, 0) for status in InvocationStatus}
        assert counts["Queued"] == 0 and counts["Completed"] + counts["InProgress"] == 200
    finally:
        await second.close()


# ------------------------------------------------------------------------- migrations
MIGRATING_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from sagequeue.stores.postgres import migrate

    print("ready", flush=True)
    sys.stdin.readline()  # start together
    print(asyncio.run(migrate(sys.argv[1])), flush=True)
    """
)


@pytest.mark.timeout(90)
async def test_ten_processes_starting_together_migrate_the_schema_once(postgres_url: str) -> None:
    children = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATING_CHILD, postgres_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(10)
    ]
    release_together(children)
    outcomes = [child.communicate(timeout=60) for child in children]

    assert [child.returncode for child in children] == [0] * 10, [err for _, err in outcomes]
    found = sorted(int(out.strip()) for out, _ in outcomes)
    assert found == [0] + [pg.SCHEMA_VERSION] * 9  # one migrated, nine found it done
    assert await sql(postgres_url, "SELECT version FROM schema_version") == [(pg.SCHEMA_VERSION,)]


async def test_database_at_a_newer_schema_version_refuses_to_open(postgres_url: str) -> None:
    await pg.migrate(postgres_url)
    await sql(postgres_url, "UPDATE schema_version SET version = %s", (pg.SCHEMA_VERSION + 1,))
    with pytest.raises(StartupError, match="newer than this sagequeue's"):
        await PostgresStore(postgres_url).open()


async def test_reopening_a_migrated_database_keeps_its_data(postgres_url: str) -> None:
    first = PostgresStore(postgres_url)
    await first.open()
    await first.enqueue(invocation(inference_id="kept"))
    await first.close()
    assert await pg.migrate(postgres_url) == pg.SCHEMA_VERSION
    again = PostgresStore(postgres_url)
    await again.open()
    try:
        assert await again.get("ep", "kept") is not None
    finally:
        await again.close()


# ------------------------------------------------------------------------- outages
@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    """A server of this module's own: the tests below stop and restart it."""
    server = PostgresServer().start()
    yield server
    server.close()


@pytest.fixture
async def outage_store(own_postgres: PostgresServer) -> AsyncIterator[PostgresStore]:
    if not own_postgres.running:
        own_postgres.start()
    opened = PostgresStore(own_postgres.create_database(), pool_timeout=0.5)
    await opened.open()
    yield opened
    await opened.close()
    if not own_postgres.running:
        own_postgres.start()


def store_calls(store: PostgresStore) -> dict[str, object]:
    """One call of each kind (each a coroutine factory)."""
    return {
        "enqueue": lambda: store.enqueue(invocation()),
        "lease": lambda: store.lease("ep", "w", 1, 30.0, NOW),
        "finish": lambda: store.finish("x", "w", InvocationStatus.COMPLETED, None, NOW),
        "get": lambda: store.get("ep", "x"),
        "count_by_status": lambda: store.count_by_status(),
        "purge_finished": lambda: store.purge_finished(NOW, 10),
        "get_resource": lambda: store.get_resource(ResourceKind.MODEL, "m"),
        "list_workers": lambda: store.list_workers(),
        "acquire_lease": lambda: store.acquire_lease("s", "h", NOW, NOW + 1),
    }


@pytest.mark.timeout(60)
async def test_every_call_raises_service_unavailable_while_the_database_is_down(
    outage_store: PostgresStore, own_postgres: PostgresServer
) -> None:
    await outage_store.enqueue(invocation())  # the pools hold live connections
    await asyncio.to_thread(own_postgres.stop)
    for name, call in store_calls(outage_store).items():
        with pytest.raises(ServiceUnavailable):
            await call()
            pytest.fail(f"{name} returned while the database was down")


@pytest.mark.timeout(60)
async def test_every_call_works_again_once_the_database_is_back(
    outage_store: PostgresStore, own_postgres: PostgresServer
) -> None:
    await outage_store.enqueue(invocation())
    await asyncio.to_thread(own_postgres.stop)
    with pytest.raises(ServiceUnavailable):
        await outage_store.get("ep", "x")
    await asyncio.to_thread(own_postgres.start)
    for name, call in store_calls(outage_store).items():
        deadline = time.monotonic() + 15
        while True:
            try:
                await call()
                break
            except ServiceUnavailable:
                assert time.monotonic() < deadline, f"{name} still unavailable"
                await asyncio.sleep(0.1)


@pytest.mark.timeout(60)
async def test_enqueue_whose_commit_is_cut_raises_service_unavailable_and_stores_nothing(
    outage_store: PostgresStore, own_postgres: PostgresServer
) -> None:
    url = outage_store.url
    # Hold the insert in the database long enough to cut its connection mid-statement.
    await sql(
        url,
        """
        CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN PERFORM pg_sleep(2); RETURN NULL; END $$
        """,
    )
    await sql(
        url,
        "CREATE TRIGGER slow BEFORE INSERT ON invocations "
        "FOR EACH STATEMENT EXECUTE FUNCTION slow_insert()",
    )
    cut = invocation(inference_id="cut")
    enqueue = asyncio.ensure_future(outage_store.enqueue(cut))
    find_insert = """
        SELECT pid FROM pg_stat_activity
        WHERE application_name = 'sagequeue-durable' AND query LIKE '%%INSERT INTO invocations%%'
          AND state = 'active'
    """
    while not (busy := await sql(url, find_insert)):
        await asyncio.sleep(0.02)
    await sql(url, "SELECT pg_terminate_backend(%s)", (busy[0][0],))

    with pytest.raises(ServiceUnavailable):
        await enqueue
    await sql(url, "DROP TRIGGER slow ON invocations")
    assert await sql(url, "SELECT 1 FROM invocations WHERE inference_id = 'cut'") == []


# ------------------------------------------------------------------------- wake-ups
class Rings:
    def __init__(self) -> None:
        self.heard: list[str] = []
        self._changed = asyncio.Event()

    def __call__(self, endpoint_name: str) -> None:
        self.heard.append(endpoint_name)
        self._changed.set()

    async def wait_for(self, endpoint_name: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while endpoint_name not in self.heard:
            self._changed.clear()
            await asyncio.wait_for(self._changed.wait(), max(0.01, deadline - time.monotonic()))


async def test_an_enqueue_on_one_handle_rings_a_listener_on_another(
    store: PostgresStore, postgres_url: str
) -> None:
    rings = Rings()
    wakeups = PostgresWakeups(postgres_url)
    await wakeups.listen(rings)
    try:
        assert wakeups.listening
        await store.enqueue(invocation("rung-endpoint"))
        await rings.wait_for("rung-endpoint")
    finally:
        await wakeups.close()


async def test_concurrent_enqueues_ring_once_per_endpoint_and_group_commit(
    store: PostgresStore, postgres_url: str
) -> None:
    rings = Rings()
    wakeups = PostgresWakeups(postgres_url)
    await wakeups.listen(rings)
    try:
        await asyncio.gather(*(store.enqueue(invocation(f"ep-{n % 2}")) for n in range(200)))
        await rings.wait_for("ep-0")
        await rings.wait_for("ep-1")
        await asyncio.sleep(0.2)  # any late ones
    finally:
        await wakeups.close()
    assert len(rings.heard) < 20  # 200 enqueues, a few commits


async def test_work_put_back_in_the_queue_rings_too(
    store: PostgresStore, postgres_url: str
) -> None:
    await store.enqueue(invocation("back"))
    (taken,) = await store.lease("back", "w1", 1, 30.0, NOW)
    rings = Rings()
    wakeups = PostgresWakeups(postgres_url)
    await wakeups.listen(rings)  # after the enqueue's ring
    try:
        assert await store.release(taken.request_id, "w1")
        await rings.wait_for("back")
    finally:
        await wakeups.close()


ENQUEUING_CHILD = textwrap.dedent(
    """
    import asyncio, sys, uuid
    from sagequeue.ports import Invocation
    from sagequeue.stores.postgres import PostgresStore

    async def main() -> None:
        store = PostgresStore(sys.argv[1])
        await store.open()
        request_id = str(uuid.uuid4())
        await store.enqueue(Invocation(request_id, request_id, "from-child", "s3://o", "s3://f"))
        await store.close()

    asyncio.run(main())
    """
)


async def test_an_enqueue_in_another_process_rings_this_one(postgres_url: str) -> None:
    await pg.migrate(postgres_url)
    rings = Rings()
    wakeups = PostgresWakeups(postgres_url)
    await wakeups.listen(rings)
    try:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", ENQUEUING_CHILD, postgres_url
        )
        assert await child.wait() == 0
        await rings.wait_for("from-child")
    finally:
        await wakeups.close()


@pytest.mark.timeout(60)
async def test_listener_reconnects_after_a_database_restart(
    outage_store: PostgresStore, own_postgres: PostgresServer
) -> None:
    rings = Rings()
    wakeups = PostgresWakeups(outage_store.url)
    await wakeups.listen(rings)
    try:
        await asyncio.to_thread(own_postgres.restart)
        deadline = time.monotonic() + 15
        while not (wakeups.listening and wakeups.reconnects == 1):
            assert time.monotonic() < deadline, "the listener did not reconnect"
            await asyncio.sleep(0.05)
        while True:  # the store's pool reconnects by itself too
            try:
                await outage_store.enqueue(invocation("after-restart"))
                break
            except ServiceUnavailable:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        await rings.wait_for("after-restart")
    finally:
        await wakeups.close()


# ------------------------------------------------------------------------- durability
CRASHING_ENQUEUER = textwrap.dedent(
    """
    import asyncio, sys, uuid
    from sagequeue.ports import Invocation
    from sagequeue.stores.postgres import PostgresStore

    async def main() -> None:
        store = PostgresStore(sys.argv[1])
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


@pytest.mark.timeout(60)
async def test_every_acknowledged_enqueue_survives_sigkill_of_its_process(
    postgres_url: str,
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CRASHING_ENQUEUER, postgres_url], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    acknowledged = [child.stdout.readline().strip() for _ in range(500)]
    child.kill()
    acknowledged += child.stdout.read().split()  # acks written before the kill landed
    child.wait()

    stored = {row[0] for row in await sql(postgres_url, "SELECT request_id FROM invocations")}
    assert [rid for rid in acknowledged if rid not in stored] == []
    assert len(acknowledged) >= 500


async def test_open_wakeups_gives_postgresql_stores_a_listen_notify_channel(
    store: PostgresStore, tmp_path
) -> None:
    from sagequeue.config import Settings
    from sagequeue.stores import open_wakeups
    from sagequeue.stores.sqlite import SqliteStore

    channel = open_wakeups(Settings(data_dir=tmp_path), store)
    assert isinstance(channel, PostgresWakeups) and channel.url == store.url
    # SQLite's workers on this host are woken by the local doorbell instead.
    assert open_wakeups(Settings(data_dir=tmp_path), SqliteStore(tmp_path / "db")) is None

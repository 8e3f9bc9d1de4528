"""Queue + metadata store on one SQLite file (WAL mode): the embedded default.

Threads, so that no SQLite call ever runs on the event loop:

* one **writer thread** owns both write connections and runs every write, one job after
  another. Concurrent ``enqueue`` calls are *group committed*: the writer drains every
  pending row from its job queue and inserts them in one transaction, then resolves all
  their futures with one ``call_soon_threadsafe`` per event loop. A lone row is committed
  at once (the writer blocks on the queue, never on a timer).
* a small pool of **reader threads**, each with its own read connection (WAL lets reads
  run alongside the writer).

Durability. ``enqueue`` and metadata writes commit on a ``synchronous=FULL`` connection:
the WAL is fsynced before the transaction is reported committed, so a request that got
its 202 survives power loss. Lease transitions (lease, renew, finish, release,
requeue_lapsed) commit on a ``synchronous=NORMAL`` connection: they are durable against
a crash of any process (the WAL is in the OS page cache) and only an OS crash or power
loss can drop the last few of them. Losing one is safe: the row goes back to an older
state (Queued, or InProgress with a lease that then lapses and is re-queued), so the
request runs again and rewrites the same output location; it is never lost. The next
FULL commit fsyncs the WAL file and with it every NORMAL commit before it.

Several processes (``--role api`` and ``--role worker``) may open the same file: every
write transaction is ``BEGIN IMMEDIATE`` (takes the write lock up front, waits on
``busy_timeout``), and ``lease`` is a single ``UPDATE ... WHERE seq IN (SELECT ... LIMIT n)
RETURNING`` inside it, so no row is ever leased by two processes.
"""

from __future__ import annotations

import asyncio
import functools
import queue
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, TypeVar

import msgspec

from sagequeue.domain.errors import InternalFailure, ServiceUnavailable, StartupError
from sagequeue.domain.metrics import add_buckets, merge_points
from sagequeue.ports import (
    InstanceClaim,
    InstanceState,
    Invocation,
    InvocationStatus,
    MetricPoint,
    OutboxMessage,
    Resource,
    ResourceKind,
    WorkerRecord,
)
from sagequeue.stores.rows import (
    instance_key,
    instance_row,
    outbox_row,
    to_instance,
    to_invocation,
    to_outbox_message,
    to_resource,
)
from sagequeue.stores.sqlite_logs import LOG_MIGRATION, SqliteLogs

T = TypeVar("T")

BUSY_TIMEOUT_SECONDS: Final = 30.0
MAX_GROUP_COMMIT_ROWS: Final = 2048  # bounds one transaction's size under a burst
READER_THREADS: Final = 2

# Invocation columns in the order of the ``Invocation`` dataclass fields, so that a row
# becomes an Invocation with ``Invocation(*row)``.
_COLUMNS: Final = (
    "request_id, inference_id, endpoint_name, output_location, failure_location, "
    "input_location, inline_body, content_type, accept, custom_attributes, "
    "request_ttl_seconds, invocation_timeout_seconds, status, failure_reason, "
    "enqueued_at, started_at, finished_at, attempts, lease_owner, lease_expires_at, seq, "
    "variant_name"
)

# Schema migrations: entry i brings the schema from version i to i + 1. Never edit a
# released entry; append a new one.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """
        CREATE TABLE invocations (
            seq INTEGER PRIMARY KEY,  -- the rowid: FIFO order
            request_id TEXT NOT NULL UNIQUE,
            inference_id TEXT NOT NULL,
            endpoint_name TEXT NOT NULL,
            output_location TEXT NOT NULL,
            failure_location TEXT NOT NULL,
            input_location TEXT,
            inline_body BLOB,
            content_type TEXT,
            accept TEXT,
            custom_attributes TEXT,
            request_ttl_seconds INTEGER NOT NULL,
            invocation_timeout_seconds INTEGER NOT NULL,
            status TEXT NOT NULL,
            failure_reason TEXT,
            enqueued_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL,
            attempts INTEGER NOT NULL DEFAULT 0,
            lease_owner TEXT,
            lease_expires_at REAL,
            expires_at REAL NOT NULL  -- enqueued_at + request_ttl_seconds
        )
        """,
        # Partial indices hold only the rows a query looks for, so lease / lease_overdue /
        # requeue_lapsed cost O(log n) whatever the number of finished rows. An index
        # entry ends with the rowid (seq), so each is also in FIFO order.
        "CREATE INDEX invocations_queued ON invocations (endpoint_name) WHERE status = 'Queued'",
        "CREATE INDEX invocations_overdue ON invocations (expires_at) WHERE status = 'Queued'",
        """
        CREATE INDEX invocations_leased ON invocations (lease_expires_at)
        WHERE status = 'InProgress'
        """,
        "CREATE INDEX invocations_by_inference_id ON invocations (endpoint_name, inference_id)",
        # Counts kept by triggers so count_by_status is O(endpoints), not a table scan.
        """
        CREATE TABLE status_counts (
            endpoint_name TEXT NOT NULL,
            status TEXT NOT NULL,
            n INTEGER NOT NULL,
            PRIMARY KEY (endpoint_name, status)
        ) WITHOUT ROWID
        """,
        """
        CREATE TRIGGER invocations_counted_insert AFTER INSERT ON invocations BEGIN
            INSERT INTO status_counts VALUES (NEW.endpoint_name, NEW.status, 1)
            ON CONFLICT (endpoint_name, status) DO UPDATE SET n = n + 1;
        END
        """,
        """
        CREATE TRIGGER invocations_counted_update AFTER UPDATE OF status ON invocations
        WHEN OLD.status <> NEW.status BEGIN
            UPDATE status_counts SET n = n - 1
            WHERE endpoint_name = OLD.endpoint_name AND status = OLD.status;
            INSERT INTO status_counts VALUES (NEW.endpoint_name, NEW.status, 1)
            ON CONFLICT (endpoint_name, status) DO UPDATE SET n = n + 1;
        END
        """,
        """
        CREATE TRIGGER invocations_counted_delete AFTER DELETE ON invocations BEGIN
            UPDATE status_counts SET n = n - 1
            WHERE endpoint_name = OLD.endpoint_name AND status = OLD.status;
        END
        """,
        """
        CREATE TABLE resources (
            kind TEXT NOT NULL,
            name TEXT NOT NULL,
            name_lower TEXT NOT NULL,  -- SageMaker names compare case-insensitively
            doc BLOB NOT NULL,  -- the Describe* JSON document
            version INTEGER NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (kind, name_lower)
        )
        """,
    ),
    (
        # Production variants: a request is served by the variant chosen when it came in.
        "ALTER TABLE invocations ADD COLUMN variant_name TEXT NOT NULL DEFAULT ''",
        # Unfinished requests of an older version go to their endpoint's first variant.
        """
        UPDATE invocations SET variant_name = coalesce((
            SELECT json_extract(CAST(doc AS TEXT), '$.ProductionVariants[0].VariantName')
            FROM resources
            WHERE kind = 'endpoint' AND name_lower = lower(invocations.endpoint_name)
        ), '')
        WHERE status IN ('Queued', 'InProgress')
        """,
        "DROP INDEX invocations_queued",
        """
        CREATE INDEX invocations_queued ON invocations (endpoint_name, variant_name)
        WHERE status = 'Queued'
        """,
        # Retention: the purge finds the oldest finished rows without reading the rest.
        """
        CREATE INDEX invocations_finished ON invocations (finished_at)
        WHERE status IN ('Completed', 'Failed', 'Expired')
        """,
        """
        CREATE TABLE workers (
            worker_id TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            max_instances INTEGER NOT NULL,
            endpoints TEXT NOT NULL,  -- lower-cased names joined by ","; '' = all
            started_at REAL NOT NULL,
            heartbeat_at REAL NOT NULL,
            heartbeat_expires_at REAL NOT NULL
        )
        """,
        """
        CREATE TABLE instances (
            endpoint_name TEXT NOT NULL,
            variant_name TEXT NOT NULL,
            generation INTEGER NOT NULL,
            slot INTEGER NOT NULL,
            worker_id TEXT NOT NULL,
            state TEXT NOT NULL,
            claimed_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            detail TEXT,
            PRIMARY KEY (endpoint_name, variant_name, generation, slot)
        )
        """,
        "CREATE INDEX instances_by_worker ON instances (worker_id)",
        """
        CREATE TABLE singleton_leases (
            name TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            expires_at REAL NOT NULL
        )
        """,
    ),
    (
        # Metrics: per-period aggregates, one row per writer process (no row is hot).
        """
        CREATE TABLE metric_points (
            period_start INTEGER NOT NULL,  -- epoch ms
            metric TEXT NOT NULL,
            endpoint_name TEXT NOT NULL,
            variant_name TEXT NOT NULL,
            writer TEXT NOT NULL,
            sum REAL NOT NULL,
            count REAL NOT NULL,
            minimum REAL NOT NULL,
            maximum REAL NOT NULL,
            buckets TEXT NOT NULL,  -- histogram bucket counts joined by ","; '' for none
            PRIMARY KEY (period_start, metric, endpoint_name, variant_name, writer)
        ) WITHOUT ROWID
        """,
        """
        CREATE INDEX metric_points_series
        ON metric_points (metric, endpoint_name, period_start)
        """,
        # Each writer's running totals (never purged: Prometheus counters).
        """
        CREATE TABLE metric_totals (
            metric TEXT NOT NULL,
            endpoint_name TEXT NOT NULL,
            variant_name TEXT NOT NULL,
            writer TEXT NOT NULL,
            sum REAL NOT NULL,
            count REAL NOT NULL,
            minimum REAL NOT NULL,
            maximum REAL NOT NULL,
            buckets TEXT NOT NULL,
            PRIMARY KEY (metric, endpoint_name, variant_name, writer)
        ) WITHOUT ROWID
        """,
    ),
    LOG_MIGRATION,  # model logs (CloudWatch Logs API): sagequeue.stores.sqlite_logs
    (
        # Notification outbox (written by finish, in its transaction; notify branch).
        """
        CREATE TABLE notification_outbox (
            seq INTEGER PRIMARY KEY,
            message_id TEXT NOT NULL UNIQUE,
            endpoint_name TEXT NOT NULL,
            inference_id TEXT NOT NULL,
            topic TEXT NOT NULL,
            body BLOB NOT NULL,
            created_at REAL NOT NULL,
            state TEXT NOT NULL,
            next_attempt_at REAL NOT NULL,  -- due; while leased, when the lease lapses
            attempts INTEGER NOT NULL DEFAULT 0,
            lease_owner TEXT,
            finished_at REAL,
            last_error TEXT
        )
        """,
        """
        CREATE INDEX notification_outbox_due ON notification_outbox (next_attempt_at)
        WHERE state = 'Pending'
        """,
        """
        CREATE INDEX notification_outbox_finished ON notification_outbox (finished_at)
        WHERE state <> 'Pending'
        """,
        """
        CREATE INDEX notification_outbox_by_inference
        ON notification_outbox (endpoint_name, inference_id)
        """,
        # NotificationFailures per endpoint: kept when the outbox rows are purged.
        """
        CREATE TABLE notification_failures (
            endpoint_name TEXT PRIMARY KEY,
            n INTEGER NOT NULL
        ) WITHOUT ROWID
        """,
    ),
    (
        # Listing an endpoint's invocations newest first, by status (the console): each
        # status's entries end with the rowid (seq), so a page is one range read per
        # status, whatever the number of rows.
        "CREATE INDEX invocations_by_status ON invocations (endpoint_name, status)",
    ),
)

_INSERT_INVOCATION: Final = f"""
    INSERT INTO invocations ({_COLUMNS.replace(", seq", "")}, expires_at)
    VALUES ({", ".join("?" * 22)})
"""
# A group commit inserts its rows with one multi-row statement: executemany steps the
# statement once per row and re-takes the GIL each time, which under a busy event loop
# made inserting a batch several times slower than the statement itself.
_INSERT_HEAD, _, _INSERT_ROW = _INSERT_INVOCATION.partition("VALUES")
_INSERT_ROW = _INSERT_ROW.strip()
# SQLite allows 32,766 bound variables per statement; 22 per row.
_ROWS_PER_INSERT: Final = 512


def _insert_rows(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start : start + _ROWS_PER_INSERT]
        conn.execute(_multi_row_insert(len(chunk)), _flatten(chunk))


@functools.lru_cache(maxsize=64)
def _multi_row_insert(rows: int) -> str:
    return _INSERT_HEAD + "VALUES " + ",".join([_INSERT_ROW] * rows)


def _invocation_row(inv: Invocation) -> tuple[Any, ...]:
    """The values of _INSERT_INVOCATION for a new (Queued) invocation."""
    return (
        inv.request_id,
        inv.inference_id,
        inv.endpoint_name,
        inv.output_location,
        inv.failure_location,
        inv.input_location,
        inv.inline_body,
        inv.content_type,
        inv.accept,
        inv.custom_attributes,
        inv.request_ttl_seconds,
        inv.invocation_timeout_seconds,
        "Queued",
        None,
        inv.enqueued_at,
        None,
        None,
        inv.attempts,
        None,
        None,
        inv.variant_name,
        inv.enqueued_at + inv.request_ttl_seconds,
    )


def _flatten(rows: list[tuple[Any, ...]]) -> list[Any]:
    return [value for row in rows for value in row]


_LEASE: Final = f"""
    UPDATE invocations
    SET status = 'InProgress', lease_owner = ?, lease_expires_at = ?, started_at = ?,
        attempts = attempts + 1
    WHERE seq IN (
        SELECT seq FROM invocations
        WHERE endpoint_name = ? AND variant_name = ? AND status = 'Queued'
        ORDER BY seq LIMIT ?
    )
    RETURNING {_COLUMNS}
"""
# Any variant (an endpoint being torn down): not on a hot path.
_LEASE_ANY_VARIANT: Final = f"""
    UPDATE invocations
    SET status = 'InProgress', lease_owner = ?, lease_expires_at = ?, started_at = ?,
        attempts = attempts + 1
    WHERE seq IN (
        SELECT seq FROM invocations
        WHERE endpoint_name = ? AND status = 'Queued' ORDER BY seq LIMIT ?
    )
    RETURNING {_COLUMNS}
"""
_LEASE_OVERDUE: Final = f"""
    UPDATE invocations
    SET status = 'InProgress', lease_owner = ?, lease_expires_at = ?, started_at = ?,
        attempts = attempts + 1
    WHERE seq IN (
        SELECT seq FROM invocations
        WHERE status = 'Queued' AND expires_at < ? ORDER BY expires_at LIMIT ?
    )
    RETURNING {_COLUMNS}
"""
_RENEW: Final = """
    UPDATE invocations SET lease_expires_at = ?
    WHERE request_id = ? AND status = 'InProgress' AND lease_owner = ?
"""
_FINISH: Final = """
    UPDATE invocations
    SET status = ?, failure_reason = ?, finished_at = ?, lease_expires_at = NULL
    WHERE request_id = ? AND status = 'InProgress' AND lease_owner = ?
"""
_RELEASE: Final = """
    UPDATE invocations
    SET status = 'Queued', lease_owner = NULL, lease_expires_at = NULL, started_at = NULL,
        attempts = attempts - ?
    WHERE request_id = ? AND status = 'InProgress' AND lease_owner = ?
"""
_REQUEUE_LAPSED: Final = """
    UPDATE invocations
    SET status = 'Queued', lease_owner = NULL, lease_expires_at = NULL, started_at = NULL
    WHERE status = 'InProgress' AND lease_expires_at < ?
"""
_PURGE_FINISHED: Final = """
    DELETE FROM invocations WHERE seq IN (
        SELECT seq FROM invocations
        WHERE status IN ('Completed', 'Failed', 'Expired') AND finished_at < ?
        ORDER BY finished_at LIMIT ?
    )
"""
_OLDEST_QUEUED: Final = """
    SELECT enqueued_at FROM invocations
    WHERE endpoint_name = ? AND variant_name = ? AND status = 'Queued'
    ORDER BY seq LIMIT 1
"""
_GET: Final = f"""
    SELECT {_COLUMNS} FROM invocations
    WHERE endpoint_name = ? AND inference_id = ? ORDER BY seq DESC LIMIT 1
"""
# A listing reads no request bodies (up to 128,000 bytes each).
_LIST_COLUMNS: Final = _COLUMNS.replace("inline_body", "NULL")
_LIST_BY_STATUS: Final = f"""
    SELECT {_LIST_COLUMNS} FROM invocations
    WHERE endpoint_name = ? AND status = ? AND seq < ? ORDER BY seq DESC LIMIT ?
"""
# Every status: the newest seqs of each (one index range read per status, from the
# index alone), merged by the caller, whose page is then read by seq.
_LIST_SEQS: Final = " UNION ALL ".join(
    f"""SELECT seq FROM (
        SELECT seq FROM invocations
        WHERE endpoint_name = ? AND status = '{status.value}' AND seq < ?
        ORDER BY seq DESC LIMIT ?
    )"""
    for status in InvocationStatus
)
_NO_SEQ_LIMIT: Final = 2**63 - 1
_REQUEUE_OWNED: Final = """
    UPDATE invocations
    SET status = 'Queued', lease_owner = NULL, lease_expires_at = NULL, started_at = NULL
    WHERE status = 'InProgress' AND lease_owner = ?
"""
# ---- notification outbox
_OUTBOX_COLUMNS: Final = (
    "message_id, endpoint_name, inference_id, topic, body, created_at, state, "
    "next_attempt_at, attempts, lease_owner, finished_at, last_error, seq"
)
_INSERT_OUTBOX: Final = f"""
    INSERT INTO notification_outbox ({_OUTBOX_COLUMNS.replace(", seq", "")})
    VALUES ({", ".join("?" * 12)})
    ON CONFLICT (message_id) DO NOTHING
"""
_LEASE_OUTBOX: Final = f"""
    UPDATE notification_outbox
    SET lease_owner = ?, next_attempt_at = ?, attempts = attempts + 1
    WHERE seq IN (
        SELECT seq FROM notification_outbox
        WHERE state = 'Pending' AND next_attempt_at <= ?
        ORDER BY next_attempt_at LIMIT ?
    )
    RETURNING {_OUTBOX_COLUMNS}
"""
_OUTBOX_HELD: Final = "message_id = ? AND state = 'Pending' AND lease_owner = ?"
_OUTBOX_DELIVERED: Final = f"""
    UPDATE notification_outbox
    SET state = 'Delivered', finished_at = ?, lease_owner = NULL, last_error = NULL
    WHERE {_OUTBOX_HELD}
"""
_OUTBOX_RETRY: Final = f"""
    UPDATE notification_outbox SET next_attempt_at = ?, lease_owner = NULL, last_error = ?
    WHERE {_OUTBOX_HELD}
"""
_OUTBOX_FAILED: Final = f"""
    UPDATE notification_outbox
    SET state = 'Failed', finished_at = ?, lease_owner = NULL, last_error = ?
    WHERE {_OUTBOX_HELD}
    RETURNING endpoint_name
"""
_COUNT_FAILURE: Final = """
    INSERT INTO notification_failures VALUES (?, 1)
    ON CONFLICT (endpoint_name) DO UPDATE SET n = n + 1
"""
# Parameters: the later cutoff (for the index), the Delivered one, the Failed one, limit.
_PURGE_OUTBOX: Final = """
    DELETE FROM notification_outbox WHERE seq IN (
        SELECT seq FROM notification_outbox
        WHERE state <> 'Pending' AND finished_at < ?
            AND ((state = 'Delivered' AND finished_at < ?)
                OR (state = 'Failed' AND finished_at < ?))
        ORDER BY finished_at LIMIT ?
    )
"""
_RESOURCE_COLUMNS: Final = "kind, name, doc, version, created_at"
_WORKER_COLUMNS: Final = (
    "worker_id, host, pid, max_instances, endpoints, started_at, heartbeat_at, heartbeat_expires_at"
)
_INSTANCE_COLUMNS: Final = (
    "endpoint_name, variant_name, generation, slot, worker_id, state, claimed_at, "
    "updated_at, detail"
)
_SEQ_INDEX: Final = [c.strip() for c in _COLUMNS.split(",")].index("seq")
_INSTANCE_KEY: Final = "endpoint_name = ? AND variant_name = ? AND generation = ? AND slot = ?"

# Writer job kinds.
_INSERT: Final = 0  # payload: an invocation row tuple; result: its seq
_LEASE_TX: Final = 1  # payload: fn(connection) on the synchronous=NORMAL connection
_DURABLE_TX: Final = 2  # payload: fn(connection) on the synchronous=FULL connection

_Job = tuple[int, Any, asyncio.Future[Any], asyncio.AbstractEventLoop]
_Outcome = tuple[asyncio.Future[Any], Any, BaseException | None]


def _connect(path: Path, *, synchronous: str, cache_kib: int) -> sqlite3.Connection:
    # isolation_level=None: no implicit BEGIN; every write says BEGIN IMMEDIATE itself.
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
    )
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute(f"PRAGMA cache_size = -{cache_kib}")
    conn.execute("PRAGMA temp_store = MEMORY")
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")  # two processes opening at once migrate only once
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        current = row[0] if row is not None else 0
        if current > len(MIGRATIONS):
            raise StartupError(
                f"database schema version {current} is newer than this sagequeue's "
                f"({len(MIGRATIONS)}): upgrade sagequeue"
            )
        for statements in MIGRATIONS[current:]:
            for statement in statements:
                conn.execute(statement)
        if row is None:
            conn.execute("INSERT INTO schema_version VALUES (?)", (len(MIGRATIONS),))
        else:
            conn.execute("UPDATE schema_version SET version = ?", (len(MIGRATIONS),))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _store_error(exc: sqlite3.Error) -> InternalFailure:
    return InternalFailure(f"queue store: {exc}")


def _settle(outcomes: list[_Outcome]) -> None:
    """Resolve futures on their event loop (a future may have been cancelled meanwhile)."""
    for future, value, error in outcomes:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


class _Writer(threading.Thread):
    """Runs every write of one store instance, group-committing enqueued rows."""

    def __init__(self, durable: sqlite3.Connection, lease: sqlite3.Connection) -> None:
        super().__init__(name="sagequeue-sqlite-writer", daemon=True)
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._durable = durable
        self._lease = lease

    def run(self) -> None:
        stopping = False
        while not stopping:
            first = self.jobs.get()
            batch: list[_Job | None] = [first]
            while len(batch) < MAX_GROUP_COMMIT_ROWS:
                try:
                    batch.append(self.jobs.get_nowait())
                except queue.Empty:
                    break
            stopping = None in batch
            jobs = [job for job in batch if job is not None]
            try:
                outcomes = self._run_batch(jobs)
            except Exception as exc:  # a bug here must not leave callers waiting forever
                error = InternalFailure(f"queue store writer: {exc!r}")
                outcomes = defaultdict(list)
                for _, _, future, loop in jobs:
                    outcomes[loop].append((future, None, error))
            for loop, settled in outcomes.items():
                try:
                    loop.call_soon_threadsafe(_settle, settled)
                except RuntimeError:
                    pass  # that event loop is closed: nobody is waiting any more
        self._durable.close()
        self._lease.close()

    def _run_batch(self, jobs: list[_Job]) -> dict[asyncio.AbstractEventLoop, list[_Outcome]]:
        """Inserts first, in one transaction; then each other job in its own."""
        outcomes: dict[asyncio.AbstractEventLoop, list[_Outcome]] = defaultdict(list)
        inserts = [job for job in jobs if job[0] == _INSERT]
        if inserts:
            self._insert(inserts, outcomes)
        for kind, fn, future, loop in jobs:
            if kind == _INSERT:
                continue
            conn = self._lease if kind == _LEASE_TX else self._durable
            try:
                outcomes[loop].append((future, _transaction(conn, fn), None))
            except sqlite3.Error as exc:
                outcomes[loop].append((future, None, _store_error(exc)))
            except Exception as exc:
                outcomes[loop].append((future, None, exc))
        return outcomes

    def _insert(
        self, jobs: list[_Job], outcomes: dict[asyncio.AbstractEventLoop, list[_Outcome]]
    ) -> None:
        conn = self._durable
        rows = [job[1] for job in jobs]
        try:
            if len(rows) <= _ROWS_PER_INSERT:
                # One statement is its own transaction: the writer gives up and takes
                # back the event loop's GIL once per group commit instead of four times.
                cursor = conn.execute(_multi_row_insert(len(rows)), _flatten(rows))
                assert cursor.lastrowid is not None
                last_seq = cursor.lastrowid
            else:
                conn.execute("BEGIN IMMEDIATE")
                _insert_rows(conn, rows)
                last_seq = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
                conn.execute("COMMIT")
        except sqlite3.IntegrityError:
            # One bad row (a duplicate request id) must not fail the others it was
            # batched with: redo the batch row by row in one transaction.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._insert_one_by_one(jobs, outcomes)
            return
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            error = _store_error(exc)
            for job in jobs:
                outcomes[job[3]].append((job[2], None, error))
            return
        # The writer holds the write lock for the whole transaction, so the batch got
        # consecutive rowids ending at last_seq.
        first_seq = last_seq - len(jobs) + 1
        for offset, job in enumerate(jobs):
            outcomes[job[3]].append((job[2], first_seq + offset, None))

    def _insert_one_by_one(
        self, jobs: list[_Job], outcomes: dict[asyncio.AbstractEventLoop, list[_Outcome]]
    ) -> None:
        conn = self._durable
        results: list[tuple[Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in jobs:
                try:
                    results.append((conn.execute(_INSERT_INVOCATION, job[1]).lastrowid, None))
                except sqlite3.IntegrityError as exc:
                    results.append((None, InternalFailure(f"queue store: {exc}")))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            results = [(None, _store_error(exc))] * len(jobs)
        for job, (seq, error) in zip(jobs, results, strict=True):
            outcomes[job[3]].append((job[2], seq, error))


def _transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], Any]) -> Any:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


class SqliteStore(SqliteLogs):
    """Implements ``QueueStore``, ``MetadataStore``, ``FleetStore`` and ``LogStore``
    (sagequeue.ports) on SQLite."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._writer: _Writer | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._reader_local = threading.local()
        self._reader_connections: list[sqlite3.Connection] = []
        self._reader_connections_lock = threading.Lock()
        self._closed = True

    # ------------------------------------------------------------------ life cycle
    async def open(self) -> None:
        """Create or migrate the schema, then start the writer and reader threads."""
        durable, lease = await asyncio.to_thread(self._open_write_connections)
        self._writer = _Writer(durable, lease)
        self._writer.start()
        self._readers = ThreadPoolExecutor(READER_THREADS, thread_name_prefix="sagequeue-sqlite")
        self._closed = False

    def _open_write_connections(self) -> tuple[sqlite3.Connection, sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        durable = _connect(self.path, synchronous="FULL", cache_kib=65536)
        try:
            _migrate(durable)
            lease = _connect(self.path, synchronous="NORMAL", cache_kib=16384)
        except BaseException:
            durable.close()
            raise
        return durable, lease

    async def close(self) -> None:
        """Finish every write already submitted, then close all connections."""
        if self._closed:
            return
        self._closed = True
        writer, readers = self._writer, self._readers
        assert writer is not None and readers is not None
        writer.jobs.put(None)
        await asyncio.to_thread(writer.join)
        await asyncio.to_thread(readers.shutdown, True)
        with self._reader_connections_lock:
            for conn in self._reader_connections:
                conn.close()
            self._reader_connections.clear()

    # ------------------------------------------------------------------ plumbing
    def _submit(self, kind: int, payload: Any) -> asyncio.Future[Any]:
        if self._closed:
            raise ServiceUnavailable("the queue store is closed")
        assert self._writer is not None
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._writer.jobs.put((kind, payload, future, loop))
        return future

    async def _lease_tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` in a write transaction on the synchronous=NORMAL connection."""
        result: T = await self._submit(_LEASE_TX, fn)
        return result

    async def _durable_tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` in a write transaction on the synchronous=FULL connection."""
        result: T = await self._submit(_DURABLE_TX, fn)
        return result

    def _write_logs(self, fn: Callable[[sqlite3.Connection], Any]) -> asyncio.Future[Any]:
        return self._submit(_LEASE_TX, fn)

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._reader_local, "conn", None)
        if conn is None:
            conn = _connect(self.path, synchronous="NORMAL", cache_kib=16384)
            conn.execute("PRAGMA query_only = ON")
            self._reader_local.conn = conn
            with self._reader_connections_lock:
                self._reader_connections.append(conn)
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        if self._closed:
            raise ServiceUnavailable("the queue store is closed")

        def run() -> Any:
            try:
                return fn(self._reader())
            except sqlite3.Error as exc:
                raise _store_error(exc) from exc

        return await asyncio.get_running_loop().run_in_executor(self._readers, run)

    # ---------------------------------------------------------------- QueueStore
    async def enqueue(self, invocation: Invocation) -> None:
        """Returns once the row is committed and fsynced (group commit). Sets
        ``invocation.seq``, and ``enqueued_at`` to now when it is 0."""
        inv = invocation
        if not inv.enqueued_at:
            inv.enqueued_at = time.time()
        row = _invocation_row(inv)
        inv.seq = await self._submit(_INSERT, row)

    async def lease(
        self,
        endpoint_name: str,
        owner: str,
        limit: int,
        lease_seconds: float,
        now: float,
        *,
        variant_name: str | None = None,
    ) -> list[Invocation]:
        if limit <= 0:
            return []  # (SQLite reads LIMIT -1 as "no limit")
        params: tuple[Any, ...]
        if variant_name is None:
            sql = _LEASE_ANY_VARIANT
            params = (owner, now + lease_seconds, now, endpoint_name, limit)
        else:
            sql = _LEASE
            params = (owner, now + lease_seconds, now, endpoint_name, variant_name, limit)

        def take(conn: sqlite3.Connection) -> list[Any]:
            return conn.execute(sql, params).fetchall()

        return _in_fifo_order(await self._lease_tx(take))

    async def lease_overdue(
        self, owner: str, limit: int, lease_seconds: float, now: float
    ) -> list[Invocation]:
        if limit <= 0:
            return []

        def take(conn: sqlite3.Connection) -> list[Any]:
            params = (owner, now + lease_seconds, now, now, limit)
            return conn.execute(_LEASE_OVERDUE, params).fetchall()

        leased = [to_invocation(row) for row in await self._lease_tx(take)]
        leased.sort(key=lambda inv: (inv.expires_at, inv.seq))
        return leased

    async def renew(self, request_ids: Sequence[str], owner: str, lease_expires_at: float) -> None:
        params = [(lease_expires_at, request_id, owner) for request_id in request_ids]
        if params:
            await self._lease_tx(lambda conn: conn.executemany(_RENEW, params).rowcount)

    async def finish(
        self,
        request_id: str,
        owner: str,
        status: InvocationStatus,
        failure_reason: str | None,
        now: float,
        *,
        notifications: Sequence[OutboxMessage] = (),
    ) -> bool:
        if not InvocationStatus(status).is_final:
            raise InternalFailure(f"finish needs a final status, not {status}")
        params = (str(status), failure_reason, now, request_id, owner)
        if not notifications:
            changed = await self._lease_tx(lambda conn: conn.execute(_FINISH, params).rowcount)
            return changed == 1
        rows = [outbox_row(message) for message in notifications]

        def finish_and_record(conn: sqlite3.Connection) -> int:
            changed = conn.execute(_FINISH, params).rowcount
            if changed == 1:
                conn.executemany(_INSERT_OUTBOX, rows)
            return changed

        return await self._lease_tx(finish_and_record) == 1

    async def release(self, request_id: str, owner: str, *, attempted: bool = True) -> bool:
        params = (0 if attempted else 1, request_id, owner)
        changed = await self._lease_tx(lambda conn: conn.execute(_RELEASE, params).rowcount)
        return changed == 1

    async def requeue_lapsed(self, now: float) -> int:
        return await self._lease_tx(lambda conn: conn.execute(_REQUEUE_LAPSED, (now,)).rowcount)

    async def get(self, endpoint_name: str, inference_id: str) -> Invocation | None:
        row = await self._read(
            lambda conn: conn.execute(_GET, (endpoint_name, inference_id)).fetchone()
        )
        return to_invocation(row) if row is not None else None

    async def list_invocations(
        self,
        endpoint_name: str,
        *,
        status: InvocationStatus | None = None,
        before_seq: int | None = None,
        limit: int = 50,
    ) -> list[Invocation]:
        if limit <= 0:
            return []
        before = _NO_SEQ_LIMIT if before_seq is None else before_seq

        def page(conn: sqlite3.Connection) -> list[Any]:
            if status is not None:
                params = (endpoint_name, str(status), before, limit)
                return conn.execute(_LIST_BY_STATUS, params).fetchall()
            params_all = (endpoint_name, before, limit) * len(InvocationStatus)
            seqs = sorted((row[0] for row in conn.execute(_LIST_SEQS, params_all)), reverse=True)
            seqs = seqs[:limit]
            if not seqs:
                return []
            marks = ", ".join("?" * len(seqs))
            sql = f"SELECT {_LIST_COLUMNS} FROM invocations WHERE seq IN ({marks})"
            return conn.execute(sql, seqs).fetchall()

        rows = await self._read(page)
        rows.sort(key=lambda row: row[_SEQ_INDEX], reverse=True)
        return [to_invocation(row) for row in rows]

    async def count_by_status(self, endpoint_name: str | None = None) -> dict[str, int]:
        def count(conn: sqlite3.Connection) -> list[tuple[str, int]]:
            if endpoint_name is None:
                sql = "SELECT status, sum(n) FROM status_counts GROUP BY status"
                return conn.execute(sql).fetchall()
            sql = "SELECT status, n FROM status_counts WHERE endpoint_name = ?"
            return conn.execute(sql, (endpoint_name,)).fetchall()

        counts = {status.value: 0 for status in InvocationStatus}
        for status, n in await self._read(count):
            counts[status] = n
        return counts

    async def purge_finished(self, finished_before: float, limit: int) -> int:
        if limit <= 0:
            return 0
        params = (finished_before, limit)
        return await self._lease_tx(lambda conn: conn.execute(_PURGE_FINISHED, params).rowcount)

    # --------------------------------------------------------------- OutboxStore
    async def lease_notifications(
        self, owner: str, limit: int, lease_seconds: float, now: float
    ) -> list[OutboxMessage]:
        if limit <= 0:
            return []
        params = (owner, now + lease_seconds, now, limit)
        rows = await self._lease_tx(lambda conn: conn.execute(_LEASE_OUTBOX, params).fetchall())
        leased = [to_outbox_message(row) for row in rows]
        leased.sort(key=lambda message: message.seq or 0)
        return leased

    async def notification_delivered(self, message_id: str, owner: str, now: float) -> bool:
        params = (now, message_id, owner)
        changed = await self._lease_tx(
            lambda conn: conn.execute(_OUTBOX_DELIVERED, params).rowcount
        )
        return changed == 1

    async def notification_retry(
        self, message_id: str, owner: str, next_attempt_at: float, error: str
    ) -> bool:
        params = (next_attempt_at, error, message_id, owner)
        changed = await self._lease_tx(lambda conn: conn.execute(_OUTBOX_RETRY, params).rowcount)
        return changed == 1

    async def notification_failed(
        self, message_id: str, owner: str, now: float, error: str
    ) -> bool:
        def fail(conn: sqlite3.Connection) -> bool:
            row = conn.execute(_OUTBOX_FAILED, (now, error, message_id, owner)).fetchone()
            if row is None:
                return False
            conn.execute(_COUNT_FAILURE, (row[0],))
            return True

        return await self._lease_tx(fail)

    async def notification_failure_counts(self) -> dict[str, int]:
        sql = "SELECT endpoint_name, n FROM notification_failures"
        return dict(await self._read(lambda conn: conn.execute(sql).fetchall()))

    async def notifications_of(self, endpoint_name: str, inference_id: str) -> list[OutboxMessage]:
        sql = (
            f"SELECT {_OUTBOX_COLUMNS} FROM notification_outbox "
            "WHERE endpoint_name = ? AND inference_id = ? ORDER BY seq"
        )
        params = (endpoint_name, inference_id)
        rows = await self._read(lambda conn: conn.execute(sql, params).fetchall())
        return [to_outbox_message(row) for row in rows]

    async def purge_notifications(
        self, delivered_before: float, failed_before: float, limit: int
    ) -> int:
        if limit <= 0:
            return 0
        later = max(delivered_before, failed_before)
        params = (later, delivered_before, failed_before, limit)
        return await self._lease_tx(lambda conn: conn.execute(_PURGE_OUTBOX, params).rowcount)

    async def oldest_queued(self, endpoint_name: str, variant_name: str) -> float | None:
        row = await self._read(
            lambda conn: conn.execute(_OLDEST_QUEUED, (endpoint_name, variant_name)).fetchone()
        )
        return row[0] if row is not None else None

    # ---------------------------------------------------------------- MetricsStore
    async def record_metrics(self, writer: str, points: Sequence[MetricPoint]) -> None:
        if not points:
            return
        rows = [_metric_row(point) for point in points]

        def record(conn: sqlite3.Connection) -> None:
            for row in rows:
                _merge_metric(conn, "metric_points", _POINT_KEY, (row[3], *row[:3], writer), row)
                _merge_metric(conn, "metric_totals", _TOTAL_KEY, (*row[:3], writer), row)

        await self._lease_tx(record)

    async def read_metrics(
        self,
        start: int,
        end: int,
        *,
        metrics: Sequence[str] | None = None,
        endpoint_name: str | None = None,
    ) -> list[MetricPoint]:
        sql = (
            "SELECT metric, endpoint_name, variant_name, period_start, sum, count, minimum, "
            "maximum, buckets FROM metric_points WHERE period_start >= ? AND period_start < ?"
        )
        params: list[Any] = [start, end]
        if metrics is not None:
            if not metrics:
                return []
            sql += f" AND metric IN ({', '.join('?' * len(metrics))})"
            params.extend(metrics)
        if endpoint_name is not None:
            sql += " AND endpoint_name = ?"
            params.append(endpoint_name)
        rows = await self._read(lambda conn: conn.execute(sql, params).fetchall())
        return merge_points(_to_point(row) for row in rows)

    async def metric_totals(self) -> list[MetricPoint]:
        sql = (
            "SELECT metric, endpoint_name, variant_name, 0, sum, count, minimum, maximum, "
            "buckets FROM metric_totals"
        )
        rows = await self._read(lambda conn: conn.execute(sql).fetchall())
        return merge_points(_to_point(row) for row in rows)

    async def purge_metrics(self, before: int, limit: int) -> int:
        if limit <= 0:
            return 0
        sql = """
            DELETE FROM metric_points WHERE (period_start, metric, endpoint_name,
                variant_name, writer) IN (
                SELECT period_start, metric, endpoint_name, variant_name, writer
                FROM metric_points WHERE period_start < ? ORDER BY period_start LIMIT ?
            )
        """
        return await self._lease_tx(lambda conn: conn.execute(sql, (before, limit)).rowcount)

    # ---------------------------------------------------------------- FleetStore
    async def register_worker(self, worker: WorkerRecord) -> None:
        params = (
            worker.worker_id,
            worker.host,
            worker.pid,
            worker.max_instances,
            ",".join(worker.endpoints),
            worker.started_at,
            worker.heartbeat_at,
            worker.heartbeat_expires_at,
        )
        sql = f"INSERT INTO workers ({_WORKER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        await self._lease_tx(lambda conn: conn.execute(sql, params))

    async def heartbeat(self, worker_id: str, now: float, expires_at: float) -> bool:
        sql = "UPDATE workers SET heartbeat_at = ?, heartbeat_expires_at = ? WHERE worker_id = ?"
        params = (now, expires_at, worker_id)
        changed = await self._lease_tx(lambda conn: conn.execute(sql, params).rowcount)
        return changed == 1

    async def remove_worker(self, worker_id: str) -> None:
        def remove(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM instances WHERE worker_id = ?", (worker_id,))
            conn.execute("DELETE FROM workers WHERE worker_id = ?", (worker_id,))

        await self._lease_tx(remove)

    async def reap_workers(self, now: float) -> list[str]:
        def reap(conn: sqlite3.Connection) -> list[str]:
            sql = "SELECT worker_id FROM workers WHERE heartbeat_expires_at < ?"
            dead = [row[0] for row in conn.execute(sql, (now,)).fetchall()]
            for worker_id in dead:
                conn.execute(_REQUEUE_OWNED, (worker_id,))
                conn.execute("DELETE FROM instances WHERE worker_id = ?", (worker_id,))
                conn.execute("DELETE FROM workers WHERE worker_id = ?", (worker_id,))
            return dead

        return await self._lease_tx(reap)

    async def list_workers(self) -> list[WorkerRecord]:
        sql = f"SELECT {_WORKER_COLUMNS} FROM workers ORDER BY started_at, worker_id"
        rows = await self._read(lambda conn: conn.execute(sql).fetchall())
        return [_to_worker(row) for row in rows]

    async def claim_instance(self, claim: InstanceClaim) -> bool:
        # Only a registered worker may claim: one reaped meanwhile gets False.
        sql = f"""
            INSERT INTO instances ({_INSTANCE_COLUMNS})
            SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?
            WHERE EXISTS (SELECT 1 FROM workers WHERE worker_id = ?)
            ON CONFLICT DO NOTHING
        """
        params = (*instance_row(claim), claim.worker_id)
        changed = await self._lease_tx(lambda conn: conn.execute(sql, params).rowcount)
        return changed == 1

    async def set_instance_state(
        self, claim: InstanceClaim, state: InstanceState, detail: str | None, now: float
    ) -> bool:
        sql = f"""
            UPDATE instances SET state = ?, detail = ?, updated_at = ?
            WHERE {_INSTANCE_KEY} AND worker_id = ?
        """
        params = (str(state), detail, now, *instance_key(claim), claim.worker_id)
        changed = await self._lease_tx(lambda conn: conn.execute(sql, params).rowcount)
        return changed == 1

    async def release_instance(self, claim: InstanceClaim) -> bool:
        sql = f"DELETE FROM instances WHERE {_INSTANCE_KEY} AND worker_id = ?"
        params = (*instance_key(claim), claim.worker_id)
        changed = await self._lease_tx(lambda conn: conn.execute(sql, params).rowcount)
        return changed == 1

    async def list_instances(self, endpoint_name: str | None = None) -> list[InstanceClaim]:
        order = "ORDER BY endpoint_name, variant_name, generation, slot"
        params: tuple[str, ...] = ()
        if endpoint_name is None:
            sql = f"SELECT {_INSTANCE_COLUMNS} FROM instances {order}"
        else:
            sql = f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE endpoint_name = ? {order}"
            params = (endpoint_name.lower(),)
        rows = await self._read(lambda conn: conn.execute(sql, params).fetchall())
        return [to_instance(row) for row in rows]

    async def acquire_lease(self, name: str, holder: str, now: float, expires_at: float) -> bool:
        sql = """
            INSERT INTO singleton_leases (name, holder, expires_at) VALUES (?, ?, ?)
            ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
                expires_at = excluded.expires_at
            WHERE singleton_leases.holder = excluded.holder OR singleton_leases.expires_at < ?
        """
        params = (name, holder, expires_at, now)
        changed = await self._lease_tx(lambda conn: conn.execute(sql, params).rowcount)
        return changed == 1

    async def release_lease(self, name: str, holder: str) -> None:
        sql = "DELETE FROM singleton_leases WHERE name = ? AND holder = ?"
        await self._lease_tx(lambda conn: conn.execute(sql, (name, holder)))

    # ------------------------------------------------------------- MetadataStore
    async def create_resource(self, resource: Resource) -> bool:
        params = (
            str(resource.kind),
            resource.name,
            resource.name.lower(),
            msgspec.json.encode(resource.doc),
            resource.version,
            resource.created_at,
        )
        sql = (
            "INSERT INTO resources (kind, name, name_lower, doc, version, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
        )
        changed = await self._durable_tx(lambda conn: conn.execute(sql, params).rowcount)
        return changed == 1

    async def get_resource(self, kind: ResourceKind, name: str) -> Resource | None:
        sql = f"SELECT {_RESOURCE_COLUMNS} FROM resources WHERE kind = ? AND name_lower = ?"
        params = (str(kind), name.lower())
        row = await self._read(lambda conn: conn.execute(sql, params).fetchone())
        return to_resource(row) if row is not None else None

    async def list_resources(self, kind: ResourceKind) -> list[Resource]:
        """Oldest first (by created_at, then name)."""
        sql = (
            f"SELECT {_RESOURCE_COLUMNS} FROM resources WHERE kind = ? "
            "ORDER BY created_at, name_lower"
        )
        rows = await self._read(lambda conn: conn.execute(sql, (str(kind),)).fetchall())
        return [to_resource(row) for row in rows]

    async def update_resource(self, resource: Resource) -> bool:
        sql = (
            "UPDATE resources SET doc = ?, version = version + 1 "
            "WHERE kind = ? AND name_lower = ? AND version = ?"
        )
        params = (
            msgspec.json.encode(resource.doc),
            str(resource.kind),
            resource.name.lower(),
            resource.version,
        )
        changed = await self._durable_tx(lambda conn: conn.execute(sql, params).rowcount)
        if changed != 1:
            return False
        resource.version += 1
        return True

    async def delete_resource(self, kind: ResourceKind, name: str) -> bool:
        sql = "DELETE FROM resources WHERE kind = ? AND name_lower = ?"
        params = (str(kind), name.lower())
        changed = await self._durable_tx(lambda conn: conn.execute(sql, params).rowcount)
        return changed == 1


_POINT_KEY: Final = (
    "period_start = ? AND metric = ? AND endpoint_name = ? AND variant_name = ? AND writer = ?"
)
_TOTAL_KEY: Final = "metric = ? AND endpoint_name = ? AND variant_name = ? AND writer = ?"


def _metric_row(point: MetricPoint) -> tuple[Any, ...]:
    return (
        point.metric,
        point.endpoint_name,
        point.variant_name,
        point.period_start,
        point.sum,
        point.count,
        point.minimum,
        point.maximum,
        ",".join(map(str, point.buckets)),
    )


def _merge_metric(
    conn: sqlite3.Connection, table: str, key_sql: str, key: tuple[Any, ...], row: tuple[Any, ...]
) -> None:
    """Add one aggregate to a writer's row (only that writer writes it: read, merge,
    write in the writer's transaction). ``key`` holds the values of ``key_sql``."""
    total, count, minimum, maximum, buckets = row[4:]
    found = conn.execute(
        f"SELECT sum, count, minimum, maximum, buckets FROM {table} WHERE {key_sql}", key
    ).fetchone()
    if found is not None:
        total += found[0]
        count += found[1]
        minimum = min(minimum, found[2])
        maximum = max(maximum, found[3])
        buckets = ",".join(map(str, add_buckets(_parse_buckets(found[4]), _parse_buckets(buckets))))
    key_columns = key_sql.replace(" = ?", "").replace(" AND ", ", ")
    conn.execute(
        f"INSERT OR REPLACE INTO {table} ({key_columns}, sum, count, minimum, maximum, buckets) "
        f"VALUES ({', '.join('?' * (len(key) + 5))})",
        (*key, total, count, minimum, maximum, buckets),
    )


def _parse_buckets(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in text.split(",")) if text else ()


def _to_point(row: Sequence[Any]) -> MetricPoint:
    metric, endpoint, variant, period_start, total, count, minimum, maximum, buckets = row
    return MetricPoint(
        metric,
        endpoint,
        variant,
        period_start,
        total,
        count,
        minimum,
        maximum,
        _parse_buckets(buckets),
    )


def _in_fifo_order(rows: list[Any]) -> list[Invocation]:
    # RETURNING gives rows in no defined order.
    rows.sort(key=lambda row: row[_SEQ_INDEX])
    return [to_invocation(row) for row in rows]


def _to_worker(row: Sequence[Any]) -> WorkerRecord:
    worker_id, host, pid, max_instances, endpoints, started, beat, expires = row
    names = tuple(name for name in endpoints.split(",") if name)
    return WorkerRecord(worker_id, host, pid, max_instances, names, started, beat, expires)

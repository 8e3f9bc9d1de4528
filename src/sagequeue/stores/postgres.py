"""Queue + metadata + fleet store on PostgreSQL: many processes on many hosts share it.

Semantics are SqliteStore's (the contract suite in tests/contract is the spec); how they
are reached on PostgreSQL:

* **Pools.** psycopg 3 (async) with two ``psycopg_pool`` pools of autocommit connections:
  a *durable* one (enqueue, metadata writes) committing with ``synchronous_commit = on``,
  and a *lease* one for lease transitions, fleet rows and reads, committing with
  ``synchronous_commit = off`` -- what SQLite's ``synchronous=NORMAL`` connection is: a
  crash of the database server may lose the last few lease transitions, which is safe
  (the row goes back to an older state and runs again), never an acknowledged enqueue.
* **Group commit.** ``enqueue`` queues its row; a flusher task inserts every pending row
  with one ``INSERT ... SELECT FROM unnest(arrays)`` (one statement, one transaction,
  one round trip) and resolves all their futures. Rows arriving while it commits make
  the next batch. A duplicate request id fails only its own ``enqueue``
  (``ON CONFLICT DO NOTHING``: the rows it did not return are the refused ones).
* **Leases** are one statement: ``UPDATE ... WHERE seq = ANY(ARRAY(SELECT seq ... ORDER
  BY seq LIMIT n FOR UPDATE SKIP LOCKED)) RETURNING ...``: FIFO per endpoint and variant,
  and concurrent leasers skip each other's rows instead of waiting. (``= ANY(ARRAY(...))``
  runs the sub-select once; with ``IN (...)`` a plan may re-run it and take more than n.)
* **Partial indices** hold only the rows each query looks for (queued, leased, finished),
  so lease / lease_overdue / requeue_lapsed / purge_finished / get cost O(log n) however
  many finished rows the table holds.
* **Status counts** are sharded counter rows kept by statement-level triggers (transition
  tables): each statement adds its per-status deltas to the rows of its backend's shard
  (``pg_backend_pid() % 64``), so concurrent enqueues from different connections never
  queue on one hot row; ``count_by_status`` sums the shards.
* **Wake-ups.** The insert trigger also does ``pg_notify('sagequeue_wakeups', endpoint)``
  once per endpoint per statement (so once per group commit), delivered at commit to
  every listening process on every host (``postgres_wakeups.PostgresWakeups``); rows put
  back to Queued (release, lapsed leases, reaped workers) ring too.
* **Migrations** are versioned and applied under ``pg_advisory_lock`` by the first
  process; the others wait on the lock and find the schema current. A database at a
  newer version than this code refuses to start.
* **Outages.** A connection error, or a database that cannot be reached, raises
  ``ServiceUnavailable`` (503, which AWS SDKs retry); an enqueue whose commit did not
  succeed or whose outcome is unknown never returns normally. The pools reconnect in the
  background, so calls work again once the database is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Final

import msgspec
import psycopg
import psycopg.conninfo
import psycopg_pool

from sagequeue.domain.errors import InternalFailure, ServiceUnavailable, StartupError
from sagequeue.domain.metrics import merge_points
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
from sagequeue.stores.postgres_logs import LOG_MIGRATION, PostgresLogs
from sagequeue.stores.rows import (
    instance_key,
    instance_row,
    outbox_row,
    to_instance,
    to_invocation,
    to_outbox_message,
    to_resource,
)

log = logging.getLogger("sagequeue.postgres")

WAKEUP_CHANNEL: Final = "sagequeue_wakeups"
# Notified (payload: the endpoint name) when invocations change status: event feeds wait
# on it (``postgres_wakeups.PostgresChangeNotices``).
CHANGES_CHANNEL: Final = "sagequeue_changes"
# Any number that no other application's advisory lock on the same database uses.
MIGRATION_LOCK_KEY: Final = 0x5A6E_0001
MAX_GROUP_COMMIT_ROWS: Final = 4096  # bounds one statement's size under a burst
# Concurrent group commits: one commits while the next batch gathers (measured: more
# flushers made smaller batches and no more enqueues per second).
FLUSHERS: Final = 1
CONNECT_TIMEOUT_SECONDS: Final = 10
# How long a call waits for a pooled connection before it answers 503: while the
# database is down, no connection comes.
POOL_TIMEOUT_SECONDS: Final = 3.0
# The pool retries a lost connection with exponential backoff (1, 2, 4 s...); giving up
# after this long keeps the retries ~1 s apart instead, so a database that comes back
# after a long outage is used within a second or two (a call that finds the pool empty
# starts a new attempt at once).
RECONNECT_TIMEOUT_SECONDS: Final = 2.0
COUNTER_SHARDS: Final = 64

# Invocation columns in the order of the ``Invocation`` dataclass fields, so that a row
# becomes an Invocation with ``Invocation(*row)``.
_COLUMNS: Final = (
    "request_id, inference_id, endpoint_name, output_location, failure_location, "
    "input_location, inline_body, content_type, accept, custom_attributes, "
    "request_ttl_seconds, invocation_timeout_seconds, status, failure_reason, "
    "enqueued_at, started_at, finished_at, attempts, lease_owner, lease_expires_at, seq, "
    "variant_name"
)
_SEQ_INDEX: Final = [c.strip() for c in _COLUMNS.split(",")].index("seq")

_FINISHED: Final = "('Completed', 'Failed', 'Expired')"

# Schema migrations: entry i brings the schema from version i to i + 1. Never edit a
# released entry; append a new one.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """
        CREATE TABLE invocations (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- FIFO order
            request_id text NOT NULL UNIQUE,
            inference_id text NOT NULL,
            endpoint_name text NOT NULL,
            output_location text NOT NULL,
            failure_location text NOT NULL,
            input_location text,
            inline_body bytea,
            content_type text,
            accept text,
            custom_attributes text,
            request_ttl_seconds integer NOT NULL,
            invocation_timeout_seconds integer NOT NULL,
            status text NOT NULL,
            failure_reason text,
            enqueued_at double precision NOT NULL,
            started_at double precision,
            finished_at double precision,
            attempts integer NOT NULL DEFAULT 0,
            lease_owner text,
            lease_expires_at double precision,
            variant_name text NOT NULL DEFAULT '',
            expires_at double precision NOT NULL  -- enqueued_at + request_ttl_seconds
        )
        """,
        # Partial indices: each holds only the rows its query looks for.
        """
        CREATE INDEX invocations_queued ON invocations (endpoint_name, variant_name, seq)
        WHERE status = 'Queued'
        """,
        "CREATE INDEX invocations_overdue ON invocations (expires_at) WHERE status = 'Queued'",
        """
        CREATE INDEX invocations_leased ON invocations (lease_expires_at)
        WHERE status = 'InProgress'
        """,
        f"""
        CREATE INDEX invocations_finished ON invocations (finished_at)
        WHERE status IN {_FINISHED}
        """,
        """
        CREATE INDEX invocations_by_inference_id
        ON invocations (endpoint_name, inference_id, seq)
        """,
        # Status counts: per (endpoint, status) one row per shard, summed on read.
        """
        CREATE TABLE status_counts (
            endpoint_name text NOT NULL,
            status text NOT NULL,
            shard integer NOT NULL,
            n bigint NOT NULL,
            PRIMARY KEY (endpoint_name, status, shard)
        )
        """,
        # Deltas are written in (endpoint, status) order, so two statements of one shard
        # lock their counter rows in the same order and cannot deadlock.
        f"""
        CREATE FUNCTION sagequeue_invocations_inserted() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO status_counts AS c (endpoint_name, status, shard, n)
            SELECT endpoint_name, status, pg_backend_pid() % {COUNTER_SHARDS}, count(*)
            FROM new_rows GROUP BY endpoint_name, status ORDER BY endpoint_name, status
            ON CONFLICT (endpoint_name, status, shard) DO UPDATE SET n = c.n + excluded.n;
            PERFORM pg_notify('{WAKEUP_CHANNEL}', endpoint_name)
            FROM (SELECT DISTINCT endpoint_name FROM new_rows WHERE status = 'Queued') AS e;
            RETURN NULL;
        END
        $$
        """,
        f"""
        CREATE FUNCTION sagequeue_invocations_updated() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO status_counts AS c (endpoint_name, status, shard, n)
            SELECT endpoint_name, status, pg_backend_pid() % {COUNTER_SHARDS}, sum(delta)
            FROM (
                SELECT endpoint_name, status, 1 AS delta FROM new_rows
                UNION ALL
                SELECT endpoint_name, status, -1 AS delta FROM old_rows
            ) AS changes
            GROUP BY endpoint_name, status HAVING sum(delta) <> 0
            ORDER BY endpoint_name, status
            ON CONFLICT (endpoint_name, status, shard) DO UPDATE SET n = c.n + excluded.n;
            -- Work put back in the queue wakes dispatchers as new work does.
            PERFORM pg_notify('{WAKEUP_CHANNEL}', endpoint_name)
            FROM (
                SELECT DISTINCT n.endpoint_name FROM new_rows AS n JOIN old_rows AS o USING (seq)
                WHERE n.status = 'Queued' AND o.status <> 'Queued'
            ) AS e;
            RETURN NULL;
        END
        $$
        """,
        f"""
        CREATE FUNCTION sagequeue_invocations_deleted() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO status_counts AS c (endpoint_name, status, shard, n)
            SELECT endpoint_name, status, pg_backend_pid() % {COUNTER_SHARDS}, -count(*)
            FROM old_rows GROUP BY endpoint_name, status ORDER BY endpoint_name, status
            ON CONFLICT (endpoint_name, status, shard) DO UPDATE SET n = c.n + excluded.n;
            RETURN NULL;
        END
        $$
        """,
        """
        CREATE TRIGGER invocations_counted_insert AFTER INSERT ON invocations
        REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION sagequeue_invocations_inserted()
        """,
        """
        CREATE TRIGGER invocations_counted_update AFTER UPDATE ON invocations
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION sagequeue_invocations_updated()
        """,
        """
        CREATE TRIGGER invocations_counted_delete AFTER DELETE ON invocations
        REFERENCING OLD TABLE AS old_rows
        FOR EACH STATEMENT EXECUTE FUNCTION sagequeue_invocations_deleted()
        """,
        """
        CREATE TABLE resources (
            kind text NOT NULL,
            name text NOT NULL,
            name_lower text NOT NULL,  -- SageMaker names compare case-insensitively
            doc json NOT NULL,  -- the Describe* JSON document, as written
            version integer NOT NULL,
            created_at double precision NOT NULL,
            PRIMARY KEY (kind, name_lower)
        )
        """,
        """
        CREATE TABLE workers (
            worker_id text PRIMARY KEY,
            host text NOT NULL,
            pid integer NOT NULL,
            max_instances integer NOT NULL,
            endpoints text[] NOT NULL,  -- lower-cased names; empty = all
            started_at double precision NOT NULL,
            heartbeat_at double precision NOT NULL,
            heartbeat_expires_at double precision NOT NULL
        )
        """,
        # The foreign key makes a claim and the reaping of its worker exclude each other
        # (the claim locks the worker row; deleting the worker deletes its claims).
        """
        CREATE TABLE instances (
            endpoint_name text NOT NULL,
            variant_name text NOT NULL,
            generation integer NOT NULL,
            slot integer NOT NULL,
            worker_id text NOT NULL REFERENCES workers ON DELETE CASCADE,
            state text NOT NULL,
            claimed_at double precision NOT NULL,
            updated_at double precision NOT NULL,
            detail text,
            PRIMARY KEY (endpoint_name, variant_name, generation, slot)
        )
        """,
        "CREATE INDEX instances_by_worker ON instances (worker_id)",
        """
        CREATE TABLE singleton_leases (
            name text PRIMARY KEY,
            holder text NOT NULL,
            expires_at double precision NOT NULL
        )
        """,
    ),
    (
        # Metrics: per-period aggregates, one row per writer process (no row is hot).
        """
        CREATE TABLE metric_points (
            period_start bigint NOT NULL,  -- epoch ms
            metric text NOT NULL,
            endpoint_name text NOT NULL,
            variant_name text NOT NULL,
            writer text NOT NULL,
            sum double precision NOT NULL,
            count double precision NOT NULL,
            minimum double precision NOT NULL,
            maximum double precision NOT NULL,
            buckets bigint[] NOT NULL,  -- histogram bucket counts; empty for none
            PRIMARY KEY (period_start, metric, endpoint_name, variant_name, writer)
        )
        """,
        "CREATE INDEX metric_points_series ON metric_points (metric, endpoint_name, period_start)",
        # Each writer's running totals (never purged: Prometheus counters).
        """
        CREATE TABLE metric_totals (
            metric text NOT NULL,
            endpoint_name text NOT NULL,
            variant_name text NOT NULL,
            writer text NOT NULL,
            sum double precision NOT NULL,
            count double precision NOT NULL,
            minimum double precision NOT NULL,
            maximum double precision NOT NULL,
            buckets bigint[] NOT NULL,
            PRIMARY KEY (metric, endpoint_name, variant_name, writer)
        )
        """,
    ),
    LOG_MIGRATION,  # model logs (CloudWatch Logs API): sagequeue.stores.postgres_logs
    (
        # Notification outbox (written by finish, in its transaction; notify branch).
        """
        CREATE TABLE notification_outbox (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            message_id text NOT NULL UNIQUE,
            endpoint_name text NOT NULL,
            inference_id text NOT NULL,
            topic text NOT NULL,
            body bytea NOT NULL,
            created_at double precision NOT NULL,
            state text NOT NULL,
            next_attempt_at double precision NOT NULL,  -- due; while leased, lease's end
            attempts integer NOT NULL DEFAULT 0,
            lease_owner text,
            finished_at double precision,
            last_error text
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
        ON notification_outbox (endpoint_name, inference_id, seq)
        """,
        # NotificationFailures per endpoint: kept when the outbox rows are purged.
        """
        CREATE TABLE notification_failures (
            endpoint_name text PRIMARY KEY,
            n bigint NOT NULL
        )
        """,
        # Change notices for event feeds: once per endpoint per statement that changed
        # some of its invocations' status (delivered at commit to every listener).
        f"""
        CREATE FUNCTION sagequeue_invocations_changed() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANGES_CHANNEL}', endpoint_name)
            FROM (
                SELECT DISTINCT n.endpoint_name FROM new_rows AS n JOIN old_rows AS o USING (seq)
                WHERE n.status <> o.status
            ) AS e;
            RETURN NULL;
        END
        $$
        """,
        """
        CREATE TRIGGER invocations_changed AFTER UPDATE ON invocations
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION sagequeue_invocations_changed()
        """,
    ),
    (
        # Listing an endpoint's invocations newest first, by status (the console): a page
        # is one backward range read per status, whatever the number of rows.
        "CREATE INDEX invocations_by_status ON invocations (endpoint_name, status, seq)",
    ),
    (
        # FIFO order of the queue as an expression that only this index gives (see
        # _FIFO): ordered by plain seq, the planner walked the primary key through every
        # finished row below a large backlog, half a second per lease.
        """
        CREATE INDEX invocations_queued_fifo
        ON invocations (endpoint_name, variant_name, (seq + 0)) WHERE status = 'Queued'
        """,
        "DROP INDEX invocations_queued",
    ),
)
SCHEMA_VERSION: Final = len(MIGRATIONS)

# Rows of one group commit go in as one array per column; ORDER BY keeps their seq in
# arrival order. The rows not returned were refused (a duplicate request id). Arrays are
# sent in binary (%b): it halved the client's CPU per enqueue against text.
_INSERT_BATCH: Final = """
    INSERT INTO invocations (
        request_id, inference_id, endpoint_name, output_location, failure_location,
        input_location, inline_body, content_type, accept, custom_attributes,
        request_ttl_seconds, invocation_timeout_seconds, status, enqueued_at, attempts,
        variant_name, expires_at)
    SELECT r, i, e, o, f, il, b, ct, a, ca, ttl, tmo, 'Queued', q, att, v, q + ttl
    FROM unnest(
        %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::bytea[],
        %b::text[], %b::text[], %b::text[], %b::int4[], %b::int4[], %b::float8[],
        %b::int4[], %b::text[]
    ) WITH ORDINALITY AS u(r, i, e, o, f, il, b, ct, a, ca, ttl, tmo, q, att, v, ord)
    ORDER BY ord
    ON CONFLICT (request_id) DO NOTHING
    RETURNING request_id, seq
"""
_INSERT_ONE: Final = """
    INSERT INTO invocations (
        request_id, inference_id, endpoint_name, output_location, failure_location,
        input_location, inline_body, content_type, accept, custom_attributes,
        request_ttl_seconds, invocation_timeout_seconds, status, enqueued_at, attempts,
        variant_name, expires_at)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'Queued', %s, %s, %s, %s)
    RETURNING seq
"""
# The queue's FIFO order. Plain ``seq`` is also the primary key's order, and the planner,
# which assumes queued rows are spread evenly among finished ones, may walk the primary
# key and filter, though finished rows hold the low seqs and the backlog the high ones.
# ``seq + 0`` is the same order but only invocations_queued_fifo provides it.
_FIFO: Final = "seq + 0"
_TAKE: Final = """
    UPDATE invocations
    SET status = 'InProgress', lease_owner = %s, lease_expires_at = %s, started_at = %s,
        attempts = attempts + 1
    WHERE seq = ANY(ARRAY(
        SELECT seq FROM invocations WHERE {where} LIMIT %s FOR UPDATE SKIP LOCKED
    ))
    RETURNING {columns}
"""
_LEASE: Final = _TAKE.format(
    where=f"endpoint_name = %s AND variant_name = %s AND status = 'Queued' ORDER BY {_FIFO}",
    columns=_COLUMNS,
)
# Any variant (an endpoint being torn down): not on a hot path.
_LEASE_ANY_VARIANT: Final = _TAKE.format(
    where=f"endpoint_name = %s AND status = 'Queued' ORDER BY {_FIFO}", columns=_COLUMNS
)
_LEASE_OVERDUE: Final = _TAKE.format(
    where="status = 'Queued' AND expires_at < %s ORDER BY expires_at", columns=_COLUMNS
)
_RENEW: Final = """
    UPDATE invocations SET lease_expires_at = %s
    WHERE request_id = ANY(%s::text[]) AND status = 'InProgress' AND lease_owner = %s
"""
_FINISH: Final = """
    UPDATE invocations
    SET status = %s, failure_reason = %s, finished_at = %s, lease_expires_at = NULL
    WHERE request_id = %s AND status = 'InProgress' AND lease_owner = %s
"""
_RELEASE: Final = """
    UPDATE invocations
    SET status = 'Queued', lease_owner = NULL, lease_expires_at = NULL, started_at = NULL,
        attempts = attempts - %s
    WHERE request_id = %s AND status = 'InProgress' AND lease_owner = %s
"""
_REQUEUE_LAPSED: Final = """
    UPDATE invocations
    SET status = 'Queued', lease_owner = NULL, lease_expires_at = NULL, started_at = NULL
    WHERE status = 'InProgress' AND lease_expires_at < %s
"""
_PURGE_FINISHED: Final = f"""
    DELETE FROM invocations WHERE seq = ANY(ARRAY(
        SELECT seq FROM invocations
        WHERE status IN {_FINISHED} AND finished_at < %s
        ORDER BY finished_at LIMIT %s FOR UPDATE SKIP LOCKED
    ))
"""
_GET: Final = f"""
    SELECT {_COLUMNS} FROM invocations
    WHERE endpoint_name = %s AND inference_id = %s ORDER BY seq DESC LIMIT 1
"""
# A listing reads no request bodies (up to 128,000 bytes each).
_LIST_COLUMNS: Final = _COLUMNS.replace("inline_body", "NULL::bytea")
_LIST_BY_STATUS: Final = f"""
    SELECT {_LIST_COLUMNS} FROM invocations
    WHERE endpoint_name = %s AND status = %s AND seq < %s ORDER BY seq DESC LIMIT %s
"""
# Every status: the newest seqs of each (one index range read per status), merged and
# cut to the page, whose rows are then read by seq.
_LIST_SEQS: Final = " UNION ALL ".join(
    f"""(SELECT seq FROM invocations
        WHERE endpoint_name = %(endpoint)s AND status = '{status.value}' AND seq < %(before)s
        ORDER BY seq DESC LIMIT %(limit)s)"""
    for status in InvocationStatus
)
_LIST_BY_SEQS: Final = f"""
    SELECT {_LIST_COLUMNS} FROM invocations
    WHERE seq = ANY(ARRAY(SELECT seq FROM ({_LIST_SEQS}) AS s ORDER BY seq DESC LIMIT %(limit)s))
"""
_NO_SEQ_LIMIT: Final = 2**63 - 1
_REQUEUE_OWNED: Final = """
    UPDATE invocations
    SET status = 'Queued', lease_owner = NULL, lease_expires_at = NULL, started_at = NULL
    WHERE status = 'InProgress' AND lease_owner = ANY(%s::text[])
"""
# ---- notification outbox
_OUTBOX_COLUMNS: Final = (
    "message_id, endpoint_name, inference_id, topic, body, created_at, state, "
    "next_attempt_at, attempts, lease_owner, finished_at, last_error, seq"
)
_INSERT_OUTBOX: Final = f"""
    INSERT INTO notification_outbox ({_OUTBOX_COLUMNS.replace(", seq", "")})
    VALUES ({", ".join(["%s"] * 12)})
    ON CONFLICT (message_id) DO NOTHING
"""
_LEASE_OUTBOX: Final = f"""
    UPDATE notification_outbox
    SET lease_owner = %s, next_attempt_at = %s, attempts = attempts + 1
    WHERE seq = ANY(ARRAY(
        SELECT seq FROM notification_outbox
        WHERE state = 'Pending' AND next_attempt_at <= %s
        ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED
    ))
    RETURNING {_OUTBOX_COLUMNS}
"""
_OUTBOX_HELD: Final = "message_id = %s AND state = 'Pending' AND lease_owner = %s"
_OUTBOX_DELIVERED: Final = f"""
    UPDATE notification_outbox
    SET state = 'Delivered', finished_at = %s, lease_owner = NULL, last_error = NULL
    WHERE {_OUTBOX_HELD}
"""
_OUTBOX_RETRY: Final = f"""
    UPDATE notification_outbox SET next_attempt_at = %s, lease_owner = NULL, last_error = %s
    WHERE {_OUTBOX_HELD}
"""
# Failed, and counted in the same statement.
_OUTBOX_FAILED: Final = f"""
    WITH failed AS (
        UPDATE notification_outbox
        SET state = 'Failed', finished_at = %s, lease_owner = NULL, last_error = %s
        WHERE {_OUTBOX_HELD}
        RETURNING endpoint_name
    )
    INSERT INTO notification_failures AS f (endpoint_name, n)
    SELECT endpoint_name, 1 FROM failed
    ON CONFLICT (endpoint_name) DO UPDATE SET n = f.n + 1
"""
# Parameters: the later cutoff (for the index), the Delivered one, the Failed one, limit.
_PURGE_OUTBOX: Final = """
    DELETE FROM notification_outbox WHERE seq = ANY(ARRAY(
        SELECT seq FROM notification_outbox
        WHERE state <> 'Pending' AND finished_at < %s
            AND ((state = 'Delivered' AND finished_at < %s)
                OR (state = 'Failed' AND finished_at < %s))
        ORDER BY finished_at LIMIT %s FOR UPDATE SKIP LOCKED
    ))
"""
_OLDEST_QUEUED: Final = f"""
    SELECT enqueued_at FROM invocations
    WHERE endpoint_name = %s AND variant_name = %s AND status = 'Queued'
    ORDER BY {_FIFO} LIMIT 1
"""
# One writer's aggregate merged into its row: sums and counts added, min / max widened,
# histogram buckets added element by element.
_MERGE_SET: Final = """
    sum = m.sum + excluded.sum,
    count = m.count + excluded.count,
    minimum = least(m.minimum, excluded.minimum),
    maximum = greatest(m.maximum, excluded.maximum),
    buckets = CASE
        WHEN cardinality(m.buckets) = 0 THEN excluded.buckets
        WHEN cardinality(excluded.buckets) = 0 THEN m.buckets
        ELSE ARRAY(
            SELECT coalesce(a, 0) + coalesce(b, 0)
            FROM unnest(m.buckets, excluded.buckets) WITH ORDINALITY AS t(a, b, i)
            ORDER BY i
        )
    END
"""
_MERGE_POINT: Final = f"""
    INSERT INTO metric_points AS m (period_start, metric, endpoint_name, variant_name, writer,
        sum, count, minimum, maximum, buckets)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (period_start, metric, endpoint_name, variant_name, writer) DO UPDATE SET
    {_MERGE_SET}
"""
_MERGE_TOTAL: Final = f"""
    INSERT INTO metric_totals AS m (metric, endpoint_name, variant_name, writer,
        sum, count, minimum, maximum, buckets)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (metric, endpoint_name, variant_name, writer) DO UPDATE SET
    {_MERGE_SET}
"""
_PURGE_METRICS: Final = """
    DELETE FROM metric_points WHERE ctid IN (
        SELECT ctid FROM metric_points WHERE period_start < %s ORDER BY period_start LIMIT %s
    )
"""
_RESOURCE_COLUMNS: Final = "kind, name, doc::text, version, created_at"
_WORKER_COLUMNS: Final = (
    "worker_id, host, pid, max_instances, endpoints, started_at, heartbeat_at, heartbeat_expires_at"
)
_INSTANCE_COLUMNS: Final = (
    "endpoint_name, variant_name, generation, slot, worker_id, state, claimed_at, "
    "updated_at, detail"
)
_INSTANCE_KEY: Final = "endpoint_name = %s AND variant_name = %s AND generation = %s AND slot = %s"

# Connection failures, a server shutting down or starting, a pool without a connection:
# the database is unavailable, not the request wrong.
_UNAVAILABLE: Final = (psycopg.OperationalError, psycopg.InterfaceError)


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return url.split("@")[-1]
    user = params.get("user")
    host, port, dbname = params.get("host", ""), params.get("port", ""), params.get("dbname", "")
    prefix = f"{user}@" if user else ""
    return f"postgresql://{prefix}{host}{':' + str(port) if port else ''}/{dbname}"


def check_url(url: str) -> None:
    """Raise StartupError when ``url`` is not a PostgreSQL connection URL."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise StartupError(
            f"database URL {redact(url)!r} is malformed: {_scrub(_first_line(exc))}"
        ) from None
    for port in str(params.get("port", "5432")).split(","):
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise StartupError(f"database URL {redact(url)!r}: port {port!r} is not a port number")


def _scrub(text: str) -> str:
    """``text`` without the password of any URL it quotes."""
    return re.sub(r"(//[^:/@\s]*:)[^@\s]*@", r"\1***@", text)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _unavailable(exc: BaseException) -> ServiceUnavailable:
    return ServiceUnavailable(f"The queue store is unavailable ({_first_line(exc)}); retry.")


def _to_point(row: Sequence[Any]) -> MetricPoint:
    metric, endpoint, variant, start, total, count, minimum, maximum, buckets = row
    return MetricPoint(
        metric, endpoint, variant, int(start), total, count, minimum, maximum, tuple(buckets)
    )


def _store_error(exc: psycopg.Error) -> InternalFailure:
    return InternalFailure(f"queue store: {_first_line(exc)}")


class _Pending:
    __slots__ = ("future", "invocation")

    def __init__(self, invocation: Invocation, future: asyncio.Future[int]) -> None:
        self.invocation = invocation
        self.future = future


class PostgresStore(PostgresLogs):
    """Implements ``QueueStore``, ``MetadataStore``, ``FleetStore`` and ``LogStore``
    (sagequeue.ports) on PostgreSQL."""

    def __init__(
        self,
        url: str,
        *,
        lease_connections: int = 8,
        durable_connections: int = 4,
        pool_timeout: float = POOL_TIMEOUT_SECONDS,
    ) -> None:
        self.url = url
        self._pool_timeout = pool_timeout
        self._lease_connections = lease_connections
        self._durable_connections = durable_connections
        self._durable: psycopg_pool.AsyncConnectionPool | None = None
        self._lease: psycopg_pool.AsyncConnectionPool | None = None
        self._pending: list[_Pending] = []
        self._flushers: set[asyncio.Task[None]] = set()
        self._flushing = 0  # flushers running (a finished task leaves the set later)
        self._checking: asyncio.Task[None] | None = None
        self._closed = True

    # ------------------------------------------------------------------ life cycle
    async def open(self) -> None:
        """Migrate the schema (once per database, whichever process comes first), then
        open the pools. Raises StartupError when the database cannot be used."""
        check_url(self.url)
        await migrate(self.url)
        self._durable = self._pool("durable", self._durable_connections, "on")
        self._lease = self._pool("lease", self._lease_connections, "off")
        try:
            await self._durable.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS)
            await self._lease.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS)
        except psycopg_pool.PoolTimeout as exc:
            await self._close_pools()
            raise StartupError(
                f"cannot connect to the database {redact(self.url)}: {_first_line(exc)}"
            ) from None
        self._closed = False

    def _pool(
        self, name: str, max_size: int, synchronous_commit: str
    ) -> psycopg_pool.AsyncConnectionPool:
        return psycopg_pool.AsyncConnectionPool(
            self.url,
            name=f"sagequeue-{name}",
            min_size=1,
            max_size=max_size,
            open=False,
            timeout=self._pool_timeout,
            reconnect_timeout=RECONNECT_TIMEOUT_SECONDS,
            kwargs={
                "autocommit": True,
                "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                "options": f"-c synchronous_commit={synchronous_commit}",
                "application_name": f"sagequeue-{name}",
            },
        )

    async def close(self) -> None:
        """Finish every enqueue already submitted, then close the pools."""
        if self._closed:
            return
        self._closed = True
        while self._flushers:
            await asyncio.gather(*self._flushers, return_exceptions=True)
        if self._checking is not None:
            self._checking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checking
        await self._close_pools()

    async def _close_pools(self) -> None:
        for pool in (self._durable, self._lease):
            if pool is not None:
                await pool.close()

    # ------------------------------------------------------------------ plumbing
    @contextlib.asynccontextmanager
    async def _connection(self, durable: bool = False) -> AsyncIterator[psycopg.AsyncConnection]:
        """A pooled connection; database errors become ServiceError."""
        if self._closed:
            raise ServiceUnavailable("the queue store is closed")
        pool = self._durable if durable else self._lease
        assert pool is not None
        try:
            async with pool.connection() as conn:
                yield conn
        except _UNAVAILABLE as exc:
            self._check_pools()
            raise _unavailable(exc) from exc
        except psycopg.Error as exc:
            raise _store_error(exc) from exc

    def _check_pools(self) -> None:
        """After a connection error, drop every broken idle connection at once (in the
        background) instead of failing one more call per pooled connection."""
        if self._checking is not None and not self._checking.done():
            return

        async def check() -> None:
            for pool in (self._durable, self._lease):
                if pool is not None:
                    with contextlib.suppress(Exception):
                        await pool.check()

        self._checking = asyncio.get_running_loop().create_task(check())

    async def _execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.AsyncCursor:
        async with self._connection() as conn:
            return await conn.execute(sql, params)

    async def _rowcount(self, sql: str, params: Sequence[Any] = ()) -> int:
        return (await self._execute(sql, params)).rowcount

    async def _fetchall(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[Any]:
        async with self._connection() as conn:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchall()

    # ---------------------------------------------------------------- QueueStore
    async def enqueue(self, invocation: Invocation) -> None:
        """Returns once the row is committed (group commit). Sets ``invocation.seq``, and
        ``enqueued_at`` to now when it is 0. Raises ServiceUnavailable when the commit did
        not succeed or its outcome is unknown."""
        if self._closed:
            raise ServiceUnavailable("the queue store is closed")
        if not invocation.enqueued_at:
            invocation.enqueued_at = time.time()
        loop = asyncio.get_running_loop()
        pending = _Pending(invocation, loop.create_future())
        self._pending.append(pending)
        if self._flushing < FLUSHERS:
            self._flushing += 1
            task = loop.create_task(self._flush())
            self._flushers.add(task)
            task.add_done_callback(self._flushers.discard)
        invocation.seq = await pending.future

    async def _flush(self) -> None:
        try:
            await self._flush_pending()
        finally:
            # No await between the last look at _pending and this: an enqueue either
            # saw this flusher running and left its row for it, or starts a new one.
            self._flushing -= 1

    async def _flush_pending(self) -> None:
        while self._pending:
            batch = self._pending[:MAX_GROUP_COMMIT_ROWS]
            del self._pending[:MAX_GROUP_COMMIT_ROWS]
            try:
                await self._insert(batch)
            except Exception as exc:  # a bug here must not leave callers waiting
                _fail(batch, InternalFailure(f"queue store: {exc!r}"))
            except BaseException:  # cancelled mid-commit: the outcome is unknown
                _fail(batch + self._pending, ServiceUnavailable("The queue store stopped; retry."))
                self._pending.clear()
                raise

    async def _insert(self, batch: list[_Pending]) -> None:
        columns: list[list[Any]] = [[] for _ in range(15)]
        (r, i, e, o, f, il, b, ct, a, ca, ttl, tmo, q, att, v) = columns
        for pending in batch:
            inv = pending.invocation
            r.append(inv.request_id)
            i.append(inv.inference_id)
            e.append(inv.endpoint_name)
            o.append(inv.output_location)
            f.append(inv.failure_location)
            il.append(inv.input_location)
            b.append(inv.inline_body)
            ct.append(inv.content_type)
            a.append(inv.accept)
            ca.append(inv.custom_attributes)
            ttl.append(inv.request_ttl_seconds)
            tmo.append(inv.invocation_timeout_seconds)
            q.append(inv.enqueued_at)
            att.append(inv.attempts)
            v.append(inv.variant_name)
        try:
            async with self._connection(durable=True) as conn:
                cursor = await conn.execute(_INSERT_BATCH, columns)
                inserted = dict(await cursor.fetchall())
        except ServiceUnavailable as exc:
            _fail(batch, exc)
            return
        except InternalFailure:
            # A row the database refuses (not a duplicate: those are not errors here)
            # must not fail the others: insert them one by one.
            await self._insert_one_by_one(batch)
            return
        for pending in batch:
            # pop: of two rows with one request id in a batch, the second is refused.
            seq = inserted.pop(pending.invocation.request_id, None)
            if pending.future.done():
                continue
            if seq is None:
                pending.future.set_exception(
                    InternalFailure(
                        f"queue store: duplicate request id {pending.invocation.request_id}"
                    )
                )
            else:
                pending.future.set_result(seq)

    async def _insert_one_by_one(self, batch: list[_Pending]) -> None:
        for pending in batch:
            inv = pending.invocation
            params = (
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
                inv.enqueued_at,
                inv.attempts,
                inv.variant_name,
                inv.enqueued_at + inv.request_ttl_seconds,
            )
            try:
                async with self._connection(durable=True) as conn:
                    cursor = await conn.execute(_INSERT_ONE, params)
                    row = await cursor.fetchone()
            except (ServiceUnavailable, InternalFailure) as exc:
                if not pending.future.done():
                    pending.future.set_exception(exc)
                continue
            except Exception as exc:  # psycopg refused to send a value (e.g. a NUL)
                if not pending.future.done():
                    pending.future.set_exception(InternalFailure(f"queue store: {exc}"))
                continue
            if pending.future.done():
                continue
            if row is None:  # ON CONFLICT DO NOTHING: the request id is taken
                pending.future.set_exception(
                    InternalFailure(f"queue store: duplicate request id {inv.request_id}")
                )
            else:
                pending.future.set_result(row[0])

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
            return []
        lease = (owner, now + lease_seconds, now)
        if variant_name is None:
            rows = await self._fetchall(_LEASE_ANY_VARIANT, (*lease, endpoint_name, limit))
        else:
            rows = await self._fetchall(_LEASE, (*lease, endpoint_name, variant_name, limit))
        rows.sort(key=lambda row: row[_SEQ_INDEX])  # RETURNING has no defined order
        return [to_invocation(row) for row in rows]

    async def lease_overdue(
        self, owner: str, limit: int, lease_seconds: float, now: float
    ) -> list[Invocation]:
        if limit <= 0:
            return []
        rows = await self._fetchall(_LEASE_OVERDUE, (owner, now + lease_seconds, now, now, limit))
        leased = [to_invocation(row) for row in rows]
        leased.sort(key=lambda inv: (inv.expires_at, inv.seq))
        return leased

    async def renew(self, request_ids: Sequence[str], owner: str, lease_expires_at: float) -> None:
        if request_ids:
            await self._execute(_RENEW, (lease_expires_at, list(request_ids), owner))

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
            return await self._rowcount(_FINISH, params) == 1
        rows = [outbox_row(message) for message in notifications]
        async with self._connection() as conn, conn.transaction():
            cursor = await conn.execute(_FINISH, params)
            if cursor.rowcount != 1:
                return False
            async with conn.cursor() as insert:
                await insert.executemany(_INSERT_OUTBOX, rows)
        return True

    async def release(self, request_id: str, owner: str, *, attempted: bool = True) -> bool:
        params = (0 if attempted else 1, request_id, owner)
        return await self._rowcount(_RELEASE, params) == 1

    async def requeue_lapsed(self, now: float) -> int:
        return await self._rowcount(_REQUEUE_LAPSED, (now,))

    async def get(self, endpoint_name: str, inference_id: str) -> Invocation | None:
        rows = await self._fetchall(_GET, (endpoint_name, inference_id))
        return to_invocation(rows[0]) if rows else None

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
        if status is not None:
            rows = await self._fetchall(
                _LIST_BY_STATUS, (endpoint_name, str(status), before, limit)
            )
        else:
            params = {"endpoint": endpoint_name, "before": before, "limit": limit}
            rows = await self._fetchall(_LIST_BY_SEQS, params)
            rows.sort(key=lambda row: row[_SEQ_INDEX], reverse=True)
        return [to_invocation(row) for row in rows]

    async def count_by_status(self, endpoint_name: str | None = None) -> dict[str, int]:
        params: tuple[str, ...] = ()
        if endpoint_name is None:
            sql = "SELECT status, sum(n) FROM status_counts GROUP BY status"
        else:
            sql = (
                "SELECT status, sum(n) FROM status_counts WHERE endpoint_name = %s GROUP BY status"
            )
            params = (endpoint_name,)
        counts = {status.value: 0 for status in InvocationStatus}
        for status, n in await self._fetchall(sql, params):
            counts[status] = int(n)
        return counts

    async def purge_finished(self, finished_before: float, limit: int) -> int:
        if limit <= 0:
            return 0
        return await self._rowcount(_PURGE_FINISHED, (finished_before, limit))

    # --------------------------------------------------------------- OutboxStore
    async def lease_notifications(
        self, owner: str, limit: int, lease_seconds: float, now: float
    ) -> list[OutboxMessage]:
        if limit <= 0:
            return []
        rows = await self._fetchall(_LEASE_OUTBOX, (owner, now + lease_seconds, now, limit))
        leased = [to_outbox_message(row) for row in rows]
        leased.sort(key=lambda message: message.seq or 0)
        return leased

    async def notification_delivered(self, message_id: str, owner: str, now: float) -> bool:
        return await self._rowcount(_OUTBOX_DELIVERED, (now, message_id, owner)) == 1

    async def notification_retry(
        self, message_id: str, owner: str, next_attempt_at: float, error: str
    ) -> bool:
        params = (next_attempt_at, error, message_id, owner)
        return await self._rowcount(_OUTBOX_RETRY, params) == 1

    async def notification_failed(
        self, message_id: str, owner: str, now: float, error: str
    ) -> bool:
        return await self._rowcount(_OUTBOX_FAILED, (now, error, message_id, owner)) == 1

    async def notification_failure_counts(self) -> dict[str, int]:
        rows = await self._fetchall("SELECT endpoint_name, n FROM notification_failures")
        return {name: int(n) for name, n in rows}

    async def notifications_of(self, endpoint_name: str, inference_id: str) -> list[OutboxMessage]:
        sql = (
            f"SELECT {_OUTBOX_COLUMNS} FROM notification_outbox "
            "WHERE endpoint_name = %s AND inference_id = %s ORDER BY seq"
        )
        rows = await self._fetchall(sql, (endpoint_name, inference_id))
        return [to_outbox_message(row) for row in rows]

    async def purge_notifications(
        self, delivered_before: float, failed_before: float, limit: int
    ) -> int:
        if limit <= 0:
            return 0
        later = max(delivered_before, failed_before)
        params = (later, delivered_before, failed_before, limit)
        return await self._rowcount(_PURGE_OUTBOX, params)

    async def oldest_queued(self, endpoint_name: str, variant_name: str) -> float | None:
        rows = await self._fetchall(_OLDEST_QUEUED, (endpoint_name, variant_name))
        return float(rows[0][0]) if rows else None

    # ---------------------------------------------------------------- MetricsStore
    async def record_metrics(self, writer: str, points: Sequence[MetricPoint]) -> None:
        if not points:
            return
        # Sorted, so that two flushes of one writer lock its rows in the same order.
        ordered = sorted(
            points, key=lambda p: (p.period_start, p.metric, p.endpoint_name, p.variant_name)
        )
        point_rows = [
            (
                p.period_start,
                p.metric,
                p.endpoint_name,
                p.variant_name,
                writer,
                p.sum,
                p.count,
                p.minimum,
                p.maximum,
                list(p.buckets),
            )
            for p in ordered
        ]
        total_rows = [row[1:] for row in point_rows]
        total_rows.sort(key=lambda row: row[:3])
        async with self._connection() as conn, conn.transaction(), conn.cursor() as cursor:
            await cursor.executemany(_MERGE_POINT, point_rows)
            await cursor.executemany(_MERGE_TOTAL, total_rows)

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
            "maximum, buckets FROM metric_points WHERE period_start >= %s AND period_start < %s"
        )
        params: list[Any] = [start, end]
        if metrics is not None:
            if not metrics:
                return []
            sql += " AND metric = ANY(%s)"
            params.append(list(metrics))
        if endpoint_name is not None:
            sql += " AND endpoint_name = %s"
            params.append(endpoint_name)
        return merge_points(_to_point(row) for row in await self._fetchall(sql, params))

    async def metric_totals(self) -> list[MetricPoint]:
        sql = (
            "SELECT metric, endpoint_name, variant_name, 0, sum, count, minimum, maximum, "
            "buckets FROM metric_totals"
        )
        return merge_points(_to_point(row) for row in await self._fetchall(sql))

    async def purge_metrics(self, before: int, limit: int) -> int:
        if limit <= 0:
            return 0
        return await self._rowcount(_PURGE_METRICS, (before, limit))

    # ---------------------------------------------------------------- FleetStore
    async def register_worker(self, worker: WorkerRecord) -> None:
        sql = f"INSERT INTO workers ({_WORKER_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        params = (
            worker.worker_id,
            worker.host,
            worker.pid,
            worker.max_instances,
            list(worker.endpoints),
            worker.started_at,
            worker.heartbeat_at,
            worker.heartbeat_expires_at,
        )
        await self._execute(sql, params)

    async def heartbeat(self, worker_id: str, now: float, expires_at: float) -> bool:
        sql = "UPDATE workers SET heartbeat_at = %s, heartbeat_expires_at = %s WHERE worker_id = %s"
        return await self._rowcount(sql, (now, expires_at, worker_id)) == 1

    async def remove_worker(self, worker_id: str) -> None:
        # Its instance claims go with it (ON DELETE CASCADE).
        await self._execute("DELETE FROM workers WHERE worker_id = %s", (worker_id,))

    async def reap_workers(self, now: float) -> list[str]:
        async with self._connection() as conn, conn.transaction():
            cursor = await conn.execute(
                "DELETE FROM workers WHERE heartbeat_expires_at < %s RETURNING worker_id", (now,)
            )
            dead = [row[0] for row in await cursor.fetchall()]
            if dead:
                # A statement of its own: it sees leases committed while the first ran.
                await conn.execute(_REQUEUE_OWNED, (dead,))
        return sorted(dead)

    async def list_workers(self) -> list[WorkerRecord]:
        sql = f"SELECT {_WORKER_COLUMNS} FROM workers ORDER BY started_at, worker_id"
        return [_to_worker(row) for row in await self._fetchall(sql)]

    async def claim_instance(self, claim: InstanceClaim) -> bool:
        # Only a registered worker may claim: one reaped meanwhile gets False (the
        # foreign key refuses a claim whose worker was deleted since the check).
        sql = f"""
            INSERT INTO instances ({_INSTANCE_COLUMNS})
            SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s
            WHERE EXISTS (SELECT 1 FROM workers WHERE worker_id = %s)
            ON CONFLICT DO NOTHING
        """
        try:
            return await self._rowcount(sql, (*instance_row(claim), claim.worker_id)) == 1
        except InternalFailure as exc:
            if isinstance(exc.__cause__, psycopg.errors.ForeignKeyViolation):
                return False
            raise

    async def set_instance_state(
        self, claim: InstanceClaim, state: InstanceState, detail: str | None, now: float
    ) -> bool:
        sql = f"""
            UPDATE instances SET state = %s, detail = %s, updated_at = %s
            WHERE {_INSTANCE_KEY} AND worker_id = %s
        """
        params = (str(state), detail, now, *instance_key(claim), claim.worker_id)
        return await self._rowcount(sql, params) == 1

    async def release_instance(self, claim: InstanceClaim) -> bool:
        sql = f"DELETE FROM instances WHERE {_INSTANCE_KEY} AND worker_id = %s"
        return await self._rowcount(sql, (*instance_key(claim), claim.worker_id)) == 1

    async def list_instances(self, endpoint_name: str | None = None) -> list[InstanceClaim]:
        order = "ORDER BY endpoint_name, variant_name, generation, slot"
        params: tuple[str, ...] = ()
        if endpoint_name is None:
            sql = f"SELECT {_INSTANCE_COLUMNS} FROM instances {order}"
        else:
            sql = f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE endpoint_name = %s {order}"
            params = (endpoint_name.lower(),)
        return [to_instance(row) for row in await self._fetchall(sql, params)]

    async def acquire_lease(self, name: str, holder: str, now: float, expires_at: float) -> bool:
        sql = """
            INSERT INTO singleton_leases AS held (name, holder, expires_at) VALUES (%s, %s, %s)
            ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
                expires_at = excluded.expires_at
            WHERE held.holder = excluded.holder OR held.expires_at < %s
        """
        return await self._rowcount(sql, (name, holder, expires_at, now)) == 1

    async def release_lease(self, name: str, holder: str) -> None:
        sql = "DELETE FROM singleton_leases WHERE name = %s AND holder = %s"
        await self._execute(sql, (name, holder))

    # ------------------------------------------------------------- MetadataStore
    async def create_resource(self, resource: Resource) -> bool:
        sql = (
            "INSERT INTO resources (kind, name, name_lower, doc, version, created_at) "
            "VALUES (%s, %s, %s, %s::json, %s, %s) ON CONFLICT DO NOTHING"
        )
        params = (
            str(resource.kind),
            resource.name,
            resource.name.lower(),
            msgspec.json.encode(resource.doc).decode(),
            resource.version,
            resource.created_at,
        )
        async with self._connection(durable=True) as conn:
            return (await conn.execute(sql, params)).rowcount == 1

    async def get_resource(self, kind: ResourceKind, name: str) -> Resource | None:
        sql = f"SELECT {_RESOURCE_COLUMNS} FROM resources WHERE kind = %s AND name_lower = %s"
        rows = await self._fetchall(sql, (str(kind), name.lower()))
        return to_resource(rows[0]) if rows else None

    async def list_resources(self, kind: ResourceKind) -> list[Resource]:
        """Oldest first (by created_at, then name)."""
        sql = (
            f"SELECT {_RESOURCE_COLUMNS} FROM resources WHERE kind = %s "
            "ORDER BY created_at, name_lower"
        )
        return [to_resource(row) for row in await self._fetchall(sql, (str(kind),))]

    async def update_resource(self, resource: Resource) -> bool:
        sql = (
            "UPDATE resources SET doc = %s::json, version = version + 1 "
            "WHERE kind = %s AND name_lower = %s AND version = %s"
        )
        params = (
            msgspec.json.encode(resource.doc).decode(),
            str(resource.kind),
            resource.name.lower(),
            resource.version,
        )
        async with self._connection(durable=True) as conn:
            changed = (await conn.execute(sql, params)).rowcount
        if changed != 1:
            return False
        resource.version += 1
        return True

    async def delete_resource(self, kind: ResourceKind, name: str) -> bool:
        sql = "DELETE FROM resources WHERE kind = %s AND name_lower = %s"
        async with self._connection(durable=True) as conn:
            return (await conn.execute(sql, (str(kind), name.lower()))).rowcount == 1


# ---------------------------------------------------------------------- migrations
async def migrate(url: str) -> int:
    """Bring the database's schema to ``SCHEMA_VERSION`` (under an advisory lock, so
    that processes starting together migrate once); returns the version found."""
    try:
        conn = await psycopg.AsyncConnection.connect(
            url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
        )
    except psycopg.Error as exc:
        raise StartupError(
            f"cannot connect to the database {redact(url)}: {_scrub(_first_line(exc))}"
        ) from None
    try:
        async with conn:
            await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
            try:
                return await _migrate_locked(conn)
            finally:
                with contextlib.suppress(psycopg.Error):
                    await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    except psycopg.Error as exc:
        raise StartupError(
            f"cannot migrate the database {redact(url)}: {_first_line(exc)}"
        ) from None


async def _migrate_locked(conn: psycopg.AsyncConnection) -> int:
    await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
    cursor = await conn.execute("SELECT version FROM schema_version")
    row = await cursor.fetchone()
    current = row[0] if row is not None else 0
    if current > SCHEMA_VERSION:
        raise StartupError(
            f"the database's schema version {current} is newer than this sagequeue's "
            f"({SCHEMA_VERSION}): upgrade sagequeue"
        )
    for version in range(current, SCHEMA_VERSION):
        async with conn.transaction():
            for statement in MIGRATIONS[version]:
                await conn.execute(statement)
            if version == 0 and row is None:
                await conn.execute("INSERT INTO schema_version VALUES (%s)", (version + 1,))
            else:
                await conn.execute("UPDATE schema_version SET version = %s", (version + 1,))
        log.info("database schema migrated to version %d", version + 1)
    return current


# ---------------------------------------------------------------------- rows
def _fail(batch: list[_Pending], error: Exception) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(error)


def _to_worker(row: Sequence[Any]) -> WorkerRecord:
    worker_id, host, pid, max_instances, endpoints, started, beat, expires = row
    return WorkerRecord(
        worker_id, host, pid, max_instances, tuple(endpoints), started, beat, expires
    )

"""Model logs on PostgreSQL: the ``LogStore`` part of ``PostgresStore`` (its schema is
one entry of ``postgres.MIGRATIONS``).

As on SQLite: events in one table (``seq`` an identity: the event id), a row per stream
with what DescribeLogStreams shows and the events and bytes it holds. Writes run on the
lease pool (``synchronous_commit = off``): a log line lost to a database crash costs no
request. Workers on many hosts write at once: each batch inserts its events with one
``unnest`` statement and upserts its streams in name order, and retention updates the
streams in the same order, so no two transactions wait on each other in a cycle; a
stream goes only when its event count reaches 0, which a concurrent insert (that locks
the row first) keeps above 0.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Final

import psycopg

from sagequeue.ports import LogEvent, LogGroupInfo, LogQuery, LogStreamInfo

LOG_MIGRATION: Final[tuple[str, ...]] = (
    """
    CREATE TABLE log_streams (
        group_name text NOT NULL,
        stream_name text NOT NULL,
        created_at bigint NOT NULL,  -- epoch milliseconds, as all times here
        first_event_at bigint NOT NULL,
        last_event_at bigint NOT NULL,
        last_ingestion_at bigint NOT NULL,
        stored_bytes bigint NOT NULL,
        event_count bigint NOT NULL,
        PRIMARY KEY (group_name, stream_name)
    )
    """,
    """
    CREATE TABLE log_events (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        group_name text NOT NULL,
        stream_name text NOT NULL,
        timestamp bigint NOT NULL,
        ingested_at bigint NOT NULL,
        size integer NOT NULL,  -- UTF-8 bytes of the message
        message text NOT NULL
    )
    """,
    # GetLogEvents (one stream), FilterLogEvents (a group). Retention reads in seq order
    # (the order events were written), so it needs no index of its own.
    """
    CREATE INDEX log_events_by_stream
    ON log_events (group_name, stream_name, timestamp, seq)
    """,
    "CREATE INDEX log_events_by_group ON log_events (group_name, timestamp, seq)",
)

_EVENT_COLUMNS: Final = "group_name, stream_name, timestamp, message, ingested_at, seq"
# One statement per batch; ORDER BY ord gives the rows their ids in the batch's order.
_INSERT_EVENTS: Final = """
    INSERT INTO log_events (group_name, stream_name, timestamp, ingested_at, size, message)
    SELECT g, s, t, i, z, m
    FROM unnest(%s::text[], %s::text[], %s::int8[], %s::int8[], %s::int4[], %s::text[])
        WITH ORDINALITY AS u(g, s, t, i, z, m, ord)
    ORDER BY ord
    RETURNING seq
"""
_UPSERT_STREAMS: Final = """
    INSERT INTO log_streams AS l (group_name, stream_name, created_at, first_event_at,
        last_event_at, last_ingestion_at, stored_bytes, event_count)
    SELECT * FROM unnest(
        %s::text[], %s::text[], %s::int8[], %s::int8[], %s::int8[], %s::int8[], %s::int8[],
        %s::int8[]
    )
    ON CONFLICT (group_name, stream_name) DO UPDATE SET
        first_event_at = least(l.first_event_at, excluded.first_event_at),
        last_event_at = greatest(l.last_event_at, excluded.last_event_at),
        last_ingestion_at = greatest(l.last_ingestion_at, excluded.last_ingestion_at),
        stored_bytes = l.stored_bytes + excluded.stored_bytes,
        event_count = l.event_count + excluded.event_count
"""
_STREAM_COLUMNS: Final = (
    "group_name, stream_name, created_at, first_event_at, last_event_at, "
    "last_ingestion_at, stored_bytes"
)


def message_bytes(message: str) -> int:
    return len(message.encode("utf-8", "surrogatepass"))


class PostgresLogs:
    """Implements ``LogStore`` (sagequeue.ports); mixed into ``PostgresStore``, whose
    ``_connection()`` lends a pooled connection of the lease pool."""

    def _connection(self) -> contextlib.AbstractAsyncContextManager[psycopg.AsyncConnection]:
        raise NotImplementedError

    async def put_log_events(self, events: Sequence[LogEvent]) -> None:
        if not events:
            return
        columns: list[list[Any]] = [[], [], [], [], [], []]
        streams: dict[tuple[str, str], list[int]] = {}
        for event in events:
            size = message_bytes(event.message)
            for column, value in zip(
                columns,
                (
                    event.group,
                    event.stream,
                    event.timestamp,
                    event.ingestion_time,
                    size,
                    event.message,
                ),
                strict=True,
            ):
                column.append(value)
            seen = streams.get((event.group, event.stream))
            if seen is None:
                streams[(event.group, event.stream)] = [
                    event.ingestion_time,
                    event.timestamp,
                    event.timestamp,
                    event.ingestion_time,
                    size,
                    1,
                ]
            else:
                seen[1] = min(seen[1], event.timestamp)
                seen[2] = max(seen[2], event.timestamp)
                seen[3] = max(seen[3], event.ingestion_time)
                seen[4] += size
                seen[5] += 1
        ordered = sorted(streams.items())  # locks taken in name order: no deadlock cycle
        stream_columns = [
            [key[0] for key, _ in ordered],
            [key[1] for key, _ in ordered],
            *([values[n] for _, values in ordered] for n in range(6)),
        ]
        async with self._connection() as conn, conn.transaction():
            cursor = await conn.execute(_INSERT_EVENTS, columns)
            seqs = sorted(row[0] for row in await cursor.fetchall())
            await conn.execute(_UPSERT_STREAMS, stream_columns)
        for event, seq in zip(events, seqs, strict=True):
            event.seq = seq

    async def list_log_groups(self, prefix: str = "") -> list[LogGroupInfo]:
        sql = """
            SELECT group_name, min(created_at), sum(stored_bytes)::bigint FROM log_streams
            WHERE left(group_name, length(%s)) = %s
            GROUP BY group_name ORDER BY group_name COLLATE "C"
        """
        rows = await self._log_rows(sql, (prefix, prefix))
        return [LogGroupInfo(*row) for row in rows]

    async def list_log_streams(self, group: str, prefix: str = "") -> list[LogStreamInfo]:
        sql = f"""
            SELECT {_STREAM_COLUMNS} FROM log_streams
            WHERE group_name = %s AND left(stream_name, length(%s)) = %s
            ORDER BY stream_name COLLATE "C"
        """
        rows = await self._log_rows(sql, (group, prefix, prefix))
        return [LogStreamInfo(*row) for row in rows]

    async def read_log_events(self, query: LogQuery, limit: int) -> list[LogEvent]:
        if limit <= 0:
            return []
        where = ["group_name = %s"]
        params: list[Any] = [query.group]
        if query.streams is not None:
            if not query.streams:
                return []
            where.append("stream_name = ANY(%s::text[])")
            params.append(list(query.streams))
        if query.stream_prefix:
            where.append("left(stream_name, length(%s)) = %s")
            params += [query.stream_prefix, query.stream_prefix]
        if query.start is not None:
            where.append("timestamp >= %s")
            params.append(query.start)
        if query.end is not None:
            where.append("timestamp < %s")
            params.append(query.end)
        if query.after is not None:
            where.append("(timestamp, seq) > (%s, %s)")
            params += list(query.after)
        if query.before is not None:
            where.append("(timestamp, seq) < (%s, %s)")
            params += list(query.before)
        order = "DESC" if query.newest_first else "ASC"
        sql = (
            f"SELECT {_EVENT_COLUMNS} FROM log_events WHERE {' AND '.join(where)} "
            f"ORDER BY timestamp {order}, seq {order} LIMIT %s"
        )
        params.append(limit)
        return [LogEvent(*row) for row in await self._log_rows(sql, params)]

    async def purge_log_events(self, ingested_before: int, limit: int) -> int:
        """The oldest events in writing order, up to the first written since the cutoff."""
        if limit <= 0:
            return 0
        async with self._connection() as conn, conn.transaction():
            cursor = await conn.execute(
                "SELECT seq, ingested_at FROM log_events ORDER BY seq LIMIT %s", (limit,)
            )
            last = None
            for seq, ingested_at in await cursor.fetchall():
                if ingested_at >= ingested_before:
                    break
                last = seq
            if last is None:
                return 0
            return await _delete_through(conn, last)

    async def trim_log_events(self, max_bytes: int, limit: int) -> int:
        if limit <= 0:
            return 0
        async with self._connection() as conn, conn.transaction():
            cursor = await conn.execute("SELECT coalesce(sum(stored_bytes), 0) FROM log_streams")
            total = await cursor.fetchone()
            excess = (total[0] if total else 0) - max_bytes
            if excess <= 0:
                return 0
            cursor = await conn.execute(
                "SELECT seq, size FROM log_events ORDER BY seq LIMIT %s", (limit,)
            )
            last = None
            for seq, size in await cursor.fetchall():
                last = seq
                excess -= size
                if excess <= 0:
                    break
            if last is None:
                return 0
            return await _delete_through(conn, last)

    async def _log_rows(self, sql: str, params: Sequence[Any]) -> list[Any]:
        async with self._connection() as conn:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchall()


async def _delete_through(conn: psycopg.AsyncConnection, last_seq: int) -> int:
    """Delete the events up to ``last_seq`` and account for them; how many went."""
    cursor = await conn.execute(
        "DELETE FROM log_events WHERE seq <= %s RETURNING group_name, stream_name, size",
        (last_seq,),
    )
    gone = await cursor.fetchall()
    await _forget(conn, gone)
    return len(gone)


async def _forget(conn: psycopg.AsyncConnection, gone: list[tuple[str, str, int]]) -> None:
    """Take deleted events off their streams' counts (in name order, as inserts lock
    them); drop the streams left empty."""
    freed: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for group, stream, size in gone:
        freed[(group, stream)][0] += size
        freed[(group, stream)][1] += 1
    for (group, stream), (size, count) in sorted(freed.items()):
        await conn.execute(
            """
            UPDATE log_streams SET stored_bytes = stored_bytes - %s, event_count = event_count - %s
            WHERE group_name = %s AND stream_name = %s
            """,
            (size, count, group, stream),
        )
        await conn.execute(
            "DELETE FROM log_streams WHERE group_name = %s AND stream_name = %s "
            "AND event_count <= 0",
            (group, stream),
        )

"""Model logs on SQLite: the ``LogStore`` part of ``SqliteStore`` (its schema is one
entry of ``sqlite.MIGRATIONS``).

Events go in one table (``seq`` AUTOINCREMENT: the event id, never reused); a row per
stream keeps what DescribeLogStreams shows, and the events and bytes each stream holds
(the total for the size bound is one small sum; a stream goes when its count is 0).
Writes are lease-class transactions (``synchronous=NORMAL``): a log line lost to a power
cut costs no request.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from sagequeue.ports import LogEvent, LogGroupInfo, LogQuery, LogStreamInfo

LOG_MIGRATION: Final[tuple[str, ...]] = (
    """
    CREATE TABLE log_streams (
        group_name TEXT NOT NULL,
        stream_name TEXT NOT NULL,
        created_at INTEGER NOT NULL,  -- epoch milliseconds, as all times here
        first_event_at INTEGER NOT NULL,
        last_event_at INTEGER NOT NULL,
        last_ingestion_at INTEGER NOT NULL,
        stored_bytes INTEGER NOT NULL,
        event_count INTEGER NOT NULL,
        PRIMARY KEY (group_name, stream_name)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE log_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        group_name TEXT NOT NULL,
        stream_name TEXT NOT NULL,
        timestamp INTEGER NOT NULL,
        ingested_at INTEGER NOT NULL,
        size INTEGER NOT NULL,  -- UTF-8 bytes of the message
        message TEXT NOT NULL
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
_INSERT_EVENT: Final = """
    INSERT INTO log_events (group_name, stream_name, timestamp, ingested_at, size, message)
    VALUES (?, ?, ?, ?, ?, ?)
"""
_UPSERT_STREAM: Final = """
    INSERT INTO log_streams (group_name, stream_name, created_at, first_event_at,
        last_event_at, last_ingestion_at, stored_bytes, event_count)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (group_name, stream_name) DO UPDATE SET
        first_event_at = min(first_event_at, excluded.first_event_at),
        last_event_at = max(last_event_at, excluded.last_event_at),
        last_ingestion_at = max(last_ingestion_at, excluded.last_ingestion_at),
        stored_bytes = stored_bytes + excluded.stored_bytes,
        event_count = event_count + excluded.event_count
"""
_STREAM_COLUMNS: Final = (
    "group_name, stream_name, created_at, first_event_at, last_event_at, "
    "last_ingestion_at, stored_bytes"
)


def message_bytes(message: str) -> int:
    return len(message.encode("utf-8", "surrogatepass"))


class SqliteLogs:
    """Implements ``LogStore`` (sagequeue.ports); mixed into ``SqliteStore``, which
    runs the transactions (``_write_logs``: on the writer thread; ``_read``: on a
    reader thread)."""

    def _write_logs(self, fn: Callable[[sqlite3.Connection], Any]) -> Awaitable[Any]:
        raise NotImplementedError

    def _read(self, fn: Callable[[sqlite3.Connection], Any]) -> Awaitable[Any]:
        raise NotImplementedError

    async def put_log_events(self, events: Sequence[LogEvent]) -> None:
        if not events:
            return
        rows = []
        streams: dict[tuple[str, str], list[int]] = {}
        for event in events:
            size = message_bytes(event.message)
            rows.append(
                (
                    event.group,
                    event.stream,
                    event.timestamp,
                    event.ingestion_time,
                    size,
                    event.message,
                )
            )
            key = (event.group, event.stream)
            seen = streams.get(key)
            if seen is None:
                streams[key] = [
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
        stream_rows = [(*key, *values) for key, values in streams.items()]

        def put(conn: sqlite3.Connection) -> int:
            conn.executemany(_INSERT_EVENT, rows)
            last_seq = int(conn.execute("SELECT last_insert_rowid()").fetchone()[0])
            conn.executemany(_UPSERT_STREAM, stream_rows)
            return last_seq

        last_seq = int(await self._write_logs(put))
        # One transaction on the one writer: its rows got consecutive ids.
        for offset, event in enumerate(events):
            event.seq = last_seq - len(events) + 1 + offset

    async def list_log_groups(self, prefix: str = "") -> list[LogGroupInfo]:
        sql = """
            SELECT group_name, min(created_at), sum(stored_bytes) FROM log_streams
            WHERE substr(group_name, 1, ?) = ? GROUP BY group_name ORDER BY group_name
        """
        params = (len(prefix), prefix)
        rows = await self._read(lambda conn: conn.execute(sql, params).fetchall())
        return [LogGroupInfo(*row) for row in rows]

    async def list_log_streams(self, group: str, prefix: str = "") -> list[LogStreamInfo]:
        sql = f"""
            SELECT {_STREAM_COLUMNS} FROM log_streams
            WHERE group_name = ? AND substr(stream_name, 1, ?) = ? ORDER BY stream_name
        """
        params = (group, len(prefix), prefix)
        rows = await self._read(lambda conn: conn.execute(sql, params).fetchall())
        return [LogStreamInfo(*row) for row in rows]

    async def read_log_events(self, query: LogQuery, limit: int) -> list[LogEvent]:
        if limit <= 0:
            return []
        where = ["group_name = ?"]
        params: list[Any] = [query.group]
        if query.streams is not None:
            if not query.streams:
                return []
            where.append(f"stream_name IN ({', '.join('?' * len(query.streams))})")
            params += list(query.streams)
        if query.stream_prefix:
            where.append("substr(stream_name, 1, ?) = ?")
            params += [len(query.stream_prefix), query.stream_prefix]
        if query.start is not None:
            where.append("timestamp >= ?")
            params.append(query.start)
        if query.end is not None:
            where.append("timestamp < ?")
            params.append(query.end)
        if query.after is not None:
            where.append("(timestamp, seq) > (?, ?)")
            params += list(query.after)
        if query.before is not None:
            where.append("(timestamp, seq) < (?, ?)")
            params += list(query.before)
        order = "DESC" if query.newest_first else "ASC"
        sql = (
            f"SELECT {_EVENT_COLUMNS} FROM log_events WHERE {' AND '.join(where)} "
            f"ORDER BY timestamp {order}, seq {order} LIMIT ?"
        )
        params.append(limit)
        rows = await self._read(lambda conn: conn.execute(sql, params).fetchall())
        return [LogEvent(*row) for row in rows]

    async def purge_log_events(self, ingested_before: int, limit: int) -> int:
        """The oldest events in writing order, up to the first written since the cutoff."""
        if limit <= 0:
            return 0

        def purge(conn: sqlite3.Connection) -> int:
            oldest = "SELECT seq, ingested_at FROM log_events ORDER BY seq LIMIT ?"
            last = None
            for seq, ingested_at in conn.execute(oldest, (limit,)).fetchall():
                if ingested_at >= ingested_before:
                    break
                last = seq
            if last is None:
                return 0
            return _delete_through(conn, last)

        return int(await self._write_logs(purge))

    async def trim_log_events(self, max_bytes: int, limit: int) -> int:
        if limit <= 0:
            return 0

        def trim(conn: sqlite3.Connection) -> int:
            total = conn.execute("SELECT coalesce(sum(stored_bytes), 0) FROM log_streams")
            excess = total.fetchone()[0] - max_bytes
            if excess <= 0:
                return 0
            last = None
            oldest = "SELECT seq, size FROM log_events ORDER BY seq LIMIT ?"
            for seq, size in conn.execute(oldest, (limit,)).fetchall():
                last = seq
                excess -= size
                if excess <= 0:
                    break
            if last is None:
                return 0
            return _delete_through(conn, last)

        return int(await self._write_logs(trim))


def _delete_through(conn: sqlite3.Connection, last_seq: int) -> int:
    """Delete the events up to ``last_seq`` and account for them; how many went."""
    gone = conn.execute(
        "DELETE FROM log_events WHERE seq <= ? RETURNING group_name, stream_name, size",
        (last_seq,),
    ).fetchall()
    _forget(conn, gone)
    return len(gone)


def _forget(conn: sqlite3.Connection, gone: list[tuple[str, str, int]]) -> None:
    """Take deleted events off their streams' counts; drop the streams left empty."""
    freed: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for group, stream, size in gone:
        freed[(group, stream)][0] += size
        freed[(group, stream)][1] += 1
    for (group, stream), (size, count) in sorted(freed.items()):
        conn.execute(
            "UPDATE log_streams SET stored_bytes = stored_bytes - ?, event_count = event_count - ? "
            "WHERE group_name = ? AND stream_name = ?",
            (size, count, group, stream),
        )
        conn.execute(
            "DELETE FROM log_streams WHERE group_name = ? AND stream_name = ? AND event_count <= 0",
            (group, stream),
        )

"""Model logs in memory: the ``LogStore`` part of the in-memory fake (``MemoryStore``),
with the semantics of the SQL stores (tests/contract/test_log_store.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from sagequeue.ports import LogEvent, LogGroupInfo, LogQuery, LogStreamInfo


def message_bytes(message: str) -> int:
    return len(message.encode("utf-8", "surrogatepass"))


class MemoryLogs:
    """Implements ``LogStore`` (sagequeue.ports)."""

    def __init__(self) -> None:
        self._log_events: dict[int, LogEvent] = {}  # by seq, in seq order
        self._log_streams: dict[tuple[str, str], LogStreamInfo] = {}
        self._next_log_seq = 1

    async def put_log_events(self, events: Sequence[LogEvent]) -> None:
        for event in events:
            event.seq = self._next_log_seq
            self._next_log_seq += 1
            self._log_events[event.seq] = dataclasses.replace(event)
            size = message_bytes(event.message)
            key = (event.group, event.stream)
            stream = self._log_streams.get(key)
            if stream is None:
                self._log_streams[key] = LogStreamInfo(
                    event.group,
                    event.stream,
                    event.ingestion_time,
                    event.timestamp,
                    event.timestamp,
                    event.ingestion_time,
                    size,
                )
                continue
            stream.first_event_at = min(stream.first_event_at, event.timestamp)
            stream.last_event_at = max(stream.last_event_at, event.timestamp)
            stream.last_ingestion_at = max(stream.last_ingestion_at, event.ingestion_time)
            stream.stored_bytes += size

    async def list_log_groups(self, prefix: str = "") -> list[LogGroupInfo]:
        groups: dict[str, LogGroupInfo] = {}
        for stream in self._log_streams.values():
            if not stream.group.startswith(prefix):
                continue
            group = groups.get(stream.group)
            if group is None:
                groups[stream.group] = LogGroupInfo(
                    stream.group, stream.created_at, stream.stored_bytes
                )
            else:
                group.created_at = min(group.created_at, stream.created_at)
                group.stored_bytes += stream.stored_bytes
        return [groups[name] for name in sorted(groups)]

    async def list_log_streams(self, group: str, prefix: str = "") -> list[LogStreamInfo]:
        return [
            dataclasses.replace(stream)
            for (group_name, name), stream in sorted(self._log_streams.items())
            if group_name == group and name.startswith(prefix)
        ]

    async def read_log_events(self, query: LogQuery, limit: int) -> list[LogEvent]:
        if limit <= 0:
            return []
        streams = set(query.streams) if query.streams is not None else None
        found = [
            event
            for event in self._log_events.values()
            if event.group == query.group
            and (streams is None or event.stream in streams)
            and event.stream.startswith(query.stream_prefix)
            and (query.start is None or event.timestamp >= query.start)
            and (query.end is None or event.timestamp < query.end)
            and (query.after is None or (event.timestamp, event.seq) > query.after)
            and (query.before is None or (event.timestamp, event.seq) < query.before)
        ]
        found.sort(key=lambda e: (e.timestamp, e.seq), reverse=query.newest_first)
        return [dataclasses.replace(event) for event in found[:limit]]

    async def purge_log_events(self, ingested_before: int, limit: int) -> int:
        """The oldest events in writing order, up to the first written since the cutoff."""
        doomed: list[int] = []
        for seq, event in self._log_events.items():
            if len(doomed) >= limit or event.ingestion_time >= ingested_before:
                break
            doomed.append(seq)
        self._drop_log_events(doomed)
        return len(doomed)

    async def trim_log_events(self, max_bytes: int, limit: int) -> int:
        excess = sum(s.stored_bytes for s in self._log_streams.values()) - max_bytes
        doomed: list[int] = []
        for seq, event in self._log_events.items():  # oldest first
            if excess <= 0 or len(doomed) >= limit:
                break
            doomed.append(seq)
            excess -= message_bytes(event.message)
        self._drop_log_events(doomed)
        return len(doomed)

    def _drop_log_events(self, seqs: list[int]) -> None:
        for seq in seqs:
            event = self._log_events.pop(seq)
            key = (event.group, event.stream)
            self._log_streams[key].stored_bytes -= message_bytes(event.message)
        left = {(e.group, e.stream) for e in self._log_events.values()}
        for key in [k for k in self._log_streams if k not in left]:
            del self._log_streams[key]

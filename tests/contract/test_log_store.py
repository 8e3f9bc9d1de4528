"""LogStore contract: model log groups, streams and events. Every backend must behave
exactly like this."""

from __future__ import annotations

import pytest

from sagequeue.ports import LogEvent, LogQuery

from .conftest import Backend, Store

pytestmark = pytest.mark.anyio

GROUP = "/aws/sagemaker/Endpoints/ep"
MODEL = "AllTraffic/i-0123456789abcdef0"
DATA = "AllTraffic/i-0123456789abcdef0/data-log"
T0 = 1_700_000_000_000  # epoch milliseconds


def event(message: str, at: int = 0, stream: str = MODEL, group: str = GROUP, **kw) -> LogEvent:
    return LogEvent(group, stream, T0 + at, message, kw.pop("ingested", T0 + at + 5))


async def read(store: Store, limit: int = 100, **query) -> list[str]:
    return [e.message for e in await store.read_log_events(LogQuery(GROUP, **query), limit)]


async def test_events_read_back_oldest_first_with_every_field(store: Store) -> None:
    sent = [event("one", 1), event("two", 2)]
    await store.put_log_events(sent)
    got = await store.read_log_events(LogQuery(GROUP, streams=[MODEL]), 10)
    assert [(e.group, e.stream, e.timestamp, e.message, e.ingestion_time) for e in got] == [
        (GROUP, MODEL, T0 + 1, "one", T0 + 6),
        (GROUP, MODEL, T0 + 2, "two", T0 + 7),
    ]
    assert [e.seq for e in got] == [e.seq for e in sent]


async def test_event_ids_are_unique_and_increase_in_writing_order(store: Store) -> None:
    first, second = [event("a", 5)], [event("b", 1), event("c", 1)]
    await store.put_log_events(first)
    await store.put_log_events(second)
    seqs = [e.seq for e in first + second]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3


async def test_events_are_ordered_by_timestamp_across_streams(store: Store) -> None:
    await store.put_log_events([event("late", 9), event("early", 1, stream=DATA)])
    await store.put_log_events([event("middle", 5)])
    assert await read(store) == ["early", "middle", "late"]


async def test_events_of_one_timestamp_keep_their_writing_order(store: Store) -> None:
    await store.put_log_events([event("x", 3), event("y", 3), event("z", 3)])
    assert await read(store) == ["x", "y", "z"]


async def test_newest_first_reads_from_the_end(store: Store) -> None:
    await store.put_log_events([event(str(n), n) for n in range(5)])
    assert await read(store, limit=2, newest_first=True) == ["4", "3"]


async def test_a_read_takes_only_the_named_streams(store: Store) -> None:
    other = "B/i-0fedcba9876543210"
    await store.put_log_events([event("m", 1), event("d", 2, stream=DATA), event("o", 3, other)])
    assert await read(store, streams=[MODEL, other]) == ["m", "o"]
    assert await read(store, streams=[]) == []


async def test_a_read_takes_only_streams_with_the_prefix(store: Store) -> None:
    await store.put_log_events([event("m", 1), event("d", 2, stream=DATA), event("b", 3, "B/x")])
    assert await read(store, stream_prefix="AllTraffic/") == ["m", "d"]
    assert await read(store, stream_prefix="AllTraffic/i-0123456789abcdef0/") == ["d"]


async def test_a_read_keeps_to_its_group(store: Store) -> None:
    await store.put_log_events([event("mine", 1), event("theirs", 2, group=GROUP + "-2")])
    assert await read(store) == ["mine"]


async def test_time_bounds_include_the_start_and_exclude_the_end(store: Store) -> None:
    await store.put_log_events([event(str(n), n) for n in range(5)])
    assert await read(store, start=T0 + 1, end=T0 + 3) == ["1", "2"]


async def test_positions_page_forwards_and_backwards(store: Store) -> None:
    sent = [event(str(n), n // 2) for n in range(6)]  # two events per timestamp
    await store.put_log_events(sent)
    middle = (sent[2].timestamp, sent[2].seq)
    assert await read(store, after=middle) == ["3", "4", "5"]
    assert await read(store, before=middle, newest_first=True) == ["1", "0"]


async def test_streams_are_listed_by_name_with_their_times_and_sizes(store: Store) -> None:
    await store.put_log_events([event("ab", 4, ingested=T0 + 10), event("é", 2, ingested=T0 + 20)])
    await store.put_log_events([event("xyz", 1, stream=DATA, ingested=T0 + 30)])
    listed = await store.list_log_streams(GROUP)
    assert [
        (s.stream, s.created_at, s.first_event_at, s.last_event_at, s.last_ingestion_at)
        for s in listed
    ] == [(MODEL, T0 + 10, T0 + 2, T0 + 4, T0 + 20), (DATA, T0 + 30, T0 + 1, T0 + 1, T0 + 30)]
    assert [s.stored_bytes for s in listed] == [4, 3]  # UTF-8 bytes ("é" is two)
    assert [
        s.stream for s in await store.list_log_streams(GROUP, "AllTraffic/i-0123456789abcdef0/")
    ] == [DATA]
    assert await store.list_log_streams(GROUP + "-missing") == []


async def test_groups_are_listed_by_name_with_prefix(store: Store) -> None:
    await store.put_log_events([event("a", 1, group="/aws/b"), event("bb", 2, group="/aws/a")])
    await store.put_log_events([event("ccc", 3, group="/other", stream="s")])
    await store.put_log_events([event("dddd", 4, group="/aws/a", stream=DATA)])
    listed = await store.list_log_groups("/aws/")
    assert [(g.group, g.created_at, g.stored_bytes) for g in listed] == [
        ("/aws/a", T0 + 7, 6),
        ("/aws/b", T0 + 6, 1),
    ]
    assert [g.group for g in await store.list_log_groups()] == ["/aws/a", "/aws/b", "/other"]


async def test_events_written_through_one_handle_are_read_through_another(
    durable_backend: Backend,
) -> None:
    writer, reader = await durable_backend.open(), await durable_backend.open()
    await writer.put_log_events([event("shared", 1)])
    assert [e.message for e in await reader.read_log_events(LogQuery(GROUP), 10)] == ["shared"]


async def test_purge_removes_events_written_before_the_cutoff(store: Store) -> None:
    await store.put_log_events([event("old", 1, ingested=T0), event("new", 2, ingested=T0 + 100)])
    assert await store.purge_log_events(T0 + 50, 100) == 1
    assert await read(store) == ["new"]
    (stream,) = await store.list_log_streams(GROUP)
    assert stream.stored_bytes == 3


async def test_purge_drops_streams_left_empty(store: Store) -> None:
    await store.put_log_events(
        [event("old", 1, ingested=T0), event("new", 2, DATA, ingested=T0 + 9)]
    )
    await store.purge_log_events(T0 + 5, 100)
    assert [s.stream for s in await store.list_log_streams(GROUP)] == [DATA]


async def test_a_stream_of_empty_lines_stays_while_it_holds_events(store: Store) -> None:
    await store.put_log_events([event("", 1, ingested=T0), event("", 2, ingested=T0 + 9)])
    await store.purge_log_events(T0 + 5, 100)
    (stream,) = await store.list_log_streams(GROUP)
    assert (stream.stream, stream.stored_bytes) == (MODEL, 0)
    await store.purge_log_events(T0 + 10, 100)
    assert await store.list_log_streams(GROUP) == []


async def test_purge_takes_at_most_its_limit(store: Store) -> None:
    await store.put_log_events([event(str(n), n, ingested=T0 + n) for n in range(5)])
    assert await store.purge_log_events(T0 + 100, 2) == 2
    assert await read(store) == ["2", "3", "4"]


async def test_event_ids_are_not_reused_after_a_purge(store: Store) -> None:
    old = [event("old", 1, ingested=T0)]
    await store.put_log_events(old)
    await store.purge_log_events(T0 + 1, 10)
    new = [event("new", 2)]
    await store.put_log_events(new)
    assert new[0].seq > old[0].seq


async def test_trim_deletes_the_oldest_events_until_the_size_fits(store: Store) -> None:
    await store.put_log_events([event(f"{n:04d}", n) for n in range(10)])  # 4 bytes each
    assert await store.trim_log_events(22, 100) == 5
    assert await read(store) == [f"{n:04d}" for n in range(5, 10)]
    assert sum(s.stored_bytes for s in await store.list_log_streams(GROUP)) == 20


async def test_trim_takes_at_most_its_limit(store: Store) -> None:
    await store.put_log_events([event(f"{n:04d}", n) for n in range(10)])
    assert await store.trim_log_events(0, 3) == 3
    assert len(await read(store)) == 7


async def test_trim_within_the_size_changes_nothing(store: Store) -> None:
    await store.put_log_events([event("abcd", 1)])
    assert await store.trim_log_events(4, 100) == 0
    assert await read(store) == ["abcd"]

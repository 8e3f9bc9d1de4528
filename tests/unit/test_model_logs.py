"""Model logs: filter patterns, the worker's shipper and retention, and the CloudWatch
Logs API's paging, on the in-memory store."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from sagequeue.config import Settings
from sagequeue.dispatch import model_logs
from sagequeue.dispatch.model_logs import LogRetention, LogShipper
from sagequeue.domain.errors import InvalidParameter
from sagequeue.domain.logs import MAX_MESSAGE_CHARS, compile_filter_pattern
from sagequeue.frontdoor.http import Request
from sagequeue.frontdoor.logs import LogsApi
from sagequeue.ports import LogEvent, LogQuery
from sagequeue.stores.memory import MemoryStore

pytestmark = pytest.mark.anyio

GROUP = "/aws/sagemaker/Endpoints/ep"
NOW = 1_700_000_000.0


class FixedClock:
    def __init__(self, now: float = NOW) -> None:
        self.now_value = now

    def now(self) -> float:
        return self.now_value

    def monotonic(self) -> float:
        return self.now_value


# ------------------------------------------------------------------------ filter patterns


@pytest.mark.parametrize(
    ("pattern", "matching", "not_matching"),
    [
        ("", ["anything", ""], []),
        ("ERROR", ["an ERROR here"], ["an error here"]),
        ("ERROR timeout", ["ERROR: timeout"], ["ERROR only", "timeout only"]),
        ('"Inference abc: completed"', ["Inference abc: completed in 3 ms"], ["Inference abc"]),
        ("?ERROR ?WARN", ["WARN x", "ERROR y"], ["INFO z"]),
        ("ERROR -retrying", ["ERROR final"], ["ERROR retrying"]),
        ("%ERROR [0-9]+%", ["ERROR 42"], ["ERROR x"]),
        ('"say \\"hi\\""', ['they say "hi"'], ["say hi"]),
    ],
)
def test_filter_patterns_match_as_cloudwatch_logs_does(
    pattern: str, matching: list[str], not_matching: list[str]
) -> None:
    matches = compile_filter_pattern(pattern)
    assert all(matches(message) for message in matching)
    assert not any(matches(message) for message in not_matching)


@pytest.mark.parametrize("pattern", ['{ $.level = "ERROR" }', "[ip, user]", '"open', "%(%"])
def test_unsupported_or_malformed_filter_patterns_are_invalid_parameters(pattern: str) -> None:
    with pytest.raises(InvalidParameter):
        compile_filter_pattern(pattern)


# ------------------------------------------------------------------------ the shipper


async def test_shipped_lines_reach_the_store_with_their_times() -> None:
    store, clock = MemoryStore(), FixedClock()
    shipper = LogShipper(store, clock)
    log = shipper.instance_log("ep", "AllTraffic", "i-0123456789abcdef0")
    log.model_output("printed")
    clock.now_value += 2
    log.platform("Inference x: accepted")
    await shipper.flush()
    events = await store.read_log_events(LogQuery(GROUP), 10)
    assert [(e.stream, e.message, e.timestamp, e.ingestion_time) for e in events] == [
        ("AllTraffic/i-0123456789abcdef0", "printed", NOW * 1000, (NOW + 2) * 1000),
        (
            "AllTraffic/i-0123456789abcdef0/data-log",
            "Inference x: accepted",
            (NOW + 2) * 1000,
            (NOW + 2) * 1000,
        ),
    ]


async def test_a_long_line_is_shipped_in_pieces() -> None:
    store = MemoryStore()
    shipper = LogShipper(store, FixedClock())
    shipper.emit(GROUP, "s", "x" * (MAX_MESSAGE_CHARS + 10))
    await shipper.flush()
    events = await store.read_log_events(LogQuery(GROUP), 10)
    assert [len(e.message) for e in events] == [MAX_MESSAGE_CHARS, 10]


class FailingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.failing = True

    async def put_log_events(self, events) -> None:
        if self.failing:
            raise ConnectionError("store down")
        await super().put_log_events(events)


async def test_lines_wait_in_memory_while_the_store_is_down() -> None:
    store = FailingStore()
    shipper = LogShipper(store, FixedClock())
    shipper.emit(GROUP, "s", "kept")
    await shipper.flush()
    store.failing = False
    await shipper.flush()
    assert [e.message for e in await store.read_log_events(LogQuery(GROUP), 10)] == ["kept"]


async def test_the_buffer_is_bounded_and_says_what_it_dropped(monkeypatch) -> None:
    monkeypatch.setattr(model_logs, "MAX_BUFFERED_EVENTS", 3)
    store = FailingStore()
    shipper = LogShipper(store, FixedClock())
    for n in range(5):
        shipper.emit(GROUP, "s", f"line {n}")
    store.failing = False
    await shipper.flush()
    messages = [e.message for e in await store.read_log_events(LogQuery(GROUP), 10)]
    assert messages[0].startswith("[sagequeue] 2 log line(s)")
    assert messages[1:] == ["line 2", "line 3", "line 4"]


# ------------------------------------------------------------------------ retention


class Holder:
    """Membership's singleton lease, held or not."""

    def __init__(self, holds: bool) -> None:
        self.holds = holds

    async def hold(self, lease_name: str) -> bool:
        assert lease_name == "model-log-retention"
        return self.holds


def written(store: MemoryStore, *ages_and_sizes: tuple[float, int]) -> Any:
    events = [
        LogEvent(GROUP, "s", int((NOW - age) * 1000), "x" * size, int((NOW - age) * 1000))
        for age, size in ages_and_sizes
    ]
    return store.put_log_events(events)


async def test_retention_purges_lines_older_than_the_period() -> None:
    store = MemoryStore()
    await written(store, (100, 1), (70, 1), (10, 1))
    retention = LogRetention(
        store, Holder(True), FixedClock(), retention_seconds=60, max_bytes=1000
    )
    assert await retention.run() == 2
    assert len(await store.read_log_events(LogQuery(GROUP), 10)) == 1


async def test_retention_trims_the_oldest_lines_past_the_size_bound() -> None:
    store = MemoryStore()
    await written(store, (30, 10), (20, 10), (10, 10))
    retention = LogRetention(store, Holder(True), FixedClock(), retention_seconds=60, max_bytes=15)
    assert await retention.run() == 2
    assert [e.timestamp for e in await store.read_log_events(LogQuery(GROUP), 10)] == [
        int((NOW - 10) * 1000)
    ]


async def test_retention_runs_only_where_the_lease_is_held() -> None:
    store = MemoryStore()
    await written(store, (100, 1))
    retention = LogRetention(store, Holder(False), FixedClock(), retention_seconds=60, max_bytes=0)
    assert await retention.run() == 0


# ------------------------------------------------------------------------ the API's paging


async def call(store: MemoryStore, action: str, params: dict[str, Any]) -> dict[str, Any]:
    api = LogsApi(lambda: store, Settings())
    request = Request(
        method="POST",
        path="/",
        raw_path="/",
        query_string="",
        headers={"x-amz-target": f"Logs_20140328.{action}"},
        request_id="r",
        receive=None,
    )
    request.body = msgspec.json.encode(params)
    response = await api.handle(request)
    return msgspec.json.decode(response.body)


async def test_a_filtered_page_may_come_short_and_say_where_to_go_on(monkeypatch) -> None:
    monkeypatch.setattr("sagequeue.frontdoor.logs.FILTER_SCAN_EVENTS", 4)
    store = MemoryStore()
    messages = ["hit 1", "miss", "miss", "miss", "miss", "hit 2", "miss"]
    await store.put_log_events(
        [LogEvent(GROUP, "s", 1000 + n, m, 1000 + n) for n, m in enumerate(messages)]
    )
    found: list[str] = []
    pages = 0
    params: dict[str, Any] = {"logGroupName": GROUP, "filterPattern": "hit", "limit": 1}
    while True:
        page = await call(store, "FilterLogEvents", params)
        pages += 1
        found += [e["message"] for e in page["events"]]
        if "nextToken" not in page:
            break
        params["nextToken"] = page["nextToken"]
    assert found == ["hit 1", "hit 2"]
    assert pages >= 3  # a page of no match came between


async def test_filter_log_events_end_time_is_inclusive() -> None:
    store = MemoryStore()
    await store.put_log_events([LogEvent(GROUP, "s", t, str(t), t) for t in (10, 20, 30)])
    page = await call(
        store, "FilterLogEvents", {"logGroupName": GROUP, "startTime": 10, "endTime": 20}
    )
    assert [e["message"] for e in page["events"]] == ["10", "20"]


async def test_get_log_events_at_either_end_gives_back_the_token_it_was_given() -> None:
    store = MemoryStore()
    await store.put_log_events([LogEvent(GROUP, "s", t, str(t), t) for t in (10, 20)])
    params = {"logGroupName": GROUP, "logStreamName": "s", "startFromHead": True}
    first = await call(store, "GetLogEvents", params)
    assert [e["message"] for e in first["events"]] == ["10", "20"]
    end = await call(store, "GetLogEvents", {**params, "nextToken": first["nextForwardToken"]})
    assert end["events"] == [] and end["nextForwardToken"] == first["nextForwardToken"]
    start = await call(store, "GetLogEvents", {**params, "nextToken": first["nextBackwardToken"]})
    assert start["events"] == [] and start["nextBackwardToken"] == first["nextBackwardToken"]

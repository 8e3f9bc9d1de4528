"""MetricsStore contract (and QueueStore.oldest_queued, which the backlog metrics
sample): every backend must behave exactly like this."""

from __future__ import annotations

import asyncio

import pytest

from sagequeue.ports import MetricPoint

from .conftest import Backend, Store
from .test_queue_store import LEASE_SECONDS, NOW, enqueue_all, invocation

pytestmark = pytest.mark.anyio

MINUTE = 60_000
T0 = 1_700_000_040_000  # a minute boundary (epoch ms)


def point(
    metric: str = "TimeInBacklog",
    period_start: int = T0,
    *,
    endpoint: str = "ep",
    variant: str = "AllTraffic",
    total: float = 10.0,
    count: float = 2.0,
    minimum: float = 4.0,
    maximum: float = 6.0,
    buckets: tuple[int, ...] = (),
) -> MetricPoint:
    return MetricPoint(
        metric, endpoint, variant, period_start, total, count, minimum, maximum, buckets
    )


async def test_recorded_point_reads_back_with_every_field(store: Store) -> None:
    sent = point(buckets=(0, 1, 1, 0))
    await store.record_metrics("w1", [sent])
    assert await store.read_metrics(T0, T0 + MINUTE) == [sent]


async def test_one_writers_points_of_a_period_add_up(store: Store) -> None:
    await store.record_metrics("w1", [point(total=10, count=2, minimum=4, maximum=6)])
    await store.record_metrics("w1", [point(total=1, count=1, minimum=1, maximum=1)])
    (got,) = await store.read_metrics(T0, T0 + MINUTE)
    assert (got.sum, got.count, got.minimum, got.maximum) == (11, 3, 1, 6)


async def test_reads_merge_the_writers_of_a_period(store: Store) -> None:
    await store.record_metrics("api-1", [point(total=10, count=2, minimum=4, maximum=6)])
    await store.record_metrics("api-2", [point(total=30, count=1, minimum=30, maximum=30)])
    (got,) = await store.read_metrics(T0, T0 + MINUTE)
    assert (got.sum, got.count, got.minimum, got.maximum) == (40, 3, 4, 30)


async def test_histogram_buckets_add_up_across_writers(store: Store) -> None:
    await store.record_metrics("w1", [point(buckets=(1, 0, 2))])
    await store.record_metrics("w1", [point(buckets=(0, 1, 1))])
    await store.record_metrics("w2", [point(buckets=(5, 0, 0))])
    (got,) = await store.read_metrics(T0, T0 + MINUTE)
    assert got.buckets == (6, 1, 3)


async def test_reads_keep_series_and_periods_apart_in_order(store: Store) -> None:
    await store.record_metrics(
        "w1",
        [
            point("TimeInBacklog", T0 + MINUTE),
            point("TimeInBacklog", T0),
            point("ModelLatency", T0),
            point("TimeInBacklog", T0, variant="Canary"),
            point("TimeInBacklog", T0, endpoint="other"),
        ],
    )
    got = await store.read_metrics(T0, T0 + 2 * MINUTE)
    assert [(p.metric, p.endpoint_name, p.variant_name, p.period_start) for p in got] == [
        ("ModelLatency", "ep", "AllTraffic", T0),
        ("TimeInBacklog", "ep", "AllTraffic", T0),
        ("TimeInBacklog", "ep", "AllTraffic", T0 + MINUTE),
        ("TimeInBacklog", "ep", "Canary", T0),
        ("TimeInBacklog", "other", "AllTraffic", T0),
    ]


async def test_reads_take_the_periods_of_the_range_only(store: Store) -> None:
    await store.record_metrics("w1", [point(period_start=T0 + n * MINUTE) for n in range(5)])
    got = await store.read_metrics(T0 + MINUTE, T0 + 3 * MINUTE)
    assert [p.period_start for p in got] == [T0 + MINUTE, T0 + 2 * MINUTE]


async def test_reads_filter_by_metric_and_endpoint(store: Store) -> None:
    await store.record_metrics(
        "w1",
        [point("A"), point("B"), point("C"), point("A", endpoint="other")],
    )
    got = await store.read_metrics(T0, T0 + MINUTE, metrics=["A", "C"], endpoint_name="ep")
    assert [(p.metric, p.endpoint_name) for p in got] == [("A", "ep"), ("C", "ep")]
    assert await store.read_metrics(T0, T0 + MINUTE, metrics=[]) == []


async def test_endpoint_names_in_metrics_are_case_sensitive(store: Store) -> None:
    await store.record_metrics("w1", [point(endpoint="Ep"), point(endpoint="ep")])
    got = await store.read_metrics(T0, T0 + MINUTE, endpoint_name="Ep")
    assert [p.endpoint_name for p in got] == ["Ep"]


async def test_totals_add_up_every_period_and_writer(store: Store) -> None:
    await store.record_metrics("w1", [point(period_start=T0, total=1, count=1, buckets=(1, 0))])
    await store.record_metrics(
        "w1", [point(period_start=T0 + MINUTE, total=2, count=1, buckets=(0, 1))]
    )
    await store.record_metrics("w2", [point(period_start=T0, total=4, count=2, buckets=(2, 0))])
    (total,) = await store.metric_totals()
    assert (total.period_start, total.sum, total.count, total.buckets) == (0, 7, 4, (3, 1))


async def test_totals_survive_a_purge_of_the_periods(store: Store) -> None:
    await store.record_metrics("w1", [point(total=3, count=1)])
    assert await store.purge_metrics(T0 + MINUTE, 100) == 1
    assert await store.read_metrics(0, T0 + MINUTE) == []
    (total,) = await store.metric_totals()
    assert total.sum == 3


async def test_purge_deletes_old_periods_oldest_first_up_to_the_limit(store: Store) -> None:
    await store.record_metrics("w1", [point(period_start=T0 + n * MINUTE) for n in range(4)])
    assert await store.purge_metrics(T0 + 3 * MINUTE, 2) == 2
    got = await store.read_metrics(0, T0 + 10 * MINUTE)
    assert [p.period_start for p in got] == [T0 + 2 * MINUTE, T0 + 3 * MINUTE]
    assert await store.purge_metrics(T0 + 3 * MINUTE, 10) == 1
    assert await store.purge_metrics(T0 + 3 * MINUTE, 10) == 0


async def test_concurrent_writers_lose_no_sample(backend: Backend) -> None:
    handles = [await backend.open() for _ in range(3)]

    async def write(handle: Store, writer: str) -> None:
        for _ in range(20):
            await handle.record_metrics(writer, [point(total=1, count=1, minimum=1, maximum=1)])

    await asyncio.gather(
        *(write(handle, f"w{n}") for n, handle in enumerate(handles)),
        write(handles[0], "w0-again"),
    )
    (got,) = await handles[1].read_metrics(T0, T0 + MINUTE)
    assert got.count == 80


async def test_metrics_survive_a_reopen(durable_backend: Backend) -> None:
    first = await durable_backend.open()
    await first.record_metrics("w1", [point(buckets=(1, 2))])
    await first.close()
    durable_backend.handles.remove(first)
    second = await durable_backend.open()
    assert await second.read_metrics(T0, T0 + MINUTE) == [point(buckets=(1, 2))]


# ------------------------------------------------------------------ oldest queued


async def test_oldest_queued_is_the_first_queued_request_of_the_variant(store: Store) -> None:
    await enqueue_all(
        store,
        invocation(enqueued_at=NOW, variant_name="B"),
        invocation(enqueued_at=NOW + 1, variant_name="A"),
        invocation(enqueued_at=NOW + 2, variant_name="A"),
    )
    assert await store.oldest_queued("ep", "A") == NOW + 1
    assert await store.oldest_queued("ep", "B") == NOW


async def test_oldest_queued_skips_requests_being_processed(store: Store) -> None:
    await enqueue_all(
        store,
        invocation(enqueued_at=NOW, variant_name="A"),
        invocation(enqueued_at=NOW + 1, variant_name="A"),
    )
    await store.lease("ep", "w1", 1, LEASE_SECONDS, NOW + 5, variant_name="A")
    assert await store.oldest_queued("ep", "A") == NOW + 1


async def test_oldest_queued_is_none_without_queued_requests(store: Store) -> None:
    assert await store.oldest_queued("ep", "A") is None
    await enqueue_all(store, invocation(variant_name="A"))
    assert await store.oldest_queued("other", "A") is None

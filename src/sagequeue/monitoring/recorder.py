"""A process's metrics recorder: events are added to in-memory aggregates of the current
period (a dict update, cheap enough for the ingest hot path) and written to the shared
MetricsStore every few seconds, as this process's rows (one writer id per process)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Protocol

from sagequeue.domain.metrics import METRICS, UNIT_SECONDS, Accumulator, Kind, MetricClock
from sagequeue.ports import Clock, MetricPoint, MetricsStore, SystemClock

log = logging.getLogger("sagequeue.metrics")

INVOCATIONS = "Invocations"
INVOCATIONS_PER_INSTANCE = "InvocationsPerInstance"

# (metric, endpoint, variant, period start)
_Key = tuple[str, str, str, int]
# Running instances per variant of an endpoint (for InvocationsPerInstance).
InstanceCounter = Callable[[str], Awaitable[dict[str, int]]]


class MetricsSink(Protocol):
    """What producers (the runtime API, the executor) record into."""

    def count(self, metric: str, endpoint_name: str, variant_name: str) -> None: ...

    def observe(
        self, metric: str, endpoint_name: str, variant_name: str, seconds: float
    ) -> None: ...


def new_writer_id(role: str) -> str:
    return f"{role}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class MetricsRecorder:
    def __init__(
        self,
        store: MetricsStore | None,
        writer: str,
        metric_clock: MetricClock,
        *,
        clock: Clock | None = None,
        instance_counter: InstanceCounter | None = None,
    ) -> None:
        # None until the store is open (the front door is built before it): events are
        # kept meanwhile.
        self.store = store
        self.writer = writer
        self._metric_clock = metric_clock
        self._clock = clock or SystemClock()
        self._instance_counter = instance_counter
        self._width = metric_clock.minute_ms
        self._pending: dict[_Key, Accumulator] = {}
        # Counter events of the current period, kept as plain counts: the ingest hot path
        # only bumps an int. Folded into ``_pending`` when the period ends or at a flush.
        self._now = time.time if clock is None else clock.now
        self._counts: dict[tuple[str, str, str], int] = {}
        self._counts_start = 0
        self._counts_end = 0.0  # epoch seconds
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ producers
    def count(self, metric: str, endpoint_name: str, variant_name: str) -> None:
        """One event of a counter metric (value 1). On the ingest hot path: one clock
        read and one dict update."""
        if self._now() >= self._counts_end:
            self._fold_counts()
        key = (metric, endpoint_name, variant_name)
        counts = self._counts
        counts[key] = counts.get(key, 0) + 1

    def _fold_counts(self) -> None:
        """Move the current period's counts into the pending aggregates, and start the
        period holding now."""
        for (metric, endpoint, variant), n in self._counts.items():
            key = (metric, endpoint, variant, self._counts_start)
            acc = self._pending.get(key)
            if acc is None:
                acc = self._pending[key] = Accumulator(False)
            acc.add_many(float(n), float(n), 1.0, 1.0)
        self._counts = {}
        start = int(self._now() * 1000) // self._width * self._width
        self._counts_start = start
        self._counts_end = (start + self._width) / 1000

    def observe(self, metric: str, endpoint_name: str, variant_name: str, seconds: float) -> None:
        """One duration of a latency metric, recorded in the metric's unit."""
        definition = METRICS[metric]
        value = seconds / UNIT_SECONDS.get(definition.unit, 1.0)
        key = (metric, endpoint_name, variant_name, self._metric_clock.minute_of(self._clock.now()))
        acc = self._pending.get(key)
        if acc is None:
            acc = self._pending[key] = Accumulator(definition.kind is Kind.LATENCY)
        acc.add(value, seconds)

    def gauge(self, metric: str, endpoint_name: str, value: float, now: float) -> None:
        """One sample of a backlog gauge (endpoint level)."""
        key = (metric, endpoint_name, "", self._metric_clock.minute_of(now))
        acc = self._pending.get(key)
        if acc is None:
            acc = self._pending[key] = Accumulator(False)
        acc.add(value)

    # ------------------------------------------------------------------ flushing
    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_loop(), name="metrics flush")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            await self.flush()
        except Exception:
            log.exception("writing the last metrics failed")

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self._metric_clock.flush_seconds)
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("writing metrics failed; kept for the next try")

    async def flush(self) -> None:
        """Write what was recorded since the last flush. On a store error the
        aggregates are kept and merged into the next flush."""
        store = self.store
        if store is None:
            return
        self._fold_counts()
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        try:
            points = [
                MetricPoint(metric, endpoint, variant, start, a.sum, a.count, a.minimum, a.maximum)
                if a.buckets is None
                else MetricPoint(
                    metric,
                    endpoint,
                    variant,
                    start,
                    a.sum,
                    a.count,
                    a.minimum,
                    a.maximum,
                    tuple(a.buckets),
                )
                for (metric, endpoint, variant, start), a in pending.items()
            ]
            points += await self._per_instance(pending)
            await store.record_metrics(self.writer, points)
        except BaseException:
            self._restore(pending)
            raise

    async def _per_instance(self, pending: dict[_Key, Accumulator]) -> list[MetricPoint]:
        """InvocationsPerInstance: each accepted request counts 1 / running instances of
        its variant (as SageMaker publishes it), with the counts read now."""
        if self._instance_counter is None:
            return []
        counts: dict[str, dict[str, int]] = {}
        points = []
        for (metric, endpoint, variant, start), acc in pending.items():
            if metric != INVOCATIONS:
                continue
            if endpoint not in counts:
                counts[endpoint] = await self._instance_counter(endpoint)
            share = 1.0 / max(counts[endpoint].get(variant, 0), 1)
            points.append(
                MetricPoint(
                    INVOCATIONS_PER_INSTANCE,
                    endpoint,
                    variant,
                    start,
                    acc.sum * share,
                    acc.count,
                    share,
                    share,
                )
            )
        return points

    def _restore(self, pending: dict[_Key, Accumulator]) -> None:
        for key, acc in pending.items():
            have = self._pending.get(key)
            if have is None:
                self._pending[key] = acc
                continue
            have.add_many(acc.sum, acc.count, acc.minimum, acc.maximum)
            if have.buckets is not None and acc.buckets is not None:
                have.buckets = [a + b for a, b in zip(have.buckets, acc.buckets, strict=True)]

"""The backlog sampler, a fleet singleton: several times per period it reads every
endpoint's backlog from the store and adds a sample of each backlog gauge to the
period's aggregate, so that CloudWatch has the gauges' history (Average, Minimum and
Maximum over each minute). It also purges periods past the retention (24 hours and an
hour of slack), so that the metrics stay bounded."""

from __future__ import annotations

import logging
from typing import Protocol

from sagequeue.dispatch.membership import Membership
from sagequeue.domain.metrics import MetricClock
from sagequeue.monitoring.backlog import BacklogStore, endpoint_backlogs
from sagequeue.monitoring.recorder import MetricsRecorder
from sagequeue.ports import Clock, MetricsStore

log = logging.getLogger("sagequeue.metrics")

SAMPLER_LEASE = "metrics-sampler"
RETENTION_MINUTES = 25 * 60
PURGE_BATCH = 1000


class SamplerStore(MetricsStore, BacklogStore, Protocol):
    """The backlog's sources, and where the samples go."""


class BacklogSampler:
    def __init__(
        self,
        store: SamplerStore,
        membership: Membership,
        recorder: MetricsRecorder,
        metric_clock: MetricClock,
        clock: Clock,
    ) -> None:
        self.store = store
        self.membership = membership
        self.recorder = recorder
        self.metric_clock = metric_clock
        self.clock = clock
        self._next_purge = 0.0

    async def sample(self) -> bool:
        """Take one sample of every endpoint's gauges (only while holding the sampler
        lease); True when it did."""
        if not await self.membership.hold(SAMPLER_LEASE):
            return False
        now = self.clock.now()
        for name, backlog in (await endpoint_backlogs(self.store)).items():
            for metric, value in backlog.gauges(now).items():
                self.recorder.gauge(metric, name, value, now)
        await self.recorder.flush()
        if self.clock.monotonic() >= self._next_purge:
            self._next_purge = self.clock.monotonic() + self.metric_clock.minute_ms / 1000
            await self.purge(now)
        return True

    async def purge(self, now: float) -> int:
        cutoff = self.metric_clock.minute_of(now) - RETENTION_MINUTES * self.metric_clock.minute_ms
        purged = 0
        while True:
            batch = await self.store.purge_metrics(cutoff, PURGE_BATCH)
            purged += batch
            if batch < PURGE_BATCH:
                return purged

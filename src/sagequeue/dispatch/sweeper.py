"""Sweeping: the store's housekeeping, safe to run on every worker at once.

* Lapsed request leases go back to the queue; requests queued past RequestTTLSeconds end
  Expired (their failure object written first), including those of endpoints that have
  no instance anywhere.
* Workers whose heartbeat lapsed are reaped: their instance claims are freed for live
  workers and their requests re-queued.
* Finished requests older than the retention period are purged, by one worker at a time
  (the ``retention`` singleton lease), in small batches so that ingest and dispatch
  never wait long behind it; so are delivered notifications (after at most an hour) and
  failed ones (after the retention period).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from sagequeue.dispatch.execution import Executor, expired_reason
from sagequeue.dispatch.membership import Membership
from sagequeue.ports import Clock, FleetStore, InvocationStatus, OutboxStore, QueueStore

log = logging.getLogger("sagequeue.worker")

SWEEP_BATCH = 100
PURGE_BATCH = 500
PURGE_EVERY_SECONDS = 60.0
# Between two purge batches: at least this long (lets the writer take the enqueues that
# came meanwhile), and long enough that purging takes at most PURGE_DUTY of the store's
# time. Unpaced, PostgreSQL deleted 20,000 rows/s and cut lease+finish by a third; a
# fleet finishes far fewer than the paced rate (docs/performance.md, "retention").
PURGE_PAUSE_SECONDS = 0.05
PURGE_DUTY = 0.2
# One sweep purges for at most this long, so that a long purge (millions of rows after
# retention was shortened) does not hold up reaping dead workers and expiring requests;
# the next sweep goes on with it.
PURGE_RUN_SECONDS = 2.0
RETENTION_LEASE = "retention"
# Delivered notifications are kept this long at most (for inspection), failed ones for
# the retention period.
DELIVERED_NOTIFICATION_SECONDS = 3600.0


class Sweeper:
    def __init__(
        self,
        queue: QueueStore,
        fleet: FleetStore,
        executor: Executor,
        membership: Membership,
        clock: Clock,
        *,
        lease_seconds: float,
        retention_seconds: float,
        purge_every_seconds: float | None = None,
        outbox: OutboxStore | None = None,
    ) -> None:
        self.queue = queue
        self.outbox = outbox
        self.fleet = fleet
        self.executor = executor
        self.membership = membership
        self.clock = clock
        self._lease_seconds = lease_seconds
        self._retention = retention_seconds
        # A short retention (tests, demos) is honoured to within a quarter of itself.
        self._purge_every = purge_every_seconds or min(
            PURGE_EVERY_SECONDS, max(1.0, retention_seconds / 4)
        )
        self._next_purge = 0.0
        self._reap_after = 0.0  # monotonic

    def hold_off_reaping(self, seconds: float) -> None:
        """Reap no worker and re-queue no lapsed lease for ``seconds`` (the wall clock
        jumped forward: live workers' heartbeats look lapsed until they renew them)."""
        self._reap_after = self.clock.monotonic() + seconds

    async def sweep(self) -> None:
        now = self.clock.now()
        if self.clock.monotonic() >= self._reap_after:
            reaped = await self.fleet.reap_workers(now)
            if reaped:
                log.warning(
                    "workers gone (heartbeat lapsed), their work moves: %s", ", ".join(reaped)
                )
            await self.queue.requeue_lapsed(now)
        await self._expire_overdue(now)
        if self.clock.monotonic() >= self._next_purge:
            self._next_purge = self.clock.monotonic() + self._purge_every
            await self.purge()

    async def _expire_overdue(self, now: float) -> None:
        while True:
            overdue = await self.queue.lease_overdue(
                self.membership.worker_id, SWEEP_BATCH, self._lease_seconds, now
            )
            ended = [
                await self.executor.finish_with_failure(
                    inv, InvocationStatus.EXPIRED, expired_reason(inv)
                )
                for inv in overdue
            ]
            # Short batch: done. A request that could not end (its failure object could
            # not be written) is queued again: try again next round, not at once.
            if len(overdue) < SWEEP_BATCH or not all(ended):
                return

    async def purge(self) -> int:
        """Delete finished requests past the retention period; returns how many. Only the
        holder of the retention lease purges."""
        if not await self.membership.hold(RETENTION_LEASE):
            return 0
        cutoff = self.clock.now() - self._retention
        purged, finished = await purge_paced(
            lambda limit: self.queue.purge_finished(cutoff, limit), PURGE_RUN_SECONDS
        )
        if purged:
            log.info("purged %d finished invocations older than the retention period", purged)
        if self.outbox is not None and finished:
            finished = await self._purge_notifications()
        if not finished:
            self._next_purge = 0.0  # more to purge: go on at the next sweep
        return purged

    async def _purge_notifications(self) -> bool:
        now = self.clock.now()
        delivered_before = now - min(self._retention, DELIVERED_NOTIFICATION_SECONDS)
        failed_before = now - self._retention
        assert self.outbox is not None
        outbox = self.outbox
        _, finished = await purge_paced(
            lambda limit: outbox.purge_notifications(delivered_before, failed_before, limit),
            PURGE_RUN_SECONDS,
        )
        return finished


async def purge_paced(
    purge_batch: Callable[[int], Awaitable[int]], run_seconds: float | None = None
) -> tuple[int, bool]:
    """Calls ``purge_batch(PURGE_BATCH)`` until a batch comes back short, or for about
    ``run_seconds``; returns the rows deleted and whether a short batch ended it. Paced
    so that purging takes at most PURGE_DUTY of the time: ingest and dispatch share the
    store with it."""
    purged = 0
    stop_at = None if run_seconds is None else time.monotonic() + run_seconds
    while True:
        started = time.monotonic()
        deleted = await purge_batch(PURGE_BATCH)
        purged += deleted
        if deleted < PURGE_BATCH:
            return purged, True
        took = time.monotonic() - started
        await asyncio.sleep(max(PURGE_PAUSE_SECONDS, took * (1 - PURGE_DUTY) / PURGE_DUTY))
        if stop_at is not None and time.monotonic() >= stop_at:
            return purged, False

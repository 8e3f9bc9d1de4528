"""The worker: one ``--role worker`` (or ``all``) process's share of the fleet.

It is put together from parts that each do one job:

* membership (``membership.py``): registration with a heartbeat; singleton leases;
* placement (``placement.py``): which instances this worker runs, and endpoint rollouts;
* dispatch (``pools.py``, ``execution.py``): leasing requests for the running instances
  and running them, results written before each finish;
* sweeping (``sweeper.py``): lapsed leases, expired requests, dead workers, retention;
* model logs (``model_logs.py``): the instances' lines shipped to the store, and their
  retention.

Wake-ups arrive through ``wake()`` (same process) or the WakeupChannel (other processes);
polling is the slow fallback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from typing import Any, Protocol

from sagequeue.autoscaling.autoscaler import Autoscaler
from sagequeue.config import Settings
from sagequeue.dispatch.execution import Executor
from sagequeue.dispatch.membership import Membership
from sagequeue.dispatch.model_logs import FLUSH_SECONDS, LogRetention, LogShipper
from sagequeue.dispatch.notices import Notices
from sagequeue.dispatch.outbox import OutboxSender
from sagequeue.dispatch.placement import Placement, PlacementStore, RuntimeFactory
from sagequeue.dispatch.sweeper import Sweeper
from sagequeue.domain.errors import ServiceUnavailable
from sagequeue.domain.metrics import MetricClock
from sagequeue.monitoring.recorder import MetricsRecorder, new_writer_id
from sagequeue.monitoring.sampler import BacklogSampler
from sagequeue.ports import (
    Clock,
    LogStore,
    MetricsStore,
    Notifier,
    ObjectStore,
    OutboxStore,
    SystemClock,
    WakeupChannel,
)
from sagequeue.runtimes import select_runtime

log = logging.getLogger("sagequeue.worker")

POLL_SECONDS = 0.5  # a pool's lease poll when no wake-up comes (the slow fallback)
PLACEMENT_SECONDS = 0.5  # how often placement looks at the fleet
LEASE_SECONDS = 30.0
RENEW_SECONDS = 10.0
SWEEP_SECONDS = 1.0
STOP_GRACE_SECONDS = 25.0
# At a stop, notifications due then are delivered for up to this long.
NOTIFY_GRACE_SECONDS = 5.0


class WorkerStore(PlacementStore, MetricsStore, LogStore, OutboxStore, Protocol):
    """Everything a worker reads and writes in the shared store."""


class Worker:
    def __init__(
        self,
        store: WorkerStore,
        objects: ObjectStore,
        settings: Settings,
        *,
        wakeups: WakeupChannel | None = None,
        clock: Clock | None = None,
        runtime_factory: RuntimeFactory = select_runtime,
        poll_seconds: float = POLL_SECONDS,
        placement_seconds: float = PLACEMENT_SECONDS,
        lease_seconds: float = LEASE_SECONDS,
        renew_seconds: float = RENEW_SECONDS,
        sweep_seconds: float = SWEEP_SECONDS,
        stop_grace_seconds: float = STOP_GRACE_SECONDS,
        worker_timeout: float | None = None,
        purge_every_seconds: float | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock or SystemClock()
        self._wakeups = wakeups
        self._placement_seconds = placement_seconds
        self._lease_seconds = lease_seconds
        self._renew_seconds = renew_seconds
        self._sweep_seconds = sweep_seconds
        self.membership = Membership(
            store,
            self.clock,
            max_instances=settings.max_instances,
            endpoints=settings.endpoints,
            timeout=worker_timeout or settings.worker_timeout,
            on_lost=self._lost,
        )
        self.metric_clock = MetricClock(settings.time_scale)
        self.recorder = MetricsRecorder(
            store, new_writer_id("worker"), self.metric_clock, clock=self.clock
        )
        # The outbox sender delivers notifications (none without a notifier: the
        # notifications still wait in the store for a worker that has one).
        self.sender = (
            OutboxSender(
                store,
                notifier,
                self.clock,
                lambda: self.membership.worker_id,
                retry_for=settings.notification_retry_for,
                metrics=self.recorder,
            )
            if notifier is not None
            else None
        )
        self.executor = Executor(
            store,
            objects,
            settings,
            self.clock,
            self.recorder,
            notices=Notices(store, settings),
            on_notified=self.sender.wake if self.sender is not None else None,
        )
        self.logs = LogShipper(store, self.clock)
        self.log_retention = LogRetention(
            store,
            self.membership,
            self.clock,
            retention_seconds=settings.model_log_retention,
            max_bytes=settings.model_log_max_bytes,
        )
        self.sampler = BacklogSampler(
            store, self.membership, self.recorder, self.metric_clock, self.clock
        )
        self.autoscaler = Autoscaler(store, self.membership, self.metric_clock, self.clock)
        self.placement = Placement(
            store,
            objects,
            settings,
            self.clock,
            self.membership,
            self.executor,
            runtime_factory,
            default_concurrency=os.cpu_count() or 1,
            lease_seconds=lease_seconds,
            poll_seconds=poll_seconds,
            stop_grace_seconds=stop_grace_seconds,
            logs=self.logs,
        )
        self.sweeper = Sweeper(
            store,
            store,
            self.executor,
            self.membership,
            self.clock,
            lease_seconds=lease_seconds,
            retention_seconds=settings.retention,
            purge_every_seconds=purge_every_seconds,
            outbox=store,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    @property
    def owner(self) -> str:
        """The id this worker leases requests under (changes if it is ever reaped)."""
        return self.membership.worker_id

    # ------------------------------------------------------------------ life cycle
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        await self.membership.register()
        if self._wakeups is not None:
            await self._wakeups.listen(self.wake)
        await self.placement.tick()
        if self.sender is not None:
            self.sender.start()
        self._tasks = [
            self._every(self.membership.heartbeat_seconds, self.membership.beat, "heartbeat"),
            self._every(self._placement_seconds, self.placement.tick, "placement"),
            self._every(self._sweep_seconds, self.sweeper.sweep, "sweeper"),
            self._every(self._renew_seconds, self._renew, "renewer"),
            self._every(FLUSH_SECONDS, self.logs.flush, "model log shipper"),
            self._every(self.log_retention.every_seconds, self.log_retention.run, "log retention"),
        ]
        self.recorder.start()
        self._tasks += [
            self._every(self.metric_clock.sample_seconds, self.sampler.sample, "sampler"),
            self._every(self.metric_clock.sample_seconds, self.autoscaler.tick, "autoscaler"),
        ]

    async def stop(self) -> None:
        """Stop leasing, let in-flight invocations finish (up to the grace period),
        release the rest back to Queued, stop the instances, leave the fleet."""
        if self._wakeups is not None:
            await self._wakeups.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.placement.stop()
        if self.sender is not None:
            await self.sender.stop(NOTIFY_GRACE_SECONDS)
        await self.recorder.stop()
        await self.logs.close()  # the instances' last lines
        try:
            await self.membership.leave()
        except Exception:
            log.exception("leaving the fleet failed; the others reap this worker")

    def wake(self, endpoint_name: str) -> None:
        """An invocation was enqueued for ``endpoint_name``: lease it now. Cheap, and
        callable from any thread."""
        if threading.get_ident() == self._loop_thread:
            self.placement.wake(endpoint_name)
        elif self._loop is not None:
            self._loop.call_soon_threadsafe(self.placement.wake, endpoint_name)

    async def _lost(self) -> None:
        await self.placement.drop_all()

    def _every(self, seconds: float, action: Callable[[], Any], name: str) -> asyncio.Task[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(seconds)
                try:
                    await action()
                except asyncio.CancelledError:
                    raise
                except ServiceUnavailable as exc:  # the store restarts: the next round retries
                    log.warning("worker step %s: %s", name, exc.message)
                except Exception:
                    log.exception("worker background step %s failed", name)

        return asyncio.create_task(loop(), name=name)

    async def _renew(self) -> None:
        by_owner: dict[str, list[str]] = {}
        for pool in self.placement.all_pools():
            for inv, _ in pool.running.values():
                if inv.lease_owner is not None:
                    by_owner.setdefault(inv.lease_owner, []).append(inv.request_id)
        expires = self.clock.now() + self._lease_seconds
        for owner, ids in by_owner.items():
            await self.store.renew(ids, owner, expires)

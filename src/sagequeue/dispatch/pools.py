"""Dispatch: this worker's running instances of one endpoint variant's deployment
generation (a *pool*), and the loop that leases requests for them from the queue.

A pool leases only while its generation serves the endpoint (``active``), up to its
free slots (instances x MaxConcurrentInvocationsPerInstance) plus a small prefetch, so
that a slot that frees starts its next request without a round trip to the store. It is
woken by ``wake()`` (an enqueue seen by this process, a ring from another process, or a
finished request) and otherwise polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sagequeue.dispatch.execution import Executor
from sagequeue.domain.errors import ServiceUnavailable
from sagequeue.domain.placement import InstanceSpec, SlotKey
from sagequeue.ports import (
    Clock,
    InstanceClaim,
    InstanceLog,
    Invocation,
    InvocationStatus,
    ModelInstance,
    QueueStore,
)

log = logging.getLogger("sagequeue.worker")


@dataclass(eq=False)
class LocalInstance:
    """A model instance this worker runs for one of its instance claims."""

    claim: InstanceClaim
    instance: ModelInstance
    log: InstanceLog | None = None  # its log streams
    in_flight: int = 0
    retiring: bool = False  # takes no new request; closed once idle


class Pool:
    def __init__(
        self,
        spec: InstanceSpec,
        queue: QueueStore,
        executor: Executor,
        clock: Clock,
        owner: Callable[[], str],
        *,
        lease_seconds: float,
        poll_seconds: float,
    ) -> None:
        self.spec = spec
        self.queue = queue
        self.executor = executor
        self.clock = clock
        self._owner = owner
        self._lease_seconds = lease_seconds
        self._poll = poll_seconds
        self.instances: list[LocalInstance] = []
        self.active = False  # its generation serves: lease for it
        self.closing = False  # stopping for good: lease no more, release what waits
        self.wakeup = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self.running: dict[str, tuple[Invocation, asyncio.Task[None]]] = {}
        # Request ids of the ``running`` invocations a model instance has been given.
        self.started: set[str] = set()
        # Leased invocations that hold an instance slot or wait for one; the others in
        # ``running`` are writing their results (the slot already took its next one).
        self.holding = 0
        self.dispatcher: asyncio.Task[None] | None = None

    @property
    def key(self) -> SlotKey:
        return self.spec.key

    @property
    def endpoint_name(self) -> str:
        return self.spec.endpoint_name

    @property
    def capacity(self) -> int:
        serving = sum(1 for local in self.instances if not local.retiring)
        return serving * self.spec.max_concurrency

    @property
    def prefetch(self) -> int:
        return max(1, self.capacity // 4) if self.capacity else 0

    @property
    def free(self) -> int:
        """How many more to lease: the free slots plus the prefetch, and at most
        ``capacity`` invocations still writing their results (bounds what a slow store
        can pile up)."""
        return min(
            self.capacity + self.prefetch - self.holding,
            2 * self.capacity + self.prefetch - len(self.running),
        )

    # ------------------------------------------------------------------ instances
    def start(self) -> None:
        self.dispatcher = asyncio.create_task(
            self._dispatch(), name=f"dispatch {self.spec.endpoint_name}/{self.spec.variant_name}"
        )

    def add(self, local: LocalInstance) -> None:
        self.instances.append(local)
        self.wake()

    async def retire(self, local: LocalInstance, grace: float) -> None:
        """Take no new request on ``local``; close it once its requests are done (or
        after ``grace`` seconds)."""
        local.retiring = True
        self._slot_freed.set()  # requests waiting for a slot look again
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while local.in_flight > 0 and loop.time() < deadline:
            self._slot_freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slot_freed.wait(), deadline - loop.time())
        if local in self.instances:
            self.instances.remove(local)
        await close_instance(local.instance)

    def wake(self) -> None:
        self.wakeup.set()

    # ------------------------------------------------------------------ dispatch
    async def _dispatch(self) -> None:
        while not self.closing:
            # Clear before leasing: a wake or a finished invocation during the lease is kept.
            self.wakeup.clear()
            free = self.free if self.active else 0
            if free > 0:
                try:
                    leased = await self.queue.lease(
                        self.spec.endpoint_name,
                        self._owner(),
                        free,
                        self._lease_seconds,
                        self.clock.now(),
                        variant_name=self.spec.variant_name,
                    )
                except Exception:
                    log.exception("leasing for endpoint %s failed", self.spec.endpoint_name)
                    leased = []
                for inv in leased:
                    self.holding += 1
                    task = asyncio.create_task(self._run(inv))
                    self.running[inv.request_id] = (inv, task)
                if leased and len(leased) == free:
                    continue  # there may be more queued
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), self._poll)

    async def _take_slot(self) -> LocalInstance | None:
        """A running instance with a free slot, waiting for one; None when this pool no
        longer runs requests (it is closing, or its generation stopped serving)."""
        while True:
            if self.closing or not self.active:
                return None
            candidates = [
                local
                for local in self.instances
                if not local.retiring and local.in_flight < self.spec.max_concurrency
            ]
            if candidates:
                local = min(candidates, key=lambda c: c.in_flight)
                local.in_flight += 1
                return local
            self._slot_freed.clear()
            await self._slot_freed.wait()

    async def _run(self, inv: Invocation) -> None:
        local: LocalInstance | None = None
        holding = True

        def model_done() -> None:
            nonlocal local, holding
            if local is not None:
                local.in_flight -= 1
                local = None
                self._slot_freed.set()
            if holding:
                holding = False
                self.holding -= 1
                self.wakeup.set()

        try:
            local = await self._take_slot()
            if local is None:  # leased ahead, never started: back to the queue
                await self.queue.release(inv.request_id, self._owner_of(inv), attempted=False)
                return
            self.started.add(inv.request_id)
            await self.executor.run(local.instance, inv, model_done, instance_log=local.log)
        except asyncio.CancelledError:
            raise
        except ServiceUnavailable as exc:
            # The queue store stayed unavailable: this run's lease lapses and the request
            # runs again (its outcome is never recorded twice).
            log.warning("invocation %s not finished: %s", inv.inference_id, exc.message)
        except Exception as exc:
            log.exception("invocation %s failed unexpectedly", inv.inference_id)
            with contextlib.suppress(Exception):
                await self.executor.finish_with_failure(
                    inv, InvocationStatus.FAILED, f"Internal error while running the model: {exc}"
                )
        finally:
            model_done()
            self.running.pop(inv.request_id, None)
            self.started.discard(inv.request_id)
            self.wakeup.set()

    @staticmethod
    def _owner_of(inv: Invocation) -> str:
        assert inv.lease_owner is not None
        return inv.lease_owner

    def deactivate(self) -> None:
        """Its generation no longer serves: lease no more; requests waiting for a slot
        go back to the queue, running ones finish."""
        self.active = False
        self._slot_freed.set()

    async def close(self, grace: float, *, release: bool = True) -> None:
        """Stop for good: stop leasing, let running requests finish for up to ``grace``
        seconds, give the rest back to the queue (``release``), close the instances."""
        self.closing = True
        self.wakeup.set()
        self._slot_freed.set()
        if self.dispatcher is not None:
            await asyncio.wait([self.dispatcher], timeout=10)
        running = list(self.running.values())
        if running and grace > 0:
            await asyncio.wait([task for _, task in running], timeout=grace)
        for inv, task in running:
            if task.done():
                continue
            # Only a request a model instance was given counts as an attempt.
            attempted = inv.request_id in self.started
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            if release:
                with contextlib.suppress(Exception):
                    await self.queue.release(
                        inv.request_id, self._owner_of(inv), attempted=attempted
                    )
        for local in list(self.instances):
            await close_instance(local.instance)
        self.instances.clear()


async def close_instance(instance: ModelInstance) -> None:
    try:
        await instance.close()
    except Exception:
        log.exception("closing a model instance failed")

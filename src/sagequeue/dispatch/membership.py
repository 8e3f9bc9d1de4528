"""Fleet membership: this worker's registration in the shared store, kept alive by a
heartbeat, and the singleton leases it may hold.

A worker whose heartbeat lapses is reaped by the others (its instance claims freed, its
leased requests re-queued). When a worker finds itself reaped (it was paused or cut off
from the store for longer than the worker timeout) it drops everything it ran and
registers again under a new id, so nothing it still holds can be finished twice.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable

from sagequeue.ports import Clock, FleetStore, WorkerRecord

log = logging.getLogger("sagequeue.worker")

# Stand-in for "no limit" in the store, which keeps a number.
UNLIMITED_INSTANCES = 1_000_000


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Membership:
    def __init__(
        self,
        fleet: FleetStore,
        clock: Clock,
        *,
        max_instances: int | None,
        endpoints: list[str],
        timeout: float,
        on_lost: Callable[[], Awaitable[None]],
    ) -> None:
        self.fleet = fleet
        self.clock = clock
        self.timeout = timeout
        self._on_lost = on_lost
        now = clock.now()
        self.record = WorkerRecord(
            worker_id=new_worker_id(),
            host=socket.gethostname(),
            pid=os.getpid(),
            max_instances=UNLIMITED_INSTANCES if max_instances is None else max_instances,
            endpoints=tuple(name.lower() for name in endpoints),
            started_at=now,
        )

    @property
    def worker_id(self) -> str:
        return self.record.worker_id

    @property
    def heartbeat_seconds(self) -> float:
        """Several heartbeats per timeout, so one slow round trip does not lose it."""
        return self.timeout / 4

    async def register(self) -> None:
        now = self.clock.now()
        self.record.heartbeat_at = now
        self.record.heartbeat_expires_at = now + self.timeout
        await self.fleet.register_worker(self.record)
        log.info("worker %s registered", self.worker_id)

    async def beat(self) -> None:
        """Extend the registration; when it was reaped, drop everything and rejoin.
        Store errors propagate (the caller retries at the next beat): running requests
        keep running meanwhile."""
        now = self.clock.now()
        if await self.fleet.heartbeat(self.worker_id, now, now + self.timeout):
            self.record.heartbeat_at = now
            self.record.heartbeat_expires_at = now + self.timeout
            return
        log.warning(
            "worker %s was declared gone (no heartbeat for %.0f s): its instances and "
            "requests moved; starting over",
            self.worker_id,
            self.timeout,
        )
        await self._on_lost()
        self.record.worker_id = new_worker_id()
        await self.register()

    async def leave(self) -> None:
        await self.fleet.remove_worker(self.worker_id)

    async def hold(self, lease_name: str) -> bool:
        """Take or keep the singleton lease ``lease_name`` (for one worker timeout);
        True while this worker holds it. Another worker takes it over once this one
        stops renewing it."""
        now = self.clock.now()
        return await self.fleet.acquire_lease(lease_name, self.worker_id, now, now + self.timeout)

    async def let_go(self, lease_name: str) -> None:
        await self.fleet.release_lease(lease_name, self.worker_id)

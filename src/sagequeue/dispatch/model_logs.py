"""Model logs on the worker: lines of this worker's model instances, shipped to the
shared store in batches (so any API process serves them through the CloudWatch Logs
API), and the fleet's retention of them.

* ``LogShipper`` buffers lines in memory (bounded: when the store is unreachable for
  long, the oldest lines go and a line says how many) and writes them every half second,
  or sooner once a batch is full.
* ``EndpointInstanceLog`` is one instance's pair of streams (``InstanceLog``).
* ``LogRetention`` deletes lines older than ``--model-log-retention`` and, oldest first,
  lines past ``--model-log-max-bytes``: one worker at a time (a singleton lease), in
  small batches.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from sagequeue.dispatch.membership import Membership
from sagequeue.domain.logs import (
    data_log_stream,
    endpoint_log_group,
    instance_log_stream,
    split_message,
)
from sagequeue.ports import Clock, LogEvent, LogStore

log = logging.getLogger("sagequeue.worker")

FLUSH_SECONDS = 0.5
BATCH_EVENTS = 2000
MAX_BUFFERED_EVENTS = 100_000
MAX_BUFFERED_CHARS = 64 * 1024 * 1024
RETENTION_LEASE = "model-log-retention"
RETENTION_EVERY_SECONDS = 60.0
RETENTION_BATCH = 1000
RETENTION_PAUSE_SECONDS = 0.05


class LogShipper:
    def __init__(self, store: LogStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self._buffer: deque[LogEvent] = deque()
        self._chars = 0
        self._dropped = 0
        self._failing = False
        self._lock = asyncio.Lock()
        self._soon: asyncio.Task[None] | None = None

    def instance_log(
        self, endpoint_name: str, variant_name: str, instance_id: str
    ) -> EndpointInstanceLog:
        return EndpointInstanceLog(self, endpoint_name, variant_name, instance_id)

    def emit(self, group: str, stream: str, message: str) -> None:
        """Queue one line (cut in pieces when longer than an event takes). Called on the
        event loop; never blocks."""
        now = int(self.clock.now() * 1000)
        for piece in split_message(message):
            self._buffer.append(LogEvent(group, stream, now, piece))
            self._chars += len(piece)
        while len(self._buffer) > MAX_BUFFERED_EVENTS or self._chars > MAX_BUFFERED_CHARS:
            self._chars -= len(self._buffer.popleft().message)
            self._dropped += 1
        if len(self._buffer) >= BATCH_EVENTS and self._soon is None:
            self._soon = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        try:
            await self.flush()
        finally:
            self._soon = None

    async def flush(self) -> None:
        """Write everything buffered, in batches; on a store error keep the lines for the
        next try (the buffer stays bounded)."""
        async with self._lock:
            while self._buffer:
                batch = [
                    self._buffer.popleft() for _ in range(min(BATCH_EVENTS, len(self._buffer)))
                ]
                if self._dropped:
                    batch[0:0] = self._dropped_notes(batch[0])
                now = int(self.clock.now() * 1000)
                for event in batch:
                    event.ingestion_time = now
                try:
                    # Shielded: a worker stopping mid-write still writes the batch.
                    await asyncio.shield(self.store.put_log_events(batch))
                except Exception as exc:
                    self._buffer.extendleft(reversed(batch))
                    if not self._failing:
                        log.warning("model logs cannot be written (%s); kept in memory", exc)
                    self._failing = True
                    return
                self._chars -= sum(len(event.message) for event in batch)
                if self._failing:
                    log.info("model logs are written again")
                    self._failing = False

    def _dropped_notes(self, first: LogEvent) -> list[LogEvent]:
        dropped, self._dropped = self._dropped, 0
        note = (
            f"[sagequeue] {dropped} log line(s) of this worker's instances were dropped: "
            "the store could not take them in time"
        )
        self._chars += len(note)
        return [LogEvent(first.group, first.stream, first.timestamp, note)]

    async def close(self) -> None:
        if self._soon is not None:
            await asyncio.wait([self._soon])
        try:
            await self.flush()
        except Exception:
            log.exception("writing the last model log lines failed")


class EndpointInstanceLog:
    """One model instance's streams (``InstanceLog``): ``<variant>/<instance-id>`` for the
    model's output and ``<variant>/<instance-id>/data-log`` for sagequeue's lines."""

    def __init__(
        self, shipper: LogShipper, endpoint_name: str, variant_name: str, instance_id: str
    ) -> None:
        self._shipper = shipper
        self._instance_id = instance_id
        self.group = endpoint_log_group(endpoint_name)
        self.model_stream = instance_log_stream(variant_name, instance_id)
        self.data_stream = data_log_stream(variant_name, instance_id)

    @property
    def instance_id(self) -> str:
        return self._instance_id

    def model_output(self, line: str) -> None:
        self._shipper.emit(self.group, self.model_stream, line)

    def platform(self, line: str) -> None:
        self._shipper.emit(self.group, self.data_stream, line)


class LogRetention:
    def __init__(
        self,
        store: LogStore,
        membership: Membership,
        clock: Clock,
        *,
        retention_seconds: float,
        max_bytes: int,
    ) -> None:
        self.store = store
        self.membership = membership
        self.clock = clock
        self._retention = retention_seconds
        self._max_bytes = max_bytes
        # A short retention (tests, demos) is honoured to within a quarter of itself.
        self.every_seconds = min(RETENTION_EVERY_SECONDS, max(1.0, retention_seconds / 4))

    async def run(self) -> int:
        """Delete what is past the age or the size bound; returns how many lines went.
        Only the holder of the retention lease deletes."""
        if not await self.membership.hold(RETENTION_LEASE):
            return 0
        cutoff = int((self.clock.now() - self._retention) * 1000)
        purged = await self._in_batches(
            lambda: self.store.purge_log_events(cutoff, RETENTION_BATCH)
        )
        trimmed = await self._in_batches(
            lambda: self.store.trim_log_events(self._max_bytes, RETENTION_BATCH)
        )
        if purged or trimmed:
            log.info(
                "model logs: purged %d line(s) past the retention, %d past the size bound",
                purged,
                trimmed,
            )
        return purged + trimmed

    async def _in_batches(self, step: Callable[[], Awaitable[int]]) -> int:
        total = 0
        while True:
            done = await step()
            total += done
            if done < RETENTION_BATCH:
                return total
            await asyncio.sleep(RETENTION_PAUSE_SECONDS)
            if total % (RETENTION_BATCH * 20) == 0:
                await self.membership.hold(RETENTION_LEASE)  # keep it through long runs

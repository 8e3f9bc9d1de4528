"""Wake-ups across hosts on PostgreSQL: LISTEN on the channel that the store's triggers
NOTIFY in the enqueue's own transaction (``sagequeue.stores.postgres``).

A NOTIFY is delivered at commit, to every session listening on the database, so a
dispatcher on any host hears of new work as soon as it can be leased. The listener keeps
one dedicated connection (outside the pools) and reconnects with backoff when the
database restarts or the connection drops; rings sent while it was away are lost, which
is harmless: workers also poll, slowly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Final

import psycopg

from sagequeue.stores.postgres import (
    CHANGES_CHANNEL,
    CONNECT_TIMEOUT_SECONDS,
    WAKEUP_CHANNEL,
    redact,
)

log = logging.getLogger("sagequeue.postgres")

RECONNECT_MIN_SECONDS: Final = 0.1
RECONNECT_MAX_SECONDS: Final = 2.0
# How long ``listen`` waits for its first LISTEN before returning anyway (the database
# may be down: then it keeps trying in the background).
FIRST_LISTEN_TIMEOUT_SECONDS: Final = 5.0


class PostgresWakeups:
    """Implements ``WakeupChannel`` (sagequeue.ports) with LISTEN/NOTIFY."""

    def __init__(self, url: str, *, channel: str = WAKEUP_CHANNEL) -> None:
        self.url = url
        self.channel = channel
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self.reconnects = 0  # how many times the connection was re-established

    def ring(self, endpoint_name: str) -> None:
        """Nothing to do: the enqueue's transaction notified (one NOTIFY per endpoint
        and group commit)."""

    async def listen(self, on_ring: Callable[[str], None]) -> None:
        """Start calling ``on_ring(endpoint_name)`` for every notification; returns once
        listening (or after a few seconds when the database cannot be reached)."""
        if self._task is not None:
            raise RuntimeError("already listening")
        self._task = asyncio.get_running_loop().create_task(self._run(on_ring))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), FIRST_LISTEN_TIMEOUT_SECONDS)

    @property
    def listening(self) -> bool:
        return self._listening.is_set()

    async def _run(self, on_ring: Callable[[str], None]) -> None:
        delay = RECONNECT_MIN_SECONDS
        connected_before = False
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.url,
                    autocommit=True,
                    connect_timeout=CONNECT_TIMEOUT_SECONDS,
                    application_name="sagequeue-wakeups",
                    # A peer that vanished without closing (a network partition) is
                    # noticed by TCP keepalives instead of never.
                    keepalives=1,
                    keepalives_idle=10,
                    keepalives_interval=5,
                    keepalives_count=3,
                )
            except psycopg.Error as exc:
                self._listening.clear()
                log.debug("wake-up listener cannot connect to %s: %s", redact(self.url), exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)
                continue
            try:
                async with conn:
                    await conn.execute(f"LISTEN {self.channel}")
                    if connected_before:
                        self.reconnects += 1
                        log.info("wake-up listener reconnected to %s", redact(self.url))
                    connected_before = True
                    self._listening.set()
                    delay = RECONNECT_MIN_SECONDS
                    async for notify in conn.notifies():
                        try:
                            on_ring(notify.payload)
                        except Exception:
                            log.exception("wake-up handler failed")
            except psycopg.Error as exc:
                self._listening.clear()
                log.warning("wake-up listener lost %s (%s); reconnecting", redact(self.url), exc)
                await asyncio.sleep(delay)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._listening.clear()


class PostgresChangeNotices:
    """Implements ``ChangeNotices`` (sagequeue.ports): the store's triggers NOTIFY the
    endpoint name of every statement that changed invocations' status; event feeds of
    that endpoint's requests wake and read the store again."""

    def __init__(self, url: str) -> None:
        self._listener = PostgresWakeups(url, channel=CHANGES_CHANNEL)
        self._waiters: dict[str, set[asyncio.Event]] = {}

    async def start(self) -> None:
        await self._listener.listen(self._notified)

    def _notified(self, endpoint_name: str) -> None:
        for event in self._waiters.get(endpoint_name, ()):
            event.set()

    async def wait(self, endpoint_name: str, inference_id: str, timeout: float) -> bool:
        event = asyncio.Event()
        waiting = self._waiters.setdefault(endpoint_name, set())
        waiting.add(event)
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
            return True
        except TimeoutError:
            return False
        finally:
            waiting.discard(event)
            if not waiting:
                self._waiters.pop(endpoint_name, None)

    async def close(self) -> None:
        await self._listener.close()

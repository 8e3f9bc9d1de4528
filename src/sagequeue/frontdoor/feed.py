"""The push feed (an extension beyond SageMaker): a request's state changes as a stream
of server-sent events, ``GET /endpoints/{name}/async-invocations/{id}/events``.

Each event's data is the status call's JSON. The stream ends after the final state
(Completed, Failed or Expired). It follows the shared store, so the API process holding
the stream need not be the one that finishes the request: it waits for a change notice
where the store sends them (PostgreSQL's LISTEN / NOTIFY) and otherwise reads the store
again with a growing pause. A comment line every ``HEARTBEAT_SECONDS`` keeps proxies
from closing a quiet stream and finds clients that went away.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from sagequeue.ports import ChangeNotices, Invocation, InvocationStatus

HEARTBEAT_SECONDS = 15.0
FIRST_POLL_SECONDS = 0.05
MAX_POLL_SECONDS = 1.0
RETRY_MILLISECONDS = 1000  # the reconnection delay the stream suggests to EventSource


def _fingerprint(inv: Invocation) -> tuple[object, ...]:
    # A lapsed lease that is taken again shows as a new InProgress (attempts changed).
    return (inv.status, inv.attempts, inv.started_at, inv.finished_at)


def _between(previous: Invocation | None, current: Invocation) -> list[Invocation]:
    """The states to report on the way from ``previous`` to ``current``: a request seen
    Queued and then already finished passed through InProgress (it was run), which is
    reported too, so that a stream always shows every state it went through."""
    if previous is None:
        return [current]
    if _fingerprint(previous) == _fingerprint(current):
        return []
    states = []
    if (
        previous.status is InvocationStatus.QUEUED
        and current.status in (InvocationStatus.COMPLETED, InvocationStatus.FAILED)
        and current.started_at is not None
    ):
        states.append(
            dataclasses.replace(
                current,
                status=InvocationStatus.IN_PROGRESS,
                finished_at=None,
                failure_reason=None,
            )
        )
    states.append(current)
    return states


def frame(event_id: int, data: bytes) -> bytes:
    return b"id: %d\ndata: %s\n\n" % (event_id, data)


async def invocation_events(
    first: Invocation,
    read: Callable[[], Awaitable[Invocation | None]],
    encode: Callable[[Invocation], bytes],
    *,
    notices: ChangeNotices | None,
    stopping: asyncio.Event,
    heartbeat_seconds: float = HEARTBEAT_SECONDS,
) -> AsyncIterator[bytes]:
    """The event stream of one invocation, starting with its state ``first``."""
    yield b"retry: %d\n\n" % RETRY_MILLISECONDS
    previous: Invocation | None = None
    current: Invocation | None = first
    event_id = 0
    pause = FIRST_POLL_SECONDS
    last_write = time.monotonic()
    while current is not None:
        states = _between(previous, current)
        for state in states:
            event_id += 1
            yield frame(event_id, encode(state))
        if states:
            last_write = time.monotonic()
            pause = FIRST_POLL_SECONDS
        if current.status.is_final:
            return
        previous = current
        await _wait(current, notices, stopping, pause)
        if stopping.is_set():
            return  # the server is stopping: the client reconnects (or polls)
        pause = min(pause * 2, MAX_POLL_SECONDS)
        if time.monotonic() - last_write >= heartbeat_seconds:
            yield b": keep-alive\n\n"
            last_write = time.monotonic()
        current = await read()


async def _wait(
    inv: Invocation, notices: ChangeNotices | None, stopping: asyncio.Event, pause: float
) -> None:
    """Until a change notice, ``stopping``, or ``pause`` seconds (a notice-less store is
    polled; with notices, the store is read again at the slowest pace as a fallback)."""
    if notices is None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), pause)
        return
    notice = asyncio.ensure_future(notices.wait(inv.endpoint_name, inv.inference_id, 5.0))
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({notice, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (notice, stop):
            task.cancel()

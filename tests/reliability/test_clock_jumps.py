"""Jumps of the wall clock (an NTP step, a resumed VM, an operator's ``date``), through the
worker's injected Clock: the worker with the in-memory store, a local object store and a
real model process. Leases, heartbeats and RequestTTLSeconds follow the wall clock;
invocation timeouts follow the monotonic clock, which never jumps.

A jump forward must not make a live worker take itself (or its requests) for dead; a jump
back must not finish anything twice nor leave anything stuck for longer than the jump."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from sagequeue.ports import Invocation, InvocationStatus, WorkerRecord
from unit.test_python_runtime_support import example_archives
from unit.test_worker import Env, OutputCheckingStore

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

WORKER_TIMEOUT = 2.0


class JumpingClock:
    """The system's clocks, with a wall clock that jumps when told to."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic()

    def jump(self, seconds: float) -> None:
        self.offset += seconds


class FinishCountingStore(OutputCheckingStore):
    """Counts the finishes the store accepted, per request."""

    def __init__(self, objects) -> None:
        super().__init__(objects)
        self.finishes: dict[str, int] = {}

    async def finish(self, request_id, owner, status, failure_reason, now) -> bool:
        accepted = await super().finish(request_id, owner, status, failure_reason, now)
        if accepted:
            self.finishes[request_id] = self.finishes.get(request_id, 0) + 1
        return accepted


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return example_archives(tmp_path_factory.mktemp("examples-build"))


@pytest.fixture
async def env(tmp_path: Path, archives: dict[str, bytes]):
    environment = Env(tmp_path, archives)
    environment.store = FinishCountingStore(environment.objects)
    await environment.open()
    yield environment
    await environment.close()


@pytest.fixture
def clock() -> JumpingClock:
    return JumpingClock()


async def start(env: Env, clock: JumpingClock, endpoint: str | None = "echo"):
    if endpoint:
        await env.create_endpoint(endpoint)
    worker = await env.worker(clock=clock, worker_timeout=WORKER_TIMEOUT)
    if endpoint:
        await env.endpoint(endpoint)
    return worker


async def until_in_progress(env: Env, inv: Invocation) -> None:
    for _ in range(400):
        current = await env.store.get(inv.endpoint_name, inv.inference_id)
        if current.status is InvocationStatus.IN_PROGRESS:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"{inv.inference_id} never started")


async def test_a_jump_forward_does_not_take_the_live_worker_or_its_request_for_dead(
    env, clock
) -> None:
    worker = await start(env, clock)
    owner = worker.owner
    inv = await env.enqueue("echo", b"x", custom_attributes="sleep_ms=1500")
    await until_in_progress(env, inv)
    clock.jump(3600)  # past its heartbeat, its lease (30 s) and beyond
    done = await env.final(inv)
    assert (done.status, done.attempts) == (InvocationStatus.COMPLETED, 1)
    assert env.store.finishes[inv.request_id] == 1
    assert worker.owner == owner  # never reaped, never re-registered
    assert [w.worker_id for w in await env.store.list_workers()] == [owner]


async def test_a_jump_forward_expires_requests_queued_past_their_ttl(env, clock) -> None:
    await start(env, clock, endpoint=None)  # no instance anywhere: requests stay queued
    short = await env.enqueue("nowhere", enqueued_at=clock.now(), request_ttl_seconds=60)
    long = await env.enqueue("nowhere", enqueued_at=clock.now(), request_ttl_seconds=21600)
    await asyncio.sleep(0.5)
    assert (await env.store.get("nowhere", short.inference_id)).status is InvocationStatus.QUEUED
    clock.jump(120)
    done = await env.final(short)
    assert done.status is InvocationStatus.EXPIRED
    body, _ = await env.read(short.failure_location)
    assert body == b"Request expired: queued longer than RequestTTLSeconds (60 s)"
    await asyncio.sleep(0.5)
    assert (await env.store.get("nowhere", long.inference_id)).status is InvocationStatus.QUEUED


DEAD = "dead-worker"


async def dead_worker_holding(env: Env, clock: JumpingClock, inv: Invocation) -> None:
    """Register a worker that then dies holding ``inv``'s lease; its heartbeat and lease
    last ten minutes (``lapse_in`` shortens them)."""
    now = clock.now()
    record = WorkerRecord(
        worker_id=DEAD,
        host="elsewhere",
        pid=1,
        max_instances=1,
        started_at=now,
        heartbeat_at=now,
        heartbeat_expires_at=now + 600,
    )
    await env.store.register_worker(record)
    leased = await env.store.lease("echo", DEAD, 1, 600, now)
    assert [i.request_id for i in leased] == [inv.request_id]


async def lapse_in(env: Env, clock: JumpingClock, inv: Invocation, seconds: float) -> None:
    """The dead worker's last heartbeat and lease renewal, good for ``seconds``."""
    now = clock.now()
    assert await env.store.heartbeat(DEAD, now, now + seconds)
    await env.store.renew([inv.request_id], DEAD, now + seconds)


async def test_a_jump_forward_lapses_a_dead_workers_lease_and_the_request_runs_again(
    env, clock
) -> None:
    inv = await env.enqueue("echo", b"orphaned", wake=False)
    await dead_worker_holding(env, clock, inv)
    await start(env, clock)
    await asyncio.sleep(1)
    assert (await env.store.get("echo", inv.inference_id)).lease_owner == DEAD
    clock.jump(3600)  # past the dead worker's heartbeat and lease
    done = await env.final(inv, timeout=30)
    assert (done.status, done.attempts) == (InvocationStatus.COMPLETED, 2)
    assert env.store.finishes[inv.request_id] == 1
    assert DEAD not in [w.worker_id for w in await env.store.list_workers()]


async def test_a_jump_back_finishes_the_running_request_once_and_later_ones_too(env, clock) -> None:
    worker = await start(env, clock)
    owner = worker.owner
    running = await env.enqueue("echo", b"x", custom_attributes="sleep_ms=1500")
    await until_in_progress(env, running)
    clock.jump(-3600)
    done = await env.final(running)
    assert (done.status, done.attempts) == (InvocationStatus.COMPLETED, 1)
    later = await env.enqueue("echo", b"y", enqueued_at=clock.now())
    assert (await env.final(later)).status is InvocationStatus.COMPLETED
    assert env.store.finishes == {running.request_id: 1, later.request_id: 1}
    await asyncio.sleep(WORKER_TIMEOUT)  # heartbeats go on from the earlier time
    assert worker.owner == owner
    assert [w.worker_id for w in await env.store.list_workers()] == [owner]


async def test_a_jump_back_delays_recovering_a_dead_workers_request_by_the_jump_only(
    env, clock
) -> None:
    inv = await env.enqueue("echo", b"orphaned", wake=False)
    await dead_worker_holding(env, clock, inv)
    await start(env, clock)
    await lapse_in(env, clock, inv, WORKER_TIMEOUT)
    clock.jump(-3)
    started = time.monotonic()
    done = await env.final(inv, timeout=30)
    waited = time.monotonic() - started
    assert (done.status, done.attempts) == (InvocationStatus.COMPLETED, 2)
    assert env.store.finishes[inv.request_id] == 1
    # Its heartbeat and lease lapse 3 s of wall clock later: not before, not forever.
    assert WORKER_TIMEOUT + 3 - 0.5 <= waited < WORKER_TIMEOUT + 3 + 10


async def test_a_worker_that_stalled_past_its_timeout_does_not_reap_itself(env, clock) -> None:
    """No jump, but the event loop stalls longer than the worker timeout: the sweep that
    runs next finds this worker's own heartbeat lapsed; it renews it instead of taking
    itself for dead."""
    worker = await start(env, clock)
    owner = worker.owner
    inv = await env.enqueue("echo", b"x", custom_attributes="sleep_ms=1000")
    await until_in_progress(env, inv)
    time.sleep(WORKER_TIMEOUT + 1)  # blocks the event loop: no heartbeat, no sweep
    done = await env.final(inv)
    assert (done.status, done.attempts) == (InvocationStatus.COMPLETED, 1)
    assert worker.owner == owner

"""Load generator: pre-signed InvokeEndpointAsync requests replayed over keep-alive
connections by several processes.

A boto3 client saturates near 1,000 calls/s, far below what the front door must take,
so requests are signed ahead of time (botocore's SigV4Auth, each with a distinct
X-Amzn-SageMaker-Inference-Id) and their raw HTTP/1.1 bytes are replayed. Each process
runs an asyncio (uvloop) event loop owning its share of the connections; each
connection keeps exactly one request in flight (closed loop) and records its latency.
Responses are parsed minimally: the status line, then Content-Length.

Every run is bounded by a request count AND a duration, and only targets 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from sagequeue.testing.requests import (
    LOOPBACK,
    InvocationSpec,
    Target,
    presign_get,
    raw_http,
    sign_invocation,
)

__all__ = ["InvocationSpec", "Target", "presign_get", "raw_http", "sign_invocation"]


class Replayer(asyncio.Protocol):
    """One keep-alive connection replaying requests one at a time (closed loop)."""

    def __init__(
        self,
        next_request: Callable[[], bytes | None],
        record: Callable[..., None],
        done: asyncio.Future[None],
        reconnect: Callable[[], None],
    ) -> None:
        self._next_request = next_request
        self._record = record
        self._done = done
        self._reconnect = reconnect
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._sent_at = 0
        self._need = -1  # total bytes of the current response once the head is parsed
        self._status = 0
        self._close_after = False  # the server said "Connection: close" (moto does)
        self._replaced = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def start(self) -> None:
        self._send_next()

    def _send_next(self) -> None:
        request = self._next_request()
        if request is None:
            self._finish()
            return
        self._sent_at = time.perf_counter_ns()
        assert self._transport is not None
        self._transport.write(request)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while True:
            if self._need < 0:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(buffer[:end]).lower()
                self._status = int(head[9:12])
                length = 0
                at = head.find(b"\ncontent-length:")
                if at >= 0:
                    stop = head.find(b"\r", at + 16)
                    length = int(head[at + 16 : stop if stop >= 0 else None])
                self._close_after = b"\nconnection: close" in head
                self._need = end + 4 + length
            if len(buffer) < self._need:
                return
            del buffer[: self._need]
            self._need = -1
            self._record(self._status, time.perf_counter_ns() - self._sent_at)
            if self._close_after:  # go on over a new connection, as an HTTP client must
                self._replaced = True
                assert self._transport is not None
                self._transport.close()
                self._reconnect()
                return
            self._send_next()
            if self._done.done():
                return

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._replaced and not self._done.done():
            self._record(-1, 0)
            self._done.set_result(None)

    def _finish(self) -> None:
        if not self._done.done():
            self._done.set_result(None)
        if self._transport is not None:
            self._transport.close()


@dataclass(slots=True)
class _WorkerResult:
    latencies_ns: list[int]
    statuses: dict[int, int]
    started: float
    finished: float


async def _replay(
    port: int, requests: list[bytes], connections: int, deadline_s: float, start_at: float
) -> _WorkerResult:
    loop = asyncio.get_running_loop()
    latencies: list[int] = []
    statuses: dict[int, int] = {}
    iterator = iter(requests)
    deadline = [0.0]

    def next_request() -> bytes | None:
        if time.monotonic() >= deadline[0]:
            return None
        return next(iterator, None)

    def record(status: int, latency_ns: int) -> None:
        statuses[status] = statuses.get(status, 0) + 1
        if status > 0:
            latencies.append(latency_ns)

    async def connect(done: asyncio.Future[None]) -> Replayer:
        def make() -> Replayer:
            return Replayer(next_request, record, done, lambda: reconnect(done))

        _, protocol = await loop.create_connection(make, LOOPBACK, port)
        return protocol

    async def connect_and_start(done: asyncio.Future[None]) -> None:
        try:
            protocol = await connect(done)
        except OSError:
            record(-1, 0)
            if not done.done():
                done.set_result(None)
            return
        protocol.start()

    pending: set[asyncio.Task[None]] = set()

    def reconnect(done: asyncio.Future[None]) -> None:
        task = loop.create_task(connect_and_start(done))
        pending.add(task)
        task.add_done_callback(pending.discard)

    protocols: list[Replayer] = []
    finished: list[asyncio.Future[None]] = []
    for _ in range(connections):
        done: asyncio.Future[None] = loop.create_future()
        protocols.append(await connect(done))
        finished.append(done)
    # All processes start together so that signing never overlaps the measurement.
    await asyncio.sleep(max(0.0, start_at - time.time()))
    started = time.monotonic()
    deadline[0] = started + deadline_s
    for protocol in protocols:
        protocol.start()
    await asyncio.gather(*finished)
    return _WorkerResult(latencies, statuses, started, time.monotonic())


def _worker(args: tuple[Any, ...]) -> tuple[list[int], dict[int, int], float]:
    target, spec, count, connections, duration, start_at, seed = args
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # plain asyncio still works, only slower
        pass
    requests = [
        sign_invocation(target, spec, f"bench-{seed}-{n}-{uuid.uuid4().hex[:8]}")
        for n in range(count)
    ]
    result = asyncio.run(_replay(target.port, requests, connections, duration, start_at))
    return result.latencies_ns, result.statuses, result.finished - result.started


@dataclass(slots=True)
class LoadResult:
    connections: int
    processes: int
    requests: int  # completed with an HTTP status
    errors: int  # non-2xx responses and dropped connections
    seconds: float
    requests_per_second: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    statuses: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentiles_ms(latencies_ns: list[int] | np.ndarray) -> tuple[float, float, float] | None:
    if len(latencies_ns) == 0:
        return None
    p50, p90, p99 = np.percentile(np.asarray(latencies_ns, dtype=np.float64), [50, 90, 99])
    return float(p50) / 1e6, float(p90) / 1e6, float(p99) / 1e6


def run_load(
    target: Target | Sequence[Target],
    spec: InvocationSpec,
    *,
    connections: int,
    max_requests: int,
    max_seconds: float,
    processes: int | None = None,
    on_start: Callable[[float, float], None] | None = None,
) -> LoadResult:
    """Replay up to ``max_requests`` signed invocations for at most ``max_seconds``.
    ``on_start(start_at, max_seconds)`` is told when (epoch) the replay will begin, e.g.
    to profile the server during the measured window only. With several targets (API
    processes behind one load balancer), load process i drives target i % len(targets)."""
    targets = [target] if isinstance(target, Target) else list(target)
    processes = max(1, min(processes or max(2, len(targets)), connections))
    per_process = [
        connections // processes + (i < connections % processes) for i in range(processes)
    ]
    count = max(1, max_requests // processes)
    # Signing takes ~60 µs a request: leave each process time to sign its share first.
    start_at = time.time() + 1.0 + count * 80e-6
    if on_start is not None:
        on_start(start_at, max_seconds)
    jobs = [
        (targets[i % len(targets)], spec, count, per_process[i], max_seconds, start_at, i)
        for i in range(processes)
    ]
    context = multiprocessing.get_context("fork")
    with context.Pool(processes) as pool:
        results = pool.map(_worker, jobs)
    latencies: list[int] = []
    statuses: dict[int, int] = {}
    seconds = 0.0
    for worker_latencies, worker_statuses, worker_seconds in results:
        latencies.extend(worker_latencies)
        for status, n in worker_statuses.items():
            statuses[status] = statuses.get(status, 0) + n
        seconds = max(seconds, worker_seconds)
    completed = sum(n for status, n in statuses.items() if status > 0)
    errors = sum(n for status, n in statuses.items() if not 200 <= status < 300)
    pcts = percentiles_ms(latencies)
    return LoadResult(
        connections=connections,
        processes=processes,
        requests=completed,
        errors=errors,
        seconds=round(seconds, 3),
        requests_per_second=round(completed / seconds, 1) if seconds > 0 else 0.0,
        p50_ms=None if pcts is None else round(pcts[0], 3),
        p90_ms=None if pcts is None else round(pcts[1], 3),
        p99_ms=None if pcts is None else round(pcts[2], 3),
        statuses={str(k): v for k, v in sorted(statuses.items())},
    )

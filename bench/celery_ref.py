"""Celery + Redis, run as a reference next to sagequeue (issue 5): a Redis server and a
Celery worker (prefork, 8 processes, default settings) on 127.0.0.1, then

- accept: tasks published per second by 2 client processes (``delay()`` calls);
- round trip: sequential no-op tasks, ``delay().get()``, p50 / p99;
- efficiency: 3,000 tasks sleeping 20 ms published while the worker runs; completed /
  (last end - first start) against the ideal 8 x 1000 / 20 = 400/s.

Every loop is bounded by a count and a duration. Defaults are kept on purpose: with them
neither Redis (no fsync per write) nor Celery (ack before running) keeps an accepted
task through a crash, which is what sagequeue must do and still be compared with.
"""

from __future__ import annotations

import multiprocessing
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.servers import BIN, REPO, ChildProcess, free_port, port_open, wait_until

SLOTS = 8
SLEEP_MS = 20


def start_redis(port: int, log_dir: Path) -> ChildProcess:
    child = ChildProcess(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        log_dir / f"redis-{port}.log",
    ).start()
    wait_until(lambda: port_open(port), 20, "redis-server", child.process)
    return child


def start_worker(redis_url: str, log_dir: Path) -> ChildProcess:
    child = ChildProcess(
        [
            str(BIN / "celery") if (BIN / "celery").exists() else "celery",
            "-A",
            "bench.celery_tasks",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            str(SLOTS),
            "--loglevel",
            "WARNING",
        ],
        log_dir / "celery-worker.log",
        env={"BENCH_REDIS_URL": redis_url, "PYTHONPATH": str(REPO)},
    ).start()
    return child


def _app(redis_url: str) -> Any:
    from bench import celery_tasks

    celery_tasks.app.conf.broker_url = redis_url
    celery_tasks.app.conf.result_backend = redis_url
    return celery_tasks


def _wait_worker(tasks: Any, timeout: float) -> None:
    """Until the worker answers a task (it needs a few seconds to fork its pool)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            tasks.noop.delay().get(timeout=2)
            return
        except Exception:
            continue
    raise TimeoutError("the Celery worker did not answer")


def _publish(args: tuple[str, int, float]) -> tuple[int, float]:
    redis_url, count, max_seconds = args
    tasks = _app(redis_url)
    tasks.noop.delay().forget()  # connect before the clock starts
    started = time.perf_counter()
    sent = 0
    while sent < count and time.perf_counter() - started < max_seconds:
        tasks.noop.delay()
        sent += 1
    return sent, time.perf_counter() - started


def accept_rate(redis_url: str, count: int, max_seconds: float, processes: int = 2) -> float:
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        results = pool.map(_publish, [(redis_url, count // processes, max_seconds)] * processes)
    return sum(sent for sent, _ in results) / max(seconds for _, seconds in results)


def round_trips(tasks: Any, count: int, max_seconds: float) -> list[float]:
    latencies: list[float] = []
    deadline = time.monotonic() + max_seconds
    while len(latencies) < count and time.monotonic() < deadline:
        started = time.perf_counter()
        tasks.noop.delay().get(timeout=10)
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def efficiency(tasks: Any, count: int, max_seconds: float) -> tuple[float, int]:
    results = [tasks.sleep.delay(SLEEP_MS) for _ in range(count)]
    deadline = time.monotonic() + max_seconds
    spans: list[tuple[float, float]] = []
    for result in results:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            spans.append(tuple(result.get(timeout=remaining)))  # type: ignore[arg-type]
        except Exception:
            break
    if not spans:
        return 0.0, 0
    window = max(end for _, end in spans) - min(start for start, _ in spans)
    return len(spans) / window, len(spans)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def version() -> str:
    import celery

    try:
        redis_version = (
            subprocess.run(
                ["redis-server", "--version"], capture_output=True, text=True, timeout=10
            )
            .stdout.split()[2]
            .removeprefix("v=")
        )
    except (OSError, IndexError, subprocess.SubprocessError):
        redis_version = "?"
    return f"Celery {celery.__version__} + Redis {redis_version}"


def run(log_dir: Path, *, quick: bool) -> dict[str, Any]:
    """All three measurements; a dict of figures for the report."""
    port = free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    with start_redis(port, log_dir), start_worker(redis_url, log_dir):
        tasks = _app(redis_url)
        _wait_worker(tasks, 60)
        rate = accept_rate(redis_url, 4_000 if quick else 40_000, 1.0 if quick else 5.0)
        # Drain what the accept run queued before timing anything else.
        round_trips(tasks, 1, 120)
        latencies = round_trips(tasks, 100 if quick else 1_000, 30)
        achieved, completed = efficiency(tasks, 200 if quick else 3_000, 60)
    return {
        "name": version(),
        "accept_per_s": rate,
        "round_trip_p50_ms": statistics.median(latencies),
        "round_trip_p99_ms": percentile(latencies, 0.99),
        "round_trips": len(latencies),
        "efficiency_per_s": achieved,
        "efficiency_completed": completed,
    }


if __name__ == "__main__":  # python -m bench.celery_ref LOG_DIR [--full]: figures as JSON
    import json

    figures = run(Path(sys.argv[1]), quick="--full" not in sys.argv)
    print(json.dumps({**figures, "slots": SLOTS, "sleep_ms": SLEEP_MS}))

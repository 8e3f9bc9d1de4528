"""The Celery app the Celery + Redis reference rows run (``bench/celery_ref.py``): a no-op
task and a task that sleeps, each returning when its body started and ended. Default
Celery settings except the broker and result backend (a Redis the bench starts on
127.0.0.1, named by ``BENCH_REDIS_URL``)."""

from __future__ import annotations

import os
import time

from celery import Celery

app = Celery(
    "bench",
    broker=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
    backend=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
)


@app.task(name="bench.noop")
def noop() -> None:
    return None


@app.task(name="bench.sleep")
def sleep(ms: float) -> tuple[float, float]:
    started = time.time()
    time.sleep(ms / 1000)
    return started, time.time()

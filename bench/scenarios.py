"""sagequeue rows (issue 5): ingest, dispatch latency, efficiency, large payloads and
backlog scale. Each starts its own ``sagequeue serve`` processes on a fresh data dir."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import references
from bench.context import CONNECTION_LEVELS, Bench
from bench.loadgen import (
    InvocationSpec,
    LoadResult,
    Target,
    percentiles_ms,
    presign_get,
    run_load,
    sign_invocation,
)
from bench.report import Row, compare
from bench.servers import (
    BENCH_BUCKET,
    BIN,
    EndpointSpec,
    Sagequeue,
    children,
    cmdline,
    rss_kib,
    write_config,
)
from sagequeue.testing.requests import header, read_response

MIB = 1024 * 1024


def prepared_data_dir(
    work: Path, endpoints: list[EndpointSpec], database: str | None = None
) -> tuple[Path, Path]:
    """A data dir whose endpoints are InService (a ``--role all`` server brought them
    up, then stopped), and the config file declaring them. ``database``: a PostgreSQL
    URL (default: SQLite in the data dir)."""
    work.mkdir(parents=True, exist_ok=True)
    config = write_config(work, endpoints)
    data_dir = work / "data"
    with Sagequeue(data_dir, config, role="all", database=database).start() as server:
        server.wait_in_service([ep.name for ep in endpoints])
    return data_dir, config


def _target(server: Sagequeue) -> Target:
    access, secret = server.credentials
    return Target(server.port, access, secret)


# ------------------------------------------------------------------------------ ingest
def ingest(bench: Bench) -> None:
    """Signed InvokeEndpointAsync accepted per second by ``--role api`` (each committed
    before its 202), beside moto and the bare ASGI app measured in this run."""
    if "bare" not in bench.cache:
        references.bare(bench)
    if "moto" not in bench.cache:
        references.moto(bench)
    data_dir, config = prepared_data_dir(bench.work_dir / "ingest", [EndpointSpec("bench-ingest")])
    with Sagequeue(data_dir, config, role="api").start() as api:
        target = _target(api)
        for connections in CONNECTION_LEVELS:
            profiler = bench.profiler(api.pid, f"ingest-api-{connections}conn")
            result = _ingest_load(
                bench, target, connections, on_start=profiler.schedule if profiler else None
            )
            name = f"sagequeue --role api, {connections} conn"
            row = references.load_row("ingest", name, result)
            if profiler:
                row.details["profile"] = profiler.write_text(
                    profiler.out.with_suffix(".txt"), f"py-spy: {name}"
                )
            moto_rps = bench.cache["moto"][connections].requests_per_second
            _beside_bare(bench, row, connections)
            row.target = "≥ 0.5x bare app"
            row.met = row.ratio is not None and row.ratio >= 0.5 and result.errors == 0
            bench.add(row)
            ratio = compare(row.value, moto_rps)
            ratio = None if ratio is None else round(ratio, 2)
            bench.add(
                Row(
                    "ingest",
                    name,
                    "x moto",
                    ratio,
                    reference=f"moto_server, {connections} conn",
                    reference_value=moto_rps,
                    ratio=ratio,
                    target="≥ 20x moto",
                    met=ratio is not None and ratio >= 20,
                    details={"plot": False},
                )
            )


def _ingest_load(
    bench: Bench,
    target: Target,
    connections: int,
    on_start: Callable[[float, float], None] | None = None,
) -> LoadResult:
    """The ingest rows' load; the limits rows use the same, so the two compare."""
    return run_load(
        target,
        references.INGEST_SPEC,
        connections=connections,
        max_requests=bench.scale(200_000, 10_000),
        max_seconds=bench.scale(5.0, 1.0),
        on_start=on_start,
    )


def _beside_bare(bench: Bench, row: Row, connections: int) -> None:
    """Compare a row with the bare app at the same connection count, this run."""
    bare_rps = bench.cache["bare"][connections].requests_per_second
    row.reference, row.reference_value = f"bare ASGI app, {connections} conn", bare_rps
    row.ratio = compare(row.value, bare_rps)


# ------------------------------------------------------------------------------ limits
def ingest_limits(bench: Bench) -> None:
    """What bounds ingest, measured beside it: the front door with the durable commit
    taken out (enqueue discards), and the durable store with HTTP taken out
    (``SqliteStore.enqueue`` called by 1, 8 and 64 concurrent coroutines). The ingest
    target (0.5x the bare app) is within reach at a connection count only if both
    limits there are above it."""
    if "bare" not in bench.cache:
        references.bare(bench)
    bare = bench.cache["bare"]
    data_dir, config = prepared_data_dir(bench.work_dir / "limits", [EndpointSpec("bench-ingest")])
    front_door: list[Row] = []
    with Sagequeue(data_dir, config, role="api", module="bench.nostore").start() as api:
        target = _target(api)
        for connections in CONNECTION_LEVELS:
            row = references.load_row(
                "limits",
                f"front door, enqueue discarded, {connections} conn",
                _ingest_load(bench, target, connections),
            )
            _beside_bare(bench, row, connections)
            front_door.append(row)
    # The rows mean something only if nothing was committed.
    connection = sqlite3.connect(data_dir / "sagequeue.db")
    try:
        committed = connection.execute("SELECT count(*) FROM invocations").fetchone()[0]
    finally:
        connection.close()
    if committed:
        raise RuntimeError(f"bench.nostore committed {committed} invocations to SQLite")
    for row in front_door:
        bench.add(row)
    for callers in CONNECTION_LEVELS:
        database = bench.work_dir / f"limits-store-{callers}" / "sagequeue.db"
        database.parent.mkdir(parents=True, exist_ok=True)
        seconds, limit = bench.scale(3.0, 0.5), bench.scale(100_000, 5000)
        rate = asyncio.run(_store_enqueue_rate(database, callers, seconds, limit))
        needed = 0.5 * bare[callers].requests_per_second
        bench.add(
            Row(
                "limits",
                f"SqliteStore.enqueue alone, {callers} concurrent callers",
                "enqueues/s",
                round(rate, 1),
                reference=f"the ingest target at {callers} conn (0.5x bare)",
                reference_value=round(needed, 1),
                ratio=compare(rate, needed),
                details={"plot": False},
            )
        )


async def _store_enqueue_rate(database: Path, callers: int, seconds: float, limit: int) -> float:
    """Durable enqueues/s through the store's own API (group commit included)."""
    from sagequeue.domain.ids import new_id
    from sagequeue.ports import Invocation
    from sagequeue.stores.sqlite import SqliteStore

    store = SqliteStore(database)
    await store.open()
    done = 0
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal done
        while done < limit and time.perf_counter() < deadline:
            request_id = new_id()
            await store.enqueue(
                Invocation(
                    request_id=request_id,
                    inference_id=request_id,
                    endpoint_name="bench-ingest",
                    output_location=f"s3://{BENCH_BUCKET}/output/{request_id}.out",
                    failure_location=f"s3://{BENCH_BUCKET}/output/{request_id}-error.out",
                    input_location=references.INGEST_SPEC.input_location,
                    content_type="application/json",
                )
            )
            done += 1

    try:
        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        return done / (time.perf_counter() - started)
    finally:
        await store.close()


# ------------------------------------------------------------------------------ dispatch
async def _probe_latency(
    target: Target,
    endpoint: str,
    count: int,
    pause: float,
    deadline: float,
    accepted: dict[str, float] | None = None,
) -> tuple[list[float], list[float], int]:
    """Sequential invocations; for each, 202 -> model start (the model's own clock) and
    202 -> output readable (polled with presigned GETs every 0.5 ms). ``accepted`` gets
    each inference id's 202 time."""
    spec = InvocationSpec(endpoint, input_location=None, body=b'{"probe": 1}')
    ids = [f"probe-{n}-{os.getpid()}-{time.monotonic_ns()}" for n in range(count)]
    invokes = [(inference_id, sign_invocation(target, spec, inference_id)) for inference_id in ids]
    invoke_reader, invoke_writer = await asyncio.open_connection(target.host, target.port)
    poll_reader, poll_writer = await asyncio.open_connection(target.host, target.port)
    to_start: list[float] = []
    to_readable: list[float] = []
    failures = 0
    for inference_id, raw in invokes:
        if time.monotonic() > deadline:
            break
        invoke_writer.write(raw)
        status, head, _ = await read_response(invoke_reader)
        accepted_at = time.time()
        if status != 202:
            failures += 1
            continue
        if accepted is not None:
            accepted[inference_id] = accepted_at
        bucket, key = header(head, b"x-amzn-sagemaker-outputlocation")[5:].split("/", 1)
        get = presign_get(target, bucket, key)
        give_up = time.monotonic() + 10.0
        while time.monotonic() < give_up:
            poll_writer.write(get)
            status, _, body = await read_response(poll_reader)
            if status == 200:
                readable_at = time.time()
                started = json.loads(body)["start"]
                to_start.append((started - accepted_at) * 1000)
                to_readable.append((readable_at - accepted_at) * 1000)
                break
            if status != 404:
                raise RuntimeError(f"polling the output got HTTP {status}: {body[:200]!r}")
            await asyncio.sleep(0.0005)
        else:
            failures += 1
        await asyncio.sleep(pause)
    for writer in (invoke_writer, poll_writer):
        writer.close()
    return to_start, to_readable, failures


def dispatch(bench: Bench) -> None:
    """No-op model at light load: 202 -> model start, 202 -> output readable, and (same
    requests) 202 -> success notification received at a local webhook."""
    from bench.webhook import WebhookReceiver

    endpoint = "bench-noop"
    with WebhookReceiver() as receiver:
        data_dir, config = prepared_data_dir(
            bench.work_dir / "dispatch", [EndpointSpec(endpoint, success_topic=receiver.url)]
        )
        with Sagequeue(data_dir, config, role="all").start() as server:
            server.wait_in_service([endpoint])
            target = _target(server)
            asyncio.run(_probe_latency(target, endpoint, 5, 0.01, time.monotonic() + 20))  # warm
            count = bench.scale(300, 30)
            accepted: dict[str, float] = {}
            to_start, to_readable, failures = asyncio.run(
                _probe_latency(
                    target,
                    endpoint,
                    count,
                    0.02,
                    time.monotonic() + bench.scale(60, 15),
                    accepted,
                )
            )
            to_notified = _notification_latencies(receiver, accepted, timeout=10.0)
    for label, samples, p50_target, p99_target in (
        ("202 → model start", to_start, 2.0, 20.0),
        ("202 → output readable", to_readable, 10.0, 50.0),
        ("202 → notification received (webhook)", to_notified, 15.0, 60.0),
    ):
        pcts = percentiles_ms([s * 1e6 for s in samples])  # ms -> ns for the helper
        if pcts is None:
            bench.add(
                Row.not_run("dispatch", f"no invocation completed ({failures} failed)", name=label)
            )
            continue
        celery_reference, celery_p50, celery_p99 = _celery_round_trip(bench)
        details = {
            "p50_ms": pcts[0],
            "p90_ms": pcts[1],
            "p99_ms": pcts[2],
            "samples": len(samples),
            "failures": failures,
            "min_ms": min(samples),
            "max_ms": max(samples),
        }
        note = (
            "on the model's clock: negative = model started before the client read the 202"
            if "start" in label
            else (
                "the same requests' SuccessTopic notifications, at a webhook on 127.0.0.1 "
                f"({len(accepted) - len(samples)} of {len(accepted)} not received)"
                if "notification" in label
                else ""
            )
        )
        bench.add(
            Row(
                "dispatch",
                label,
                "p50 ms",
                round(pcts[0], 3),
                reference=celery_reference,
                reference_value=celery_p50,
                target=f"≤ {p50_target:g} ms",
                met=pcts[0] <= p50_target and failures == 0,
                note=note,
                details=details,
            )
        )
        bench.add(
            Row(
                "dispatch",
                label,
                "p99 ms",
                round(pcts[2], 3),
                reference=celery_reference,
                reference_value=celery_p99,
                target=f"≤ {p99_target:g} ms",
                met=pcts[2] <= p99_target and failures == 0,
            )
        )


def _notification_latencies(
    receiver: Any, accepted: dict[str, float], timeout: float
) -> list[float]:
    """ms from each 202 to its success notification's arrival (waiting up to ``timeout``
    seconds for the last ones)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(receiver.arrival(i) is None for i in accepted):
        time.sleep(0.05)
    return [
        (arrived - accepted_at) * 1000
        for inference_id, accepted_at in accepted.items()
        if (arrived := receiver.arrival(inference_id)) is not None
    ]


# ------------------------------------------------------------------------------ efficiency
def _celery_round_trip(bench: Bench) -> tuple[str, float, float]:
    """What a no-op task's result costs through Celery + Redis: measured in this run
    where they are installed, else the issue's figure."""
    measured = bench.cache.get("celery")
    if measured:
        return (
            "Celery+Redis no-op round trip, this run",
            round(measured["round_trip_p50_ms"], 3),
            round(measured["round_trip_p99_ms"], 3),
        )
    return "Celery+Redis no-op result (issue 5 figure)", 2.2, 3.4


def _wait_outputs(
    server: Sagequeue, prefix: str, expected: int, timeout: float, *, quiet_for: float = 0.0
) -> list[str]:
    """The output keys under ``prefix`` once there are ``expected`` of them. Listing
    thousands of keys costs both processes CPU on the 2 cores being measured, so the
    first listing waits ``quiet_for`` seconds (when the run should be nearly done)."""
    s3 = server.client("s3")
    deadline = time.monotonic() + timeout
    time.sleep(max(0.0, min(quiet_for, timeout)))
    keys: list[str] = []
    while time.monotonic() < deadline:
        keys = [
            obj["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=BENCH_BUCKET, Prefix=prefix
            )
            for obj in page.get("Contents", [])
        ]
        if len(keys) >= expected:
            return keys
        time.sleep(0.5)
    return keys


def _read_outputs(server: Sagequeue, keys: list[str]) -> list[dict[str, Any]]:
    s3 = server.client("s3")

    def read(key: str) -> dict[str, Any]:
        return json.loads(s3.get_object(Bucket=BENCH_BUCKET, Key=key)["Body"].read())

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(read, keys))


def efficiency(bench: Bench) -> None:
    """20 ms model, 2 instances x 4 concurrent invocations = 8: achieved / ideal 400/s.
    Measured twice: draining a queue filled first (the dispatcher alone), and with the
    requests arriving while it runs (the load generator competes for the 2 cores)."""
    slots, sleep_ms = 8, 20
    ideal = slots * 1000 / sleep_ms
    prefilled, live = "bench-sleep20-prefilled", "bench-sleep20-live"
    endpoints = [EndpointSpec(name, instances=2, max_concurrency=4) for name in (prefilled, live)]
    data_dir, config = prepared_data_dir(bench.work_dir / "efficiency", endpoints)
    count = bench.scale(3000, 200)

    def spec(endpoint: str) -> InvocationSpec:
        return InvocationSpec(
            endpoint, input_location=None, body=b"{}", custom_attributes=f"sleep_ms={sleep_ms}"
        )

    def load(server: Sagequeue, endpoint: str) -> int:
        result = run_load(
            _target(server), spec(endpoint), connections=8, max_requests=count, max_seconds=30
        )
        return result.statuses.get("202", 0)

    runs: list[tuple[str, int, list[dict[str, Any]]]] = []
    with Sagequeue(data_dir, config, role="api").start() as api:  # no worker: queue fills
        accepted_first = load(api, prefilled)
    with Sagequeue(data_dir, config, role="all").start() as server:
        profiler = bench.profiler(server.pid, "efficiency-dispatcher")
        if profiler:
            profiler.schedule(time.time() + 1, accepted_first / ideal)
        keys = _wait_outputs(
            server,
            f"output/{prefilled}/",
            accepted_first,
            accepted_first / ideal * 4 + 30,
            quiet_for=accepted_first / ideal * 0.9,
        )
        runs.append(("queue filled first", accepted_first, _read_outputs(server, keys)))
        if profiler:
            profiler.write_text(profiler.out.with_suffix(".txt"), "py-spy: efficiency drain")
        started = time.monotonic()
        accepted_live = load(server, live)
        keys = _wait_outputs(
            server,
            f"output/{live}/",
            accepted_live,
            accepted_live / ideal * 4 + 30,
            quiet_for=accepted_live / ideal * 0.9 - (time.monotonic() - started),
        )
        runs.append(("enqueued while running", accepted_live, _read_outputs(server, keys)))
    measured = bench.cache.get("celery")
    celery_efficiency = (
        f"Celery this run: {measured['efficiency_per_s'] / ideal:.2f}"
        if measured
        else "Celery: 0.83, issue 5"
    )
    for label, accepted, outputs in runs:
        name = f"{sleep_ms} ms model, {slots} slots, {label}"
        if not outputs:
            bench.add(Row.not_run("efficiency", f"no output ({accepted} accepted)", name=name))
            continue
        window = max(o["end"] for o in outputs) - min(o["start"] for o in outputs)
        achieved = len(outputs) / window
        model_ms = sum(o["end"] - o["start"] for o in outputs) / len(outputs) * 1000
        # Slot time not spent inside the handler: lease, input, pipes, output, finish.
        overhead_ms = window * slots / len(outputs) * 1000 - model_ms
        note = "" if len(outputs) == accepted else f"only {len(outputs)} of {accepted} completed"
        bench.add(
            Row(
                "efficiency",
                name,
                "tasks/s",
                round(achieved, 1),
                reference="ideal",
                reference_value=ideal,
                ratio=achieved / ideal,
                target=f"≥ 0.95x ideal ({celery_efficiency})",
                met=achieved / ideal >= 0.95 and not note,
                note=note,
                details={
                    "accepted": accepted,
                    "completed": len(outputs),
                    "window_s": round(window, 3),
                    "handler_ms_mean": round(model_ms, 2),
                    "overhead_ms_per_task": round(overhead_ms, 2),
                    "plot": False,
                },
            )
        )


# ------------------------------------------------------------------------------ large
class RssSampler:
    """Samples VmRSS of a server and its non-model children every 50 ms. Growth is the
    peak during a step minus the RSS the process had when the sampler was created
    (right after the server started), so steps cannot hide growth behind each other."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.at_start = self.current()

    def pids(self) -> list[int]:
        found = [self.pid]
        for child in children(self.pid):
            if "python_worker" not in cmdline(child):  # model instances may hold the input
                found.append(child)
        return found

    def current(self) -> dict[int, int]:
        return {pid: rss_kib(pid) or 0 for pid in self.pids()}

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self.pids():
                rss = rss_kib(pid)
                if rss is not None and rss > self.peak.get(pid, 0):
                    self.peak[pid] = rss
            self._stop.wait(0.05)

    @contextmanager
    def sampling(self) -> Iterator[dict[int, int]]:
        """Yields a dict filled, at exit, with KiB of growth per pid."""
        self.peak = self.current()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        growth: dict[int, int] = {}
        try:
            yield growth
        finally:
            self._stop.set()
            self._thread.join()
            for pid, peak in self.peak.items():
                growth[pid] = peak - self.at_start.get(pid, peak)


def _write_file(path: Path, size: int) -> float:
    """A file of incompressible data, fsynced; returns the write rate in MB/s."""
    block = os.urandom(MIB)
    started = time.perf_counter()
    with open(path, "wb") as handle:
        for n in range(size // MIB):
            handle.write(block[n % 251 :] + block[: n % 251])  # distinct blocks
        handle.flush()
        os.fsync(handle.fileno())
    return size / MIB / (time.perf_counter() - started)


def _file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(8 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def large(bench: Bench) -> None:
    """1 GiB up and down through the S3 API with the aws CLI (multipart), and a 1 GiB
    InputLocation read by the worker; RSS growth of the server and its dispatcher."""
    size = bench.scale(1024, 64) * MIB
    work = bench.work_dir / "large"
    endpoint = "bench-large"
    data_dir, config = prepared_data_dir(work, [EndpointSpec(endpoint, max_concurrency=1)])
    source = work / "large.bin"
    disk_mbps = _write_file(source, size)
    label = f"{size // MIB} MiB"
    bench.add(
        Row(
            "large",
            f"disk write {label} + fsync (python)",
            "MB/s",
            round(disk_mbps, 1),
            details={"plot": False},
        )
    )
    with Sagequeue(data_dir, config, role="all").start() as server:
        server.wait_in_service([endpoint])
        sampler = RssSampler(server.pid)
        env = server.aws_env()
        aws = [str(BIN / "aws"), "--endpoint-url", server.url, "s3", "cp", "--only-show-errors"]
        steps = (
            ("aws s3 cp upload", [*aws, str(source), f"s3://{BENCH_BUCKET}/large.bin"]),
            ("aws s3 cp download", [*aws, f"s3://{BENCH_BUCKET}/large.bin", str(work / "back")]),
        )
        for name, argv in steps:
            with sampler.sampling() as growth:
                started = time.perf_counter()
                subprocess.run(argv, env=env, check=True, capture_output=True, timeout=600)
                elapsed = time.perf_counter() - started
            _large_rows(bench, f"{name} {label}", size / MIB / elapsed, disk_mbps, growth)
        if _file_md5(source) != _file_md5(work / "back"):
            raise RuntimeError("downloaded object differs from the uploaded file")
        (work / "back").unlink()
        runtime = server.client("sagemaker-runtime")
        s3 = server.client("s3")
        with sampler.sampling() as growth:
            started = time.perf_counter()
            response = runtime.invoke_endpoint_async(
                EndpointName=endpoint,
                InputLocation=f"s3://{BENCH_BUCKET}/large.bin",
                ContentType="application/octet-stream",
                InvocationTimeoutSeconds=600,
            )
            bucket, key = response["OutputLocation"][5:].split("/", 1)
            output: dict[str, Any] | None = None
            deadline = time.monotonic() + 600
            while output is None and time.monotonic() < deadline:
                try:
                    output = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
                except s3.exceptions.NoSuchKey:
                    time.sleep(0.2)
            elapsed = time.perf_counter() - started
        if output is None or output.get("bytes") != size:
            raise RuntimeError(f"worker read of {label}: model saw {output}")
        _large_rows(
            bench, f"worker reads {label} InputLocation", size / MIB / elapsed, disk_mbps, growth
        )
    source.unlink()


def _large_rows(
    bench: Bench, name: str, mbps: float, disk_mbps: float, growth: dict[int, int]
) -> None:
    bench.add(
        Row(
            "large",
            name,
            "MB/s",
            round(mbps, 1),
            reference="disk write + fsync",
            reference_value=round(disk_mbps, 1),
            ratio=mbps / disk_mbps,
            details={"plot": False},
        )
    )
    worst = max(growth.values(), default=0) / 1024
    bench.add(
        Row(
            "large",
            name,
            "RSS growth MiB",
            round(worst, 1),
            target="≤ 64 MiB (server + dispatcher)",
            met=worst <= 64,
            details={"per_pid_kib": {str(k): v for k, v in growth.items()}, "plot": False},
        )
    )


# ------------------------------------------------------------------------------ backlog
_FILL = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)
INSERT INTO invocations (
    request_id, inference_id, endpoint_name, output_location, failure_location,
    input_location, content_type, request_ttl_seconds, invocation_timeout_seconds,
    status, enqueued_at, attempts, expires_at)
SELECT 'backlog-' || i, 'backlog-' || i, :endpoint,
       's3://bench/output/backlog/' || i || '.out', 's3://bench/output/backlog/' || i || '.out',
       's3://bench/input.json', 'application/json', 21600, 900, 'Queued', :now, 0,
       :now + 21600
FROM n
"""


def _fill_backlog(database: Path, endpoint: str, count: int) -> float:
    """Insert ``count`` Queued rows straight into the store's table; returns seconds."""
    import sqlite3

    started = time.perf_counter()
    conn = sqlite3.connect(database, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(_FILL, {"count": count, "endpoint": endpoint, "now": time.time()})
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return time.perf_counter() - started


async def _dequeue_rate(database: Path, endpoint: str, seconds: float, batch: int) -> float:
    """Leases of ``batch`` (FIFO) each finished Completed, through SqliteStore: rows/s."""
    from sagequeue.stores.sqlite import SqliteStore

    store = SqliteStore(database)
    await store.open()
    try:
        rate, _ = await lease_finish_rate(store, endpoint, batch, seconds)
        return rate
    finally:
        await store.close()


async def lease_finish_rate(
    store: Any, endpoint: str, batch: int, seconds: float, variant_name: str | None = None
) -> tuple[float, int]:
    """The dispatcher's pattern without a model, for ``seconds`` or until the queue is
    empty: a lease of ``batch`` (FIFO), then each finished Completed. Returns
    invocations/s and how many."""
    from sagequeue.ports import InvocationStatus

    done = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        now = time.time()
        leased = await store.lease(endpoint, "bench", batch, 60.0, now, variant_name=variant_name)
        if not leased:
            break
        await asyncio.gather(
            *(
                store.finish(inv.request_id, "bench", InvocationStatus.COMPLETED, None, now)
                for inv in leased
            )
        )
        done += len(leased)
    return done / (time.perf_counter() - started), done


def backlog(bench: Bench) -> None:
    """Enqueue (front door, 64 conn) and dequeue (store lease+finish) rates with an
    empty queue and with a large backlog queued; API memory across each."""
    endpoint = "bench-backlog"
    queued = bench.scale(1_000_000, 20_000)
    data_dir, config = prepared_data_dir(bench.work_dir / "backlog", [EndpointSpec(endpoint)])
    database = data_dir / "sagequeue.db"
    spec = InvocationSpec(endpoint, input_location="s3://bench/input.json")
    figures: dict[str, dict[str, float]] = {}
    for phase in ("empty", "backlog"):
        if phase == "backlog":
            fill_seconds = _fill_backlog(database, endpoint, queued)
            print(f"  backlog    filled {queued:,} queued rows in {fill_seconds:.1f} s", flush=True)
        with Sagequeue(data_dir, config, role="api").start() as api:
            rss_before = rss_kib(api.pid) or 0
            result = run_load(
                _target(api),
                spec,
                connections=64,
                max_requests=bench.scale(150_000, 5_000),
                max_seconds=bench.scale(5.0, 1.0),
            )
            rss_after = rss_kib(api.pid) or 0
        dequeue = asyncio.run(_dequeue_rate(database, endpoint, bench.scale(4.0, 1.0), 8))
        figures[phase] = {
            "enqueue": result.requests_per_second,
            "dequeue": dequeue,
            "rss_growth_mib": (rss_after - rss_before) / 1024,
            "errors": result.errors,
        }
    label = f"{queued:,} queued"
    for what in ("enqueue", "dequeue"):
        empty, full = figures["empty"][what], figures["backlog"][what]
        ratio = compare(full, empty)
        bench.add(
            Row(
                "backlog",
                f"{what} with {label}",
                "requests/s",
                round(full, 1),
                reference=f"{what}, empty queue",
                reference_value=round(empty, 1),
                ratio=ratio,
                target="within 20% (≥ 0.8x)",
                met=ratio is not None and ratio >= 0.8,
                details={"plot": False, **figures["backlog"]},
            )
        )
    empty_rss, full_rss = figures["empty"]["rss_growth_mib"], figures["backlog"]["rss_growth_mib"]
    bench.add(
        Row(
            "backlog",
            f"API RSS growth during enqueue, {label}",
            "MiB",
            round(full_rss, 1),
            reference="same, empty queue",
            reference_value=round(empty_rss, 1),
            target="flat (≤ empty + 16 MiB)",
            met=full_rss <= empty_rss + 16,
            details={"plot": False},
        )
    )

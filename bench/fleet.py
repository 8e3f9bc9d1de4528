"""PostgreSQL rows (issue 10) beside SQLite's, in the same run: ingest with one and two
``--role api`` processes, the lease rate with 1,000,000 queued, and what the retention
purge costs ingest and leasing on a store holding millions of finished rows.

The bench starts its own PostgreSQL (Debian's binaries, ``sagequeue.testing.postgres``)
with durable settings: fsync, full page writes and synchronous commit on, as a
production server runs. One server serves every scenario of the run (each in databases
of its own); it stops at the end of the run.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import references
from bench.context import Bench
from bench.loadgen import LoadResult, percentiles_ms, run_load
from bench.report import Row, compare
from bench.scenarios import _target, lease_finish_rate, prepared_data_dir
from bench.servers import REPO, EndpointSpec, Sagequeue, wait_until
from sagequeue.dispatch.sweeper import PURGE_BATCH, PURGE_DUTY

ENDPOINT = "bench-ingest"  # the endpoint of references.INGEST_SPEC
VARIANT = "AllTraffic"  # the variant bench.servers.write_config declares
LEASE_BATCH = 8  # invocations per lease call, each then finished Completed
RETENTION_SECONDS = 7 * 86400


def durable_postgres(bench: Bench) -> Any:
    """The run's PostgreSQL server, with production durability (started once)."""
    server = bench.cache.get("postgres")
    if server is None:
        from sagequeue.testing.postgres import PostgresServer

        server = PostgresServer(
            durable=True,
            # Room for the fills without a checkpoint storm in the middle of a measurement.
            settings={"max_wal_size": "'4GB'", "shared_buffers": "'256MB'"},
        )
        bench.cleanup.callback(server.close)
        server.start()
        bench.cache["postgres"] = server
    return server


def prepared_store(bench: Bench, store: str) -> tuple[Path, Path, str | None, str]:
    """A data dir with the ingest endpoint InService on SQLite or on PostgreSQL, shared
    by the scenarios of this module: (data dir, config, --database, store URL)."""
    key = f"fleet-{store}"
    if key not in bench.cache:
        database = None
        if store == "PostgreSQL":
            database = durable_postgres(bench).create_database("fleet")
        work = bench.work_dir / key.lower()
        data_dir, config = prepared_data_dir(work, [EndpointSpec(ENDPOINT)], database)
        url = database or f"sqlite:///{(data_dir / 'sagequeue.db').absolute()}"
        bench.cache[key] = (data_dir, config, database, url)
    return bench.cache[key]


def _ingest(bench: Bench, apis: list[Sagequeue]) -> LoadResult:
    return run_load(
        [_target(api) for api in apis],
        references.INGEST_SPEC,
        connections=64,
        max_requests=bench.scale(200_000, 5_000),
        max_seconds=bench.scale(5.0, 1.0),
        processes=2,
    )


@contextmanager
def api_processes(data_dir: Path, config: Path, count: int, database: str | None) -> Iterator:
    apis = [Sagequeue(data_dir, config, role="api", database=database) for _ in range(count)]
    try:
        for api in apis:
            api.start()
        yield apis
    finally:
        for api in apis:
            api.stop()


# ------------------------------------------------------------------------- ingest
def fleet_ingest(bench: Bench) -> None:
    """Signed InvokeEndpointAsync at 64 connections spread over one and over two
    ``--role api`` processes sharing one store: SQLite (one file) and PostgreSQL."""
    results: dict[tuple[str, int], LoadResult] = {}
    for store in ("SQLite", "PostgreSQL"):
        data_dir, config, database, _ = prepared_store(bench, store)
        for count in (1, 2):
            with api_processes(data_dir, config, count, database) as apis:
                results[(store, count)] = _ingest(bench, apis)
    for count in (1, 2):
        processes = f"{count} API process{'es' if count > 1 else ''}"
        sqlite_row = references.load_row(
            "fleet", f"ingest on SQLite, {processes}, 64 conn", results[("SQLite", count)]
        )
        bench.add(sqlite_row)
        row = references.load_row(
            "fleet", f"ingest on PostgreSQL, {processes}, 64 conn", results[("PostgreSQL", count)]
        )
        row.reference, row.reference_value = sqlite_row.name, sqlite_row.value
        row.ratio = compare(row.value, sqlite_row.value)
        if count == 1:
            row.target = "≥ 0.5x SQLite"
            row.met = row.ratio is not None and row.ratio >= 0.5 and not row.note
        bench.add(row)


# ------------------------------------------------------------------------- lease rate
_PG_FILL = """
    INSERT INTO invocations (request_id, inference_id, endpoint_name, output_location,
        failure_location, input_location, content_type, request_ttl_seconds,
        invocation_timeout_seconds, status, enqueued_at, finished_at, attempts, expires_at,
        variant_name)
    SELECT %(prefix)s || i, %(prefix)s || i, %(endpoint)s,
        's3://bench/output/fill/' || i || '.out', 's3://bench/output/fill/' || i || '.out',
        's3://bench/input.json', 'application/json', 21600, 900, %(status)s, %(now)s,
        %(finished_at)s, %(attempts)s, %(now)s + 21600, %(variant)s
    FROM generate_series(1, %(count)s) AS i
"""
_SQLITE_FILL = """
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)
    INSERT INTO invocations (request_id, inference_id, endpoint_name, output_location,
        failure_location, input_location, content_type, request_ttl_seconds,
        invocation_timeout_seconds, status, enqueued_at, finished_at, attempts, expires_at,
        variant_name)
    SELECT :prefix || i, :prefix || i, :endpoint,
        's3://bench/output/fill/' || i || '.out', 's3://bench/output/fill/' || i || '.out',
        's3://bench/input.json', 'application/json', 21600, 900, :status, :now,
        :finished_at, :attempts, :now + 21600, :variant
    FROM n
"""


def fill(url: str, count: int, *, finished: bool, prefix: str) -> float:
    """Insert ``count`` rows straight into the store's table (Queued, or Completed long
    enough ago to be purged), then settle the database; returns seconds."""
    now = time.time()
    params = {
        "prefix": prefix,
        "endpoint": ENDPOINT,
        "status": "Completed" if finished else "Queued",
        "now": now - RETENTION_SECONDS - 86400 if finished else now,
        "finished_at": now - RETENTION_SECONDS - 3600 if finished else None,
        "attempts": 1 if finished else 0,
        "variant": VARIANT,
        "count": count,
    }
    started = time.perf_counter()
    if url.startswith("sqlite://"):
        conn = sqlite3.connect(url.removeprefix("sqlite://"), isolation_level=None, timeout=60)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(_SQLITE_FILL, params)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
    else:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(_PG_FILL, params)
            # As a table that grew by ingest would be: vacuumed, analysed, checkpointed.
            conn.execute("VACUUM ANALYZE invocations")
            conn.execute("CHECKPOINT")
    return time.perf_counter() - started


async def lease_rate(url: str, seconds: float) -> tuple[float, int]:
    """Leases of LEASE_BATCH (FIFO, of the variant) each then finished Completed, through
    the store's API as a dispatcher calls it: invocations/s and how many."""
    from sagequeue.stores import open_store

    store = await open_store(url)
    try:
        return await lease_finish_rate(store, ENDPOINT, LEASE_BATCH, seconds, VARIANT)
    finally:
        await store.close()


def fleet_lease(bench: Bench) -> None:
    """Lease rate on PostgreSQL with 1,000,000 invocations queued against a short queue
    (each in a database of its own)."""
    backlog = bench.scale(1_000_000, 20_000)
    short = bench.scale(50_000, 2_000)
    seconds = bench.scale(4.0, 1.0)
    figures: dict[str, tuple[float, int, float]] = {}
    postgres = durable_postgres(bench)
    from sagequeue.stores.postgres import migrate

    for phase, queued in (("short", short), ("backlog", backlog)):
        url = postgres.create_database(f"lease_{phase}")
        asyncio.run(migrate(url))
        filled_in = fill(url, queued, finished=False, prefix=f"{phase}-")
        print(f"  fleet      filled {queued:,} queued rows in {filled_in:.1f} s", flush=True)
        rate, done = asyncio.run(lease_rate(url, seconds))
        figures[phase] = (rate, done, filled_in)
        postgres.drop_database(f"lease_{phase}")
    (short_rate, short_done, _), (rate, done, filled_in) = figures["short"], figures["backlog"]
    ratio = compare(rate, short_rate)
    bench.add(
        Row(
            "fleet",
            f"lease+finish on PostgreSQL with {backlog:,} queued",
            "invocations/s",
            round(rate, 1),
            reference=f"same, {short:,} queued",
            reference_value=round(short_rate, 1),
            ratio=ratio,
            target="within 20% (≥ 0.8x)",
            met=ratio is not None and ratio >= 0.8,
            details={
                "batch": LEASE_BATCH,
                "leased": done,
                "leased_short": short_done,
                "fill_seconds": round(filled_in, 1),
                "plot": False,
            },
        )
    )


# ------------------------------------------------------------------------- retention
@contextmanager
def purging(url: str, log: Path) -> Iterator[dict[str, int]]:
    """The retention purge running in a process of its own; yields a dict that holds
    ``purged`` (rows deleted) once it stopped."""
    outcome: dict[str, int] = {}
    with open(log, "w") as output:
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.purger",
                url,
                "--older-than",
                str(RETENTION_SECONDS),
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        try:
            wait_until(lambda: "purging" in log.read_text(), 30, "bench.purger", child)
            yield outcome
        finally:
            child.terminate()
            child.wait(60)
    for line in log.read_text().splitlines():
        if line.startswith("purged "):
            outcome["purged"] = int(line.split()[1])


def retention(bench: Bench) -> None:
    """Ingest (64 conn, one API process) and lease+finish rates on a store holding
    millions of finished invocations, with the retention purge deleting them in batches
    beside, and without: SQLite and PostgreSQL."""
    finished = bench.scale(2_000_000, 20_000)
    queued = bench.scale(300_000, 20_000)  # more than one lease measurement takes
    seconds = bench.scale(4.0, 1.0)
    for store in ("SQLite", "PostgreSQL"):
        data_dir, config, database, url = prepared_store(bench, store)
        work = data_dir.parent
        filled_in = fill(url, finished, finished=True, prefix="done-")
        print(f"  fleet      {store}: {finished:,} finished rows in {filled_in:.1f} s")
        figures: dict[str, dict[str, float]] = {}
        for n, phase in enumerate(("without purge", "purge running")):
            fill(url, queued, finished=False, prefix=f"queued-{n}-")
            log = work / f"purger-{phase.replace(' ', '-')}.log"
            phase_started = time.monotonic()
            with purging(url, log) if phase == "purge running" else _nothing() as outcome:
                with api_processes(data_dir, config, 1, database) as apis:
                    ingest = _ingest(bench, apis)
                rate, _ = asyncio.run(lease_rate(url, seconds))
            figures[phase] = {
                "ingest": ingest.requests_per_second,
                "ingest_errors": ingest.errors,
                "lease": rate,
                "purged": outcome.get("purged", 0),
                "purge_seconds": round(time.monotonic() - phase_started, 1),
            }
        _retention_rows(bench, store, finished, figures)


@contextmanager
def _nothing() -> Iterator[dict[str, int]]:
    yield {}


def _retention_rows(
    bench: Bench, store: str, finished: int, figures: dict[str, dict[str, float]]
) -> None:
    idle, busy = figures["without purge"], figures["purge running"]
    for what, metric in (("ingest", "requests/s"), ("lease", "invocations/s")):
        label = "ingest 64 conn" if what == "ingest" else "lease+finish"
        ratio = compare(busy[what], idle[what])
        bench.add(
            Row(
                "fleet",
                f"{label} on {store}, {finished:,} finished, retention purge running",
                metric,
                round(busy[what], 1),
                reference="same, no purge",
                reference_value=round(idle[what], 1),
                ratio=ratio,
                target="within 20% (≥ 0.8x)",
                met=ratio is not None and ratio >= 0.8 and not busy.get("ingest_errors"),
                details={
                    "purged_rows": busy["purged"],
                    "purge_seconds": busy["purge_seconds"],
                    "purge_batch": PURGE_BATCH,
                    "purge_duty": PURGE_DUTY,
                    "plot": False,
                },
            )
        )


# ------------------------------------------------------------------------- dispatch
DISPATCH_ENDPOINT = "bench-noop"


def fleet_dispatch(bench: Bench) -> None:
    """202 -> model start and 202 -> output readable when the API process that accepts
    the request is not the worker process that runs it: the wake-up crosses processes
    (the data dir's doorbell on SQLite, LISTEN/NOTIFY on PostgreSQL)."""
    from bench.scenarios import _probe_latency

    for store in ("SQLite", "PostgreSQL"):
        database = None
        if store == "PostgreSQL":
            database = durable_postgres(bench).create_database("dispatch")
        work = bench.work_dir / f"fleet-dispatch-{store.lower()}"
        data_dir, config = prepared_data_dir(work, [EndpointSpec(DISPATCH_ENDPOINT)], database)
        worker = Sagequeue(data_dir, config, role="worker", database=database)
        api = Sagequeue(data_dir, config, role="api", database=database)
        try:
            worker.start()
            api.start()
            api.wait_in_service([DISPATCH_ENDPOINT])
            target = _target(api)
            deadline = time.monotonic() + 20
            asyncio.run(_probe_latency(target, DISPATCH_ENDPOINT, 5, 0.01, deadline))  # warm
            to_start, to_readable, failures = asyncio.run(
                _probe_latency(
                    target,
                    DISPATCH_ENDPOINT,
                    bench.scale(300, 30),
                    0.02,
                    time.monotonic() + bench.scale(60, 15),
                )
            )
        finally:
            api.stop()
            worker.stop()
        for label, samples, p50_target in (
            ("202 → model start", to_start, 5.0),
            ("202 → output readable", to_readable, None),
        ):
            name = f"{label} across processes on {store}"
            pcts = percentiles_ms([s * 1e6 for s in samples])  # ms -> ns for the helper
            if pcts is None:
                bench.add(
                    Row.not_run("fleet", f"no invocation completed ({failures} failed)", name=name)
                )
                continue
            details = {
                "p50_ms": pcts[0],
                "p99_ms": pcts[2],
                "samples": len(samples),
                "failures": failures,
            }
            bench.add(
                Row(
                    "fleet",
                    name,
                    "p50 ms",
                    round(pcts[0], 3),
                    target=f"≤ {p50_target:g} ms" if p50_target else None,
                    met=(pcts[0] <= p50_target and failures == 0) if p50_target else None,
                    details=details,
                )
            )
            bench.add(Row("fleet", name, "p99 ms", round(pcts[2], 3), details=details))

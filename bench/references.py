"""Reference rows: what sagequeue is compared with (they need nothing from sagequeue
except the SigV4 verifier): the load generator's ceiling, the bare ASGI 202 app, moto's
server, SQLite WAL commit rates, SigV4 verification, and Celery + Redis when installed."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from bench.context import CONNECTION_LEVELS, Bench
from bench.loadgen import InvocationSpec, LoadResult, Target, run_load, sign_invocation
from bench.report import Row, compare
from bench.servers import BIN, free_port, start_moto, start_python_app

INGEST_SPEC = InvocationSpec("bench-ingest", input_location="s3://bench/input.json")


def load_row(scenario: str, name: str, result: LoadResult, **extra: object) -> Row:
    details = result.to_dict()
    details.update(extra)
    note = f"{result.errors} errors: statuses {result.statuses}" if result.errors else ""
    return Row(scenario, name, "requests/s", result.requests_per_second, note=note, details=details)


def ceiling(bench: Bench) -> None:
    """The load generator against a raw uvloop server: the most any row can show."""
    port = free_port()
    with start_python_app("bench.rawserver", port, bench.log_dir):
        result = run_load(
            Target(port),
            INGEST_SPEC,
            connections=64,
            max_requests=bench.scale(400_000, 40_000),
            max_seconds=bench.scale(5.0, 1.0),
        )
    bench.cache["ceiling"] = result
    bench.add(load_row("ceiling", "load generator vs raw uvloop 202 server, 64 conn", result))


def bare(bench: Bench) -> None:
    """A bare ASGI app on uvicorn (uvloop + httptools, 1 worker) answering 202."""
    port = free_port()
    with start_python_app("bench.bareapp", port, bench.log_dir):
        bench.cache["bare"] = _at_each_level(
            bench, "bare", "bare ASGI 202 app", port, bench.scale(300_000, 20_000)
        )


def _at_each_level(
    bench: Bench, scenario: str, label: str, port: int, max_requests: int
) -> dict[int, LoadResult]:
    """Load a reference server at each connection level, a row per level."""
    results: dict[int, LoadResult] = {}
    for connections in CONNECTION_LEVELS:
        results[connections] = run_load(
            Target(port),
            INGEST_SPEC,
            connections=connections,
            max_requests=max_requests,
            max_seconds=bench.scale(5.0, 1.0),
        )
        bench.add(load_row(scenario, f"{label}, {connections} conn", results[connections]))
    return results


def asgi_servers(bench: Bench) -> None:
    """The bare app on each installed ASGI server, 64 connections: what chose uvicorn
    for the front door (a server must also stream bodies both ways and run lifespan)."""
    import importlib.util

    from bench.bareapp import SERVERS

    for server in SERVERS:
        if importlib.util.find_spec(server) is None:
            bench.add(
                Row.not_run("asgi", f"{server} not installed", name=f"bare ASGI app on {server}")
            )
            continue
        port = free_port()
        with start_python_app("bench.bareapp", port, bench.log_dir, "--server", server):
            result = run_load(
                Target(port),
                INGEST_SPEC,
                connections=64,
                max_requests=bench.scale(300_000, 20_000),
                max_seconds=bench.scale(5.0, 1.0),
            )
        bench.add(load_row("asgi", f"bare ASGI app on {server}, 64 conn", result))


def moto(bench: Bench) -> None:
    """moto's server answering InvokeEndpointAsync with canned results."""
    port = free_port()
    with start_moto(port, bench.log_dir):
        bench.cache["moto"] = _at_each_level(
            bench, "moto", "moto_server", port, bench.scale(6_000, 600)
        )


# -------------------------------------------------------------------------- SQLite WAL
_SCHEMA = """
CREATE TABLE queue (
    seq INTEGER PRIMARY KEY, request_id TEXT NOT NULL UNIQUE, endpoint_name TEXT NOT NULL,
    input_location TEXT, status TEXT NOT NULL, enqueued_at REAL NOT NULL
)
"""


def _commit_rate(path: str, rows_per_commit: int, seconds: float, max_commits: int) -> float:
    """Rows per second committed with synchronous=FULL in WAL mode."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(_SCHEMA)
    insert = "INSERT INTO queue VALUES (NULL, ?, 'ep', 's3://bench/input.json', 'Queued', ?)"
    rows = 0
    commits = 0
    started = time.perf_counter()
    deadline = started + seconds
    while commits < max_commits and time.perf_counter() < deadline:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(insert, [(f"r{rows + i}", time.time()) for i in range(rows_per_commit)])
        conn.execute("COMMIT")
        rows += rows_per_commit
        commits += 1
    elapsed = time.perf_counter() - started
    conn.close()
    return rows / elapsed


def sqlite_wal(bench: Bench) -> None:
    """SQLite WAL commit rates on the bench's disk: the physical limit of durable enqueue."""
    seconds = bench.scale(3.0, 0.5)
    for rows_per_commit, reference in ((1, 5_600), (100, 72_000)):
        work = bench.work_dir / f"sqlite-{rows_per_commit}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        rate = _commit_rate(str(work / "q.db"), rows_per_commit, seconds, 1_000_000)
        shutil.rmtree(work, ignore_errors=True)
        bench.cache[f"sqlite_{rows_per_commit}"] = rate
        unit = "commits/s" if rows_per_commit == 1 else "rows/s"
        value = rate
        bench.add(
            Row(
                "sqlite",
                f"WAL synchronous=FULL, {rows_per_commit} row(s)/commit",
                unit,
                round(value, 1),
                reference="issue 5 machine-class figure",
                reference_value=reference,
                ratio=value / reference,
            )
        )
    sqlite_sagequeue_schema(bench)


def _sagequeue_schema_rate(path: Path, rows_per_commit: int, seconds: float) -> float:
    """Rows/s committed (synchronous=FULL) into sagequeue's own invocations table, with
    its indices and triggers: the ceiling of durable enqueue with group commit."""
    import uuid

    from sagequeue.stores import sqlite as store  # its schema and INSERT are internal

    conn = store._connect(path, synchronous="FULL", cache_kib=65536)
    store._migrate(conn)

    from sagequeue.ports import Invocation

    def row() -> tuple[object, ...]:
        request_id = str(uuid.uuid4())
        invocation = Invocation(
            request_id,
            request_id,
            "ep",
            "s3://b/o.out",
            "s3://b/f.out",
            input_location="s3://b/in",
            content_type="application/json",
            request_ttl_seconds=21600,
            invocation_timeout_seconds=900,
            enqueued_at=time.time(),
            variant_name="AllTraffic",
        )
        return store._invocation_row(invocation)

    rows = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        batch = [row() for _ in range(rows_per_commit)]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(store._INSERT_INVOCATION, batch)
        conn.execute("COMMIT")
        rows += rows_per_commit
    elapsed = time.perf_counter() - started
    conn.close()
    return rows / elapsed


def sqlite_sagequeue_schema(bench: Bench) -> None:
    for rows_per_commit in (1, 64):
        work = bench.work_dir / f"sqlite-sq-{rows_per_commit}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            rate = _sagequeue_schema_rate(work / "q.db", rows_per_commit, bench.scale(3.0, 0.5))
        except (ImportError, AttributeError, sqlite3.Error) as exc:
            bench.add(
                Row.not_run(
                    "sqlite",
                    f"sagequeue schema unavailable: {exc}",
                    name="sagequeue invocations schema",
                )
            )
            return
        finally:
            shutil.rmtree(work, ignore_errors=True)
        reference = bench.cache.get(f"sqlite_{100 if rows_per_commit > 1 else 1}")
        bench.add(
            Row(
                "sqlite",
                f"sagequeue invocations schema, {rows_per_commit} row(s)/commit",
                "rows/s",
                round(rate, 1),
                reference="minimal queue table, this run",
                reference_value=None if reference is None else round(reference, 1),
                ratio=compare(rate, reference),
            )
        )


# -------------------------------------------------------------------------- SigV4
def _time_per_call(fn: Callable[[], object], seconds: float, max_calls: int) -> float:
    """Mean µs per call, over at most ``max_calls`` calls and ``seconds``."""
    fn()  # warm caches (signing key) as a long-running server would have them
    calls = 0
    started = time.perf_counter()
    deadline = started + seconds
    while calls < max_calls:
        for _ in range(100):
            fn()
        calls += 100
        if time.perf_counter() > deadline:
            break
    return (time.perf_counter() - started) / calls * 1e6


def sigv4(bench: Bench) -> None:
    """Verifying one signed InvokeEndpointAsync: botocore's canonicalisation path vs
    sagequeue's verifier (parse + verify + body hash, as the front door does)."""
    from sagequeue.frontdoor.sigv4 import SigV4Verifier, parse_authorization

    target = Target(8765, "AKBENCH", "bench-secret-key")
    spec = InvocationSpec("bench-sigv4", input_location=None, body=b'{"instances": [1, 2, 3]}')
    raw = sign_invocation(target, spec, "bench-sigv4-1")
    head, body = raw.split(b"\r\n\r\n", 1)
    request_line, *header_lines = head.decode().split("\r\n")
    method, path, _ = request_line.split(" ")
    headers = dict(line.split(": ", 1) for line in header_lines)
    lower = {name.lower(): value for name, value in headers.items()}
    provided = lower["authorization"].rsplit("Signature=", 1)[1]
    signed = {k: v for k, v in headers.items() if k not in ("Authorization", "Content-Length")}
    credentials = Credentials(target.access_key, target.secret_key)

    def botocore_verify() -> bool:
        request = AWSRequest(
            method=method, url=f"http://{target.authority}{path}", headers=signed, data=body
        )
        request.context["timestamp"] = signed["X-Amz-Date"]
        auth = SigV4Auth(credentials, "sagemaker", target.region)
        canonical = auth.canonical_request(request)
        return auth.signature(auth.string_to_sign(request, canonical), request) == provided

    verifier = SigV4Verifier({target.access_key: target.secret_key})

    def sagequeue_verify() -> object:
        parts = parse_authorization(lower, {})
        return verifier.verify(parts, method, path, "", lower, hashlib.sha256(body).hexdigest())

    if not botocore_verify():
        raise RuntimeError("botocore path did not reproduce the signature")
    sagequeue_verify()  # raises if the verifier rejects a good signature
    parts = parse_authorization(lower, {})
    payload_hash = hashlib.sha256(body).hexdigest()

    def verify_only() -> object:
        return verifier.verify(parts, method, path, "", lower, payload_hash)

    seconds = bench.scale(2.0, 0.3)
    botocore_us = _time_per_call(botocore_verify, seconds, 200_000)
    lean_us = _time_per_call(sagequeue_verify, seconds, 1_000_000)
    verify_us = _time_per_call(verify_only, seconds, 1_000_000)
    bench.add(
        Row(
            "sigv4",
            "botocore canonicalisation path",
            "µs/verify",
            round(botocore_us, 2),
            reference="issue 5 figure",
            reference_value=40.0,
        )
    )
    bench.add(
        Row(
            "sigv4",
            "sagequeue SigV4Verifier (parse+verify+sha256)",
            "µs/verify",
            round(lean_us, 2),
            reference="botocore path, this run",
            reference_value=round(botocore_us, 2),
            ratio=lean_us / botocore_us,
            target="≤ 1/3 of the botocore path",
            met=lean_us < botocore_us / 3,
        )
    )
    bench.add(
        Row(
            "sigv4",
            "sagequeue SigV4Verifier.verify alone (parsed, hashed)",
            "µs/verify",
            round(verify_us, 2),
            reference="issue 5 lean-verifier figure",
            reference_value=6.5,
            ratio=verify_us / 6.5,
            target="≈ 6.5 µs (within 1.5x)",
            met=verify_us <= 6.5 * 1.5,
        )
    )


def celery(bench: Bench) -> None:
    """Celery + Redis reference rows (bench/celery_ref.py), where both are installed."""
    missing = ["redis-server"] if shutil.which("redis-server") is None else []
    if not (BIN / "celery").exists() and shutil.which("celery") is None:
        missing.append("celery")
    if not missing:
        try:
            import celery as _celery  # noqa: F401 - the worker needs the module too
        except ImportError:
            missing = ["celery (the Python package)"]
    if missing:
        bench.add(
            Row.not_run(
                "celery",
                f"{' and '.join(missing)} not installed; issue 5 figures: 2,450 tasks/s, "
                "no-op result 2.2 ms p50 / 3.4 ms p99, 83% efficiency at 20 ms x 8",
                name="Celery 5.7 + Redis",
            )
        )
        return
    from bench import celery_ref

    try:
        measured = celery_ref.run(bench.log_dir, quick=bench.quick)
    except Exception as exc:
        bench.add(Row.not_run("celery", f"Celery + Redis failed: {exc!r}", name="Celery + Redis"))
        return
    bench.cache["celery"] = measured
    name = measured["name"]
    bench.add(
        Row(
            "celery",
            f"{name}: tasks accepted, 2 client processes",
            "tasks/s",
            round(measured["accept_per_s"], 1),
            reference="issue 5 figure",
            reference_value=2450,
            ratio=compare(measured["accept_per_s"], 2450),
        )
    )
    for metric, key, issue_figure in (
        ("p50 ms", "round_trip_p50_ms", 2.2),
        ("p99 ms", "round_trip_p99_ms", 3.4),
    ):
        bench.add(
            Row(
                "celery",
                f"{name}: no-op task round trip",
                metric,
                round(measured[key], 3),
                reference="issue 5 figure",
                reference_value=issue_figure,
                details={"samples": measured["round_trips"]},
            )
        )
    ideal = celery_ref.SLOTS * 1000 / celery_ref.SLEEP_MS
    bench.add(
        Row(
            "celery",
            f"{name}: {celery_ref.SLEEP_MS} ms task, {celery_ref.SLOTS} worker processes",
            "tasks/s",
            round(measured["efficiency_per_s"], 1),
            reference="ideal",
            reference_value=ideal,
            ratio=measured["efficiency_per_s"] / ideal,
            details={"completed": measured["efficiency_completed"], "plot": False},
        )
    )

"""``python -m bench``: run every scenario (or ``--only a,b``) and write
bench/results/<date>.json, .md and PNG plots. ``--quick`` is a short smoke run."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from bench import fleet, references, scaling, scenarios
from bench.context import Bench
from bench.report import Results, Row

# In run order: the references first, so each sagequeue row is compared with them.
SCENARIOS: dict[str, Callable[[Bench], None]] = {
    "ceiling": references.ceiling,
    "sigv4": references.sigv4,
    "sqlite": references.sqlite_wal,
    "bare": references.bare,
    "asgi": references.asgi_servers,
    "moto": references.moto,
    "celery": references.celery,
    "ingest": scenarios.ingest,
    "limits": scenarios.ingest_limits,
    "dispatch": scenarios.dispatch,
    "efficiency": scenarios.efficiency,
    "large": scenarios.large,
    "backlog": scenarios.backlog,
    # PostgreSQL beside SQLite (issue 10); the bench starts its own durable PostgreSQL.
    "fleet-ingest": fleet.fleet_ingest,
    "fleet-lease": fleet.fleet_lease,
    "fleet-dispatch": fleet.fleet_dispatch,
    "retention": fleet.retention,
    "metrics": scaling.metrics_cost,
    "coldstart": scaling.cold_start,
}
RESULTS_DIR = Path(__file__).resolve().parent / "results"
BUDGET_SECONDS = 14 * 60  # the whole run must stay under 15 minutes


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", help=f"comma-separated scenarios: {', '.join(SCENARIOS)}")
    parser.add_argument("--quick", action="store_true", help="short smoke run (seconds)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results directory")
    parser.add_argument("--name", help="file name stem (default: the date)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy profiles of the sagequeue servers (to <out>/profiles/)",
    )
    parser.add_argument("--keep-work", action="store_true", help="keep data dirs and logs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    chosen = list(SCENARIOS) if not args.only else [s.strip() for s in args.only.split(",")]
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        print(
            f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}",
            file=sys.stderr,
        )
        return 2
    work_dir = Path(tempfile.mkdtemp(prefix="sagequeue-bench-"))
    bench = Bench(work_dir=work_dir, quick=args.quick)
    if args.profile:
        bench.profile_dir = args.out / "profiles"
    started = time.monotonic()
    now = datetime.now()
    results = Results(date=now.strftime("%Y-%m-%d %H:%M"), quick=args.quick)
    try:
        for name in chosen:
            if time.monotonic() - started > BUDGET_SECONDS:
                bench.add(Row.not_run(name, "the run's 14-minute budget was spent"))
                continue
            print(f"[{time.monotonic() - started:6.1f}s] {name}", flush=True)
            before = len(bench.rows)
            try:
                SCENARIOS[name](bench)
            except Exception as exc:
                traceback.print_exc()
                reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                bench.add(Row.not_run(name, reason))
            if len(bench.rows) == before:
                bench.add(Row.not_run(name, "scenario produced no figure"))
    finally:
        bench.cleanup.close()
        results.rows = bench.rows
        results.seconds = time.monotonic() - started
        stem = args.name or now.strftime("%Y-%m-%d") + ("-quick" if args.quick else "")
        paths = results.write(args.out, stem)
        if args.keep_work:
            print(f"work dir kept: {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

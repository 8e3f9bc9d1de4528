"""Smoke run of the PostgreSQL rows beside SQLite's (issue 10) in quick mode: the bench
starts its own PostgreSQL, drives one and two API processes, fills queues and finished
rows, and runs the retention purge beside ingest and leasing. Checks what the rows say
they measured (no timing assertions: figures depend on the machine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fleet_rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("bench-fleet")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--only",
            "fleet-ingest,fleet-lease,fleet-dispatch,retention",
            "--out",
            str(out),
            "--name",
            "fleet",
        ],
        cwd=REPO,
        check=True,
        timeout=230,
        capture_output=True,
    )
    rows = json.loads((out / "fleet.json").read_text())["rows"]
    # By name, and by "name [metric]" where one name has several figures (p50, p99).
    return {row["name"]: row for row in rows} | {f"{r['name']} [{r['metric']}]": r for r in rows}


@pytest.mark.timeout(240)
def test_ingest_rows_put_postgresql_beside_sqlite_with_one_and_two_api_processes(
    fleet_rows: dict[str, dict],
) -> None:
    for processes in ("1 API process", "2 API processes"):
        sqlite = fleet_rows[f"ingest on SQLite, {processes}, 64 conn"]
        postgres = fleet_rows[f"ingest on PostgreSQL, {processes}, 64 conn"]
        for row in (sqlite, postgres):
            assert row["value"] > 0 and row["details"]["errors"] == 0, row
            assert set(row["details"]["statuses"]) == {"202"}
        assert postgres["reference_value"] == sqlite["value"]
    assert fleet_rows["ingest on PostgreSQL, 1 API process, 64 conn"]["target"] == "≥ 0.5x SQLite"


def test_lease_row_compares_a_large_backlog_with_a_short_queue(
    fleet_rows: dict[str, dict],
) -> None:
    row = fleet_rows["lease+finish on PostgreSQL with 20,000 queued"]
    assert row["value"] > 0 and row["reference_value"] > 0
    assert row["details"]["leased"] > 0


def test_retention_rows_measure_both_stores_with_the_purge_deleting_rows(
    fleet_rows: dict[str, dict],
) -> None:
    for store in ("SQLite", "PostgreSQL"):
        for label in ("ingest 64 conn", "lease+finish"):
            row = fleet_rows[f"{label} on {store}, 20,000 finished, retention purge running"]
            assert row["value"] > 0 and row["reference_value"] > 0, row
            assert row["details"]["purged_rows"] > 0, row


def test_dispatch_rows_cross_processes_on_both_stores(fleet_rows: dict[str, dict]) -> None:
    for store in ("SQLite", "PostgreSQL"):
        row = fleet_rows[f"202 → model start across processes on {store} [p50 ms]"]
        assert row["value"] is not None, row
        assert row["details"]["failures"] == 0 and row["details"]["samples"] > 0, row
        assert row["target"] == "≤ 5 ms"

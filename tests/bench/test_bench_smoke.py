"""Smoke run of the benchmark harness: the SigV4 microbench, the load generator
against the bare ASGI app, and the ingest limits (front door without durable enqueue,
store without HTTP), in quick mode. Checks the shape of what it writes (no timing
assertions: figures depend on the machine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROW_KEYS = {
    "scenario",
    "name",
    "metric",
    "value",
    "reference",
    "reference_value",
    "target",
    "ratio",
    "met",
    "note",
    "details",
}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench-results")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--only",
            "sigv4,bare,limits",
            "--out",
            str(out),
            "--name",
            "smoke",
        ],
        cwd=REPO,
        check=True,
        timeout=170,
        capture_output=True,
    )
    return json.loads((out / "smoke.json").read_text()), out


@pytest.mark.timeout(180)
def test_quick_run_writes_json_with_one_row_per_figure(quick_run: tuple[dict, Path]) -> None:
    results, _ = quick_run
    assert results["quick"] is True
    assert results["rows"], "no rows"
    for row in results["rows"]:
        assert set(row) == ROW_KEYS


def test_bare_app_rows_measure_every_connection_level(quick_run: tuple[dict, Path]) -> None:
    results, _ = quick_run
    bare = [row for row in results["rows"] if row["scenario"] == "bare"]
    assert [row["details"]["connections"] for row in bare] == [1, 8, 64]
    for row in bare:
        assert row["metric"] == "requests/s"
        assert row["value"] > 0
        assert row["details"]["errors"] == 0
        assert row["details"]["p50_ms"] <= row["details"]["p99_ms"]


def test_sigv4_rows_compare_the_verifier_with_botocore(quick_run: tuple[dict, Path]) -> None:
    results, _ = quick_run
    sigv4 = {row["name"]: row for row in results["rows"] if row["scenario"] == "sigv4"}
    lean = sigv4["sagequeue SigV4Verifier (parse+verify+sha256)"]
    botocore_row = sigv4["botocore canonicalisation path"]
    assert lean["reference_value"] == botocore_row["value"]
    assert lean["ratio"] == pytest.approx(lean["value"] / botocore_row["value"], rel=0.01)


def test_limits_measure_the_front_door_without_durable_enqueue_beside_the_bare_app(
    quick_run: tuple[dict, Path],
) -> None:
    results, _ = quick_run
    bare = {
        row["details"]["connections"]: row["value"]
        for row in results["rows"]
        if row["scenario"] == "bare"
    }
    front_door = [
        row
        for row in results["rows"]
        if row["scenario"] == "limits" and row["name"].startswith("front door")
    ]
    assert [row["details"]["connections"] for row in front_door] == [1, 8, 64]
    for row in front_door:
        assert row["details"]["errors"] == 0
        assert set(row["details"]["statuses"]) == {"202"}
        assert row["reference_value"] == bare[row["details"]["connections"]]


def test_limits_measure_the_store_alone_against_the_ingest_target(
    quick_run: tuple[dict, Path],
) -> None:
    results, _ = quick_run
    bare = [row["value"] for row in results["rows"] if row["scenario"] == "bare"]
    store = [
        row
        for row in results["rows"]
        if row["scenario"] == "limits" and row["name"].startswith("SqliteStore.enqueue")
    ]
    assert len(store) == 3
    for row, bare_rps in zip(store, bare, strict=True):
        assert row["value"] > 0
        assert row["reference_value"] == pytest.approx(0.5 * bare_rps, abs=0.1)


def test_quick_run_writes_markdown_table_and_plots(quick_run: tuple[dict, Path]) -> None:
    _, out = quick_run
    table = (out / "smoke.md").read_text()
    assert "| Scenario | Figure |" in table
    assert "bare ASGI 202 app, 64 conn" in table
    for plot in ("smoke-throughput.png", "smoke-latency.png"):
        assert (out / plot).read_bytes().startswith(b"\x89PNG")


def test_unknown_scenario_is_refused() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "nope"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 2
    assert "unknown scenario" in completed.stderr

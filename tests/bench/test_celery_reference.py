"""The Celery + Redis reference (bench/celery_ref.py) in quick mode, where redis-server
and celery are installed: each figure is measured, not quoted."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytest.importorskip("celery")
pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed"
)


@pytest.mark.timeout(180)
def test_quick_celery_run_measures_every_figure(tmp_path: Path) -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "bench.celery_ref", str(tmp_path)],
        cwd=REPO,
        check=True,
        timeout=170,
        capture_output=True,
        text=True,
    )
    measured = json.loads(finished.stdout.strip().splitlines()[-1])
    assert measured["name"].startswith("Celery ")
    assert measured["accept_per_s"] > 0
    assert measured["round_trips"] == 100
    assert 0 < measured["round_trip_p50_ms"] <= measured["round_trip_p99_ms"]
    assert measured["efficiency_completed"] == 200
    # 200 tasks of 20 ms over 8 processes cannot finish faster than the ideal rate.
    ideal = measured["slots"] * 1000 / measured["sleep_ms"]
    assert 0 < measured["efficiency_per_s"] <= ideal * 1.02

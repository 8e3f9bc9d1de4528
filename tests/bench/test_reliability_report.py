"""docs/reliability.md is computed from what the tests recorded: the summary adds up the
scenarios' figures (nothing in it is typed in), and a failed test is named."""

from __future__ import annotations

import importlib.util
import sys
from datetime import datetime
from pathlib import Path

# bench/reliability.py by path: inside the tests, ``bench`` is tests/bench.
_SPEC = importlib.util.spec_from_file_location(
    "bench_reliability", Path(__file__).resolve().parents[2] / "bench" / "reliability.py"
)
assert _SPEC is not None and _SPEC.loader is not None
reliability = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = reliability  # dataclasses look their module up there
_SPEC.loader.exec_module(reliability)
RunResult, render = reliability.RunResult, reliability.render

CRASH = {
    "suite": "crash",
    "scenario": "SIGKILL of the `all` process (all, sqlite)",
    "test": "tests/reliability/test_crashes.py::test_kill[sqlite-all]",
    "requests": 100,
    "accepted": 90,
    "crashes": 2,
    "lost": 1,
    "duplicates": 0,
    "rerun": 3,
    "unacknowledged_recorded": 0,
    "server_errors": 0,
}
FAULT = {
    **CRASH,
    "suite": "fault",
    "scenario": "after-output-before-finish (sqlite)",
    "test": "tests/reliability/test_crashes.py::test_fault[sqlite]",
    "point": "after-output-before-finish",
    "requests": 50,
    "accepted": 40,
    "crashes": 1,
    "lost": 0,
    "duplicates": 2,
}
FLOOD = {
    "suite": "flood",
    "scenario": "idle connections (cap 64)",
    "test": "tests/reliability/test_floods.py::test_idle",
    "clients": 400,
    "statuses": {"0": 64, "503": 336},
    "rss_growth": 1024 * 1024,
    "rss_peak": 64 * 1024 * 1024,
    "server_errors_by_design": 336,
    "server_errors": 0,
}


def page(tests: list[RunResult]) -> str:
    return render(
        [CRASH, FAULT, FLOOD],
        tests,
        scale=2,
        profile="ci",
        seconds=60,
        started=datetime(2026, 1, 1),
    )


def test_the_summary_adds_up_the_scenarios_figures() -> None:
    text = page(
        [
            RunResult(CRASH["test"], "passed", 1.0),
            RunResult(FAULT["test"], "passed", 1.0),
            RunResult(FLOOD["test"], "passed", 1.0),
        ]
    )
    assert "| InvokeEndpointAsync calls under crashes and faults | 150 |" in text
    assert "| acknowledged (202) | 130 |" in text
    assert "| crashes injected (SIGKILL of a process, or at a fault point) | 3 |" in text
    assert "| **requests lost** | **1** |" in text
    assert "| **duplicates finished** | **2** |" in text
    assert "| fault points exercised | 1 of " in text
    assert "| flood connections | 400 |" in text
    assert "64 x closed unanswered, 336 x 503" in text
    assert "| fault scenarios survived (tests/reliability) | 3 of 3 |" in text


def test_a_failed_test_is_named_on_the_page() -> None:
    text = page([RunResult(CRASH["test"], "failed", 1.0)])
    assert f"**Failed:** `{CRASH['test']}`" in text
    assert "| fault scenarios survived (tests/reliability) | 0 of 1 |" in text

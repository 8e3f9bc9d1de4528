"""Figures for docs/reliability.md: test scenarios append what they measured, as JSON
lines, to the file ``SAGEQUEUE_RELIABILITY_FIGURES`` names (``make reliability`` sets it;
otherwise nothing is written). ``SAGEQUEUE_RELIABILITY_SCALE`` multiplies the loads."""

from __future__ import annotations

import json
import os
from typing import Any

SCALE = float(os.environ.get("SAGEQUEUE_RELIABILITY_SCALE", "1"))
FIGURES_FILE = os.environ.get("SAGEQUEUE_RELIABILITY_FIGURES")


def scaled(count: int) -> int:
    return max(1, round(count * SCALE))


def record(suite: str, scenario: str, test: str, **values: Any) -> None:
    if not FIGURES_FILE:
        return
    line = json.dumps({"suite": suite, "scenario": scenario, "test": test, **values})
    with open(FIGURES_FILE, "a") as handle:
        handle.write(line + "\n")

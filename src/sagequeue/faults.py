"""Fault-injection points for the crash tests (docs/reliability.md).

Inert in production: a point acts only when the ``SAGEQUEUE_TEST_FAULTS`` environment
variable, which only the test suite sets, names it. Its value is a comma-separated list
of ``point`` or ``point@N`` (act the N-th time the point is reached, counting from 1;
default the first). Acting means SIGKILL of the process itself: the crash a power cut or
the OOM killer would cause, at exactly that step.
"""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter

ENVIRONMENT_VARIABLE = "SAGEQUEUE_TEST_FAULTS"


def _armed_points(spec: str) -> dict[str, int]:
    armed: dict[str, int] = {}
    for item in spec.split(","):
        name, _, nth = item.strip().partition("@")
        if name:
            armed[name] = int(nth) if nth.isdigit() and int(nth) > 0 else 1
    return armed


_ARMED = _armed_points(os.environ.get(ENVIRONMENT_VARIABLE, ""))
_reached: Counter[str] = Counter()


def crash_point(name: str) -> None:
    """Kill this process here if the tests armed ``name`` (and this is its N-th pass)."""
    if not _ARMED or name not in _ARMED:
        return
    _reached[name] += 1
    if _reached[name] == _ARMED[name]:
        sys.stderr.write(f"sagequeue: fault injected at {name} (pass {_reached[name]})\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)

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

# Every point, with the step it cuts (docs/reliability.md lists them from here).
POINTS = {
    "after-output-before-finish": (
        "the worker wrote a request's output object; the finish is not committed"
    ),
    "local-store-after-rename": (
        "local object store: a new body (object or part) is renamed into place; its index "
        "row is not committed"
    ),
    "local-store-after-commit": (
        "local object store: the index commit replaced or deleted an object or part; the "
        "old body file is not unlinked yet"
    ),
    "complete-multipart-after-concatenate": (
        "CompleteMultipartUpload (local store): the parts are concatenated into a temp "
        "file, not renamed into place"
    ),
    "complete-multipart-after-rename": (
        "CompleteMultipartUpload (local store): the object body is in place; the commit "
        "that makes it the object and ends the upload is not done"
    ),
    "complete-multipart-after-commit": (
        "CompleteMultipartUpload (local store): committed; the part files are not unlinked"
    ),
}


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

"""Hypothesis profiles for the hostile-input suite: ``ci`` (the default, in ``make
test``: few examples, derandomized so that a run is repeatable) and ``fuzz`` (``make
fuzz``: many random examples)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {
    "deadline": None,  # each example is a round trip to a real server
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "database": None,  # no example database written into the work tree
}
settings.register_profile("ci", max_examples=100, derandomize=True, **_COMMON)
settings.register_profile("fuzz", max_examples=3000, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

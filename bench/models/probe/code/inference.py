"""Bench probe model: records when the handler started and ended, and how many input
bytes it got. Custom attribute ``sleep_ms=N`` makes it sleep N ms (the efficiency
scenario's 20 ms model); without it, it is a no-op (the dispatch-latency scenario)."""

from __future__ import annotations

import json
import time


def model_fn(model_dir: str) -> dict:
    return {}


def _sleep_ms(custom_attributes: str | None) -> int:
    for item in (custom_attributes or "").split(","):
        name, _, value = item.strip().partition("=")
        if name == "sleep_ms" and value.isdigit():
            return int(value)
    return 0


def transform_fn(model: dict, data: bytes | str, content_type: str, accept: str, context=None):
    started = time.time()  # first thing: "model start" in the dispatch-latency figures
    delay = _sleep_ms(context.custom_attributes if context is not None else None)
    if delay:
        time.sleep(delay / 1000)
    body = {"start": started, "end": time.time(), "bytes": len(data)}
    return json.dumps(body), "application/json"

"""Echo model: answers the request body unchanged, with the request's content type.

Custom attribute ``sleep_ms=N`` (X-Amzn-SageMaker-Custom-Attributes, e.g. ``sleep_ms=500``)
makes it sleep N milliseconds first: handy for concurrency, timeout and load tests.
The response carries the custom attribute ``echo=1`` (set through the context).
"""

from __future__ import annotations

import time


def model_fn(model_dir: str) -> dict:
    return {"model_dir": model_dir}


def _sleep_ms(custom_attributes: str | None) -> int:
    for item in (custom_attributes or "").split(","):
        name, _, value = item.strip().partition("=")
        if name == "sleep_ms" and value.isdigit():
            return int(value)
    return 0


def transform_fn(model: dict, data: bytes | str, content_type: str, accept: str, context=None):
    custom_attributes = context.custom_attributes if context is not None else None
    delay = _sleep_ms(custom_attributes)
    if delay:
        time.sleep(delay / 1000)
    if context is not None:
        context.set_response_custom_attributes("echo=1")
    return data, content_type or "application/octet-stream"

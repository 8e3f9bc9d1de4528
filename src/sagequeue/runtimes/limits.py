"""What a runtime accepts from a model: a response of at most max_model_response_bytes (a
worker holds each response in memory while it writes the output object, so a larger one
fails the request instead of growing the worker without bound), and response attributes
that can be HTTP header values (they become the output object's Content-Type and
metadata, sent back by GetObject)."""

from __future__ import annotations

import re

from sagequeue.ports import ModelInvocationError

# Characters no header value may hold (a line break, or other control characters).
_NOT_IN_A_HEADER = re.compile("[\x00-\x08\x0a-\x1f\x7f]")


def response_too_large(size: int | None, limit: int) -> ModelInvocationError:
    """The failure of a response over ``limit`` bytes (``size`` None: unknown, it was
    cut off once past the limit)."""
    what = f"{size} bytes" if size is not None else "more than that"
    return ModelInvocationError(
        f"The model's response is too large: {what}, over the maximum model response "
        f"size of {limit} bytes (max_model_response_bytes)"
    )


def header_value_or_none(value: object) -> str | None:
    """``value`` as text when it can be sent as an HTTP header value, else None (the
    output object then has no Content-Type, and GetObject answers S3's default)."""
    if value is None:
        return None
    text = str(value)
    return None if _NOT_IN_A_HEADER.search(text) else text

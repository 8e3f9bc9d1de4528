"""The bound on a model's response (the max_model_response_bytes setting): a worker holds
each response in memory while it writes the output object, so a larger one fails the
request instead of growing the worker without bound."""

from __future__ import annotations

from sagequeue.ports import ModelInvocationError


def response_too_large(size: int | None, limit: int) -> ModelInvocationError:
    """The failure of a response over ``limit`` bytes (``size`` None: unknown, it was
    cut off once past the limit)."""
    what = f"{size} bytes" if size is not None else "more than that"
    return ModelInvocationError(
        f"The model's response is too large: {what}, over the maximum model response "
        f"size of {limit} bytes (max_model_response_bytes)"
    )

"""Application Auto Scaling's wire protocol: JSON 1.1, ``X-Amz-Target:
AnyScaleFrontendService.<Action>``, signing name ``application-autoscaling``. The
operations are in sagequeue.autoscaling.operations."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from sagequeue.autoscaling.operations import ApplicationAutoScaling
from sagequeue.domain.errors import (
    ServiceError,
    ServiceUnavailable,
    UnknownOperation,
    ValidationException,
)
from sagequeue.frontdoor.errors import WireProtocol
from sagequeue.frontdoor.http import Request, Response, json_response

TARGET_PREFIX = "AnyScaleFrontendService."


class SerializationException(ServiceError):
    code = "SerializationException"
    status = 400


class AutoScalingApi:
    protocol = WireProtocol.JSON

    def __init__(
        self,
        get_autoscaling: Callable[[], ApplicationAutoScaling | None],
        *,
        max_body: int = 1024 * 1024,
    ) -> None:
        self._get = get_autoscaling
        self.max_body = max_body
        self._decoder = msgspec.json.Decoder()
        self._encoder = msgspec.json.Encoder()

    def body_too_large(self) -> ServiceError:
        return ValidationException(f"Request body exceeds the maximum of {self.max_body} bytes.")

    async def handle(self, request: Request) -> Response:
        target = request.headers.get("x-amz-target", "")
        if not target.startswith(TARGET_PREFIX):
            raise UnknownOperation(
                f"Unknown target {target!r}: expected AnyScaleFrontendService.<Action>."
            )
        action = target[len(TARGET_PREFIX) :]
        body = request.body or b""
        params = {}
        if body.strip():
            try:
                params = self._decoder.decode(body)
            except (msgspec.DecodeError, RecursionError) as exc:
                raise SerializationException(f"Request body is not valid JSON: {exc}") from None
            if not isinstance(params, dict):
                raise SerializationException("Request body must be a JSON object.")
        if request.access is not None:
            request.authorize("application-autoscaling:" + action, "*")
        autoscaling = self._get()
        if autoscaling is None:
            raise ServiceUnavailable("The server is starting; retry shortly.")
        result = await autoscaling.call(action, params)
        return json_response(
            200, self._encoder.encode(result), [("x-amzn-requestid", request.request_id)]
        )

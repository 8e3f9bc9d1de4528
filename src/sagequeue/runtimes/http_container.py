"""Runtime for an already running container honouring the SageMaker container contract
(``GET /ping``, ``POST /invocations``), addressed by ``http(s)://host:port``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sagequeue.domain.containers import ContainerUrlError, check_container_host
from sagequeue.ports import InstanceLog, ModelInvocationError, ModelRequest, ModelResponse
from sagequeue.runtimes.http_client import HttpError, request

PING_TIMEOUT_SECONDS = 30.0
CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
# Longest error body kept in a failure message.
MAX_ERROR_BODY = 4096


class HttpContainerRuntime:
    """``ModelRuntime`` for ``http://`` / ``https://`` images. Only the scheme, host and
    port of an Image are used, and only for hosts the allow-list admits
    (sagequeue.domain.containers); CreateModel refuses the others already, this holds
    for models stored before the rule or declared in a config file."""

    def __init__(
        self,
        ping_timeout: float = PING_TIMEOUT_SECONDS,
        *,
        allow_hosts: list[str] | None = None,
        server_host: str = "127.0.0.1",
    ) -> None:
        self._ping_timeout = ping_timeout
        self._allow_hosts = list(allow_hosts or [])
        self._server_host = server_host

    async def start_instance(
        self, model: dict[str, Any], max_concurrency: int, *, log: InstanceLog | None = None
    ) -> HttpContainerInstance:
        """The container's own output is not ours to capture: ``log`` gets sagequeue's
        lines only."""
        container = model.get("PrimaryContainer") or (model.get("Containers") or [{}])[0]
        try:
            base_url = check_container_host(
                str(container.get("Image", "")), self._allow_hosts, self._server_host
            )
        except ContainerUrlError as exc:
            raise ModelInvocationError(str(exc)) from None
        instance = HttpContainerInstance(base_url, max_concurrency)
        deadline = time.monotonic() + self._ping_timeout
        last_problem = "no answer"
        while True:
            problem = await instance.ping()
            if problem is None:
                if log is not None:
                    log.platform(f"The container at {base_url} answers GET /ping")
                return instance
            last_problem = problem
            if time.monotonic() >= deadline:
                raise ModelInvocationError(
                    f"The container at {base_url} did not pass GET /ping: {last_problem}"
                )
            await asyncio.sleep(0.25)


class HttpContainerInstance:
    def __init__(self, base_url: str, max_concurrency: int) -> None:
        self.base_url = base_url
        self.max_concurrency = max(1, max_concurrency)
        self._slots = asyncio.Semaphore(self.max_concurrency)

    async def ping(self) -> str | None:
        """None when healthy, else what went wrong: the status only, never the body (a
        reason ends up in FailureReason, readable by whoever may describe the endpoint,
        and must not carry what some other service answered)."""
        try:
            response = await asyncio.wait_for(request("GET", self.base_url + "/ping"), 5.0)
            await response.close()
        except (HttpError, TimeoutError) as exc:
            return str(exc) or "timed out"
        if 200 <= response.status < 300:
            return None
        return f"HTTP {response.status}"

    async def healthy(self) -> bool:
        return await self.ping() is None

    async def invoke(self, model_request: ModelRequest, timeout: float) -> ModelResponse:
        headers = {
            "Content-Type": model_request.content_type or "application/octet-stream",
            "Accept": model_request.accept or "*/*",
            "X-Amzn-SageMaker-Inference-Id": model_request.inference_id,
        }
        if model_request.custom_attributes is not None:
            headers[CUSTOM_ATTRIBUTES_HEADER] = model_request.custom_attributes
        async with self._slots, asyncio.timeout(timeout):
            try:
                response = await request(
                    "POST", self.base_url + "/invocations", headers, model_request.body
                )
                body = await response.read()
            except HttpError as exc:
                raise ModelInvocationError(
                    f"Could not reach the model container at {self.base_url}: {exc}"
                ) from None
        if not 200 <= response.status < 300:
            text = body[:MAX_ERROR_BODY].decode("utf-8", "replace")
            side = "client" if response.status < 500 else "server"
            raise ModelInvocationError(
                f'Received {side} error ({response.status}) from model with message "{text}"',
                status=response.status,
            )
        return ModelResponse(
            body=body,
            content_type=response.headers.get("content-type"),
            custom_attributes=response.headers.get(CUSTOM_ATTRIBUTES_HEADER.lower()),
        )

    async def close(self) -> None:
        """Nothing to stop: the container is not ours."""

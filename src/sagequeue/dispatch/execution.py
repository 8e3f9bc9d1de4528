"""Running one leased invocation on a model instance: read the input, invoke the model,
write the output (or the failure) object, and only then finish it in the queue store,
conditionally on still holding its lease (so that it never finishes twice)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from sagequeue.config import Settings
from sagequeue.domain.errors import S3Error
from sagequeue.ports import (
    Clock,
    Invocation,
    InvocationStatus,
    ModelInstance,
    ModelInvocationError,
    ModelRequest,
    ModelResponse,
    ObjectStore,
    QueueStore,
)
from sagequeue.runtimes import InstanceCrashed

if TYPE_CHECKING:
    from sagequeue.monitoring.recorder import MetricsSink

log = logging.getLogger("sagequeue.worker")

MAX_ATTEMPTS = 3
MAX_REASON_LENGTH = 1024


class InputUnavailable(Exception):
    """The invocation's input cannot be read; the message is the failure reason."""


class Executor:
    def __init__(
        self,
        queue: QueueStore,
        objects: ObjectStore,
        settings: Settings,
        clock: Clock,
        metrics: MetricsSink | None = None,
    ) -> None:
        self.queue = queue
        self.objects = objects
        self.settings = settings
        self.clock = clock
        self.metrics = metrics

    async def run(
        self, instance: ModelInstance, inv: Invocation, model_done: Callable[[], None]
    ) -> None:
        """Run one invocation; ``model_done`` is called once the model has answered, so
        the instance takes its next request while this one's result is written."""
        now = self.clock.now()
        if now > inv.expires_at:
            await self.finish_with_failure(inv, InvocationStatus.EXPIRED, expired_reason(inv))
            return
        self._observe("TimeInBacklog", inv, (inv.started_at or now) - inv.enqueued_at)
        opened = self.clock.monotonic()
        try:
            body = await self._open_input(inv)
        except InputUnavailable as exc:
            self._count("RequestDownloadFailures", inv)
            await self.finish_with_failure(inv, InvocationStatus.FAILED, str(exc))
            return
        if inv.inline_body is None:
            self._observe("RequestDownloadLatency", inv, self.clock.monotonic() - opened)
        request = ModelRequest(
            inference_id=inv.inference_id,
            body=body,
            content_type=inv.content_type,
            accept=inv.accept,
            custom_attributes=inv.custom_attributes,
        )
        timeout = inv.invocation_timeout_seconds
        invoked = self.clock.monotonic()
        try:
            try:
                response = await instance.invoke(request, float(timeout))
            finally:
                model_done()
        except TimeoutError:
            reason = f"Model invocation timed out after {timeout} s (InvocationTimeoutSeconds)"
            await self.finish_with_failure(inv, InvocationStatus.FAILED, reason)
            return
        except InstanceCrashed as exc:
            if inv.attempts >= MAX_ATTEMPTS:
                reason = (
                    f"The model instance crashed {inv.attempts} times while running this "
                    f"request: {exc.message}"
                )
                await self.finish_with_failure(inv, InvocationStatus.FAILED, reason)
            else:
                log.warning("instance crashed running %s; re-queued", inv.inference_id)
                await self.queue.release(inv.request_id, self._owner(inv))
            return
        except ModelInvocationError as exc:
            self._observe("ModelLatency", inv, self.clock.monotonic() - invoked)
            await self.finish_with_failure(inv, InvocationStatus.FAILED, exc.message)
            return
        except InputUnavailable as exc:  # raised while the input was being streamed
            self._count("RequestDownloadFailures", inv)
            await self.finish_with_failure(inv, InvocationStatus.FAILED, str(exc))
            return
        self._observe("ModelLatency", inv, self.clock.monotonic() - invoked)
        uploading = self.clock.monotonic()
        try:
            await self._write_output(inv, response)
        except (S3Error, ValueError) as exc:
            self._count("ResponseUploadFailures", inv)
            reason = f"Could not write the output to {inv.output_location}: {exc}"
            await self.finish_with_failure(inv, InvocationStatus.FAILED, reason)
            return
        self._observe("ResponseUploadLatency", inv, self.clock.monotonic() - uploading)
        await self._finish(inv, InvocationStatus.COMPLETED, None)

    async def finish_with_failure(
        self, inv: Invocation, status: InvocationStatus, reason: str
    ) -> bool:
        """Write the failure object, then finish (the object first: a 202 promises it)."""
        from sagequeue.stores.objects import parse_s3_uri

        try:
            bucket, key = parse_s3_uri(inv.failure_location)
            await self.objects.put_object(
                bucket, key, one_chunk(reason.encode("utf-8")), content_type="text/plain"
            )
        except (S3Error, ValueError) as exc:
            log.error("could not write failure object %s: %s", inv.failure_location, exc)
        return await self._finish(inv, status, reason[:MAX_REASON_LENGTH])

    async def _finish(self, inv: Invocation, status: InvocationStatus, reason: str | None) -> bool:
        finished = await self.queue.finish(
            inv.request_id, self._owner(inv), status, reason, self.clock.now()
        )
        if not finished:
            # Its lease lapsed (this worker was paused or cut off) and it was taken
            # again: the other run finishes it.
            log.warning("invocation %s: lease lost before finishing", inv.inference_id)
        elif self.metrics is not None:
            if status is InvocationStatus.EXPIRED:
                self._count("ExpiredRequests", inv)
            else:
                self._count("InvocationsProcessed", inv)
                self._observe("TotalProcessingTime", inv, self.clock.now() - inv.enqueued_at)
                if status is InvocationStatus.FAILED:
                    self._count("InvocationFailures", inv)
        return finished

    def _count(self, metric: str, inv: Invocation) -> None:
        if self.metrics is not None:
            self.metrics.count(metric, inv.endpoint_name, inv.variant_name)

    def _observe(self, metric: str, inv: Invocation, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.observe(metric, inv.endpoint_name, inv.variant_name, max(seconds, 0.0))

    @staticmethod
    def _owner(inv: Invocation) -> str:
        assert inv.lease_owner is not None, "only leased invocations run"
        return inv.lease_owner

    async def _open_input(self, inv: Invocation) -> bytes | AsyncIterator[bytes]:
        if inv.inline_body is not None:
            return inv.inline_body
        location = inv.input_location or ""
        if location.startswith("s3://"):
            from sagequeue.stores.objects import parse_s3_uri

            try:
                bucket, key = parse_s3_uri(location)
                _, stream = await self.objects.get_object(bucket, key)
            except (S3Error, ValueError) as exc:
                raise InputUnavailable(
                    f"Could not read the input from {location}: {_describe(exc)}"
                ) from None
            return _guarded(stream, location)
        if location.startswith("https://"):
            return await self._open_https(location)
        if not location:
            return b""
        raise InputUnavailable(f"Unsupported InputLocation {location}")

    async def _open_https(self, location: str) -> AsyncIterator[bytes]:
        from sagequeue.runtimes.http_client import HttpError, request

        host = urlsplit(location).hostname or ""
        allowed = [h.lower() for h in self.settings.https_input_allow_hosts]
        if host.lower() not in allowed:
            raise InputUnavailable(
                f"Could not read the input from {location}: host {host} is not in the "
                "https input allow-list (https_input_allow_hosts)"
            )
        try:
            response = await request("GET", location)
        except HttpError as exc:
            raise InputUnavailable(f"Could not read the input from {location}: {exc}") from None
        if response.status != 200:
            await response.close()
            raise InputUnavailable(
                f"Could not read the input from {location}: HTTP {response.status}"
            )
        return _guarded(response.body_stream, location)

    async def _write_output(self, inv: Invocation, response: ModelResponse) -> None:
        from sagequeue.stores.objects import parse_s3_uri

        bucket, key = parse_s3_uri(inv.output_location)
        metadata = (
            {"custom-attributes": response.custom_attributes}
            if response.custom_attributes
            else None
        )
        await self.objects.put_object(
            bucket,
            key,
            one_chunk(response.body),
            content_type=response.content_type,
            metadata=metadata,
        )


def expired_reason(inv: Invocation) -> str:
    return f"Request expired: queued longer than RequestTTLSeconds ({inv.request_ttl_seconds} s)"


def _describe(exc: Exception) -> str:
    if isinstance(exc, S3Error):
        return f"{exc.code}: {exc.message}"
    return str(exc)


async def one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _guarded(stream: AsyncIterator[bytes], location: str) -> AsyncIterator[bytes]:
    """Turn read errors in the middle of an input stream into InputUnavailable."""
    try:
        async for chunk in stream:
            yield chunk
    except (S3Error, OSError) as exc:
        raise InputUnavailable(f"Could not read the input from {location}: {exc}") from None

"""Running one leased invocation on a model instance: read the input, invoke the model,
write the output (or the failure) object, and only then finish it in the queue store,
conditionally on still holding its lease (so that it never finishes twice).

Each step is told, with the inference id and its timings, in the instance's data-log
stream (``RequestLog``): accepted by the instance, started, completed or failed.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from sagequeue import faults
from sagequeue.config import Settings
from sagequeue.dispatch.notices import Notices
from sagequeue.domain.errors import S3Error, ServiceUnavailable
from sagequeue.domain.notifications import Outcome, model_error_reason
from sagequeue.domain.outbound import host_allowed
from sagequeue.ports import (
    Clock,
    InstanceLog,
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
# Transient object-store errors are retried with exponential backoff and jitter: reads
# and output writes within the invocation's timeout, failure objects for this long.
RETRY_FIRST_SECONDS = 0.1
RETRY_MAX_SECONDS = 5.0
FAILURE_WRITE_SECONDS = 60.0
# A queue store that is unavailable (restarting) is retried for this long by a finish.
STORE_RETRY_SECONDS = 15.0

T = TypeVar("T")


class InputUnavailable(Exception):
    """The invocation's input cannot be read; the message is the failure reason."""


class RequestLog:
    """sagequeue's lines about one request, in its instance's log (nowhere without one)."""

    def __init__(self, log: InstanceLog | None, inv: Invocation, clock: Clock) -> None:
        self._log = log
        self._inference_id = inv.inference_id
        self._clock = clock
        self._began = clock.monotonic()

    def line(self, text: str) -> None:
        if self._log is not None:
            self._log.platform(f"Inference {self._inference_id}: {text}")

    def since_start_ms(self) -> int:
        return _ms(self._clock.monotonic() - self._began)


def _ms(seconds: float) -> int:
    return max(round(seconds * 1000), 0)


class Executor:
    def __init__(
        self,
        queue: QueueStore,
        objects: ObjectStore,
        settings: Settings,
        clock: Clock,
        metrics: MetricsSink | None = None,
        *,
        notices: Notices | None = None,
        on_notified: Callable[[], None] | None = None,
    ) -> None:
        self.queue = queue
        self.objects = objects
        self.settings = settings
        self.clock = clock
        self.metrics = metrics
        # Notifications: composed at each finish and recorded with it (the outbox);
        # ``on_notified`` wakes this process's sender once they are committed.
        self.notices = notices
        self._on_notified = on_notified

    async def run(
        self,
        instance: ModelInstance,
        inv: Invocation,
        model_done: Callable[[], None],
        *,
        instance_log: InstanceLog | None = None,
    ) -> None:
        """Run one invocation; ``model_done`` is called once the model has answered, so
        the instance takes its next request while this one's result is written. Its
        steps are told in ``instance_log``."""
        note = RequestLog(instance_log, inv, self.clock)
        now = self.clock.now()
        note.line(
            f"accepted by the instance (queued {_ms(now - inv.enqueued_at)} ms, "
            f"attempt {inv.attempts})"
        )
        if now > inv.expires_at:
            await self.finish_with_failure(
                inv, InvocationStatus.EXPIRED, expired_reason(inv), note=note
            )
            return
        self._observe("TimeInBacklog", inv, (inv.started_at or now) - inv.enqueued_at)
        opened = self.clock.monotonic()
        # Reading the input and writing the output may retry up to the invocation timeout.
        deadline = opened + inv.invocation_timeout_seconds
        try:
            body = await self._retrying(lambda: self._open_input(inv), deadline)
        except InputUnavailable as exc:
            self._count("RequestDownloadFailures", inv)
            await self.finish_with_failure(inv, InvocationStatus.FAILED, str(exc), note=note)
            return
        except (S3Error, OSError) as exc:  # still unavailable when the timeout ran out
            self._count("RequestDownloadFailures", inv)
            reason = f"Could not read the input from {inv.input_location}: {_describe(exc)}"
            await self.finish_with_failure(inv, InvocationStatus.FAILED, reason, note=note)
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
        note.line(f"started (input opened in {note.since_start_ms()} ms)")
        invoked = self.clock.monotonic()
        try:
            try:
                response = await instance.invoke(request, float(timeout))
            finally:
                model_done()
        except TimeoutError:
            reason = f"Model invocation timed out after {timeout} s (InvocationTimeoutSeconds)"
            await self.finish_with_failure(inv, InvocationStatus.FAILED, reason, note=note)
            return
        except InstanceCrashed as exc:
            if inv.attempts >= MAX_ATTEMPTS:
                reason = (
                    f"The model instance crashed {inv.attempts} times while running this "
                    f"request: {exc.message}"
                )
                await self.finish_with_failure(inv, InvocationStatus.FAILED, reason, note=note)
            else:
                log.warning("instance crashed running %s; re-queued", inv.inference_id)
                note.line(
                    f"re-queued: the instance crashed while running it ({exc.message}; "
                    f"attempt {inv.attempts} of {MAX_ATTEMPTS})"
                )
                await self.queue.release(inv.request_id, self._owner(inv))
            return
        except ModelInvocationError as exc:
            self._observe("ModelLatency", inv, self.clock.monotonic() - invoked)
            await self.finish_with_failure(
                inv,
                InvocationStatus.FAILED,
                exc.message,
                note=note,
                notice_reason=model_error_reason(exc.status),
            )
            return
        except InputUnavailable as exc:  # raised while the input was being streamed
            self._count("RequestDownloadFailures", inv)
            await self.finish_with_failure(inv, InvocationStatus.FAILED, str(exc), note=note)
            return
        model_seconds = self.clock.monotonic() - invoked
        self._observe("ModelLatency", inv, model_seconds)
        model_ms = _ms(model_seconds)
        uploading = self.clock.monotonic()
        try:
            await self._retrying(lambda: self._write_output(inv, response), deadline)
        except (S3Error, ValueError) as exc:
            self._count("ResponseUploadFailures", inv)
            reason = f"Could not write the output to {inv.output_location}: {_describe(exc)}"
            await self.finish_with_failure(inv, InvocationStatus.FAILED, reason, note=note)
            return
        self._observe("ResponseUploadLatency", inv, self.clock.monotonic() - uploading)
        faults.crash_point("after-output-before-finish")
        outcome = Outcome(
            InvocationStatus.COMPLETED, response=response.body, content_type=response.content_type
        )
        if await self._finish(inv, InvocationStatus.COMPLETED, None, outcome):
            note.line(
                f"completed in {note.since_start_ms()} ms (model {model_ms} ms): "
                f"{inv.output_location}"
            )

    async def finish_with_failure(
        self,
        inv: Invocation,
        status: InvocationStatus,
        reason: str,
        *,
        note: RequestLog | None = None,
        notice_reason: str | None = None,
    ) -> bool:
        """Write the failure object, then finish (the object first: a 202 promises it).
        ``notice_reason``: the failureReason of the notification, where SageMaker words
        it otherwise than ``reason`` (which the failure object and the status call keep).

        While the object store is unavailable the request is not finished: after
        retrying for a while it goes back to the queue, to end once the store is back."""
        from sagequeue.stores.objects import parse_s3_uri

        async def write() -> None:
            bucket, key = parse_s3_uri(inv.failure_location)
            await self.objects.put_object(
                bucket, key, one_chunk(reason.encode("utf-8")), content_type="text/plain"
            )

        try:
            await self._retrying(write, self.clock.monotonic() + FAILURE_WRITE_SECONDS)
        except (S3Error, ValueError, OSError) as exc:
            if is_transient(exc):
                log.error(
                    "invocation %s: the object store is unavailable (%s); the request goes "
                    "back to the queue to end once it is back",
                    inv.inference_id,
                    _describe(exc),
                )
                await self.queue.release(inv.request_id, self._owner(inv), attempted=False)
                if note is not None:
                    note.line("back to the queue: the object store is unavailable")
                return False
            # It can never be written (no such bucket, an invalid location): end it anyway.
            log.error("could not write failure object %s: %s", inv.failure_location, exc)
        stored_reason = reason[:MAX_REASON_LENGTH]
        outcome = Outcome(
            status, failure_reason=notice_reason or stored_reason, response=reason.encode("utf-8")
        )
        finished = await self._finish(inv, status, stored_reason, outcome)
        if finished and note is not None:
            verb = "expired" if status == InvocationStatus.EXPIRED else "failed"
            note.line(f"{verb} after {note.since_start_ms()} ms: {reason}")
        return finished

    async def _retrying(self, operation: Callable[[], Awaitable[T]], deadline: float) -> T:
        """``operation()``, retried on transient object-store errors with exponential
        backoff and jitter while ``deadline`` (monotonic) allows."""
        delay = RETRY_FIRST_SECONDS
        while True:
            try:
                return await operation()
            except (S3Error, OSError) as exc:
                pause = delay * random.uniform(0.5, 1.5)
                if not is_transient(exc) or self.clock.monotonic() + pause > deadline:
                    raise
                log.warning("object store error (%s); retrying in %.1f s", _describe(exc), pause)
                await asyncio.sleep(pause)
                delay = min(delay * 2, RETRY_MAX_SECONDS)

    async def _finish(
        self, inv: Invocation, status: InvocationStatus, reason: str | None, outcome: Outcome
    ) -> bool:
        """Finish in the queue store, recording the notifications of the outcome in the
        same transaction. While the store is unavailable (a database restart) the finish
        is retried for half a lease; past that ServiceUnavailable propagates and the
        lease lapses: the request runs again, never ends twice."""
        deadline = self.clock.monotonic() + STORE_RETRY_SECONDS
        delay = RETRY_FIRST_SECONDS
        while True:
            try:
                now = self.clock.now()
                notifications = (
                    await self.notices.messages(inv, outcome, now)
                    if self.notices is not None
                    else []
                )
                if notifications:
                    finished = await self.queue.finish(
                        inv.request_id,
                        self._owner(inv),
                        status,
                        reason,
                        now,
                        notifications=notifications,
                    )
                else:
                    finished = await self.queue.finish(
                        inv.request_id, self._owner(inv), status, reason, now
                    )
                break
            except ServiceUnavailable:
                if self.clock.monotonic() + delay > deadline:
                    raise
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, RETRY_MAX_SECONDS)
        if not finished:
            # Its lease lapsed (this worker was paused or cut off) and it was taken
            # again: the other run finishes it.
            log.warning("invocation %s: lease lost before finishing", inv.inference_id)
        else:
            if notifications:
                faults.crash_point("after-finish-before-notify")
                if self._on_notified is not None:
                    self._on_notified()
            if self.metrics is not None:
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
            except (S3Error, ValueError, OSError) as exc:
                if is_transient(exc):
                    raise  # the caller retries while the invocation's timeout allows
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
        if not host_allowed(host, self.settings.https_input_allow_hosts):
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


def is_transient(exc: BaseException) -> bool:
    """An object-store error that may pass: the service is down, overloaded or full."""
    if isinstance(exc, S3Error):
        return exc.status >= 500 or exc.code in ("RequestTimeout", "SlowDown")
    return isinstance(exc, OSError)


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

"""The worker: runs endpoints' model instances and feeds them from the queue store.

* Reconciler: polls the metadata store; deploys endpoints that are Creating / Updating
  (or InService after a restart), writes their status back, tears down deleted ones.
* Dispatcher (one task per endpoint): leases up to the free slots, FIFO; woken by
  ``wake()`` (same process) or the doorbell (other processes), with polling as fallback.
* Sweeper: re-queues lapsed leases and expires requests queued past RequestTTLSeconds,
  including those of endpoints without capacity.

Every outcome writes its object (output or failure) before ``queue.finish`` commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sagequeue.config import Settings
from sagequeue.domain.errors import S3Error
from sagequeue.ports import (
    Clock,
    Invocation,
    InvocationStatus,
    MetadataStore,
    ModelInstance,
    ModelInvocationError,
    ModelRequest,
    ModelResponse,
    ModelRuntime,
    ObjectStore,
    QueueStore,
    ResourceKind,
    SystemClock,
)
from sagequeue.runtimes import InstanceCrashed, select_runtime

log = logging.getLogger("sagequeue.worker")

POLL_SECONDS = 0.5
LEASE_SECONDS = 30.0
RENEW_SECONDS = 10.0
SWEEP_SECONDS = 1.0
STOP_GRACE_SECONDS = 25.0
MAX_ATTEMPTS = 3
SWEEP_BATCH = 100
MAX_REASON_LENGTH = 1024

RuntimeFactory = Callable[[dict[str, Any], ObjectStore, Settings], ModelRuntime]


class InputUnavailable(Exception):
    """The invocation's input cannot be read; the message is the failure reason."""


@dataclass(eq=False)
class _Slot:
    instance: ModelInstance
    in_flight: int = 0


@dataclass(eq=False)
class _EndpointRunner:
    """What this worker runs for one endpoint."""

    name: str
    generation: int
    slots: list[_Slot]
    max_concurrency: int
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    running: dict[str, tuple[Invocation, asyncio.Task[None]]] = field(default_factory=dict)
    # Request ids of the ``running`` invocations a model instance has been given.
    started: set[str] = field(default_factory=set)
    # Leased invocations that hold a model slot or wait for one. The others in
    # ``running`` are writing their output: the slot already took its next request.
    holding: int = 0
    dispatcher: asyncio.Task[None] | None = None
    retired: bool = False  # deleted or replaced by a newer deployment: lease no more
    model_slots: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self.model_slots = asyncio.Semaphore(self.capacity)

    @property
    def capacity(self) -> int:
        return len(self.slots) * self.max_concurrency

    @property
    def prefetch(self) -> int:
        """Leased ahead of a free slot, so a slot that frees starts its next request
        without waiting for a lease round trip to the store."""
        return max(1, self.capacity // 4)

    @property
    def free(self) -> int:
        """How many more to lease: the free slots plus the prefetch, and at most
        ``capacity`` invocations still writing their results (bounds what a slow
        store can pile up)."""
        return min(
            self.capacity + self.prefetch - self.holding,
            2 * self.capacity + self.prefetch - len(self.running),
        )

    def pick_slot(self) -> _Slot:
        return min(self.slots, key=lambda slot: slot.in_flight)


class Worker:
    def __init__(
        self,
        queue: QueueStore,
        metadata: MetadataStore,
        objects: ObjectStore,
        settings: Settings,
        *,
        clock: Clock | None = None,
        runtime_factory: RuntimeFactory = select_runtime,
        poll_seconds: float = POLL_SECONDS,
        lease_seconds: float = LEASE_SECONDS,
        renew_seconds: float = RENEW_SECONDS,
        sweep_seconds: float = SWEEP_SECONDS,
        stop_grace_seconds: float = STOP_GRACE_SECONDS,
    ) -> None:
        self.queue = queue
        self.metadata = metadata
        self.objects = objects
        self.settings = settings
        self.clock = clock or SystemClock()
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._runtime_factory = runtime_factory
        self._poll = poll_seconds
        self._lease_seconds = lease_seconds
        self._renew_seconds = renew_seconds
        self._sweep_seconds = sweep_seconds
        self._stop_grace = stop_grace_seconds
        self._runners: dict[str, _EndpointRunner] = {}  # by lower-cased endpoint name
        self._deploying: dict[str, asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()  # teardowns, drains
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._stopping = False
        self._doorbell: Any = None

    # ------------------------------------------------------------------ life cycle
    async def start(self) -> None:
        from sagequeue.dispatch.doorbell import DoorbellListener

        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._doorbell = DoorbellListener(self.settings.data_dir, self.wake)
        self._doorbell.start()
        await self._reconcile()
        self._tasks = [
            asyncio.create_task(self._every(self._poll, self._reconcile), name="reconciler"),
            asyncio.create_task(self._every(self._sweep_seconds, self._sweep), name="sweeper"),
            asyncio.create_task(self._every(self._renew_seconds, self._renew), name="renewer"),
        ]

    async def stop(self) -> None:
        """Stop leasing, let in-flight invocations finish (up to the grace period),
        release the rest back to Queued, stop the instances."""
        self._stopping = True
        if self._doorbell is not None:
            self._doorbell.close()
        for task in [*self._tasks, *self._deploying.values()]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._deploying.values(), return_exceptions=True)
        # Dispatchers exit at their next round; not cancelled, so no lease is lost mid-way.
        dispatchers = [r.dispatcher for r in self._runners.values() if r.dispatcher is not None]
        for runner in self._runners.values():
            runner.wakeup.set()
        if dispatchers:
            await asyncio.wait(dispatchers, timeout=10)
        running = [
            (runner, inv, task)
            for runner in self._runners.values()
            for inv, task in runner.running.values()
        ]
        if running:
            await asyncio.wait([task for _, _, task in running], timeout=self._stop_grace)
        for runner, inv, task in running:
            if not task.done():
                # Only a request a model instance was given counts as an attempt.
                attempted = inv.request_id in runner.started
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
                await self.queue.release(inv.request_id, self.owner, attempted=attempted)
        for runner in list(self._runners.values()):
            await self._close_slots(runner.slots)
        self._runners.clear()
        if self._background:
            await asyncio.wait(list(self._background), timeout=self._stop_grace)

    def wake(self, endpoint_name: str) -> None:
        """An invocation was enqueued for ``endpoint_name``: lease it now. Cheap, and
        callable from any thread."""
        runner = self._runners.get(endpoint_name.lower())
        if runner is None:
            return
        if threading.get_ident() == self._loop_thread:
            runner.wakeup.set()
        elif self._loop is not None:
            self._loop.call_soon_threadsafe(runner.wakeup.set)

    async def _every(self, seconds: float, action: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await action()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("worker background step %s failed", action.__name__)

    # ------------------------------------------------------------------ reconciler
    async def _reconcile(self) -> None:
        if self._stopping:
            return
        resources = await self.metadata.list_resources(ResourceKind.ENDPOINT)
        seen: set[str] = set()
        for resource in resources:
            key = resource.name.lower()
            seen.add(key)
            doc = resource.doc
            status = doc.get("EndpointStatus")
            generation = int(doc.get("_Generation", 0))
            runner = self._runners.get(key)
            if key in self._deploying or "_Deployment" not in doc:
                continue
            wants_deploy = (
                status in ("Creating", "Updating")
                and (runner is None or generation > runner.generation)
            ) or (status == "InService" and runner is None)
            if wants_deploy:
                task = asyncio.create_task(self._deploy(resource.name, generation, doc))
                self._deploying[key] = task
                task.add_done_callback(lambda _t, k=key: self._deploying.pop(k, None))
        for key in [k for k in self._runners if k not in seen]:
            task = asyncio.create_task(self._teardown(self._runners.pop(key)))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _deploy(self, name: str, generation: int, doc: dict[str, Any]) -> None:
        status = doc.get("EndpointStatus")
        deployment = doc["_Deployment"]
        try:
            config = deployment["EndpointConfig"]
            variants = config["ProductionVariants"]
            variant = variants[0]
            model_doc = deployment["Models"][variant["ModelName"]]
            count = int(variant.get("InitialInstanceCount") or 1)
            client_config = (config.get("AsyncInferenceConfig") or {}).get("ClientConfig") or {}
            concurrency = int(
                client_config.get("MaxConcurrentInvocationsPerInstance") or os.cpu_count() or 1
            )
            runtime = self._runtime_factory(model_doc, self.objects, self.settings)
            slots = await self._start_instances(runtime, model_doc, count, concurrency)
        except ModelInvocationError as exc:
            reason = exc.message
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            reason = f"The endpoint deployment is incomplete: {exc!r}"
        else:
            await self._activate(name, generation, slots, concurrency, config, variants)
            return
        log.warning("endpoint %s failed to deploy: %s", name, reason)

        def failed(endpoint: dict[str, Any]) -> None:
            endpoint["FailureReason"] = reason[:MAX_REASON_LENGTH]
            endpoint["LastModifiedTime"] = self.clock.now()
            # An update that fails leaves the endpoint serving its old deployment.
            keep = status == "Updating" and name.lower() in self._runners
            endpoint["EndpointStatus"] = "InService" if keep else "Failed"

        await self._update_endpoint(name, generation, failed)

    async def _start_instances(
        self, runtime: ModelRuntime, model_doc: dict[str, Any], count: int, concurrency: int
    ) -> list[_Slot]:
        results = await asyncio.gather(
            *(runtime.start_instance(model_doc, concurrency) for _ in range(count)),
            return_exceptions=True,
        )
        started = [r for r in results if not isinstance(r, BaseException)]
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self._close_slots([_Slot(instance) for instance in started])
            error = errors[0]
            if isinstance(error, ModelInvocationError):
                raise error
            raise ModelInvocationError(f"The model could not be started: {error!r}")
        return [_Slot(instance) for instance in started]

    async def _activate(
        self,
        name: str,
        generation: int,
        slots: list[_Slot],
        concurrency: int,
        config: dict[str, Any],
        variants: list[dict[str, Any]],
    ) -> None:
        key = name.lower()
        if self._stopping:
            await self._close_slots(slots)
            return
        runner = _EndpointRunner(name, generation, slots, concurrency)
        old = self._runners.get(key)
        self._runners[key] = runner
        runner.dispatcher = asyncio.create_task(self._dispatch(runner), name=f"dispatch {name}")
        if old is not None:
            # Let the old deployment's in-flight invocations finish, then stop it.
            old.retired = True
            old.wakeup.set()
            task = asyncio.create_task(self._drain_and_close(old))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        count = len(slots)

        def in_service(endpoint: dict[str, Any]) -> None:
            endpoint["EndpointStatus"] = "InService"
            endpoint["EndpointConfigName"] = config.get("EndpointConfigName")
            endpoint["LastModifiedTime"] = self.clock.now()
            endpoint.pop("FailureReason", None)
            described = endpoint.get("ProductionVariants") or [
                {"VariantName": v.get("VariantName"), "CurrentWeight": 1.0, "DesiredWeight": 1.0}
                for v in variants
            ]
            for variant in described:
                variant["CurrentInstanceCount"] = count
                variant["DesiredInstanceCount"] = count
            endpoint["ProductionVariants"] = described

        await self._update_endpoint(name, generation, in_service)
        runner.wakeup.set()

    async def _update_endpoint(
        self, name: str, generation: int, change: Callable[[dict[str, Any]], None]
    ) -> None:
        """Apply ``change`` to the endpoint document, unless a newer generation replaced
        it; retries on concurrent updates (optimistic concurrency)."""
        for _ in range(50):
            resource = await self.metadata.get_resource(ResourceKind.ENDPOINT, name)
            if resource is None or int(resource.doc.get("_Generation", 0)) != generation:
                return
            doc = dict(resource.doc)
            change(doc)
            resource.doc = doc
            if await self.metadata.update_resource(resource):
                return
            await asyncio.sleep(0.01)
        log.error("could not update endpoint %s: too many concurrent changes", name)

    async def _teardown(self, runner: _EndpointRunner) -> None:
        """The endpoint was deleted: stop its instances, fail what is still queued."""
        runner.retired = True
        runner.wakeup.set()
        if runner.dispatcher is not None:
            await asyncio.wait([runner.dispatcher], timeout=10)
        await self._drain_and_close(runner)
        reason = f"Endpoint {runner.name} was deleted before the request ran."
        while True:
            now = self.clock.now()
            batch = await self.queue.lease(
                runner.name, self.owner, SWEEP_BATCH, self._lease_seconds, now
            )
            for inv in batch:
                await self._finish_with_failure(inv, InvocationStatus.FAILED, reason)
            if len(batch) < SWEEP_BATCH:
                return

    async def _drain_and_close(self, runner: _EndpointRunner) -> None:
        tasks = [task for _, task in runner.running.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=self._stop_grace)
        await self._close_slots(runner.slots)

    @staticmethod
    async def _close_slots(slots: list[_Slot]) -> None:
        for slot in slots:
            try:
                await slot.instance.close()
            except Exception:
                log.exception("closing a model instance failed")

    # ------------------------------------------------------------------ dispatch
    async def _dispatch(self, runner: _EndpointRunner) -> None:
        while not self._stopping and not runner.retired:
            # Clear before leasing: a wake or a finished invocation during the lease is kept.
            runner.wakeup.clear()
            free = runner.free
            if free > 0:
                try:
                    leased = await self.queue.lease(
                        runner.name, self.owner, free, self._lease_seconds, self.clock.now()
                    )
                except Exception:
                    log.exception("leasing for endpoint %s failed", runner.name)
                    leased = []
                for inv in leased:
                    runner.holding += 1
                    task = asyncio.create_task(self._run(runner, inv))
                    runner.running[inv.request_id] = (inv, task)
                if leased and len(leased) == free:
                    continue  # there may be more queued; the next round finds no free slot
            await self._wait(runner.wakeup, self._poll)

    @staticmethod
    async def _wait(event: asyncio.Event, timeout: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    async def _run(self, runner: _EndpointRunner, inv: Invocation) -> None:
        slot: _Slot | None = None

        def release_slot() -> None:
            nonlocal slot
            if slot is not None:
                slot.in_flight -= 1
                slot = None
                runner.model_slots.release()
                runner.holding -= 1
                runner.wakeup.set()

        try:
            try:
                await runner.model_slots.acquire()
            except BaseException:
                runner.holding -= 1
                raise
            slot = runner.pick_slot()
            slot.in_flight += 1
            if self._stopping or runner.retired:  # leased ahead, not started: back to the queue
                await self.queue.release(inv.request_id, self.owner, attempted=False)
                return
            runner.started.add(inv.request_id)
            await self._execute(slot.instance, inv, release_slot)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("invocation %s failed unexpectedly", inv.inference_id)
            with contextlib.suppress(Exception):
                await self._finish_with_failure(
                    inv, InvocationStatus.FAILED, f"Internal error while running the model: {exc}"
                )
        finally:
            release_slot()
            runner.running.pop(inv.request_id, None)
            runner.started.discard(inv.request_id)
            runner.wakeup.set()

    async def _execute(
        self, instance: ModelInstance, inv: Invocation, release_slot: Callable[[], None]
    ) -> None:
        """Run one invocation; ``release_slot`` is called once the model has answered,
        so the slot takes its next request while this one's result is written."""
        now = self.clock.now()
        if now > inv.expires_at:
            await self._finish_with_failure(inv, InvocationStatus.EXPIRED, _expired_reason(inv))
            return
        try:
            body = await self._open_input(inv)
        except InputUnavailable as exc:
            await self._finish_with_failure(inv, InvocationStatus.FAILED, str(exc))
            return
        request = ModelRequest(
            inference_id=inv.inference_id,
            body=body,
            content_type=inv.content_type,
            accept=inv.accept,
            custom_attributes=inv.custom_attributes,
        )
        timeout = inv.invocation_timeout_seconds
        try:
            try:
                response = await instance.invoke(request, float(timeout))
            finally:
                release_slot()
        except TimeoutError:
            reason = f"Model invocation timed out after {timeout} s (InvocationTimeoutSeconds)"
            await self._finish_with_failure(inv, InvocationStatus.FAILED, reason)
            return
        except InstanceCrashed as exc:
            if inv.attempts >= MAX_ATTEMPTS:
                reason = (
                    f"The model instance crashed {inv.attempts} times while running this "
                    f"request: {exc.message}"
                )
                await self._finish_with_failure(inv, InvocationStatus.FAILED, reason)
            else:
                log.warning("instance crashed running %s; re-queued", inv.inference_id)
                await self.queue.release(inv.request_id, self.owner)
            return
        except ModelInvocationError as exc:
            await self._finish_with_failure(inv, InvocationStatus.FAILED, exc.message)
            return
        except InputUnavailable as exc:  # raised while the input was being streamed
            await self._finish_with_failure(inv, InvocationStatus.FAILED, str(exc))
            return
        try:
            await self._write_output(inv, response)
        except (S3Error, ValueError) as exc:
            reason = f"Could not write the output to {inv.output_location}: {exc}"
            await self._finish_with_failure(inv, InvocationStatus.FAILED, reason)
            return
        await self.queue.finish(
            inv.request_id, self.owner, InvocationStatus.COMPLETED, None, self.clock.now()
        )

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
            _one(response.body),
            content_type=response.content_type,
            metadata=metadata,
        )

    async def _finish_with_failure(
        self, inv: Invocation, status: InvocationStatus, reason: str
    ) -> bool:
        """Write the failure object, then finish (the object first: a 202 promises it)."""
        from sagequeue.stores.objects import parse_s3_uri

        try:
            bucket, key = parse_s3_uri(inv.failure_location)
            await self.objects.put_object(
                bucket, key, _one(reason.encode("utf-8")), content_type="text/plain"
            )
        except (S3Error, ValueError) as exc:
            log.error("could not write failure object %s: %s", inv.failure_location, exc)
        return await self.queue.finish(
            inv.request_id, self.owner, status, reason[:MAX_REASON_LENGTH], self.clock.now()
        )

    # ------------------------------------------------------------------ background
    async def _renew(self) -> None:
        ids = [rid for runner in self._runners.values() for rid in runner.running]
        if ids:
            await self.queue.renew(ids, self.owner, self.clock.now() + self._lease_seconds)

    async def _sweep(self) -> None:
        now = self.clock.now()
        await self.queue.requeue_lapsed(now)
        while True:
            overdue = await self.queue.lease_overdue(
                self.owner, SWEEP_BATCH, self._lease_seconds, now
            )
            for inv in overdue:
                await self._finish_with_failure(inv, InvocationStatus.EXPIRED, _expired_reason(inv))
            if len(overdue) < SWEEP_BATCH:
                return


def _expired_reason(inv: Invocation) -> str:
    return f"Request expired: queued longer than RequestTTLSeconds ({inv.request_ttl_seconds} s)"


def _describe(exc: Exception) -> str:
    if isinstance(exc, S3Error):
        return f"{exc.code}: {exc.message}"
    return str(exc)


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _guarded(stream: AsyncIterator[bytes], location: str) -> AsyncIterator[bytes]:
    """Turn read errors in the middle of an input stream into InputUnavailable."""
    try:
        async for chunk in stream:
            yield chunk
    except (S3Error, OSError) as exc:
        raise InputUnavailable(f"Could not read the input from {location}: {exc}") from None

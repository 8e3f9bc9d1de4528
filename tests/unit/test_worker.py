"""The worker with the in-memory queue store, a local object store and real model
processes (the example echo model)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest

from sagequeue.config import Settings
from sagequeue.dispatch.doorbell import Doorbell, DoorbellChannel
from sagequeue.dispatch.worker import Worker
from sagequeue.domain.errors import S3Error
from sagequeue.ports import Invocation, InvocationStatus, Resource, ResourceKind
from sagequeue.stores.memory import MemoryStore
from sagequeue.stores.objects_local import LocalObjectStore

from .test_python_runtime_support import example_archives, make_archive, one_chunk

pytestmark = pytest.mark.anyio

BUCKET = "bucket"
CRASHING_MODEL = """
    import os

    def model_fn(model_dir):
        return None

    def transform_fn(model, data, content_type, accept):
        if data == "fail":
            raise RuntimeError("model says no")
        os._exit(7)
"""


class OutputCheckingStore(MemoryStore):
    """Records, at each finish, whether the invocation's result object already existed."""

    def __init__(self, objects: LocalObjectStore) -> None:
        super().__init__()
        self.objects = objects
        self.object_existed_at_finish: dict[str, bool] = {}

    async def finish(self, request_id, owner, status, failure_reason, now) -> bool:
        inv = self._invocations[request_id]
        location = inv.output_location if status == "Completed" else inv.failure_location
        key = location.removeprefix(f"s3://{BUCKET}/")
        try:
            await self.objects.head_object(BUCKET, key)
            self.object_existed_at_finish[request_id] = True
        except Exception:
            self.object_existed_at_finish[request_id] = False
        return await super().finish(request_id, owner, status, failure_reason, now)


class Env:
    def __init__(self, root: Path, archives: dict[str, bytes]) -> None:
        self.root = root
        self.archives = archives
        self.objects = LocalObjectStore(root / "objects")
        self.store = OutputCheckingStore(self.objects)
        self.settings = Settings(data_dir=root / "data")
        self.workers: list[Worker] = []

    async def open(self) -> None:
        await self.objects.open()
        await self.objects.ensure_bucket(BUCKET)
        for name, data in self.archives.items():
            await self.objects.put_object(BUCKET, f"{name}.tar.gz", one_chunk(data))

    async def worker(self, **options) -> Worker:
        options.setdefault("poll_seconds", 0.1)
        options.setdefault("placement_seconds", 0.1)
        options.setdefault("sweep_seconds", 0.2)
        options.setdefault("wakeups", DoorbellChannel(self.settings.data_dir))
        worker = Worker(self.store, self.objects, self.settings, **options)
        await worker.start()
        self.workers.append(worker)
        return worker

    async def create_endpoint(
        self, name: str, archive: str = "echo", instances: int = 1, concurrency: int = 2
    ) -> None:
        model = {
            "ModelName": f"{name}-model",
            "PrimaryContainer": {
                "Image": "sagequeue/python",
                "ModelDataUrl": f"s3://{BUCKET}/{archive}.tar.gz",
            },
        }
        config = {
            "EndpointConfigName": f"{name}-config",
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "ModelName": model["ModelName"],
                    "InitialInstanceCount": instances,
                }
            ],
            "AsyncInferenceConfig": {
                "ClientConfig": {"MaxConcurrentInvocationsPerInstance": concurrency},
                "OutputConfig": {"S3OutputPath": f"s3://{BUCKET}/out"},
            },
        }
        doc = {
            "EndpointName": name,
            "EndpointArn": f"arn:aws:sagemaker:us-east-1:000000000000:endpoint/{name}",
            "EndpointConfigName": config["EndpointConfigName"],
            "EndpointStatus": "Creating",
            "CreationTime": time.time(),
            "LastModifiedTime": time.time(),
            "_Generation": 1,
            "_Deployment": {"EndpointConfig": config, "Models": {model["ModelName"]: model}},
        }
        assert await self.store.create_resource(Resource(ResourceKind.ENDPOINT, name, doc))

    async def endpoint(self, name: str, until: tuple[str, ...] = ("InService", "Failed")) -> dict:
        for _ in range(600):
            resource = await self.store.get_resource(ResourceKind.ENDPOINT, name)
            if resource is not None and resource.doc["EndpointStatus"] in until:
                return resource.doc
            await asyncio.sleep(0.05)
        raise AssertionError(f"endpoint {name} never reached {until}")

    async def enqueue(
        self, endpoint: str, body: bytes | None = b'{"x": 1}', wake: bool = True, **fields
    ) -> Invocation:
        request_id = str(uuid.uuid4())
        fields.setdefault("content_type", "application/json")
        fields.setdefault("variant_name", "AllTraffic")
        inv = Invocation(
            request_id=request_id,
            inference_id=fields.pop("inference_id", request_id),
            endpoint_name=endpoint,
            output_location=f"s3://{BUCKET}/out/{request_id}.out",
            failure_location=f"s3://{BUCKET}/failures/{request_id}-error.out",
            inline_body=body,
            enqueued_at=fields.pop("enqueued_at", time.time()),
            **fields,
        )
        await self.store.enqueue(inv)
        for worker in self.workers if wake else []:
            worker.wake(endpoint)
        return inv

    async def final(self, inv: Invocation, timeout: float = 60) -> Invocation:
        for _ in range(int(timeout / 0.05)):
            current = await self.store.get(inv.endpoint_name, inv.inference_id)
            if current is not None and current.status.is_final:
                return current
            await asyncio.sleep(0.05)
        raise AssertionError(f"{inv.inference_id} did not finish")

    async def read(self, location: str) -> tuple[bytes, str | None]:
        info, stream = await self.objects.get_object(
            BUCKET, location.removeprefix(f"s3://{BUCKET}/")
        )
        return b"".join([chunk async for chunk in stream]), info.content_type

    async def close(self) -> None:
        for worker in self.workers:
            await worker.stop()
        await self.objects.close()


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    built = example_archives(tmp_path_factory.mktemp("examples-build"))
    return {
        **built,
        "crashing": make_archive({"code/inference.py": CRASHING_MODEL}),
        "broken": b"not a tarball",
    }


@pytest.fixture
async def env(tmp_path: Path, archives: dict[str, bytes]):
    environment = Env(tmp_path, archives)
    await environment.open()
    yield environment
    await environment.close()


async def test_creating_endpoint_becomes_in_service_with_its_instances(env) -> None:
    await env.create_endpoint("echo", instances=2)
    await env.worker()
    doc = await env.endpoint("echo")
    assert doc["EndpointStatus"] == "InService"
    assert "FailureReason" not in doc
    instances = await env.store.list_instances("echo")
    assert [(i.slot, i.state) for i in instances] == [(0, "Running"), (1, "Running")]


async def test_endpoint_whose_model_cannot_load_fails_with_the_reason(env) -> None:
    await env.create_endpoint("bad", archive="broken")
    await env.worker()
    doc = await env.endpoint("bad")
    assert doc["EndpointStatus"] == "Failed"
    assert "not a valid model.tar.gz" in doc["FailureReason"]


async def test_invocation_completes_with_output_written_before_finish(env) -> None:
    await env.create_endpoint("echo")
    await env.worker()
    await env.endpoint("echo")
    inv = await env.enqueue("echo", b'{"hello": "world"}')
    done = await env.final(inv)
    assert done.status is InvocationStatus.COMPLETED
    assert await env.read(inv.output_location) == (b'{"hello": "world"}', "application/json")
    assert env.store.object_existed_at_finish[inv.request_id] is True


async def test_input_location_is_streamed_from_the_object_store(env) -> None:
    await env.create_endpoint("echo")
    await env.worker()
    await env.endpoint("echo")
    await env.objects.put_object(BUCKET, "in/data.csv", one_chunk(b"1,2,3\n"))
    inv = await env.enqueue(
        "echo", None, input_location=f"s3://{BUCKET}/in/data.csv", content_type="text/csv"
    )
    assert (await env.final(inv)).status is InvocationStatus.COMPLETED
    assert await env.read(inv.output_location) == (b"1,2,3\n", "text/csv")


async def test_missing_input_object_fails_with_a_reason(env) -> None:
    await env.create_endpoint("echo")
    await env.worker()
    await env.endpoint("echo")
    inv = await env.enqueue("echo", None, input_location=f"s3://{BUCKET}/in/missing")
    done = await env.final(inv)
    assert done.status is InvocationStatus.FAILED
    assert "NoSuchKey" in done.failure_reason


async def test_https_input_from_a_host_not_allowed_fails(env) -> None:
    await env.create_endpoint("echo")
    await env.worker()
    await env.endpoint("echo")
    inv = await env.enqueue("echo", None, input_location="https://example.com/data.json")
    done = await env.final(inv)
    assert done.status is InvocationStatus.FAILED
    assert "not in the https input allow-list" in done.failure_reason


async def test_model_error_writes_the_failure_object_then_fails(env) -> None:
    await env.create_endpoint("crashy", archive="crashing")
    await env.worker()
    await env.endpoint("crashy")
    inv = await env.enqueue("crashy", b"fail", content_type="text/csv")
    done = await env.final(inv)
    assert done.status is InvocationStatus.FAILED
    assert done.failure_reason == "RuntimeError: model says no"
    assert await env.read(inv.failure_location) == (b"RuntimeError: model says no", "text/plain")
    assert env.store.object_existed_at_finish[inv.request_id] is True


async def test_invocation_past_its_timeout_fails(env) -> None:
    await env.create_endpoint("echo")
    await env.worker()
    await env.endpoint("echo")
    inv = await env.enqueue(
        "echo", b"x", custom_attributes="sleep_ms=3000", invocation_timeout_seconds=1
    )
    done = await env.final(inv)
    assert done.status is InvocationStatus.FAILED
    assert "timed out after 1 s" in done.failure_reason


async def test_instance_crashing_three_times_fails_the_request(env) -> None:
    await env.create_endpoint("crashy", archive="crashing")
    await env.worker()
    await env.endpoint("crashy")
    inv = await env.enqueue("crashy", b"crash", content_type="text/csv")
    done = await env.final(inv, timeout=90)
    assert done.status is InvocationStatus.FAILED
    assert done.attempts == 3
    assert "crashed 3 times" in done.failure_reason


async def test_request_queued_past_its_ttl_expires_without_capacity(env) -> None:
    await env.worker()
    inv = await env.enqueue(
        "no-such-endpoint", enqueued_at=time.time() - 120, request_ttl_seconds=60
    )
    done = await env.final(inv)
    assert done.status is InvocationStatus.EXPIRED
    body, _ = await env.read(inv.failure_location)
    assert body == b"Request expired: queued longer than RequestTTLSeconds (60 s)"


async def test_concurrent_invocations_share_one_instance(env) -> None:
    await env.create_endpoint("echo", concurrency=3)
    await env.worker()
    await env.endpoint("echo")
    invs = [await env.enqueue("echo", b"x", custom_attributes="sleep_ms=300") for _ in range(6)]
    done = [await env.final(inv) for inv in invs]
    assert {d.status for d in done} == {InvocationStatus.COMPLETED}


async def test_graceful_stop_releases_unfinished_invocations(env) -> None:
    await env.create_endpoint("echo")
    worker = await env.worker(stop_grace_seconds=0.3)
    await env.endpoint("echo")
    inv = await env.enqueue("echo", b"x", custom_attributes="sleep_ms=5000")
    for _ in range(200):
        current = await env.store.get("echo", inv.inference_id)
        if current.status is InvocationStatus.IN_PROGRESS:
            break
        await asyncio.sleep(0.05)
    await worker.stop()
    env.workers.remove(worker)
    current = await env.store.get("echo", inv.inference_id)
    assert current.status is InvocationStatus.QUEUED


async def test_graceful_stop_counts_an_attempt_only_for_what_a_model_ran(env) -> None:
    """One slot: the first request runs, the second is leased ahead and waits. Both go
    back to the queue on stop; only the first keeps the attempt its lease counted."""
    await env.create_endpoint("echo", concurrency=1)
    worker = await env.worker(stop_grace_seconds=0.3)
    await env.endpoint("echo")
    running = await env.enqueue("echo", b"x", custom_attributes="sleep_ms=5000")
    waiting = await env.enqueue("echo", b"y")
    for _ in range(200):
        states = [(await env.store.get("echo", i.inference_id)).status for i in (running, waiting)]
        if states == [InvocationStatus.IN_PROGRESS] * 2:
            break
        await asyncio.sleep(0.05)
    await worker.stop()
    env.workers.remove(worker)
    ran = await env.store.get("echo", running.inference_id)
    leased_ahead = await env.store.get("echo", waiting.inference_id)
    assert (ran.status, ran.attempts) == (InvocationStatus.QUEUED, 1)
    assert (leased_ahead.status, leased_ahead.attempts) == (InvocationStatus.QUEUED, 0)


async def test_deleted_endpoint_fails_its_queued_requests(env) -> None:
    await env.create_endpoint("echo", concurrency=1)
    await env.worker()
    await env.endpoint("echo")
    running = await env.enqueue("echo", b"x", custom_attributes="sleep_ms=1000")
    queued = await env.enqueue("echo", b"y")
    assert await env.store.delete_resource(ResourceKind.ENDPOINT, "echo")
    assert (await env.final(running)).status is InvocationStatus.COMPLETED
    done = await env.final(queued)
    assert done.status is InvocationStatus.FAILED
    assert "Endpoint echo was deleted" in done.failure_reason


async def test_doorbell_ring_wakes_the_worker_of_the_data_dir(env) -> None:
    # A long poll interval: only the doorbell can make this invocation run promptly.
    await env.create_endpoint("echo")
    await env.worker(poll_seconds=3600)
    await env.endpoint("echo")
    await asyncio.sleep(0.2)  # let the dispatcher settle into its wait
    inv = await env.enqueue("echo", b"rung", wake=False)
    Doorbell(env.settings.data_dir).ring("echo")
    done = await env.final(inv, timeout=10)
    assert done.status is InvocationStatus.COMPLETED


async def test_failed_update_keeps_serving_the_old_deployment(env) -> None:
    await env.create_endpoint("echo")
    await env.worker()
    await env.endpoint("echo")
    resource = await env.store.get_resource(ResourceKind.ENDPOINT, "echo")
    doc = dict(resource.doc)
    deployment = doc["_Deployment"]
    model = deployment["Models"]["echo-model"]
    model["PrimaryContainer"]["ModelDataUrl"] = f"s3://{BUCKET}/broken.tar.gz"
    doc.update(EndpointStatus="Updating", _Generation=2, _Deployment=deployment)
    resource.doc = doc
    assert await env.store.update_resource(resource)
    for _ in range(600):
        current = (await env.store.get_resource(ResourceKind.ENDPOINT, "echo")).doc
        if "FailureReason" in current:
            break
        await asyncio.sleep(0.05)
    assert current["EndpointStatus"] == "InService"
    assert "not a valid model.tar.gz" in current["FailureReason"]
    inv = await env.enqueue("echo", b"still served")
    assert (await env.final(inv)).status is InvocationStatus.COMPLETED


async def test_restarted_worker_starts_in_service_endpoints_again(env) -> None:
    await env.create_endpoint("echo")
    first = await env.worker()
    await env.endpoint("echo")
    await first.stop()
    env.workers.remove(first)
    inv = await env.enqueue("echo", b"after restart")
    await env.worker()
    assert (await env.final(inv)).status is InvocationStatus.COMPLETED


async def test_slot_takes_the_next_request_while_a_result_is_being_written(env) -> None:
    await env.create_endpoint("echo", instances=1, concurrency=1)
    await env.worker()
    await env.endpoint("echo")
    first_write_started = asyncio.Event()
    let_first_write_finish = asyncio.Event()
    put_object = env.objects.put_object

    async def slow_first_output(bucket, key, body, **kwargs):
        if key.startswith("out/") and not first_write_started.is_set():
            first_write_started.set()
            await let_first_write_finish.wait()
        return await put_object(bucket, key, body, **kwargs)

    env.objects.put_object = slow_first_output
    first = await env.enqueue("echo", b'{"n": 1}')
    await asyncio.wait_for(first_write_started.wait(), 30)
    second = await env.enqueue("echo", b'{"n": 2}')
    # The only model slot is free again although the first result is not written yet.
    done = await env.final(second)
    assert done.status is InvocationStatus.COMPLETED
    assert (await env.store.get("echo", first.inference_id)).status is InvocationStatus.IN_PROGRESS
    let_first_write_finish.set()
    assert (await env.final(first)).status is InvocationStatus.COMPLETED
    assert await env.read(first.output_location) == (b'{"n": 1}', "application/json")


class Outage:
    """Makes the object store's reads or writes fail with 503 while ``down`` (or for the
    first ``failures`` calls), as an S3 service that is restarting does."""

    def __init__(self, objects: LocalObjectStore, method: str, prefix: str) -> None:
        self.original = getattr(objects, method)
        self.prefix = prefix
        self.down = False
        self.failures = 0
        self.calls = 0
        setattr(objects, method, self)

    async def __call__(self, bucket, key, *args, **kwargs):
        if key.startswith(self.prefix):
            self.calls += 1
            if self.down or self.failures > 0:
                self.failures -= 1
                raise S3Error("Service Unavailable", code="ServiceUnavailable", status=503)
        return await self.original(bucket, key, *args, **kwargs)


async def test_output_write_failing_for_a_while_is_retried_and_completes(env) -> None:
    await env.create_endpoint("echo")
    await env.worker()
    await env.endpoint("echo")
    outage = Outage(env.objects, "put_object", "out/")
    outage.failures = 2
    inv = await env.enqueue("echo", b'{"n": 1}')
    assert (await env.final(inv)).status is InvocationStatus.COMPLETED
    assert outage.calls == 3
    assert await env.read(inv.output_location) == (b'{"n": 1}', "application/json")


async def test_input_unreadable_past_the_invocation_timeout_fails_with_the_reason(env) -> None:
    await env.create_endpoint("echo")
    await env.worker()
    await env.endpoint("echo")
    await env.objects.put_object(BUCKET, "in/data.json", one_chunk(b"{}"))
    outage = Outage(env.objects, "get_object", "in/")
    outage.down = True
    inv = await env.enqueue(
        "echo", None, input_location=f"s3://{BUCKET}/in/data.json", invocation_timeout_seconds=1
    )
    done = await env.final(inv)
    assert done.status is InvocationStatus.FAILED
    assert done.failure_reason.startswith(f"Could not read the input from s3://{BUCKET}/in/")
    assert "ServiceUnavailable" in done.failure_reason
    assert outage.calls > 1


async def test_output_unwritable_past_the_invocation_timeout_fails_with_the_reason(env) -> None:
    await env.create_endpoint("echo")
    await env.worker()
    await env.endpoint("echo")
    outage = Outage(env.objects, "put_object", "out/")
    outage.down = True
    inv = await env.enqueue("echo", b"{}", invocation_timeout_seconds=1)
    done = await env.final(inv)
    assert done.status is InvocationStatus.FAILED
    assert done.failure_reason.startswith(f"Could not write the output to {inv.output_location}")
    assert (await env.read(inv.failure_location))[0] == done.failure_reason.encode()


async def test_request_whose_failure_object_cannot_be_written_ends_once_the_store_is_back(
    env,
) -> None:
    env.settings.failure_write_timeout = 0.3
    await env.create_endpoint("crashy", archive="crashing")
    await env.worker()
    await env.endpoint("crashy")
    outage = Outage(env.objects, "put_object", "failures/")
    outage.down = True
    inv = await env.enqueue("crashy", b"fail", content_type="text/csv")
    for _ in range(200):  # it runs, cannot end, and goes back to the queue: again and again
        if outage.calls >= 4:
            break
        await asyncio.sleep(0.05)
    current = await env.store.get("crashy", inv.inference_id)
    assert not current.status.is_final
    outage.down = False
    done = await env.final(inv)
    assert done.status is InvocationStatus.FAILED
    assert await env.read(inv.failure_location) == (b"RuntimeError: model says no", "text/plain")

"""A webhook receiver run by the tests (a real HTTP server on 127.0.0.1), and helpers to
deploy endpoints whose NotificationConfig names it."""

from __future__ import annotations

import http.server
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from acceptance.helpers import MODELS, ROLE_ARN, model_tarball
from conftest import free_port


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    received_at: float

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """Records every POST. A path under ``/flaky-N/`` answers 500 to the first N
    deliveries of each message (by its ``webhook-id``), then 200."""

    port: int
    deliveries: list[Delivery] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def record(self, delivery: Delivery) -> int:
        with self.lock:
            key = f"{delivery.path} {delivery.headers.get('webhook-id')}"
            self.attempts[key] = self.attempts.get(key, 0) + 1
            attempt = self.attempts[key]
            segment = delivery.path.split("/")[1] if delivery.path.count("/") > 1 else ""
            if segment.startswith("flaky-") and attempt <= int(segment.removeprefix("flaky-")):
                return 500
            self.deliveries.append(delivery)
            return 200

    def received(self, path: str, timeout: float = 30.0, count: int = 1) -> list[Delivery]:
        """The deliveries accepted on ``path``, waiting until there are ``count``."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                found = [d for d in self.deliveries if d.path == path]
            if len(found) >= count or time.monotonic() > deadline:
                assert len(found) >= count, f"{path}: {len(found)} of {count} deliveries"
                return found
            time.sleep(0.02)

    def attempts_on(self, path: str) -> int:
        with self.lock:
            return sum(n for key, n in self.attempts.items() if key.startswith(path + " "))


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    state = WebhookReceiver(free_port())

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            delivery = Delivery(
                self.path,
                {name.lower(): value for name, value in self.headers.items()},
                self.rfile.read(length),
                time.time(),
            )
            status = state.record(delivery)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", state.port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def deploy_notifying(
    server,
    endpoint_name: str,
    notification: dict[str, Any],
    *,
    bucket: str = "notify",
    instances: int = 1,
    concurrency: int = 1,
    wait: bool = True,
) -> dict[str, str]:
    """The ``behave`` test model behind an endpoint whose config has ``notification``;
    returns its output and failure paths."""
    s3 = server.client("s3")
    sagemaker = server.client("sagemaker")
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    key = f"models/{endpoint_name}/model.tar.gz"
    s3.put_object(Bucket=bucket, Key=key, Body=model_tarball(MODELS / "behave"))
    suffix = uuid.uuid4().hex[:8]
    model_name = f"{endpoint_name}-model-{suffix}"
    sagemaker.create_model(
        ModelName=model_name,
        ExecutionRoleArn=ROLE_ARN,
        PrimaryContainer={"Image": "sagequeue/python", "ModelDataUrl": f"s3://{bucket}/{key}"},
    )
    paths = {
        "S3OutputPath": f"s3://{bucket}/output/{endpoint_name}",
        "S3FailurePath": f"s3://{bucket}/failures/{endpoint_name}",
    }
    sagemaker.create_endpoint_config(
        EndpointConfigName=f"{endpoint_name}-config-{suffix}",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": model_name,
                "InitialInstanceCount": instances,
                "InstanceType": "ml.m5.large",
            }
        ],
        AsyncInferenceConfig={
            "OutputConfig": {**paths, "NotificationConfig": notification},
            "ClientConfig": {"MaxConcurrentInvocationsPerInstance": concurrency},
        },
    )
    sagemaker.create_endpoint(
        EndpointName=endpoint_name, EndpointConfigName=f"{endpoint_name}-config-{suffix}"
    )
    if wait:
        sagemaker.get_waiter("endpoint_in_service").wait(
            EndpointName=endpoint_name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 300}
        )
    return paths

"""At least once across a crash: a worker killed between the finish's commit and the
delivery leaves the notification in the store's outbox, and it is delivered after the
restart (the fault-injection point ``after-finish-before-notify``, armed only by tests)."""

from __future__ import annotations

import json
import time

import pytest

from acceptance.helpers import wait_for_status
from sagequeue.faults import ENVIRONMENT_VARIABLE

from .conftest import WebhookReceiver, deploy_notifying


@pytest.fixture(params=["sqlite", "postgres"])
def store_args(request: pytest.FixtureRequest) -> list[str]:
    if request.param == "sqlite":
        return []
    return ["--database", request.getfixturevalue("postgres_url")]


def test_a_worker_killed_after_the_finish_delivers_after_restart(
    server_factory, receiver: WebhookReceiver, store_args: list[str]
) -> None:
    path = f"/crash-{len(store_args)}/success"
    topic = receiver.url(path)
    doomed = server_factory(*store_args, env={ENVIRONMENT_VARIABLE: "after-finish-before-notify"})
    deploy_notifying(doomed, "crash", {"SuccessTopic": topic})
    response = doomed.client("sagemaker-runtime").invoke_endpoint_async(
        EndpointName="crash",
        Body=json.dumps({"action": "echo", "value": "kept"}).encode(),
        ContentType="application/json",
    )
    assert doomed.process is not None
    doomed.process.wait(30)  # killed itself right after the finish committed
    assert "fault injected at after-finish-before-notify" in doomed.log_text()
    assert receiver.attempts_on(path) == 0

    restarted = server_factory(*store_args, data_dir=doomed.data_dir)

    (delivery,) = receiver.received(path, timeout=30)
    assert delivery.json["inferenceId"] == response["InferenceId"]
    assert delivery.json["invocationStatus"] == "Completed"
    assert wait_for_status(restarted, "crash", response["InferenceId"])["Status"] == "Completed"
    time.sleep(0.5)
    assert receiver.attempts_on(path) == 1  # delivered once, not re-run

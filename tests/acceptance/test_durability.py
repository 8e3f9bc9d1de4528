"""No request that got a 202 is lost: crashes, restarts, expiry."""

from __future__ import annotations

import json
import time

import pytest

from acceptance.helpers import deploy, invocation_status, wait_for_object, wait_for_status

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _invoke(runtime, endpoint: str, payload: dict, **kwargs) -> dict:
    return runtime.invoke_endpoint_async(
        EndpointName=endpoint,
        Body=json.dumps(payload).encode(),
        ContentType="application/json",
        **kwargs,
    )


def test_kill_9_with_queued_and_running_requests_loses_none(server_factory, tmp_path):
    server = server_factory()
    deploy(server, "crashy", instances=1, concurrency=2)
    runtime = server.client("sagemaker-runtime")
    executions = tmp_path / "executions.log"
    ids = [f"crash-{i}" for i in range(12)]
    locations = {}
    for inference_id in ids:
        payload = {
            "action": "log",
            "path": str(executions),
            "tag": inference_id,
            "seconds": 0.4,
            "value": inference_id,
        }
        locations[inference_id] = _invoke(runtime, "crashy", payload, InferenceId=inference_id)
    # Wait until work is under way: some done, some running, the rest queued.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        states = [invocation_status(server, "crashy", i)["Status"] for i in ids]
        if "Completed" in states and "Queued" in states:
            break
        time.sleep(0.05)
    assert "Queued" in states, states
    server.kill9()

    restarted = server_factory(data_dir=server.data_dir)
    s3 = restarted.client("s3")
    for inference_id in ids:
        status = wait_for_status(restarted, "crashy", inference_id, timeout=120)
        assert status["Status"] == "Completed", status
        body, _ = wait_for_object(s3, locations[inference_id]["OutputLocation"])
        assert json.loads(body) == {"echo": inference_id}
    ran = executions.read_text().split()
    assert set(ran) == set(ids)
    # Only requests interrupted by the crash may have run twice.
    assert len(ran) <= len(ids) + 2


def test_sigterm_finishes_running_requests_and_keeps_queued_ones(server_factory):
    server = server_factory()
    deploy(server, "graceful", instances=1, concurrency=1)
    runtime = server.client("sagemaker-runtime")
    ids = [f"term-{i}" for i in range(4)]
    for inference_id in ids:
        _invoke(
            runtime,
            "graceful",
            {"action": "sleep", "seconds": 1, "value": inference_id},
            InferenceId=inference_id,
        )
    deadline = time.monotonic() + 30
    while invocation_status(server, "graceful", ids[0])["Status"] != "InProgress":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert server.stop() == 0
    restarted = server_factory(data_dir=server.data_dir)
    first = invocation_status(restarted, "graceful", ids[0])
    assert first["Status"] == "Completed"  # it finished during the graceful stop
    for inference_id in ids:
        assert wait_for_status(restarted, "graceful", inference_id)["Status"] == "Completed"


def test_request_queued_past_its_ttl_expires_with_failure_object(server_factory):
    server = server_factory()
    deploy(server, "busy", instances=1, concurrency=1)
    runtime = server.client("sagemaker-runtime")
    s3 = server.client("s3")
    _invoke(runtime, "busy", {"action": "sleep", "seconds": 5}, InvocationTimeoutSeconds=120)
    # The one slot is busy and one more request is leased ahead of it: the next waits queued.
    _invoke(runtime, "busy", {"action": "echo", "value": 0})
    time.sleep(0.5)
    waiting = _invoke(runtime, "busy", {"action": "echo", "value": 1}, RequestTTLSeconds=60)
    _as_if_queued_for(server, waiting["InferenceId"], seconds=61)
    status = wait_for_status(server, "busy", waiting["InferenceId"], timeout=30)
    assert status["Status"] == "Expired"
    body, _ = wait_for_object(s3, waiting["FailureLocation"])
    assert b"expired" in body.lower()


def _as_if_queued_for(server, inference_id: str, seconds: float) -> None:
    """Move a queued request's enqueue time back in the store, as if ``seconds`` had
    passed: RequestTTLSeconds is at least 60 s, too long to wait for in a test."""
    import sqlite3

    with sqlite3.connect(server.data_dir / "sagequeue.db") as conn:
        changed = conn.execute(
            "UPDATE invocations SET enqueued_at = enqueued_at - ?, expires_at = expires_at - ? "
            "WHERE inference_id = ? AND status = 'Queued'",
            (seconds, seconds, inference_id),
        ).rowcount
    assert changed == 1

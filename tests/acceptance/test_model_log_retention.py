"""Model logs are bounded: a server keeps them --model-log-retention and at most
--model-log-max-bytes of text, oldest first."""

from __future__ import annotations

import json

from conftest import wait_until

from .helpers import deploy, wait_for_status

GROUP = "/aws/sagemaker/Endpoints/short-lived"
MAX_BYTES = 4000
# Long enough for the lines to be printed and trimmed before any is this old.
RETENTION_SECONDS = 8


def stored_bytes(logs) -> int | None:
    groups = logs.describe_log_groups(logGroupNamePrefix=GROUP)["logGroups"]
    return groups[0]["storedBytes"] if groups else None


def test_logs_past_the_size_bound_then_the_age_bound_are_deleted(server_factory) -> None:
    server = server_factory(
        "--model-log-retention", f"{RETENTION_SECONDS}s", "--model-log-max-bytes", str(MAX_BYTES)
    )
    deploy(server, "short-lived")
    runtime = server.client("sagemaker-runtime")
    logs = server.client("logs")
    for n in range(4):  # each prints two lines of about 1,500 bytes
        inference_id = runtime.invoke_endpoint_async(
            EndpointName="short-lived",
            ContentType="application/json",
            Body=json.dumps({"action": "print", "text": f"{n}" * 1500}).encode(),
        )["InferenceId"]
        wait_for_status(server, "short-lived", inference_id)

    # Once the last request's lines are in (a worker ships every half second), about
    # 12,000 bytes were written, and a retention round trims them to the bound.
    wait_until(
        lambda: logs.filter_log_events(
            logGroupName=GROUP, filterPattern=f'"Inference {inference_id}: completed"'
        )["events"],
        "the last request's lines were not written",
        timeout=20.0,
    )
    wait_until(
        lambda: 0 < (stored_bytes(logs) or 0) <= MAX_BYTES,
        "the logs were not trimmed",
        timeout=20.0,
    )
    kept = [
        e["message"][8]
        for e in logs.filter_log_events(logGroupName=GROUP, filterPattern='"stdout: "')["events"]
    ]
    assert kept and kept == sorted(kept) and kept[-1] == "3"  # the newest stay

    # Past the retention every line is gone, and with them the streams and the group.
    wait_until(
        lambda: stored_bytes(logs) is None,
        "the logs outlived the retention",
        timeout=RETENTION_SECONDS + 15,
    )

"""A model's logs as SageMaker users read them: the CloudWatch Logs API of a real server,
with the AWS CLI's ``aws logs tail`` (a CLI v2 command) and boto3.

The endpoint's log group is ``/aws/sagemaker/Endpoints/<name>``; each instance has a
stream ``<variant>/<instance-id>`` with the model's stdout and stderr, and
``<variant>/<instance-id>/data-log`` with sagequeue's lines about each request."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError

from .helpers import deploy, wait_for_status

ENDPOINT = "logged"
GROUP = f"/aws/sagemaker/Endpoints/{ENDPOINT}"
MODEL_STREAM = re.compile(r"AllTraffic/i-[0-9a-f]{17}")
# Lines reach the store within a flush (0.5 s); this is the most a test waits for them.
SHIPPING_SECONDS = 15.0


def aws_cli_v2() -> str:
    """An AWS CLI v2 (``aws logs tail`` is not in v1, which the venv has): Debian's
    ``awscli`` package (``make test`` installs it), or $SAGEQUEUE_AWS_CLI_V2."""
    candidates = [os.environ.get("SAGEQUEUE_AWS_CLI_V2"), "/usr/local/bin/aws", "/usr/bin/aws"]
    candidates.append(shutil.which("aws"))
    for candidate in candidates:
        if not candidate or not os.path.exists(candidate):
            continue
        version = subprocess.run([candidate, "--version"], capture_output=True, text=True)
        if version.stdout.startswith("aws-cli/2."):
            return candidate
    pytest.skip("no AWS CLI v2 (apt-get install awscli, or set SAGEQUEUE_AWS_CLI_V2)")


def cli_v2_env(server) -> dict[str, str]:
    """Only what the AWS CLI v2 needs: it runs Debian's Python, which must not see this
    test process's Python settings or any other AWS CLI's data path."""
    aws = {k: v for k, v in server.aws_env().items() if k.startswith("AWS_")}
    aws.pop("AWS_DATA_PATH", None)
    return {
        **aws,
        "PATH": os.defpath,
        "HOME": str(server.data_dir),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",  # `tail --follow` prints as it polls, into a pipe
    }


@pytest.fixture(scope="module")
def endpoint(shared_server) -> str:
    deploy(shared_server, ENDPOINT, concurrency=2)
    return ENDPOINT


@pytest.fixture(scope="module")
def logs(shared_server):
    return shared_server.client("logs")


def invoke(server, request: dict) -> str:
    runtime = server.client("sagemaker-runtime")
    inference_id = runtime.invoke_endpoint_async(
        EndpointName=ENDPOINT, ContentType="application/json", Body=json.dumps(request).encode()
    )["InferenceId"]
    wait_for_status(server, ENDPOINT, inference_id)
    return inference_id


def filtered(logs, pattern: str, want: int = 1) -> list[dict]:
    """FilterLogEvents over every page, waiting until ``want`` events match."""
    deadline = time.monotonic() + SHIPPING_SECONDS
    while True:
        events = [
            event
            for page in logs.get_paginator("filter_log_events").paginate(
                logGroupName=GROUP, filterPattern=pattern
            )
            for event in page["events"]
        ]
        if len(events) >= want or time.monotonic() > deadline:
            return events
        time.sleep(0.1)


def test_aws_logs_tail_shows_a_models_print_and_sagequeues_lines(
    shared_server, endpoint: str, logs
) -> None:
    text = f"tail-{uuid.uuid4().hex[:8]}"
    inference_id = invoke(shared_server, {"action": "print", "text": text})
    filtered(logs, f'"{inference_id}: completed"')

    tailed = subprocess.run(
        [aws_cli_v2(), "--endpoint-url", shared_server.url, "logs", "tail", GROUP],
        env=cli_v2_env(shared_server),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert tailed.returncode == 0, tailed.stderr
    lines = tailed.stdout.splitlines()
    model_lines = [line for line in lines if f"stdout: {text}" in line or f"stderr: {text}" in line]
    assert len(model_lines) == 2
    assert all(MODEL_STREAM.search(line) and "/data-log" not in line for line in model_lines)
    mine = [line for line in lines if f"Inference {inference_id}: " in line]
    assert [re.search(r": (accepted|started|completed)", line)[1] for line in mine] == [
        "accepted",
        "started",
        "completed",
    ]
    assert all("/data-log " in line for line in mine)
    assert re.search(r"completed in \d+ ms \(model \d+ ms\)", mine[-1])


def test_aws_logs_tail_follow_shows_lines_as_they_come(shared_server, endpoint: str) -> None:
    follower = subprocess.Popen(
        [
            aws_cli_v2(),
            "--endpoint-url",
            shared_server.url,
            "logs",
            "tail",
            GROUP,
            "--follow",
            "--format",
            "short",
        ],
        env=cli_v2_env(shared_server),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The lines already there (the instance's start at least) come with the first
        # poll; what follows comes with a later one (the CLI polls every 5 s).
        lines = LineReader(follower)
        assert lines.read_until({"Instance i-"}, timeout=30)
        text = f"follow-{uuid.uuid4().hex[:8]}"
        inference_id = invoke(shared_server, {"action": "print", "text": text})
        wanted = {f"stdout: {text}", f"Inference {inference_id}: completed"}
        seen = lines.read_until(wanted, timeout=30)
        assert wanted <= seen
    finally:
        follower.terminate()
        follower.wait(10)


class LineReader:
    """A process's output lines, read on a thread as they come."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.put(line)

    def read_until(self, wanted: set[str], timeout: float) -> set[str]:
        """The wanted fragments found in the lines that come within ``timeout``."""
        found: set[str] = set()
        deadline = time.monotonic() + timeout
        while found != wanted and (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            found |= {fragment for fragment in wanted if fragment in line}
        return found


def test_filter_log_events_finds_one_inferences_lines(shared_server, endpoint: str, logs) -> None:
    inference_id = invoke(shared_server, {"action": "echo", "value": 1})
    events = filtered(logs, f'"{inference_id}"', want=3)
    assert [e["message"].split(": ")[1].split(" ")[0] for e in events] == [
        "accepted",
        "started",
        "completed",
    ]
    assert len({e["logStreamName"] for e in events}) == 1
    assert events[0]["logStreamName"].endswith("/data-log")
    assert len({e["eventId"] for e in events}) == 3
    assert [e["timestamp"] for e in events] == sorted(e["timestamp"] for e in events)


def test_a_crashing_models_traceback_is_in_its_instance_stream(
    shared_server, endpoint: str, logs
) -> None:
    message = f"kaboom-{uuid.uuid4().hex[:8]}"
    invoke(shared_server, {"action": "raise", "message": message})
    events = filtered(logs, f'"ValueError: {message}"', want=2)
    # sagequeue's line says the request failed, and why ...
    (failed,) = [e for e in events if e["logStreamName"].endswith("/data-log")]
    assert re.search(rf"failed after \d+ ms: ValueError: {message}$", failed["message"])
    # ... and the model's own stream has the traceback.
    (last,) = [e for e in events if MODEL_STREAM.fullmatch(e["logStreamName"])]
    stream = last["logStreamName"]
    lines = [e["message"] for e in stream_events(logs, stream)]
    end = lines.index(f"ValueError: {message}")
    start = max(i for i in range(end) if lines[i] == "Traceback (most recent call last):")
    traceback = lines[start : end + 1]
    assert any("inference.py" in line and "in transform_fn" in line for line in traceback)
    assert 'raise ValueError(request.get("message", "boom"))' in "\n".join(traceback)


def test_a_model_that_crashes_its_process_leaves_its_stack_in_its_stream(
    shared_server, endpoint: str, logs
) -> None:
    status = wait_for_status(
        shared_server,
        ENDPOINT,
        shared_server.client("sagemaker-runtime").invoke_endpoint_async(
            EndpointName=ENDPOINT, ContentType="application/json", Body=b'{"action": "segfault"}'
        )["InferenceId"],
    )
    assert status["Status"] == "Failed"
    assert "exited with code -11 (SIGSEGV)" in status["FailureReason"]
    crashes = filtered(logs, '"Fatal Python error: Segmentation fault"')
    assert crashes and all(MODEL_STREAM.fullmatch(e["logStreamName"]) for e in crashes)
    lines = [e["message"] for e in stream_events(logs, crashes[0]["logStreamName"])]
    assert any("in transform_fn" in line for line in lines)
    restarts = filtered(logs, '"exited with code -11 (SIGSEGV); restarting it"')
    assert restarts and restarts[0]["logStreamName"] == crashes[0]["logStreamName"] + "/data-log"


def stream_events(logs, stream: str) -> Iterator[dict]:
    """Every event of a stream, through GetLogEvents' forward tokens (small pages)."""
    token = None
    while True:
        extra = {"nextToken": token} if token else {"startFromHead": True}
        page = logs.get_log_events(logGroupName=GROUP, logStreamName=stream, limit=7, **extra)
        yield from page["events"]
        if page["nextForwardToken"] == token:
            return  # the end: the token given comes back
        token = page["nextForwardToken"]


def test_get_log_events_pages_through_a_stream_and_back(shared_server, endpoint: str, logs) -> None:
    invoke(shared_server, {"action": "print", "text": "paging"})
    (event,) = filtered(logs, '"stdout: paging"')
    stream = event["logStreamName"]
    whole = logs.get_log_events(logGroupName=GROUP, logStreamName=stream, startFromHead=True)
    paged = list(stream_events(logs, stream))
    assert [e["message"] for e in paged] == [e["message"] for e in whole["events"]]
    assert len(paged) > 7

    newest = logs.get_log_events(logGroupName=GROUP, logStreamName=stream, limit=3)
    older = logs.get_log_events(
        logGroupName=GROUP, logStreamName=stream, limit=3, nextToken=newest["nextBackwardToken"]
    )
    messages = [e["message"] for e in whole["events"]]
    assert [e["message"] for e in newest["events"]] == messages[-3:]
    assert [e["message"] for e in older["events"]] == messages[-6:-3]


def test_the_group_and_its_streams_are_described(shared_server, endpoint: str, logs) -> None:
    invoke(shared_server, {"action": "echo", "value": 1})
    filtered(logs, '"completed"')
    (group,) = logs.describe_log_groups(logGroupNamePrefix=GROUP)["logGroups"]
    assert group["logGroupName"] == GROUP
    assert group["arn"] == f"arn:aws:logs:us-east-1:000000000000:log-group:{GROUP}:*"
    assert group["storedBytes"] > 0
    streams = logs.describe_log_streams(logGroupName=GROUP)["logStreams"]
    names = [s["logStreamName"] for s in streams]
    assert names == sorted(names)
    model_streams = [n for n in names if MODEL_STREAM.fullmatch(n)]
    assert model_streams and all(f"{n}/data-log" in names for n in model_streams)
    newest = logs.describe_log_streams(logGroupName=GROUP, orderBy="LastEventTime", descending=True)
    last_events = [s["lastEventTimestamp"] for s in newest["logStreams"]]
    assert last_events == sorted(last_events, reverse=True)


def test_missing_groups_and_streams_are_resource_not_found(
    shared_server, endpoint: str, logs
) -> None:
    with pytest.raises(ClientError) as caught:
        logs.filter_log_events(logGroupName="/aws/sagemaker/Endpoints/nowhere")
    assert caught.value.response["Error"] == {
        "Code": "ResourceNotFoundException",
        "Message": "The specified log group does not exist.",
    }
    invoke(shared_server, {"action": "echo", "value": 1})
    filtered(logs, '"completed"')
    with pytest.raises(ClientError) as caught:
        logs.get_log_events(logGroupName=GROUP, logStreamName="AllTraffic/i-00000000000000000")
    assert caught.value.response["Error"]["Message"] == "The specified log stream does not exist."


def test_bad_parameters_are_invalid_parameter_exceptions(shared_server, endpoint: str) -> None:
    logs = shared_server.client("logs", parameter_validation=False)
    with pytest.raises(ClientError) as caught:
        logs.filter_log_events(logGroupName=GROUP, limit=0)
    assert caught.value.response["Error"]["Code"] == "InvalidParameterException"
    assert "Member must have value greater than or equal to 1" in str(caught.value)
    with pytest.raises(ClientError) as caught:
        logs.filter_log_events(logGroupName=GROUP, nextToken="not-a-token")
    assert caught.value.response["Error"] == {
        "Code": "InvalidParameterException",
        "Message": "The specified nextToken is invalid.",
    }

"""Models that misbehave, on a real server: one that hangs (Failed at its
InvocationTimeoutSeconds, the instance replaced), one that crashes mid-request (retried,
Failed after 3 attempts), one that returns garbage (SageMaker writes a model's bytes as
they are: so does sagequeue), and one whose response is larger than the server takes
(Failed with the reason; the worker's memory stays flat). HTTP containers that answer
garbage fail their request with the reason. Nothing answers a 5xx."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from acceptance.helpers import ROLE_ARN, deploy, wait_for_status
from conftest import ServerProcess, free_port, wait_until

from .conftest import MODELS, PeakRss, client

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MIB = 1024 * 1024
MAX_RESPONSE = 4 * MIB  # the server's max_model_response_bytes in these tests


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("unruly")
    process = ServerProcess(
        data_dir=root / "data",
        port=free_port(),
        extra_args=["--max-model-response-bytes", str(MAX_RESPONSE)],
    ).start()
    deploy(process, "unruly", MODELS / "unruly", concurrency=2)
    yield process
    process.stop()


def invoke(server: ServerProcess, endpoint: str, body: dict[str, Any], **params: Any) -> str:
    response = client(server, "sagemaker-runtime").invoke_endpoint_async(
        EndpointName=endpoint,
        InferenceId=str(uuid.uuid4()),
        Body=json.dumps(body).encode(),
        ContentType="application/json",
        **params,
    )
    return response["InferenceId"]


def outcome(server: ServerProcess, endpoint: str, body: dict[str, Any], **params: Any) -> dict:
    inference_id = invoke(server, endpoint, body, **params)
    return wait_for_status(server, endpoint, inference_id, timeout=90)


def read(server: ServerProcess, location: str) -> tuple[int, bytes, str | None]:
    """(HTTP status, body, content type) of GetObject, whatever the status."""
    s3 = client(server, "s3")
    bucket, key = location.removeprefix("s3://").split("/", 1)
    try:
        response = s3.get_object(Bucket=bucket, Key=key)
    except s3.exceptions.ClientError as exc:
        return exc.response["ResponseMetadata"]["HTTPStatusCode"], b"", None
    return 200, response["Body"].read(), response.get("ContentType")


def model_pids(server: ServerProcess) -> set[str]:
    import subprocess

    assert server.process is not None
    found = subprocess.run(
        ["pgrep", "-P", str(server.process.pid), "-f", "sagequeue.runtimes.python_worker"],
        capture_output=True,
        text=True,
    ).stdout.split()
    return set(found)


def test_a_model_that_hangs_fails_at_its_timeout_and_its_instance_is_replaced(
    server: ServerProcess, figures
) -> None:
    before = model_pids(server)
    status = outcome(server, "unruly", {"action": "hang"}, InvocationTimeoutSeconds=1)
    assert status["Status"] == "Failed"
    assert status["FailureReason"] == (
        "Model invocation timed out after 1 s (InvocationTimeoutSeconds)"
    )
    assert read(server, status["FailureLocation"])[1] == status["FailureReason"].encode()
    # The stuck handler cannot be stopped: its process is replaced (after a grace).
    wait_until(lambda: model_pids(server) and model_pids(server) != before, "a new instance", 30)
    assert outcome(server, "unruly", {"action": "echo", "value": 1})["Status"] == "Completed"
    figures.record(
        "models", "a model that hangs", outcome=status["Status"], reason=status["FailureReason"]
    )


def test_a_model_that_crashes_mid_request_is_tried_three_times_then_fails(
    server: ServerProcess, figures
) -> None:
    status = outcome(server, "unruly", {"action": "exit"})
    assert (status["Status"], status["Attempts"]) == ("Failed", 3)
    assert status["FailureReason"].startswith(
        "The model instance crashed 3 times while running this request"
    )
    assert outcome(server, "unruly", {"action": "echo", "value": 2})["Status"] == "Completed"
    figures.record(
        "models",
        "a model that crashes mid-request (os._exit)",
        outcome=f"{status['Status']} after {status['Attempts']} attempts",
        reason=status["FailureReason"],
    )


def test_garbage_for_the_accept_type_is_the_output_byte_for_byte(
    server: ServerProcess, figures
) -> None:
    status = outcome(
        server, "unruly", {"action": "garbage", "size": 4096}, Accept="application/json"
    )
    assert status["Status"] == "Completed"
    assert read(server, status["OutputLocation"]) == (
        200,
        bytes(range(256)) * 16,
        "application/json",
    )
    figures.record(
        "models",
        "a model that returns bytes that are not valid for the Accept type",
        outcome=status["Status"],
        reason="the bytes are the output, as SageMaker writes them",
    )


def test_a_handler_that_returns_no_bytes_fails_with_the_reason(
    server: ServerProcess, figures
) -> None:
    status = outcome(server, "unruly", {"action": "not-bytes"})
    assert status["Status"] == "Failed"
    assert status["FailureReason"].startswith("TypeError: the handler returned dict")
    figures.record(
        "models",
        "a handler that returns a dict instead of bytes",
        outcome=status["Status"],
        reason=status["FailureReason"],
    )


@pytest.mark.parametrize(
    "content_type",
    ["text/plain\x01\x7f", "t\u00ffpe/\u00e9", "\u0442\u0438\u043f/json", "a" * 3000, ""],
    ids=["control-characters", "latin-1", "non-latin-1", "long", "empty"],
)
def test_a_model_content_type_never_makes_a_server_error(
    server: ServerProcess, content_type: str
) -> None:
    status = outcome(server, "unruly", {"action": "content-type", "value": content_type})
    assert status["Status"] in ("Completed", "Failed")
    location = status["OutputLocation" if status["Status"] == "Completed" else "FailureLocation"]
    code, _, _ = read(server, location)
    assert code == 200
    s3 = client(server, "s3")
    bucket, key = location.removeprefix("s3://").split("/", 1)
    assert s3.head_object(Bucket=bucket, Key=key)["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_a_response_over_the_maximum_fails_and_the_worker_stays_small(
    server: ServerProcess, figures
) -> None:
    assert server.process is not None
    under = outcome(server, "unruly", {"action": "huge", "mib": 2})
    assert under["Status"] == "Completed"
    assert len(read(server, under["OutputLocation"])[1]) == 2 * MIB
    with PeakRss(server.process.pid) as rss:
        status = outcome(server, "unruly", {"action": "huge", "mib": 256})
    assert status["Status"] == "Failed"
    assert status["FailureReason"] == (
        f"The model's response is too large: {256 * MIB} bytes, over the maximum model "
        f"response size of {MAX_RESPONSE} bytes (max_model_response_bytes)"
    )
    growth = rss.peak - rss.baseline
    assert growth < 32 * MIB, growth
    figures.record(
        "models",
        "a model that returns 256 MiB (maximum 4 MiB)",
        outcome=status["Status"],
        reason=status["FailureReason"],
        rss_growth=growth,
    )


# ------------------------------------------------------------------ HTTP containers
class GarbageContainer:
    """A SageMaker-contract container that passes /ping and answers /invocations with
    what the request body's ``answer`` names: malformed HTTP of several kinds."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection, contextlib.suppress(OSError):
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = connection.recv(65536)
                if not chunk:
                    return
                head += chunk
            head, _, body = head.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(body) < length:
                body += connection.recv(65536)
            if head.startswith(b"GET /ping"):
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                return
            answer = json.loads(body).get("answer")
            ok = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            if answer == "not-http":
                connection.sendall(b"\x00\xffthis is not HTTP\r\n\r\n")
            elif answer == "bad-chunk-size":
                connection.sendall(ok + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nxx\r\n0\r\n\r\n")
            elif answer == "cut-short":
                connection.sendall(ok + b"Content-Length: 100\r\n\r\n0123456789")
            elif answer == "bad-length":
                connection.sendall(ok + b"Content-Length: -5\r\n\r\n")
            elif answer == "declared-huge":
                connection.sendall(ok + b"Content-Length: %d\r\n\r\n" % (512 * MIB))
                connection.sendall(b"x" * MIB)
            elif answer == "streamed-huge":
                connection.sendall(ok + b"Transfer-Encoding: chunked\r\n\r\n")
                chunk = b"%x\r\n%s\r\n" % (MIB, b"y" * MIB)
                for _ in range(256):
                    connection.sendall(chunk)
                connection.sendall(b"0\r\n\r\n")


@pytest.fixture(scope="module")
def container_endpoint(server: ServerProcess) -> str:
    container = GarbageContainer()
    sagemaker = client(server, "sagemaker")
    sagemaker.create_model(
        ModelName="garbage-container",
        ExecutionRoleArn=ROLE_ARN,
        PrimaryContainer={"Image": container.url},
    )
    sagemaker.create_endpoint_config(
        EndpointConfigName="garbage-container",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "garbage-container",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
            }
        ],
        AsyncInferenceConfig={
            "OutputConfig": {
                "S3OutputPath": "s3://acceptance/output/garbage-container",
                "S3FailurePath": "s3://acceptance/failures/garbage-container",
            },
            "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 2},
        },
    )
    sagemaker.create_endpoint(
        EndpointName="garbage-container", EndpointConfigName="garbage-container"
    )
    sagemaker.get_waiter("endpoint_in_service").wait(
        EndpointName="garbage-container", WaiterConfig={"Delay": 0.2, "MaxAttempts": 300}
    )
    return "garbage-container"


GARBAGE_ANSWERS = {
    "not-http": "Could not reach the model container at",
    "bad-chunk-size": "sent a malformed response: invalid chunk size line",
    "cut-short": "sent a malformed response: connection closed before the end of the body",
    "bad-length": "sent a malformed response: invalid Content-Length",
    "declared-huge": f"too large: {512 * MIB} bytes",
    "streamed-huge": "too large: more than that",
}


@pytest.mark.parametrize("answer", list(GARBAGE_ANSWERS))
def test_a_container_answering_garbage_fails_the_request_with_the_reason(
    server: ServerProcess, container_endpoint: str, answer: str, figures
) -> None:
    assert server.process is not None
    with PeakRss(server.process.pid) as rss:
        status = outcome(server, container_endpoint, {"answer": answer})
    assert status["Status"] == "Failed"
    assert GARBAGE_ANSWERS[answer] in status["FailureReason"]
    assert read(server, status["FailureLocation"])[0] == 200
    growth = rss.peak - rss.baseline
    assert growth < 32 * MIB, growth
    figures.record(
        "models",
        f"an HTTP container answering {answer}",
        outcome=status["Status"],
        reason=status["FailureReason"],
        rss_growth=growth,
    )

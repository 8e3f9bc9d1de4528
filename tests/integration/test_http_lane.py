"""The HTTP server's lane for ``/endpoints/...`` (sagequeue.frontdoor.server): raw
HTTP/1.1 on a socket, so that pipelining, ``Connection: close`` and HTTP/1.0 are what
the test says, and boto3 for S3 calls that happen to fall into the lane's path."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def signed_invocation(
    server: Any, endpoint: str, inference_id: str, *, extra: dict[str, str] | None = None
) -> bytes:
    """Raw bytes of an InvokeEndpointAsync request signed as boto3 signs it."""
    host = f"127.0.0.1:{server.port}"
    headers = {
        "Host": host,
        "X-Amzn-SageMaker-InputLocation": "s3://inputs/x.json",
        "X-Amzn-SageMaker-Inference-Id": inference_id,
        **(extra or {}),
    }
    request = AWSRequest(
        method="POST",
        url=f"http://{host}/endpoints/{endpoint}/async-invocations",
        headers=headers,
        data=b"",
    )
    SigV4Auth(Credentials(*server.credentials), "sagemaker", "us-east-1").add_auth(request)
    lines = ["POST " + f"/endpoints/{endpoint}/async-invocations HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in request.headers.items()]
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: socket.socket, buffer: bytearray) -> tuple[int, dict[str, str], bytes]:
    """One response (Content-Length framed) from ``sock``; leftovers stay in ``buffer``."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a response head")
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside a response body")
        rest += chunk
    buffer[:] = rest[length:]
    return int(status_line.split()[1]), headers, rest[:length]


def connect(server: Any) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def is_closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_pipelined_invocations_are_answered_in_order(shared_server: Any, endpoint: str) -> None:
    ids = [f"pipelined-{n}" for n in range(5)]
    with connect(shared_server) as sock:
        sock.sendall(b"".join(signed_invocation(shared_server, endpoint, i) for i in ids))
        buffer = bytearray()
        answers = [read_response(sock, buffer) for _ in ids]
    assert [status for status, _, _ in answers] == [202] * 5
    assert [json.loads(body)["InferenceId"] for _, _, body in answers] == ids


def test_invocation_pipelined_before_another_route_is_answered_first(
    shared_server: Any, endpoint: str
) -> None:
    with connect(shared_server) as sock:
        sock.sendall(
            signed_invocation(shared_server, endpoint, "before-healthz")
            + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            + signed_invocation(shared_server, endpoint, "after-healthz")
        )
        buffer = bytearray()
        first, second, third = (read_response(sock, buffer) for _ in range(3))
    assert json.loads(first[2])["InferenceId"] == "before-healthz"
    assert second[0] == 200 and b"InferenceId" not in second[2]
    assert json.loads(third[2])["InferenceId"] == "after-healthz"


def test_connection_close_is_honoured_after_the_answer(shared_server: Any, endpoint: str) -> None:
    with connect(shared_server) as sock:
        sock.sendall(
            signed_invocation(shared_server, endpoint, "closing", extra={"Connection": "close"})
        )
        status, headers, _ = read_response(sock, bytearray())
        assert status == 202
        assert headers["connection"] == "close"
        assert is_closed_by_server(sock)


def test_http_1_0_request_is_answered_then_closed(shared_server: Any, endpoint: str) -> None:
    request = signed_invocation(shared_server, endpoint, "old-client")
    request = request.replace(b" HTTP/1.1\r\n", b" HTTP/1.0\r\n", 1)
    with connect(shared_server) as sock:
        sock.sendall(request)
        status, _, body = read_response(sock, bytearray())
        assert status == 202
        assert json.loads(body)["InferenceId"] == "old-client"
        assert is_closed_by_server(sock)


def test_keep_alive_connection_serves_many_invocations(shared_server: Any, endpoint: str) -> None:
    with connect(shared_server) as sock:
        buffer = bytearray()
        for n in range(20):
            sock.sendall(signed_invocation(shared_server, endpoint, f"kept-{n}"))
            status, headers, body = read_response(sock, buffer)
            assert status == 202
            assert json.loads(body)["InferenceId"] == f"kept-{n}"
            assert headers["x-amzn-sagemaker-outputlocation"].startswith("s3://results/out/")


def test_error_answers_in_the_lane_keep_the_connection(shared_server: Any, endpoint: str) -> None:
    bad = signed_invocation(shared_server, endpoint, "x").replace(b"Signature=", b"Signature=0", 1)
    with connect(shared_server) as sock:
        sock.sendall(bad + signed_invocation(shared_server, endpoint, "after-error"))
        buffer = bytearray()
        status, headers, _ = read_response(sock, buffer)
        assert (status, headers["x-amzn-errortype"]) == (403, "InvalidSignatureException")
        status, _, body = read_response(sock, buffer)
        assert status == 202
        assert json.loads(body)["InferenceId"] == "after-error"


def test_body_too_large_for_the_lane_still_gets_the_aws_error(
    raw_runtime: Any, endpoint: str
) -> None:
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as caught:
        raw_runtime.invoke_endpoint_async(
            EndpointName=endpoint, Body=b"x" * (2 * 1024 * 1024), ContentType="text/plain"
        )
    error = caught.value.response["Error"]
    assert error["Code"] == "ValidationError"
    assert "128000" in error["Message"]


def test_s3_bucket_named_endpoints_works_through_the_lane(s3: Any) -> None:
    """Path-style S3 requests for a bucket called ``endpoints`` share the lane's prefix;
    they are routed by their signature like any other."""
    s3.create_bucket(Bucket="endpoints")
    large = bytes(range(256)) * 8192  # 2 MiB: uploaded through uvicorn, read via the lane
    s3.put_object(Bucket="endpoints", Key="e/async-invocations", Body=b"small")
    s3.put_object(Bucket="endpoints", Key="large", Body=large)
    assert s3.get_object(Bucket="endpoints", Key="e/async-invocations")["Body"].read() == b"small"
    assert s3.get_object(Bucket="endpoints", Key="large")["Body"].read() == large
    assert s3.head_object(Bucket="endpoints", Key="large")["ContentLength"] == len(large)
    listed = s3.list_objects_v2(Bucket="endpoints")
    assert sorted(item["Key"] for item in listed["Contents"]) == ["e/async-invocations", "large"]

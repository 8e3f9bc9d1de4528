"""Signed AWS requests as raw HTTP/1.1 bytes, for load and fleet tests and the benchmarks:
signing each request ahead of time (botocore's SigV4Auth) and replaying its bytes costs a
small fraction of a boto3 call, so that the client is not what a load measures or waits
for. Loopback only.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from botocore.auth import S3SigV4QueryAuth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

LOOPBACK = "127.0.0.1"
REGION = "us-east-1"


@dataclass(slots=True, frozen=True)
class Target:
    """Where to send requests and with which key pair."""

    port: int
    access_key: str = "bench"
    secret_key: str = "bench-secret"
    host: str = LOOPBACK
    region: str = REGION

    def __post_init__(self) -> None:
        if self.host != LOOPBACK:
            raise ValueError("the load generator only targets 127.0.0.1")

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(slots=True, frozen=True)
class InvocationSpec:
    """What each InvokeEndpointAsync request carries (all requests share it except the
    InferenceId, which is distinct per request)."""

    endpoint_name: str
    input_location: str | None = "s3://bench/input.json"
    body: bytes | None = None
    content_type: str = "application/json"
    custom_attributes: str | None = None


def sign_invocation(target: Target, spec: InvocationSpec, inference_id: str) -> bytes:
    """Raw HTTP/1.1 bytes of one InvokeEndpointAsync request signed like boto3 does."""
    url = f"http://{target.authority}/endpoints/{spec.endpoint_name}/async-invocations"
    headers = {
        "Host": target.authority,
        "X-Amzn-SageMaker-Content-Type": spec.content_type,
        "X-Amzn-SageMaker-Inference-Id": inference_id,
    }
    if spec.input_location is not None:
        headers["X-Amzn-SageMaker-InputLocation"] = spec.input_location
    if spec.custom_attributes is not None:
        headers["X-Amzn-SageMaker-Custom-Attributes"] = spec.custom_attributes
    body = spec.body or b""
    if spec.body is not None:
        headers["Content-Type"] = spec.content_type
    request = AWSRequest(method="POST", url=url, headers=headers, data=body)
    SigV4Auth(
        Credentials(target.access_key, target.secret_key), "sagemaker", target.region
    ).add_auth(request)
    assert request.method is not None and request.url is not None
    return raw_http(request.method, request.url, dict(request.headers.items()), body)


def raw_http(method: str, url: str, headers: dict[str, str], body: bytes) -> bytes:
    """Serialise a request as HTTP/1.1 bytes on a keep-alive connection."""
    path = url.split("://", 1)[1]
    path = path[path.index("/") :] if "/" in path else "/"
    lines = [f"{method} {path} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def presign_get(target: Target, bucket: str, key: str, expires: int = 3600) -> bytes:
    """Raw bytes of a presigned S3 GetObject (path style) for polling outputs."""
    url = f"http://{target.authority}/{bucket}/{key}"
    request = AWSRequest(method="GET", url=url, headers={"Host": target.authority})
    S3SigV4QueryAuth(
        Credentials(target.access_key, target.secret_key), "s3", target.region, expires
    ).add_auth(request)
    assert request.url is not None
    return raw_http("GET", request.url, {"Host": target.authority}, b"")


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bytes]:
    """(status, head, body) of one HTTP/1.1 response with a Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    lower = head.lower()
    length = 0
    at = lower.find(b"\ncontent-length:")
    if at >= 0:
        length = int(lower[at + 16 : lower.find(b"\r", at + 16)])
    body = await reader.readexactly(length) if length else b""
    return int(head[9:12]), head, body


def header(head: bytes, name: bytes) -> str:
    """The value of header ``name`` (lower-case) in a response head."""
    lower = head.lower()
    at = lower.find(b"\n" + name + b":")
    if at < 0:
        raise ValueError(f"no {name.decode()} header")
    start = at + len(name) + 2
    return head[start : lower.find(b"\r", start)].decode().strip()


async def send_all(
    port: int, requests: list[bytes], *, connections: int = 8, retry_status: int = 503
) -> list[bytes]:
    """Send every request over ``connections`` keep-alive connections, one in flight on
    each, and return each request's response head in order. A ``retry_status`` answer
    (503: the store restarts) is sent again after a short pause, as AWS SDKs retry it."""
    heads: list[bytes] = [b""] * len(requests)
    queue = list(range(len(requests)))[::-1]

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        try:
            while queue:
                n = queue.pop()
                for attempt in range(50):
                    writer.write(requests[n])
                    status, head, _ = await read_response(reader)
                    if status != retry_status:
                        break
                    await asyncio.sleep(0.05 * min(attempt + 1, 10))
                heads[n] = head
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return heads

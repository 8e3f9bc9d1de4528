"""The lane protocol on its own: a front door stand-in and an in-memory transport, so a
test can see which requests take the lane and which go to the ASGI app."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from sagequeue.frontdoor.http import Request, Response
from sagequeue.frontdoor.server import MAX_LANE_BODY, lane_protocol

pytestmark = pytest.mark.anyio


class RecordingFrontDoor:
    """Answers lane requests with ``answer`` and records them; as an ASGI app it answers
    204 and records the paths it saw."""

    def __init__(self, answer: Response) -> None:
        self.answer = answer
        self.lane_requests: list[Request] = []
        self.asgi_paths: list[str] = []

    async def respond(self, request: Request) -> Response:
        self.lane_requests.append(request)
        await asyncio.sleep(0)  # a real answer waits for the store
        return self.answer

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.asgi_paths.append(scope["path"])
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


class MemoryTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 1), "peername": ("127.0.0.1", 2)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def exchange(front_door: RecordingFrontDoor, raw: bytes) -> MemoryTransport:
    config = uvicorn.Config(
        front_door, http=lane_protocol(front_door), ws="none", lifespan="off", log_level="error"
    )
    config.load()
    protocol = config.http_protocol_class(config=config, server_state=ServerState(), app_state={})
    transport = MemoryTransport()
    protocol.connection_made(transport)
    protocol.data_received(raw)
    for _ in range(20):  # let both kinds of answer finish
        await asyncio.sleep(0)
    protocol.connection_lost(None)
    return transport


ACCEPTED = Response(202, [("content-type", "application/json")], b'{"InferenceId":"i"}')
INVOKE = b"POST /endpoints/e/async-invocations HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}"


async def test_runtime_request_takes_the_lane_with_its_body_whole() -> None:
    front_door = RecordingFrontDoor(ACCEPTED)
    transport = await exchange(front_door, INVOKE)
    assert front_door.asgi_paths == []
    [request] = front_door.lane_requests
    assert (request.method, request.raw_path, request.body) == (
        "POST",
        "/endpoints/e/async-invocations",
        b"{}",
    )
    assert request.headers["host"] == "h"
    assert transport.written.startswith(b"HTTP/1.1 202 Accepted\r\n")
    assert transport.written.endswith(b'content-length: 19\r\n\r\n{"InferenceId":"i"}')


async def test_other_paths_go_to_the_asgi_app() -> None:
    front_door = RecordingFrontDoor(ACCEPTED)
    transport = await exchange(front_door, b"GET /bucket/key HTTP/1.1\r\nHost: h\r\n\r\n")
    assert front_door.asgi_paths == ["/bucket/key"]
    assert front_door.lane_requests == []
    assert transport.written.startswith(b"HTTP/1.1 204 ")


@pytest.mark.parametrize(
    "framing",
    [
        b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\n{}",
        b"Content-Length: %d\r\n\r\n" % (MAX_LANE_BODY + 1) + b"x" * (MAX_LANE_BODY + 1),
    ],
    ids=["chunked", "expect-continue", "larger-than-the-lane"],
)
async def test_bodies_the_lane_would_buffer_or_stall_go_to_the_asgi_app(framing: bytes) -> None:
    front_door = RecordingFrontDoor(ACCEPTED)
    await exchange(
        front_door, b"POST /endpoints/e/async-invocations HTTP/1.1\r\nHost: h\r\n" + framing
    )
    assert front_door.asgi_paths == ["/endpoints/e/async-invocations"]
    assert front_door.lane_requests == []


async def test_percent_encoded_path_and_query_reach_the_front_door_raw_and_decoded() -> None:
    front_door = RecordingFrontDoor(ACCEPTED)
    await exchange(
        front_door,
        b"GET /endpoints/e/async-invocations/a%2Fb?x=1 HTTP/1.1\r\nHost: h\r\n\r\n",
    )
    [request] = front_door.lane_requests
    assert request.raw_path == "/endpoints/e/async-invocations/a%2Fb"
    assert request.path == "/endpoints/e/async-invocations/a/b"
    assert request.query_string == "x=1"


async def test_head_request_gets_the_length_but_no_body() -> None:
    front_door = RecordingFrontDoor(Response(200, [], b"12345"))
    transport = await exchange(front_door, b"HEAD /endpoints/x HTTP/1.1\r\nHost: h\r\n\r\n")
    assert transport.written.endswith(b"content-length: 5\r\n\r\n")


async def test_streamed_answer_without_a_length_is_sent_chunked() -> None:
    async def chunks() -> Any:
        yield b"ab"
        yield b"cde"

    front_door = RecordingFrontDoor(Response(200, [], chunks()))
    transport = await exchange(front_door, b"GET /endpoints/x HTTP/1.1\r\nHost: h\r\n\r\n")
    head, _, body = bytes(transport.written).partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head
    assert body == b"2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"


async def test_header_value_with_a_line_break_becomes_a_500_and_a_close() -> None:
    front_door = RecordingFrontDoor(Response(202, [("x-injected", "a\r\nset-cookie: b")], b""))
    transport = await exchange(front_door, INVOKE)
    assert transport.written.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"set-cookie" not in transport.written
    assert transport.closed


async def test_stream_failing_midway_closes_the_connection_without_a_second_head() -> None:
    async def chunks() -> Any:
        yield b"first"
        raise OSError("the object store went away")

    front_door = RecordingFrontDoor(Response(200, [("content-length", "10")], chunks()))
    transport = await exchange(front_door, b"GET /endpoints/x HTTP/1.1\r\nHost: h\r\n\r\n")
    assert transport.written.count(b"HTTP/1.1 ") == 1
    assert transport.written.endswith(b"first")
    assert transport.closed


async def test_malformed_request_pipelined_behind_the_lane_gets_400_and_close() -> None:
    front_door = RecordingFrontDoor(ACCEPTED)
    transport = await exchange(front_door, INVOKE + b"NOT HTTP AT ALL\r\n\r\n")
    assert transport.written.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert transport.written.count(b"HTTP/1.1 ") == 1  # the lane's answer had nowhere to go
    assert transport.closed

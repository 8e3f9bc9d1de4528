"""The HTTP container runtime against a real HTTP server speaking the SageMaker container
contract (GET /ping, POST /invocations)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sagequeue.ports import ModelInvocationError, ModelRequest
from sagequeue.runtimes.http_container import HttpContainerRuntime

pytestmark = pytest.mark.anyio


class ContainerHandler(BaseHTTPRequestHandler):
    """Echoes the body upper-cased; body ``fail`` answers 500; ping is healthy unless
    the server is marked sick."""

    def do_GET(self) -> None:
        if self.path == "/ping" and not self.server.sick:  # type: ignore[attr-defined]
            self._answer(200, b"", "text/plain")
        else:
            self._answer(503, b"not ready", "text/plain")

    def do_POST(self) -> None:
        if self.headers.get("Transfer-Encoding") == "chunked":
            body = b""
            while size := int(self.rfile.readline().strip(), 16):
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if body == b"fail":
            self._answer(500, b"model exploded", "text/plain")
            return
        seen = (
            f"{self.headers['Content-Type']}|{self.headers['Accept']}|"
            f"{self.headers['X-Amzn-SageMaker-Custom-Attributes']}|"
        ).encode()
        self._answer(
            200,
            seen + body.upper(),
            "application/x-echo",
            {"X-Amzn-SageMaker-Custom-Attributes": "answered=1"},
        )

    def _answer(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def container() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ContainerHandler)
    server.sick = False  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def model_for(server: ThreadingHTTPServer) -> dict:
    host, port = server.server_address[:2]
    return {"ModelName": "c", "PrimaryContainer": {"Image": f"http://{host}:{port}"}}


async def test_invocation_posts_body_and_headers_and_returns_the_answer(container) -> None:
    instance = await HttpContainerRuntime().start_instance(model_for(container), 2)
    response = await instance.invoke(
        ModelRequest("id-1", b"hello", "text/plain", "application/x-echo", "a=b"), timeout=10
    )
    assert response.body == b"text/plain|application/x-echo|a=b|HELLO"
    assert response.content_type == "application/x-echo"
    assert response.custom_attributes == "answered=1"


async def test_streamed_body_is_sent_whole(container) -> None:
    instance = await HttpContainerRuntime().start_instance(model_for(container), 2)

    async def parts():
        yield b"ab"
        yield b"cd"

    response = await instance.invoke(ModelRequest("id-2", parts(), "text/plain"), timeout=10)
    assert response.body.endswith(b"|ABCD")


async def test_non_2xx_answer_is_a_failure_with_status_and_body(container) -> None:
    instance = await HttpContainerRuntime().start_instance(model_for(container), 2)
    with pytest.raises(ModelInvocationError) as caught:
        await instance.invoke(ModelRequest("id-3", b"fail", "text/plain"), timeout=10)
    assert caught.value.message == (
        'Received server error (500) from model with message "model exploded"'
    )


async def test_container_failing_ping_cannot_start(container) -> None:
    container.sick = True
    with pytest.raises(ModelInvocationError) as caught:
        await HttpContainerRuntime(ping_timeout=0.5).start_instance(model_for(container), 1)
    assert "did not pass GET /ping: HTTP 503" in caught.value.message
    # The reason never carries the target's answer (it reaches FailureReason).
    assert "not ready" not in caught.value.message


async def test_unreachable_container_cannot_start() -> None:
    model = {"PrimaryContainer": {"Image": "http://127.0.0.1:9"}}
    with pytest.raises(ModelInvocationError) as caught:
        await HttpContainerRuntime(ping_timeout=0.3).start_instance(model, 1)
    assert "cannot connect" in caught.value.message

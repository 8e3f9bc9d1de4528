"""HTTP limits enforced before authentication (docs/security.md): raw sockets against a
real server started with short timeouts and a small connection cap."""

from __future__ import annotations

import datetime
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from conftest import ServerProcess, limited_server

MAX_CONNECTIONS = 12
TIMEOUT = 1.0  # header, body and keep-alive timeouts of the server under test


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = limited_server(
        tmp_path_factory.mktemp("limits"), timeout=TIMEOUT, max_connections=MAX_CONNECTIONS
    )
    yield process
    process.stop()


def connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def send_quietly(sock: socket.socket, data: bytes) -> None:
    """Send what the server still takes: it may stop reading once it has refused."""
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


def read_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and what followed the head (the body, or its start)."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response head: {buffer!r}")
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    # The body may come in segments of its own: read what Content-Length announces.
    length = int(headers.get("content-length") or 0)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return int(status_line.split()[1]), headers, rest


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes the connection within ``seconds`` (reading and
    dropping anything it still sends)."""
    sock.settimeout(seconds)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return False


def healthz_ok(server: ServerProcess) -> bool:
    with urllib.request.urlopen(server.url + "/healthz", timeout=5) as response:
        return response.status == 200


def signed_head(
    server: ServerProcess,
    path: str,
    content_length: int,
    *,
    access_key: str | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    """The head of a sagemaker request signed (for an empty body) at this time: enough
    for every check that precedes reading the body."""
    access, secret = server.credentials
    host = f"127.0.0.1:{server.port}"
    request = AWSRequest(
        method="POST", url=f"http://{host}{path}", headers={"Host": host, **(headers or {})}
    )
    SigV4Auth(Credentials(access_key or access, secret), "sagemaker", "us-east-1").add_auth(request)
    lines = [f"POST {path} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in request.headers.items()]
    lines.append(f"Content-Length: {content_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_header_block_over_64_kib_is_refused_with_431_quickly(server: ServerProcess) -> None:
    started = time.monotonic()
    with connect(server) as sock:
        send_quietly(
            sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"
        )
        status, headers, _ = read_head(sock)
    assert status == 431
    assert headers["connection"] == "close"
    assert time.monotonic() - started < 2
    assert healthz_ok(server)


def test_a_100_mib_header_block_costs_the_server_nothing(server: ServerProcess) -> None:
    """The client keeps sending a huge header block; the server has answered 431 after
    the first 64 KiB and only drains (briefly), so /healthz answers meanwhile."""
    with connect(server) as sock:
        sock.settimeout(5)
        send_quietly(sock, b"POST /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        chunk = b"a" * 1024 * 1024
        for _ in range(8):
            send_quietly(sock, chunk)
        assert healthz_ok(server)
        status, _, _ = read_head(sock)
    assert status == 431


def test_100000_header_fields_are_refused(server: ServerProcess) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-H: v\r\n" * 100_000 + b"\r\n"
    with connect(server) as sock:
        send_quietly(sock, head)
        status, _, _ = read_head(sock)
    assert status == 431
    assert healthz_ok(server)


def test_more_header_fields_than_the_cap_are_refused_even_when_small(
    server: ServerProcess,
) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-H: v\r\n" * 300 + b"\r\n"
    assert len(head) < 64 * 1024
    with connect(server) as sock:
        send_quietly(sock, head)
        status, _, _ = read_head(sock)
    assert status == 431


def test_a_head_within_the_limits_is_answered(server: ServerProcess) -> None:
    head = (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
        + b"X-H: v\r\n" * 200
        + b"X-Big: "
        + b"a" * 60_000
        + b"\r\n\r\n"
    )
    with connect(server) as sock:
        sock.sendall(head)
        status, _, _ = read_head(sock)
    assert status == 200


def test_slowloris_connection_is_closed_after_the_header_timeout(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        closed = False
        # One header byte every 0.2 s: each arrives well within any idle timeout.
        while time.monotonic() - started < TIMEOUT * 4:
            try:
                sock.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if closed_within(sock, 0.2):
                closed = True
                break
    assert closed
    assert time.monotonic() - started < TIMEOUT * 3


def test_connection_that_sends_nothing_is_closed_after_the_header_timeout(
    server: ServerProcess,
) -> None:
    with connect(server) as sock:
        assert closed_within(sock, TIMEOUT * 3)


def test_idle_keep_alive_connection_is_closed(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = read_head(sock)
        assert status == 200 and headers.get("connection") != "close"
        started = time.monotonic()
        assert closed_within(sock, TIMEOUT * 3)
        assert time.monotonic() - started >= TIMEOUT * 0.5


def test_a_busy_keep_alive_connection_outlives_the_header_timeout(server: ServerProcess) -> None:
    """Whole requests, each in one write, more often than the keep-alive timeout and for
    longer than the header timeout: the connection stays open and every one is answered."""
    with connect(server) as sock:
        deadline = time.monotonic() + 3 * TIMEOUT
        answered = 0
        while time.monotonic() < deadline:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, _ = read_head(sock)
            assert status == 200
            answered += 1
            time.sleep(TIMEOUT / 4)
    assert answered >= 8


def test_stalled_request_body_is_closed_after_the_body_timeout(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"POST /endpoints/e/async-invocations HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 1000\r\n\r\n" + b"x" * 10
        )
        assert closed_within(sock, TIMEOUT * 3)
    assert healthz_ok(server)


def test_connections_beyond_the_cap_are_refused_with_503(server: ServerProcess) -> None:
    held = [connect(server) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.1)  # all accepted before the next one
        with connect(server) as extra:
            status, headers, _ = read_head(extra)
            assert status == 503
            assert headers["connection"] == "close"
            assert closed_within(extra, 2)
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    assert healthz_ok(server)


def test_unknown_key_with_a_5_mb_body_gets_403_before_the_body_is_read(
    server: ServerProcess,
) -> None:
    """Only the head is sent: an answer proves that no body byte was waited for."""
    head = signed_head(
        server,
        "/",
        5_000_000,
        access_key="AKIDFORGED",
        headers={"X-Amz-Target": "SageMaker.ListModels"},
    )
    with connect(server) as sock:
        sock.sendall(head)
        status, headers, _ = read_head(sock)
    assert (status, headers["x-amzn-errortype"]) == (403, "UnrecognizedClientException")
    assert headers["connection"] == "close"


def test_unknown_key_with_a_5_mb_runtime_body_gets_403_before_the_body_is_read(
    server: ServerProcess,
) -> None:
    head = signed_head(server, "/endpoints/e/async-invocations", 5_000_000, access_key="AKIDX")
    with connect(server) as sock:
        sock.sendall(head)
        status, headers, _ = read_head(sock)
    assert (status, headers["x-amzn-errortype"]) == (403, "UnrecognizedClientException")


def test_stale_date_with_a_large_body_gets_403_before_the_body_is_read(
    server: ServerProcess,
) -> None:
    head = signed_head(
        server, "/", 5_000_000, headers={"X-Amz-Target": "SageMaker.ListModels"}
    ).replace(
        b"X-Amz-Date: " + datetime.datetime.now(datetime.UTC).strftime("%Y%m%d").encode(),
        b"X-Amz-Date: 20200101",
    )
    with connect(server) as sock:
        sock.sendall(head)
        status, headers, _ = read_head(sock)
    assert status == 403
    assert headers["x-amzn-errortype"] == "InvalidSignatureException"


def test_control_plane_body_over_its_maximum_is_refused_from_content_length(
    server: ServerProcess,
) -> None:
    head = signed_head(
        server, "/", 2 * 1024 * 1024, headers={"X-Amz-Target": "SageMaker.ListModels"}
    )
    with connect(server) as sock:
        sock.sendall(head)
        status, headers, _ = read_head(sock)
    assert (status, headers["x-amzn-errortype"]) == (400, "ValidationException")
    assert headers["connection"] == "close"


def test_runtime_body_over_128000_bytes_is_refused_from_content_length(
    server: ServerProcess,
) -> None:
    head = signed_head(server, "/endpoints/e/async-invocations", 128_001)
    with connect(server) as sock:
        sock.sendall(head)
        status, headers, rest = read_head(sock)
    assert (status, headers["x-amzn-errortype"]) == (400, "ValidationError")
    assert b"less than or equal to 128000" in rest


def test_limits_are_settings_with_documented_defaults() -> None:
    from sagequeue.config import load_settings

    defaults = load_settings({}, environ={})
    assert (defaults.max_header_bytes, defaults.max_header_count) == (65536, 256)
    assert (defaults.header_timeout, defaults.keep_alive_timeout) == (20.0, 5.0)
    assert (defaults.body_timeout, defaults.max_connections) == (30.0, 1024)
    assert defaults.max_control_body == 1024 * 1024
    from_env = load_settings({"max_connections": "7"}, environ={"SAGEQUEUE_HEADER_TIMEOUT": "2.5"})
    assert (from_env.max_connections, from_env.header_timeout) == (7, 2.5)
    docs = (Path(__file__).parents[2] / "docs" / "security.md").read_text()
    for name in ("max_header_bytes", "header_timeout", "max_connections", "max_control_body"):
        assert name in docs

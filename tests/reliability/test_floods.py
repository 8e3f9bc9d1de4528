"""Connection and header floods against a real server (the limits of
tests/integration/test_http_limits.py, many clients at once): every flood is refused by
design (431 for heads over the limits, 503 beyond the connection cap, idle and slow
connections closed), the server's memory stays flat, and it answers again right after."""

from __future__ import annotations

import socket
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import ServerProcess, limited_server
from figures import scaled

from .conftest import PeakRss

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MIB = 1024 * 1024
MAX_CONNECTIONS = 64
TIMEOUT = 1.0  # the header, body and keep-alive timeouts of the server under test


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = limited_server(
        tmp_path_factory.mktemp("floods"), timeout=TIMEOUT, max_connections=MAX_CONNECTIONS
    )
    yield process
    process.stop()


def status_of(sock: socket.socket) -> int:
    """The status the server answered, 0 when it closed without one."""
    buffer = b""
    try:
        while b"\r\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                return 0
            buffer += chunk
    except (ConnectionError, TimeoutError):
        return 0
    return int(buffer.split(b" ", 2)[1])


def send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError, TimeoutError):
        pass  # refused: the server stopped reading


def healthz(server: ServerProcess) -> int:
    deadline = time.monotonic() + 10
    while True:  # the last flood's connections may still be closing
        try:
            with urllib.request.urlopen(server.url + "/healthz", timeout=5) as response:
                return response.status
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def flood(
    server: ServerProcess, clients: int, one: Callable[[], int]
) -> tuple[Counter[int], int, int]:
    """Run ``one`` from ``clients`` threads at once; (statuses, peak RSS growth, peak RSS)."""
    assert server.process is not None
    with PeakRss(server.process.pid) as rss, ThreadPoolExecutor(min(clients, 64)) as pool:
        statuses = Counter(pool.map(lambda _: one(), range(clients)))
    return statuses, rss.peak - rss.baseline, rss.peak


def connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def record(figures, name: str, clients: int, statuses: Counter[int], growth: int, peak: int):
    figures.record(
        "flood",
        name,
        clients=clients,
        statuses={str(k): v for k, v in sorted(statuses.items())},
        rss_growth=growth,
        rss_peak=peak,
        server_errors_by_design=statuses[503],
        server_errors=sum(n for s, n in statuses.items() if s >= 500 and s != 503),
    )


def test_a_flood_of_idle_connections_is_capped_and_closed(server: ServerProcess, figures) -> None:
    clients = scaled(400)
    assert server.process is not None
    with PeakRss(server.process.pid) as rss:
        held = [connect(server) for _ in range(clients)]  # all open at once
        statuses: Counter[int] = Counter()
        for sock in held:
            with sock:
                sock.settimeout(TIMEOUT * 5)
                # 503 beyond the cap; the others closed unanswered at the header timeout.
                statuses[status_of(sock)] += 1
    growth, peak = rss.peak - rss.baseline, rss.peak
    record(figures, "idle connections (cap 64)", clients, statuses, growth, peak)
    assert set(statuses) == {0, 503}
    assert statuses[0] >= MAX_CONNECTIONS // 2  # held until the header timeout
    assert statuses[503] >= clients - MAX_CONNECTIONS * 2
    assert growth < 32 * MIB, growth
    assert healthz(server) == 200


def test_a_slowloris_flood_is_closed_at_the_header_timeout(server: ServerProcess, figures) -> None:
    clients = scaled(120)

    def slow() -> int:
        with connect(server) as sock:
            send_quietly(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            started = time.monotonic()
            while time.monotonic() - started < TIMEOUT * 4:
                send_quietly(sock, b"X")
                sock.settimeout(0.2)
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
                except ConnectionError:
                    return 0
                return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
            return -1  # never closed: the test fails

    statuses, growth, peak = flood(server, clients, slow)
    record(figures, "slowloris (one header byte every 0.2 s)", clients, statuses, growth, peak)
    assert -1 not in statuses
    assert set(statuses) <= {0, 408, 431, 503}
    assert growth < 32 * MIB, growth
    assert healthz(server) == 200


def test_a_flood_of_1_mib_header_blocks_is_refused_with_431(server: ServerProcess, figures) -> None:
    clients = scaled(60)
    block = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MIB + b"\r\n\r\n"

    def big_head() -> int:
        with connect(server) as sock:
            send_quietly(sock, block)
            return status_of(sock)

    statuses, growth, peak = flood(server, clients, big_head)
    record(figures, "1 MiB header blocks", clients, statuses, growth, peak)
    assert set(statuses) <= {431, 503}
    assert statuses[431] >= clients // 2
    assert growth < 32 * MIB, growth
    assert healthz(server) == 200


def test_a_flood_of_100000_header_fields_is_refused_with_431(
    server: ServerProcess, figures
) -> None:
    clients = scaled(30)
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-H: v\r\n" * 100_000 + b"\r\n"

    def many_fields() -> int:
        with connect(server) as sock:
            send_quietly(sock, head)
            return status_of(sock)

    statuses, growth, peak = flood(server, clients, many_fields)
    record(figures, "100,000 header fields", clients, statuses, growth, peak)
    assert set(statuses) <= {431, 503}
    assert statuses[431] >= clients // 2
    assert growth < 32 * MIB, growth
    assert healthz(server) == 200

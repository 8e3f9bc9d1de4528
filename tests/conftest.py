"""Shared fixtures: a real sagequeue server on a free port, and clients for it."""

from __future__ import annotations

import configparser
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import pytest
from botocore.config import Config

if TYPE_CHECKING:
    from sagequeue.testing.postgres import PostgresServer

REPO = Path(__file__).resolve().parent.parent
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http_ok(url: str, timeout: float = 30.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} was up")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except Exception as exc:  # still starting
            last_error = exc
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready after {timeout}s: {last_error}")


@dataclass
class ServerProcess:
    """A ``sagequeue serve`` child process on 127.0.0.1 and what clients need to reach it."""

    data_dir: Path
    port: int
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    # Client key pairs when not the data dir's generated file (--credentials-file).
    credentials_file: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> ServerProcess:
        self.log_path = self.data_dir.parent / f"server-{self.port}-{int(time.time() * 1000)}.log"
        log = open(self.log_path, "wb")  # noqa: SIM115 - kept open for the child's life
        env = {**os.environ, **self.env}
        env.pop("SAGEQUEUE_CONFIG", None)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sagequeue",
                "serve",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.data_dir.parent,
        )
        if wait:
            wait_http_ok(self.url + "/healthz", process=self.process)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def kill9(self) -> None:
        assert self.process is not None
        # The model instances are children: kill the whole tree like a power cut would.
        try:
            children = subprocess.run(
                ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True
            ).stdout.split()
        except FileNotFoundError:
            children = []
        self.process.kill()
        self.process.wait()
        for pid in children:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    @property
    def credentials(self) -> tuple[str, str]:
        parser = configparser.RawConfigParser()
        parser.read(self.credentials_file or self.data_dir / "credentials")
        return (
            parser.get("sagequeue", "aws_access_key_id"),
            parser.get("sagequeue", "aws_secret_access_key"),
        )

    def client(self, service: str, *, attempts: int = 1, **config) -> object:
        """A boto3 client for this server. ``attempts``: boto3's standard retries (a test
        sees each error by default; a load test rides out 503s as AWS SDKs do)."""
        access, secret = self.credentials
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=access,
            aws_secret_access_key=secret,
            config=Config(retries={"max_attempts": attempts, "mode": "standard"}, **config),
        )

    def aws_env(self) -> dict[str, str]:
        """Environment for the aws CLI / child processes to use this server."""
        access, secret = self.credentials
        return {
            **os.environ,
            "AWS_ACCESS_KEY_ID": access,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }


def wait_until(condition: Callable[[], object], what: str, timeout: float = 60.0) -> object:
    """Polls ``condition`` until it returns something true, and returns that; raises
    TimeoutError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(0.1)


def release_together(children: list[subprocess.Popen]) -> None:
    """Waits until every child has printed ``ready``, then tells them all ``go``: so that
    they race for real, not one after the other as they happen to start."""
    for child in children:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()


def limited_server(root: Path, *, timeout: float, max_connections: int) -> ServerProcess:
    """A started server whose header, body and keep-alive timeouts are ``timeout`` seconds
    and which accepts at most ``max_connections`` connections."""
    return ServerProcess(
        data_dir=root / "data",
        port=free_port(),
        extra_args=[
            "--header-timeout",
            str(timeout),
            "--keep-alive-timeout",
            str(timeout),
            "--body-timeout",
            str(timeout),
            "--max-connections",
            str(max_connections),
        ],
    ).start()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator:
    """Start servers with custom arguments; all are stopped at the end of the test."""
    started: list[ServerProcess] = []

    def make(
        *args: str,
        data_dir: Path | None = None,
        port: int | None = None,
        env: dict[str, str] | None = None,
        wait: bool = True,
    ) -> ServerProcess:
        server = ServerProcess(
            data_dir=data_dir or tmp_path / "data",
            port=port or free_port(),
            extra_args=list(args),
            env=env or {},
        )
        started.append(server)
        return server.start(wait=wait)

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for a whole test module (for tests that do not restart it)."""
    root = tmp_path_factory.mktemp("server")
    server = ServerProcess(data_dir=root / "data", port=free_port()).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def s3(shared_server: ServerProcess):
    return shared_server.client("s3")


@pytest.fixture(scope="module")
def sagemaker(shared_server: ServerProcess):
    return shared_server.client("sagemaker")


@pytest.fixture(scope="module")
def runtime(shared_server: ServerProcess):
    return shared_server.client("sagemaker-runtime")


# ------------------------------------------------------------------------- PostgreSQL
@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server (Debian's binaries, run by the postgres user) for the
    whole session, on 127.0.0.1 and a free port. Tests take fresh databases from it
    (``create_database``) and may restart it (``restart()``); a test that stops it must
    start it again. Never skipped: ``make test`` installs PostgreSQL where it is missing."""
    from sagequeue.testing.postgres import PostgresServer

    server = PostgresServer().start()
    yield server
    server.close()


_databases_to_drop: list[str] = []


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's server (sagequeue migrates it)."""
    url = postgres_server.create_database()
    yield url
    _restart_if_stopped(postgres_server)
    # Dropped at the end of the next test that takes one: processes this test started
    # may still be connected now (fixtures set up before this one stop after it), and a
    # forced drop would cut them off mid-shutdown.
    for name in _databases_to_drop:
        postgres_server.drop_database(name)
    _databases_to_drop[:] = [url.rsplit("/", 1)[1]]


def _restart_if_stopped(server: PostgresServer) -> None:
    if not server.running:
        server.start()


MOTO_SERVER = Path(sys.executable).parent / "moto_server"


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's server mode (an independent S3, SNS, SQS...) on 127.0.0.1, for the session."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("moto_server did not start: " + log.read_text()) from None
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(10)

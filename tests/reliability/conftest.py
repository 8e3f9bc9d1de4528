"""The crash and fault suite's harness: clusters of real ``sagequeue serve`` processes on
SQLite or PostgreSQL, a bounded load of boto3 clients, a ledger that checks every request
that got a 202 ended exactly once, and the figures that ``make reliability`` publishes
(docs/reliability.md; tests/figures.py: ``SAGEQUEUE_RELIABILITY_SCALE`` multiplies the
loads, for the larger run of ``make reliability``)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

import figures
from conftest import MOTO_SERVER, REGION, ServerProcess, free_port, wait_until

FINAL = ("Completed", "Failed", "Expired")
WORKER_TIMEOUT = "2"  # seconds: a killed worker's requests move quickly
FAULTS = "SAGEQUEUE_TEST_FAULTS"


class Figures:
    """What one scenario measured, for docs/reliability.md (tests/figures.py)."""

    def __init__(self, test_id: str) -> None:
        self.test_id = test_id

    def record(self, suite: str, scenario: str, **values: Any) -> None:
        figures.record(suite, scenario, self.test_id, **values)


@pytest.fixture(name="figures")
def figures_fixture(request: pytest.FixtureRequest) -> Figures:
    return Figures(request.node.nodeid)


# ----------------------------------------------------------------------------- stores
@dataclass
class Backend:
    """Where a cluster keeps its state: SQLite and local objects in one data dir shared by
    its processes (one host), or PostgreSQL and an S3 service with a data dir per process
    (many hosts)."""

    name: str
    shared_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    database: str | None = None

    @property
    def hosts(self) -> bool:
        return self.database is not None


MOTO_ENV = {
    "AWS_ACCESS_KEY_ID": "moto",
    "AWS_SECRET_ACCESS_KEY": "moto",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


def postgres_backend(database: str, s3_endpoint: str) -> Backend:
    return Backend(
        "postgres",
        ["--database", database, "--object-store", "s3://", "--s3-endpoint-url", s3_endpoint],
        dict(MOTO_ENV),
        database,
    )


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite")
    return postgres_backend(
        request.getfixturevalue("postgres_url"), request.getfixturevalue("moto_endpoint")
    )


# ----------------------------------------------------------------------------- clusters
@dataclass
class Cluster:
    """Named ``sagequeue serve`` processes on one backend, each restartable in place (same
    data dir and port)."""

    root: Path
    backend: Backend
    processes: dict[str, ServerProcess] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    crashes: int = 0

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def credentials_file(self) -> Path | None:
        return self.root / "credentials" if self.backend.hosts else None

    def add(
        self, name: str, role: str = "all", *extra: str, env: dict[str, str] | None = None
    ) -> ServerProcess:
        data_dir = self.root / name / "data" if self.backend.hosts else self.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        args = ["--role", role, *self.backend.shared_args, "--worker-timeout", WORKER_TIMEOUT]
        if self.credentials_file is not None:
            args += ["--credentials-file", str(self.credentials_file)]
        server = ServerProcess(
            data_dir,
            free_port(),
            [*args, *extra],
            env={**self.backend.env, **(env or {})},
            credentials_file=self.credentials_file,
        )
        self.processes[name] = server
        self.roles[name] = role
        self.start(name)
        return server

    def start(self, name: str) -> None:
        server = self.processes[name]
        if self.roles[name] == "worker":
            server.start(wait=False)
            wait_until(lambda: "worker running" in server.log_text(), f"{name} running", 60)
        else:
            server.start()

    def kill(self, name: str) -> None:
        """SIGKILL the process and its model instances, as a power cut would."""
        self.processes[name].kill9()
        self.crashes += 1

    def restart(self, name: str) -> None:
        """Start a stopped or crashed process again, without armed fault points."""
        server = self.processes[name]
        server.env = {k: v for k, v in server.env.items() if k != FAULTS}
        self.start(name)

    def crashed(self, name: str) -> bool:
        process = self.processes[name].process
        return process is not None and process.poll() is not None

    def api(self) -> ServerProcess:
        return next(s for n, s in self.processes.items() if self.roles[n] in ("all", "api"))

    def stop(self) -> None:
        for server in self.processes.values():
            if server.process is not None and server.process.poll() is None:
                server.process.send_signal(signal.SIGTERM)
        for server in self.processes.values():
            server.stop(timeout=40)


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Callable[[Backend], Cluster]]:
    made: list[Cluster] = []

    def make(backend: Backend) -> Cluster:
        cluster = Cluster(tmp_path / f"cluster-{len(made)}", backend)
        cluster.root.mkdir(parents=True)
        if cluster.credentials_file is not None:
            cluster.credentials_file.write_text(
                "[sagequeue]\naws_access_key_id = SQRELIABILITYKEY\n"
                "aws_secret_access_key = reliability-test-secret\n"
            )
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.stop()


def unique_bucket(prefix: str) -> str:
    """A bucket name of its own: the session's moto server is shared by tests."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# ----------------------------------------------------------------------------- load
def client(server: ServerProcess, service: str) -> Any:
    """One attempt per call: a request whose connection fails is not acknowledged."""
    access, secret = server.credentials
    return boto3.client(
        service,
        endpoint_url=server.url,
        region_name=REGION,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        config=Config(
            retries={"max_attempts": 1, "mode": "standard"},
            connect_timeout=2,
            read_timeout=15,
        ),
    )


@dataclass
class Accepted:
    """A request that got a 202: the promise to check."""

    output: str
    failure: str


class Load:
    """A bounded load: ``total`` InvokeEndpointAsync calls from ``threads`` clients, each
    with an InferenceId of its own and no retry. ``hooks`` run (in their own thread) once
    that many calls were made: the crashes."""

    def __init__(
        self,
        server: ServerProcess,
        endpoint: str,
        total: int,
        *,
        threads: int = 4,
        body: Callable[[int], dict[str, Any]] | None = None,
        timeout_seconds: int | None = None,
        pause_after_refusal: float = 0.2,
    ) -> None:
        self.server = server
        self.endpoint = endpoint
        self.total = total
        self.threads = threads
        self.body = body or (lambda n: {"action": "sleep", "seconds": 0.01, "value": n})
        self.timeout_seconds = timeout_seconds
        # A client whose call got no answer waits a little, so that the load goes on
        # through a restart instead of spending itself on refused connections.
        self.pause_after_refusal = pause_after_refusal
        self.accepted: dict[str, Accepted] = {}
        self.refused: Counter[str] = Counter()  # why a call got no 202
        self.statuses: Counter[int] = Counter()  # HTTP statuses answered
        self.prefix = uuid.uuid4().hex[:8]
        self._lock = threading.Lock()
        self._made = 0
        self._hook_threads: list[threading.Thread] = []

    def run(self, hooks: dict[int, Callable[[], None]] | None = None) -> Load:
        hooks = dict(hooks or {})
        runtime = client(self.server, "sagemaker-runtime")

        def send(n: int) -> None:
            inference_id = f"{self.prefix}-{n}"
            params: dict[str, Any] = {
                "EndpointName": self.endpoint,
                "InferenceId": inference_id,
                "Body": json.dumps(self.body(n)).encode(),
                "ContentType": "application/json",
            }
            if self.timeout_seconds is not None:
                params["InvocationTimeoutSeconds"] = self.timeout_seconds
            try:
                response = runtime.invoke_endpoint_async(**params)
                with self._lock:
                    self.statuses[202] += 1
                    self.accepted[inference_id] = Accepted(
                        response["OutputLocation"], response["FailureLocation"]
                    )
            except ClientError as exc:
                status = exc.response["ResponseMetadata"].get("HTTPStatusCode", 0)
                with self._lock:
                    self.statuses[status] += 1
                    self.refused[f"{status} {exc.response['Error'].get('Code')}"] += 1
            except BotoCoreError as exc:  # the server is down or died mid-call
                with self._lock:
                    self.refused[f"no answer ({type(exc).__name__})"] += 1
                time.sleep(self.pause_after_refusal)
            with self._lock:
                self._made += 1
                hook = hooks.pop(self._made, None)
            if hook is not None:
                thread = threading.Thread(target=hook)
                thread.start()
                self._hook_threads.append(thread)

        with ThreadPoolExecutor(self.threads) as pool:
            list(pool.map(send, range(self.total)))
        for thread in self._hook_threads:
            thread.join()
        return self

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)


# ----------------------------------------------------------------------------- the ledger
AUDIT_SQLITE = [
    "CREATE TABLE IF NOT EXISTS test_finishes (request_id TEXT NOT NULL, status TEXT NOT NULL)",
    """
    CREATE TRIGGER IF NOT EXISTS test_finish_audit AFTER UPDATE OF status ON invocations
    WHEN NEW.status IN ('Completed', 'Failed', 'Expired') BEGIN
        INSERT INTO test_finishes VALUES (NEW.request_id, NEW.status);
    END
    """,
]
AUDIT_POSTGRES = [
    "CREATE TABLE IF NOT EXISTS test_finishes (request_id text NOT NULL, status text NOT NULL)",
    """
    CREATE OR REPLACE FUNCTION test_finish_audit() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO test_finishes VALUES (NEW.request_id, NEW.status);
        RETURN NULL;
    END $$
    """,
    """
    CREATE OR REPLACE TRIGGER test_finish_audit AFTER UPDATE OF status ON invocations
    FOR EACH ROW WHEN (NEW.status IN ('Completed', 'Failed', 'Expired'))
    EXECUTE FUNCTION test_finish_audit()
    """,
]


class StoreReader:
    """Reads the queue store itself (not through the API): rows and every transition to a
    final status, recorded by a trigger the test installs."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        database = self.cluster.backend.database
        if database is not None:
            import psycopg

            with psycopg.connect(database, autocommit=True) as conn:
                return conn.execute(sql.replace("?", "%s"), params).fetchall()
        with sqlite3.connect(self.cluster.data_dir / "sagequeue.db", timeout=30) as conn:
            return conn.execute(sql, params).fetchall()

    def install_audit(self) -> None:
        database = self.cluster.backend.database
        if database is not None:
            import psycopg

            with psycopg.connect(database, autocommit=True) as conn:
                for statement in AUDIT_POSTGRES:
                    conn.execute(statement)
            return
        with sqlite3.connect(self.cluster.data_dir / "sagequeue.db", timeout=30) as conn:
            for statement in AUDIT_SQLITE:
                conn.execute(statement)

    def rows(self, endpoint: str) -> dict[str, list[tuple[str, str, int, str | None]]]:
        """inference id -> [(request id, status, attempts, failure reason)]"""
        found: dict[str, list[tuple[str, str, int, str | None]]] = {}
        for inference_id, request_id, status, attempts, reason in self._query(
            "SELECT inference_id, request_id, status, attempts, failure_reason "
            "FROM invocations WHERE endpoint_name = ?",
            (endpoint,),
        ):
            found.setdefault(inference_id, []).append((request_id, status, attempts, reason))
        return found

    def finishes(self) -> Counter[str]:
        return Counter(r for (r,) in self._query("SELECT request_id FROM test_finishes"))

    def unfinished(self, endpoint: str) -> int:
        ((count,),) = self._query(
            "SELECT count(*) FROM invocations WHERE endpoint_name = ? "
            "AND status NOT IN ('Completed', 'Failed', 'Expired')",
            (endpoint,),
        )
        return int(count)


def object_keys(s3: Any, bucket: str, prefix: str) -> set[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {f"s3://{bucket}/{o['Key']}" for page in pages for o in page.get("Contents", [])}


@dataclass
class Outcome:
    """How the promises of a load were kept."""

    accepted: int
    lost: int  # a 202 with no row, or a row that never became final
    duplicates: int  # a request finished more than once, or with two result objects
    by_status: Counter[str]
    rerun: int  # acknowledged requests that a crash made run more than once
    unacknowledged_recorded: int  # calls without a 202 whose request was recorded (and ended)
    problems: list[str]


def settle(
    cluster: Cluster,
    accepted: dict[str, Accepted],
    endpoint: str,
    bucket: str,
    timeout: float = 180,
) -> Outcome:
    """Wait until every recorded request of ``endpoint`` is final, then check each that
    got a 202: one row, final, finished once, and exactly the one result object its
    status calls for."""
    reader = StoreReader(cluster)
    try:
        wait_until(lambda: reader.unfinished(endpoint) == 0, "every request final", timeout)
    except TimeoutError:
        pass  # reported below, request by request
    rows = reader.rows(endpoint)
    finishes = reader.finishes()
    s3 = client(cluster.api(), "s3")
    outputs = object_keys(s3, bucket, f"output/{endpoint}/")
    failures = object_keys(s3, bucket, f"failures/{endpoint}/")
    problems: list[str] = []
    lost = duplicates = 0
    by_status: Counter[str] = Counter()
    rerun = 0
    for inference_id, promise in accepted.items():
        found = rows.get(inference_id, [])
        if len(found) != 1:
            problems.append(f"{inference_id}: {len(found)} rows")
            lost += not found
            duplicates += len(found) > 1
            continue
        request_id, status, attempts, _ = found[0]
        by_status[status] += 1
        rerun += attempts > 1
        if status not in FINAL:
            problems.append(f"{inference_id}: still {status}")
            lost += 1
            continue
        if finishes[request_id] != 1:
            problems.append(f"{inference_id}: finished {finishes[request_id]} times")
            duplicates += 1
        has_output = promise.output in outputs
        has_failure = promise.failure in failures
        if has_output and has_failure:
            problems.append(f"{inference_id}: both an output and a failure object")
            duplicates += 1
        elif (status == "Completed") != has_output or (status != "Completed") != has_failure:
            problems.append(f"{inference_id}: {status}, output {has_output}, failure {has_failure}")
            lost += 1
    unacknowledged = sum(1 for inference_id in rows if inference_id not in accepted)
    return Outcome(len(accepted), lost, duplicates, by_status, rerun, unacknowledged, problems)


# ----------------------------------------------------------------------------- local store
def local_store_audit(objects_root: Path) -> tuple[set[str], set[str]]:
    """(files under data/, parts/ and tmp/ no index row refers to; index rows whose file
    is missing) of a local object store."""
    with sqlite3.connect(f"file:{objects_root / 'index.db'}?mode=ro", uri=True) as conn:
        referenced = {f for (f,) in conn.execute("SELECT file FROM objects")}
        referenced |= {f for (f,) in conn.execute("SELECT file FROM parts")}
    on_disk = {
        str(path.relative_to(objects_root))
        for area in ("data", "parts", "tmp")
        for path in (objects_root / area).rglob("*")
        if path.is_file()
    }
    return on_disk - referenced, referenced - on_disk


# ----------------------------------------------------------------------------- moto
class MotoServer:
    """moto's S3 on a fixed port, stopped and started again (it keeps no state)."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.root = root
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = (self.root / f"moto-{time.monotonic_ns()}.log").open("wb")
        self.process = subprocess.Popen(
            [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._answers, "moto listening", 30)

    def _answers(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id="moto",
            aws_secret_access_key="moto",
        )


@pytest.fixture
def moto_server(tmp_path: Path) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path)
    server.start()
    yield server
    server.stop()


class Gate:
    """A TCP relay on a port of its own in front of a service: closed, connections to it
    are refused and those open are cut, as when the service is down. It lets a test
    restart moto behind it and recreate moto's state before anyone can reach it."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target_port = target_port
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def close(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            connections, self._connections = self._connections, []
        if listener is not None:
            listener.close()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                downstream, _ = listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                downstream.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    downstream.close()
                    upstream.close()
                    return
                self._connections += [downstream, upstream]
            for source, sink in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


# ----------------------------------------------------------------------------- memory
def rss_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class PeakRss:
    """Samples a process's RSS every few milliseconds while in use; ``peak`` in bytes."""

    def __init__(self, pid: int, every: float = 0.01) -> None:
        self.pid = pid
        self.every = every
        self.baseline = rss_of(pid)
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_of(self.pid))
            except (FileNotFoundError, ProcessLookupError):
                return
            time.sleep(self.every)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_of(self.pid))


MODELS = Path(__file__).parent / "models"
PYTHON = sys.executable

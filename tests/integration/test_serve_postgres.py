"""`sagequeue serve --database postgresql://...`: a real server on a real PostgreSQL,
driven by boto3; bad databases at start; a database restart under load."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from conftest import ServerProcess, free_port
from sagequeue.stores.postgres import PostgresStore
from sagequeue.testing.postgres import PostgresServer


def _serve(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sagequeue", "serve", "--port", str(free_port()), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _one_clear_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "listening on" not in result.stdout
    return lines[0]


@pytest.mark.parametrize("role", ["all", "api", "worker"])
def test_malformed_database_url_stops_the_start_with_one_line(tmp_path: Path, role: str) -> None:
    result = _serve(
        "--role",
        role,
        "--data-dir",
        str(tmp_path),
        "--database",
        "postgresql://sagequeue:secret@db.example:port/sagequeue",
    )
    line = _one_clear_line(result)
    assert "port 'port' is not a port number" in line
    assert "secret" not in line


def test_unreachable_database_stops_the_start_with_one_line(tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/sagequeue"
    line = _one_clear_line(_serve("--data-dir", str(tmp_path), "--database", url))
    assert "cannot connect to the database" in line
    assert "Connection refused" in line


def test_database_at_a_newer_schema_version_stops_the_start_with_one_line(
    tmp_path: Path, postgres_server: PostgresServer, postgres_url: str
) -> None:
    asyncio.run(_migrate_then_set_version(postgres_url, 999))
    line = _one_clear_line(
        _serve("--role", "api", "--data-dir", str(tmp_path), "--database", postgres_url)
    )
    assert "schema version 999 is newer than this sagequeue's" in line
    assert "upgrade sagequeue" in line


def test_database_url_is_also_read_from_sagequeue_database(
    tmp_path: Path, server_factory, postgres_url: str
) -> None:
    server = server_factory("--role", "api", env={"SAGEQUEUE_DATABASE": postgres_url})
    sagemaker = server.client("sagemaker")
    sagemaker.create_model(ModelName="in-postgres", PrimaryContainer={"Image": "sagequeue/python"})
    stored = asyncio.run(_stored_model_names(postgres_url))
    assert stored == ["in-postgres"]


async def _migrate_then_set_version(url: str, version: int) -> None:
    store = PostgresStore(url)
    await store.open()
    await store.close()
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("UPDATE schema_version SET version = %s", (version,))


async def _stored_model_names(url: str) -> list[str]:
    from sagequeue.ports import ResourceKind

    store = PostgresStore(url)
    await store.open()
    try:
        return [r.name for r in await store.list_resources(ResourceKind.MODEL)]
    finally:
        await store.close()


# ---------------------------------------------------------------------- outages
@pytest.fixture(scope="module")
def outage(
    tmp_path_factory: pytest.TempPathFactory, container: str
) -> Iterator[tuple[ServerProcess, PostgresServer, str]]:
    """An API-only server on a PostgreSQL of its own (the tests restart and stop it),
    with the echo endpoint InService: a --role all server brought it up, then stopped
    (a worker would finish requests and muddy the counts)."""
    postgres = PostgresServer().start()
    url = postgres.create_database("sagequeue")
    data_dir = tmp_path_factory.mktemp("outage") / "data"
    setup = ServerProcess(data_dir, free_port(), ["--database", url]).start()
    try:
        _deploy_echo(setup.client("sagemaker"), container)
    finally:
        setup.stop()
    api = ServerProcess(data_dir, free_port(), ["--role", "api", "--database", url]).start()
    yield api, postgres, url
    api.stop()
    postgres.close()


@pytest.mark.timeout(120)
def test_requests_during_a_database_restart_get_503_or_202_and_every_202_is_stored(
    outage: tuple[ServerProcess, PostgresServer, str],
) -> None:
    api, postgres, url = outage
    accepted: list[str] = []
    statuses: dict[str, int] = {}
    stop = threading.Event()
    lock = threading.Lock()

    def load(n: int) -> None:
        # One attempt per call (the fixture's client): every 503 shows.
        runtime = api.client("sagemaker-runtime", connect_timeout=5, read_timeout=30)
        count = 0
        while not stop.is_set() and count < 2000:
            inference_id = f"load-{n}-{count}"
            count += 1
            try:
                runtime.invoke_endpoint_async(
                    EndpointName="echo",
                    InputLocation="s3://results/in.json",
                    InferenceId=inference_id,
                )
                status = "202"
            except ClientError as exc:
                error = exc.response
                status = f"{error['ResponseMetadata']['HTTPStatusCode']} {error['Error']['Code']}"
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                if status == "202":
                    accepted.append(inference_id)

    threads = [threading.Thread(target=load, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    before_restart = len(accepted)
    postgres.restart()
    after_restart = time.monotonic()
    # Keep going until requests are accepted again (the pools reconnect by themselves).
    while len(accepted) < before_restart + 50 and time.monotonic() - after_restart < 30:
        time.sleep(0.1)
    stop.set()
    for thread in threads:
        thread.join(60)

    assert before_restart > 0
    assert len(accepted) >= before_restart + 50, statuses  # served again, same process
    assert set(statuses) <= {"202", "503 ServiceUnavailable"}, statuses
    stored = asyncio.run(_stored_inference_ids(url))
    assert [i for i in accepted if i not in stored] == []
    assert api.process.poll() is None


@pytest.mark.timeout(120)
def test_a_request_while_the_database_is_down_gets_503_and_one_after_it_is_back_202(
    outage: tuple[ServerProcess, PostgresServer, str],
) -> None:
    api, postgres, url = outage
    runtime = api.client("sagemaker-runtime", read_timeout=30)
    runtime.invoke_endpoint_async(EndpointName="echo", InputLocation="s3://results/in.json")

    postgres.stop()
    try:
        with pytest.raises(ClientError) as refused:
            runtime.invoke_endpoint_async(
                EndpointName="echo", InputLocation="s3://results/in.json", InferenceId="refused"
            )
    finally:
        postgres.start()
    deadline = time.monotonic() + 30
    while True:
        try:
            runtime.invoke_endpoint_async(
                EndpointName="echo", InputLocation="s3://results/in.json", InferenceId="back"
            )
            break
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "ServiceUnavailable"
            assert time.monotonic() < deadline, "still refused 30 s after the database came back"
            time.sleep(0.2)

    error = refused.value.response
    assert (error["ResponseMetadata"]["HTTPStatusCode"], error["Error"]["Code"]) == (
        503,
        "ServiceUnavailable",
    )
    stored = asyncio.run(_stored_inference_ids(url))
    assert "back" in stored and "refused" not in stored


def _deploy_echo(sagemaker, container: str) -> None:
    sagemaker.create_model(ModelName="echo", PrimaryContainer={"Image": container})
    sagemaker.create_endpoint_config(
        EndpointConfigName="echo-config",
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": "echo", "InitialInstanceCount": 1}
        ],
        AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": "s3://results/out/"}},
    )
    sagemaker.create_endpoint(EndpointName="echo", EndpointConfigName="echo-config")
    sagemaker.get_waiter("endpoint_in_service").wait(
        EndpointName="echo", WaiterConfig={"Delay": 0.2, "MaxAttempts": 150}
    )


async def _stored_inference_ids(url: str) -> set[str]:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute("SELECT inference_id FROM invocations")
        return {row[0] for row in await cursor.fetchall()}


def test_worker_on_a_shared_database_with_a_local_object_store_says_other_hosts_cannot_see_it(
    tmp_path: Path, postgres_url: str
) -> None:
    worker = ServerProcess(
        data_dir=tmp_path / "data",
        port=free_port(),
        extra_args=["--role", "worker", "--database", postgres_url],
    ).start(wait=False)
    try:
        deadline = time.monotonic() + 30
        while "worker running" not in worker.log_text() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        worker.stop()
    log = worker.log_text()
    assert "is a directory on this host" in log
    assert "--object-store s3://" in log

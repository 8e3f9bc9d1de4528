"""`sagequeue serve`: start-up, credentials, health, roles, shutdown."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
import urllib.request

import pytest

from acceptance.helpers import deploy, wait_for_object
from conftest import free_port, wait_http_ok


def test_first_start_generates_credentials_and_prints_their_path(server_factory):
    server = server_factory()
    path = server.data_dir / "credentials"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert str(path.absolute()) in server.log_text()
    assert "[sagequeue]" in path.read_text()


def test_restart_keeps_the_generated_credentials(server_factory):
    server = server_factory()
    before = server.credentials
    server.stop()
    restarted = server_factory(data_dir=server.data_dir)
    assert restarted.credentials == before


def test_healthz_answers_200_without_signature(server_factory):
    server = server_factory()
    with urllib.request.urlopen(server.url + "/healthz") as response:
        assert response.status == 200
        assert json.loads(response.read()) == {"status": "ok"}


def test_sigterm_exits_cleanly(server_factory):
    server = server_factory()
    assert server.stop() == 0


def test_flags_can_come_from_environment_variables(server_factory, tmp_path):
    port = free_port()
    data_dir = tmp_path / "from-env"
    process = subprocess.Popen(
        [sys.executable, "-m", "sagequeue", "serve"],
        env={
            **__import__("os").environ,
            "SAGEQUEUE_PORT": str(port),
            "SAGEQUEUE_DATA_DIR": str(data_dir),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/healthz", process=process)
        assert (data_dir / "credentials").exists()
    finally:
        process.terminate()
        process.wait(30)


def test_invalid_flag_value_is_refused_with_exit_code_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "sagequeue", "serve", "--role", "api", "--port", "x"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "--port" in result.stderr


@pytest.mark.timeout(120)
def test_api_and_worker_roles_run_as_separate_processes(server_factory):
    api = server_factory("--role", "api")
    worker = server_factory("--role", "worker", data_dir=api.data_dir, wait=False)
    deploy(api, "split", instances=1, concurrency=1)
    runtime = api.client("sagemaker-runtime")
    s3 = api.client("s3")
    started = time.monotonic()
    response = runtime.invoke_endpoint_async(
        EndpointName="split",
        Body=json.dumps({"action": "echo", "value": "two processes"}).encode(),
        ContentType="application/json",
    )
    body, _ = wait_for_object(s3, response["OutputLocation"])
    assert json.loads(body) == {"echo": "two processes"}
    assert worker.process.poll() is None
    assert time.monotonic() - started < 60


def _serve_with_config(tmp_path, text: str) -> subprocess.CompletedProcess:
    config = tmp_path / "sagequeue.yaml"
    config.write_text(text)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "sagequeue",
            "serve",
            "--config",
            str(config),
            "--data-dir",
            str(tmp_path / "data"),
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_declared_bucket_file_that_is_missing_stops_the_start_with_its_path(tmp_path):
    result = _serve_with_config(
        tmp_path, "Buckets:\n  - Name: models\n    Objects:\n      m.tar.gz: nowhere/m.tar.gz\n"
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"file {tmp_path / 'nowhere' / 'm.tar.gz'} does not exist" in output
    assert "Traceback" not in output
    assert "listening on" not in output


def test_invalid_declared_model_stops_the_start_with_the_validation_message(tmp_path):
    result = _serve_with_config(tmp_path, "Models:\n  - ModelName: 'bad name!'\n")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Value 'bad name!' at 'modelName' failed to satisfy constraint" in output
    assert "Traceback" not in output


def test_sqlite_database_at_a_newer_schema_version_stops_the_start_with_one_line(tmp_path):
    import sqlite3

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with sqlite3.connect(data_dir / "sagequeue.db") as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (999)")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sagequeue",
            "serve",
            "--data-dir",
            str(data_dir),
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "schema version 999 is newer than this sagequeue's" in line

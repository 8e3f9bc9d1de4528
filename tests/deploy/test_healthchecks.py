"""The healthcheck commands the image and compose.yaml run, against a real `--role api`
process: they pass when it is ready and fail when nothing answers."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ServerProcess, free_port
from deploy.deployfiles import dockerfile_exec_form, load_compose


def _run(command: list[str], env: dict[str, str]) -> int:
    # The container's `python` is the one sagequeue runs on: here, this interpreter.
    command = [sys.executable if part == "python" else part for part in command]
    return subprocess.run(command, env={**os.environ, **env}, timeout=30, check=False).returncode


@pytest.fixture(scope="module")
def api_port(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("healthcheck")
    server = ServerProcess(data_dir=root / "data", port=free_port(), extra_args=["--role", "api"])
    server.start()
    yield server.port
    server.stop()


def test_the_image_healthcheck_passes_on_a_ready_api_process(api_port: int) -> None:
    command = dockerfile_exec_form("HEALTHCHECK")
    assert _run(command, {"SAGEQUEUE_PORT": str(api_port)}) == 0


def test_the_image_healthcheck_fails_when_nothing_answers() -> None:
    command = dockerfile_exec_form("HEALTHCHECK")
    assert _run(command, {"SAGEQUEUE_PORT": str(free_port())}) != 0


def test_the_compose_api_healthcheck_passes_on_a_ready_api_process(api_port: int) -> None:
    test = load_compose()["services"]["api-1"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    # compose.yaml probes the port its API services listen on; point it at this server's.
    command = [part.replace(":8765/", f":{api_port}/") for part in test[1:]]
    assert _run(command, {}) == 0

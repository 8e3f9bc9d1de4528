"""deploy/compose.yaml: a valid Compose file (``docker compose config`` where the Compose
plugin exists, the Compose specification's JSON schema everywhere) wired the way a sagequeue
fleet needs."""

from __future__ import annotations

import copy
import shutil
import subprocess
from typing import Any

import jsonschema
import pytest

from deploy.deployfiles import (
    COMPOSE_FILE,
    compose_schema,
    interpolate,
    load_compose,
    sagequeue_services,
    service_environment,
)
from sagequeue.config import parse_duration
from sagequeue.dispatch.worker import STOP_GRACE_SECONDS


def _schema_errors(document: dict[str, Any]) -> list[str]:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [error.message for error in validator.iter_errors(document)]


def _roles() -> dict[str, str]:
    return {
        name: service_environment(service)["SAGEQUEUE_ROLE"]
        for name, service in sagequeue_services(load_compose()).items()
    }


def _has_compose_plugin() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    probe = subprocess.run(
        [docker, "compose", "version"], capture_output=True, timeout=10, check=False
    )
    return probe.returncode == 0


def test_compose_file_matches_the_compose_specification() -> None:
    assert _schema_errors(load_compose()) == []


@pytest.mark.parametrize(
    "break_it",
    [
        pytest.param(lambda d: d["services"]["api-1"].__setitem__("enviroment", {}), id="typo"),
        pytest.param(lambda d: d["services"]["api-1"].__setitem__("ports", 8765), id="type"),
        pytest.param(
            lambda d: d["services"]["worker"].__setitem__(
                "depends_on", {"postgres": {"condition": "healthy"}}
            ),
            id="bad-condition",
        ),
    ],
)
def test_a_broken_compose_file_fails_the_schema(break_it: Any) -> None:
    broken = copy.deepcopy(load_compose())
    break_it(broken)
    assert _schema_errors(broken) != []


@pytest.mark.skipif(not _has_compose_plugin(), reason="no docker CLI with the compose plugin")
def test_docker_compose_accepts_the_file() -> None:
    result = subprocess.run(
        ["docker", "compose", "--file", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_two_api_services_and_a_scalable_worker_service() -> None:
    roles = _roles()
    assert sorted(name for name, role in roles.items() if role == "api") == ["api-1", "api-2"]
    assert [name for name, role in roles.items() if role == "worker"] == ["worker"]
    worker = load_compose()["services"]["worker"]
    assert "container_name" not in worker  # `--scale worker=N` needs distinct names
    assert worker["deploy"]["replicas"] >= 2


def test_api_services_publish_distinct_host_ports_and_probe_healthz() -> None:
    compose = load_compose()
    host_ports = []
    for name, role in _roles().items():
        if role != "api":
            continue
        service = compose["services"][name]
        port = service_environment(service)["SAGEQUEUE_PORT"]
        host_port, _, container_port = service["ports"][0].rpartition(":")
        assert container_port == port
        host_ports.append(host_port)
        assert f"127.0.0.1:{port}/healthz" in " ".join(service["healthcheck"]["test"])
    assert len(set(host_ports)) == len(host_ports)


def test_workers_disable_the_image_healthcheck_they_cannot_answer() -> None:
    compose = load_compose()
    for name, role in _roles().items():
        if role == "worker":
            assert compose["services"][name]["healthcheck"] == {"disable": True}


def test_sagequeue_services_wait_for_healthy_postgres_and_s3() -> None:
    compose = load_compose()
    for name, service in sagequeue_services(compose).items():
        for dependency in ("postgres", "minio"):
            assert service["depends_on"][dependency]["condition"] == "service_healthy", name
            assert "test" in compose["services"][dependency]["healthcheck"]


def test_sagequeue_services_get_longer_to_stop_than_the_drain() -> None:
    for name, service in sagequeue_services(load_compose()).items():
        assert parse_duration(service["stop_grace_period"], name) > STOP_GRACE_SECONDS


def test_the_fleet_shares_one_database_and_one_s3_service() -> None:
    compose = load_compose()
    shared = {"SAGEQUEUE_DATABASE", "SAGEQUEUE_OBJECT_STORE", "SAGEQUEUE_S3_ENDPOINT_URL"}
    seen = {
        tuple(service_environment(service)[key] for key in sorted(shared))
        for service in sagequeue_services(compose).values()
    }
    assert len(seen) == 1
    settings = dict(zip(sorted(shared), seen.pop(), strict=True))
    assert settings["SAGEQUEUE_DATABASE"].startswith("postgresql://")
    assert settings["SAGEQUEUE_DATABASE"].endswith("@postgres:5432/sagequeue")
    assert settings["SAGEQUEUE_OBJECT_STORE"] == "s3://"
    assert settings["SAGEQUEUE_S3_ENDPOINT_URL"] == "http://minio:9000"
    postgres = service_environment(compose["services"]["postgres"])
    minio = service_environment(compose["services"]["minio"])
    password = settings["SAGEQUEUE_DATABASE"].split(":")[2].split("@")[0]
    assert password == postgres["POSTGRES_PASSWORD"]
    for service in sagequeue_services(compose).values():
        environment = service_environment(service)
        assert environment["AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
        assert environment["AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]


def test_api_services_share_one_client_credentials_file() -> None:
    compose = load_compose()
    secret_file = COMPOSE_FILE.parent / interpolate(
        compose["secrets"]["client-credentials"]["file"]
    )
    assert secret_file.is_file()
    for name, role in _roles().items():
        if role == "api":
            service = compose["services"][name]
            assert service["secrets"] == ["client-credentials"]
            path = service_environment(service)["SAGEQUEUE_CREDENTIALS_FILE"]
            assert path == "/run/secrets/client-credentials"

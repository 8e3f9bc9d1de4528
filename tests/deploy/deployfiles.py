"""Readers for the deployment files: the Dockerfile, deploy/compose.yaml, deploy/k8s/."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE_FILE = REPO / "deploy" / "compose.yaml"
K8S_DIR = REPO / "deploy" / "k8s"
# The Kubernetes version the manifests are checked against (kubernetes-validate ships
# schemas for a window of releases; see pyproject.toml's lower bound).
K8S_VERSION = "1.31"

_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}")


# ------------------------------------------------------------------------------ Dockerfile
@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, ENV, ...
    arguments: str


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = (pending + line).strip()
        pending = ""
        keyword, _, arguments = text.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
    return instructions


def dockerfile_env(path: Path = DOCKERFILE) -> dict[str, str]:
    """Every ``ENV key=value`` the image sets."""
    env: dict[str, str] = {}
    for instruction in dockerfile_instructions(path):
        if instruction.keyword == "ENV":
            for pair in shlex.split(instruction.arguments):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def dockerfile_exec_form(keyword: str, path: Path = DOCKERFILE) -> list[str]:
    """The JSON (exec) form of the last ``keyword`` instruction, e.g. ENTRYPOINT."""
    found = [i for i in dockerfile_instructions(path) if i.keyword == keyword]
    assert found, f"the Dockerfile has no {keyword}"
    arguments = found[-1].arguments
    if keyword == "HEALTHCHECK":  # options come before CMD
        arguments = arguments[arguments.index("CMD") + len("CMD") :].strip()
    return json.loads(arguments)


# ------------------------------------------------------------------------------ compose
def interpolate(value: str) -> str:
    """Compose's ``${NAME:-default}`` with no variable set: the default ('' without one)."""
    return _INTERPOLATION.sub(lambda match: match.group("default") or "", value)


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def compose_schema() -> dict[str, Any]:
    """The Compose specification's JSON schema, as vendored by check-jsonschema (with its
    Apache-2.0 licence in the same package: licenses/LICENSE.compose-spec)."""
    vendored = files("check_jsonschema.builtin_schemas.vendor")
    return json.loads(vendored.joinpath("compose-spec.json").read_text())


def service_environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment (either compose form), interpolated with the defaults."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.partition("=")[::2] for item in environment)
    return {key: interpolate(str(value)) for key, value in environment.items()}


def service_command(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def sagequeue_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the sagequeue image."""
    return {
        name: service
        for name, service in compose["services"].items()
        if str(service.get("image", "")).startswith("sagequeue")
    }


# ------------------------------------------------------------------------------ Kubernetes
def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())


def k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    """(file name, document) for every resource the kustomization lists."""
    documents = []
    for name in kustomization()["resources"]:
        for document in yaml.safe_load_all((K8S_DIR / name).read_text()):
            if document:
                documents.append((name, document))
    return documents


def k8s_resource(kind: str, name: str) -> dict[str, Any]:
    for _, document in k8s_documents():
        if document["kind"] == kind and document["metadata"]["name"] == name:
            return document
    raise AssertionError(f"no {kind} {name} in {K8S_DIR}")


def k8s_containers() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(workload name, pod spec, container) for every container of every workload."""
    for _, document in k8s_documents():
        if document["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
            pod = document["spec"]["template"]["spec"]
            for container in pod.get("containers", []) + pod.get("initContainers", []):
                yield document["metadata"]["name"], pod, container


def container_environment(container: dict[str, Any]) -> dict[str, str]:
    """A container's environment: envFrom ConfigMaps, then its own literal values.
    Values from Secrets stand as ``<secret:name/key>`` (their content is the operator's)."""
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            config_map = k8s_resource("ConfigMap", source["configMapRef"]["name"])
            environment.update(config_map.get("data", {}))
    for variable in container.get("env", []):
        if "value" in variable:
            environment[variable["name"]] = variable["value"]
        else:
            reference = variable["valueFrom"]["secretKeyRef"]
            environment[variable["name"]] = f"<secret:{reference['name']}/{reference['key']}>"
    return environment

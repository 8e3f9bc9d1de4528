"""deploy/k8s/: valid Kubernetes objects (kubernetes-validate, offline, strict schemas) that
fit together and fit how sagequeue runs."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest

from deploy.deployfiles import (
    K8S_DIR,
    K8S_VERSION,
    container_environment,
    k8s_containers,
    k8s_documents,
    k8s_resource,
    kustomization,
)
from sagequeue.dispatch.worker import STOP_GRACE_SECONDS

DOCUMENTS = k8s_documents()


def _id(item: tuple[str, dict[str, Any]]) -> str:
    name, document = item
    return f"{name}:{document['kind']}/{document['metadata']['name']}"


def _validate(document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def _api_deployment() -> dict[str, Any]:
    return k8s_resource("Deployment", "sagequeue-api")


def _api_container(deployment: dict[str, Any] | None = None) -> dict[str, Any]:
    deployment = deployment or _api_deployment()
    return deployment["spec"]["template"]["spec"]["containers"][0]


def test_kustomization_lists_every_manifest_in_the_folder() -> None:
    listed = set(kustomization()["resources"])
    present = {path.name for path in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


@pytest.mark.parametrize("item", DOCUMENTS, ids=[_id(item) for item in DOCUMENTS])
def test_manifest_is_a_valid_kubernetes_object(item: tuple[str, dict[str, Any]]) -> None:
    _validate(item[1])


@pytest.mark.parametrize(
    "break_it",
    [
        pytest.param(
            lambda d: _api_container(d).__setitem__(
                "readinesProbe", _api_container(d).pop("readinessProbe")
            ),
            id="misspelt-field",
        ),
        pytest.param(lambda d: d["spec"].__setitem__("replicas", "two"), id="wrong-type"),
        pytest.param(lambda d: _api_container(d).pop("name"), id="missing-required"),
    ],
)
def test_a_broken_manifest_is_rejected(break_it: Any) -> None:
    broken = copy.deepcopy(_api_deployment())
    break_it(broken)
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(broken)


def test_the_kustomization_image_is_the_one_the_containers_use() -> None:
    image_names = {image["name"] for image in kustomization()["images"]}
    assert {container["image"] for _, _, container in k8s_containers()} <= image_names


def test_api_readiness_is_healthz_on_the_port_the_server_listens_on() -> None:
    container = _api_container()
    port_names = {port["name"]: port["containerPort"] for port in container["ports"]}
    listen_port = int(container_environment(container)["SAGEQUEUE_PORT"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        http_get = container[probe]["httpGet"]
        assert http_get["path"] == "/healthz"
        assert port_names[http_get["port"]] == listen_port


def test_workers_claim_no_http_port_and_no_http_probe() -> None:
    # A worker-only process serves no HTTP today (docs/deploy.md says so).
    worker = k8s_resource("Deployment", "sagequeue-worker")
    for container in worker["spec"]["template"]["spec"]["containers"]:
        assert "--role" in container["args"]
        assert container["args"][container["args"].index("--role") + 1] == "worker"
        assert not container.get("ports")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert "httpGet" not in container.get(probe, {})


def test_the_service_reaches_the_api_pods_on_their_http_port() -> None:
    service = k8s_resource("Service", "sagequeue")
    deployment = _api_deployment()
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    port_names = {port["name"] for port in _api_container(deployment)["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= port_names


def test_every_pod_gets_longer_to_stop_than_the_worker_drain() -> None:
    for name, pod, container in k8s_containers():
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {})
        pre_stop_seconds = float(pre_stop["command"][1]) if pre_stop else 0.0
        grace = pod["terminationGracePeriodSeconds"]
        assert grace > STOP_GRACE_SECONDS + pre_stop_seconds, name


def test_every_container_has_resource_requests_and_limits() -> None:
    for name, _, container in k8s_containers():
        resources = container["resources"]
        assert {"cpu", "memory"} <= resources["requests"].keys(), name
        assert "memory" in resources["limits"], name


def test_every_secret_and_config_map_reference_resolves() -> None:
    for name, pod, container in k8s_containers():
        for variable in container.get("env", []):
            reference = variable.get("valueFrom", {}).get("secretKeyRef")
            if reference:
                secret = k8s_resource("Secret", reference["name"])
                assert reference["key"] in secret["stringData"], (name, reference)
        for source in container.get("envFrom", []):
            k8s_resource("ConfigMap", source["configMapRef"]["name"])
        volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "secret" in volume:
                secret = k8s_resource("Secret", volume["secret"]["secretName"])
                for item in volume["secret"].get("items", []):
                    assert item["key"] in secret["stringData"], (name, item)


def test_api_pods_share_one_client_credentials_file_from_the_secret() -> None:
    container = _api_container()
    path = container_environment(container)["SAGEQUEUE_CREDENTIALS_FILE"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    directory, _, file_name = path.rpartition("/")
    volumes = {v["name"]: v for v in _api_deployment()["spec"]["template"]["spec"]["volumes"]}
    volume = volumes[mounts[directory]]
    assert {"key": "credentials", "path": file_name} in volume["secret"]["items"]


def test_the_secret_holds_placeholders_only() -> None:
    # The manifest must never carry a usable secret: every value is for the operator to set.
    secret = k8s_resource("Secret", "sagequeue-secrets")
    for key, value in secret["stringData"].items():
        assert "CHANGE-ME" in value, key

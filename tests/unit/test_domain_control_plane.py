"""The control plane's rules, on the in-memory store."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sagequeue.config import Settings
from sagequeue.domain.errors import UnknownOperation, ValidationException
from sagequeue.frontdoor.control import ControlPlane
from sagequeue.ports import ResourceKind
from sagequeue.stores.memory import MemoryStore

ARN = "arn:aws:sagemaker:us-east-1:000000000000"


class Ticks:
    """A clock that advances one second per reading, so creation order is visible."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def control(store: MemoryStore) -> ControlPlane:
    return ControlPlane(store, Settings(), clock=Ticks())


def model(name: str = "m", image: str = "sagequeue/python") -> dict[str, Any]:
    return {
        "ModelName": name,
        "PrimaryContainer": {"Image": image, "ModelDataUrl": "s3://models/m.tar.gz"},
    }


def endpoint_config(name: str = "c", model_name: str = "m") -> dict[str, Any]:
    return {
        "EndpointConfigName": name,
        "ProductionVariants": [
            {
                "VariantName": "AllTraffic",
                "ModelName": model_name,
                "InitialInstanceCount": 2,
                "InstanceType": "ml.m5.large",
            }
        ],
        "AsyncInferenceConfig": {"OutputConfig": {"S3OutputPath": "s3://out/results"}},
    }


def deploy(control: ControlPlane, endpoint: str = "e") -> None:
    run(control.call("CreateModel", model()))
    run(control.call("CreateEndpointConfig", endpoint_config()))
    run(control.call("CreateEndpoint", {"EndpointName": endpoint, "EndpointConfigName": "c"}))


def set_status(store: MemoryStore, name: str, status: str) -> None:
    resource = run(store.get_resource(ResourceKind.ENDPOINT, name))
    resource.doc = {**resource.doc, "EndpointStatus": status}
    assert run(store.update_resource(resource))


def test_create_model_returns_arn_with_lower_cased_name(control: ControlPlane) -> None:
    result = run(control.call("CreateModel", model("MyModel")))
    assert result == {"ModelArn": f"{ARN}:model/mymodel"}


def test_describe_model_returns_what_was_created(control: ControlPlane) -> None:
    run(control.call("CreateModel", model()))
    described = run(control.call("DescribeModel", {"ModelName": "m"}))
    assert described["PrimaryContainer"]["Image"] == "sagequeue/python"
    assert described["ModelArn"] == f"{ARN}:model/m"
    assert isinstance(described["CreationTime"], float)


def test_describe_missing_model_is_validation_exception_with_sagemaker_text(
    control: ControlPlane,
) -> None:
    with pytest.raises(ValidationException) as caught:
        run(control.call("DescribeModel", {"ModelName": "nope"}))
    assert caught.value.message == f'Could not find model "{ARN}:model/nope".'


def test_duplicate_model_is_refused(control: ControlPlane) -> None:
    run(control.call("CreateModel", model()))
    with pytest.raises(ValidationException) as caught:
        run(control.call("CreateModel", model()))
    assert caught.value.message == f'Cannot create already existing model "{ARN}:model/m".'


def test_model_names_compare_case_insensitively(control: ControlPlane) -> None:
    run(control.call("CreateModel", model("abc")))
    with pytest.raises(ValidationException):
        run(control.call("CreateModel", model("ABC")))


def test_model_name_must_match_the_sagemaker_pattern(control: ControlPlane) -> None:
    with pytest.raises(ValidationException) as caught:
        run(control.call("CreateModel", model("bad_name")))
    assert caught.value.message == (
        "1 validation error detected: Value 'bad_name' at 'modelName' failed to satisfy "
        "constraint: Member must satisfy regular expression pattern: "
        "[a-zA-Z0-9]([\\-a-zA-Z0-9]*[a-zA-Z0-9])?"
    )


def test_missing_required_member_is_reported_as_null(control: ControlPlane) -> None:
    with pytest.raises(ValidationException) as caught:
        run(control.call("DescribeEndpoint", {}))
    assert "Value null at 'endpointName' failed to satisfy constraint: Member must not be null" in (
        caught.value.message
    )


def test_nested_violations_name_the_member_path(control: ControlPlane) -> None:
    run(control.call("CreateModel", model()))
    config = endpoint_config()
    config["ProductionVariants"][0]["InitialInstanceCount"] = 0
    with pytest.raises(ValidationException) as caught:
        run(control.call("CreateEndpointConfig", config))
    assert "at 'productionVariants.1.member.initialInstanceCount'" in caught.value.message


def test_model_without_container_is_refused(control: ControlPlane) -> None:
    with pytest.raises(ValidationException, match="PrimaryContainer"):
        run(control.call("CreateModel", {"ModelName": "m"}))


def test_delete_missing_model_is_validation_exception(control: ControlPlane) -> None:
    with pytest.raises(ValidationException, match="Could not find model"):
        run(control.call("DeleteModel", {"ModelName": "m"}))


def test_endpoint_config_without_async_inference_config_is_refused(
    control: ControlPlane,
) -> None:
    run(control.call("CreateModel", model()))
    config = endpoint_config()
    del config["AsyncInferenceConfig"]
    with pytest.raises(ValidationException, match="asynchronous inference endpoints only"):
        run(control.call("CreateEndpointConfig", config))


def test_endpoint_config_needs_an_s3_output_path(control: ControlPlane) -> None:
    run(control.call("CreateModel", model()))
    config = endpoint_config()
    config["AsyncInferenceConfig"] = {"OutputConfig": {"S3FailurePath": "s3://out/failures"}}
    with pytest.raises(ValidationException, match="S3OutputPath"):
        run(control.call("CreateEndpointConfig", config))


def test_endpoint_config_of_missing_model_is_refused(control: ControlPlane) -> None:
    with pytest.raises(ValidationException) as caught:
        run(control.call("CreateEndpointConfig", endpoint_config(model_name="ghost")))
    assert caught.value.message == f'Could not find model "{ARN}:model/ghost".'


def test_duplicate_endpoint_config_is_refused(control: ControlPlane) -> None:
    run(control.call("CreateModel", model()))
    run(control.call("CreateEndpointConfig", endpoint_config()))
    with pytest.raises(ValidationException) as caught:
        run(control.call("CreateEndpointConfig", endpoint_config()))
    assert caught.value.message == (
        f'Cannot create already existing endpoint configuration "{ARN}:endpoint-config/c".'
    )


def test_create_endpoint_starts_creating_with_a_deployment_snapshot(
    control: ControlPlane, store: MemoryStore
) -> None:
    deploy(control)
    stored = run(store.get_resource(ResourceKind.ENDPOINT, "e")).doc
    assert stored["EndpointStatus"] == "Creating"
    assert stored["_Generation"] == 1
    assert stored["_Deployment"]["EndpointConfig"]["EndpointConfigName"] == "c"
    assert set(stored["_Deployment"]["Models"]) == {"m"}


def test_describe_endpoint_hides_internal_keys(control: ControlPlane) -> None:
    deploy(control)
    described = run(control.call("DescribeEndpoint", {"EndpointName": "e"}))
    assert not [k for k in described if k.startswith("_")]
    assert described["EndpointArn"] == f"{ARN}:endpoint/e"
    assert described["ProductionVariants"][0]["DesiredInstanceCount"] == 2
    assert described["AsyncInferenceConfig"]["OutputConfig"]["S3OutputPath"] == ("s3://out/results")


def test_duplicate_endpoint_is_refused_with_sagemaker_text(control: ControlPlane) -> None:
    deploy(control)
    with pytest.raises(ValidationException) as caught:
        run(control.call("CreateEndpoint", {"EndpointName": "e", "EndpointConfigName": "c"}))
    assert caught.value.message == f'Cannot create already existing endpoint "{ARN}:endpoint/e".'


def test_endpoint_of_missing_config_is_refused(control: ControlPlane) -> None:
    with pytest.raises(ValidationException) as caught:
        run(control.call("CreateEndpoint", {"EndpointName": "e", "EndpointConfigName": "x"}))
    assert caught.value.message == (
        f'Could not find endpoint configuration "{ARN}:endpoint-config/x".'
    )


def test_update_of_in_progress_endpoint_is_refused(control: ControlPlane) -> None:
    deploy(control)
    with pytest.raises(ValidationException) as caught:
        run(control.call("UpdateEndpoint", {"EndpointName": "e", "EndpointConfigName": "c"}))
    assert caught.value.message == f'Cannot update in-progress endpoint "{ARN}:endpoint/e".'


def test_update_keeps_the_old_config_name_while_updating(
    control: ControlPlane, store: MemoryStore
) -> None:
    deploy(control)
    set_status(store, "e", "InService")
    run(control.call("CreateEndpointConfig", endpoint_config(name="c2")))
    run(control.call("UpdateEndpoint", {"EndpointName": "e", "EndpointConfigName": "c2"}))
    stored = run(store.get_resource(ResourceKind.ENDPOINT, "e")).doc
    assert stored["EndpointStatus"] == "Updating"
    assert stored["EndpointConfigName"] == "c"
    assert stored["_Deployment"]["EndpointConfig"]["EndpointConfigName"] == "c2"
    assert stored["_Generation"] == 2


def test_delete_endpoint_removes_it_at_once(control: ControlPlane) -> None:
    deploy(control)
    run(control.call("DeleteEndpoint", {"EndpointName": "e"}))
    with pytest.raises(ValidationException) as caught:
        run(control.call("DescribeEndpoint", {"EndpointName": "e"}))
    assert caught.value.message == f'Could not find endpoint "{ARN}:endpoint/e".'


def test_list_endpoints_filters_by_status(control: ControlPlane, store: MemoryStore) -> None:
    deploy(control, "e1")
    run(control.call("CreateEndpoint", {"EndpointName": "e2", "EndpointConfigName": "c"}))
    set_status(store, "e2", "InService")
    listed = run(control.call("ListEndpoints", {"StatusEquals": "InService"}))
    assert [e["EndpointName"] for e in listed["Endpoints"]] == ["e2"]


def test_list_models_sorts_newest_first_by_default(control: ControlPlane) -> None:
    for name in ("a", "b", "c"):
        run(control.call("CreateModel", model(name)))
    listed = run(control.call("ListModels", {}))
    assert [m["ModelName"] for m in listed["Models"]] == ["c", "b", "a"]


def test_list_models_sorts_by_name_ascending(control: ControlPlane) -> None:
    for name in ("b", "c", "a"):
        run(control.call("CreateModel", model(name)))
    listed = run(control.call("ListModels", {"SortBy": "Name", "SortOrder": "Ascending"}))
    assert [m["ModelName"] for m in listed["Models"]] == ["a", "b", "c"]


def test_list_models_filters_by_name_contains(control: ControlPlane) -> None:
    for name in ("alpha", "beta", "alphabet"):
        run(control.call("CreateModel", model(name)))
    listed = run(control.call("ListModels", {"NameContains": "ALPHA", "SortBy": "Name"}))
    assert [m["ModelName"] for m in listed["Models"]] == ["alphabet", "alpha"]


def test_list_models_pages_with_next_token(control: ControlPlane) -> None:
    for index in range(5):
        run(control.call("CreateModel", model(f"m{index}")))
    names: list[str] = []
    params: dict[str, Any] = {"MaxResults": 2, "SortBy": "Name", "SortOrder": "Ascending"}
    while True:
        page = run(control.call("ListModels", params))
        names += [m["ModelName"] for m in page["Models"]]
        if "NextToken" not in page:
            break
        params["NextToken"] = page["NextToken"]
    assert names == ["m0", "m1", "m2", "m3", "m4"]


def test_list_models_filters_by_creation_time(control: ControlPlane) -> None:
    for name in ("a", "b", "c"):
        run(control.call("CreateModel", model(name)))
    b_time = run(control.call("DescribeModel", {"ModelName": "b"}))["CreationTime"]
    listed = run(control.call("ListModels", {"CreationTimeAfter": b_time}))
    assert [m["ModelName"] for m in listed["Models"]] == ["c"]


def test_invalid_next_token_is_refused(control: ControlPlane) -> None:
    with pytest.raises(ValidationException):
        run(control.call("ListModels", {"NextToken": "garbage!"}))


def test_unknown_action_is_unknown_operation(control: ControlPlane) -> None:
    with pytest.raises(UnknownOperation):
        run(control.call("CreateTrainingJob", {}))


DECLARED = {
    "Models": [model()],
    "EndpointConfigs": [endpoint_config()],
    "Endpoints": [{"EndpointName": "e", "EndpointConfigName": "c"}],
}


def test_declarations_create_missing_resources(control: ControlPlane) -> None:
    run(control.apply_declarations(DECLARED))
    described = run(control.call("DescribeEndpoint", {"EndpointName": "e"}))
    assert described["EndpointStatus"] == "Creating"


def test_declarations_applied_twice_change_nothing(
    control: ControlPlane, store: MemoryStore
) -> None:
    run(control.apply_declarations(DECLARED))
    set_status(store, "e", "InService")
    before = run(store.get_resource(ResourceKind.ENDPOINT, "e"))
    run(control.apply_declarations(DECLARED))
    after = run(store.get_resource(ResourceKind.ENDPOINT, "e"))
    assert after.version == before.version
    assert after.doc == before.doc


def test_changed_declared_model_replaces_it_and_updates_the_endpoint(
    control: ControlPlane, store: MemoryStore
) -> None:
    run(control.apply_declarations(DECLARED))
    set_status(store, "e", "InService")
    changed = {**DECLARED, "Models": [model(image="http://127.0.0.1:9999")]}
    run(control.apply_declarations(changed))
    described = run(control.call("DescribeModel", {"ModelName": "m"}))
    assert described["PrimaryContainer"]["Image"] == "http://127.0.0.1:9999"
    stored = run(store.get_resource(ResourceKind.ENDPOINT, "e")).doc
    assert stored["EndpointStatus"] == "Updating"
    assert stored["_Deployment"]["Models"]["m"]["PrimaryContainer"]["Image"] == (
        "http://127.0.0.1:9999"
    )


def test_invalid_declaration_is_refused(control: ControlPlane) -> None:
    with pytest.raises(ValidationException):
        run(control.apply_declarations({"Models": [model("bad_name")]}))


def test_invalid_changed_declaration_keeps_the_stored_model(control: ControlPlane) -> None:
    run(control.apply_declarations({"Models": [model()]}))
    broken = {"ModelName": "m", "PrimaryContainer": {"Image": 42}}
    with pytest.raises(ValidationException):
        run(control.apply_declarations({"Models": [broken]}))
    described = run(control.call("DescribeModel", {"ModelName": "m"}))
    assert described["PrimaryContainer"]["Image"] == "sagequeue/python"


class _InterleavingStore(MemoryStore):
    """Yields to the event loop on every read, as a database does: two API processes'
    look-then-create steps interleave."""

    async def get_resource(self, kind, name):
        await asyncio.sleep(0)
        return await super().get_resource(kind, name)


def test_api_processes_applying_the_same_declarations_at_once_both_start() -> None:
    store = _InterleavingStore()
    first = ControlPlane(store, Settings())
    second = ControlPlane(store, Settings())

    async def both() -> None:
        await asyncio.gather(
            first.apply_declarations(DECLARED), second.apply_declarations(DECLARED)
        )

    run(both())
    assert run(store.get_resource(ResourceKind.ENDPOINT, "e")) is not None


# ------------------------------------------------------------------ weights and capacities


def two_variant_endpoint(control: ControlPlane, store: MemoryStore, endpoint: str = "e") -> None:
    run(control.call("CreateModel", model()))
    config = endpoint_config()
    config["ProductionVariants"] = [
        {**config["ProductionVariants"][0], "VariantName": "A", "InitialVariantWeight": 1.0},
        {**config["ProductionVariants"][0], "VariantName": "B", "InitialVariantWeight": 3.0},
    ]
    run(control.call("CreateEndpointConfig", config))
    run(control.call("CreateEndpoint", {"EndpointName": endpoint, "EndpointConfigName": "c"}))
    set_status(store, endpoint, "InService")


def update_weights(control: ControlPlane, *entries: dict[str, Any]) -> dict[str, Any]:
    return run(
        control.call(
            "UpdateEndpointWeightsAndCapacities",
            {"EndpointName": "e", "DesiredWeightsAndCapacities": list(entries)},
        )
    )


def variants_of(store: MemoryStore) -> dict[str, tuple[float, float, int]]:
    doc = run(store.get_resource(ResourceKind.ENDPOINT, "e")).doc
    return {
        v["VariantName"]: (v["CurrentWeight"], v["DesiredWeight"], v["DesiredInstanceCount"])
        for v in doc["ProductionVariants"]
    }


def test_weights_and_capacities_change_at_once_and_the_endpoint_updates(
    control: ControlPlane, store: MemoryStore
) -> None:
    two_variant_endpoint(control, store)
    result = update_weights(
        control,
        {"VariantName": "A", "DesiredWeight": 0.0},
        {"VariantName": "B", "DesiredInstanceCount": 3},
    )
    assert result == {"EndpointArn": f"{ARN}:endpoint/e"}
    assert variants_of(store) == {"A": (0.0, 0.0, 2), "B": (3.0, 3.0, 3)}
    assert run(store.get_resource(ResourceKind.ENDPOINT, "e")).doc["EndpointStatus"] == "Updating"


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (
            [{"VariantName": "C", "DesiredWeight": 1.0}],
            'The variant name(s) "C" is/are not present within endpoint configuration "c".',
        ),
        (
            [
                {"VariantName": "A", "DesiredWeight": 1.0},
                {"VariantName": "A", "DesiredWeight": 2.0},
            ],
            'The variant name "A" was non-unique within the request.',
        ),
        (
            [
                {"VariantName": "A", "DesiredWeight": 0.0},
                {"VariantName": "B", "DesiredWeight": 0.0},
            ],
            f'The sum of the variant weights of endpoint "{ARN}:endpoint/e" must be greater than 0',
        ),
        (
            [{"VariantName": "A", "DesiredWeight": -1.0}],
            "1 validation error detected: Value '-1.0' at "
            "'desiredWeightsAndCapacities.1.member.desiredWeight' failed to satisfy "
            "constraint: Member must have value greater than or equal to 0",
        ),
        (
            [{"VariantName": "A", "DesiredInstanceCount": -1}],
            "1 validation error detected: Value '-1' at "
            "'desiredWeightsAndCapacities.1.member.desiredInstanceCount' failed to satisfy "
            "constraint: Member must have value greater than or equal to 0",
        ),
        (
            [{"VariantName": "A"}],
            'Either DesiredWeight or DesiredInstanceCount must be specified for the variant "A".',
        ),
    ],
)
def test_bad_weights_and_capacities_are_refused_and_change_nothing(
    control: ControlPlane, store: MemoryStore, entries: list[dict[str, Any]], message: str
) -> None:
    two_variant_endpoint(control, store)
    before = run(store.get_resource(ResourceKind.ENDPOINT, "e"))
    with pytest.raises(ValidationException) as caught:
        update_weights(control, *entries)
    assert caught.value.message.startswith(message)
    after = run(store.get_resource(ResourceKind.ENDPOINT, "e"))
    assert (after.doc, after.version) == (before.doc, before.version)


def test_weights_of_an_updating_endpoint_are_refused(
    control: ControlPlane, store: MemoryStore
) -> None:
    two_variant_endpoint(control, store)
    update_weights(control, {"VariantName": "A", "DesiredWeight": 2.0})
    with pytest.raises(ValidationException) as caught:
        update_weights(control, {"VariantName": "A", "DesiredWeight": 5.0})
    assert caught.value.message == f'Cannot update in-progress endpoint "{ARN}:endpoint/e".'
    assert variants_of(store)["A"] == (2.0, 2.0, 2)


def test_weights_of_a_missing_endpoint_are_refused(control: ControlPlane) -> None:
    with pytest.raises(ValidationException) as caught:
        update_weights(control, {"VariantName": "A", "DesiredWeight": 2.0})
    assert caught.value.message == f'Could not find endpoint "{ARN}:endpoint/e".'

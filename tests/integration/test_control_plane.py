"""The SageMaker control plane through boto3 against a real server."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError, WaiterError

ARN = "arn:aws:sagemaker:us-east-1:000000000000"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def error_of(call: Any, **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    return caught.value.response["Error"]


def create_model(sagemaker: Any, name: str) -> None:
    sagemaker.create_model(
        ModelName=name,
        PrimaryContainer={"Image": "http://127.0.0.1:9", "Environment": {"A": "1"}},
        ExecutionRoleArn="arn:aws:iam::000000000000:role/sagemaker",
    )


def create_config(sagemaker: Any, name: str, model: str, **extra: Any) -> None:
    sagemaker.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": model,
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
            }
        ],
        AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": "s3://results/out"}},
        **extra,
    )


def new_config(sagemaker: Any) -> str:
    """A new model (its container at http://127.0.0.1:9, which answers nothing) and a new
    endpoint config serving it; returns the config's name."""
    model, config = unique("m"), unique("c")
    create_model(sagemaker, model)
    create_config(sagemaker, config, model)
    return config


def test_model_round_trip(sagemaker: Any) -> None:
    name = unique("Model")
    arn = sagemaker.create_model(ModelName=name, PrimaryContainer={"Image": "sagequeue/python"})[
        "ModelArn"
    ]
    assert arn == f"{ARN}:model/{name.lower()}"
    described = sagemaker.describe_model(ModelName=name)
    assert described["ModelName"] == name
    assert described["PrimaryContainer"]["Image"] == "sagequeue/python"
    sagemaker.delete_model(ModelName=name)
    assert error_of(sagemaker.describe_model, ModelName=name)["Code"] == "ValidationException"


def test_describe_missing_model_has_sagemaker_message(sagemaker: Any) -> None:
    error = error_of(sagemaker.describe_model, ModelName="no-such-model")
    assert error == {
        "Code": "ValidationException",
        "Message": f'Could not find model "{ARN}:model/no-such-model".',
    }


def test_duplicate_model_is_validation_exception(sagemaker: Any) -> None:
    name = unique("m")
    create_model(sagemaker, name)
    error = error_of(create_model, sagemaker=sagemaker, name=name)
    assert error["Code"] == "ValidationException"
    assert error["Message"] == f'Cannot create already existing model "{ARN}:model/{name}".'


def test_invalid_model_name_is_validation_exception_naming_the_member(sagemaker: Any) -> None:
    error = error_of(sagemaker.create_model, ModelName="bad_name", PrimaryContainer={"Image": "x"})
    assert error["Code"] == "ValidationException"
    assert "at 'modelName'" in error["Message"]


def test_endpoint_config_without_async_config_is_refused(sagemaker: Any) -> None:
    model = unique("m")
    create_model(sagemaker, model)
    error = error_of(
        sagemaker.create_endpoint_config,
        EndpointConfigName=unique("c"),
        ProductionVariants=[{"VariantName": "v", "ModelName": model, "InitialInstanceCount": 1}],
    )
    assert error["Code"] == "ValidationException"
    assert "asynchronous inference endpoints only" in error["Message"]


def test_endpoint_config_round_trip(sagemaker: Any) -> None:
    config = new_config(sagemaker)
    described = sagemaker.describe_endpoint_config(EndpointConfigName=config)
    assert described["EndpointConfigArn"] == f"{ARN}:endpoint-config/{config}"
    assert described["AsyncInferenceConfig"]["OutputConfig"]["S3OutputPath"] == ("s3://results/out")
    listed = sagemaker.list_endpoint_configs(NameContains=config)["EndpointConfigs"]
    assert [c["EndpointConfigName"] for c in listed] == [config]
    sagemaker.delete_endpoint_config(EndpointConfigName=config)
    error = error_of(sagemaker.describe_endpoint_config, EndpointConfigName=config)
    assert (
        error["Message"]
        == f'Could not find endpoint configuration "{ARN}:endpoint-config/{config}".'
    )


def test_create_endpoint_starts_creating(sagemaker: Any) -> None:
    config, endpoint = new_config(sagemaker), unique("e")
    arn = sagemaker.create_endpoint(EndpointName=endpoint, EndpointConfigName=config)["EndpointArn"]
    assert arn == f"{ARN}:endpoint/{endpoint}"
    described = sagemaker.describe_endpoint(EndpointName=endpoint)
    assert described["EndpointStatus"] in ("Creating", "InService", "Failed")
    assert described["EndpointConfigName"] == config
    assert not [k for k in described if k.startswith("_")]
    sagemaker.delete_endpoint(EndpointName=endpoint)


def test_duplicate_endpoint_is_refused(sagemaker: Any) -> None:
    config, endpoint = new_config(sagemaker), unique("e")
    sagemaker.create_endpoint(EndpointName=endpoint, EndpointConfigName=config)
    error = error_of(sagemaker.create_endpoint, EndpointName=endpoint, EndpointConfigName=config)
    assert error["Code"] == "ValidationException"
    assert (
        error["Message"] == f'Cannot create already existing endpoint "{ARN}:endpoint/{endpoint}".'
    )
    sagemaker.delete_endpoint(EndpointName=endpoint)


def test_endpoint_of_missing_config_is_refused(sagemaker: Any) -> None:
    error = error_of(sagemaker.create_endpoint, EndpointName=unique("e"), EndpointConfigName="nope")
    assert (
        error["Message"] == f'Could not find endpoint configuration "{ARN}:endpoint-config/nope".'
    )


def test_update_of_missing_endpoint_is_refused(sagemaker: Any) -> None:
    config = new_config(sagemaker)
    error = error_of(sagemaker.update_endpoint, EndpointName="ghost", EndpointConfigName=config)
    assert error["Message"] == f'Could not find endpoint "{ARN}:endpoint/ghost".'


def test_list_endpoints_paginates(sagemaker: Any) -> None:
    config = new_config(sagemaker)
    marker = uuid.uuid4().hex[:6]
    names = [f"p{marker}-{i}" for i in range(3)]
    for name in names:
        sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=config)
    paginator = sagemaker.get_paginator("list_endpoints")
    seen = [
        e["EndpointName"]
        for page in paginator.paginate(
            NameContains=marker,
            SortBy="Name",
            SortOrder="Ascending",
            PaginationConfig={"PageSize": 2},
        )
        for e in page["Endpoints"]
    ]
    assert seen == names
    for name in names:
        sagemaker.delete_endpoint(EndpointName=name)


def test_endpoint_deleted_waiter_returns_after_delete(sagemaker: Any) -> None:
    config, endpoint = new_config(sagemaker), unique("e")
    sagemaker.create_endpoint(EndpointName=endpoint, EndpointConfigName=config)
    sagemaker.delete_endpoint(EndpointName=endpoint)
    sagemaker.get_waiter("endpoint_deleted").wait(
        EndpointName=endpoint, WaiterConfig={"Delay": 1, "MaxAttempts": 5}
    )


def test_endpoint_with_unreachable_container_ends_failed(server_factory: Any) -> None:
    """The in_service waiter stops with an error when the endpoint fails."""
    server = server_factory("--container-startup-timeout", "2")
    sagemaker = server.client("sagemaker")
    config, endpoint = new_config(sagemaker), unique("e")  # container answers nothing
    sagemaker.create_endpoint(EndpointName=endpoint, EndpointConfigName=config)
    with pytest.raises(WaiterError):
        sagemaker.get_waiter("endpoint_in_service").wait(
            EndpointName=endpoint, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
        )
    described = sagemaker.describe_endpoint(EndpointName=endpoint)
    assert described["EndpointStatus"] == "Failed"
    assert "did not pass GET /ping" in described["FailureReason"]
    sagemaker.delete_endpoint(EndpointName=endpoint)


def test_unknown_action_is_unknown_operation(shared_server: Any) -> None:
    import urllib.request

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(
        method="POST",
        url=shared_server.url + "/",
        data=b"{}",
        headers={
            "X-Amz-Target": "SageMaker.CreateTrainingJob",
            "Content-Type": "application/x-amz-json-1.1",
        },
    )
    SigV4Auth(Credentials(*shared_server.credentials), "sagemaker", "us-east-1").add_auth(request)
    prepared = request.prepare()
    http_request = urllib.request.Request(
        prepared.url, data=prepared.body, headers=dict(prepared.headers), method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(http_request, timeout=10)
    assert caught.value.headers["x-amzn-errortype"] == "UnknownOperationException"


def test_state_survives_restart(server_factory: Any) -> None:
    server = server_factory()
    sagemaker = server.client("sagemaker")
    create_model(sagemaker, "kept")
    server.stop()
    server.start()
    assert server.client("sagemaker").describe_model(ModelName="kept")["ModelName"] == "kept"


def test_declared_resources_are_created_at_start(server_factory: Any, tmp_path: Any) -> None:
    config_file = tmp_path / "sagequeue.yaml"
    config_file.write_text(
        "Models:\n"
        "  - ModelName: declared\n"
        "    PrimaryContainer: {Image: 'http://127.0.0.1:9'}\n"
        "EndpointConfigs:\n"
        "  - EndpointConfigName: declared-config\n"
        "    ProductionVariants:\n"
        "      - {VariantName: v, ModelName: declared, InitialInstanceCount: 1}\n"
        "    AsyncInferenceConfig: {OutputConfig: {S3OutputPath: 's3://results/declared'}}\n"
        "Endpoints:\n"
        "  - {EndpointName: declared-ep, EndpointConfigName: declared-config}\n"
    )
    server = server_factory("--config", str(config_file))
    sagemaker = server.client("sagemaker")
    described = sagemaker.describe_endpoint(EndpointName="declared-ep")
    assert described["EndpointConfigName"] == "declared-config"
    created = described["CreationTime"]
    server.stop()
    server.start()
    again = server.client("sagemaker").describe_endpoint(EndpointName="declared-ep")
    assert again["CreationTime"] == created

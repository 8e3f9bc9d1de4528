"""Deploying test models on a running server, the way a SageMaker user would."""

from __future__ import annotations

import io
import tarfile
import time
import uuid
from pathlib import Path

MODELS = Path(__file__).parent / "models"
ROLE_ARN = "arn:aws:iam::000000000000:role/sagequeue-tests"


def model_tarball(model_dir: Path) -> bytes:
    """A SageMaker-style model.tar.gz of a directory (code/inference.py inside)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(model_dir.rglob("*")):
            if "__pycache__" in path.parts:
                continue
            tar.add(path, arcname=str(path.relative_to(model_dir)), recursive=False)
    return buffer.getvalue()


def deploy(
    server,
    endpoint_name: str,
    model_dir: Path = MODELS / "behave",
    *,
    bucket: str = "acceptance",
    instances: int = 1,
    concurrency: int = 1,
    failure_path: bool = True,
    wait: bool = True,
) -> dict:
    """Upload the model, create model + endpoint config + endpoint, wait for InService."""
    s3 = server.client("s3")
    sagemaker = server.client("sagemaker")
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    key = f"models/{endpoint_name}/model.tar.gz"
    s3.put_object(Bucket=bucket, Key=key, Body=model_tarball(model_dir))
    suffix = uuid.uuid4().hex[:8]
    model_name = f"{endpoint_name}-model-{suffix}"
    config_name = f"{endpoint_name}-config-{suffix}"
    sagemaker.create_model(
        ModelName=model_name,
        ExecutionRoleArn=ROLE_ARN,
        PrimaryContainer={"Image": "sagequeue/python", "ModelDataUrl": f"s3://{bucket}/{key}"},
    )
    output_config = {"S3OutputPath": f"s3://{bucket}/output/{endpoint_name}"}
    if failure_path:
        output_config["S3FailurePath"] = f"s3://{bucket}/failures/{endpoint_name}"
    sagemaker.create_endpoint_config(
        EndpointConfigName=config_name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": model_name,
                "InitialInstanceCount": instances,
                "InstanceType": "ml.m5.large",
            }
        ],
        AsyncInferenceConfig={
            "OutputConfig": output_config,
            "ClientConfig": {"MaxConcurrentInvocationsPerInstance": concurrency},
        },
    )
    sagemaker.create_endpoint(EndpointName=endpoint_name, EndpointConfigName=config_name)
    if wait:
        sagemaker.get_waiter("endpoint_in_service").wait(
            EndpointName=endpoint_name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 300}
        )
    return sagemaker.describe_endpoint(EndpointName=endpoint_name)


def split_s3_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def read_object(s3, uri: str) -> tuple[bytes, str]:
    bucket, key = split_s3_uri(uri)
    response = s3.get_object(Bucket=bucket, Key=key)
    return response["Body"].read(), response["ContentType"]


def wait_for_object(s3, uri: str, timeout: float = 30.0) -> tuple[bytes, str]:
    """Poll S3 for an object, as the SageMaker SDK's AsyncPredictor does."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return read_object(s3, uri)
        except s3.exceptions.NoSuchKey:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def object_exists(s3, uri: str) -> bool:
    bucket, key = split_s3_uri(uri)
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except s3.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] in ("404", "NoSuchKey"):
            return False
        raise
    return True


def invocation_status(server, endpoint_name: str, inference_id: str) -> dict:
    """The status extension: GET /endpoints/{name}/async-invocations/{id}, SigV4-signed."""
    import json
    import urllib.error
    import urllib.parse
    import urllib.request

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    access, secret = server.credentials
    path = (
        f"/endpoints/{urllib.parse.quote(endpoint_name, safe='')}/async-invocations/"
        f"{urllib.parse.quote(inference_id, safe='')}"
    )
    request = AWSRequest(method="GET", url=server.url + path)
    SigV4Auth(Credentials(access, secret), "sagemaker", "us-east-1").add_auth(request)
    prepared = request.prepare()
    http_request = urllib.request.Request(prepared.url, headers=dict(prepared.headers))
    try:
        with urllib.request.urlopen(http_request, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"status call failed: {exc.code} {exc.read()!r}") from None


def wait_for_status(server, endpoint_name: str, inference_id: str, timeout: float = 60.0) -> dict:
    """Poll the status extension until the invocation is final."""
    deadline = time.monotonic() + timeout
    while True:
        status = invocation_status(server, endpoint_name, inference_id)
        if status["Status"] in ("Completed", "Failed", "Expired"):
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"{inference_id} still {status['Status']} after {timeout}s")
        time.sleep(0.05)


def create_labelled_model(server, name: str, label: str, *, bucket: str = "acceptance") -> str:
    """The ``behave`` model as a SageMaker model whose answers say ``{"model": label}``."""
    s3 = server.client("s3")
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    key = "models/behave/model.tar.gz"
    s3.put_object(Bucket=bucket, Key=key, Body=model_tarball(MODELS / "behave"))
    server.client("sagemaker").create_model(
        ModelName=name,
        ExecutionRoleArn=ROLE_ARN,
        PrimaryContainer={
            "Image": "sagequeue/python",
            "ModelDataUrl": f"s3://{bucket}/{key}",
            "Environment": {"MODEL_LABEL": label},
        },
    )
    return name


def create_variant_config(
    server,
    config_name: str,
    variants: list[tuple[str, str, float]],
    *,
    instances: int = 1,
    concurrency: int = 1,
    bucket: str = "acceptance",
) -> str:
    """An async endpoint config with production variants (name, model, weight)."""
    server.client("sagemaker").create_endpoint_config(
        EndpointConfigName=config_name,
        ProductionVariants=[
            {
                "VariantName": variant,
                "ModelName": model,
                "InitialInstanceCount": instances,
                "InitialVariantWeight": weight,
                "InstanceType": "ml.m5.large",
            }
            for variant, model, weight in variants
        ],
        AsyncInferenceConfig={
            "OutputConfig": {"S3OutputPath": f"s3://{bucket}/output/{config_name}"},
            "ClientConfig": {"MaxConcurrentInvocationsPerInstance": concurrency},
        },
    )
    return config_name


def wait_in_service(server, endpoint_name: str) -> dict:
    sagemaker = server.client("sagemaker")
    sagemaker.get_waiter("endpoint_in_service").wait(
        EndpointName=endpoint_name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 300}
    )
    return sagemaker.describe_endpoint(EndpointName=endpoint_name)


class StatusClient:
    """The status extension over one kept-alive connection (for many calls)."""

    def __init__(self, server) -> None:
        import http.client

        from botocore.auth import SigV4Auth
        from botocore.credentials import Credentials

        self._url = server.url
        self._signer = SigV4Auth(Credentials(*server.credentials), "sagemaker", "us-east-1")
        self._connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)

    def status(self, endpoint_name: str, inference_id: str) -> dict:
        import json
        import urllib.parse

        from botocore.awsrequest import AWSRequest

        path = (
            f"/endpoints/{urllib.parse.quote(endpoint_name, safe='')}/async-invocations/"
            f"{urllib.parse.quote(inference_id, safe='')}"
        )
        request = AWSRequest(method="GET", url=self._url + path)
        self._signer.add_auth(request)
        self._connection.request("GET", path, headers=dict(request.headers))
        response = self._connection.getresponse()
        body = response.read()
        assert response.status == 200, (response.status, body)
        return json.loads(body)

    def close(self) -> None:
        self._connection.close()


def wait_for_instances(server, endpoint_name: str, counts: dict[str, int], timeout=30.0) -> dict:
    """Poll DescribeEndpoint until each variant's CurrentInstanceCount is as given."""
    sagemaker = server.client("sagemaker")
    deadline = time.monotonic() + timeout
    while True:
        described = sagemaker.describe_endpoint(EndpointName=endpoint_name)
        current = {
            v["VariantName"]: v["CurrentInstanceCount"] for v in described["ProductionVariants"]
        }
        if current == counts:
            return described
        if time.monotonic() > deadline:
            raise TimeoutError(f"{endpoint_name}: instances {current}, not {counts}")
        time.sleep(0.1)

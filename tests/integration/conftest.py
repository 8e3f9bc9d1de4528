"""Fixtures shared by the integration tests: an InService async endpoint whose model is
a tiny SageMaker-contract container (``GET /ping``, ``POST /invocations``) run by the
test."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


class _Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # /ping
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:  # /invocations
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def container() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def endpoint(shared_server: Any, sagemaker: Any, container: str) -> str:
    sagemaker.create_model(ModelName="echo", PrimaryContainer={"Image": container})
    sagemaker.create_endpoint_config(
        EndpointConfigName="echo-config",
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": "echo", "InitialInstanceCount": 1}
        ],
        AsyncInferenceConfig={
            "OutputConfig": {
                "S3OutputPath": "s3://results/out/",
                "S3FailurePath": "s3://results/failed",
            }
        },
    )
    sagemaker.create_endpoint(EndpointName="echo", EndpointConfigName="echo-config")
    sagemaker.get_waiter("endpoint_in_service").wait(
        EndpointName="echo", WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    return "echo"


@pytest.fixture(scope="module")
def raw_runtime(shared_server: Any) -> Any:
    """boto3's runtime client without its own validation: every rule is the server's."""
    return shared_server.client("sagemaker-runtime", parameter_validation=False)

"""``sagequeue wait`` and ``invoke-endpoint-async --wait``: the status extension on sagequeue,
the S3 polling fallback on a server without it (moto), and the exit codes of each ending."""

from __future__ import annotations

import io
import json
import urllib.request
from types import SimpleNamespace

import pytest

from cli.clitools import OFFLINE_ENV, CliResult, run_cli
from sagequeue.cli import waiting

RAW = ("--cli-binary-format", "raw-in-base64-out")


@pytest.fixture
def invoke_body(cli, echo_endpoint):
    """``invoke-endpoint-async`` on the echo endpoint with ``body`` sent as is, more options."""

    def run(body: str, *args: str) -> CliResult:
        return cli(
            "invoke-endpoint-async", "--endpoint-name", echo_endpoint, "--body", body, *RAW, *args
        )

    return run


def test_invoke_and_wait_prints_the_result(invoke_body):
    result = invoke_body("hello", "--content-type", "text/plain", "--wait", "--timeout", "60")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello"


def test_wait_writes_the_result_to_the_output_file(cli, invoke_body, echo_endpoint, tmp_path):
    invoked = invoke_body("saved", "--query", "InferenceId", "--output", "text")
    inference_id = invoked.stdout.strip()
    target = tmp_path / "result.bin"
    result = cli(
        "wait",
        "--endpoint-name",
        echo_endpoint,
        "--inference-id",
        inference_id,
        "--output-file",
        str(target),
        "--timeout",
        "60",
    )
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == b"saved"


def test_failed_inference_exits_with_the_failed_code_and_reason(invoke_body):
    result = invoke_body("fail", "--wait", "--timeout", "60")
    assert result.returncode == waiting.WAIT_FAILED_RC
    assert "Failed" in result.stderr


def test_wait_gives_up_after_the_timeout(invoke_body):
    result = invoke_body("sleep:5", "--wait", "--timeout", "0.5")
    assert result.returncode == waiting.WAIT_TIMEOUT_RC
    assert "still" in result.stderr


def test_wait_requires_endpoint_and_inference_id(cli):
    result = cli("wait", "--endpoint-name", "e")
    assert result.returncode == 252
    assert "the following arguments are required: --inference-id" in result.stderr


def test_expired_status_exits_with_the_expired_code(capsys):
    final = waiting.InferenceStatus("Expired", None, None, "request TTL elapsed")
    assert waiting.finish(None, final, "i-1", None) == waiting.WAIT_EXPIRED_RC
    assert "Expired: request TTL elapsed" in capsys.readouterr().err


# -- a server without the status extension -----------------------------------------------------


@pytest.fixture
def moto_url(moto_endpoint: str) -> str:
    """The session's moto server: it has no status extension."""
    return moto_endpoint


def moto_env(url: str) -> dict[str, str]:
    """The offline CLI environment (example keys, no AWS files) pointed at ``url``."""
    return {**OFFLINE_ENV, "SAGEQUEUE_ENDPOINT_URL": url}


def queue_moto_results(url: str, results: list[dict]) -> None:
    request = urllib.request.Request(
        url + "/moto-api/static/sagemaker/async-endpoint-results",
        data=json.dumps({"results": results}).encode(),
        method="POST",
    )
    urllib.request.urlopen(request, timeout=10).close()


def invoke_and_wait_on_moto(url: str, input_location: str) -> CliResult:
    return run_cli(
        "invoke-endpoint-async",
        "--endpoint-name",
        "ep",
        "--input-location",
        input_location,
        "--wait",
        "--timeout",
        "30",
        env=moto_env(url),
    )


def test_fallback_polls_the_output_object(moto_url, tmp_path):
    queue_moto_results(moto_url, [{"data": "from moto"}])
    result = invoke_and_wait_on_moto(moto_url, "s3://b/ok")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "from moto"


def test_fallback_reads_the_failure_object(moto_url):
    queue_moto_results(moto_url, [{"is_failure": True, "data": "model exploded"}])
    result = invoke_and_wait_on_moto(moto_url, "s3://b/bad")
    assert result.returncode == waiting.WAIT_FAILED_RC
    assert "model exploded" in result.stderr


def test_fallback_without_locations_explains_what_is_missing(moto_url):
    result = run_cli("wait", "--endpoint-name", "ep", "--inference-id", "x", env=moto_env(moto_url))
    assert result.returncode == 252
    assert "--output-location" in result.stderr


def test_status_url_quotes_the_inference_id():
    assert waiting.status_url("http://h:1/", "ep", "a b/c") == (
        "http://h:1/endpoints/ep/async-invocations/a%20b%2Fc"
    )


def test_output_file_receives_bytes_unchanged(tmp_path):
    body = b"\x00\x01binary"
    s3 = SimpleNamespace(get_object=lambda Bucket, Key: {"Body": io.BytesIO(body)})
    final = waiting.InferenceStatus("Completed", "s3://b/k.out")
    target = tmp_path / "out.bin"
    assert waiting.finish(s3, final, "i", str(target)) == 0
    assert target.read_bytes() == body

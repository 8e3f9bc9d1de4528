"""--generate-cli-skeleton, --cli-input-json/yaml and client-side validation (no server needed).

The endpoint URL points at a closed port: anything that would send a request fails with 255.
"""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from cli.clitools import OFFLINE_ENV, check_golden, run_cli
from sagequeue.cli import aws


def invoke(*args: str, env: dict[str, str] | None = None):
    return run_cli("invoke-endpoint-async", *args, env={**OFFLINE_ENV, **(env or {})})


@pytest.mark.parametrize("value", [None, "input"])
def test_skeleton_input_is_the_json_of_every_member(value: str | None) -> None:
    result = invoke("--generate-cli-skeleton", *([value] if value else []))
    assert result.returncode == 0
    check_golden("skeleton-input.json", result.stdout)


def test_skeleton_yaml_input_comments_each_member() -> None:
    result = invoke("--generate-cli-skeleton", "yaml-input")
    assert result.returncode == 0
    check_golden("skeleton-yaml-input.yaml", result.stdout)


def test_skeleton_output_validates_then_prints_a_sample_without_sending() -> None:
    result = invoke(
        "--generate-cli-skeleton", "output", "--endpoint-name", "e", "--input-location", "s3://b/k"
    )
    assert result.returncode == 0, result.stderr
    check_golden("skeleton-output.json", result.stdout)


def test_skeleton_output_honours_the_output_format() -> None:
    result = invoke("--generate-cli-skeleton", "output", "--endpoint-name", "e", "--output", "text")
    assert result.stdout == "FailureLocation\tInferenceId\tOutputLocation\n"


def test_skeleton_output_rejects_missing_required_parameters() -> None:
    result = invoke("--generate-cli-skeleton", "output", "--input-location", "s3://b/k")
    assert result.returncode == 252
    assert "the following arguments are required: --endpoint-name" in result.stderr


def test_skeleton_output_rejects_an_out_of_range_value() -> None:
    result = invoke(
        "--generate-cli-skeleton", "output", "--endpoint-name", "e", "--request-ttl-seconds", "5"
    )
    assert result.returncode == 252
    assert "Invalid value for parameter RequestTTLSeconds" in result.stderr


def test_non_integer_value_is_a_parameter_error() -> None:
    result = invoke("--endpoint-name", "e", "--request-ttl-seconds", "soon")
    assert result.returncode == 252
    assert "Error parsing parameter '--request-ttl-seconds'" in result.stderr


def test_unknown_option_is_a_usage_error() -> None:
    result = invoke("--endpoint-name", "e", "--no-such-option", "x")
    assert result.returncode == 252
    assert "unrecognized arguments: --no-such-option" in result.stderr


def test_body_is_base64_by_default() -> None:
    result = invoke("--endpoint-name", "e", "--body", "not base64!")
    assert result.returncode == 252
    assert 'Invalid base64: "not base64!"' in result.stderr


def test_cli_input_json_and_yaml_are_mutually_exclusive() -> None:
    result = invoke("--cli-input-json", "{}", "--cli-input-yaml", "{}")
    assert result.returncode == 252
    assert "Only one --cli-input-json or --cli-input-yaml may be specified" in result.stderr


def test_cli_input_json_unknown_key_is_rejected_before_sending() -> None:
    result = invoke("--cli-input-json", '{"EndpointName": "e", "Bogus": 1}')
    assert result.returncode == 252
    assert 'Unknown parameter in input: "Bogus"' in result.stderr


def test_cli_input_json_supplies_required_parameters(tmp_path: Path) -> None:
    path = tmp_path / "input.json"
    path.write_text(json.dumps({"EndpointName": "e", "InputLocation": "s3://b/k"}))
    result = invoke("--cli-input-json", f"file://{path}", "--generate-cli-skeleton", "output")
    assert result.returncode == 0, result.stderr


def test_invalid_cli_input_json_is_a_parameter_error() -> None:
    result = invoke("--cli-input-json", "{not json")
    assert result.returncode == 252
    assert "Invalid JSON" in result.stderr


def test_unknown_profile_is_a_configuration_error() -> None:
    result = invoke("--endpoint-name", "e", "--profile", "nobody")
    assert result.returncode == 253
    assert "The config profile (nobody) could not be found" in result.stderr


def test_missing_credentials_is_a_configuration_error() -> None:
    env = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    cleaned = {k: v for k, v in {**OFFLINE_ENV, **env}.items() if v != ""}
    result = run_cli("invoke-endpoint-async", "--endpoint-name", "e", env=cleaned)
    assert result.returncode == 253
    assert "Unable to locate credentials" in result.stderr


def test_unreachable_endpoint_is_a_general_failure() -> None:
    result = invoke(
        "--endpoint-name", "e", "--input-location", "s3://b/k", "--cli-connect-timeout", "1"
    )
    assert result.returncode == 255
    assert "Could not connect to the endpoint URL" in result.stderr


def test_version_names_sagequeue_and_botocore() -> None:
    result = invoke("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("sagequeue/") and "botocore/" in result.stdout


def test_cli_input_values_are_overridden_by_options() -> None:
    args = aws.build_invoke_parser(aws.cli_parameters(aws.operation_model())).parse_args(
        [
            "--cli-input-json",
            '{"EndpointName": "from-json", "InferenceId": "json-id", "Accept": "a/json"}',
            "--inference-id",
            "cli-id",
        ]
    )
    call = aws.build_call_parameters(args, aws.cli_parameters(aws.operation_model()), "base64")
    assert call == {"EndpointName": "from-json", "InferenceId": "cli-id", "Accept": "a/json"}


def test_raw_in_base64_out_sends_body_text_as_is() -> None:
    parameters = aws.cli_parameters(aws.operation_model())
    args = aws.build_invoke_parser(parameters).parse_args(["--body", "hello"])
    assert aws.build_call_parameters(args, parameters, "raw-in-base64-out")["Body"] == b"hello"


def test_fileb_body_is_read_as_bytes(tmp_path: Path) -> None:
    path = tmp_path / "payload.bin"
    path.write_bytes(b"\x00\xffdata")
    parameters = aws.cli_parameters(aws.operation_model())
    args = aws.build_invoke_parser(parameters).parse_args(["--body", f"fileb://{path}"])
    assert aws.build_call_parameters(args, parameters, "base64")["Body"] == b"\x00\xffdata"


def test_read_timeout_ends_a_silent_server() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True).start()
    try:
        result = invoke(
            "--endpoint-url",
            f"http://127.0.0.1:{listener.getsockname()[1]}",
            "--endpoint-name",
            "e",
            "--input-location",
            "s3://b/k",
            "--cli-read-timeout",
            "1",
        )
    finally:
        listener.close()
        for connection in accepted:
            connection.close()
    assert result.returncode == 255
    assert "Read timeout on endpoint URL" in result.stderr

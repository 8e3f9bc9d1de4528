"""``sagequeue invoke-endpoint-async`` against a real sagequeue server.

Renderings are compared with the AWS CLI's own output (awscli, a test dependency) for the same
request against the same server; random UUIDs in locations are normalised.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cli.clitools import BUCKET, CliResult, TlsProxy, make_self_signed_cert, normalise

INPUT = f"s3://{BUCKET}/inputs/hello.txt"
AWSCLI = str(Path(sys.executable).parent / "aws")


def awscli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [AWSCLI, "sagemaker-runtime", "invoke-endpoint-async", *args],
        capture_output=True,
        text=True,
        env={**env, "AWS_PAGER": ""},
        timeout=60,
    )


@pytest.fixture
def invoke_echo(cli, echo_endpoint):
    """``invoke-endpoint-async`` of INPUT on the echo endpoint, with more options."""

    def run(*args: str, env: dict[str, str] | None = None) -> CliResult:
        return cli(
            "invoke-endpoint-async",
            "--endpoint-name",
            echo_endpoint,
            "--input-location",
            INPUT,
            *args,
            env=env,
        )

    return run


@pytest.mark.parametrize("query", [None, "[InferenceId, OutputLocation]", "InferenceId"])
@pytest.mark.parametrize("output", ["json", "text", "table"])
def test_rendering_matches_the_aws_cli(cli, cli_env, echo_endpoint, shared_server, output, query):
    inference_id = f"render-{output}-{len(query or '')}"
    args = ["--endpoint-name", echo_endpoint, "--input-location", INPUT]
    args += ["--inference-id", inference_id, "--output", output]
    args += ["--query", query] if query else []
    ours = cli("invoke-endpoint-async", *args)
    theirs = awscli(cli_env, "--endpoint-url", shared_server.url, *args)
    assert ours.returncode == theirs.returncode == 0, ours.stderr + theirs.stderr
    assert normalise(ours.stdout) == normalise(theirs.stdout)


@pytest.mark.parametrize("output", ["yaml", "yaml-stream"])
def test_yaml_renderings_hold_the_json_response(invoke_echo, output):
    result = invoke_echo("--inference-id", f"yaml-{output}", "--output", output)
    assert result.returncode == 0, result.stderr
    loaded = yaml.safe_load(result.stdout)
    document = loaded[0] if output == "yaml-stream" else loaded
    assert document["InferenceId"] == f"yaml-{output}"
    assert set(document) == {"InferenceId", "OutputLocation", "FailureLocation"}


def test_unknown_endpoint_exits_254_with_the_service_error(cli):
    result = cli("invoke-endpoint-async", "--endpoint-name", "nope", "--input-location", INPUT)
    assert result.returncode == 254
    assert result.stderr.startswith(
        "\nAn error occurred (ValidationError) when calling the InvokeEndpointAsync operation: "
    )


def test_command_line_options_override_cli_input_json(cli, echo_endpoint):
    document = {"EndpointName": echo_endpoint, "InputLocation": INPUT, "InferenceId": "from-json"}
    result = cli(
        "invoke-endpoint-async",
        "--cli-input-json",
        json.dumps(document),
        "--inference-id",
        "from-option",
        "--query",
        "InferenceId",
        "--output",
        "text",
    )
    assert result.stdout == "from-option\n", result.stderr


def test_cli_input_yaml_from_a_file_is_sent(cli, echo_endpoint, tmp_path):
    path = tmp_path / "input.yaml"
    path.write_text(f"EndpointName: {echo_endpoint}\nInputLocation: {INPUT}\nInferenceId: y1\n")
    result = cli(
        "invoke-endpoint-async", "--cli-input-yaml", f"file://{path}", "--query", "InferenceId"
    )
    assert result.stdout == '"y1"\n', result.stderr


def test_debug_logs_the_signed_request_to_stderr(invoke_echo):
    result = invoke_echo("--debug")
    assert result.returncode == 0
    assert "Authorization': b'AWS4-HMAC-SHA256 Credential=" in result.stderr
    assert json.loads(result.stdout)["InferenceId"]


def test_no_sign_request_is_refused_by_the_server(invoke_echo):
    result = invoke_echo("--no-sign-request")
    assert result.returncode == 254
    assert "MissingAuthenticationToken" in result.stderr


def test_profile_reads_credentials_and_region_from_the_aws_files(
    cli, shared_server, tmp_path, echo_endpoint
):
    access, secret = shared_server.credentials
    credentials = tmp_path / "credentials"
    credentials.write_text(
        f"[sq]\naws_access_key_id = {access}\naws_secret_access_key = {secret}\n"
    )
    config = tmp_path / "config"
    config.write_text("[profile sq]\nregion = us-east-1\noutput = text\n")
    env = {
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
        "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
        "AWS_CONFIG_FILE": str(config),
    }
    clean_env = {
        k: v
        for k, v in {**os.environ, **env}.items()
        if v != "" and k not in ("AWS_DEFAULT_REGION",)
    }
    clean_env["SAGEQUEUE_ENDPOINT_URL"] = shared_server.url
    clean_env["AWS_PAGER"] = ""
    from cli.clitools import run_cli

    result = run_cli(
        "invoke-endpoint-async",
        "--profile",
        "sq",
        "--endpoint-name",
        echo_endpoint,
        "--input-location",
        INPUT,
        "--inference-id",
        "prof",
        "--query",
        "InferenceId",
        env=clean_env,
    )
    assert result.stdout == "prof\n", result.stderr  # text: the profile's output setting


def test_aws_default_output_selects_the_format(invoke_echo):
    result = invoke_echo(
        "--inference-id", "envout", "--query", "InferenceId", env={"AWS_DEFAULT_OUTPUT": "yaml"}
    )
    assert result.stdout == "envout\n...\n"


def test_endpoint_url_option_beats_the_environment(invoke_echo, shared_server):
    result = invoke_echo(
        "--endpoint-url", shared_server.url, env={"SAGEQUEUE_ENDPOINT_URL": "http://127.0.0.1:9"}
    )
    assert result.returncode == 0, result.stderr


def test_bad_query_is_a_usage_error(cli, echo_endpoint):
    result = cli("invoke-endpoint-async", "--endpoint-name", echo_endpoint, "--query", "[[")
    assert result.returncode == 252
    assert "Bad value for --query" in result.stderr


def test_color_on_styles_the_table(invoke_echo):
    result = invoke_echo("--output", "table", "--color", "on")
    assert "\x1b[1m\x1b[34m" in result.stdout


@pytest.fixture(scope="module")
def tls_proxy(shared_server, tmp_path_factory):
    directory = tmp_path_factory.mktemp("tls")
    cert, key = make_self_signed_cert(directory)
    proxy = TlsProxy(shared_server.port, cert, key)
    proxy.cert = cert
    yield proxy
    proxy.close()


def test_self_signed_certificate_is_refused_by_default(invoke_echo, tls_proxy):
    result = invoke_echo("--endpoint-url", tls_proxy.url)
    assert result.returncode == 255
    assert "SSL validation failed" in result.stderr


def test_no_verify_ssl_accepts_a_self_signed_certificate(invoke_echo, tls_proxy):
    result = invoke_echo("--endpoint-url", tls_proxy.url, "--no-verify-ssl")
    assert result.returncode == 0, result.stderr


def test_ca_bundle_trusts_the_given_certificate(invoke_echo, tls_proxy):
    result = invoke_echo("--endpoint-url", tls_proxy.url, "--ca-bundle", str(tls_proxy.cert))
    assert result.returncode == 0, result.stderr

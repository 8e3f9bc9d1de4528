"""Behaviour on a terminal, driven through a pseudo-terminal: the pager and --cli-auto-prompt."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

from cli.clitools import BUCKET, OFFLINE_ENV

SKELETON_OUTPUT = ("--generate-cli-skeleton", "output", "--endpoint-name", "e")


def run_on_terminal(args: list[str], env: dict[str, str], answers: str = "") -> str:
    """Run the CLI with stdin/stdout/stderr on a pty; type ``answers``; return all it showed."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "sagequeue", *args],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=env,
        close_fds=True,
    )
    os.close(terminal)
    if answers:
        os.write(controller, answers.encode())
    shown = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal closed: the child is gone
                break
            if not chunk:
                break
            shown += chunk
        elif process.poll() is not None:
            break
    process.wait(10)
    os.close(controller)
    return shown.decode("utf-8", "replace").replace("\r\n", "\n")


def test_output_goes_through_aws_pager_on_a_terminal():
    env = {**OFFLINE_ENV, "AWS_PAGER": "sed s/^/PAGED:/"}
    shown = run_on_terminal(["invoke-endpoint-async", *SKELETON_OUTPUT], env)
    assert 'PAGED:    "InferenceId": "InferenceId",' in shown


def test_no_cli_pager_writes_directly():
    env = {**OFFLINE_ENV, "AWS_PAGER": "sed s/^/PAGED:/"}
    shown = run_on_terminal(["invoke-endpoint-async", *SKELETON_OUTPUT, "--no-cli-pager"], env)
    assert "PAGED:" not in shown
    assert '"InferenceId": "InferenceId"' in shown


def test_auto_prompt_asks_for_missing_parameters(cli_env, echo_endpoint):
    # Answers in model order: EndpointName, ContentType, Accept, CustomAttributes, InferenceId,
    # then empty answers for the optional rest.
    answers = f"{echo_endpoint}\n\n\n\nprompted-id\n" + "\n" * 6
    shown = run_on_terminal(
        [
            "invoke-endpoint-async",
            "--cli-auto-prompt",
            "--input-location",
            f"s3://{BUCKET}/inputs/hello.txt",
            "--query",
            "InferenceId",
            "--output",
            "json",
        ],
        cli_env,
        answers,
    )
    assert "--endpoint-name (string, required): " in shown
    assert '"prompted-id"' in shown  # JSON-quoted: the output, not the echo


def test_auto_prompt_is_off_without_the_option():
    shown = run_on_terminal(
        ["invoke-endpoint-async", "--input-location", "s3://b/k"],
        {**OFFLINE_ENV, "AWS_CLI_AUTO_PROMPT": "off"},
    )
    assert "the following arguments are required: --endpoint-name" in shown


def test_wait_shows_progress_then_the_result_on_a_terminal(cli_env, echo_endpoint):
    shown = run_on_terminal(
        [
            "invoke-endpoint-async",
            "--endpoint-name",
            echo_endpoint,
            "--body",
            "sleep:1",
            "--cli-binary-format",
            "raw-in-base64-out",
            "--wait",
            "--timeout",
            "60",
        ],
        cli_env,
    )
    assert "done after" in shown
    assert shown.rstrip().endswith("sleep:1")


def test_ctrl_c_exits_130(cli_env, echo_endpoint):
    import signal

    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sagequeue",
            "invoke-endpoint-async",
            "--endpoint-name",
            echo_endpoint,
            "--body",
            "sleep:10",
            "--cli-binary-format",
            "raw-in-base64-out",
            "--wait",
        ],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # A shell without job control starts background commands with SIGINT ignored,
        # and Python then keeps ignoring it: give the CLI the disposition a terminal has.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(3)  # started and waiting
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 130

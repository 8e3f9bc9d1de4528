"""`sagequeue status`, `sagequeue top` and the upload progress of `invoke-endpoint-async
--upload`, against the console's server (the AWS CLI's credential and endpoint sources)."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from console.conftest import BUCKET, ENDPOINT, ConsoleSite


def cli_env(site: ConsoleSite) -> dict[str, str]:
    return {
        **site.server.aws_env(),
        "SAGEQUEUE_ENDPOINT_URL": site.url,
        "AWS_PAGER": "",
        "COLUMNS": "140",
    }


def test_status_prints_a_table_of_the_endpoints(console_site: ConsoleSite) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sagequeue", "status"],
        env=cli_env(console_site),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    (row,) = [line for line in done.stdout.splitlines() if ENDPOINT in line]
    cells = [cell.strip() for cell in row.strip("│ ").split("│")]
    assert cells[:3] == [ENDPOINT, "InService", "1/1"]
    header = done.stdout.splitlines()[2]
    for column in ("Backlog", "In/min", "Done/min", "Failed/min", "p50 ms", "p99 ms"):
        assert column in header


def test_status_as_json_has_rates_and_latencies_from_the_metrics(
    console_site: ConsoleSite,
) -> None:
    deadline = time.monotonic() + 20  # workers write their metrics every 5 s
    while True:
        done = subprocess.run(
            [sys.executable, "-m", "sagequeue", "status", "--output", "json", "--window", "10"],
            env=cli_env(console_site),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        (row,) = [row for row in json.loads(done.stdout) if row["name"] == ENDPOINT]
        if row["failed_per_minute"] > 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert (row["status"], row["running"], row["desired"]) == ("InService", 1, 1)
    assert row["processed_per_minute"] > 0 and row["failed_per_minute"] > 0
    assert row["latency_p50_ms"] is not None and row["latency_p99_ms"] >= row["latency_p50_ms"]
    assert [v["name"] for v in row["variants"]] == ["AllTraffic"]


def test_status_needs_credentials_as_the_aws_cli_does(console_site: ConsoleSite) -> None:
    env = cli_env(console_site)
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    done = subprocess.run(
        [sys.executable, "-m", "sagequeue", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 253
    assert "Unable to locate credentials" in done.stderr


def on_terminal(
    args: list[str], env: dict[str, str], until: str, count: int = 1
) -> tuple[str, int]:
    """Run the CLI on a pty until ``until`` has shown ``count`` times, then press Ctrl-C
    (if it still runs); what it showed and its exit code."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "sagequeue", *args],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env={**env, "TERM": "xterm-256color"},
        close_fds=True,
        start_new_session=True,
    )
    os.close(terminal)
    shown = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and shown.decode(errors="replace").count(until) < count:
        ready, _, _ = select.select([controller], [], [], 0.2)
        if ready:
            try:
                shown += os.read(controller, 65536)
            except OSError:
                break
        elif process.poll() is not None:
            break
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
    try:
        while True:
            ready, _, _ = select.select([controller], [], [], 0.2)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            chunk = os.read(controller, 65536)
            if not chunk:
                break
            shown += chunk
    except OSError:
        pass
    code = process.wait(20)
    os.close(controller)
    return shown.decode("utf-8", "replace"), code


def test_top_refreshes_the_table_until_ctrl_c(console_site: ConsoleSite) -> None:
    shown, code = on_terminal(
        ["top", "--interval", "0.3"], cli_env(console_site), until="Ctrl-C to quit", count=3
    )

    assert shown.count("Ctrl-C to quit") >= 3  # drawn again and again
    assert ENDPOINT in shown and "InService" in shown
    assert code == 0


def test_upload_shows_progress_then_invokes_with_the_uploaded_input(
    console_site: ConsoleSite, tmp_path: Path
) -> None:
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"action": "echo", "value": "x" * 3_000_000}))
    key = "inputs/uploaded-by-cli.json"
    shown, code = on_terminal(
        [
            "invoke-endpoint-async",
            "--endpoint-name",
            ENDPOINT,
            "--input-location",
            f"s3://{BUCKET}/{key}",
            "--upload",
            str(big),
            "--content-type",
            "application/json",
            "--inference-id",
            "uploaded-by-cli",
            "--wait",
            "--output-file",
            str(tmp_path / "out.json"),
        ],
        cli_env(console_site),
        until="\x00never",
    )

    assert code == 0, shown
    assert "uploading big.json" in shown
    assert "3.0/3.0 MB" in shown  # the bar reached the whole size
    s3 = console_site.server.client("s3")
    assert s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == big.stat().st_size
    assert json.loads((tmp_path / "out.json").read_text()) == {"echo": "x" * 3_000_000}

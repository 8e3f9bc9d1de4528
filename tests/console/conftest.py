"""One server for the console's tests (package scope): a million finished invocations
filled straight into its SQLite store (as bench/fleet.py fills it), an endpoint running
the behave test model, and a scripted load of completed and failed requests; and one
headless Chromium (Debian's, driven by Playwright: no browser download)."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from acceptance.helpers import deploy, invocation_status
from conftest import ServerProcess, free_port

ENDPOINT = "console-demo"
BUCKET = "console"
FILLED_ROWS = 1_000_000
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
# A scoped key that may read statuses but not list invocations (tests/console).
READER_KEY = ("SQREADER000000000001", "reader-secret-0000000000000000000000000")
ADMIN_KEY = ("SQADMIN0000000000001", "admin-secret-00000000000000000000000000")

_FILL = """
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)
    INSERT INTO invocations (request_id, inference_id, endpoint_name, output_location,
        failure_location, input_location, content_type, request_ttl_seconds,
        invocation_timeout_seconds, status, failure_reason, enqueued_at, started_at,
        finished_at, attempts, expires_at, variant_name)
    SELECT 'filled-' || i, 'filled-' || i, :endpoint,
        's3://console/output/filled/' || i || '.out', 's3://console/failures/filled/' || i,
        's3://console/inputs/filled.json', 'application/json', 21600, 900,
        CASE WHEN i % 100 = 0 THEN 'Failed' ELSE 'Completed' END,
        CASE WHEN i % 100 = 0 THEN 'ValueError: filled' END,
        :now, :now, :now + 0.01, 1, :now + 21600, 'AllTraffic'
    FROM n
"""


@dataclass
class ConsoleSite:
    server: ServerProcess
    completed: list[str] = field(default_factory=list)  # InferenceIds
    failed: dict[str, str] = field(default_factory=dict)  # InferenceId -> reason
    input_key: str = "inputs/echo.json"

    @property
    def url(self) -> str:
        return self.server.url


def _fill(database: Path, count: int) -> None:
    """``count`` finished invocations of ENDPOINT, an hour old (within the retention)."""
    conn = sqlite3.connect(database, isolation_level=None, timeout=60)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(_FILL, {"count": count, "endpoint": ENDPOINT, "now": time.time() - 3600})
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _config(path: Path) -> None:
    path.write_text(
        json.dumps(
            {
                "access_keys": [
                    {"AccessKeyId": ADMIN_KEY[0], "SecretAccessKey": ADMIN_KEY[1]},
                    {
                        "AccessKeyId": READER_KEY[0],
                        "SecretAccessKey": READER_KEY[1],
                        "UserName": "reader",
                        "Policy": {
                            "Statement": [
                                {
                                    "Effect": "Allow",
                                    "Action": "sagemaker:DescribeInferenceStatus",
                                    "Resource": "*",
                                }
                            ]
                        },
                    },
                ]
            }
        )
    )


@pytest.fixture(scope="package")
def console_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleSite]:
    from sagequeue.stores.sqlite import SqliteStore

    root = tmp_path_factory.mktemp("console")
    data_dir = root / "data"
    database = data_dir / "sagequeue.db"

    async def create_schema() -> None:
        store = SqliteStore(database)
        await store.open()
        await store.close()

    # On a thread of its own: Playwright's sync API may hold this thread's event loop.
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, create_schema()).result()
    _fill(database, FILLED_ROWS)
    config = root / "sagequeue.yaml"
    _config(config)
    credentials = root / "admin-credentials"
    credentials.write_text(
        f"[sagequeue]\naws_access_key_id = {ADMIN_KEY[0]}\naws_secret_access_key = {ADMIN_KEY[1]}\n"
    )
    server = ServerProcess(
        data_dir=data_dir,
        port=free_port(),
        extra_args=["--config", str(config)],
        credentials_file=credentials,
    ).start()
    try:
        site = ConsoleSite(server)
        _scripted_load(site)
        yield site
    finally:
        server.stop()


def _scripted_load(site: ConsoleSite) -> None:
    """Requests through boto3 as a user sends them: some complete, some fail."""
    server = site.server
    deploy(server, ENDPOINT, bucket=BUCKET)
    autoscaling = server.client("application-autoscaling")
    resource = f"endpoint/{ENDPOINT}/variant/AllTraffic"
    autoscaling.register_scalable_target(
        ServiceNamespace="sagemaker",
        ResourceId=resource,
        ScalableDimension="sagemaker:variant:DesiredInstanceCount",
        MinCapacity=1,
        MaxCapacity=2,
    )
    autoscaling.put_scaling_policy(
        PolicyName="backlog-per-instance",
        ServiceNamespace="sagemaker",
        ResourceId=resource,
        ScalableDimension="sagemaker:variant:DesiredInstanceCount",
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 50.0,
            "CustomizedMetricSpecification": {
                "MetricName": "ApproximateBacklogSizePerInstance",
                "Namespace": "AWS/SageMaker",
                "Dimensions": [{"Name": "EndpointName", "Value": ENDPOINT}],
                "Statistic": "Average",
            },
        },
    )
    s3 = server.client("s3")
    runtime = server.client("sagemaker-runtime")
    s3.put_object(
        Bucket=BUCKET, Key=site.input_key, Body=json.dumps({"action": "echo", "value": 42}).encode()
    )
    for n in range(3):
        key = f"inputs/fail-{n}.json"
        reason = f"the scripted input {n} is refused"
        s3.put_object(
            Bucket=BUCKET, Key=key, Body=json.dumps({"action": "raise", "message": reason}).encode()
        )
        runtime.invoke_endpoint_async(
            EndpointName=ENDPOINT,
            InputLocation=f"s3://{BUCKET}/{key}",
            ContentType="application/json",
            InferenceId=f"scripted-fail-{n}",
        )
        site.failed[f"scripted-fail-{n}"] = f"ValueError: {reason}"
    for n in range(12):
        runtime.invoke_endpoint_async(
            EndpointName=ENDPOINT,
            InputLocation=f"s3://{BUCKET}/{site.input_key}",
            ContentType="application/json",
            InferenceId=f"scripted-ok-{n}",
        )
        site.completed.append(f"scripted-ok-{n}")
    deadline = time.monotonic() + 60
    for inference_id in [*site.failed, *site.completed]:
        while invocation_status(server, ENDPOINT, inference_id)["Status"] in (
            "Queued",
            "InProgress",
        ):
            assert time.monotonic() < deadline, f"{inference_id} did not finish"
            time.sleep(0.05)


@pytest.fixture(scope="package")
def chromium() -> Iterator[object]:
    """One headless Chromium for the package's browser tests."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="package")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the browser tests save their screenshots (also copied to
    $SAGEQUEUE_CONSOLE_SCREENSHOTS when set: how docs/images/console is made)."""
    return tmp_path_factory.mktemp("console-screenshots")

"""A fleet under load on PostgreSQL and moto's S3: two API processes, three workers, and
10,000 requests, while the database restarts and a worker is killed. Nothing that got a
202 is lost, and every request ends once, with one output object."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from acceptance.helpers import deploy

from .conftest import postgres_fleet_store, wait_until
from .test_fleet import described_counts, make_fleet, status_counts

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

TOTAL = 10_000
CLIENT_THREADS = 8


def test_ten_thousand_requests_survive_a_database_restart_and_a_killed_worker(
    fleet_factory, postgres_url, moto_endpoint, postgres_server
) -> None:
    fleet_store = postgres_fleet_store(postgres_url, moto_endpoint)
    fleet = make_fleet(fleet_factory, fleet_store, 3, "--max-instances", "2")
    fleet.start_api()
    deploy(fleet.api, "fleet-load", instances=4, concurrency=8, bucket="fleet-load")
    wait_until(lambda: described_counts(fleet, "fleet-load") == (4, 4), "4 instances running")
    assert sum(len(p) for p in fleet.model_processes().values()) == 4

    # Retried as AWS SDKs do, with more attempts: 503s while the database restarts.
    runtimes = [
        api.client("sagemaker-runtime", attempts=20, connect_timeout=5) for api in fleet.apis
    ]
    accepted: dict[str, str] = {}  # InferenceId -> OutputLocation, for every 202
    lock = threading.Lock()
    sent = [0]
    disruptions: list[threading.Thread] = []
    killed: list[int] = []

    def disrupt_at(count: int) -> None:
        if count == 3_000:
            # pg_ctl restart -m fast: every connection of every process drops.
            thread = threading.Thread(target=postgres_server.restart)
            thread.start()
            disruptions.append(thread)
        elif count == 6_000:
            holder = next(w for w in fleet.workers if fleet.model_processes().get(w.process.pid))
            killed.append(holder.process.pid)
            holder.kill9()

    def send(n: int) -> None:
        response = runtimes[n % 2].invoke_endpoint_async(
            EndpointName="fleet-load",
            InferenceId=f"load-{n}",
            Body=json.dumps({"action": "echo", "value": n}).encode(),
            ContentType="application/json",
        )
        with lock:
            accepted[response["InferenceId"]] = response["OutputLocation"]
            sent[0] += 1
            count = sent[0]
        disrupt_at(count)

    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        list(pool.map(send, range(TOTAL)))
    for thread in disruptions:
        thread.join()
    assert len(accepted) == TOTAL and killed

    # The killed worker's instances moved: the two live workers run 2 each.
    wait_until(lambda: described_counts(fleet, "fleet-load") == (4, 4), "4 instances again")
    wait_until(
        lambda: status_counts(fleet_store, fleet, "fleet-load").get("Completed") == TOTAL,
        "every accepted request completed",
        timeout=300,
    )
    assert status_counts(fleet_store, fleet, "fleet-load") == {"Completed": TOTAL}

    s3 = fleet.api.client("s3")
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket="fleet-load", Prefix="output/fleet-load/"
    )
    written = {f"s3://fleet-load/{o['Key']}" for page in pages for o in page.get("Contents", [])}
    assert written == set(accepted.values())
    sample = sorted(accepted)[:: TOTAL // 20]
    for inference_id in sample:
        bucket, key = accepted[inference_id].removeprefix("s3://").split("/", 1)
        body = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        assert body == {"echo": int(inference_id.removeprefix("load-"))}

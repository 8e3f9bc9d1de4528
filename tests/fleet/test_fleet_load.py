"""A fleet under load on PostgreSQL and moto's S3: two API processes, three workers, and
10,000 requests, while the database restarts and a worker is killed. Nothing that got a
202 is lost, and every request ends once, with one output object."""

from __future__ import annotations

import asyncio
import json

import pytest

from acceptance.helpers import deploy
from conftest import wait_until
from sagequeue.testing.requests import InvocationSpec, Target, header, send_all, sign_invocation

from .conftest import postgres_fleet_store
from .test_fleet import described_counts, make_fleet, status_counts

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

TOTAL = 10_000
CLIENT_CONNECTIONS = 8  # per API process


def test_ten_thousand_requests_survive_a_database_restart_and_a_killed_worker(
    fleet_factory, postgres_url, moto_endpoint, postgres_server
) -> None:
    fleet_store = postgres_fleet_store(postgres_url, moto_endpoint)
    fleet = make_fleet(fleet_factory, fleet_store, 3, "--max-instances", "2")
    fleet.start_api()
    deploy(fleet.api, "fleet-load", instances=4, concurrency=8, bucket="fleet-load")
    wait_until(lambda: described_counts(fleet, "fleet-load") == (4, 4), "4 instances running")
    assert sum(len(p) for p in fleet.model_processes().values()) == 4

    # Pre-signed raw requests (botocore's signer, as boto3 signs them): a boto3 call costs
    # ten times the CPU, which on two cores the servers need.
    requests = {
        n: sign_invocation(
            Target(api.port, *api.credentials),
            InvocationSpec(
                "fleet-load", input_location=None, body=json.dumps({"value": n}).encode()
            ),
            f"load-{n}",
        )
        for n in range(TOTAL)
        for api in [fleet.apis[n % 2]]
    }
    killed: list[int] = []

    async def load() -> list[bytes]:
        """Both API processes at once; the database restarts after 3,000 requests and a
        worker holding instances is killed after 6,000 (503s are retried, as SDKs do)."""
        heads: list[bytes] = []
        for first, last, disrupt in (
            (0, 3_000, None),
            (3_000, 6_000, "restart"),
            (6_000, TOTAL, "kill"),
        ):
            if disrupt == "restart":
                restart = asyncio.get_running_loop().run_in_executor(None, postgres_server.restart)
            elif disrupt == "kill":
                holder = next(
                    w for w in fleet.workers if fleet.model_processes().get(w.process.pid)
                )
                killed.append(holder.process.pid)
                holder.kill9()
            chunks = await asyncio.gather(
                *(
                    send_all(
                        fleet.apis[api].port,
                        [requests[n] for n in range(first + api, last, 2)],
                        connections=CLIENT_CONNECTIONS,
                    )
                    for api in (0, 1)
                )
            )
            heads += [head for chunk in chunks for head in chunk]
            if disrupt == "restart":
                await restart
        return heads

    heads = asyncio.run(load())
    statuses = [int(head[9:12]) for head in heads]
    assert statuses.count(202) == TOTAL, {s: statuses.count(s) for s in set(statuses)}
    accepted = {
        header(head, b"x-amzn-requestid"): header(head, b"x-amzn-sagemaker-outputlocation")
        for head in heads
    }
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
    for output in sorted(accepted.values())[:: TOTAL // 20]:
        bucket, key = output.removeprefix("s3://").split("/", 1)
        assert json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())["echo"] in range(
            TOTAL
        )

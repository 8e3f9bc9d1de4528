"""A fleet of processes on one store: instances placed across workers, work that moves
when a worker dies or stalls, and nothing lost or finished twice.

Each test runs on SQLite (several processes on one host sharing a data dir) and on
PostgreSQL with moto's S3 (processes with a data dir each, as on separate hosts)."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from acceptance.helpers import deploy, invocation_status, wait_for_status
from conftest import wait_until

from .conftest import Fleet

pytestmark = pytest.mark.slow

WORKER_TIMEOUT = "2"  # seconds: a stalled worker is gone quickly in these tests


def described_counts(fleet: Fleet, endpoint: str) -> tuple[int, int]:
    variant = fleet.api.client("sagemaker").describe_endpoint(EndpointName=endpoint)[
        "ProductionVariants"
    ][0]
    return variant["CurrentInstanceCount"], variant["DesiredInstanceCount"]


def invoke(fleet: Fleet, endpoint: str, body: dict, api: int = 0) -> dict:
    runtime = fleet.apis[api].client("sagemaker-runtime")
    s3 = fleet.apis[api].client("s3")
    key = f"inputs/{uuid.uuid4()}.json"
    s3.put_object(Bucket="acceptance", Key=key, Body=json.dumps(body).encode())
    return runtime.invoke_endpoint_async(
        EndpointName=endpoint,
        InputLocation=f"s3://acceptance/{key}",
        ContentType="application/json",
    )


def status_counts(fleet_store: dict, fleet: Fleet, endpoint: str) -> dict[str, int]:
    """Invocations of an endpoint per status, read from the shared store itself."""
    sql = "SELECT status, count(*) FROM invocations WHERE endpoint_name = {} GROUP BY status"
    if "database" in fleet_store:
        import psycopg

        with psycopg.connect(fleet_store["database"]) as conn:
            return dict(conn.execute(sql.format("%s"), (endpoint,)).fetchall())
    import sqlite3

    with sqlite3.connect(fleet.data_dir / "sagequeue.db") as conn:
        return dict(conn.execute(sql.format("?"), (endpoint,)).fetchall())


def make_fleet(fleet_factory, fleet_store: dict, workers: int, *worker_args: str) -> Fleet:
    fleet = fleet_factory(
        fleet_store["shared_args"],
        ["--worker-timeout", WORKER_TIMEOUT, *worker_args],
        env=fleet_store.get("env"),
        hosts=fleet_store["hosts"],
    )
    fleet.start_api()
    for _ in range(workers):
        fleet.start_worker()
    return fleet


def test_desired_instances_are_a_total_for_the_fleet(fleet_factory, fleet_store) -> None:
    fleet = make_fleet(fleet_factory, fleet_store, 3, "--max-instances", "2")
    deploy(fleet.api, "placed", instances=4)
    wait_until(lambda: described_counts(fleet, "placed") == (4, 4), "4 instances running")
    per_worker = fleet.model_processes()
    assert sum(len(pids) for pids in per_worker.values()) == 4
    assert max(len(pids) for pids in per_worker.values()) <= 2


def test_an_endpoint_the_fleet_cannot_fully_place_serves_with_what_it_has(
    fleet_factory,
    fleet_store,
) -> None:
    fleet = make_fleet(fleet_factory, fleet_store, 1, "--max-instances", "1")
    deploy(fleet.api, "partial", instances=3)
    assert described_counts(fleet, "partial") == (1, 3)
    response = invoke(fleet, "partial", {"action": "echo", "value": 1})
    status = wait_for_status(fleet.api, "partial", response["InferenceId"])
    assert status["Status"] == "Completed"
    wait_until(
        lambda: "2 instance(s) not placed" in fleet.workers[0].log_text(), "the shortfall logged"
    )


def test_a_killed_workers_instances_move_and_its_requests_complete(
    fleet_factory, fleet_store
) -> None:
    fleet = make_fleet(fleet_factory, fleet_store, 2, "--max-instances", "1")
    deploy(fleet.api, "moving", instances=1)
    (holder,) = [w for w in fleet.workers if fleet.model_processes()[w.process.pid]]
    sent = [invoke(fleet, "moving", {"action": "sleep", "seconds": 0.5}) for _ in range(4)]
    wait_until(
        lambda: (
            invocation_status(fleet.api, "moving", sent[0]["InferenceId"])["Status"] == "InProgress"
        ),
        "the first request running",
    )
    holder.kill9()
    killed_at = time.monotonic()
    wait_until(
        lambda: (
            described_counts(fleet, "moving") == (1, 1) and any(fleet.model_processes().values())
        ),
        "the instance placed again",
    )
    assert time.monotonic() - killed_at < 15
    for response in sent:
        status = wait_for_status(fleet.api, "moving", response["InferenceId"], timeout=60)
        assert status["Status"] == "Completed"


def test_a_stalled_worker_cannot_finish_a_request_that_moved_elsewhere(
    fleet_factory, fleet_store, tmp_path
) -> None:
    fleet = make_fleet(fleet_factory, fleet_store, 2, "--max-instances", "1")
    deploy(fleet.api, "stalled", instances=1)
    (holder,) = [w for w in fleet.workers if fleet.model_processes()[w.process.pid]]
    runs = tmp_path / "runs.log"
    response = invoke(
        fleet, "stalled", {"action": "log", "path": str(runs), "tag": "run", "seconds": 3}
    )
    wait_until(lambda: runs.exists(), "the model started the request")
    os.kill(holder.process.pid, signal.SIGSTOP)
    try:
        # Past the worker timeout: the other worker takes the instance and the request.
        wait_until(lambda: runs.read_text().count("run") == 2, "the request ran again", 30)
    finally:
        os.kill(holder.process.pid, signal.SIGCONT)
    status = wait_for_status(fleet.api, "stalled", response["InferenceId"], timeout=30)
    assert status["Status"] == "Completed"
    assert status["Attempts"] == 2
    wait_until(
        lambda: "lease lost before finishing" in holder.log_text(),
        "the resumed worker's finish refused",
    )
    wait_until(lambda: "was declared gone" in holder.log_text(), "the resumed worker rejoined")


def test_every_request_across_two_api_processes_completes_once(fleet_factory, fleet_store) -> None:
    fleet = make_fleet(fleet_factory, fleet_store, 3, "--max-instances", "2")
    fleet.start_api()
    deploy(fleet.api, "loaded", instances=3, concurrency=4)
    total = 600
    runtimes = [api.client("sagemaker-runtime") for api in fleet.apis]

    def send(n: int) -> dict:
        return runtimes[n % 2].invoke_endpoint_async(
            EndpointName="loaded",
            InferenceId=f"req-{n}",
            InputLocation="s3://acceptance/inputs/one.json",
            ContentType="application/json",
        )

    fleet.api.client("s3").put_object(
        Bucket="acceptance", Key="inputs/one.json", Body=b'{"action": "echo", "value": 1}'
    )
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(send, range(total)))
    outputs = {r["OutputLocation"] for r in responses}
    assert len(outputs) == total
    for n in range(0, total, 50):
        assert wait_for_status(fleet.api, "loaded", f"req-{n}", timeout=120)["Status"] == (
            "Completed"
        )
    s3 = fleet.api.client("s3")

    def written() -> set[str]:
        pages = s3.get_paginator("list_objects_v2").paginate(
            Bucket="acceptance", Prefix="output/loaded/"
        )
        return {f"s3://acceptance/{o['Key']}" for page in pages for o in page.get("Contents", [])}

    wait_until(lambda: len(written()) == total, "every output written", 120)
    assert written() == outputs
    counts = status_counts(fleet_store, fleet, "loaded")
    assert counts == {"Completed": total}


def test_model_logs_of_every_worker_are_read_through_an_api_process(
    fleet_factory, fleet_store
) -> None:
    fleet = make_fleet(fleet_factory, fleet_store, 2, "--max-instances", "1")
    deploy(fleet.api, "logged", instances=2)
    wait_until(lambda: described_counts(fleet, "logged") == (2, 2), "2 instances running")
    ids = [
        invoke(fleet, "logged", {"action": "print", "text": f"fleet-{n}"})["InferenceId"]
        for n in range(6)
    ]
    for inference_id in ids:
        wait_for_status(fleet.api, "logged", inference_id)
    logs = fleet.api.client("logs")

    def lines(pattern: str) -> list[dict]:
        try:
            return logs.filter_log_events(
                logGroupName="/aws/sagemaker/Endpoints/logged", filterPattern=pattern
            )["events"]
        except logs.exceptions.ResourceNotFoundException:
            return []  # nothing shipped yet

    # One instance on each worker, each with its streams, written by that worker.
    starts = wait_until(lambda: len(lines('"starting:"')) == 2 and lines('"starting:"'), "starts")
    assert len({e["logStreamName"] for e in starts}) == 2
    assert len({e["message"].rsplit("on worker ", 1)[1] for e in starts}) == 2
    completed = wait_until(
        lambda: len(found := lines('"completed in"')) == len(ids) and found, "request lines"
    )
    assert {e["message"].split(":")[0].removeprefix("Inference ") for e in completed} == set(ids)

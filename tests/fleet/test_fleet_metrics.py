"""Metrics are right with several API and worker processes on one PostgreSQL: each
process writes its own rows, and any API process answers the fleet's totals."""

from __future__ import annotations

import datetime
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from acceptance.helpers import deploy, wait_for_status
from conftest import wait_until

pytestmark = pytest.mark.slow


def cloudwatch_sum(api, metric: str) -> float:
    now = datetime.datetime.now(datetime.UTC)
    datapoints = api.client("cloudwatch").get_metric_statistics(
        Namespace="AWS/SageMaker",
        MetricName=metric,
        Dimensions=[
            {"Name": "EndpointName", "Value": "metered"},
            {"Name": "VariantName", "Value": "AllTraffic"},
        ],
        StartTime=now - datetime.timedelta(minutes=10),
        EndTime=now + datetime.timedelta(minutes=1),
        Period=3600,
        Statistics=["Sum"],
    )["Datapoints"]
    return sum(d["Sum"] for d in datapoints)


def prometheus_counter(api, name: str) -> float:
    with urllib.request.urlopen(api.url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and sample.labels.get("endpoint") == "metered"
    )


def test_two_api_processes_and_two_workers_on_postgresql_count_every_request_once(
    fleet_factory, postgres_url
) -> None:
    fleet = fleet_factory(["--database", postgres_url, "--time-scale", "60"])
    fleet.start_api()
    fleet.start_api()
    fleet.start_worker()
    fleet.start_worker()
    deploy(fleet.api, "metered", instances=2, concurrency=2)
    fleet.api.client("s3").put_object(
        Bucket="acceptance", Key="inputs/echo.json", Body=b'{"action": "echo", "value": 1}'
    )
    total = 40
    runtimes = [api.client("sagemaker-runtime") for api in fleet.apis]

    def send(n: int) -> str:
        return runtimes[n % 2].invoke_endpoint_async(
            EndpointName="metered",
            InputLocation="s3://acceptance/inputs/echo.json",
            ContentType="application/json",
        )["InferenceId"]

    with ThreadPoolExecutor(4) as pool:
        inference_ids = list(pool.map(send, range(total)))
    for inference_id in inference_ids:
        assert wait_for_status(fleet.api, "metered", inference_id)["Status"] == "Completed"

    for api in fleet.apis:
        wait_until(lambda api=api: cloudwatch_sum(api, "Invocations") == total, "invocations")
        wait_until(
            lambda api=api: cloudwatch_sum(api, "InvocationsProcessed") == total, "processed"
        )
        assert prometheus_counter(api, "sagequeue_invocations_total") == total
        assert prometheus_counter(api, "sagequeue_model_latency_seconds_count") == total
